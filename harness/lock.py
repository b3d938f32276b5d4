"""One run per results folder at a time.

Two processes writing one store interleave their units safely (SQLite transactions), but
they train the same runs twice and race on artifact folders. So every command takes an
exclusive lock on `<results>/.lock` for its whole life; a second command on the same folder
exits 1 with one line naming the holder's pid. The lock is an `flock`, released by the OS
when the holder exits, even after `kill -9`: a stale lock file never blocks a rerun.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from harness.errors import ServiceError


class BusyError(ServiceError):
    """The results folder is held by another live process."""


_held: dict[Path, int] = {}  # results folder -> fd of the lock this process holds


def lock_results_dir(results_dir: Path) -> None:
    """Take the folder's lock for the life of this process (re-entrant within it)."""
    path = Path(results_dir).resolve()
    if path in _held:
        return
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise BusyError(f"{results_dir} is in use by another spo-harness run (pid {holder}); "
                        "wait for it to finish or stop it, then rerun") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd


def release_results_dir(results_dir: Path) -> None:
    fd = _held.pop(Path(results_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock
