"""Where each meter's profile readback stopped: the time of the last entry delivered.

Kept in the daemon's SQLite state database, in a table of its own::

    readback_marks(system_title BLOB, profile TEXT, last_entry TEXT, PRIMARY KEY(...))

through a short-lived connection of its own (one read and one write per
readback, far off the push hot path; WAL lets it share the file with the
state store). The mark moves only after the rows are committed to the spool,
so a crash in between re-reads those rows (at-least-once, like pushes; the
record ids let consumers drop the duplicates).

With PostgreSQL state the marks are kept in memory only: after a restart the
first readback of each meter reads its newest ``max_rows`` entries again.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Protocol

from dlmsd.protocol.obis import Obis

_CREATE = (
    "CREATE TABLE IF NOT EXISTS readback_marks ("
    " system_title BLOB NOT NULL,"
    " profile TEXT NOT NULL,"
    " last_entry TEXT NOT NULL,"
    " PRIMARY KEY (system_title, profile)"
    ") WITHOUT ROWID"
)
_SELECT = "SELECT last_entry FROM readback_marks WHERE system_title = ? AND profile = ?"
_UPSERT = (
    "INSERT INTO readback_marks (system_title, profile, last_entry) VALUES (?, ?, ?)"
    " ON CONFLICT (system_title, profile) DO UPDATE SET last_entry = excluded.last_entry"
)


class ReadbackMarks(Protocol):
    """The last entry time read per (meter, profile)."""

    def get(self, system_title: bytes, profile: Obis) -> datetime | None:
        """The time of the last entry delivered, or None before the first readback."""

    def set(self, system_title: bytes, profile: Obis, last_entry: datetime) -> None:
        """Remember the time of the last entry delivered."""


class MemoryMarks:
    """Marks in a dict (PostgreSQL state, tests): lost at restart."""

    def __init__(self) -> None:
        self._marks: dict[tuple[bytes, str], datetime] = {}

    def get(self, system_title: bytes, profile: Obis) -> datetime | None:
        return self._marks.get((system_title, str(profile)))

    def set(self, system_title: bytes, profile: Obis, last_entry: datetime) -> None:
        self._marks[(system_title, str(profile))] = last_entry


class SqliteMarks:
    """Marks in the state database file (table ``readback_marks``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._created = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=5.0)
        if not self._created:
            db.execute(_CREATE)
            self._created = True
        return db

    def get(self, system_title: bytes, profile: Obis) -> datetime | None:
        db = self._connect()
        try:
            row = db.execute(_SELECT, (system_title, str(profile))).fetchone()
        finally:
            db.close()
        if row is None:
            return None
        try:
            return datetime.fromisoformat(row[0])
        except (TypeError, ValueError):
            return None  # a damaged mark: read from scratch rather than never again

    def set(self, system_title: bytes, profile: Obis, last_entry: datetime) -> None:
        db = self._connect()
        try:
            db.execute(_UPSERT, (system_title, str(profile), last_entry.isoformat()))
        finally:
            db.close()
