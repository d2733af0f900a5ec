"""Prometheus metrics of the daemon, served by Twisted's own web server.

Each `Metrics` owns its `CollectorRegistry` (not the process-global one) so
tests and several daemons in one process stay apart. The ``/metrics``
resource renders in the reactor thread: no second HTTP server, no thread
pool, and the spool gauges may read the SQLite connection, which belongs to
the reactor thread. For the same reason the series bumped per frame or per
push (`ReactorCounter`, `ReactorHistogram`) are plain numbers without locks.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.internet.interfaces import IListeningPort
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

REJECT_REASONS = (
    "malformed",
    "unknown_meter",
    "auth_failed",
    "replay",
    "policy",
    "oversize",
    "internal_error",
    "spool_full",
    "state_unavailable",
)
"""Every label value of ``dlmsd_pushes_rejected_total`` (all exported from the start)."""

# Decoding a push takes tens of microseconds; the buckets resolve that range
# and still catch a stall of a second.
_DECODE_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.1,
    1.0,
)

SpoolReader = Callable[[str], float]


class Metrics:
    """All series of one daemon. Hot-path children are bound once, here."""

    def __init__(self, per_meter: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.per_meter = per_meter
        registry = self.registry
        # Per frame and per push: plain-number series (see `ReactorCounter`).
        self.frames_received = LabelledCounter(
            "dlmsd_frames_received",
            "Frames (datagrams, wrapper or HDLC frames) received, per listener.",
            "listener",
        )
        registry.register(self.frames_received)
        self.partial_pushes_dropped = LabelledCounter(
            "dlmsd_partial_pushes_dropped",
            "Partial multi-frame pushes dropped without a fault of their own (a new one began: "
            "meter restart; or the line was joined mid-push), per listener.",
            "listener",
        )
        registry.register(self.partial_pushes_dropped)
        self.pushes_accepted = Counter(
            "dlmsd_pushes_accepted",
            "Pushes verified, decoded and committed to the spool.",
            registry=registry,
        )
        self.pushes_rejected = Counter(
            "dlmsd_pushes_rejected",
            "Pushes refused, per reason.",
            ["reason"],
            registry=registry,
        )
        self.layout_mismatches = Counter(
            "dlmsd_layout_mismatches",
            "Accepted pushes whose bare body did not fit the meter's push object list or"
            " profile: kept without readings.",
            registry=registry,
        )
        self.records_delivered = Counter(
            "dlmsd_records_delivered",
            "Records delivered to a sink, per sink.",
            ["sink"],
            registry=registry,
        )
        # The name before 0.2: same numbers, kept one release for existing dashboards.
        self.readings_written = Counter(
            "dlmsd_readings_written",
            "Deprecated (removed after 0.2): dlmsd_records_delivered_total under its old name.",
            ["sink"],
            registry=registry,
        )
        self.decode_seconds = ReactorHistogram(
            "dlmsd_decode_seconds",
            "Time from an APDU to its record: peel, policy, verify, decrypt, decode.",
            _DECODE_BUCKETS,
        )
        registry.register(self.decode_seconds)
        self.tcp_connections_open = Gauge(
            "dlmsd_tcp_connections_open",
            "Open TCP connections (wrapper and HDLC listeners).",
            registry=registry,
        )
        self.tcp_connections_refused = Counter(
            "dlmsd_tcp_connections_refused",
            "TCP connections closed at once: the listener at max_connections with none to"
            " evict, or the source at max_connections_per_source.",
            ["listener"],
            registry=registry,
        )
        self.tcp_connections_refused_per_source = Counter(
            "dlmsd_tcp_connections_refused_per_source",
            "TCP connections closed at once because their source address held"
            " max_connections_per_source already (also in dlmsd_tcp_connections_refused).",
            ["listener"],
            registry=registry,
        )
        self.tcp_connections_evicted = Counter(
            "dlmsd_tcp_connections_evicted",
            "TCP connections closed to make room at max_connections: the oldest idle one"
            " of the source holding the most connections.",
            ["listener"],
            registry=registry,
        )
        self.keystore_meters = Gauge(
            "dlmsd_keystore_meters",
            "Meters in the key store.",
            registry=registry,
        )
        self.keystore_last_reload = Gauge(
            "dlmsd_keystore_last_reload_timestamp_seconds",
            "When the key store was last (re)loaded successfully, Unix time.",
            registry=registry,
        )
        self.keystore_reload_failures = Counter(
            "dlmsd_keystore_reload_failures",
            "Key store reloads refused (the old keys stay in use).",
            registry=registry,
        )
        self.meter_pushes: Counter | None = None
        self.meter_last_push: dict[str, float] | None = None
        if per_meter:
            self.meter_pushes = Counter(
                "dlmsd_meter_pushes_accepted",
                "Pushes accepted per meter (enabled by metrics.per_meter).",
                ["meter"],
                registry=registry,
            )
            self.meter_last_push = {}
            registry.register(_LastPushCollector(self.meter_last_push))
        Info(
            "dlmsd_build", "The running dlmsd: versions of it and its runtime.", registry=registry
        ).info(build_labels())
        # The process and runtime series every Prometheus client exports by default.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        self._rejected = {reason: self.pushes_rejected.labels(reason) for reason in REJECT_REASONS}
        self._spool = _SpoolCollector()
        registry.register(self._spool)

    def rejected(self, reason: str) -> None:
        """Count one rejection (`reason` is one of `REJECT_REASONS`)."""
        child = self._rejected.get(reason)
        if child is None:
            child = self._rejected[reason] = self.pushes_rejected.labels(reason)
        child.inc()

    def listener(self, name: str) -> ReactorCounter:
        """The frames-received counter of one listener (bind once, inc per frame)."""
        return self.frames_received.labels(name)

    def watch_spool(
        self, sinks: Sequence[str], depth: SpoolReader, oldest_age: SpoolReader
    ) -> None:
        """Export ``dlmsd_spool_depth`` and ``..._oldest_age_seconds`` read at scrape time."""
        self._spool.sinks = tuple(sinks)
        self._spool.depth = depth
        self._spool.oldest_age = oldest_age

    def delivered(self, sink: str, count: int) -> None:
        """Count records a sink confirmed (under the new name and the old one)."""
        self.records_delivered.labels(sink).inc(count)
        self.readings_written.labels(sink).inc(count)

    def render(self) -> bytes:
        """The exposition text, as ``/metrics`` serves it (without ``_created`` series:
        they double the series count and no dashboard reads them)."""
        return generate_latest(_WithoutCreated(self.registry))

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's current value (0.0 when absent); for tests and the simulator."""
        found = self.registry.get_sample_value(name, labels or {})
        return float(found) if found is not None else 0.0


