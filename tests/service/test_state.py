"""State store: counters and spool commit together, survive a crash, roll back together."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.service.state import (
    SCHEMA_VERSION,
    AcceptedPush,
    SpoolRecord,
    StateError,
    StateStore,
    encode_record,
    make_record_id,
)

REPO = Path(__file__).parent.parent.parent
A = bytes.fromhex("4B464D0000000001")
B = bytes.fromhex("4B464D0000000002")


def push(title: bytes, counter: int, **fields: object) -> AcceptedPush:
    record: dict[str, object] = {
        "system_title": title.hex().upper(),
        "invocation_counter": counter,
    }
    record.update(fields)
    return AcceptedPush.create(title, counter, record)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite3"


def test_schema_wal_and_version(db: Path) -> None:
    StateStore(db, ["jsonl"]).close()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"counters", "spool"} <= tables


def test_refuses_newer_schema(db: Path) -> None:
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StateError, match="newer"):
        StateStore(db, ["jsonl"])


def test_refuses_unusable_path(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="cannot open"):
        StateStore(tmp_path / "missing-dir" / "state.sqlite3", ["jsonl"])


def test_accept_advances_counter_and_spools_per_sink(db: Path) -> None:
    clock = iter([100.0, 200.0]).__next__
    state = StateStore(db, ["jsonl", "mqtt"], clock=clock)
    assert state.last_counter(A) is None
    state.accept([push(A, 5, value=Decimal("1.5")), push(B, 7)])
    assert state.last_counter(A) == 5
    assert state.last_counter(B) == 7
    assert state.depth("jsonl") == 2
    assert state.depth("mqtt") == 2
    entries = state.pending("jsonl", 10)
    assert [e.record_id for e in entries] == ["4B464D0000000001:5", "4B464D0000000002:7"]
    assert dict(entries[0].record) == {
        "system_title": "4B464D0000000001",
        "invocation_counter": 5,
        "value": "1.5",
    }
    assert state.oldest_age("jsonl", now=130.0) == 30.0
    state.ack("jsonl", [entries[0].id])
    assert state.depth("jsonl") == 1
    assert state.depth("mqtt") == 2  # each sink has its own queue
    assert state.oldest_age("absent-sink") == 0.0
    state.close()


def test_counter_only_moves_up(db: Path) -> None:
    state = StateStore(db, ["jsonl"])
    state.accept([push(A, 10)])
    state.accept([push(A, 3)])  # the ingest refuses this; the store must not go back anyway
    assert state.last_counter(A) == 10
    state.close()
    assert StateStore(db, ["jsonl"]).last_counter(A) == 10


def test_staged_counter_refuses_replay_before_commit(db: Path) -> None:
    state = StateStore(db, ["jsonl"])
    state.stage(push(A, 1))
    state.stage(push(A, 2))
    assert state.last_counter(A) == 2  # visible at once, for the replay check
    assert state.staged == 2
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT COUNT(*) FROM counters").fetchone()[0] == 0
    assert state.commit() == 2
    assert raw.execute("SELECT invocation_counter FROM counters").fetchall() == [(2,)]
    assert raw.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 2
    assert state.commit() == 0


def test_failed_transaction_leaves_neither_counter_nor_spool(db: Path) -> None:
    state = StateStore(db, ["jsonl"])
    state.accept([push(A, 1)])
    # A real failure inside the transaction: a trigger aborts one spool insert.
    raw = sqlite3.connect(db)
    raw.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON spool WHEN NEW.record_id = '4B464D0000000002:9'"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    raw.commit()
    state.stage(push(A, 2))
    state.stage(push(B, 9))
    with pytest.raises(StateError, match="disk on fire"):
        state.commit()
    # Memory is set back too: A's 2 and B's 9 were never accepted.
    assert state.last_counter(A) == 1
    assert state.last_counter(B) is None
    assert state.staged == 0
    assert raw.execute("SELECT system_title, invocation_counter FROM counters").fetchall() == [
        (A, 1)
    ]
    assert [e.record_id for e in state.pending("jsonl", 10)] == ["4B464D0000000001:1"]
    raw.execute("DROP TRIGGER boom")
    raw.commit()
    state.accept([push(A, 2), push(B, 9)])  # the retransmissions are accepted later
    assert state.last_counter(B) == 9
    assert state.depth("jsonl") == 3


def test_crash_after_accept_keeps_counter_and_spool(db: Path) -> None:
    # A child process accepts, says so, and is killed with SIGKILL: no close, no cleanup.
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from dlmsd.service.state import AcceptedPush, StateStore
        state = StateStore(Path({str(db)!r}), ["jsonl"], synchronous="normal")
        title = bytes.fromhex("4B464D0000000001")
        state.accept([AcceptedPush.create(title, 41, {{"n": 1}})])
        state.stage(AcceptedPush.create(title, 42, {{"n": 2}}))  # staged, never committed
        print("accepted", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout == "accepted\n"
    state = StateStore(db, ["jsonl"])
    assert state.last_counter(A) == 41
    assert [(e.record_id, dict(e.record)) for e in state.pending("jsonl", 10)] == [
        ("4B464D0000000001:41", {"n": 1})
    ]


def test_counters_are_loaded_at_open(db: Path) -> None:
    state = StateStore(db, ["jsonl"])
    state.accept([push(bytes([0, 0, 0, 0, 0, 0, 0, n]), n) for n in range(1, 51)])
    state.close()
    reopened = StateStore(db, ["jsonl"])
    assert len(reopened) == 50
    assert reopened.last_counter(bytes([0, 0, 0, 0, 0, 0, 0, 7])) == 7


def test_close_commits_staged(db: Path) -> None:
    state = StateStore(db, ["jsonl"])
    state.stage(push(A, 3))
    state.close()
    assert StateStore(db, ["jsonl"]).last_counter(A) == 3


def test_pending_is_oldest_first_and_limited(db: Path) -> None:
    state = StateStore(db, ["jsonl"])
    state.accept([push(A, n) for n in range(1, 8)])
    first = state.pending("jsonl", 3)
    assert [e.record_id for e in first] == [make_record_id(A, n) for n in (1, 2, 3)]
    state.ack("jsonl", [e.id for e in first])
    assert [e.record_id for e in state.pending("jsonl", 3)] == [
        make_record_id(A, n) for n in (4, 5, 6)
    ]
    state.ack("jsonl", [])  # nothing to do


@pytest.mark.parametrize("mode", ["off", "normal", "full", "extra"])
def test_synchronous_modes(db: Path, mode: str) -> None:
    state = StateStore(db, ["jsonl"], synchronous=mode)  # type: ignore[arg-type]
    level = state._db.execute("PRAGMA synchronous").fetchone()[0]
    assert level == {"off": 0, "normal": 1, "full": 2, "extra": 3}[mode]


def test_bad_synchronous_mode(db: Path) -> None:
    with pytest.raises(ValueError):
        StateStore(db, ["jsonl"], synchronous="sometimes")  # type: ignore[arg-type]


def test_spool_record_is_a_lazy_mapping() -> None:
    record = SpoolRecord("X:1", '{"b":1,"a":[1,2]}')
    assert record.json == '{"b":1,"a":[1,2]}'
    assert list(record) == ["b", "a"]  # insertion order kept
    assert record["a"] == [1, 2]
    assert record == {"b": 1, "a": [1, 2]}
    assert len(record) == 2
    assert "X:1" in repr(record)


def test_encode_record() -> None:
    text = encode_record({"z": Decimal("0.1"), "raw": b"\x01\xab", "name": "zähler"})
    assert text == '{"z":"0.1","raw":"01AB","name":"zähler"}'
    with pytest.raises(TypeError):
        encode_record({"x": object()})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.sampled_from([A, B]), st.integers(0, 2**32 - 1), json_values), max_size=8
    )
)
def test_round_trip_and_counter_is_max(
    tmp_path_factory: pytest.TempPathFactory, items: list[tuple[bytes, int, object]]
) -> None:
    db = tmp_path_factory.mktemp("state") / "state.sqlite3"
    state = StateStore(db, ["s"], synchronous="off")
    state.accept([AcceptedPush.create(t, n, {"v": v}) for t, n, v in items])
    state.close()
    reopened = StateStore(db, ["s"], synchronous="off")
    for title in (A, B):
        counters = [n for t, n, _ in items if t == title]
        assert reopened.last_counter(title) == (max(counters) if counters else None)
    spooled = reopened.pending("s", 100)
    assert [json.loads(e.record.json) for e in spooled] == [{"v": v} for _, _, v in items]
    assert [e.record_id for e in spooled] == [make_record_id(t, n) for t, n, _ in items]
    reopened.close()


def test_push_without_counter_is_spooled_and_moves_no_counter(db: Path) -> None:
    state = StateStore(db, ["jsonl"])
    state.accept([AcceptedPush(A, -1, "4B464D0000000001:none:1", '{"plain":true}')])
    assert state.last_counter(A) is None
    assert state.depth("jsonl") == 1
    state.accept([push(A, 4), AcceptedPush(A, -1, "4B464D0000000001:none:2", "{}")])
    assert state.last_counter(A) == 4
    state.close()
    assert StateStore(db, ["jsonl"]).last_counter(A) == 4
