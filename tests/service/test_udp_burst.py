"""UDP burst reads (dlmsd.service.udp_burst): slow pushes gather in the kernel's queue
until right before the commit that carries them; fast ones are read as they come.

Real reactor, real sockets on loopback, real SQLite; the pushes are the simulator's
(synthetic, built with dlmsd's own encoders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from dlmsd.service import simulator
from dlmsd.service.udp_burst import MAX_QUEUED, BurstPort, worth_waiting
from tests.service.test_daemon import (
    DaemonSetup,
    LogCapture,
    make_setup,
    metric,
    now,
    port_of,
    send_udp,
    sleep,
    start,
    stop,
    wait_until,
)


def frames(setup: DaemonSetup, count: int) -> list[bytes]:
    meter = setup.meters[0]
    return [
        simulator.wrap(simulator.build_push(meter, counter, now()))
        for counter in range(1, count + 1)
    ]


def fixed_commit_interval(setup: DaemonSetup, seconds: float) -> DaemonSetup:
    text = setup.config_path.read_text()
    assert "commit_interval = 0.001\n" in text
    setup.config_path.write_text(
        text.replace(
            "commit_interval = 0.001\n",
            f"commit_interval = {seconds}\ncommit_interval_max = {seconds}\n",
        )
    )
    return setup


def record_reads(service: Any) -> tuple[BurstPort, list[int]]:
    """The listener's port, and the size of every burst it hands over from now on."""
    port: BurstPort = service.listener("udp").port
    sizes: list[int] = []
    protocol = port.protocol
    handle = protocol.burstReceived

    def counting(burst: Any) -> None:
        sizes.append(len(burst))
        handle(burst)

    protocol.burstReceived = counting
    return port, sizes


async def send_slowly(port: int, datagrams: list[bytes], gap: float) -> None:
    for datagram in datagrams:
        send_udp(port, datagram)
        await sleep(gap)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("batch_reads", [True, False])
async def test_slow_pushes_are_read_in_bursts_before_their_commit(
    tmp_path: Path, batch_reads: bool
) -> None:
    # 40 pushes 2 ms apart, commits at most 50 ms apart: with batch reads a few
    # reads take them all; without, nearly every push is a read of its own.
    setup = make_setup(
        tmp_path,
        udp={"batch_reads": batch_reads},
        extra="commit_interval_max = 0.05\n",
    )
    service = start(setup)
    try:
        _, sizes = record_reads(service)
        pushes = frames(setup, 40)
        await send_slowly(port_of(service, "udp"), pushes, 0.002)
        await wait_until(lambda: len(setup.records()) == 40)
    finally:
        await stop(service)
    assert sum(sizes) == 40
    if batch_reads:
        assert len(sizes) <= 15, sizes
    else:
        assert len(sizes) >= 25, sizes
    assert [r["invocation_counter"] for r in setup.records()] == list(range(1, 41))


@pytest_twisted.ensureDeferred
async def test_a_push_that_waits_in_the_queue_joins_the_pending_commit(tmp_path: Path) -> None:
    # A fixed 0.3 s commit interval. Push 1 is read at once and staged; the port then
    # leaves the socket alone. Push 2, sent 0.1 s later, waits in the kernel's queue
    # and is read right before push 1's commit: both are accepted by that commit
    # (the count goes 0 -> 2), so waiting in the queue added no latency.
    setup = fixed_commit_interval(make_setup(tmp_path, udp={}), 0.3)
    service = start(setup)
    try:
        port, sizes = record_reads(service)
        first, second = frames(setup, 2)
        address = port_of(service, "udp")
        send_udp(address, first)
        await wait_until(lambda: sizes == [1])
        assert port._waiting
        await sleep(0.1)
        send_udp(address, second)
        seen: set[float] = set()

        def accepted() -> float:
            value = metric(service, "dlmsd_pushes_accepted_total")
            seen.add(value)
            return value

        await wait_until(lambda: accepted() == 2)
    finally:
        await stop(service)
    assert sizes == [1, 1]
    assert seen <= {0.0, 2.0}, seen


@pytest_twisted.ensureDeferred
async def test_an_idle_listener_keeps_no_timer(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    try:
        port, _ = record_reads(service)
        await send_slowly(port_of(service, "udp"), frames(setup, 5), 0.002)
        await wait_until(lambda: len(setup.records()) == 5)
        await sleep(0.2)  # past every commit interval
        assert not port._waiting
        assert port in reactor.getReaders()
        ingest = service.ingest
        assert ingest._readers == []
        assert ingest._commit_call is None
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_stopping_while_the_port_waits(tmp_path: Path) -> None:
    setup = fixed_commit_interval(make_setup(tmp_path, udp={}), 0.2)
    service = start(setup)
    port, sizes = record_reads(service)
    first, second = frames(setup, 2)
    address = port_of(service, "udp")
    send_udp(address, first)
    await wait_until(lambda: sizes == [1])
    assert port._waiting
    send_udp(address, second)  # waits in the kernel's queue for the commit
    await sleep(0.02)
    # Stopping reads what is queued, and the stop's flush commits it with push 1.
    await stop(service)
    assert sizes == [1, 1]
    assert not port._waiting
    assert port not in reactor.getReaders()
    assert [r["invocation_counter"] for r in setup.records()] == [1, 2]


def test_waits_only_while_little_would_queue() -> None:
    # 1 datagram in 1 ms (1,000/s) and a 50 ms wait: 50 would queue.
    assert worth_waiting(1, 0.001, 0.05)
    # 12 in 1 ms (12,000/s): 600 would queue, more than MAX_QUEUED.
    assert not worth_waiting(12, 0.001, 0.05)
    # A burst after a long pause is slow traffic, however big it is up to MAX_QUEUED.
    assert worth_waiting(MAX_QUEUED, 10.0, 0.05)
    assert not worth_waiting(MAX_QUEUED + 1, 0.05, 0.05)
    assert not worth_waiting(1, 1.0, 0.0)  # no commit to wait for


@pytest_twisted.ensureDeferred
async def test_a_failing_reader_does_not_stop_the_commit(tmp_path: Path) -> None:
    # A reader that raises (a bug) is logged; the port's own reader still runs and
    # the commit still comes.
    setup = fixed_commit_interval(make_setup(tmp_path, udp={}), 0.05)
    service = start(setup)
    try:
        _, sizes = record_reads(service)
        ingest = service.ingest

        def broken() -> None:
            raise RuntimeError("a listener bug")

        address = port_of(service, "udp")
        first, second = frames(setup, 2)
        with LogCapture() as logs:
            send_udp(address, first)
            await wait_until(lambda: sizes == [1])
            ingest.read_before_commit(broken)
            ingest._readers.reverse()  # the broken one first
            send_udp(address, second)
            await wait_until(lambda: len(setup.records()) == 2)
    finally:
        await stop(service)
    assert sizes == [1, 1]
    assert "a listener failed to read before the commit" in logs.text
    assert "a listener bug" in logs.text
