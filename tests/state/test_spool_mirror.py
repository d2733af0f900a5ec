"""The SQLite spool's mirror and lazy acknowledgements (`dlmsd.service.spoolmirror`).

A mirrored sink's claim reads nothing back from SQLite, its acknowledgement
writes nothing until the next transaction, and both hand out and delete
exactly what the SELECT path would. Real SQLite in tmp_path; statements are
counted with the store's own connection's trace callback.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher

from dlmsd.service.spoolmirror import FLUSH_DELAY, TRUSTED_IDS
from dlmsd.service.state import (
    AcceptedPush,
    SpoolEntry,
    SpoolRecord,
    StateError,
    StateStore,
    make_record_id,
)


def title(meter: int) -> bytes:
    return b"KFM" + meter.to_bytes(5, "big")


def push(meter: int, counter: int, tag: str = "") -> AcceptedPush:
    record_id = make_record_id(title(meter), counter)
    if tag:
        record_id = f"{tag}{record_id}"
    return AcceptedPush(title(meter), counter, record_id, f'{{"id":"{record_id}","t":"zähler"}}')


def raw_rows(path: Path, sink: str) -> list[str]:
    """The record ids on disk for a sink, read by another connection (what a restart sees)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT record_id FROM spool WHERE sink = ? ORDER BY id", (sink,))
        return [row[0] for row in rows]


def shown(entries: list[SpoolEntry]) -> list[tuple[int, str, bytes, str]]:
    """What a sink gets from an entry: id, record id, the bytes and the text."""
    assert all(type(entry) is SpoolEntry for entry in entries)
    return [(e.id, e.record_id, e.record.utf8, e.record.json) for e in entries]


class Trace:
    """The SQL statements a store's connection runs."""

    def __init__(self, store: StateStore) -> None:
        self.statements: list[str] = []
        store._db.set_trace_callback(self.statements.append)

    def take(self) -> list[str]:
        taken, self.statements[:] = list(self.statements), []
        return taken

    def reads_spool(self) -> bool:
        return any(s.lstrip().upper().startswith("SELECT") for s in self.statements)

    def commits(self) -> int:
        return sum(s.strip().upper() == "COMMIT" for s in self.statements)


@contextlib.contextmanager
def capture_logs() -> Iterator[list[str]]:
    lines: list[str] = []

    def observer(event: LogEvent) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, observer))


def crash(store: StateStore) -> None:
    """What kill -9 leaves: no close, no flush; the kernel drops the lock."""
    store._db.close()
    store._lock.release()


def test_a_mirrored_claim_reads_nothing_back_and_equals_the_select(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", ["a", "b"], synchronous="full")
    trace = Trace(store)
    store.accept([push(meter, 1) for meter in range(300)])  # two INSERT chunks per sink
    trace.take()
    for sink in ("a", "b"):
        claimed = store.pending(sink, 500)
        assert trace.take() == []  # no SELECT, no statement at all
        assert shown(claimed) == shown(store._select(sink, 500))
        assert shown(store.pending(sink, 7)) == shown(store._select(sink, 7))
        trace.take()
    store.close()


def test_an_acknowledgement_rides_on_the_next_commit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, ["a"], synchronous="full")
    trace = Trace(store)
    for counter in range(1, 11):
        store.accept([push(meter, counter) for meter in range(50)])
        entries = store.pending("a", 500)
        assert [e.record_id for e in entries] == [
            make_record_id(title(meter), counter) for meter in range(50)
        ]
        store.ack("a", [e.id for e in entries])
        assert store.spool_depths() == {"a": 0}  # at once, in memory
    # One transaction (one COMMIT, one WAL fsync) per batch, the DELETE inside it.
    assert trace.commits() == 10
    assert not trace.reads_spool()
    assert len(raw_rows(path, "a")) == 50  # the last batch's DELETE waits for a transaction
    deletes = [s for s in trace.take() if s.startswith("DELETE")]
    assert len(deletes) == 9
    store.close()
    assert raw_rows(path, "a") == []


