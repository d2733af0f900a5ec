"""The StateBackend contract, run against both backends (SQLite file, real PostgreSQL).

Then what only the shared PostgreSQL backend promises: the same push committed
by two daemons is accepted once, spool leases keep daemons from delivering the
same rows at once, a lost database refuses pushes and comes back by itself,
and the schema is migrated (and versioned) by the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet import reactor as _reactor

from dlmsd.service.config import parse_config
from dlmsd.service.state import AcceptedPush, StateError, StateStore
from dlmsd.service.statebackend import (
    CommitResult,
    StateBackend,
    StateUnavailable,
    is_postgresql,
    open_state_backend,
    redact_dsn,
    sqlite_path,
)
from tests.state.pgserver import PgServer

reactor: Any = _reactor
A = bytes.fromhex("4B464D0000000001")
B = bytes.fromhex("4B464D0000000002")
SINKS = ("jsonl", "mqtt")

Opener = Callable[..., StateBackend]


def push(title: bytes, counter: int, **record: object) -> AcceptedPush:
    return AcceptedPush.create(title, counter, {"n": counter, **record})


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens backends on one store (the same file, or the same database) of this test."""
    opened: list[StateBackend] = []
    if request.param == "sqlite":

        def open_sqlite(sinks: tuple[str, ...] = SINKS, **options: Any) -> StateBackend:
            options.pop("instance", None)
            store = StateStore(tmp_path / "state.sqlite3", sinks, synchronous="normal", **options)
            opened.append(store)
            return store

        yield open_sqlite
    else:
        from dlmsd.service.pgstate import PgStateBackend

        dsn = request.getfixturevalue("pg_dsn")

        def open_pg(sinks: tuple[str, ...] = SINKS, **options: Any) -> StateBackend:
            options.setdefault("instance", f"test-{len(opened)}")
            backend = PgStateBackend.open(dsn, sinks, **options)
            backend.start(reactor)
            opened.append(backend)
            return backend

        yield open_pg
    for backend in opened:
        close = getattr(backend, "_close", None)
        if close is not None:
            close()


async def commit(backend: StateBackend, *items: AcceptedPush) -> CommitResult:
    for item in items:
        backend.stage(item)
    return await backend.commit_staged()


# --- the contract, both backends --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_commit_spools_per_sink_and_ack_removes(opener: Opener) -> None:
    state = opener()
    result = await commit(state, push(A, 5, value=Decimal("1.5")), push(B, 7))
    assert result == CommitResult(2, ())
    assert state.last_counter(A) == 5 and state.last_counter(B) == 7
    assert state.depth("jsonl") == 2 and state.depth("mqtt") == 2
    entries = await state.claim("jsonl", 10)
    assert [e.record_id for e in entries] == ["4B464D0000000001:5", "4B464D0000000002:7"]
    assert dict(entries[0].record) == {"n": 5, "value": "1.5"}
    await state.acknowledge("jsonl", [entries[0].id])
    assert state.depth("jsonl") == 1
    assert state.depth("mqtt") == 2  # each sink has its own queue
    assert [e.record_id for e in await state.claim("jsonl", 10)] == ["4B464D0000000002:7"]
    await state.acknowledge("jsonl", [])  # nothing to do
    await state.shutdown()


@pytest_twisted.ensureDeferred
async def test_counters_survive_a_reopen_and_never_go_back(opener: Opener) -> None:
    state = opener()
    await commit(state, push(A, 10))
    await commit(state, push(A, 3))  # the ingest refuses this; the store must not go back
    assert state.last_counter(A) == 10
    await state.shutdown()
    reopened = opener()
    assert reopened.last_counter(A) == 10
    assert reopened.last_counter(B) is None
    await reopened.shutdown()


@pytest_twisted.ensureDeferred
async def test_several_pushes_of_one_meter_in_one_batch(opener: Opener) -> None:
    state = opener()
    result = await commit(state, push(A, 1), push(A, 2), push(B, 1), push(A, 3))
    assert result.accepted == 4 and result.refused == ()
    assert state.last_counter(A) == 3
    entries = await state.claim("mqtt", 10)
    assert [e.record_id.split(":")[1] for e in entries] == ["1", "2", "1", "3"]
    await state.shutdown()


