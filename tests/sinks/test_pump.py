"""Spool pump on the real reactor: delivery, wake-up, backoff, at-least-once, drain on stop."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher

from dlmsd.service.state import AcceptedPush, StateStore
from dlmsd.sinks.jsonl import JsonlSink
from dlmsd.sinks.pump import SpoolPump

TITLE = bytes.fromhex("4B464D0000000001")
F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])


def on_reactor(test: F) -> F:
    """Run an async test on the real reactor (pytest-twisted, typed)."""
    return cast(F, pytest_twisted.ensureDeferred(test))


def push(counter: int) -> AcceptedPush:
    return AcceptedPush.create(TITLE, counter, {"invocation_counter": counter})


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll the condition every few milliseconds on the reactor."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await sleep(0.005)
        waited += 0.005


class ListSink:
    """A sink that keeps what it gets; can fail the next N batches or hold them."""

    def __init__(self, name: str = "test") -> None:
        self.name = name
        self.batches: list[list[dict[str, object]]] = []
        self.fail_next = 0
        self.hold = False
        self.held: list[Deferred[None]] = []
        self.closed = False

    @property
    def counters(self) -> list[object]:
        return [record["invocation_counter"] for batch in self.batches for record in batch]

    def deliver(self, records: Sequence[Mapping[str, object]]) -> Deferred[None]:
        if self.fail_next:
            self.fail_next -= 1
            return defer.fail(ConnectionRefusedError("broker down"))
        batch = [dict(record) for record in records]
        if self.hold:
            held = Deferred[None]()
            held.addCallback(lambda _: self.batches.append(batch))
            self.held.append(held)
            return held
        self.batches.append(batch)
        return defer.succeed(None)

    def close(self) -> Deferred[None]:
        self.closed = True
        return defer.succeed(None)


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state.sqlite3", ["test"], synchronous="normal")


@pytest.fixture
def log_lines() -> Any:
    lines: list[str] = []

    def observer(event: LogEvent) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    yield lines
    globalLogPublisher.removeObserver(cast(ILogObserver, observer))


@on_reactor
async def test_delivers_and_acks(state: StateStore) -> None:
    state.accept([push(n) for n in range(1, 8)])
    sink = ListSink()
    pump = SpoolPump(state, sink, batch_size=3, poll_interval=60.0)
    pump.startService()
    await until(lambda: state.depth("test") == 0)
    assert sink.counters == list(range(1, 8))
    assert [len(batch) for batch in sink.batches] == [3, 3, 1]
    assert pump.delivered == 7
    await pump.stopService()
    assert sink.closed


@on_reactor
async def test_notify_wakes_the_pump_at_once(state: StateStore) -> None:
    sink = ListSink()
    pump = SpoolPump(state, sink, poll_interval=60.0)  # the timer alone would take a minute
    pump.startService()
    await sleep(0.01)
    state.accept([push(1)])
    pump.notify()
    await until(lambda: sink.counters == [1], timeout=1.0)
    state.accept([push(2)])
    pump.notify()
    pump.notify()  # several notifications before the tick: one delivery
    await until(lambda: sink.counters == [1, 2], timeout=1.0)
    assert len(sink.batches) == 2
    await pump.stopService()


@on_reactor
async def test_records_committed_during_a_delivery_follow_at_once(state: StateStore) -> None:
    sink = ListSink()
    sink.hold = True
    pump = SpoolPump(state, sink, poll_interval=60.0)
    pump.startService()
    state.accept([push(1)])
    pump.notify()
    await until(lambda: len(sink.held) == 1)
    state.accept([push(2)])
    pump.notify()  # arrives while batch 1 is in flight
    sink.hold = False
    sink.held[0].callback(None)
    await until(lambda: sink.counters == [1, 2], timeout=1.0)
    await pump.stopService()


@on_reactor
async def test_failing_sink_backs_off_then_delivers(
    state: StateStore, log_lines: list[str]
) -> None:
    state.accept([push(1), push(2)])
    sink = ListSink("test")
    sink.fail_next = 3
    delays: list[float] = []
    pump = SpoolPump(
        state,
        sink,
        retry_backoff=0.02,
        max_backoff=0.05,
        poll_interval=60.0,
        jitter=lambda: 0.0,
    )
    original = pump._schedule

    def record_delay(delay: float) -> None:
        delays.append(delay)
        original(delay)

    pump._schedule = record_delay  # type: ignore[method-assign]
    pump.startService()
    await until(lambda: sink.counters == [1, 2])
    assert state.depth("test") == 0
    assert pump.failures == 3
    assert pump.consecutive_failures == 0
    assert [d for d in delays if d > 0][:3] == [0.02, 0.04, 0.05]  # doubled, capped
    # One warning when it goes down, one line when it is back: none per retry.
    down = [line for line in log_lines if "sink test is down" in line]
    assert down == [
        "sink test is down: ConnectionRefusedError: broker down; records wait in the spool;"
        " retrying in 0.0s, then at most every 0.05s"
    ]
    back = [line for line in log_lines if "sink test is back" in line]
    assert len(back) == 1 and "3 failed attempts" in back[0]
    assert not [line for line in log_lines if "Traceback" in line]
    await pump.stopService()


@on_reactor
async def test_backoff_waits_are_jittered_within_their_step(state: StateStore) -> None:
    state.accept([push(1)])
    sink = ListSink("test")
    sink.fail_next = 4
    delays: list[float] = []
    pump = SpoolPump(
        state, sink, retry_backoff=0.02, max_backoff=0.04, poll_interval=60.0, jitter=lambda: 1.0
    )
    original = pump._schedule

    def record_delay(delay: float) -> None:
        delays.append(delay)
        original(delay)

    pump._schedule = record_delay  # type: ignore[method-assign]
    pump.startService()
    await until(lambda: sink.counters == [1])
    assert [round(d, 4) for d in delays if d > 0][:4] == [0.015, 0.03, 0.03, 0.03]
    await pump.stopService()


class ReadySink(ListSink):
    """A sink with a connection-level signal, as the MQTT sink has (CONNACK)."""

    def __init__(self) -> None:
        super().__init__("ready")
        self.on_ready: Callable[[], None] | None = None


@on_reactor
async def test_a_ready_signal_ends_the_backoff_at_once(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "ready.sqlite3", ["ready"], synchronous="normal")
    state.accept([push(1)])
    sink = ReadySink()
    sink.fail_next = 1
    pump = SpoolPump(state, sink, retry_backoff=30.0, max_backoff=30.0, poll_interval=60.0)
    assert sink.on_ready is not None  # the pump hooked itself in
    pump.startService()
    await until(lambda: pump.consecutive_failures == 1)
    await sleep(0.05)
    assert sink.counters == []  # backing off for 22-30 s
    sink.on_ready()
    await until(lambda: sink.counters == [1], timeout=1.0)
    await pump.stopService()
    state.close()


class BuggySink(ListSink):
    def deliver(self, records: Sequence[Mapping[str, object]]) -> Deferred[None]:
        if self.fail_next:
            self.fail_next -= 1
            return defer.fail(TypeError("a bug in the sink"))
        return super().deliver(records)


@on_reactor
async def test_a_bug_in_a_sink_logs_its_traceback_once(state: StateStore) -> None:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        state.accept([push(1)])
        sink = BuggySink("test")
        sink.fail_next = 3
        pump = SpoolPump(state, sink, retry_backoff=0.01, max_backoff=0.01, poll_interval=60.0)
        pump.startService()
        await until(lambda: sink.counters == [1])
        await pump.stopService()
    finally:
        globalLogPublisher.removeObserver(observer)
    down = [event for event in events if "sink test is down" in (formatEvent(event) or "")]
    assert len(down) == 1
    assert "TypeError: a bug in the sink" in formatEvent(down[0])
    assert down[0]["log_failure"].check(TypeError)  # the traceback goes with it
    assert down[0]["log_level"].name == "error"


@on_reactor
async def test_nothing_is_acked_while_the_sink_fails(state: StateStore) -> None:
    state.accept([push(1)])
    sink = ListSink()
    sink.fail_next = 10**6
    pump = SpoolPump(state, sink, retry_backoff=0.01, max_backoff=0.01)
    pump.startService()
    await until(lambda: pump.failures >= 3)
    assert state.depth("test") == 1
    await pump.stopService()
    assert state.depth("test") == 1  # still spooled for the next start
    assert sink.closed


@on_reactor
async def test_stop_waits_for_the_delivery_in_flight(state: StateStore) -> None:
    state.accept([push(1)])
    sink = ListSink()
    sink.hold = True
    pump = SpoolPump(state, sink, poll_interval=60.0)
    pump.startService()
    await until(lambda: len(sink.held) == 1)
    stopped = pump.stopService()
    await sleep(0.02)
    assert not stopped.called
    assert not sink.closed
    sink.hold = False
    sink.held[0].callback(None)
    await stopped
    assert sink.counters == [1]
    assert state.depth("test") == 0
    assert sink.closed


@on_reactor
async def test_stop_drains_what_is_queued(state: StateStore) -> None:
    sink = ListSink()
    pump = SpoolPump(state, sink, batch_size=2, poll_interval=60.0)
    pump.startService()
    await sleep(0.01)
    state.accept([push(n) for n in range(1, 6)])  # no notify: only the drain sends them
    await pump.stopService()
    assert sink.counters == [1, 2, 3, 4, 5]
    assert state.depth("test") == 0


@on_reactor
async def test_crash_before_ack_redelivers(tmp_path: Path, state: StateStore) -> None:
    # At-least-once: a delivery the process never acked comes again after restart.
    state.accept([push(1)])
    sink = ListSink()
    sink.hold = True
    pump = SpoolPump(state, sink, poll_interval=60.0)
    pump.startService()
    await until(lambda: len(sink.held) == 1)
    state._db.close()  # the "crash": the ack can no longer happen
    state._lock.release()  # as the kernel does for a process that died
    reopened = StateStore(tmp_path / "state.sqlite3", ["test"])
    second = ListSink()
    pump2 = SpoolPump(reopened, second, poll_interval=60.0)
    pump2.startService()
    await until(lambda: second.counters == [1])
    await pump2.stopService()
    pump._stopping = True
    sink.held[0].callback(None)  # the first process's delivery completes; its ack fails


@on_reactor
async def test_pump_into_jsonl_sink(tmp_path: Path, state: StateStore) -> None:
    sink = JsonlSink(tmp_path / "out" / "readings.jsonl", name="test")
    pump = SpoolPump(state, sink, poll_interval=60.0)
    pump.startService()
    state.accept([push(n) for n in range(1, 4)])
    pump.notify()
    await until(lambda: state.depth("test") == 0)
    await pump.stopService()
    lines = (tmp_path / "out" / "readings.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"invocation_counter": n} for n in (1, 2, 3)]
