"""The replay window in the state backends: no invocation counter is ever accepted twice.

Property tests against the real stores: SQLite across restarts (and changes of
the window's width), PostgreSQL across two daemons committing the same
meters (one after the other, and at once from two threads), and the daemon
itself over UDP with reordered pushes (the pre-check before decryption agrees
with the commit).
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.service import replaywindow
from dlmsd.service.state import AcceptedPush, StateStore
from tests.state.pgserver import PgServer

A = bytes.fromhex("4B464D00000000AA")


def push(title: bytes, counter: int) -> AcceptedPush:
    return AcceptedPush.create(title, counter, {"n": counter})


def model(counters: list[int], width: int) -> list[int]:
    """RFC 4303: accepted when never accepted before and not below highest - width."""
    accepted: list[int] = []
    for counter in counters:
        highest = max(accepted, default=None)
        if counter not in accepted and (highest is None or counter >= highest - width):
            accepted.append(counter)
    return accepted


# --- SQLite: across restarts -------------------------------------------------------------

steps = st.lists(
    st.tuples(st.integers(0, 80), st.booleans(), st.integers(1, 4)), min_size=1, max_size=60
)


@settings(max_examples=60, deadline=None)
@given(steps=steps, width=st.sampled_from([0, 1, 8, 32]))
def test_sqlite_accepts_as_the_model_across_restarts(
    steps: list[tuple[int, bool, int]], width: int
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "state.sqlite3"
        store = StateStore(path, ["s"], synchronous="off", replay_window=width)
        arrived: list[int] = []
        accepted: list[int] = []
        try:
            for counter, restart, batch in steps:
                if restart:
                    store.close()
                    store = StateStore(path, ["s"], synchronous="off", replay_window=width)
                # A burst of copies of the same push: only the first may pass.
                for _ in range(batch):
                    arrived.append(counter)
                    if store.accepts_counter(A, counter):
                        store.stage(push(A, counter))
                        accepted.append(counter)
                store.commit()
            spooled = [entry.record_id for entry in store.pending("s", 10_000)]
        finally:
            store.close()
    assert accepted == model(arrived, width)
    assert len(spooled) == len(set(spooled)) == len(accepted)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 80), st.sampled_from([0, 2, 8, 40])), min_size=1, max_size=40
    )
)
def test_sqlite_never_accepts_twice_when_the_width_changes_between_runs(
    steps: list[tuple[int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "state.sqlite3"
        accepted: list[int] = []
        for counter, width in steps:  # every push in a daemon run of its own width
            store = StateStore(path, ["s"], synchronous="off", replay_window=width)
            try:
                if store.accepts_counter(A, counter):
                    store.stage(push(A, counter))
                    accepted.append(counter)
            finally:
                store.close()
    assert len(accepted) == len(set(accepted))


def test_a_version_1_sqlite_database_is_migrated_and_keeps_its_counters(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE counters (system_title BLOB PRIMARY KEY,"
        " invocation_counter INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE spool (id INTEGER PRIMARY KEY, sink TEXT NOT NULL,"
        " record_id TEXT NOT NULL, record TEXT NOT NULL, created_at REAL NOT NULL);"
        "PRAGMA user_version = 1;"
    )
    db.execute("INSERT INTO counters VALUES (?, 50)", (A,))
    db.commit()
    db.close()
    store = StateStore(path, ["s"], replay_window=16)
    try:
        assert store.last_counter(A) == 50
        # Nothing below 50 is known to be fresh: a strict daemon kept no window.
        assert not store.accepts_counter(A, 49)
        assert store.accepts_counter(A, 52)
        store.accept([push(A, 52)])
        assert store.accepts_counter(A, 51)  # skipped by 52: inside the window, unseen
        assert not store.accepts_counter(A, 50)
    finally:
        store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_strict_daemon_after_a_windowed_one_leaves_no_stale_window(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    windowed = StateStore(path, ["s"], replay_window=16)
    windowed.accept([push(A, 10)])
    windowed.close()
    strict = StateStore(path, ["s"])
    strict.accept([push(A, 20)])
    strict.close()
    again = StateStore(path, ["s"], replay_window=16)
    try:
        # 9 was inside the old window; relative to 20 nothing below is known fresh.
        assert not any(again.accepts_counter(A, n) for n in range(4, 21))
        assert again.accepts_counter(A, 21)
    finally:
        again.close()


# --- PostgreSQL: two daemons --------------------------------------------------------------


def _commit(conn: Any, width: int, counters: list[int], title: bytes) -> list[int]:
    """One daemon's commit of a batch (the backend's own transaction); the accepted counters."""
    from dlmsd.service.pgstate import PgStateBackend

    items = [push(title, counter) for counter in counters]
    params = {
        "titles": [item.system_title for item in items],
        "counters": [item.invocation_counter for item in items],
        "record_ids": [item.record_id for item in items],
        "records": [item.record_json for item in items],
        "sinks": ["s"],
        "now": 1.0,
    }
    positions, _, states = PgStateBackend._write_window(conn, params, {}, 0, width)
    assert states is not None
    return [counters[position] for position in positions]


@pytest.fixture(scope="module")
def pg_window_dsn(pg_server: PgServer) -> str:
    from dlmsd.service.pgstate import connect, migrate

    dsn = pg_server.create_database()
    with connect(dsn) as conn:
        migrate(conn)
    return dsn


_titles = iter(range(1, 1 << 30))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.tuples(st.integers(0, 1), st.lists(st.integers(0, 60), min_size=1, max_size=6)),
        min_size=1,
        max_size=12,
    ),
    width=st.sampled_from([1, 8, 32]),
)
def test_postgresql_two_daemons_accept_as_one_model(
    pg_window_dsn: str, batches: list[tuple[int, list[int]]], width: int
) -> None:
    from dlmsd.service.pgstate import connect

    title = b"PGW" + next(_titles).to_bytes(5, "big")  # a meter of this example alone
    daemons = [connect(pg_window_dsn), connect(pg_window_dsn)]
    try:
        arrived: list[int] = []
        accepted: list[int] = []
        for daemon, counters in batches:
            arrived += counters
            accepted += _commit(daemons[daemon], width, counters, title)
        spooled = [
            row[0]
            for row in daemons[0].execute(
                "SELECT record_id FROM dlmsd_spool WHERE record_id LIKE %s",
                (title.hex().upper() + ":%",),
            )
        ]
    finally:
        for conn in daemons:
            conn.close()
    assert accepted == model(arrived, width)
    assert len(spooled) == len(set(spooled)) == len(accepted)


def test_postgresql_two_daemons_at_once_never_accept_a_counter_twice(
    pg_window_dsn: str,
) -> None:
    from dlmsd.service.pgstate import connect

    titles = [b"PGC" + bytes([0, 0, 0, 0, n]) for n in range(4)]
    # Both daemons receive every push of every meter, in different orders and batches.
    pushes = [(title, counter) for counter in range(1, 201) for title in titles]
    orders = [pushes, list(reversed(pushes))]
    failures: list[BaseException] = []

    def daemon(order: list[tuple[bytes, int]]) -> None:
        try:
            with connect(pg_window_dsn) as conn:
                for start in range(0, len(order), 17):
                    for title in titles:
                        batch = [c for t, c in order[start : start + 17] if t == title]
                        if batch:
                            _commit(conn, 64, batch, title)
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=daemon, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    with connect(pg_window_dsn) as conn:
        rows = conn.execute(
            "SELECT record_id FROM dlmsd_spool WHERE record_id LIKE %s",
            (b"PGC".hex().upper() + "%",),
        ).fetchall()
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids))
    # Whoever got there first, every counter within the window of the highest (200)
    # was accepted once: the reverse daemon offers each while it is inside.
    for title in titles:
        mine = {int(i.split(":")[1]) for i in ids if i.startswith(title.hex().upper())}
        assert mine >= set(range(200 - 64, 201))


@pytest_twisted.ensureDeferred
async def test_postgresql_backend_window_survives_a_restart(pg_window_dsn: str) -> None:
    from twisted.internet import reactor

    from dlmsd.service.pgstate import PgStateBackend

    title = b"PGR" + next(_titles).to_bytes(5, "big")
    first = PgStateBackend.open(pg_window_dsn, ["s"], instance="r1", replay_window=8)
    first.start(reactor)
    try:
        for counter in (10, 12):
            assert first.accepts_counter(title, counter)
            first.stage(push(title, counter))
        assert not first.accepts_counter(title, 12)  # staged: a duplicate already
        assert (await first.commit_staged()).accepted == 2
        assert first.accepts_counter(title, 11)
        assert not first.accepts_counter(title, 10)
    finally:
        first._close()
    second = PgStateBackend.open(pg_window_dsn, ["s"], instance="r2", replay_window=8)
    second.start(reactor)
    try:
        assert [second.accepts_counter(title, n) for n in (3, 4, 10, 11, 12, 13)] == [
            False,
            True,
            False,
            True,
            False,
            True,
        ]
        second.stage(push(title, 11))
        second.stage(push(title, 10))  # slipped past a stale pre-check: the commit refuses
        assert (await second.commit_staged()).refused == (1,)
    finally:
        second._close()
    assert replaywindow.MAX_WIDTH >= 8


# --- the daemon: the pre-check before decryption agrees with the window ---------------------


@pytest.mark.parametrize(("width", "accepted"), [(0, [1, 2, 4, 5]), (16, [1, 2, 4, 3, 5])])
@pytest_twisted.ensureDeferred
async def test_the_daemon_accepts_a_reordered_udp_push_inside_the_window_once(
    tmp_path: Path, width: int, accepted: list[int]
) -> None:
    from dlmsd.service import simulator
    from tests.service.test_daemon import (
        make_setup,
        metric,
        now,
        port_of,
        rejected,
        send_udp,
        start,
        stop,
        wait_until,
    )

    setup = make_setup(tmp_path, udp={}, extra=f"replay_window = {width}\n")
    service = start(setup)
    meter = setup.meters[0]
    arrivals = [1, 2, 4, 3, 3, 5, 2, 4]
    try:
        for counter in arrivals:  # one at a time: each is handled before the next
            before = metric(service, "dlmsd_frames_received_total", listener="udp")
            send_udp(
                port_of(service, "udp"),
                simulator.wrap(simulator.build_push(meter, counter, now())),
            )
            await wait_until(
                lambda: metric(service, "dlmsd_frames_received_total", listener="udp") > before  # noqa: B023
            )
        await wait_until(lambda: len(setup.records()) == len(accepted))
        assert rejected(service, "replay") == len(arrivals) - len(accepted)
    finally:
        await stop(service)
    assert [record["invocation_counter"] for record in setup.records()] == accepted