def test_waiting_deletes_are_written_by_a_timer_when_nothing_commits(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = Clock()
    store = StateStore(path, ["a"], synchronous="full")
    store.start(clock)
    store.ack("a", [1, 2])  # nothing queued: nothing waits, no timer
    assert clock.getDelayedCalls() == []
    store.accept([push(meter, 1) for meter in range(5)])
    entries = store.pending("a", 10)
    store.ack("a", [e.id for e in entries[:2]])
    store.ack("a", [e.id for e in entries[2:]])
    assert len(clock.getDelayedCalls()) == 1  # one timer for both
    assert len(raw_rows(path, "a")) == 5
    clock.advance(FLUSH_DELAY)
    assert raw_rows(path, "a") == []
    assert clock.getDelayedCalls() == []
    # A commit that takes the deletes along leaves the timer nothing to do.
    store.accept([push(meter, 2) for meter in range(5)])
    store.ack("a", [e.id for e in store.pending("a", 10)])
    store.accept([push(meter, 3) for meter in range(5)])
    assert len(raw_rows(path, "a")) == 5
    trace = Trace(store)
    clock.advance(FLUSH_DELAY)
    assert trace.take() == []
    store.close()


def test_commits_more_often_than_the_delay_leave_the_timer_nothing(tmp_path: Path) -> None:
    # The steady state at a low rate: commit, acknowledge, commit, ... every 50 ms.
    # Each commit writes the waiting DELETEs and stops the timer; the next
    # acknowledgement sets it again, so it never writes on its own (no extra
    # transaction and fsync besides the commits).
    path = tmp_path / "state.db"
    clock = Clock()
    store = StateStore(path, ["a"], synchronous="full")
    store.start(clock)
    trace = Trace(store)
    for counter in range(1, 11):
        store.accept([push(meter, counter) for meter in range(3)])
        store.ack("a", [e.id for e in store.pending("a", 10)])
        clock.advance(FLUSH_DELAY / 2)
    commits = [s for s in trace.take() if s.startswith("COMMIT")]
    assert len(commits) == 10  # the ten commits, nothing else
    assert len(clock.getDelayedCalls()) == 1  # armed by the last acknowledgement
    clock.advance(FLUSH_DELAY)
    assert raw_rows(path, "a") == []
    store.close()


def test_a_timed_write_that_fails_is_logged_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = Clock()
    store = StateStore(path, ["a"])
    store.start(clock)
    store._db.execute(
        "CREATE TRIGGER stuck BEFORE DELETE ON spool"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    store.accept([push(meter, 1) for meter in range(3)])
    store.ack("a", [e.id for e in store.pending("a", 2)])
    with capture_logs() as logs:
        clock.advance(FLUSH_DELAY)
    assert any("not deleted yet" in line and "disk on fire" in line for line in logs)
    assert len(store.mirror.deletes) == 1 and not store.mirror.mirrored("a")
    assert [e.record_id for e in store.pending("a", 10)] == [make_record_id(title(2), 1)]
    store._db.execute("DROP TRIGGER stuck")
    store.accept([push(3, 1)])  # the next transaction writes them
    assert raw_rows(path, "a") == [make_record_id(title(meter), 1) for meter in (2, 3)]
    store.close()


def test_a_clean_stop_delivers_nothing_twice_a_crash_delivers_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, ["a"])
    store.accept([push(meter, 1) for meter in range(4)])
    store.ack("a", [e.id for e in store.pending("a", 2)])
    store.close()
    reopened = StateStore(path, ["a"])
    assert [e.record_id for e in reopened.pending("a", 10)] == [
        make_record_id(title(meter), 1) for meter in (2, 3)
    ]
    reopened.ack("a", [e.id for e in reopened.pending("a", 10)])
    reopened.accept([push(meter, 2) for meter in range(3)])
    delivered = reopened.pending("a", 10)
    reopened.ack("a", [e.id for e in delivered])
    crash(reopened)
    # At least once: the acknowledged batch whose DELETE never reached the disk comes
    # again, with the same ids and record ids; nothing else is lost or added.
    after = StateStore(path, ["a"])
    assert not after.mirror.mirrored("a")  # rows queued at start are not read in
    trace = Trace(after)
    again = after.pending("a", 10)
    assert trace.reads_spool()
    assert shown(again) == shown(delivered)
    after.ack("a", [e.id for e in again])  # drained: mirrored again
    assert after.mirror.mirrored("a")
    after.accept([push(meter, 3) for meter in range(3)])
    trace.take()
    assert len(after.pending("a", 10)) == 3
    assert not trace.reads_spool()
    after.close()


def test_reads_of_the_spool_table_skip_acknowledged_rows_and_write_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    clock_now = iter([100.0, 200.0, 300.0]).__next__
    store = StateStore(path, ["a"], clock=clock_now)
    for counter in (1, 2, 3):
        store.accept([push(1, counter)])
    store.ack("a", [store.pending("a", 1)[0].id])
    trace = Trace(store)
    assert store.oldest_age("a", now=250.0) == 50.0
    assert store.depth("a") == 2
    store.mirror.drop()  # the SELECT path too
    assert [e.record_id for e in store.pending("a", 1)] == [make_record_id(title(1), 2)]
    assert not any(s.startswith(("DELETE", "COMMIT", "BEGIN")) for s in trace.take())
    assert len(raw_rows(path, "a")) == 3  # still on disk, until the next transaction
    store.ack("a", [e.id for e in store.pending("a", 10)])  # not mirrored: written now
    assert raw_rows(path, "a") == []
    assert store.depth("a") == 0 and store.oldest_age("a") == 0.0
    assert store.mirror.deletes == []
    store.close()


@pytest.mark.parametrize("bound", ["rows", "chars"])
def test_a_mirror_past_its_bound_is_dropped_and_starts_again_once_drained(
    tmp_path: Path, bound: str
) -> None:
    store = StateStore(tmp_path / "state.db", ["down", "up"])
    if bound == "rows":
        store.mirror.max_rows = 12
    else:
        store.mirror.max_chars = 12 * len(push(0, 1).record_json)
    trace = Trace(store)
    for counter in range(1, 4):
        store.accept([push(meter, counter) for meter in range(5)])
        store.ack("up", [e.id for e in store.pending("up", 100)])
    assert not store.mirror.mirrored("down")  # 15 rows: over the bound
    assert store.mirror.mirrored("up")
    trace.take()
    backlog = store.pending("down", 100)
    assert trace.reads_spool()
    assert [e.record_id for e in backlog] == [
        make_record_id(title(meter), counter) for counter in range(1, 4) for meter in range(5)
    ]
    trace.take()
    store.ack("down", [e.id for e in backlog[:10]])  # not mirrored: deleted at once
    assert trace.commits() == 1
    assert not store.mirror.mirrored("down")
    store.ack("down", [e.id for e in store.pending("down", 100)])
    assert store.mirror.mirrored("down") and store.spool_depths()["down"] == 0
    store.accept([push(1, 9)])
    trace.take()
    assert [e.record_id for e in store.pending("down", 10)] == [make_record_id(title(1), 9)]
    assert not trace.reads_spool()
    store.close()


@pytest.mark.parametrize("bound", ["rows", "chars"])
def test_what_is_acknowledged_no_longer_counts_towards_the_bound(
    tmp_path: Path, bound: str
) -> None:
    store = StateStore(tmp_path / "state.db", ["a"])
    if bound == "rows":
        store.mirror.max_rows = 12
    else:
        store.mirror.max_chars = 12 * len(push(0, 1).record_json)
    for counter in range(1, 20):
        store.accept([push(meter, counter) for meter in range(5)])
        assert store.mirror.mirrored("a")
        entries = store.pending("a", 100)
        store.ack("a", [e.id for e in entries[1:]])  # the head too, after the rest
        store.ack("a", [entries[0].id])
    store.close()


def test_drop_oldest_is_mirrored_exactly(tmp_path: Path) -> None:
    dropped: list[tuple[str, int]] = []
    store = StateStore(tmp_path / "state.db", ["a", "b"], spool_limit=4, spool_full="drop_oldest")
    store.on_drop = lambda sink, count: dropped.append((sink, count))
    store.accept([push(meter, 1) for meter in range(3)])
    store.ack("b", [e.id for e in store.pending("b", 2)])  # waits; b's queue is 1
    store.accept([push(meter, 2) for meter in range(3)])  # a: 6 > 4, drop 2; b: 4
    assert dropped == [("a", 2)]
    for sink in ("a", "b"):
        assert store.mirror.mirrored(sink)
        claimed = store.pending(sink, 10)
        assert shown(claimed) == shown(store._select(sink, 10))
        assert len(claimed) == 4
    # What was dropped no longer counts towards the mirror's bound.
    store.mirror.max_chars = 8 * len(push(0, 1).record_json)
    for counter in range(3, 13):
        store.accept([push(meter, counter) for meter in range(3)])
        assert store.mirror.mirrored("a")
    assert shown(store.pending("a", 10)) == shown(store._select("a", 10))
    store.close()


def test_a_failed_transaction_drops_the_mirrors_and_keeps_the_waiting_deletes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, ["a"])
    store._db.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON spool WHEN NEW.record_id LIKE 'FAIL%'"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    store.accept([push(meter, 1) for meter in range(4)])
    store.ack("a", [e.id for e in store.pending("a", 2)])
    with pytest.raises(StateError, match="disk on fire"):
        store.accept([push(9, 1, tag="FAIL")])
    assert not store.mirror.mirrored("a")
    assert len(raw_rows(path, "a")) == 4  # the DELETE was rolled back with the commit
    assert [e.record_id for e in store.pending("a", 10)] == [
        make_record_id(title(meter), 1) for meter in (2, 3)
    ]
    assert store.depth("a") == 2
    store.accept([push(9, 2)])  # the next transaction writes them
    assert len(raw_rows(path, "a")) == 3
    store.close()


