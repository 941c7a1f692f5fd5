"""One daemon per state directory: an advisory lock file that names its holder."""

from __future__ import annotations

import fcntl
import os

LOCK_NAME = "park-gateway.lock"


class AlreadyRunning(RuntimeError):
    """Another park-gateway holds the state directory; the message is the one line to print."""

    def __init__(self, state_dir: str, pid: int | None):
        self.state_dir = state_dir
        self.pid = pid
        super().__init__("another park-gateway runs on %s (pid %s)" % (state_dir, pid if pid else "unknown"))


class StateLock:
    """flock() on STATE_DIR/park-gateway.lock, held while the daemon runs; the kernel frees it at exit."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.read(fd, 32).decode("ascii").strip() or 0) or None
            except (OSError, ValueError):
                pid = None
            os.close(fd)
            raise AlreadyRunning(self.state_dir, pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
