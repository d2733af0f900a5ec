"""Metrics: own registry per daemon, all series present, served over HTTP by Twisted."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor as _reactor

import dlmsd
from dlmsd.service import simulator
from dlmsd.service.metrics import (
    _DECODE_BUCKETS,
    REJECT_REASONS,
    LabelledCounter,
    Metrics,
    ReactorHistogram,
    listen_metrics,
)
from tests.service.test_daemon import (
    make_setup,
    now,
    port_of,
    rejected,
    send_udp,
    start,
    stop,
    vector_bytes,
    wait_until,
)

reactor: Any = _reactor


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.pushes_accepted.inc(3)
    assert first.value("dlmsd_pushes_accepted_total") == 3
    assert second.value("dlmsd_pushes_accepted_total") == 0


def test_every_reject_reason_is_exported_from_the_start() -> None:
    metrics = Metrics()
    found = samples(metrics.render().decode())
    for reason in REJECT_REASONS:
        assert found[("dlmsd_pushes_rejected_total", (("reason", reason),))] == 0
    metrics.rejected("replay")
    assert metrics.value("dlmsd_pushes_rejected_total", {"reason": "replay"}) == 1


def without_created(text: bytes) -> list[str]:
    """Exposition lines, minus the ``_created`` samples (their time stamps differ)."""
    return [
        line
        for line in text.decode().splitlines()
        if "_created{" not in line and "_created " not in line
    ]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["udp", "tcp", "hdlc"]), st.integers(0, 3))))
def test_labelled_counter_exports_what_prometheus_counter_does(
    increments: list[tuple[str, int]],
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = LabelledCounter("frames", "Frames.", "listener")
    ours.register(counter)
    reference = Counter("frames", "Frames.", ["listener"], registry=theirs)
    for listener, amount in [("udp", 0), *increments]:
        counter.labels(listener).inc(amount)
        reference.labels(listener).inc(amount)
    assert without_created(generate_latest(ours)) == without_created(generate_latest(theirs))
    assert "frames_created{" in generate_latest(ours).decode()


durations = st.floats(min_value=0.0, max_value=2.0) | st.sampled_from(
    [0.0, 0.00001, 0.000025, 0.1, 1.0, float("inf"), float("nan")]
)


@settings(max_examples=100, deadline=None)
@given(st.lists(durations))
def test_reactor_histogram_exports_what_prometheus_histogram_does(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = ReactorHistogram("decode_seconds", "Decode time.", _DECODE_BUCKETS)
    ours.register(histogram)
    reference = Histogram(
        "decode_seconds", "Decode time.", buckets=_DECODE_BUCKETS, registry=theirs
    )
    for value in values:
        histogram.observe(value)
        reference.observe(value)
    assert without_created(generate_latest(ours)) == without_created(generate_latest(theirs))
    assert "decode_seconds_created " in generate_latest(ours).decode()


def test_the_exposition_has_build_info_process_metrics_and_no_created_series() -> None:
    metrics = Metrics()
    metrics.pushes_accepted.inc()
    metrics.listener("udp").inc()
    metrics.decode_seconds.observe(0.001)
    text = metrics.render().decode()
    assert "_created" not in text
    found = samples(text)
    labels = (
        ("python", platform.python_version()),
        ("twisted", importlib.metadata.version("twisted")),
        ("version", dlmsd.__version__),
    )
    assert found[("dlmsd_build_info", labels)] == 1
    assert found[("process_resident_memory_bytes", ())] > 0
    assert found[("process_open_fds", ())] > 0
    assert ("python_gc_collections_total", (("generation", "0"),)) in found


def test_delivered_records_count_under_the_new_and_the_old_name() -> None:
    metrics = Metrics()
    metrics.delivered("jsonl", 5)
    assert metrics.value("dlmsd_records_delivered_total", {"sink": "jsonl"}) == 5
    assert metrics.value("dlmsd_readings_written_total", {"sink": "jsonl"}) == 5


def test_listener_counter_is_bound_once_and_refuses_to_go_down() -> None:
    metrics = Metrics()
    counter = metrics.listener("udp")
    assert metrics.listener("udp") is counter
    assert metrics.value("dlmsd_frames_received_total", {"listener": "udp"}) == 0
    counter.inc()
    counter.inc(2)
    assert metrics.value("dlmsd_frames_received_total", {"listener": "udp"}) == 3
    with pytest.raises(ValueError):
        counter.inc(-1)


def test_series_names_cannot_be_registered_twice() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError):
        Counter("dlmsd_frames_received", "again", registry=metrics.registry)
    with pytest.raises(ValueError):
        Histogram("dlmsd_decode_seconds", "again", registry=metrics.registry)


def test_spool_gauges_are_read_when_scraped() -> None:
    metrics = Metrics()
    depth = {"jsonl": 0}
    metrics.watch_spool(["jsonl"], lambda sink: depth[sink], lambda sink: 2.5)
    depth["jsonl"] = 7
    found = samples(metrics.render().decode())
    assert found[("dlmsd_spool_depth", (("sink", "jsonl"),))] == 7
    assert found[("dlmsd_spool_oldest_age_seconds", (("sink", "jsonl"),))] == 2.5


def test_per_meter_series_only_when_enabled() -> None:
    assert Metrics().meter_pushes is None
    assert "dlmsd_meter" not in Metrics().render().decode()
    assert Metrics().meter_last_push is None
    metrics = Metrics(per_meter=True)
    assert metrics.meter_pushes is not None
    metrics.meter_pushes.labels("gas-42").inc()
    assert metrics.value("dlmsd_meter_pushes_accepted_total", {"meter": "gas-42"}) == 1


@pytest_twisted.ensureDeferred
async def test_metrics_resource_over_http() -> None:
    metrics = Metrics()
    metrics.pushes_accepted.inc(2)
    port = listen_metrics(reactor, metrics, 0, "127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        response = await treq.get(f"{base}/metrics")
        assert response.code == 200
        assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
        body = (await response.content()).decode()
        assert "dlmsd_pushes_accepted_total 2.0" in body
        missing = await treq.get(f"{base}/other")
        assert missing.code == 404
        await missing.content()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_daemon_metrics_endpoint_shows_the_counters(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={}, tcp={})
    text = setup.config_path.read_text().replace("[metrics]\n", "[metrics]\nper_meter = true\n")
    setup.config_path.write_text(text)
    service = start(setup)
    try:
        port = port_of(service, "udp")
        forged = simulator.forge(simulator.build_push(setup.meters[0], 1, now()))
        send_udp(port, vector_bytes(0), vector_bytes(0), simulator.wrap(forged), b"junk")
        await wait_until(lambda: len(setup.records()) == 1 and rejected(service, "malformed") == 1)
        assert service.metrics_service is not None
        url = f"http://127.0.0.1:{service.metrics_service.port_number}/metrics"
        response = await treq.get(url)
        found = samples((await response.content()).decode())
    finally:
        await stop(service)
    assert found[("dlmsd_frames_received_total", (("listener", "udp"),))] == 4
    assert found[("dlmsd_pushes_accepted_total", ())] == 1
    assert found[("dlmsd_pushes_rejected_total", (("reason", "replay"),))] == 1
    assert found[("dlmsd_pushes_rejected_total", (("reason", "auth_failed"),))] == 1
    assert found[("dlmsd_pushes_rejected_total", (("reason", "malformed"),))] == 1
    assert found[("dlmsd_readings_written_total", (("sink", "jsonl"),))] == 1
    assert found[("dlmsd_decode_seconds_count", ())] == 1
    assert found[("dlmsd_keystore_meters", ())] == len(setup.meters) + 1
    assert found[("dlmsd_keystore_last_reload_timestamp_seconds", ())] > 0
    assert found[("dlmsd_tcp_connections_open", ())] == 0
    assert found[("dlmsd_spool_depth", (("sink", "jsonl"),))] == 0
    assert ("dlmsd_spool_oldest_age_seconds", (("sink", "jsonl"),)) in found
    assert found[("dlmsd_meter_pushes_accepted_total", (("meter", "vector-meter"),))] == 1
    # Per meter, when its last push was accepted: alerts find silent meters with it.
    pushed = found[("dlmsd_meter_last_push_timestamp_seconds", (("meter", "vector-meter"),))]
    assert abs(pushed - time.time()) < 60
    # The new name of the delivered-records counter and the old one, one release long.
    assert found[("dlmsd_records_delivered_total", (("sink", "jsonl"),))] == 1
    # A stable instance label: the host name, not host:pid.
    assert found[("dlmsd_state_info", (("backend", "sqlite"), ("instance", socket.gethostname())))]
