"""``/healthz`` and ``/readyz`` on the daemon's metrics port, over real HTTP."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from dlmsd.service import health
from dlmsd.service.maker import DaemonService
from dlmsd.sinks.spool import SinkHealth
from tests.service.test_daemon import (
    make_setup,
    port_of,
    send_udp,
    start,
    stop,
    vector_bytes,
    wait_until,
)


async def get(service: DaemonService, path: str) -> tuple[int, dict[str, Any], str]:
    assert service.metrics_service is not None
    url = f"http://127.0.0.1:{service.metrics_service.port_number}{path}"
    response = await treq.get(url)
    body = await response.content()
    kind = response.headers.getRawHeaders("content-type")[0]
    return response.code, json.loads(body), kind


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_twisted.ensureDeferred
async def test_healthz_and_readyz_of_a_working_daemon(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={}, tcp={})
    service = start(setup)
    try:
        live = await get(service, "/healthz")
        ready = await get(service, "/readyz")
    finally:
        await stop(service)
    assert live == (200, {"status": "ok"}, "application/json")
    code, report, _ = ready
    assert code == 200 and report["status"] == "ready"
    checks = report["checks"]
    assert checks["state"] == {"ok": True, "backend": "sqlite"}
    assert checks["listeners"] == {"udp": {"ok": True}, "tcp": {"ok": True}}
    assert checks["sinks"] == {"jsonl": {"ok": True, "failures": 0}}


@pytest_twisted.ensureDeferred
async def test_readyz_fails_when_a_sink_is_past_its_retry_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "SINK_FAILURE_BUDGET", 2)
    # An HTTP sink whose endpoint is down: every delivery fails (and is retried).
    extra = (
        '\n[[sinks]]\ntype = "http"\nname = "web"\n'
        f'url = "http://127.0.0.1:{closed_port()}/"\n'
        f'dead_letter = "{tmp_path / "dead.jsonl"}"\n'
        "attempts = 1\nretry_min = 0.01\nretry_max = 0.01\nretry_backoff = 0.05\n"
    )
    setup = make_setup(tmp_path, udp={}, extra=extra)
    service = start(setup)
    try:
        assert (await get(service, "/readyz"))[0] == 200  # nothing to deliver yet
        send_udp(port_of(service, "udp"), vector_bytes(0))
        [web] = [pump for pump in service.pumps if pump.sink.name == "web"]
        await wait_until(lambda: web.consecutive_failures >= 2)
        code, report, _ = await get(service, "/readyz")
        live = await get(service, "/healthz")
    finally:
        await stop(service)
    assert code == 503 and report["status"] == "not ready"
    sink = report["checks"]["sinks"]["web"]
    assert sink["ok"] is False and sink["failures"] >= 2
    assert report["checks"]["sinks"]["jsonl"]["ok"] is True
    assert live[0] == 200  # alive all the same: restarting would not help


@pytest_twisted.ensureDeferred
async def test_readyz_fails_while_a_sink_is_disconnected_past_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    try:
        [pump] = service.pumps
        state = SinkHealth(connected=True)
        monkeypatch.setattr(pump.sink, "health", state, raising=False)
        assert (await get(service, "/readyz"))[0] == 200
        state.connected = False  # what a network sink sets when it loses its broker
        within = await get(service, "/readyz")
        monkeypatch.setattr(health, "SINK_DISCONNECTED_GRACE", 0.0)
        past = await get(service, "/readyz")
    finally:
        await stop(service)
    assert within[0] == 200 and within[1]["checks"]["sinks"]["jsonl"]["connected"] is False
    assert past[0] == 503 and past[1]["checks"]["sinks"]["jsonl"]["ok"] is False


@pytest_twisted.ensureDeferred
async def test_readyz_is_not_ready_once_stopping(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    await stop(service)
    assert service.health is not None
    ready, report = service.health.readiness()
    assert not ready and report["status"] == "not ready"
