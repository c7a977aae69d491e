"""Files written whole or not at all, owner-only."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from engine import files


def test_a_file_is_written_whole_and_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = files.write_private(tmp_path / "result.png", b"x" * 100_000)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"x" * 100_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = files.write_private(tmp_path / "input.img", b"old")
    calls = []

    def full_disk(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data[:10])

    monkeypatch.setattr(files.os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        files.write_private(target, b"new" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["input.img"]


def test_folders_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        folder = files.private_folder(tmp_path / "data" / "inputs")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
