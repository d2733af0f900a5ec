"""JSONL sink: lines, rotation by size and day, fsync policies, failures, registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dlmsd.service.state import SpoolRecord
from dlmsd.sinks import JsonlSink, SinkConfigError, create_sink, register_sink, sink_types
from dlmsd.sinks.base import Sink

REPO = Path(__file__).parent.parent.parent
DAY = 86400.0
ROTATED = re.compile(r"readings\.jsonl\.(\d{8}-\d{6})-(\d+)")


def rotation_order(path: Path) -> tuple[str, int]:
    match = ROTATED.fullmatch(path.name)
    assert match is not None
    return match.group(1), int(match.group(2))


def record(n: int, **extra: object) -> dict[str, object]:
    return {"system_title": "4B464D0000000001", "invocation_counter": n, **extra}


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_lines(directory: Path) -> list[dict[str, object]]:
    """Every line of the current and rotated files, in rotation order."""
    rotated = sorted(
        (p for p in directory.iterdir() if ROTATED.fullmatch(p.name)), key=rotation_order
    )
    current = directory / "readings.jsonl"
    files = [*rotated, current] if current.exists() else rotated
    return [line for path in files for line in read_lines(path)]


def settled(deferred: Deferred[None]) -> None:
    """Wait for a Deferred that fired already (the JSONL sink is synchronous)."""
    results: list[object] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_deliver_writes_one_line_per_record_in_insertion_order(tmp_path: Path) -> None:
    path = tmp_path / "readings.jsonl"
    sink = JsonlSink(path)
    assert isinstance(sink, Sink)
    settled(sink.deliver([record(1, zähler="gas", b=2, a=1), record(2)]))
    settled(sink.deliver([SpoolRecord("X:3", '{"spooled":true,"n":3}')]))
    settled(sink.close())
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == (
        '{"system_title":"4B464D0000000001","invocation_counter":1,"zähler":"gas","b":2,"a":1}'
    )
    assert text.splitlines()[2] == '{"spooled":true,"n":3}'  # spooled JSON written as is
    assert text.endswith("\n")
    assert sink.written == 3


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_fsync_policies_all_write_everything(tmp_path: Path, fsync: str) -> None:
    sink = JsonlSink(tmp_path / "readings.jsonl", rotate_bytes=300, fsync=fsync)  # type: ignore[arg-type]
    for start in range(0, 30, 7):
        settled(sink.deliver([record(n) for n in range(start, min(start + 7, 30))]))
    settled(sink.close())
    assert [line["invocation_counter"] for line in all_lines(tmp_path)] == list(range(30))


def test_rotates_by_size_without_losing_or_splitting_lines(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    sink = JsonlSink(tmp_path / "readings.jsonl", rotate_bytes=250, clock=clock)
    for batch in range(10):
        settled(sink.deliver([record(batch * 5 + n) for n in range(5)]))
    settled(sink.close())
    rotated = sorted(
        (p for p in tmp_path.iterdir() if ROTATED.fullmatch(p.name)), key=rotation_order
    )
    assert len(rotated) > 5
    # Same second, so the -N suffix keeps names unique.
    assert rotated[0].name == "readings.jsonl.20231114-221320-0"
    for path in [*rotated, tmp_path / "readings.jsonl"]:
        assert path.stat().st_size <= 250
    assert [line["invocation_counter"] for line in all_lines(tmp_path)] == list(range(50))


def test_a_line_bigger_than_the_limit_still_goes_out(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "readings.jsonl", rotate_bytes=50)
    settled(sink.deliver([record(1, blob="x" * 200), record(2, blob="y" * 200)]))
    settled(sink.close())
    assert [line["invocation_counter"] for line in all_lines(tmp_path)] == [1, 2]


def test_rotates_daily(tmp_path: Path) -> None:
    clock = FakeClock(10 * DAY + 3600)
    sink = JsonlSink(tmp_path / "readings.jsonl", rotate_daily=True, clock=clock)
    settled(sink.deliver([record(1)]))
    clock.now += 3600
    settled(sink.deliver([record(2)]))  # same UTC day
    clock.now = 11 * DAY + 5
    settled(sink.deliver([record(3)]))
    settled(sink.close())
    rotated = sorted(p.name for p in tmp_path.iterdir() if ROTATED.fullmatch(p.name))
    assert rotated == ["readings.jsonl.19700112-000005-0"]
    assert [line["invocation_counter"] for line in all_lines(tmp_path)] == [1, 2, 3]
    assert read_lines(tmp_path / "readings.jsonl") == [record(3)]


def test_restart_on_a_later_day_rotates_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "readings.jsonl"
    path.write_text(json.dumps(record(1)) + "\n")
    os.utime(path, (5 * DAY + 60, 5 * DAY + 60))
    sink = JsonlSink(path, rotate_daily=True, clock=FakeClock(6 * DAY + 60))
    settled(sink.deliver([record(2)]))
    settled(sink.close())
    assert read_lines(path) == [record(2)]
    assert [line["invocation_counter"] for line in all_lines(tmp_path)] == [1, 2]


def test_a_line_cut_by_a_crash_is_terminated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "readings.jsonl"
    path.write_bytes(b'{"invocation_counter":1}\n{"invocation_co')
    sink = JsonlSink(path)
    settled(sink.deliver([record(2)]))
    settled(sink.close())
    lines = path.read_text().splitlines()
    assert lines[1] == '{"invocation_co'
    assert json.loads(lines[2]) == record(2)


@pytest.mark.parametrize("fsync", ["always", "batch"])  # line by line; the batch in one write
def test_failed_write_fails_the_deferred_and_leaves_no_partial_batch(
    tmp_path: Path, fsync: str
) -> None:
    # A real write failure: the file size limit (RLIMIT_FSIZE) in a child process.
    child = textwrap.dedent(
        f"""
        import json, resource, signal, sys
        from pathlib import Path
        from dlmsd.sinks.jsonl import JsonlSink
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        path = Path({str(tmp_path / "readings.jsonl")!r})
        sink = JsonlSink(path, fsync={fsync!r})
        results = []
        sink.deliver([{{"n": 0}}]).addBoth(results.append)
        size = path.stat().st_size
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
        sink.deliver([{{"n": n, "pad": "x" * 10}} for n in range(1, 6)]).addBoth(results.append)
        after_failure = path.read_text()
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        sink.deliver([{{"n": n, "pad": "x" * 10}} for n in range(1, 6)]).addBoth(results.append)
        sink.close()
        print(json.dumps({{
            "results": [type(r).__name__ for r in results],
            "error": str(results[1].value) if hasattr(results[1], "value") else None,
            "after_failure": after_failure,
            "final": path.read_text(),
        }}))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["results"] == ["NoneType", "Failure", "NoneType"]
    assert "too large" in out["error"]
    assert out["after_failure"] == '{"n":0}\n'  # the failed batch left nothing behind
    assert [json.loads(line)["n"] for line in out["final"].splitlines()] == list(range(6))


