"""etc/prometheus/dlmsd-rules.yml and etc/grafana/dlmsd.json against the real daemon.

The alert rules run through ``promtool test rules`` (Debian ``prometheus``, in the
Makefile's test-deps). Every metric name the rules or the dashboard use must be
one the daemon exports: the names come from a running daemon's ``/metrics``
with every kind of series present (per-meter series, a network sink, a push).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
import treq

from tests.service.test_daemon import (
    make_setup,
    port_of,
    send_udp,
    start,
    stop,
    vector_bytes,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "etc" / "prometheus" / "dlmsd-rules.yml"
RULE_TESTS = REPO / "etc" / "prometheus" / "dlmsd-rules.test.yml"
DASHBOARD = REPO / "etc" / "grafana" / "dlmsd.json"
PROMTOOL = shutil.which("promtool")
# Metric names as PromQL and the annotations write them; `up` is Prometheus's own.
METRIC_NAME = re.compile(r"\b(?:dlmsd|process|python)_[a-z0-9_]+\b")
PROMETHEUS_OWN = {"up"}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (make test-deps installs it)")
def test_promtool_accepts_the_rules_and_their_tests_pass() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            queries.append(query["query"])
    return queries


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    text = "\n".join(dashboard_queries())
    for name in (
        "dlmsd_frames_received_total",  # ingest rate by listener
        "dlmsd_pushes_rejected_total",  # rejects by reason
        "dlmsd_decode_seconds_bucket",  # decode latency
        "dlmsd_spool_depth",
        "dlmsd_spool_oldest_age_seconds",
        "dlmsd_keystore_meters",
        "dlmsd_meter_last_push_timestamp_seconds",  # silent meters
    ):
        assert name in text, name


def test_the_rules_cover_the_failures_an_operator_must_hear_about() -> None:
    text = RULES.read_text()
    for alert in (
        "DlmsdNoPushes",
        "DlmsdMeterSilent",
        "DlmsdRejectRatioHigh",
        "DlmsdSpoolBacklog",
        "DlmsdKeystoreReloadFailed",
        "DlmsdSinkDown",
    ):
        assert f"alert: {alert}\n" in text, alert


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_twisted.ensureDeferred
async def test_every_metric_name_in_rules_and_dashboard_is_exported(tmp_path: Path) -> None:
    # A broker that is not there: the MQTT sink exports connected = 0 and its errors.
    extra = (
        '\n[[sinks]]\ntype = "mqtt"\nname = "broker"\nhost = "127.0.0.1"\n'
        f"port = {closed_port()}\nreconnect_min = 0.05\nreconnect_max = 0.1\n"
    )
    setup = make_setup(tmp_path, udp={}, tcp={}, extra=extra)
    text = setup.config_path.read_text().replace("[metrics]\n", "[metrics]\nper_meter = true\n")
    setup.config_path.write_text(text)
    service = start(setup)
    try:
        send_udp(port_of(service, "udp"), vector_bytes(0))
        await wait_until(lambda: len(setup.records()) == 1)
        await wait_until(lambda: b"dlmsd_sink_errors_total{" in service.metrics.render())
        assert service.metrics_service is not None
        url = f"http://127.0.0.1:{service.metrics_service.port_number}/metrics"
        response = await treq.get(url)
        exposition = (await response.content()).decode()
    finally:
        await stop(service)
    exported = {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }
    used = set(METRIC_NAME.findall(RULES.read_text()))
    used |= {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    assert len(used) >= 15
    missing = sorted(used - exported - PROMETHEUS_OWN)
    assert not missing, f"not in the daemon's /metrics: {missing}"
