"""PostgreSQL state backend: one database shared by several daemons on several hosts.

Exactly once across daemons: the replay check and the counter advance are one
statement (``INSERT ... ON CONFLICT DO UPDATE ... WHERE counter < new ...
RETURNING``) that also spools the pushes it let through, in the same
transaction. Two daemons committing the same frame serialise on the counter
row; the second sees the first's counter and refuses its copy. The statement
keeps each updated row's previous counter (``previous_counter = counter`` in
the SET, read under the row lock), so a batch holding several pushes of one
meter knows exactly which of them were new.

At-least-once delivery with several daemons draining one spool: `claim`
leases a sink's oldest rows (``FOR UPDATE SKIP LOCKED``, then ``claimed_by`` =
this instance, ``lease_until`` = now + lease) so daemons never pick the same
rows at once; `acknowledge` deletes them. A daemon killed mid-delivery leaves
a lease that runs out (its rows go to whoever asks next) or that it takes
back at once when it restarts under the same instance name.

Off the reactor: every query runs in a small thread pool of its own, one
psycopg connection per thread. Commits are serialised (one in flight, the
next batch grows meanwhile), so a slow database makes batches bigger rather
than the reactor slower.

Connection loss: the failing call raises `StateUnavailable`, `available`
turns false (the ingest refuses pushes at once, counted as
``state_unavailable``), every pooled connection is dropped, and a probe
retries every `retry_interval` until the database answers. A commit whose
COMMIT was lost in flight is reported as failed although it may have
committed: its pushes are then delivered but were not counted as accepted,
and a retransmission is refused as a replay. Nothing accepted is ever lost,
and nothing is accepted without the check.

Counter resets (`dlmsd state reset-counter`, a meter whose counter restarted
legitimately): `reset_counter` deletes the counter row and adds a row to
``dlmsd_counter_resets`` (who, when, the old counter) in one transaction.
Every daemon polls that table with its spool gauges (`refresh_interval`) and
drops the meter's cached counter, so a reset reaches all daemons sharing the
database within about a second, with an audit trail.

Schema versions live in ``dlmsd_schema_version``; `migrate` applies what is
missing under an advisory lock (two daemons starting together migrate once)
and refuses a database newer than this dlmsd.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from dlmsd.service import replaywindow
from dlmsd.service.state import (
    AcceptedPush,
    SpoolEntry,
    SpoolRecord,
    StateError,
    spool_has_room,
)
from dlmsd.service.statebackend import CommitResult, StateUnavailable, redact_dsn

try:
    import psycopg
    from psycopg import errors as pg_errors
except ImportError:  # pragma: no cover - the SQLite backend needs no psycopg
    psycopg = None  # type: ignore[assignment]

SCHEMA_VERSION = 3

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE dlmsd_counters ("
        " system_title bytea PRIMARY KEY,"
        " invocation_counter bigint NOT NULL,"
        # The value before the last advance: read back by the commit statement.
        " previous_counter bigint NOT NULL DEFAULT -1"
        ")",
        "CREATE TABLE dlmsd_spool ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " sink text NOT NULL,"
        " record_id text NOT NULL,"
        " record text NOT NULL,"
        " created_at double precision NOT NULL,"
        " claimed_by text,"
        " lease_until timestamptz"
        ")",
        "CREATE INDEX dlmsd_spool_by_sink ON dlmsd_spool (sink, id)",
    ),
    # The anti-replay bitmap below the counter (dlmsd.service.replaywindow); NULL
    # when a strict daemon advanced the counter: everything below it counts as seen.
    2: ("ALTER TABLE dlmsd_counters ADD COLUMN replay_window bytea",),
    3: (
        "CREATE TABLE dlmsd_counter_resets ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " system_title bytea NOT NULL,"
        " previous_counter bigint,"
        " requested_by text NOT NULL DEFAULT '',"
        " reset_at timestamptz NOT NULL DEFAULT now()"
        ")",
    ),
}

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS dlmsd_schema_version ("
    " version integer PRIMARY KEY,"
    " migrated_at timestamptz NOT NULL DEFAULT now())"
)
# Any constant key: every dlmsd daemon migrating takes the same lock.
_MIGRATION_LOCK = 0x646C6D7364  # "dlmsd"

# The replay check, the counter advance and the spool insert, in one statement.
# Counter rows are locked in system-title order, so two daemons' batches never
# deadlock on each other. Plaintext pushes (counter < 0) move no counter.
_COMMIT = """
WITH batch AS (
    SELECT * FROM unnest(%(titles)b::bytea[], %(counters)b::bigint[],
                         %(record_ids)b::text[], %(records)b::text[])
        WITH ORDINALITY AS b(system_title, ic, record_id, record, position)
),
advanced AS (
    INSERT INTO dlmsd_counters AS c (system_title, invocation_counter, previous_counter)
    SELECT system_title, max(ic), -1 FROM batch WHERE ic >= 0
        GROUP BY system_title ORDER BY system_title
    ON CONFLICT (system_title) DO UPDATE
        SET previous_counter = c.invocation_counter,
            invocation_counter = EXCLUDED.invocation_counter,
            replay_window = NULL
        WHERE c.invocation_counter < EXCLUDED.invocation_counter
    RETURNING c.system_title, c.previous_counter
),
accepted AS (
    SELECT b.position, b.record_id, b.record
        FROM batch b JOIN advanced a ON a.system_title = b.system_title
        WHERE b.ic > a.previous_counter
    UNION ALL
    SELECT position, record_id, record FROM batch WHERE ic < 0
),
spooled AS (
    INSERT INTO dlmsd_spool (sink, record_id, record, created_at)
    SELECT s.sink, a.record_id, a.record, %(now)s
        FROM accepted a CROSS JOIN unnest(%(sinks)s::text[]) WITH ORDINALITY AS s(sink, n)
        ORDER BY a.position, s.n
)
SELECT position FROM accepted
"""

# With a replay window (`replay_window` > 0) the check needs each meter's bitmap:
# the batch's counter rows are created if missing and locked in system-title
# order, the window decides in Python (in the pool thread, inside the same
# transaction), and the new states and the accepted pushes' spool rows are
# written before the COMMIT. Two daemons' batches of one meter serialise on
# the row lock, as with the single statement.
_ENSURE_COUNTERS = (
    "INSERT INTO dlmsd_counters (system_title, invocation_counter)"
    " SELECT t, -1 FROM unnest(%s::bytea[]) AS u(t) ORDER BY t"
    " ON CONFLICT (system_title) DO NOTHING"
)
_LOCK_COUNTERS = (
    "SELECT system_title, invocation_counter, replay_window FROM dlmsd_counters"
    " WHERE system_title = ANY(%s::bytea[]) ORDER BY system_title FOR UPDATE"
)
_UPDATE_WINDOWS = """
UPDATE dlmsd_counters AS c
    SET previous_counter = c.invocation_counter, invocation_counter = v.ic, replay_window = v.w
    FROM unnest(%s::bytea[], %s::bigint[], %s::bytea[]) AS v(t, ic, w)
    WHERE c.system_title = v.t