class ReactorCounter:
    """One counter series kept as a plain number.

    prometheus_client's `Counter.inc` takes a lock and checks its arguments, some
    0.3 µs per frame; every increment here happens in the reactor thread, and so does
    the scrape (`MetricsResource`), so no lock is needed.
    """

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        """Add `amount` (not negative, like prometheus_client's counters)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class LabelledCounter(Collector):
    """A counter family with one label, exported as prometheus_client's `Counter` does
    (``<name>_total`` and ``<name>_created`` per label value)."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self._children: dict[str, ReactorCounter] = {}

    def labels(self, value: str) -> ReactorCounter:
        """The series of one label value (created at 0 on first use, then the same one)."""
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = ReactorCounter()
        return child

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, child in list(self._children.items()):
            family.add_metric([value], child.value, created=child.created)
        yield family


class ReactorHistogram(Collector):
    """A histogram without labels, kept as plain numbers and exported as
    prometheus_client's `Histogram` does; `observe` runs in the reactor thread only
    (as `ReactorCounter.inc`), at a fraction of `Histogram.observe`'s cost."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = (*sorted(float(bound) for bound in buckets), float("inf"))
        # The `le` label texts exactly as prometheus_client's Histogram writes them.
        go_text: Callable[[float], str] = floatToGoString
        self._labels = tuple(go_text(bound) for bound in self._bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._created = time.time()

    def observe(self, amount: float) -> None:
        """Count one observation in the first bucket whose bound is >= `amount`."""
        if amount == amount:  # NaN falls in no bucket, as with prometheus_client
            self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, "histogram")
        total = 0.0
        for label, count in zip(self._labels, self._counts, strict=True):
            total += count
            family.add_sample(self.name + "_bucket", {"le": label}, total)
        family.add_sample(self.name + "_count", {}, total)
        family.add_sample(self.name + "_sum", {}, self._sum)
        family.add_sample(self.name + "_created", {}, self._created)
        yield family


def build_labels() -> dict[str, str]:
    """``dlmsd_build_info``'s labels: dlmsd, Python and Twisted versions."""
    from dlmsd import __version__

    return {
        "version": __version__,
        "python": platform.python_version(),
        "twisted": importlib.metadata.version("twisted"),
    }


