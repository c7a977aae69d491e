"""Files in the data folder: written whole or not at all, readable by their owner only.

Both processes write there (the bot: members' inputs and challenge pictures; the engine: the
paintings), and both read files the other wrote, so a reader must never see half a file:
:func:`write_private` writes under a private temporary name beside the target and renames it
into place. A failed write (a full disk, a quota) removes the temporary file and raises; nothing
is left behind. Members' pictures are personal data, so files are created ``0600`` whatever the
umask, and :func:`private_folder` makes folders ``0700``. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Final

FILE_MODE: Final = 0o600
FOLDER_MODE: Final = 0o700
PARTIAL_SUFFIX: Final = ".part"


def write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, mode 0600; on failure leave nothing and raise."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return path


def private_folder(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    os.chmod(path, FOLDER_MODE)
    return path


def make_private(path: Path) -> None:
    """Make an existing file 0600 (one an older version left readable by others)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, FILE_MODE)
