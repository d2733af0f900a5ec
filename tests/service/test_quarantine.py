"""Quarantine of unknown-meter frames and the per-title log rate limiter."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from dlmsd.service.quarantine import (
    QUARANTINE_FILE,
    LogRateLimiter,
    Quarantine,
    QuarantinedFrame,
    read_quarantine,
)
from tests.records import validated
from tests.vectors import published

PUBLISHED = published()
# Source: dlms-cosem tests/test_udp_message.py:L6 (UDP wrapper + general-glo-ciphering push).
UDP_PUSH = next(v for v in PUBLISHED if v["source"] == "tests/test_udp_message.py:L6")
TITLE = bytes.fromhex(UDP_PUSH["keys"]["system_title"])
FRAME = bytes.fromhex(UDP_PUSH["hex"])


def test_add_writes_one_json_line_per_frame(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    quarantine.add(TITLE, FRAME, "127.0.0.1:4059", 1700000000.5, "udp")
    quarantine.add(None, b"\x0f\x00", "serial:/dev/ttyUSB0", 1700000001.0, "hdlc-serial")
    quarantine.close()
    lines = (tmp_path / "q" / QUARANTINE_FILE).read_text().splitlines()
    assert validated(json.loads(line) for line in lines)[0] == {
        "schema_version": 1,
        "kind": "quarantine",
        "received_at": "2023-11-14T22:13:20.500+00:00",  # ISO-8601 UTC, as in records
        "system_title": "2F19229199164103",
        "source": "127.0.0.1:4059",
        "transport": "udp",
        "frame_hex": FRAME.hex().upper(),
    }
    assert json.loads(lines[1])["system_title"] is None
    assert quarantine.added == 2


def test_read_back_for_decoding_later(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path)
    quarantine.add(TITLE, FRAME, "10.0.0.7:50000", 5.0, "tcp")
    quarantine.close()
    path = tmp_path / QUARANTINE_FILE
    with open(path, "ab") as handle:
        handle.write(b'{"received_at": 6.0, "system_ti')  # a crash mid-line
    assert list(read_quarantine(path)) == [
        QuarantinedFrame(5.0, TITLE, "10.0.0.7:50000", "tcp", FRAME)
    ]


def test_file_is_bounded_and_rotated_once(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, max_bytes=1000)
    for n in range(100):
        quarantine.add(TITLE, FRAME, "peer", float(n), "udp")
    quarantine.close()
    current = tmp_path / QUARANTINE_FILE
    previous = tmp_path / (QUARANTINE_FILE + ".1")
    assert current.stat().st_size <= 1000
    assert previous.stat().st_size <= 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [QUARANTINE_FILE, QUARANTINE_FILE + ".1"]
    # The newest frames are kept.
    assert list(read_quarantine(current))[-1].received_at == 99.0


def test_appends_to_existing_file(tmp_path: Path) -> None:
    Quarantine(tmp_path).add(TITLE, FRAME, "a", 1.0, "udp")
    second = Quarantine(tmp_path)
    second.add(TITLE, FRAME, "b", 2.0, "udp")
    second.close()
    assert [f.source for f in read_quarantine(tmp_path / QUARANTINE_FILE)] == ["a", "b"]


def test_bad_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Quarantine(tmp_path, max_bytes=-1)


def test_zero_bound_keeps_nothing(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, max_bytes=0)
    quarantine.add(TITLE, FRAME, "peer", 1.0, "udp")
    quarantine.close()
    assert list(read_quarantine(tmp_path / QUARANTINE_FILE)) == []


def test_logs_once_per_title_per_interval() -> None:
    limiter = LogRateLimiter(interval=60.0)
    assert limiter.should_log(TITLE, 0.0)
    assert not limiter.should_log(TITLE, 1.0)
    assert not limiter.should_log(TITLE, 59.9)
    assert limiter.should_log(b"other", 2.0)
    assert limiter.should_log(TITLE, 60.0)
    assert limiter.suppressed == 2


def test_quarantine_should_log_uses_its_interval(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, log_interval=10.0)
    assert quarantine.should_log(TITLE, 0.0)
    assert not quarantine.should_log(TITLE, 5.0)
    assert quarantine.should_log(TITLE, 10.0)


def test_global_cap_per_interval() -> None:
    limiter = LogRateLimiter(interval=60.0, max_per_interval=3)
    results = [limiter.should_log(n.to_bytes(8, "big"), float(n)) for n in range(10)]
    assert results == [True] * 3 + [False] * 7
    assert limiter.should_log(b"late", 61.0)  # a new interval


def test_memory_stays_flat_with_100k_unknown_titles() -> None:
    limiter = LogRateLimiter(interval=300.0, max_keys=1000, max_per_interval=10**9)
    tracemalloc.start()
    for n in range(2_000):
        limiter.should_log(n.to_bytes(8, "big"), float(n))
    warm, _ = tracemalloc.get_traced_memory()
    for n in range(2_000, 100_000):
        limiter.should_log(n.to_bytes(8, "big"), float(n) / 1000)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(limiter) == 1000
    assert after - warm < 100_000  # no growth with the number of titles seen


def test_least_recently_seen_title_is_forgotten_first() -> None:
    limiter = LogRateLimiter(interval=300.0, max_keys=2)
    assert limiter.should_log(b"a", 0.0)
    assert limiter.should_log(b"b", 1.0)
    assert not limiter.should_log(b"a", 2.0)  # seen again: most recent now
    assert limiter.should_log(b"c", 3.0)  # evicts b
    assert not limiter.should_log(b"a", 4.0)
    assert limiter.should_log(b"b", 5.0)


def test_old_epoch_received_at_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / QUARANTINE_FILE
    path.write_text(
        '{"received_at": 1700000000.5, "system_title": null, "source": "s",'
        ' "transport": "udp", "frame_hex": "0F00"}\n'
        '{"received_at": "2023-11-14T22:13:21.250+00:00", "system_title": null, "source": "s",'
        ' "transport": "udp", "frame_hex": "0F00"}\n'
    )
    assert [frame.received_at for frame in read_quarantine(path)] == [1700000000.5, 1700000001.25]


def test_replace_keeps_exactly_the_frames_given(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, max_bytes=400)
    for n in range(6):  # rotates: some frames sit in quarantine.jsonl.1
        quarantine.add(TITLE, FRAME, f"source-{n}", 1700000000.0 + n, "udp")
    frames = quarantine.frames()
    assert [frame.source for frame in frames][-1] == "source-5"
    assert (tmp_path / (QUARANTINE_FILE + ".1")).exists()
    quarantine.replace(frames[-1:])
    assert not (tmp_path / (QUARANTINE_FILE + ".1")).exists()
    quarantine.add(None, b"\x0f", "later", 1700000010.0, "udp")
    assert [frame.source for frame in quarantine.frames()] == ["source-5", "later"]
    quarantine.close()
