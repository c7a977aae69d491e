"""One process per data folder: a second real process is refused at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.folder_lock import FolderInUse, FolderLock

ROOT = Path(__file__).parents[2]
HOLDER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from bot.folder_lock import FolderLock\n"
    "lock = FolderLock.take(Path(sys.argv[1]))\n"
    "print('holding', flush=True)\n"
    "sys.stdin.read()\n"  # until the test closes our stdin
)


def hold(folder: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    holder = hold(folder)
    try:
        with pytest.raises(
            FolderInUse, match=rf"in use by another Atelier process \(pid {holder.pid}\)"
        ):
            FolderLock.take(folder)
    finally:
        holder.communicate("", timeout=30)  # the holder exits: the kernel drops its lock
    with FolderLock.take(folder) as lock:
        assert lock.held
    assert not lock.held


def test_a_holder_that_dies_leaves_no_stale_lock(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    holder = hold(folder)
    holder.kill()
    holder.wait(timeout=30)
    FolderLock.take(folder).release()


def test_one_process_cannot_take_its_own_folder_twice(tmp_path: Path) -> None:
    with FolderLock.take(tmp_path), pytest.raises(FolderInUse):
        FolderLock.take(tmp_path)