def test_deliver_to_unwritable_device_fails_the_deferred() -> None:
    sink = JsonlSink(Path("/dev/full"))
    failures: list[object] = []
    sink.deliver([record(1)]).addErrback(failures.append)
    assert len(failures) == 1
    assert "No space left" in str(failures[0])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=6),
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            max_size=4,
        ),
        max_size=6,
    )
)
def test_records_round_trip(
    tmp_path_factory: pytest.TempPathFactory, records: list[Mapping[str, object]]
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "readings.jsonl"
    sink = JsonlSink(path, fsync="never")
    settled(sink.deliver(records))
    settled(sink.close())
    assert read_lines(path) == records


# --- registry and factory -------------------------------------------------------------


def test_jsonl_is_registered_and_built_from_options(tmp_path: Path) -> None:
    assert "jsonl" in sink_types()
    sink = create_sink(
        "jsonl",
        "main",
        {
            "path": str(tmp_path / "r.jsonl"),
            "rotate_bytes": 0,
            "rotate_daily": True,
            "fsync": "never",
        },
    )
    assert isinstance(sink, JsonlSink)
    assert sink.name == "main"
    assert sink.rotate_bytes is None
    assert sink.rotate_daily is True
    assert sink.fsync == "never"
    settled(sink.close())


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "path"),
        ({"path": 3}, "path"),
        ({"path": "x", "rotate_bytes": -1}, "rotate_bytes"),
        ({"path": "x", "rotate_bytes": "big"}, "rotate_bytes"),
        ({"path": "x", "rotate_daily": "yes"}, "rotate_daily"),
        ({"path": "x", "fsync": "sometimes"}, "fsync"),
        ({"path": "x", "colour": "red"}, "colour"),
    ],
)
def test_factory_refuses_bad_options(options: dict[str, object], key: str) -> None:
    with pytest.raises(SinkConfigError) as caught:
        create_sink("jsonl", "main", options)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


