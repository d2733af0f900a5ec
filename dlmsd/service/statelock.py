"""One process owns a SQLite state: an exclusive lock beside the database file.

Each daemon checks replays against the counters it holds in memory, so two
daemons on one SQLite file would each accept the same push (issue 13: 50 fresh
frames sent 4 times over TCP were accepted 92 times). The daemon, and every
``dlmsd state`` command that writes, takes ``flock(LOCK_EX | LOCK_NB)`` on
``<database>.lock`` before opening the database; the holder's pid is written in
the file so the one refused can say who holds it. The kernel drops the lock
when the holder exits, however it exits (kill -9 included): a stale lock file
never blocks a start. Several daemons share state through PostgreSQL only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class StateLockedError(Exception):
    """Another process holds the state; the message is the one line to show."""


def lock_path(database: Path) -> Path:
    """The lock file of a SQLite state database: ``state.sqlite3.lock`` beside it."""
    return database.with_name(database.name + ".lock")


class StateLock:
    """An exclusive lock on a SQLite state, held until `release` (or process exit)."""

    def __init__(self, database: Path) -> None:
        self.path = lock_path(database)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StateLockedError(
                f"{database}: state in use by another dlmsd ({who}, lock {self.path});"
                " one daemon owns a SQLite state: use PostgreSQL ([state] dsn ="
                ' "postgresql://...") to run several daemons'
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self.write_pid()

    def write_pid(self) -> None:
        """Record this process as the holder (again after a fork: twistd daemonizes)."""
        if self._fd is None:
            return
        # Best effort: the lock is the flock, the pid only names its holder.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