def test_ids_sqlite_may_pick_at_random_turn_the_mirror_off(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path, ["a"]).close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "INSERT INTO spool (id, sink, record_id, record, created_at)"
            " VALUES (?, 'gone', 'x', '{}', 0)",
            (TRUSTED_IDS,),
        )
        db.commit()
    store = StateStore(path, ["a"])
    assert not store.mirror.enabled
    store.accept([push(1, 1)])
    store.ack("a", [e.id for e in store.pending("a", 10)])
    assert not store.mirror.mirrored("a")
    assert raw_rows(path, "a") == []
    store.close()


# --- random sequences: the mirror path against the SELECT path -----------------------------

SINKS = ("a", "b")
commit = st.tuples(st.just("commit"), st.integers(0, 6))
claim = st.tuples(st.just("claim"), st.sampled_from(SINKS), st.integers(1, 8))
ack = st.tuples(
    st.just("ack"), st.sampled_from(SINKS), st.sampled_from(["all", "some", "tail", "other"])
)
drain = st.tuples(st.just("drain"), st.sampled_from(SINKS))
busy = [commit, commit, claim, ack, ack, drain, st.tuples(st.just("restart"), st.just(True))]
# "calm": what a mirror lives through (clean restarts only); "harsh": also failed
# commits, crashes and small bounds, which drop it (and it must come back).
OPERATIONS = {
    "calm": st.lists(st.one_of(*busy, st.tuples(st.just("flush"))), min_size=10, max_size=60),
    "harsh": st.lists(
        st.one_of(
            *busy,
            *busy,
            st.tuples(st.just("fail"), st.integers(0, 3)),
            st.tuples(st.just("flush")),
            st.tuples(st.just("restart"), st.booleans()),
        ),
        min_size=10,
        max_size=60,
    ),
}


