"""The data folder's lock: one Atelier process per data folder.

Two processes on one folder would both run the queue: the second re-runs the job the first is
painting, and both post the results. So ``python -m bot`` takes an exclusive lock
(``fcntl.flock``) on ``<data folder>/.atelier.lock`` before anything else, and holds it until it
exits; a second process finds it taken and stops at once, saying which process holds it. The
kernel drops the lock when its holder dies, however it dies, so a crash never leaves a stale
lock behind. The descriptor is not inherited by child processes (Python opens files
non-inheritable), so a leftover child cannot hold the folder either.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

from engine import files

LOCK_NAME: Final = ".atelier.lock"


class FolderInUse(Exception):
    """Another process holds the data folder; the message says which and what to do."""


class FolderLock:
    """An exclusive lock on a data folder, held until :meth:`release` (or the process ends)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self._fd: int | None = fd

    @classmethod
    def take(cls, folder: Path) -> FolderLock:
        """Lock ``folder`` (created 0700 if missing), or raise :class:`FolderInUse` at once."""
        files.private_folder(folder)
        path = folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, files.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"another Atelier process (pid {holder})" if holder else "another process"
            raise FolderInUse(
                f"the data folder {folder} is in use by {who}; stop that one first, or give "
                "this one a folder of its own with ATELIER_DATA_DIR"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(folder, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
