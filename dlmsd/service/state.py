"""Durable daemon state: replay counters and the output spool, in one SQLite file.

Why one file and one transaction: a push is "accepted" when its meter's
invocation counter has advanced AND its record sits in every sink's queue. Both
are written by the same COMMIT, so after a crash either both happened (the push
is delivered later and its replay refused) or neither did (the meter's next
push, or a retransmission of this one, is accepted).

Durability trade-off (`synchronous`):

* ``"full"`` (default): the WAL is fsynced at every commit. An accepted push
  survives a power cut. One fsync per commit, so batch commits.
* ``"normal"``: no fsync at commit, only at checkpoints. An accepted push
  survives a daemon crash (SIGKILL, OOM) but a power cut may roll back the last
  commits; counters and spool roll back *together*, so this loses pushes but
  never opens a replay window.
* ``"extra"`` behaves like ``"full"`` in WAL mode; ``"off"`` never fsyncs (a
  power cut may corrupt the database: tests and benchmarks only).

Threading: the calls are blocking and run on the reactor thread. That is a
deliberate choice: with commits batched (hundreds of pushes per transaction) a
commit costs one fsync, well under the time a thread hand-off would add per
batch, and SQLite connections are simplest kept on one thread.

Schema (``PRAGMA user_version`` = 2; version 2 added ``replay_window``)::

    counters(system_title BLOB PRIMARY KEY, invocation_counter INTEGER, replay_window BLOB)
    spool(id INTEGER PRIMARY KEY, sink TEXT, record_id TEXT, record TEXT, created_at REAL)

``replay_window`` holds the anti-replay bitmap below the counter when the
daemon runs with ``[state] replay_window`` > 0 (`dlmsd.service.replaywindow`);
NULL (a strict daemon advanced the counter) reads as "every counter below it
seen". The bitmap is written with the counter in the same commit.

`record_id` is ``<system title hex>:<invocation counter>``: stable, so sinks and
their consumers can drop the duplicates at-least-once delivery may produce.

Bounded spool (`spool_limit` records per sink, 0 = unbounded): with the
``"refuse"`` policy `spool_has_room()` turns false once a sink's queue is full
and the ingest refuses pushes (their counters do not move, so a meter's
retransmission is accepted later); with ``"drop_oldest"`` each commit deletes,
in the same transaction, the oldest records of any queue it took past the
limit, and reports them through `on_drop` (a metric and a loud log line).
Queue depths are kept in memory (counted once at open) so the check costs
nothing per push.

Delivering a batch costs no read-back and no transaction of its own
(`dlmsd.service.spoolmirror`): a sink's claim is answered from the rows as
committed, and an acknowledgement's DELETE rides on the next transaction (the
ingest's next commit, or a timer after `FLUSH_DELAY`, or close). A crash before
that DELETE reaches the disk delivers those records again after the restart
(at least once, as before; never a loss).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import operator
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred

from dlmsd.service import replaywindow
from dlmsd.service.spoolmirror import (
    TRUSTED_IDS,
    SpoolMirror,
    consecutive,
    id_runs,
)
from dlmsd.service.statelock import StateLock, StateLockedError

if TYPE_CHECKING:
    from dlmsd.service.statebackend import CommitResult

SCHEMA_VERSION = 2

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS counters ("
    " system_title BLOB PRIMARY KEY,"
    " invocation_counter INTEGER NOT NULL,"
    " replay_window BLOB"
    ") WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS spool ("
    " id INTEGER PRIMARY KEY,"
    " sink TEXT NOT NULL,"
    " record_id TEXT NOT NULL,"
    " record TEXT NOT NULL,"
    " created_at REAL NOT NULL"
    ")",
    "CREATE INDEX IF NOT EXISTS spool_by_sink ON spool (sink, id)",
)

# Advance a counter only upwards: the in-memory check already refused
# replays, this keeps a stale or reordered batch from moving it back. A strict
# advance leaves no window (NULL: everything below the counter counts as seen).
_UPSERT_COUNTER = (
    "INSERT INTO counters (system_title, invocation_counter) VALUES (?, ?)"
    " ON CONFLICT (system_title) DO UPDATE SET invocation_counter = excluded.invocation_counter,"
    " replay_window = NULL"
    " WHERE excluded.invocation_counter > counters.invocation_counter"
)
# With a replay window: the counter and its bitmap as the memory holds them.
_UPSERT_WINDOW = (
    "INSERT INTO counters (system_title, invocation_counter, replay_window) VALUES (?, ?, ?)"
    " ON CONFLICT (system_title) DO UPDATE SET invocation_counter = excluded.invocation_counter,"
    " replay_window = excluded.replay_window"
    " WHERE excluded.invocation_counter >= counters.invocation_counter"
)
# Rows go in by multi-row INSERTs of these sizes (largest first): one statement
# per many rows costs about half of executemany's per-row step, and a handful of
# fixed sizes keeps every statement in the connection's cache. 256 rows of two
# parameters stay below the oldest SQLite default of 999 variables.
_CHUNK_SIZES = (256, 128, 64, 32, 16, 8, 4, 2, 1)


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    """``(start, size)`` pieces covering ``range(count)``, sizes from `_CHUNK_SIZES`."""
    start = 0
    for size in _CHUNK_SIZES:
        while count - start >= size:
            yield start, size
            start += size


@functools.cache
def _upsert_counters_sql(rows: int) -> str:
    """`_UPSERT_COUNTER` for `rows` (system_title, counter) pairs in one statement."""
    values = ", ".join(["(?, ?)"] * rows)
    return _UPSERT_COUNTER.replace("VALUES (?, ?)", f"VALUES {values}")


@functools.cache
def _upsert_windows_sql(rows: int) -> str:
    """`_UPSERT_WINDOW` for `rows` (system_title, counter, window) triples in one statement."""
    values = ", ".join(["(?, ?, ?)"] * rows)
    return _UPSERT_WINDOW.replace("VALUES (?, ?, ?)", f"VALUES {values}")


@functools.cache
def _insert_spool_sql(rows: int) -> str:
    """Spool rows of one sink: ?1 the sink, ?2 created_at, then (record_id, record) pairs."""
    values = ", ".join(f"(?1, ?{3 + 2 * row}, ?{4 + 2 * row}, ?2)" for row in range(rows))
    return f"INSERT INTO spool (sink, record_id, record, created_at) VALUES {values}"


# A record is read as the UTF-8 bytes SQLite stores (no decoding to str): the
# JSONL sink writes them as they are. A database in another text encoding
# (made by some other tool) is read as text.
_SELECT_PENDING = (
    "SELECT id, record_id, CAST(record AS BLOB) FROM spool WHERE sink = ? ORDER BY id LIMIT ?"
)
_SELECT_PENDING_TEXT = _SELECT_PENDING.replace("CAST(record AS BLOB)", "record")
# Acknowledged ids go by runs of consecutive ids: a batch claimed from one
# queue is usually a single run, deleted by one statement.
_DELETE_RUN = "DELETE FROM spool WHERE sink = ? AND id BETWEEN ? AND ?"
_record_fields = operator.attrgetter("record_id", "record_json")

Synchronous = Literal["off", "normal", "full", "extra"]
SYNCHRONOUS_MODES: tuple[Synchronous, ...] = ("off", "normal", "full", "extra")

SpoolFullPolicy = Literal["refuse", "drop_oldest"]
SPOOL_FULL_POLICIES: tuple[SpoolFullPolicy, ...] = ("refuse", "drop_oldest")
_DROP_OLDEST = (
    "DELETE FROM spool WHERE id IN (SELECT id FROM spool WHERE sink = ? ORDER BY id LIMIT ?)"
)


class StateError(Exception):
    """The state database cannot be opened or written (disk full, corrupt, too new)."""


class StateDiskFull(StateError):
    """The state's disk (or file system quota) is full: nothing was written."""


