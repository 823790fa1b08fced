"""An exclusive lock on a lock file, held with flock(2), so a crashed holder can never wedge it.

The kernel drops a flock when its holder exits, kill -9 included, so a leftover lock file is
taken over without guessing whether the pid in it is alive. The file holds the holder's pid only
to name it in the error. Release unlinks the file while still holding the lock; a process that
opened the old file meanwhile sees that its file is no longer the one at the path and retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lucid_eval.errors import UserError


class LockError(UserError, RuntimeError):
    """Another process holds the lock; `pid` is the holder's, None if it has not written it yet."""

    def __init__(self, message: str, path: Path, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


def _holder(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _still_at(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (its holder may have released and unlinked it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _acquire(path: Path, what: str) -> int:
    """Open `path` and take its flock without waiting; the fd, or LockError while another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            holder = f"process {pid}" if pid else "another process"
            raise LockError(
                f"{what} is in use by {holder} (it holds the lock {path}); wait for it to finish", path, pid
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if _still_at(fd, path):
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            return fd
        os.close(fd)  # we locked a file its holder had just unlinked on release: lock the one at `path` now


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing) for the `with` block.

    Raises LockError at once, naming the holder's pid, while another process (or another
    open of the file in this one) holds it. `what` names the locked thing in that message.
    The file is removed on release.
    """
    path = Path(path)
    fd = _acquire(path, what)
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # while still locked: nobody can have taken this file meanwhile
        finally:
            os.close(fd)
