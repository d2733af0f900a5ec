"""The bounded spool: ``refuse`` and ``drop_oldest``, their metrics and loud logs.

First on the `StateStore` alone (real SQLite), then through the daemon with a
sink that never stores anything (registered as a third-party sink type), so
its queue fills up while the JSONL sink keeps draining its own.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import Deferred

from dlmsd.service.config import ConfigError, parse_config
from dlmsd.service.state import AcceptedPush, StateStore
from dlmsd.sinks import SinkConfigError, register_sink
from dlmsd.sinks.spool import SinkCollector, SinkHealth, SpoolDropReporter
from tests.service.test_daemon import (
    LogCapture,
    make_setup,
    metric,
    port_of,
    send_udp,
    sleep,
    start,
    stop,
    wait_until,
)
from tests.sinks.test_mqtt import frames, send_paced

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])
TITLE = bytes.fromhex("53494D0100000009")


def on_reactor(test: F) -> F:
    """Run an async test on the real reactor (pytest-twisted, typed)."""
    return cast(F, pytest_twisted.ensureDeferred(test))


def push(counter: int) -> AcceptedPush:
    return AcceptedPush.create(TITLE, counter, {"invocation_counter": counter})


def counters(store: StateStore, sink: str) -> list[int]:
    return [int(entry.record["invocation_counter"]) for entry in store.pending(sink, 1000)]  # type: ignore[call-overload]


# --- the store ----------------------------------------------------------------------


def test_refuse_policy_says_full_at_the_limit_and_has_room_after_acks(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db", ["a", "b"], spool_limit=5, spool_full="refuse")
    try:
        store.accept([push(n) for n in range(1, 5)])
        assert store.spool_has_room()
        store.stage(push(5))  # staged pushes count: the commit would fill the queue
        assert not store.spool_has_room()
        store.commit()
        assert not store.spool_has_room()
        # "a" drains, "b" does not: a push goes to every queue, so still full.
        store.ack("a", [entry.id for entry in store.pending("a", 5)])
        assert not store.spool_has_room()
        store.ack("b", [entry.id for entry in store.pending("b", 2)])
        assert store.spool_has_room()
        assert store.spool_depths() == {"a": 0, "b": 3}
        assert store.spool_dropped == {"a": 0, "b": 0}
    finally:
        store.close()


def test_drop_oldest_deletes_in_the_commit_and_reports(tmp_path: Path) -> None:
    dropped: list[tuple[str, int]] = []
    store = StateStore(
        tmp_path / "s.db", ["fast", "slow"], spool_limit=5, spool_full="drop_oldest"
    )
    store.on_drop = lambda sink, count: dropped.append((sink, count))
    try:
        store.accept([push(n) for n in range(1, 4)])
        store.ack("fast", [entry.id for entry in store.pending("fast", 10)])
        store.accept([push(n) for n in range(4, 9)])
        assert counters(store, "slow") == [4, 5, 6, 7, 8]
        assert counters(store, "fast") == [4, 5, 6, 7, 8]
        assert dropped == [("slow", 3)]
        assert store.spool_dropped == {"fast": 0, "slow": 3}
        assert (
            store.spool_depths()
            == {"fast": 5, "slow": 5}
            == {sink: store.depth(sink) for sink in ("fast", "slow")}
        )
        assert store.spool_has_room()  # drop_oldest never refuses
    finally:
        store.close()


def test_depths_are_counted_at_open_and_unconfigured_sinks_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = StateStore(path, ["kept", "removed"])
    store.accept([push(n) for n in range(1, 8)])
    store.close()
    reopened = StateStore(path, ["kept"], spool_limit=8, spool_full="refuse")
    try:
        assert reopened.spool_depths() == {"kept": 7}
        assert reopened.spool_has_room()
        reopened.accept([push(8)])
        assert not reopened.spool_has_room()
    finally:
        reopened.close()


def test_ack_of_rows_dropped_meanwhile_does_not_count_twice(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db", ["a"], spool_limit=3, spool_full="drop_oldest")
    try:
        store.accept([push(n) for n in range(1, 4)])
        in_flight = store.pending("a", 3)  # a pump delivers these...
        store.accept([push(n) for n in range(4, 6)])  # ...while two are dropped
        store.ack("a", [entry.id for entry in in_flight])
        assert store.spool_depths() == {"a": 2} and store.depth("a") == 2
    finally:
        store.close()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.lists(
        st.tuples(st.sampled_from(["accept", "ack"]), st.integers(min_value=1, max_value=4)),
        max_size=25,
    ),
)
def test_drop_oldest_never_exceeds_the_limit_and_keeps_memory_in_step(
    tmp_path_factory: pytest.TempPathFactory, limit: int, steps: list[tuple[str, int]]
) -> None:
    path = tmp_path_factory.mktemp("bound") / "s.db"
    store = StateStore(path, ["a"], synchronous="off", spool_limit=limit, spool_full="drop_oldest")
    counter = 0
    try:
        for action, count in steps:
            if action == "accept":
                store.accept([push(counter + n) for n in range(1, count + 1)])
                counter += count
            else:
                store.ack("a", [entry.id for entry in store.pending("a", count)])
            depth = store.depth("a")
            assert depth <= limit
            assert store.spool_depths()["a"] == depth
            # The newest records are the ones kept.
            assert counters(store, "a") == list(range(counter - depth + 1, counter + 1))
    finally:
        store.close()


def test_config_takes_the_bound_and_refuses_unknown_policies() -> None:
    base: dict[str, Any] = {
        "listeners": {"udp": [{"port": 0}]},
        "keys": {"files": ["/k.toml"]},
        "sinks": [{"type": "jsonl", "path": "/r.jsonl"}],
    }
    config = parse_config({**base, "state": {"spool_limit": 100, "spool_full": "drop_oldest"}})
    assert (config.state.spool_limit, config.state.spool_full) == (100, "drop_oldest")
    assert parse_config(base).state.spool_limit == 0  # unbounded by default
    with pytest.raises(ConfigError, match=r"state\.spool_full"):
        parse_config({**base, "state": {"spool_full": "block"}})
    with pytest.raises(ConfigError, match=r"state\.spool_limit"):
        parse_config({**base, "state": {"spool_limit": -1}})


def test_drop_reporter_logs_at_once_then_sums_per_interval() -> None:
    now = [0.0]
    reporter = SpoolDropReporter(interval=60.0, clock=lambda: now[0])
    with LogCapture() as logs:
        reporter("mqtt", 1)
        now[0] = 10.0
        reporter("mqtt", 5)
        reporter("http", 2)
        now[0] = 61.0
        reporter("mqtt", 4)
    lines = [event for event in logs.events if "spool full" in event.get("log_format", "")]
    assert [(e["sink"], e["dropped"]) for e in lines] == [("mqtt", 1), ("http", 2), ("mqtt", 9)]
    assert all(e["log_level"].name == "error" for e in lines)


def test_collector_exports_health_and_bound(tmp_path: Path) -> None:
    class Pump:
        def __init__(self, sink: Any) -> None:
            self.sink = sink
            self.failures = 3

    class Sink:
        name = "mqtt"
        health = SinkHealth(connected=True)

    Sink.health.error("connect", "refused")
    Sink.health.dead_letters = 2
    store = StateStore(tmp_path / "s.db", ["mqtt"], spool_limit=1, spool_full="refuse")
    try:
        store.accept([push(1)])
        families = {
            family.name: family for family in SinkCollector([Pump(Sink())], store).collect()
        }
    finally:
        store.close()

    def value(name: str, **labels: str) -> float:
        for sample in families[name].samples:
            if sample.labels == labels and not sample.name.endswith("_created"):
                return float(sample.value)
        raise AssertionError(f"no {name} {labels}")

    assert value("dlmsd_sink_connected", sink="mqtt") == 1
    assert value("dlmsd_sink_errors", sink="mqtt", kind="connect") == 1
    assert value("dlmsd_sink_delivery_failures", sink="mqtt") == 3
    assert value("dlmsd_sink_dead_letters", sink="mqtt") == 2
    assert value("dlmsd_spool_full", sink="mqtt") == 1
    assert value("dlmsd_spool_limit") == 1


# --- through the daemon ----------------------------------------------------------------


class StuckSink:
    """A third-party sink type that never stores anything: its queue only grows."""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name

    def deliver(self, records: Sequence[Mapping[str, object]]) -> Deferred[None]:
        return defer.fail(RuntimeError("stuck"))

    def close(self) -> Deferred[None]:
        return defer.succeed(None)


register_sink("stuck-test-sink", StuckSink, replace=True)


def bounded_setup(tmp_path: Path, policy: str) -> Any:
    extra = (
        f'spool_limit = 10\nspool_full = "{policy}"\n'
        '\n[[sinks]]\ntype = "stuck-test-sink"\nname = "stuck"\nretry_backoff = 10.0\n'
    )
    return make_setup(tmp_path, udp={}, meters=1, extra=extra)


@on_reactor
async def test_daemon_refuses_pushes_when_a_queue_is_full(tmp_path: Path) -> None:
    setup = bounded_setup(tmp_path, "refuse")
    with LogCapture() as logs:
        service = start(setup)
        try:
            datagrams, _ = frames(setup.meters, range(1, 16))
            send_paced(port_of(service, "udp"), datagrams, chunk=1)
            await wait_until(
                lambda: metric(service, "dlmsd_pushes_rejected_total", reason="spool_full") == 5
            )
            assert metric(service, "dlmsd_pushes_accepted_total") == 10
            assert metric(service, "dlmsd_spool_depth", sink="stuck") == 10
            assert metric(service, "dlmsd_spool_full", sink="stuck") == 1
            # On a loaded machine the JSONL pump may still be catching up: its queue
            # drains, the stuck one never does.
            await wait_until(lambda: metric(service, "dlmsd_spool_depth", sink="jsonl") == 0)
            assert metric(service, "dlmsd_spool_full", sink="jsonl") == 0
            assert metric(service, "dlmsd_spool_limit") == 10
            # Refused pushes did not move the meter's counter: a retransmission is welcome.
            assert service.state.last_counter(setup.meters[0].system_title) == 10
        finally:
            await stop(service)
    assert "push rejected: spool_full" in logs.text
    assert len(setup.records()) == 10


@on_reactor
async def test_daemon_drops_oldest_loudly_when_a_queue_is_full(tmp_path: Path) -> None:
    setup = bounded_setup(tmp_path, "drop_oldest")
    with LogCapture() as logs:
        service = start(setup)
        try:
            datagrams, _ = frames(setup.meters, range(1, 16))
            for datagram in datagrams:  # one per commit, so the JSONL queue stays short
                send_udp(port_of(service, "udp"), datagram)
                await sleep(0.01)
            await wait_until(lambda: metric(service, "dlmsd_pushes_accepted_total") == 15)
            await wait_until(
                lambda: metric(service, "dlmsd_spool_dropped_total", sink="stuck") == 5
            )
            assert metric(service, "dlmsd_spool_depth", sink="stuck") == 10
            assert metric(service, "dlmsd_spool_dropped_total", sink="jsonl") == 0
            assert counters(cast(StateStore, service.state), "stuck") == list(range(6, 16))
        finally:
            await stop(service)
    assert "spool full: dropped the" in logs.text and "sink stuck" in logs.text
    assert len(setup.records()) == 15  # the JSONL sink, which keeps up, lost nothing


def test_third_party_sink_type_from_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from dlmsd.sinks import base

    found = [EntryPoint("stuck-ep", "tests.sinks.test_spool_bound:StuckSink", "dlmsd.sinks")]
    monkeypatch.setattr(
        base, "entry_points", lambda group, name: [e for e in found if e.name == name]
    )
    monkeypatch.setattr(base, "_FACTORIES", dict(base._FACTORIES))
    sink = base.create_sink("stuck-ep", "plugged", {})
    assert isinstance(sink, StuckSink) and sink.name == "plugged"
    assert "stuck-ep" in base.sink_types()
    found.append(EntryPoint("broken-ep", "tests.sinks.no_such_module:factory", "dlmsd.sinks"))
    with pytest.raises(SinkConfigError, match=r"broken-ep.*cannot be loaded"):
        base.create_sink("broken-ep", "x", {})
    with pytest.raises(SinkConfigError, match="unknown sink type 'nowhere'"):
        base.create_sink("nowhere", "x", {})
