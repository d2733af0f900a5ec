"""Making the spool and the sinks visible: health, drop reports, their metrics.

The spool mechanics (per-sink queues, the bound and its policy) live in
the state backend (`dlmsd.service.statebackend`); this module turns what they do into
numbers and log lines:

* `SinkHealth`: what a network sink knows about itself (connected or not,
  errors per kind, dead-lettered batches), updated by the sink.
* `SpoolDropReporter`: the ``drop_oldest`` policy deleted records: say so
  loudly, at once for the first drop and then at most once a minute per sink
  with the count since the last line.
* `SinkCollector`: exports all of it, read at scrape time, never stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.logger import Logger

from dlmsd.service.statebackend import StateBackend
from dlmsd.sinks.base import Sink


class SinkHealth:
    """Mutable health of one sink, for metrics and logs.

    `connected` is None for sinks without a connection (files); `errors`
    counts errors per kind (``connect``, ``tls``, ``credentials``, ``refused``,
    ``publish``, ``http_5xx``, ...); `last_error` is the latest message, which
    never holds a secret.
    """

    __slots__ = ("_connected", "changed_at", "dead_letters", "errors", "last_error")

    def __init__(self, connected: bool | None = None) -> None:
        self._connected = connected
        # When `connected` last changed (monotonic): /readyz gives a lost connection time.
        self.changed_at = time.monotonic()
        self.errors: dict[str, int] = {}
        self.last_error = ""
        self.dead_letters = 0

    @property
    def connected(self) -> bool | None:
        """True/False for sinks with a connection, None for the others."""
        return self._connected

    @connected.setter
    def connected(self, value: bool | None) -> None:
        if value != self._connected:
            self._connected = value
            self.changed_at = time.monotonic()

    def error(self, kind: str, message: str) -> None:
        """Count one error of `kind` and remember its message."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = message


class _Pump(Protocol):
    """The part of `SpoolPump` the collector reads."""

    @property
    def sink(self) -> Sink: ...

    @property
    def failures(self) -> int: ...


def health_of(sink: object) -> SinkHealth | None:
    """A sink's `health` attribute when it has one."""
    health = getattr(sink, "health", None)
    return health if isinstance(health, SinkHealth) else None


class SpoolDropReporter:
    """Logs records dropped by the ``drop_oldest`` policy: never silent, never a flood."""

    log = Logger()

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._unreported: dict[str, int] = {}

    def __call__(self, sink: str, count: int) -> None:
        """Record that `count` oldest records of `sink`'s queue were deleted."""
        self._unreported[sink] = self._unreported.get(sink, 0) + count
        now = self._clock()
        last = self._last_logged.get(sink)
        if last is not None and now - last < self.interval:
            return
        self._last_logged[sink] = now
        dropped, self._unreported[sink] = self._unreported[sink], 0
        self.log.error(
            "spool full: dropped the {dropped} oldest records of sink {sink} "
            "(state.spool_full = drop_oldest); they are lost for this sink",
            dropped=dropped,
            sink=sink,
        )


class SinkCollector(Collector):
    """Sink and spool-bound series, computed when scraped.

    ``dlmsd_sink_connected{sink}`` (sinks with a connection only),
    ``dlmsd_sink_errors_total{sink,kind}``, ``dlmsd_sink_delivery_failures_total{sink}``,
    ``dlmsd_sink_dead_letters_total{sink}``, ``dlmsd_spool_dropped_total{sink}``,
    ``dlmsd_spool_full{sink}`` (1 while the queue is at its limit) and
    ``dlmsd_spool_limit`` (0: unbounded).
    """

    def __init__(self, pumps: Sequence[_Pump], state: StateBackend) -> None:
        self._pumps = tuple(pumps)
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        connected, errors, failures, dead, dropped, full, limit = self._families()
        state = self._state
        depths = state.spool_depths()
        for pump in self._pumps:
            name = pump.sink.name
            failures.add_metric([name], pump.failures)
            dropped.add_metric([name], state.spool_dropped.get(name, 0))
            at_limit = bool(state.spool_limit) and depths.get(name, 0) >= state.spool_limit
            full.add_metric([name], 1.0 if at_limit else 0.0)
            health = health_of(pump.sink)
            if health is None:
                continue
            if health.connected is not None:
                connected.add_metric([name], 1.0 if health.connected else 0.0)
            for kind, count in sorted(health.errors.items()):
                errors.add_metric([name, kind], count)
            dead.add_metric([name], health.dead_letters)
        limit.add_metric([], state.spool_limit)
        yield from (connected, errors, failures, dead, dropped, full, limit)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                "dlmsd_sink_connected",
                "1 while a sink is connected to its broker or endpoint.",
                labels=["sink"],
            ),
            CounterMetricFamily(
                "dlmsd_sink_errors",
                "Sink errors per kind (connect, tls, credentials, refused, ...).",
                labels=["sink", "kind"],
            ),
            CounterMetricFamily(
                "dlmsd_sink_delivery_failures",
                "Batches a sink failed to store (retried later from the spool).",
                labels=["sink"],
            ),
            CounterMetricFamily(
                "dlmsd_sink_dead_letters",
                "Batches refused for good (HTTP 4xx) and written to the dead-letter file.",
                labels=["sink"],
            ),
            CounterMetricFamily(
                "dlmsd_spool_dropped",
                "Spooled records deleted by the drop_oldest policy, per sink.",
                labels=["sink"],
            ),
            GaugeMetricFamily(
                "dlmsd_spool_full",
                "1 while a sink's queue is at state.spool_limit.",
                labels=["sink"],
            ),
            GaugeMetricFamily(
                "dlmsd_spool_limit",
                "Records each sink's queue may hold (state.spool_limit; 0: unbounded).",
            ),
        )
