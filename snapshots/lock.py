"""One process at a time per data directory: an exclusive lock held for as long as it is used.

Theory of operation
-------------------
Two servers on one data directory would both append to the same log segment, numbering their
records independently; the second one's acknowledged writes vanish at the next recovery (a
sequence gap, then a refusal to start). An offline tool (``snapshot import --force``, ``log
repair``, an offline ``snapshot export``) under a running server is as bad: it rewrites or
deletes files the server still has open.

So whoever uses a data directory first takes ``flock(LOCK_EX | LOCK_NB)`` on its ``LOCK`` file
and holds the open descriptor until it is done. The kernel drops the lock when the descriptor
closes, including when the process dies by SIGKILL or a power cut, so a crash never leaves a
stale lock behind (a bare PID file would, and would need guessing whether its PID still lives).
The file's content is the holder's PID, written after the lock is taken, only so that the
refusal can say who holds it. ``flock`` locks belong to the open file description, so a second
attempt within the same process is refused too (tests rely on that). This is what Redis does
not need (one process owns its files by configuration) and what PostgreSQL's ``postmaster.pid``
and LMDB's lock file do for the same reason.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from engine.errors import StorageFailure

LOCK_NAME = "LOCK"


class DataDirectoryInUse(StorageFailure):
    """Another process holds the data directory: a second server or an offline tool."""

    http_status = 409


class DataDirectoryLock:
    """The exclusive lock on one data directory; use as a context manager, or ``acquire`` /
    ``release``.

    Raises:
        DataDirectoryInUse: another process (or another open of it here) holds the lock.
        StorageFailure: the lock file cannot be created (a read-only or missing directory).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageFailure(f"cannot open lock file {str(self.path)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise DataDirectoryInUse(
                f"data directory {str(self.data_dir)!r} in use by {who}; stop it first "
                f"(one server or tool per data directory)", "data_dir"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageFailure(f"cannot lock {str(self.path)!r}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases it; the file stays)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> DataDirectoryLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