@pytest_twisted.ensureDeferred
async def test_plaintext_pushes_are_spooled_and_move_no_counter(opener: Opener) -> None:
    state = opener()
    plain = AcceptedPush(A, -1, "4B464D0000000001:none:1", '{"plain":true}')
    assert (await commit(state, plain)).accepted == 1
    assert state.last_counter(A) is None
    assert state.depth("jsonl") == 1
    await commit(state, push(A, 4), AcceptedPush(A, -1, "4B464D0000000001:none:2", "{}"))
    await state.shutdown()
    assert opener().last_counter(A) == 4


@pytest_twisted.ensureDeferred
async def test_staged_counters_are_seen_before_the_commit(opener: Opener) -> None:
    state = opener()
    state.stage(push(A, 8))
    assert state.staged == 1
    assert state.last_counter(A) == 8  # a replay arriving before the commit is refused
    await state.shutdown()  # commits what is staged
    assert opener().last_counter(A) == 8


@pytest_twisted.ensureDeferred
async def test_claimed_batches_come_back_until_acknowledged(opener: Opener) -> None:
    state = opener(sinks=("s",))
    await commit(state, *[push(A, n) for n in range(1, 8)])
    first = await state.claim("s", 3)
    assert [e.record_id for e in first] == [f"4B464D0000000001:{n}" for n in (1, 2, 3)]
    # Not acknowledged (a failed delivery): the same rows again, nothing lost.
    assert [e.id for e in await state.claim("s", 3)] == [e.id for e in first]
    await state.acknowledge("s", [e.id for e in first])
    assert [e.record_id for e in await state.claim("s", 3)] == [
        f"4B464D0000000001:{n}" for n in (4, 5, 6)
    ]
    assert state.oldest_age("s", now=10**10) > 0
    await state.shutdown()


@pytest_twisted.ensureDeferred
async def test_refuse_policy_reports_a_full_queue(opener: Opener) -> None:
    state = opener(sinks=("s",), spool_limit=3, spool_full="refuse")
    await commit(state, push(A, 1), push(A, 2))
    assert state.spool_has_room()
    state.stage(push(A, 3))
    assert not state.spool_has_room()
    await state.commit_staged()
    assert state.spool_depths() == {"s": 3}
    await state.shutdown()


@pytest_twisted.ensureDeferred
async def test_drop_oldest_policy_deletes_and_reports(opener: Opener) -> None:
    state = opener(sinks=("s",), spool_limit=3, spool_full="drop_oldest")
    drops: list[tuple[str, int]] = []
    state.on_drop = lambda sink, count: drops.append((sink, count))
    await commit(state, *[push(A, n) for n in range(1, 6)])
    assert drops == [("s", 2)]
    assert state.spool_dropped == {"s": 2}
    assert [e.record_id[-1] for e in await state.claim("s", 10)] == ["3", "4", "5"]
    await state.shutdown()


def test_both_backends_satisfy_the_protocol(tmp_path: Path) -> None:
    from dlmsd.service import pgstate

    wanted = [name for name in dir(StateBackend) if not name.startswith("_")]
    for cls in (StateStore, pgstate.PgStateBackend):
        missing = [name for name in wanted if not hasattr(cls, name)]
        assert not missing, (cls, missing)


# --- choosing the backend from the config ----------------------------------------------


def _config(tmp_path: Path, state: str = "") -> Any:
    import tomllib

    text = (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        '[[listeners.udp]]\nport = 0\n[keys]\nfiles = ["keys.toml"]\n'
        '[[sinks]]\ntype = "jsonl"\npath = "x.jsonl"\n'
        f"[state]\n{state}\n"
    )
    return parse_config(tomllib.loads(text))


def test_default_dsn_is_the_sqlite_file_in_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    backend = open_state_backend(_config(tmp_path))
    assert isinstance(backend, StateStore)
    assert backend.path == tmp_path / "state" / "state.sqlite3"
    backend.close()