"""
_SPOOL_ACCEPTED = """
INSERT INTO dlmsd_spool (sink, record_id, record, created_at)
SELECT s.sink, r.record_id, r.record, %(now)s
    FROM unnest(%(record_ids)s::text[], %(records)s::text[])
        WITH ORDINALITY AS r(record_id, record, n)
    CROSS JOIN unnest(%(sinks)s::text[]) WITH ORDINALITY AS s(sink, m)
    ORDER BY r.n, s.m
"""
# A meter's row made by _ENSURE_COUNTERS before its first push commits.
_NO_COUNTER = -1

_DROP_OLDEST = (
    "DELETE FROM dlmsd_spool WHERE id IN"
    " (SELECT id FROM dlmsd_spool WHERE sink = %s ORDER BY id LIMIT %s)"
)

# Rows nobody holds, whose lease ran out, or that this instance held before
# (a failed delivery or a restart): one pump per sink per instance, so taking
# back our own rows never races with ourselves.
_CLAIM = """
UPDATE dlmsd_spool SET claimed_by = %(me)s,
                       lease_until = now() + make_interval(secs => %(lease)s)
WHERE id IN (
    SELECT id FROM dlmsd_spool
    WHERE sink = %(sink)s
      AND (lease_until IS NULL OR lease_until < now() OR claimed_by = %(me)s)
    ORDER BY id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, record_id, record
"""

_ACK = "DELETE FROM dlmsd_spool WHERE sink = %s AND id = ANY(%s)"
_DEPTHS = "SELECT sink, count(*), min(created_at) FROM dlmsd_spool GROUP BY sink"

_T = TypeVar("_T")
# What a commit did: accepted batch positions, records dropped per sink, and with
# a replay window each meter's (highest counter, bitmap) after it.
_Written = tuple[list[int], dict[str, int], dict[bytes, tuple[int, int]] | None]


def _drop_excess(
    conn: Any, sinks: Sequence[str], depths: dict[str, int], added: int, limit: int
) -> dict[str, int]:
    """``drop_oldest``: delete what `added` rows took a queue past `limit` (0: none)."""
    drops: dict[str, int] = {}
    if limit:
        for sink in sinks:
            excess = depths.get(sink, 0) + added - limit
            if excess > 0:
                conn.execute(_DROP_OLDEST, (sink, excess))
                drops[sink] = excess
    return drops


def _require_psycopg() -> None:
    if psycopg is None:
        raise StateError(
            "the PostgreSQL state backend needs psycopg: pip install 'dlmsd[postgres]'"
        )


def connect(dsn: str, *, connect_timeout: float = 5.0) -> Any:
    """A psycopg connection in autocommit mode (transactions are explicit).

    Keepalives and ``tcp_user_timeout`` make a vanished server an error within
    seconds instead of a call that blocks a thread for minutes.
    """
    _require_psycopg()
    try:
        return psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=max(1, int(connect_timeout)),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=10_000,
            application_name="dlmsd",
        )
    except psycopg.Error as error:
        raise StateUnavailable(
            f"{redact_dsn(dsn)}: cannot connect: {_first_line(error)}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def schema_version(conn: Any) -> int:
    """The database's schema version (0: never migrated)."""
    exists = conn.execute("SELECT to_regclass('dlmsd_schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    row = conn.execute("SELECT max(version) FROM dlmsd_schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: Any) -> tuple[int, int]:
    """Bring the schema to `SCHEMA_VERSION`; returns (version before, version after).

    Raises `StateError` when the database is newer than this dlmsd.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(_VERSION_TABLE)
        before = schema_version(conn)
        if before > SCHEMA_VERSION:
            raise StateError(
                f"state database schema {before} is newer than this dlmsd supports"
                f" ({SCHEMA_VERSION})"
            )
        for version in range(before + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO dlmsd_schema_version (version) VALUES (%s)", (version,))
    return before, SCHEMA_VERSION


def reset_counter(
    conn: Any, system_title: bytes, requested_by: str = ""
) -> tuple[int, int | None]:
    """Drop a meter's counter and log the reset in ``dlmsd_counter_resets``, in one
    transaction; returns (the reset's id, the counter dropped or None). Blocking."""
    with conn.transaction():
        row = conn.execute(
            "DELETE FROM dlmsd_counters WHERE system_title = %s RETURNING invocation_counter",
            (system_title,),
        ).fetchone()
        previous = int(row[0]) if row else None
        reset_id = conn.execute(
            "INSERT INTO dlmsd_counter_resets (system_title, previous_counter, requested_by)"
            " VALUES (%s, %s, %s) RETURNING id",
            (system_title, previous, requested_by),
        ).fetchone()[0]
    return int(reset_id), previous


_RESETS = "SELECT id, system_title FROM dlmsd_counter_resets WHERE id > %s ORDER BY id"


class _Connections:
    """One psycopg connection per pool thread, all dropped together after a failure.

    After the server restarts every pooled connection is dead; a generation
    number bumped on the first failure makes each thread reconnect before its
    next query instead of failing once more.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []
        self.generation = 0

    def get(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and (local.generation != self.generation or conn.closed):
            self._discard(conn)
            conn = None
        if conn is None:
            generation = self.generation
            conn = connect(self.dsn)
            local.conn, local.generation = conn, generation
            with self._lock:
                self._all.append(conn)
        return conn

    def invalidate(self) -> None:
        """Every connection reconnects before its next use."""
        with self._lock:
            self.generation += 1

    def _discard(self, conn: Any) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


class PgStateBackend:
    """Counters and spool in PostgreSQL, shared by daemons (see the module doc).

    Build with `open` (connects, migrates, loads the counters: blocking, at
    start-up). `start(reactor)` begins the depth-cache refresh; queries run in
    a private thread pool of `pool_size` threads.
    """

    log = Logger()
    backend_name = "postgresql"

    def __init__(
        self,
        dsn: str,
        sinks: Sequence[str],
        *,
        instance: str,
        counters: dict[bytes, int],
        clock: Callable[[], float] = time.time,
        spool_limit: int = 0,
        spool_full: str = "refuse",
        lease: float = 60.0,
        pool_size: int = 3,
        refresh_interval: float = 1.0,
        retry_interval: float = 0.5,
        reactor: Any = None,
        replay_window: int = 0,
        windows: dict[bytes, bytes | None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.sinks = tuple(sinks)
        self.instance = instance
        self.spool_limit = max(0, spool_limit)
        self.spool_full = spool_full
        self.spool_dropped: dict[str, int] = dict.fromkeys(self.sinks, 0)
        self.on_drop: Callable[[str, int], object] | None = None
        self.lease = lease
        self.refresh_interval = refresh_interval
        self.retry_interval = retry_interval
        self.commit_refused = 0
        self.commits = 0
        self._clock = clock
        # Counters the database confirmed (loaded at open, then our commits) and
        # counters staged or in flight: together the local pre-check.
        self._committed = counters
        self._pending: dict[bytes, int] = {}
        self.replay_window = replay_window
        self._all_seen = (1 << replay_window) - 1
        # With a window: each meter's bitmap as the database last told us, and
        # the counters staged or in flight (refused locally as duplicates).
        self._seen: dict[bytes, int] = {
            title: replaywindow.decode(stored, replay_window)
            for title, stored in (windows or {}).items()
        }
        self._pending_counters: set[tuple[bytes, int]] = set()
        self._staged: list[AcceptedPush] = []
        self._depths: dict[str, int] = dict.fromkeys(self.sinks, 0)
        self._oldest: dict[str, float] = {}
        self._available = True
        self._commit_lock = DeferredLock()
        self._connections = _Connections(dsn)
        self._pool = ThreadPool(minthreads=1, maxthreads=pool_size, name="dlmsd-pgstate")
        self._pool.start()
        self._reactor: Any = reactor
        self._timer: Any = None
        self._refreshing = False
        self._closed = False
        # dlmsd_counter_resets: the newest row polled, and the rows applied since.
        self._last_reset = 0
        self._applied_resets: set[int] = set()

    @classmethod
    def open(
        cls,
        dsn: str,
        sinks: Sequence[str],
        *,
        instance: str,
        clock: Callable[[], float] = time.time,
        spool_limit: int = 0,
        spool_full: str = "refuse",
        lease: float = 60.0,
        replay_window: int = 0,
        **options: Any,
    ) -> PgStateBackend:
        """Connect, migrate the schema and load counters and depths (blocking)."""
        conn = connect(dsn)
        try:
            migrate(conn)
            counters: dict[bytes, int] = {}
            windows: dict[bytes, bytes | None] = {}
            for title, counter, stored in conn.execute(
                "SELECT system_title, invocation_counter, replay_window FROM dlmsd_counters"
                " WHERE invocation_counter >= 0"
            ):
                counters[bytes(title)] = int(counter)
                windows[bytes(title)] = None if stored is None else bytes(stored)
            depths = conn.execute(_DEPTHS).fetchall()
            last_reset = int(
                conn.execute("SELECT coalesce(max(id), 0) FROM dlmsd_counter_resets").fetchone()[0]
            )
        except psycopg.OperationalError as error:
            raise StateUnavailable(f"{redact_dsn(dsn)}: {_first_line(error)}") from None
        except psycopg.Error as error:
            raise StateError(f"{redact_dsn(dsn)}: {_first_line(error)}") from None
        finally:
            conn.close()
        backend = cls(
            dsn,
            sinks,
            instance=instance,
            counters=counters,
            clock=clock,
            spool_limit=spool_limit,
            spool_full=spool_full,
            lease=lease,
            replay_window=replay_window,
            windows=windows if replay_window else None,
            **options,
        )
        backend._apply_depths(depths)
        backend._last_reset = last_reset
        return backend

    # --- background work ------------------------------------------------------

    def start(self, reactor: object) -> None:
        """Refresh the spool gauges every `refresh_interval` (and probe while down)."""
        self._reactor = reactor
        if self._timer is None and not self._closed:
            self._schedule(self.refresh_interval)

    def _schedule(self, delay: float) -> None:
        if self._closed or self._reactor is None:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= self._reactor.seconds() + delay:
                return
            self._timer.cancel()
        self._timer = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._refreshing or self._closed:
            return
        self._refreshing = True

        def done(result: object) -> None:
            self._refreshing = False
            self._schedule(self.refresh_interval if self._available else self.retry_interval)

        self.refresh().addErrback(lambda _: None).addBoth(done)

    def refresh(self) -> Deferred[None]:
        """Re-read the spool depths and apply new counter resets; marks the database
        available again on success."""
        since = self._last_reset

        def read(conn: Any) -> tuple[list[Any], list[Any]]:
            return conn.execute(_DEPTHS).fetchall(), conn.execute(_RESETS, (since,)).fetchall()

        d = self._run(read)

        def apply(result: tuple[list[Any], list[Any]]) -> None:
            depths, resets = result
            self._apply_depths(depths)
            for reset_id, title in resets:
                self._forget(bytes(title), int(reset_id))
            if resets:
                self._last_reset = max(self._last_reset, int(resets[-1][0]))
                self._applied_resets = {i for i in self._applied_resets if i > self._last_reset}

        return d.addCallback(apply)

    def _forget(self, title: bytes, reset_id: int) -> None:
        if reset_id <= self._last_reset or reset_id in self._applied_resets:
            return
        self._applied_resets.add(reset_id)
        previous = self.last_counter(title)
        self._committed.pop(title, None)
        self._pending.pop(title, None)
        self._seen.pop(title, None)
        self.log.info(
            "invocation counter of {meter} reset (was {previous}): its next push is accepted"
            " whatever its counter",
            meter=title.hex().upper(),
            previous=previous,
        )

    def reset_counter(self, system_title: bytes, requested_by: str = "") -> Deferred[int | None]:
        """`reset_counter` off the reactor; this daemon forgets the counter at once,
        the others at their next refresh."""
        d = self._run(lambda conn: reset_counter(conn, system_title, requested_by))

        def applied(result: tuple[int, int | None]) -> int | None:
            reset_id, previous = result
            self._forget(system_title, reset_id)
            return previous

        return d.addCallback(applied)

    def _apply_depths(self, rows: list[tuple[str, int, float | None]]) -> None:
        depths = dict.fromkeys(self.sinks, 0)
        oldest: dict[str, float] = {}
        for sink, count, first in rows:
            if sink in depths:
                depths[sink] = int(count)
                if first is not None:
                    oldest[sink] = float(first)
        self._depths, self._oldest = depths, oldest

    # --- running queries off the reactor --------------------------------------

    def _run(self, work: Callable[[Any], _T]) -> Deferred[_T]:
        if self._closed:
            return defer.fail(StateError("state backend closed"))
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = self._reactor = default_reactor
        d: Deferred[_T] = deferToThreadPool(reactor, self._pool, self._in_thread, work)
        d.addCallbacks(self._succeeded, self._failed)
        return d

    def _in_thread(self, work: Callable[[Any], _T]) -> _T:
        connections = self._connections
        conn = connections.get()
        try:
            return work(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            connections.invalidate()
            raise StateUnavailable(f"state database: {_first_line(error)}") from None
        except psycopg.Error as error:
            raise StateError(f"state database: {_first_line(error)}") from None

    def _succeeded(self, result: _T) -> _T:
        if not self._available:
            self._available = True
            self.log.info("state database reachable again; accepting pushes")
        return result

    def _failed(self, failure: Failure) -> Failure:
        if isinstance(failure.value, StateUnavailable) and self._available:
            self._available = False
            self.log.critical(
                "state database unreachable, refusing pushes until it is back: {error}",
                error=str(failure.value),
            )
            self._schedule(self.retry_interval)
        return failure

    @property
    def available(self) -> bool:
        return self._available

    # --- counters and commits -------------------------------------------------

    def last_counter(self, system_title: bytes) -> int | None:
        pending = self._pending.get(system_title)
        committed = self._committed.get(system_title)
        if pending is None:
            return committed
        return pending if committed is None or pending > committed else committed

    def accepts_counter(self, system_title: bytes, counter: int) -> bool:
        width = self.replay_window
        if not width:
            last = self.last_counter(system_title)
            return last is None or counter > last
        if (system_title, counter) in self._pending_counters:
            return False
        seen = self._seen.get(system_title, self._all_seen)
        return replaywindow.accepts(self._committed.get(system_title), seen, counter, width)

    def __len__(self) -> int:
        """Meters with a counter known to this daemon."""
        return len(self._committed)

    def stage(self, item: AcceptedPush) -> None:
        counter = item.invocation_counter
        if counter >= 0:
            title = item.system_title
            current = self._pending.get(title)
            if current is None or counter > current:
                self._pending[title] = counter
            if self.replay_window:
                self._pending_counters.add((title, counter))
        self._staged.append(item)

    @property
    def staged(self) -> int:
        return len(self._staged)

    def spool_has_room(self) -> bool:
        return spool_has_room(self.spool_limit, self.spool_full, self._depths, len(self._staged))

    def spool_depths(self) -> dict[str, int]:
        return dict(self._depths)

    def commit_staged(self) -> Deferred[CommitResult]:
        items, self._staged = self._staged, []
        if not items:
            return defer.succeed(CommitResult(0))
        # One commit at a time keeps a meter's batches in counter order.
        return self._commit_lock.run(self._commit, items)

    def _commit(self, items: list[AcceptedPush]) -> Deferred[CommitResult]:
        now = self._clock()
        params: dict[str, Any] = {
            "titles": [item.system_title for item in items],
            "counters": [item.invocation_counter for item in items],
            "record_ids": [item.record_id for item in items],
            "records": [item.record_json for item in items],
            "sinks": list(self.sinks),
            "now": now,
        }
        depths = dict(self._depths)
        limit = self.spool_limit if self.spool_full == "drop_oldest" else 0
        width = self.replay_window

        def write(conn: Any) -> _Written:
            for attempt in range(3):
                try:
                    if width:
                        return self._write_window(conn, params, depths, limit, width)
                    positions, drops = self._write(conn, params, depths, limit)
                    return positions, drops, None
                except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        return self._run(write).addBoth(self._settle, items, now)

    @staticmethod
    def _write(
        conn: Any, params: dict[str, Any], depths: dict[str, int], limit: int
    ) -> tuple[list[int], dict[str, int]]:
        with conn.transaction():
            positions = [int(row[0]) - 1 for row in conn.execute(_COMMIT, params)]
            drops = _drop_excess(conn, params["sinks"], depths, len(positions), limit)
        return positions, drops

    @staticmethod
    def _write_window(
        conn: Any, params: dict[str, Any], depths: dict[str, int], limit: int, width: int
    ) -> _Written:
        """The commit with a replay window (see `_ENSURE_COUNTERS`)."""
        titles, counters = params["titles"], params["counters"]
        with conn.transaction():
            meters = sorted({t for t, c in zip(titles, counters, strict=True) if c >= 0})
            states: dict[bytes, tuple[int | None, int]] = {}
            if meters:
                conn.execute(_ENSURE_COUNTERS, (meters,))
                for title, highest, stored in conn.execute(_LOCK_COUNTERS, (meters,)):
                    known = None if highest == _NO_COUNTER else int(highest)
                    states[bytes(title)] = (known, replaywindow.decode(stored, width))
            positions = []
            for position, (title, counter) in enumerate(zip(titles, counters, strict=True)):
                if counter >= 0:
                    highest, seen = states[title]
                    if not replaywindow.accepts(highest, seen, counter, width):
                        continue
                    states[title] = replaywindow.advance(highest, seen, counter, width)
                positions.append(position)
            final = {t: (h, seen) for t, (h, seen) in states.items() if h is not None}
            if final:
                conn.execute(
                    _UPDATE_WINDOWS,
                    (
                        list(final),
                        [h for h, _ in final.values()],
                        [replaywindow.encode(seen, width) for _, seen in final.values()],
                    ),
                )
            if positions:
                conn.execute(
                    _SPOOL_ACCEPTED,
                    {
                        "now": params["now"],
                        "record_ids": [params["record_ids"][p] for p in positions],
                        "records": [params["records"][p] for p in positions],
                        "sinks": params["sinks"],
                    },
                )
            drops = _drop_excess(conn, params["sinks"], depths, len(positions), limit)
        return positions, drops, {t: (int(h), seen) for t, (h, seen) in final.items()}

    def _settle(
        self,
        result: _Written | Failure,
        items: list[AcceptedPush],
        now: float,
    ) -> CommitResult | Failure:
        # Staged-but-uncommitted counters of this batch leave the pre-check,
        # unless a later batch staged a higher one meanwhile.
        batch_max: dict[bytes, int] = {}
        for item in items:
            if item.invocation_counter > batch_max.get(item.system_title, -1):
                batch_max[item.system_title] = item.invocation_counter
        pending = self._pending
        for title, counter in batch_max.items():
            if pending.get(title, -1) <= counter:
                pending.pop(title, None)
        if self.replay_window:
            self._pending_counters.difference_update(
                (item.system_title, item.invocation_counter) for item in items
            )
        if isinstance(result, Failure):
            return result
        positions, drops, states = result
        committed = self._committed
        if states is not None:
            # The database's window of each meter of the batch, as of this commit.
            for title, (highest, seen) in states.items():
                committed[title] = highest
                self._seen[title] = seen
        else:
            # Refused pushes were taken by someone else: the database holds at least
            # their counter, so remembering it keeps their replays cheap.
            for title, counter in batch_max.items():
                if counter > committed.get(title, -1):
                    committed[title] = counter
        accepted = len(positions)
        refused = tuple(sorted(set(range(len(items))) - set(positions)))
        self.commits += 1
        self.commit_refused += len(refused)
        for sink in self.sinks:
            self._depths[sink] = self._depths.get(sink, 0) + accepted - drops.get(sink, 0)
            if accepted:
                self._oldest.setdefault(sink, now)
        for sink, count in drops.items():
            self.spool_dropped[sink] = self.spool_dropped.get(sink, 0) + count
            if self.on_drop is not None:
                self.on_drop(sink, count)
        return CommitResult(accepted, refused)

    # --- spool ----------------------------------------------------------------

    def claim(self, sink: str, limit: int) -> Deferred[list[SpoolEntry]]:
        params = {"me": self.instance, "lease": float(self.lease), "sink": sink, "limit": limit}

        def take(conn: Any) -> list[SpoolEntry]:
            with conn.transaction():
                rows = conn.execute(_CLAIM, params).fetchall()
            rows.sort()
            return [SpoolEntry(row_id, rid, SpoolRecord(rid, text)) for row_id, rid, text in rows]

        return self._run(take)

    def acknowledge(self, sink: str, ids: Sequence[int]) -> Deferred[None]:
        id_list = list(ids)
        if not id_list:
            return defer.succeed(None)

        def delete(conn: Any) -> int:
            return int(conn.execute(_ACK, (sink, id_list)).rowcount)

        def forget(deleted: int) -> None:
            self._depths[sink] = max(0, self._depths.get(sink, 0) - deleted)

        return self._run(delete).addCallback(forget)

    def depth(self, sink: str) -> int:
        """Records queued for a sink, as of the last refresh plus our own changes."""
        return self._depths.get(sink, 0)

    def oldest_age(self, sink: str, now: float | None = None) -> float:
        first = self._oldest.get(sink)
        if first is None or not self._depths.get(sink):
            return 0.0
        current = self._clock() if now is None else now
        return max(0.0, current - first)

    # --- stopping -------------------------------------------------------------

    def shutdown(self) -> Deferred[None]:
        """Commit what is staged, then stop the timer, the threads and the connections."""
        return defer.ensureDeferred(self._shutdown())

    async def _shutdown(self) -> None:
        try:
            if self._staged and not self._closed:
                await self.commit_staged()
        finally:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._pool.stop()
        self._connections.close_all()