class Model:
    """Per sink, the record ids that must be queued, oldest first."""

    def __init__(self) -> None:
        self.queues: dict[str, list[str]] = {sink: [] for sink in SINKS}


def select_all(store: StateStore, sink: str) -> list[SpoolEntry]:
    """Every row of the sink on disk, by the store's connection, as the SELECT path builds them."""
    rows = store._db.execute(
        "SELECT id, record_id, CAST(record AS BLOB) FROM spool WHERE sink = ? ORDER BY id",
        (sink,),
    )
    return [SpoolEntry(row_id, rid, SpoolRecord(rid, data)) for row_id, rid, data in rows]


def check_claim(store: StateStore, sink: str, limit: int, model: Model) -> list[SpoolEntry]:
    claimed = store.pending(sink, limit)
    # The SELECT path sees the acknowledged rows until their DELETE is written.
    waiting = {
        row_id
        for name, first, last in store.mirror.deletes
        if name == sink
        for row_id in range(first, last + 1)
    }
    on_disk = [e for e in select_all(store, sink) if e.id not in waiting]
    assert shown(claimed) == shown(on_disk[:limit])
    assert [e.record_id for e in claimed] == model.queues[sink][:limit]
    assert store.spool_depths()[sink] == len(on_disk) == len(model.queues[sink])
    assert shown(store._select(sink, limit)) == shown(claimed)  # skips waiting rows too
    assert store.depth(sink) == len(on_disk)
    return claimed


