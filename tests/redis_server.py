"""A real ``redis-server`` for the tests: one per test session, on a unix socket in a tmp folder.

Configured as the README tells operators to run it (``appendonly yes``, ``appendfsync everysec``,
``maxmemory-policy noeviction``) and with RDB snapshots off, so a restart restores what the
append-only file holds and nothing else. :meth:`RedisServer.restart` stops it cleanly and starts
it again on the same folder (the AOF test).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

MISSING = (
    "redis-server is not installed. `make test` installs it when run as root on Debian/Ubuntu; "
    "otherwise run `sudo apt-get install -y redis-server` (or put a redis-server 7 on PATH)."
)


class RedisServer:
    def __init__(self, folder: Path, binary: str) -> None:
        self.folder = folder
        self.binary = binary
        self.socket = folder / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def find_binary(cls) -> str | None:
        return shutil.which("redis-server")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        args = [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self._wait_ready(timeout=10.0)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start:\n{log}")
            if self.socket.exists() and self._ping():
                return
            time.sleep(0.005)  # polling for the socket file; ready in ~40 ms
        raise RuntimeError(f"redis-server did not answer within {timeout} s")

    def _ping(self) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def stop(self) -> None:
        """Stop as an operator would (SIGTERM: the AOF is flushed and fsynced)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def restart_empty(self) -> None:
        """Stop, delete the append-only files, start: a Redis that lost its disk."""
        self.stop()
        for folder in {path.parent for path in self.aof_files()}:
            shutil.rmtree(folder)
        self.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def aof_files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*.aof") if p.is_file())


def ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
