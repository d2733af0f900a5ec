"""``/healthz`` and ``/readyz`` on the metrics port, as JSON.

``/healthz`` (liveness) answers 200 whenever the reactor answers: a daemon
that cannot serve it is stuck and should be restarted.

``/readyz`` (readiness) answers 200 when the daemon does its job, 503 with
the failing checks otherwise:

* ``state``: the counter/spool database is reachable;
* ``listeners``: every listener is bound (a serial device is open);
* ``sinks``: each sink is connected, or still within its retry budget: fewer
  than `SINK_FAILURE_BUDGET` failed deliveries in a row, and without a
  connection for less than `SINK_DISCONNECTED_GRACE` seconds. A sink past
  its budget does not stop ingest (the spool holds the records) but needs a
  person.

Both are rendered in the reactor thread, like ``/metrics``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.web.resource import Resource
from twisted.web.server import Request

from dlmsd.sinks.spool import health_of

SINK_FAILURE_BUDGET = 5
"""Failed deliveries in a row before a sink counts as down (with the default
``retry_backoff = 1``: about 15 s of retries)."""

SINK_DISCONNECTED_GRACE = 60.0
"""Seconds a sink may be without its connection (reconnecting) and still count as up."""


class _Pump(Protocol):
    @property
    def sink(self) -> Any: ...

    @property
    def consecutive_failures(self) -> int: ...


class _State(Protocol):
    @property
    def available(self) -> bool: ...

    @property
    def backend_name(self) -> str: ...


class Watched(Protocol):
    """What readiness reads of the daemon (`DaemonService`)."""

    @property
    def running(self) -> int: ...

    @property
    def state(self) -> _State: ...

    @property
    def listeners(self) -> Sequence[Any]: ...

    @property
    def pumps(self) -> Sequence[_Pump]: ...


class Health:
    """The checks behind ``/readyz``; `daemon` is set once the service tree exists."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.daemon: Watched | None = None
        self._clock = clock

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, report): the report names every check and whether it passed."""
        daemon = self.daemon
        if daemon is None or not daemon.running:
            return False, {"status": "not ready", "reason": "not running (starting or stopping)"}
        state = daemon.state
        checks: dict[str, Any] = {
            "state": {"ok": bool(state.available), "backend": state.backend_name},
            "listeners": {
                listener.name: {"ok": getattr(listener, "port", None) is not None}
                for listener in daemon.listeners
            },
            "sinks": {pump.sink.name: self._sink(pump) for pump in daemon.pumps},
        }
        ready = (
            checks["state"]["ok"]
            and all(item["ok"] for item in checks["listeners"].values())
            and all(item["ok"] for item in checks["sinks"].values())
        )
        return ready, {"status": "ready" if ready else "not ready", "checks": checks}

    def _sink(self, pump: _Pump) -> dict[str, Any]:
        failures = pump.consecutive_failures
        report: dict[str, Any] = {"ok": failures < SINK_FAILURE_BUDGET, "failures": failures}
        health = health_of(pump.sink)
        if health is not None and health.connected is not None:
            report["connected"] = health.connected
            if not health.connected:
                down_for = self._clock() - health.changed_at
                report["disconnected_seconds"] = round(down_for, 1)
                if down_for >= SINK_DISCONNECTED_GRACE:
                    report["ok"] = False
            if health.last_error and not report["ok"]:
                report["last_error"] = health.last_error
        return report


class _JsonResource(Resource):
    isLeaf = True

    def __init__(self, answer: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._answer = answer

    def render_GET(self, request: Request) -> bytes:
        code, body = self._answer()
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")  # type: ignore[no-untyped-call]
        request.setHeader(b"Cache-Control", b"no-store")  # type: ignore[no-untyped-call]
        return json.dumps(body, sort_keys=True).encode() + b"\n"


def health_resources(health: Health) -> dict[bytes, Resource]:
    """The ``/healthz`` and ``/readyz`` resources, for the metrics site."""

    def live() -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ok"}

    def ready() -> tuple[int, dict[str, Any]]:
        ok, report = health.readiness()
        return (200 if ok else 503), report

    return {b"healthz": _JsonResource(live), b"readyz": _JsonResource(ready)}