def test_sqlite_url_and_plain_path(tmp_path: Path) -> None:
    config = _config(tmp_path, f'dsn = "sqlite://{tmp_path}/other.db"')
    backend = open_state_backend(config)
    assert isinstance(backend, StateStore) and backend.path == tmp_path / "other.db"
    backend.close()
    assert sqlite_path(f"{tmp_path}/plain.db") == tmp_path / "plain.db"
    assert sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")


def test_unknown_dsn_scheme_is_refused_with_its_key(tmp_path: Path) -> None:
    from dlmsd.service.config import ConfigError

    with pytest.raises(ConfigError, match=r"state\.dsn: expected sqlite:///PATH"):
        _config(tmp_path, 'dsn = "mysql://x/y"')


def test_postgresql_dsn_selects_the_shared_backend(tmp_path: Path, pg_dsn: str) -> None:
    from dlmsd.service.pgstate import PgStateBackend

    config = _config(tmp_path, f'dsn = "{pg_dsn}"\ninstance = "east-1"\nspool_lease = 5')
    assert is_postgresql(config.state.dsn)
    backend = open_state_backend(config)
    assert isinstance(backend, PgStateBackend)
    assert backend.instance == "east-1" and backend.lease == 5.0
    backend._close()


def test_unreachable_postgresql_at_start_is_a_clear_error() -> None:
    from dlmsd.service.pgstate import PgStateBackend
    from tests.state.pgserver import free_port

    dsn = f"postgresql://dlmsd:hunter2@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StateUnavailable) as raised:
        PgStateBackend.open(dsn, ["s"], instance="x")
    assert "hunter2" not in str(raised.value)
    assert "cannot connect" in str(raised.value)