def open_store(path: Path, limit: int, max_rows: int) -> StateStore:
    store = StateStore(path, SINKS, synchronous="off", spool_limit=limit, spool_full="drop_oldest")
    store.mirror.max_rows = max_rows
    return store


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPERATIONS["calm"], limit=st.sampled_from([0, 0, 5, 9]), data=st.data())
def test_random_sequences_hand_out_what_the_select_would(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[Any, ...]],
    limit: int,
    data: st.DataObject,
) -> None:
    run_sequence(tmp_path_factory.mktemp("mirror") / "state.db", ops, limit, 100, data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPERATIONS["harsh"],
    limit=st.sampled_from([0, 0, 5, 9]),
    max_rows=st.sampled_from([3, 12, 100]),
    data=st.data(),
)
def test_random_sequences_with_failures_crashes_and_bounds(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[Any, ...]],
    limit: int,
    max_rows: int,
    data: st.DataObject,
) -> None:
    run_sequence(tmp_path_factory.mktemp("mirror") / "state.db", ops, limit, max_rows, data)


def run_sequence(
    path: Path, ops: list[tuple[Any, ...]], limit: int, max_rows: int, data: st.DataObject
) -> None:
    """Run `ops` on a store, checking every claim against the SELECT path and a model."""
    store = open_store(path, limit, max_rows)
    store._db.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON spool WHEN NEW.record_id LIKE 'FAIL%'"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    model = Model()
    claims: dict[str, list[SpoolEntry]] = {}
    acked: set[str] = set()  # acknowledged since the last restart (may come again after a crash)
    counter = 0
    try:
        for op in ops:
            kind = op[0]
            if kind in ("commit", "fail"):
                items = []
                for meter in range(op[1]):
                    counter += 1
                    items.append(push(meter, counter))
                if kind == "fail":
                    items.append(push(99, counter, tag="FAIL"))
                    with pytest.raises(StateError):
                        store.accept(items)
                    continue
                store.accept(items)
                for sink in SINKS:
                    queue = model.queues[sink]
                    queue += [item.record_id for item in items]
                    if limit and len(queue) > limit:
                        del queue[: len(queue) - limit]
            elif kind == "claim":
                claims[op[1]] = check_claim(store, op[1], op[2], model)
            elif kind in ("ack", "drain"):
                sink, how = op[1], op[2] if kind == "ack" else "all"
                if kind == "drain" or sink not in claims:  # a pump acks what it claimed
                    claims[sink] = check_claim(
                        store, sink, 10_000 if kind == "drain" else 4, model
                    )
                claim = claims.pop(sink)
                if how == "tail":  # not the head: the mirror's slow path
                    claim = claim[1:]
                elif how == "some" and claim:
                    mask = data.draw(
                        st.lists(st.booleans(), min_size=len(claim), max_size=len(claim))
                    )
                    claim = [entry for entry, chosen in zip(claim, mask, strict=True) if chosen]
                if how == "other":
                    claim = claims.get("b" if sink == "a" else "a", [])
                    store.ack(sink, [e.id for e in claim])  # another sink's ids: no effect
                    continue
                store.ack(sink, [e.id for e in claim])
                gone = {e.record_id for e in claim}
                acked |= gone
                model.queues[sink] = [rid for rid in model.queues[sink] if rid not in gone]
            elif kind == "flush":
                store.flush()
                assert store.mirror.deletes == []
                for sink in SINKS:
                    everything = select_all(store, sink)
                    assert [e.record_id for e in everything] == model.queues[sink]
                    mirrored = store.mirror.claim(sink, 10_000)
                    assert mirrored is None or shown(mirrored) == shown(everything)
            else:  # restart
                clean = op[1]
                if clean:
                    store.close()
                else:
                    crash(store)
                store = open_store(path, limit, max_rows)
                claims.clear()
                for sink in SINKS:
                    found = [e.record_id for e in select_all(store, sink)]
                    expected = model.queues[sink]
                    if clean:
                        assert found == expected
                    else:  # at least once: only acknowledged records may come again
                        assert set(expected) <= set(found) <= set(expected) | acked
                        model.queues[sink] = found
                    assert store.mirror.mirrored(sink) == (not found)
                acked = set()
        for sink in SINKS:
            check_claim(store, sink, 10_000, model)
    finally:
        with contextlib.suppress(sqlite3.Error):
            store.close()