def _state_error(message: str, exc: sqlite3.Error) -> StateError:
    """`message` as a StateError; a full disk as `StateDiskFull`, so it has its own reason."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return StateDiskFull(message)
    return StateError(message)


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return value.hex().upper()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# One encoder for all records: building one per call costs about 1 µs.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)


def encode_record(record: Mapping[str, object]) -> str:
    """A record as one line of compact JSON (insertion order kept, UTF-8 as is).

    The three characters other than LF that line splitters commonly break on
    (NEL, LINE/PARAGRAPH SEPARATOR) are escaped; outside strings JSON is ASCII,
    so the replacement only ever touches string contents.
    """
    return escape_line_breaks(_ENCODER.encode(record))


def escape_line_breaks(text: str) -> str:
    """Escape NEL, LINE and PARAGRAPH SEPARATOR in JSON text (see `encode_record`)."""
    if not text.isascii():
        text = text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028")
        text = text.replace("\u2029", "\\u2029")
    return text


def make_record_id(system_title: bytes, invocation_counter: int) -> str:
    """The stable id of a push: ``<system title hex>:<invocation counter>``."""
    return f"{system_title.hex().upper()}:{invocation_counter}"


@attrs.frozen(slots=True)
class AcceptedPush:
    """A verified push, ready to commit: its counter and its record (already JSON).

    A negative `invocation_counter` means the push had none (plaintext): it is
    spooled but moves no counter.
    """

    system_title: bytes
    invocation_counter: int
    record_id: str
    record_json: str

    @classmethod
    def create(
        cls, system_title: bytes, invocation_counter: int, record: Mapping[str, object]
    ) -> AcceptedPush:
        """Serialise the record now, so a bad record fails alone and not its batch."""
        return cls(
            system_title,
            invocation_counter,
            make_record_id(system_title, invocation_counter),
            encode_record(record),
        )


class SpoolRecord(Mapping[str, object]):
    """A spooled record: read-only mapping view over its JSON text.

    The JSON is held as given, text or the UTF-8 bytes the spool stores, and
    converted only when asked: the JSONL sink writes `utf8` as is, so the hot
    path neither decodes nor parses it. Fields are parsed only when a sink
    reads one.
    """

    __slots__ = ("_json", "_parsed", "record_id")
    _parsed: dict[str, object]

    def __init__(self, record_id: str, json_text: str | bytes) -> None:
        self.record_id = record_id
        self._json = json_text
        # `_parsed` stays unset until a field is read (one store less per record).

    @property
    def json(self) -> str:
        """The record as JSON text."""
        text = self._json
        if isinstance(text, bytes):
            text = self._json = text.decode("utf-8")
        return text

    @property
    def utf8(self) -> bytes:
        """The record as UTF-8 encoded JSON, the bytes a sink writes."""
        text = self._json
        return text if isinstance(text, bytes) else text.encode("utf-8")

    def _data(self) -> dict[str, object]:
        try:
            return self._parsed
        except AttributeError:
            parsed = json.loads(self.json)
            self._parsed = parsed if isinstance(parsed, dict) else {"value": parsed}
            return self._parsed

    def __getitem__(self, key: str) -> object:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"SpoolRecord({self.record_id!r})"


def spool_has_room(limit: int | None, policy: str, depths: Mapping[str, int], staged: int) -> bool:
    """Whether a bounded spool with the ``refuse`` policy takes one more push.

    Shared by the state backends: the fullest sink queue plus what is staged
    must stay below the limit.
    """
    if not limit or policy != "refuse":
        return True
    return max(depths.values(), default=0) + staged < limit


@attrs.frozen(slots=True)
class SpoolEntry:
    """One queued record of one sink."""

    id: int
    record_id: str
    record: SpoolRecord


class StateStore:
    """Replay counters and per-sink spool queues in one SQLite database (WAL).

    `last_counter` answers from memory (all counters are loaded at open);
    `stage` + `commit` batch accepted pushes so one transaction (one fsync)
    covers many; `accept` commits a given batch directly. `mirror` holds the
    sinks' queues as committed and the acknowledged DELETEs not yet written.
    """

    def __init__(
        self,
        path: Path,
        sinks: Sequence[str],
        *,
        synchronous: Synchronous = "full",
        clock: Callable[[], float] = time.time,
        spool_limit: int = 0,
        spool_full: SpoolFullPolicy = "refuse",
        replay_window: int = 0,
    ) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}"
            )
        if spool_full not in SPOOL_FULL_POLICIES:
            raise ValueError(f"spool_full must be one of {SPOOL_FULL_POLICIES}")
        self.spool_limit = max(0, spool_limit)
        self.spool_full = spool_full
        self.spool_dropped: dict[str, int] = dict.fromkeys(sinks, 0)
        self.on_drop: Callable[[str, int], object] | None = None
        self.path = path
        self.sinks = tuple(sinks)
        self._clock = clock
        self.replay_window = replay_window
        # Per meter, the window's bitmap below its counter (replay_window > 0 only).
        self._seen: dict[bytes, int] = {}
        self._all_seen = (1 << replay_window) - 1
        self._committed_seen: dict[bytes, int | None] = {}
        self._staged: list[AcceptedPush] = []
        # Counters as they were in the database before staging touched them,
        # to put back if the commit fails.
        self._committed_counters: dict[bytes, int | None] = {}
        # One process owns the file (dlmsd.service.statelock): counters are checked
        # in memory, so a second writer would let replays through.
        try:
            self._lock = StateLock(path)
        except StateLockedError as exc:
            raise StateError(str(exc)) from None
        except OSError as exc:
            raise StateError(
                f"{path}: cannot open state database: its lock file: {exc.strerror or exc}"
            ) from None
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._setup(synchronous)
            self._counters: dict[bytes, int] = {}
            for title, counter, window in self._db.execute(
                "SELECT system_title, invocation_counter, replay_window FROM counters"
            ):
                self._counters[title] = counter
                if replay_window:
                    self._seen[title] = replaywindow.decode(window, replay_window)
            self._depths: dict[str, int] = dict.fromkeys(self.sinks, 0)
            # Queues of sinks no longer configured do not count towards the limit.
            for sink, depth in self._db.execute("SELECT sink, COUNT(*) FROM spool GROUP BY sink"):
                if sink in self._depths:
                    self._depths[sink] = depth
            self.mirror = SpoolMirror(self._depths)
            (max_id,) = self._db.execute("SELECT MAX(id) FROM spool").fetchone()
            if (max_id or 0) >= TRUSTED_IDS:
                self.mirror.disable()
        except sqlite3.Error as exc:
            self._lock.release()
            raise StateError(f"{path}: cannot open state database: {exc}") from None
        except BaseException:
            self._lock.release()
            raise

    def _setup(self, synchronous: Synchronous) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: state database schema {version} is newer than this"
                f" dlmsd supports ({SCHEMA_VERSION})"
            )
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StateError(f"{self.path}: cannot switch the state database to WAL ({mode})")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        db.execute("PRAGMA busy_timeout=5000")
        # Some builds (Debian's) default to secure_delete=ON, which zeroes and
        # journals every page a delivered batch frees: as much WAL as the batch
        # itself. FAST still zeroes deleted records on pages written anyway; the
        # records are in the sinks' output in clear, so nothing is kept secret.
        db.execute("PRAGMA secure_delete=FAST")
        encoding = db.execute("PRAGMA encoding").fetchone()[0]
        self._select_pending = _SELECT_PENDING if encoding == "UTF-8" else _SELECT_PENDING_TEXT
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                columns = [row[1] for row in db.execute("PRAGMA table_info(counters)")]
                if columns and "replay_window" not in columns:  # version 1
                    db.execute("ALTER TABLE counters ADD COLUMN replay_window BLOB")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # --- counters -------------------------------------------------------------

    def last_counter(self, system_title: bytes) -> int | None:
        """The highest invocation counter accepted (staged or committed), or None."""
        return self._counters.get(system_title)

    def accepts_counter(self, system_title: bytes, counter: int) -> bool:
        """False when `counter` was accepted or staged already, or is too old
        (strict: not above the highest; with a window: below it or seen)."""
        highest = self._counters.get(system_title)
        width = self.replay_window
        if not width:
            return highest is None or counter > highest
        seen = self._seen.get(system_title, self._all_seen)
        return replaywindow.accepts(highest, seen, counter, width)

    def __len__(self) -> int:
        """Number of meters with a counter."""
        return len(self._counters)

    def forget_counter(self, system_title: bytes) -> int | None:
        """Drop a meter's counter (it restarted legitimately: firmware update, new keys).

        Its next push is accepted whatever its counter. Returns the counter
        dropped (None if there was none). Raises StateError, changing nothing.
        """
        row = self._db.execute(
            "SELECT invocation_counter FROM counters WHERE system_title = ?", (system_title,)
        ).fetchone()
        self._transaction(
            lambda db: db.execute("DELETE FROM counters WHERE system_title = ?", (system_title,))
        )
        in_memory = self._counters.pop(system_title, None)
        self._seen.pop(system_title, None)
        # A failed commit of pushes staged before the reset restores "none".
        if system_title in self._committed_counters:
            self._committed_counters[system_title] = None
        if system_title in self._committed_seen:
            self._committed_seen[system_title] = None
        return in_memory if in_memory is not None else (int(row[0]) if row else None)

    # --- accepting pushes -----------------------------------------------------

    def stage(self, item: AcceptedPush) -> None:
        """Accept a push into the next commit.

        The in-memory counter advances now, so a replay arriving before the
        commit is already refused; the database only advances with `commit`.
        """
        title, counter = item.system_title, item.invocation_counter
        current = self._counters.get(title)
        self._committed_counters.setdefault(title, current)
        width = self.replay_window
        # A negative counter marks a push without one (plaintext): it moves nothing.
        if width and counter >= 0:
            seen = self._seen.get(title)
            self._committed_seen.setdefault(title, seen)
            if seen is None:
                seen = self._all_seen
            if replaywindow.accepts(current, seen, counter, width):
                self._counters[title], self._seen[title] = replaywindow.advance(
                    current, seen, counter, width
                )
        elif counter >= 0 and (current is None or counter > current):
            self._counters[title] = counter
        self._staged.append(item)

    @property
    def staged(self) -> int:
        """Number of pushes staged and not yet committed."""
        return len(self._staged)

    def commit(self) -> int:
        """Commit the staged pushes in one transaction; returns how many.

        On failure raises StateError and forgets the staged pushes: none of them
        was accepted, and their counters are set back.
        """
        items, self._staged = self._staged, []
        previous, self._committed_counters = self._committed_counters, {}
        previous_seen, self._committed_seen = self._committed_seen, {}
        if not items:
            return 0
        try:
            self._write(items)
        except StateError:
            for title, counter in previous.items():
                if counter is None:
                    self._counters.pop(title, None)
                else:
                    self._counters[title] = counter
            for title, seen in previous_seen.items():
                if seen is None:
                    self._seen.pop(title, None)
                else:
                    self._seen[title] = seen
            raise
        return len(items)

    def accept(self, items: Sequence[AcceptedPush]) -> None:
        """Commit these pushes (and any staged ones) in one transaction.

        Each push advances its meter's counter (only upwards) and adds one spool
        row per sink. Raises StateError and changes nothing on failure.
        """
        for item in items:
            self.stage(item)
        self.commit()

    def _write(self, items: Sequence[AcceptedPush]) -> None:
        now = self._clock()
        best: dict[bytes, int] = {}
        for item in items:
            title, counter = item.system_title, item.invocation_counter
            if counter > best.get(title, -1):
                best[title] = counter
        width = self.replay_window
        if width:
            # The memory holds the state after this batch: write it as it is.
            counters, seen = self._counters, self._seen
            everything = self._all_seen
            rows = [
                (t, counters[t], replaywindow.encode(seen.get(t, everything), width)) for t in best
            ]
            counter_params = list(itertools.chain.from_iterable(rows))
            upsert, columns = _upsert_windows_sql, 3
        else:
            counter_params = list(itertools.chain.from_iterable(best.items()))
            upsert, columns = _upsert_counters_sql, 2
        # record_id, record of every push, flat: a chunk's parameters are a slice.
        record_params = list(itertools.chain.from_iterable(map(_record_fields, items)))
        drops = self._excess(len(items))

        def body(db: sqlite3.Connection) -> None:
            for start, size in _chunks(len(best)):
                db.execute(
                    upsert(size), counter_params[columns * start : columns * (start + size)]
                )
            # One sink after the other, so each sink's rows of a batch have
            # consecutive ids and its acknowledgement is one range delete.
            for sink in self.sinks:
                first = last = 0
                for start, size in _chunks(len(items)):
                    params = [sink, now]
                    params += record_params[2 * start : 2 * (start + size)]
                    last = db.execute(_insert_spool_sql(size), params).lastrowid or 0
                    first = first or last - size + 1
                spans[sink] = (first, last)
            if drops:
                db.executemany(_DROP_OLDEST, drops.items())

        spans: dict[str, tuple[int, int]] = {}
        self._transaction(body)
        for sink in self.sinks:
            self._depths[sink] = self._depths.get(sink, 0) + len(items) - drops.get(sink, 0)
        self._mirror_rows(items, spans, drops)
        for sink, count in drops.items():
            self.spool_dropped[sink] = self.spool_dropped.get(sink, 0) + count
            if self.on_drop is not None:
                self.on_drop(sink, count)

    def _mirror_rows(
        self,
        items: Sequence[AcceptedPush],
        spans: Mapping[str, tuple[int, int]],
        drops: Mapping[str, int],
    ) -> None:
        """Add a commit's rows (ids `spans`: first, last per sink) to the sinks' mirrors."""
        mirror = self.mirror
        for sink in self.sinks:
            if not mirror.mirrored(sink):
                continue
            first, last = spans[sink]
            if not consecutive(first, last, len(items)):
                mirror.disable()
                return
            ids = range(first, last + 1)
            mirror.add(
                sink,
                [
                    SpoolEntry(
                        row_id, item.record_id, SpoolRecord(item.record_id, item.record_json)
                    )
                    for row_id, item in zip(ids, items, strict=True)
                ],
            )
            mirror.drop_oldest(sink, drops.get(sink, 0))

    def _excess(self, adding: int) -> dict[str, int]:
        """Per sink, how many oldest records ``drop_oldest`` deletes to make room."""
        if not self.spool_limit or self.spool_full != "drop_oldest":
            return {}
        limit = self.spool_limit
        return {
            sink: depth + adding - limit
            for sink in self.sinks
            if (depth := self._depths.get(sink, 0)) + adding > limit
        }

    def spool_has_room(self) -> bool:
        """False when the ``refuse`` policy must refuse the next push: a queue is full."""
        return spool_has_room(self.spool_limit, self.spool_full, self._depths, len(self._staged))

    def spool_depths(self) -> dict[str, int]:
        """Records queued per sink, from memory (no query)."""
        return dict(self._depths)

    def _transaction(self, body: Callable[[sqlite3.Connection], object]) -> None:
        """Run `body` in one transaction, after the acknowledged DELETEs waiting for one.

        On failure nothing is written, the DELETEs keep waiting and no sink is
        mirrored any more (what the database holds is no longer certain).
        """
        db = self._db
        deletes = self.mirror.deletes
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.mirror.drop()
            raise _state_error(f"{self.path}: cannot begin a transaction: {exc}", exc) from None
        try:
            # First, so the drop_oldest of this commit counts from the same queue as
            # the memory does, and no range can reach rows inserted after it.
            if deletes:
                db.executemany(_DELETE_RUN, deletes)
            body(db)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # A failed COMMIT may have rolled back already.
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self.mirror.drop()
            raise _state_error(f"{self.path}: transaction failed: {exc}", exc) from None
        if deletes:
            self.mirror.written()

    def flush(self) -> None:
        """Write the acknowledged DELETEs still waiting (one transaction; none if none).

        Raises StateError; then they keep waiting.
        """
        if self.mirror.deletes:
            self._transaction(lambda db: None)

    # --- spool ----------------------------------------------------------------

    def pending(self, sink: str, limit: int) -> list[SpoolEntry]:
        """Up to `limit` oldest queued records of a sink (from the mirror when it holds them)."""
        entries = self.mirror.claim(sink, limit)
        if entries is not None:
            return entries
        entries = self._select(sink, limit)
        if not entries and limit > 0 and sink in self._depths:
            self.mirror.restart(sink)  # the queue is empty: mirror it again
        return entries

    def _select(self, sink: str, limit: int) -> list[SpoolEntry]:
        """`pending` read from the database (what the mirror must equal).

        Like every read here it skips the rows acknowledged whose DELETE waits,
        rather than writing it: a read works on a full disk.
        """
        waiting = self.mirror.waiting(sink)
        try:
            rows = self._db.execute(self._select_pending, (sink, limit + len(waiting))).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot read the spool: {exc}") from None
        entries = [
            SpoolEntry(row_id, rid, SpoolRecord(rid, data))
            for row_id, rid, data in rows
            if row_id not in waiting
        ]
        return entries[:limit]

    def ack(self, sink: str, ids: Iterable[int]) -> None:
        """Remove delivered records from a sink's queue.

        A mirrored sink's records leave the queue (and its depth) at once; their
        DELETE waits for the next transaction (see `dlmsd.service.spoolmirror`:
        a crash before it delivers them again, never loses them). Otherwise
        (a backlog from before the start, a mirror dropped) they are deleted now.
        """
        removed = self.mirror.acknowledge(sink, ids)
        if removed is not None:
            self._depths[sink] = max(0, self._depths.get(sink, 0) - removed)
            if self.mirror.deletes:
                self.mirror.write_soon(self.flush)
            return
        runs = [(sink, first, last) for first, last in id_runs(ids)]
        if runs:
            deleted: list[int] = []
            self._transaction(
                lambda db: deleted.append(db.executemany(_DELETE_RUN, runs).rowcount)
            )
            # Rows dropped meanwhile by ``drop_oldest`` are not counted twice.
            depth = self._depths[sink] = max(0, self._depths.get(sink, 0) - sum(deleted))
            if depth == 0 and sink in self._depths:
                self.mirror.restart(sink)  # drained: mirror it again

    def depth(self, sink: str) -> int:
        """Number of records queued for a sink."""
        try:
            row = self._db.execute("SELECT COUNT(*) FROM spool WHERE sink = ?", (sink,)).fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot read the spool: {exc}") from None
        return int(row[0]) - len(self.mirror.waiting(sink))

    def oldest_age(self, sink: str, now: float | None = None) -> float:
        """Seconds the oldest queued record of a sink has waited (0.0 when empty)."""
        waiting = self.mirror.waiting(sink)
        try:
            rows = self._db.execute(
                "SELECT id, created_at FROM spool WHERE sink = ? ORDER BY id LIMIT ?",
                (sink, len(waiting) + 1),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot read the spool: {exc}") from None
        oldest = next((created for row_id, created in rows if row_id not in waiting), None)
        if oldest is None:
            return 0.0
        current = self._clock() if now is None else now
        return max(0.0, current - float(oldest))

    def close(self) -> None:
        """Commit what is staged and the acknowledged DELETEs, then close the database."""
        try:
            self.commit()
            self.flush()
        finally:
            self.mirror.stop_timer()
            self._db.close()
            self._lock.release()

    # --- the StateBackend interface (dlmsd.service.statebackend) ----------------
    # SQLite answers at once, so these Deferreds have already fired.

    backend_name = "sqlite"
    available = True

    def start(self, reactor: object) -> None:
        """Every call is synchronous; `reactor` only times the write of acknowledged
        DELETEs when nothing commits. The lock file names this process again
        (twistd may have forked since the open)."""
        self.mirror.start_timer(reactor)
        self._lock.write_pid()

    def commit_staged(self) -> Deferred[CommitResult]:
        """`commit` as a Deferred; one daemon owns the file, so nothing is refused."""
        from dlmsd.service.statebackend import CommitResult

        try:
            return defer.succeed(CommitResult(self.commit()))
        except StateError:
            return defer.fail()

    def reset_counter(self, system_title: bytes, requested_by: str = "") -> Deferred[int | None]:
        """`forget_counter` as a Deferred (`requested_by` is for the PostgreSQL audit rows)."""
        return defer.maybeDeferred(self.forget_counter, system_title)

    def claim(self, sink: str, limit: int) -> Deferred[list[SpoolEntry]]:
        """`pending` as a Deferred (one pump per sink reads the queue)."""
        return defer.maybeDeferred(self.pending, sink, limit)

    def acknowledge(self, sink: str, ids: Sequence[int]) -> Deferred[None]:
        """`ack` as a Deferred."""
        return defer.maybeDeferred(self.ack, sink, ids)

    def shutdown(self) -> Deferred[None]:
        """`close` as a Deferred."""
        return defer.maybeDeferred(self.close)