def test_redact_dsn() -> None:
    assert redact_dsn("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert redact_dsn("postgresql://u@h/db") == "postgresql://u@h/db"
    assert "secret" not in redact_dsn("host=h password=secret")


# --- PostgreSQL: several daemons on one database ---------------------------------------


@pytest.fixture
def pg_opener(pg_dsn: str) -> Iterator[Opener]:
    from dlmsd.service.pgstate import PgStateBackend

    opened: list[PgStateBackend] = []

    def open_pg(sinks: tuple[str, ...] = ("s",), **options: Any) -> StateBackend:
        options.setdefault("instance", f"daemon-{len(opened)}")
        backend = PgStateBackend.open(pg_dsn, sinks, **options)
        backend.start(reactor)
        opened.append(backend)
        return backend

    yield open_pg
    for backend in opened:
        backend._close()


@pytest_twisted.ensureDeferred
async def test_the_same_pushes_committed_by_two_daemons_are_accepted_once(
    pg_opener: Opener,
) -> None:
    first, second = pg_opener(), pg_opener()
    meters = [bytes([0x4B, 0, 0, 0, 0, 0, 0, n]) for n in range(1, 21)]
    total = 0
    for counter in range(1, 11):
        batch = [push(title, counter) for title in meters]
        both = [
            defer.ensureDeferred(commit(first, *batch)),
            defer.ensureDeferred(commit(second, *batch)),
        ]
        results = await defer.gatherResults(both)
        assert sum(r.accepted for r in results) == len(batch)
        assert sum(len(r.refused) for r in results) == len(batch)
        total += len(batch)
    entries = await first.claim("s", 1000)
    ids = [e.record_id for e in entries]
    assert len(ids) == total == len(set(ids))
    assert first.last_counter(meters[0]) == 10 and second.last_counter(meters[0]) == 10


@pytest_twisted.ensureDeferred
async def test_a_batch_mixing_new_and_taken_pushes_of_one_meter(pg_opener: Opener) -> None:
    first, second = pg_opener(), pg_opener()
    await commit(first, push(A, 6))
    # The second daemon never saw IC 6 go by: its 5 and 6 are replays, 7 is new.
    result = await commit(second, push(A, 5), push(A, 6), push(A, 7))
    assert result == CommitResult(1, (0, 1))
    assert [e.record_id for e in await first.claim("s", 10)] == [
        "4B464D0000000001:6",
        "4B464D0000000001:7",
    ]
    assert second.last_counter(A) == 7


@pytest_twisted.ensureDeferred
async def test_a_leased_batch_is_not_delivered_by_another_daemon(pg_opener: Opener) -> None:
    first = pg_opener(lease=1.0)
    second = pg_opener(lease=1.0)
    await commit(first, *[push(A, n) for n in range(1, 7)])
    mine = await first.claim("s", 4)
    theirs = await second.claim("s", 10)
    assert {e.id for e in mine}.isdisjoint({e.id for e in theirs})
    assert len(mine) + len(theirs) == 6
    await second.acknowledge("s", [e.id for e in theirs])
    # The first daemon dies without acking: after the lease, another takes its rows.
    assert await second.claim("s", 10) == []
    await task.deferLater(reactor, 1.2, lambda: None)
    taken = await second.claim("s", 10)
    assert [e.id for e in taken] == [e.id for e in mine]


@pytest_twisted.ensureDeferred
async def test_a_restarted_instance_takes_its_own_leases_back_at_once(
    pg_opener: Opener,
) -> None:
    before = pg_opener(instance="east-1", lease=600.0)
    await commit(before, push(A, 1), push(A, 2))
    held = await before.claim("s", 10)
    before._close()  # type: ignore[attr-defined]  # as after kill -9: nothing acked
    after = pg_opener(instance="east-1", lease=600.0)
    assert [e.id for e in await after.claim("s", 10)] == [e.id for e in held]
    other = pg_opener(instance="west-1", lease=600.0)
    assert await other.claim("s", 10) == []


@pytest_twisted.ensureDeferred
async def test_lost_database_refuses_and_recovers_by_itself(
    pg_opener: Opener, pg_server: PgServer
) -> None:
    state = pg_opener(retry_interval=0.1, refresh_interval=0.2)
    await commit(state, push(A, 1))
    pg_server.stop()
    state.stage(push(A, 2))
    with pytest.raises(StateUnavailable):
        await state.commit_staged()
    assert not state.available
    # Nothing of the failed batch counts: IC 2 may come again later.
    assert state.last_counter(A) == 1
    with pytest.raises(StateUnavailable):
        await state.claim("s", 10)
    pg_server.start()
    deadline = reactor.seconds() + 15
    while not state.available and reactor.seconds() < deadline:
        await task.deferLater(reactor, 0.05, lambda: None)
    assert state.available
    assert (await commit(state, push(A, 2))).accepted == 1
    assert [e.record_id[-1] for e in await state.claim("s", 10)] == ["1", "2"]


def test_version_1_database_is_migrated_to_the_counter_resets(pg_dsn: str) -> None:
    from dlmsd.service.pgstate import MIGRATIONS, SCHEMA_VERSION, connect, migrate

    with connect(pg_dsn) as conn:  # a database a dlmsd of schema 1 made and used
        conn.execute(
            "CREATE TABLE dlmsd_schema_version (version integer PRIMARY KEY,"
            " migrated_at timestamptz NOT NULL DEFAULT now())"
        )
        for statement in MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO dlmsd_schema_version (version) VALUES (1)")
        conn.execute("INSERT INTO dlmsd_counters VALUES ('\\x01', 5, 4)")
        conn.commit()
        assert migrate(conn) == (1, SCHEMA_VERSION)
        assert conn.execute("SELECT count(*) FROM dlmsd_counter_resets").fetchone() == (0,)
        assert conn.execute("SELECT invocation_counter FROM dlmsd_counters").fetchone() == (5,)


def test_schema_is_versioned_and_a_newer_one_refused(pg_dsn: str) -> None:
    import psycopg

    from dlmsd.service.pgstate import SCHEMA_VERSION, PgStateBackend, connect, migrate

    backend = PgStateBackend.open(pg_dsn, ["s"], instance="x")
    backend._close()
    with connect(pg_dsn) as conn:
        assert migrate(conn) == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent
        versions = conn.execute("SELECT version FROM dlmsd_schema_version").fetchall()
        assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
        conn.execute("INSERT INTO dlmsd_schema_version (version) VALUES (%s)", (99,))
    with pytest.raises(StateError, match="schema 99 is newer"):
        PgStateBackend.open(pg_dsn, ["s"], instance="x")
    assert psycopg is not None