class _WithoutCreated:
    """A registry's families minus their ``_created`` samples (what `generate_latest` reads)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class _LastPushCollector(Collector):
    """``dlmsd_meter_last_push_timestamp_seconds{meter}``: when a meter's last push was
    committed (per_meter only), to alert on a meter that went silent."""

    def __init__(self, last: Mapping[str, float]) -> None:
        self._last = last

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for meter, when in list(self._last.items()):
            family.add_metric([meter], when)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "dlmsd_meter_last_push_timestamp_seconds",
            "When a push of this meter was last accepted, Unix time (metrics.per_meter).",
            labels=["meter"],
        )


class _SpoolCollector(Collector):
    """Spool gauges computed when scraped, never stored."""

    def __init__(self) -> None:
        self.sinks: tuple[str, ...] = ()
        self.depth: SpoolReader | None = None
        self.oldest_age: SpoolReader | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        depth, age = self._families()
        if self.depth is not None and self.oldest_age is not None:
            for sink in self.sinks:
                depth.add_metric([sink], self.depth(sink))
                age.add_metric([sink], self.oldest_age(sink))
        yield depth
        yield age

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "dlmsd_spool_depth", "Records waiting in the spool, per sink.", labels=["sink"]
            ),
            GaugeMetricFamily(
                "dlmsd_spool_oldest_age_seconds",
                "Age of the oldest record waiting in the spool, per sink.",
                labels=["sink"],
            ),
        )


class MetricsResource(Resource):
    """``/metrics``: renders the registry synchronously in the reactor thread."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))  # type: ignore[no-untyped-call]
        return self._metrics.render()


class _Root(Resource):
    """Only the children put in exist; anything else is a plain 404."""

    def getChild(self, path: bytes, request: Request) -> Any:
        return notFound()


def metrics_site(metrics: Metrics, children: Mapping[bytes, Resource] | None = None) -> Site:
    """A web site with ``/metrics`` and `children` (``/healthz``, ``/readyz``)."""
    root = _Root()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", MetricsResource(metrics))  # type: ignore[arg-type]
    for path, child in (children or {}).items():
        root.putChild(path, child)  # type: ignore[arg-type]
    site = Site(root)  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    site.noisy = False
    # Access logs for every scrape would drown the daemon's own log lines.
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


def listen_metrics(
    reactor: Any,
    metrics: Metrics,
    port: int,
    address: str,
    children: Mapping[bytes, Resource] | None = None,
) -> IListeningPort:
    """Serve ``/metrics`` (and `children`) on `address`:`port` (0 = any free port)."""
    site = metrics_site(metrics, children)
    port_: IListeningPort = reactor.listenTCP(port, site, interface=address)
    return port_
