"""The file layer under the log and the snapshot writer, with a fault injector for tests.

Theory of operation
===================

Every file operation that ``wal.py``, ``logscan.py`` and ``writer.py`` perform goes through a
:class:`FileSystem` object passed in by the caller (``fs=``; ``None`` means :data:`REAL_FS`).
Each method is one system call or close to it, named after it, so that a test can say "the
third ``fsync`` fails with EIO" and mean exactly that. Writes use raw file descriptors
(``os.open``/``os.write``), not buffered file objects, so that an error is reported by the
call that caused it and no bytes linger in a user-space buffer after a failure.

:class:`FaultyFileSystem` counts calls per operation and raises ``OSError(errno)`` at the calls
a test chose. A failing ``write`` can first write part of its data, the way a real disk that
fills up mid-write returns a short count and then ENOSPC; that is what leaves a torn tail for
recovery to cut.

The methods are synchronous: the log calls them from a worker thread
(``trio.to_thread.run_sync``), recovery and tests call them directly.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["REAL_FS", "FaultyFileSystem", "FileSystem", "write_all"]


class FileSystem:
    """The real thing: thin wrappers over ``os``."""

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and its parents if missing."""
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: Path) -> list[str]:
        """Names in directory ``path`` (empty if it does not exist)."""
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        """``os.open``: returns a file descriptor."""
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), mode)

    def write(self, fd: int, data: memoryview | bytes) -> int:
        """``os.write``: may write fewer bytes than given; see :func:`write_all`."""
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        """``os.fsync``."""
        os.fsync(fd)

    def close(self, fd: int) -> None:
        """``os.close``."""
        os.close(fd)

    def fsync_dir(self, path: Path) -> None:
        """Make the directory entries of ``path`` durable (new, renamed and deleted files)."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def open_read(self, path: Path) -> BinaryIO:
        """Open ``path`` for buffered reading."""
        return open(path, "rb")  # the caller closes it

    def size(self, path: Path) -> int:
        """The file's size in bytes."""
        return os.stat(path).st_size

    def truncate(self, path: Path, size: int) -> None:
        """Cut the file at ``path`` to ``size`` bytes and fsync it."""
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        """Atomically replace ``dst`` with ``src`` (``os.replace``)."""
        os.replace(src, dst)

    def remove(self, path: Path) -> None:
        """Delete a file."""
        os.remove(path)


REAL_FS = FileSystem()


def write_all(fs: FileSystem, fd: int, data: bytes) -> None:
    """Write all of ``data``, looping over short writes (a full disk writes what fits first)."""
    with memoryview(data) as view:
        while view:
            n = fs.write(fd, view)
            view = view[n:]


#####################################################################
# Fault injection
#####################################################################


@dataclass
class _Fault:
    op: str
    errno: int
    at_call: int  # 1-based index among calls to op (counted from creation of the fs)
    times: int  # how many consecutive calls fail
    path_contains: str | None
    partial: bool


class FaultyFileSystem(FileSystem):
    """A :class:`FileSystem` that fails chosen calls, for tests.

    ``calls`` counts every call per operation name (``"fsync"``, ``"write"``...), so tests can
    also assert how many fsyncs group commit saved.

    >>> import errno
    >>> fs = FaultyFileSystem()
    >>> fs.fail("fsync", errno.EIO)  # the next fsync fails
    >>> fs.calls["fsync"]
    0
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._faults: list[_Fault] = []
        self._fds: dict[int, str] = {}
        self._lock = threading.Lock()

    def fail(
        self,
        op: str,
        errno: int,
        *,
        after: int = 0,
        times: int = 1,
        path_contains: str | None = None,
        partial: bool = False,
    ) -> None:
        """Make calls to ``op`` fail with ``OSError(errno)``.

        Args:
            op: a method name: open, write, fsync, close, fsync_dir, open_read, truncate,
                rename, remove, listdir, makedirs.
            errno: e.g. ``errno.ENOSPC``.
            after: let this many further calls to ``op`` succeed first (counting every path).
            times: how many calls fail (then it works again, as a disk with freed space would).
            path_contains: only calls whose path contains this string count (for ``write``,
                ``fsync`` and ``close`` the path the descriptor was opened with).
            partial: for ``write``: write the first half of the data before failing.
        """
        with self._lock:
            self._faults.append(
                _Fault(op, errno, self.calls[op] + after + 1, times, path_contains, partial)
            )

    def heal(self) -> None:
        """Forget all pending faults."""
        with self._lock:
            self._faults.clear()

    def _check(self, op: str, path: str) -> _Fault | None:
        with self._lock:
            self.calls[op] += 1
            n = self.calls[op]
            for fault in self._faults:
                if fault.op != op or not (fault.at_call <= n < fault.at_call + fault.times):
                    continue
                if fault.path_contains is not None and fault.path_contains not in path:
                    fault.at_call += 1  # a call that does not match does not count
                    continue
                return fault
            return None

    def _raise(self, fault: _Fault, path: str) -> None:
        raise OSError(fault.errno, os.strerror(fault.errno), path)

    def makedirs(self, path: Path) -> None:
        if f := self._check("makedirs", str(path)):
            self._raise(f, str(path))
        super().makedirs(path)

    def listdir(self, path: Path) -> list[str]:
        if f := self._check("listdir", str(path)):
            self._raise(f, str(path))
        return super().listdir(path)

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        if f := self._check("open", str(path)):
            self._raise(f, str(path))
        fd = super().open(path, flags, mode)
        self._fds[fd] = str(path)
        return fd

    def write(self, fd: int, data: memoryview | bytes) -> int:
        path = self._fds.get(fd, "")
        if f := self._check("write", path):
            if f.partial and len(data) > 1:
                super().write(fd, data[: len(data) // 2])
            self._raise(f, path)
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        path = self._fds.get(fd, "")
        if f := self._check("fsync", path):
            self._raise(f, path)
        super().fsync(fd)

    def close(self, fd: int) -> None:
        path = self._fds.pop(fd, "")
        if f := self._check("close", path):
            super().close(fd)  # the descriptor is gone either way, as with a real EIO on close
            self._raise(f, path)
        super().close(fd)

    def fsync_dir(self, path: Path) -> None:
        if f := self._check("fsync_dir", str(path)):
            self._raise(f, str(path))
        super().fsync_dir(path)

    def open_read(self, path: Path) -> BinaryIO:
        if f := self._check("open_read", str(path)):
            self._raise(f, str(path))
        return super().open_read(path)

    def truncate(self, path: Path, size: int) -> None:
        if f := self._check("truncate", str(path)):
            self._raise(f, str(path))
        super().truncate(path, size)

    def rename(self, src: Path, dst: Path) -> None:
        if f := self._check("rename", str(dst)):
            self._raise(f, str(dst))
        super().rename(src, dst)

    def remove(self, path: Path) -> None:
        if f := self._check("remove", str(path)):
            self._raise(f, str(path))
        super().remove(path)
