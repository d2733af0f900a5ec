"""`dlmsd state reset-counter` with PostgreSQL state: two running daemons (in-process, real
reactor, loopback) share one real PostgreSQL; the reset reaches both, with an audit row.

Frames are synthetic: built by dlmsd's own simulator for simulated meters.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest_twisted

from dlmsd.service import simulator
from tests.service.test_daemon import (
    LogCapture,
    make_setup,
    port_of,
    rejected,
    send_udp,
    start,
    stop,
    wait_until,
)
from tests.service.test_lifecycle import cli, counters, push


@pytest_twisted.ensureDeferred
async def test_reset_counter_reaches_every_daemon_on_the_database(
    tmp_path: Path, pg_dsn: str
) -> None:
    setups = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        setups.append(
            make_setup(
                tmp_path / name,
                udp={},
                metrics=False,
                extra=f'dsn = "{pg_dsn}"\ninstance = "{name}"\n',
            )
        )
    a, b = setups
    meter = a.meters[0]  # same fleet (seed) in both setups
    title = meter.system_title.hex().upper()
    daemon_a, daemon_b = start(a), start(b)
    try:
        port_a, port_b = port_of(daemon_a, "udp"), port_of(daemon_b, "udp")
        send_udp(port_a, push(meter, 1000))
        await wait_until(lambda: daemon_a.state.last_counter(meter.system_title) == 1000)
        await wait_until(lambda: len(a.records()) + len(b.records()) == 1, timeout=10)
        # The meter restarts its counter: refused by both (b learns it at commit).
        send_udp(port_a, push(meter, 1))
        send_udp(port_b, push(meter, 2))
        await wait_until(
            lambda: rejected(daemon_a, "replay") == 1 and rejected(daemon_b, "replay") == 1
        )
        with LogCapture() as logs:
            code, out, err = await cli("state", "reset-counter", title, "--dsn", pg_dsn)
            assert code == 0, err
            assert "was 1000" in out
            # Each daemon drops its cached counter at its next refresh (about 1 s).
            await wait_until(
                lambda: len([e for e in logs.events if e.get("meter") == title]) == 2, timeout=10
            )
        send_udp(port_b, push(meter, 3))
        await wait_until(lambda: daemon_b.state.last_counter(meter.system_title) == 3)
        send_udp(port_a, push(meter, 3))  # the same frame at the other daemon: a replay
        send_udp(port_a, push(meter, 4))
        await wait_until(
            lambda: sorted(counters(a.records() + b.records())) == [3, 4, 1000], timeout=10
        )
        assert rejected(daemon_a, "replay") + rejected(daemon_b, "replay") == 3
    finally:
        await stop(daemon_a)
        await stop(daemon_b)
    with psycopg.connect(pg_dsn) as conn:
        [(reset_title, previous, by)] = conn.execute(
            "SELECT system_title, previous_counter, requested_by FROM dlmsd_counter_resets"
        ).fetchall()
        assert (bytes(reset_title), previous) == (meter.system_title, 1000) and "@" in by
        [(counter,)] = conn.execute(
            "SELECT invocation_counter FROM dlmsd_counters WHERE system_title = %s",
            (meter.system_title,),
        ).fetchall()
        assert counter == 4


@pytest_twisted.ensureDeferred
async def test_reset_counter_with_postgresql_through_the_config(
    tmp_path: Path, pg_dsn: str
) -> None:
    setup = make_setup(tmp_path, udp={}, metrics=False, extra=f'dsn = "{pg_dsn}"\n')
    meter = simulator.make_meter(0, seed=7)
    daemon = start(setup)
    try:
        send_udp(port_of(daemon, "udp"), push(meter, 50))
        await wait_until(lambda: counters(setup.records()) == [50], timeout=10)
        code, out, err = await cli(
            "state", "reset-counter", meter.system_title.hex(), "--config", str(setup.config_path)
        )
        assert code == 0 and "was 50" in out, err
        await wait_until(lambda: daemon.state.last_counter(meter.system_title) is None)
        send_udp(port_of(daemon, "udp"), push(meter, 1))
        await wait_until(lambda: counters(setup.records()) == [50, 1], timeout=10)
    finally:
        await stop(daemon)