def test_unknown_sink_type() -> None:
    with pytest.raises(SinkConfigError, match="unknown sink type 'kafka'"):
        create_sink("kafka", "k", {})


def test_register_third_party_sink(tmp_path: Path) -> None:
    def factory(name: str, options: Mapping[str, object]) -> Sink:
        return JsonlSink(tmp_path / "third.jsonl", name=name)

    register_sink("test-third-party", factory)
    with pytest.raises(ValueError, match="already registered"):
        register_sink("test-third-party", factory)
    sink = create_sink("test-third-party", "tp", {})
    assert sink.name == "tp"
    settled(sink.close())


# --- retention ------------------------------------------------------------------------


def rotated_files(directory: Path) -> list[Path]:
    return sorted(
        (p for p in directory.iterdir() if ROTATED.fullmatch(p.name)), key=rotation_order
    )


def test_keep_files_keeps_the_newest_rotated_files(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    sink = JsonlSink(tmp_path / "readings.jsonl", rotate_bytes=250, clock=clock, keep_files=2)
    for batch in range(10):
        settled(sink.deliver([record(batch * 5 + n) for n in range(5)]))
        clock.now += 1
    settled(sink.close())
    kept = rotated_files(tmp_path)
    assert len(kept) == 2
    # The newest two rotations and the current file hold the last records, in order.
    counters = [line["invocation_counter"] for line in all_lines(tmp_path)]
    assert counters == sorted(counters) and counters[-1] == 49
    assert (tmp_path / "readings.jsonl").exists()


def test_keep_days_deletes_old_rotated_files_at_start_and_rotation(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    old = tmp_path / "readings.jsonl.20231101-000000-0"
    recent = tmp_path / "readings.jsonl.20231113-000000-0"
    other = tmp_path / "readings.jsonl.backup"  # not a rotation: never touched
    for path, age_days in ((old, 13), (recent, 1), (other, 100)):
        path.write_text('{"x":1}\n')
        os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    sink = JsonlSink(tmp_path / "readings.jsonl", clock=FakeClock(now), keep_days=7)
    assert not old.exists() and recent.exists() and other.exists()
    settled(sink.close())


def test_retention_options_from_the_config_table(tmp_path: Path) -> None:
    sink = create_sink(
        "jsonl", "main", {"path": str(tmp_path / "r.jsonl"), "keep_files": 3, "keep_days": 1.5}
    )
    assert isinstance(sink, JsonlSink)
    assert (sink.keep_files, sink.keep_days) == (3, 1.5)
    settled(sink.close())
    for bad in ({"keep_files": -1}, {"keep_days": "week"}):
        with pytest.raises(SinkConfigError) as caught:
            create_sink("jsonl", "main", {"path": str(tmp_path / "r.jsonl"), **bad})
        assert caught.value.key == next(iter(bad))
