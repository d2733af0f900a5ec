"""The SQLite spool's batched statements: multi-row inserts and upserts, range deletes."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dlmsd.service.spoolmirror import id_runs as _runs
from dlmsd.service.state import (
    _CHUNK_SIZES,
    AcceptedPush,
    SpoolRecord,
    StateStore,
    _chunks,
    make_record_id,
)
from dlmsd.sinks.jsonl import JsonlSink


def title(meter: int) -> bytes:
    return b"KFM" + meter.to_bytes(5, "big")


def push(meter: int, counter: int, text: str | None = None) -> AcceptedPush:
    record_id = make_record_id(title(meter), counter)
    return AcceptedPush(title(meter), counter, record_id, text or f'{{"id":"{record_id}"}}')


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize("count", [0, 1, 7, 255, 256, 257, 511, 1000])
def test_chunks_cover_every_row_once_with_few_statement_sizes(count: int) -> None:
    pieces = list(_chunks(count))
    assert [start for start, _ in pieces] == [
        sum(s for _, s in pieces[:i]) for i in range(len(pieces))
    ]
    assert sum(size for _, size in pieces) == count
    assert {size for _, size in pieces} <= set(_CHUNK_SIZES)


@pytest.mark.parametrize("count", [1, 2, 255, 256, 257, 600])
def test_a_batch_is_spooled_in_order_for_every_sink_with_every_counter(
    tmp_path: Path, count: int
) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, ["a", "b"])
    items = [push(meter, 5) for meter in range(count)]
    store.accept(items)
    for sink in ("a", "b"):
        entries = store.pending(sink, 10_000)
        assert [e.record_id for e in entries] == [item.record_id for item in items]
        assert [e.record.json for e in entries] == [item.record_json for item in items]
        # One sink after the other: a sink's rows of a batch have consecutive ids.
        ids = [e.id for e in entries]
        assert ids == list(range(ids[0], ids[0] + count))
    store.close()
    assert rows(
        path, "SELECT COUNT(*), MIN(invocation_counter), MAX(invocation_counter) FROM counters"
    ) == [(count, 5, 5)]


def test_the_batched_upsert_keeps_the_highest_counter_and_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, ["a"])
    store.accept([push(meter, 10) for meter in range(300)])
    # One meter twice in a batch, and a batch older than what is stored.
    store.accept([push(1, 11), push(1, 13), push(2, 12)])
    store.accept([push(meter, 3) for meter in range(300)])
    store.close()
    stored: dict[bytes, int] = dict(
        rows(path, "SELECT system_title, invocation_counter FROM counters")
    )
    assert stored[title(1)] == 13
    assert stored[title(2)] == 12
    assert stored[title(299)] == 10
    assert StateStore(path, ["a"]).last_counter(title(1)) == 13


def test_runs_of_acknowledged_ids() -> None:
    assert _runs([]) == []
    assert _runs([4, 5, 6]) == [(4, 6)]
    assert _runs([9, 1, 2, 2, 3, 7]) == [(1, 3), (7, 7), (9, 9)]
    assert _runs([1, 1, 3]) == [(1, 1), (3, 3)]  # a duplicate does not hide the gap


def test_ack_deletes_exactly_the_ids_given(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", ["a", "b"])
    store.accept([push(meter, 1) for meter in range(8)])
    entries = store.pending("a", 10)
    kept = entries[3]
    # A gap, a duplicate, unsorted; another sink's queue is not touched.
    store.ack("a", [entries[5].id, entries[0].id, entries[1].id, entries[1].id, entries[2].id])
    store.ack("a", [e.id for e in entries[4:] if e is not entries[5]])
    assert [e.record_id for e in store.pending("a", 10)] == [kept.record_id]
    assert store.depth("a") == 1
    assert store.spool_depths() == {"a": 1, "b": 8}
    # Ids of sink "a" acknowledged for sink "b" delete nothing.
    store.ack("b", [kept.id])
    assert store.depth("a") == 1
    assert store.depth("b") == 8
    store.close()


def test_claims_spanning_batches_and_sinks_are_acknowledged(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", ["a", "b"])
    for counter in range(1, 5):
        store.accept([push(meter, counter) for meter in range(10)])
    for sink in ("a", "b"):
        entries = store.pending(sink, 25)  # two and a half batches, ids in three runs
        store.ack(sink, [e.id for e in entries])
        assert [e.record_id for e in store.pending(sink, 100)] == [
            make_record_id(title(meter), counter) for counter in (3, 4) for meter in range(10)
        ][5:]
        assert store.depth(sink) == 15
    store.close()


def test_spooled_bytes_reach_the_jsonl_file_unchanged(tmp_path: Path) -> None:
    texts = [
        '{"name":"zähler","unit":"m³","n":1}',
        '{"escaped":"\\u2028 \\u0085","emoji":"\U0001f525"}',
        '{"n":3}',
    ]
    store = StateStore(tmp_path / "state.db", ["jsonl"])
    store.accept([push(meter, 1, text) for meter, text in enumerate(texts)])
    entries = store.pending("jsonl", 10)
    assert all(isinstance(e.record, SpoolRecord) for e in entries)
    sink = JsonlSink(tmp_path / "out.jsonl")
    sink.deliver([e.record for e in entries])
    sink.close()
    store.close()
    assert (tmp_path / "out.jsonl").read_bytes() == "".join(t + "\n" for t in texts).encode()


def test_spool_record_from_stored_bytes_reads_like_one_from_text() -> None:
    text = '{"b":1,"zähler":[1,2]}'
    stored = SpoolRecord("X:1", text.encode())
    given = SpoolRecord("X:1", text)
    assert stored.utf8 == given.utf8 == text.encode()
    assert stored == given == {"b": 1, "zähler": [1, 2]}
    assert stored.json == given.json == text
    assert stored.utf8 == text.encode()  # still the same bytes once decoded


def test_freed_pages_are_not_zeroed_and_journaled(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", ["a"])
    assert store._db.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST
    store.close()


def test_a_database_in_another_text_encoding_still_reads_as_text(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA encoding = 'UTF-16le'")
        db.execute("CREATE TABLE made_elsewhere (x)")
    store = StateStore(path, ["a"])
    text = '{"name":"zähler"}'
    store.accept([push(1, 1, text)])
    (entry,) = store.pending("a", 10)
    assert entry.record.utf8 == text.encode()
    assert entry.record.json == text
    store.close()
