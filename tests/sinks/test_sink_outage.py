"""A sink that goes down says so once, and delivery resumes as soon as it is back (issue 13 §6).

Before: every retry of a down sink logged a ``critical`` traceback, and the backoff
grew to 60 s, so delivery could resume a minute after the broker was back. Now: one
warning when it goes down, one info line when it is back, the backoff capped
(``retry_backoff_max``, 10 s by default) and jittered, and the MQTT sink's CONNACK
ends the pump's backoff at once. Real daemon service tree on the real reactor, real
mosquitto on loopback.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.service.test_daemon import (
    LogCapture,
    make_setup,
    metric,
    port_of,
    start,
    stop,
    wait_until,
)
from tests.sinks.mosquitto import Mosquitto, Subscriber
from tests.sinks.test_mqtt import frames, health, on_reactor, send_paced, sink_table, sleep
from tests.sinks.test_mqtt import subscriber as subscriber  # the fixture


@on_reactor
async def test_a_broker_outage_is_two_lines_and_delivery_resumes_at_reconnect(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber: Subscriber,
) -> None:
    # A pump backoff far longer than the test: only the reconnect signal can end it in time.
    table = sink_table(mosquitto.port, retry_backoff=20.0, retry_backoff_max=20.0)
    setup = make_setup(tmp_path, udp={}, extra=table)
    with LogCapture() as logs:
        service = start(setup)
        try:
            port = port_of(service, "udp")
            before, expected_before = frames(setup.meters, range(1, 6))
            send_paced(port, before)
            await wait_until(lambda: subscriber.counters() == expected_before, timeout=20)

            mosquitto.stop()
            await wait_until(lambda: health(service)["connected"] == 0)
            during, expected_during = frames(setup.meters, range(6, 26))
            send_paced(port, during)
            total = len(expected_before) + len(expected_during)
            await wait_until(lambda: metric(service, "dlmsd_pushes_accepted_total") == total)
            # The pump's delivery fails (connect_wait 1 s): it backs off for 15-20 s.
            pump = service.pumps[[p.sink.name for p in service.pumps].index("mqtt")]
            await wait_until(lambda: pump.consecutive_failures >= 1, timeout=10)
            await sleep(1.0)

            mosquitto.start()
            back = time.monotonic()
            everything = expected_before | expected_during
            await wait_until(lambda: subscriber.counters() == everything, timeout=10)
            resumed = time.monotonic() - back
            await wait_until(lambda: health(service)["depth"] == 0)
        finally:
            await stop(service)
    print(f"sink outage: delivery resumed {resumed:.2f}s after the broker was back")
    assert resumed < 5.0, resumed  # the pump's own backoff alone would wait 15-20 s
    pump_lines = [
        event for event in logs.events if "dlmsd.sinks.pump" in str(event.get("log_namespace"))
    ]
    down = [e for e in pump_lines if "is down" in str(e.get("log_format"))]
    up = [e for e in pump_lines if "is back" in str(e.get("log_format"))]
    assert len(down) == 1 and down[0]["log_level"].name == "warn", logs.text
    assert len(up) == 1 and up[0]["log_level"].name == "info", logs.text
    assert not [e for e in logs.events if e["log_level"].name == "critical"], logs.text
    # The MQTT sink adds one line of its own for the outage (connection lost), not one a
    # minute for each failed reconnect.
    sink_problems = [
        e
        for e in logs.events
        if "dlmsd.sinks.mqtt" in str(e.get("log_namespace"))
        and e["log_level"].name in ("warn", "error")
    ]
    assert len(sink_problems) == 1, logs.text
    assert "Traceback" not in logs.text
