"""The wrapper-over-TCP listener: streams, limits, idle timeouts, garbage."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from dlmsd.service import simulator
from dlmsd.service.config import TcpListenerConfig
from dlmsd.service.maker import DaemonService
from dlmsd.service.tcp import WrapperPushFactory
from tests.service.test_daemon import (
    connect_tcp as connect,
)
from tests.service.test_daemon import (
    make_setup,
    metric,
    now,
    port_of,
    rejected,
    sleep,
    start,
    stop,
    vector_bytes,
    wait_until,
)


def is_closed(sock: socket.socket) -> bool:
    """True once the peer closed (or reset) the connection."""
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest_twisted.ensureDeferred
async def test_frames_split_across_reads_and_back_to_back(tmp_path: Path) -> None:
    # Published vectors (dlms-cosem tests/test_udp_message.py:L6..L8) on one stream.
    setup = make_setup(tmp_path, tcp={})
    service = start(setup)
    sock = connect(port_of(service, "tcp"))
    try:
        first, second, third = vector_bytes(0), vector_bytes(1), vector_bytes(2)
        sock.sendall(first[:3])
        await sleep(0.02)
        sock.sendall(first[3:50])
        await sleep(0.02)
        sock.sendall(first[50:] + second + third[:9])
        await wait_until(lambda: len(setup.records()) == 2)
        sock.sendall(third[9:])
        await wait_until(lambda: len(setup.records()) == 3)
        assert metric(service, "dlmsd_tcp_connections_open") == 1
        assert metric(service, "dlmsd_frames_received_total", listener="tcp") == 3
        assert not is_closed(sock)  # connections stay open between pushes
    finally:
        sock.close()
        await wait_until(lambda: metric(service, "dlmsd_tcp_connections_open") == 0)
        await stop(service)
    assert all(r["transport"] == "tcp" for r in setup.records())


@pytest_twisted.ensureDeferred
async def test_garbage_drops_that_connection_only(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, tcp={})
    service = start(setup)
    port = port_of(service, "tcp")
    good, bad = connect(port), connect(port)
    try:
        bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_until(lambda: is_closed(bad))
        assert rejected(service, "malformed") == 1
        good.sendall(vector_bytes(0))
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        good.close()
        bad.close()
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_oversized_frame_drops_the_connection(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, tcp={"max_frame_size": 64})
    service = start(setup)
    sock = connect(port_of(service, "tcp"))
    try:
        sock.sendall(vector_bytes(0)[:8])  # the header announces 70 bytes > 64 - 8
        await wait_until(lambda: is_closed(sock))
        assert rejected(service, "oversize") == 1
    finally:
        sock.close()
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_a_client_trickling_bytes_is_cut_at_the_idle_timeout(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, tcp={"idle_timeout": 0.3})
    service = start(setup)
    trickler = connect(port_of(service, "tcp"))
    frame = vector_bytes(0)
    started = time.monotonic()
    try:
        # One byte every 50 ms never completes a frame within 0.3 s: still idle.
        for byte in frame[:30]:
            if is_closed(trickler):
                break
            trickler.sendall(bytes((byte,)))
            await sleep(0.05)
        await wait_until(lambda: is_closed(trickler), timeout=2)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 1.5
        await wait_until(lambda: metric(service, "dlmsd_tcp_connections_open") == 0)
        assert setup.records() == []
    finally:
        trickler.close()
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_complete_frames_keep_a_connection_alive(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, tcp={"idle_timeout": 0.3})
    service = start(setup)
    sock = connect(port_of(service, "tcp"))
    meter = setup.meters[0]
    try:
        for counter in range(1, 6):  # 5 pushes, 0.15 s apart: 0.75 s > idle timeout
            sock.sendall(simulator.wrap(simulator.build_push(meter, counter, now())))
            await sleep(0.15)
            assert not is_closed(sock)
        await wait_until(lambda: len(setup.records()) == 5)
    finally:
        sock.close()
        await stop(service)


def connect_from(host: str, port: int) -> socket.socket:
    """A non-blocking client connection from a given loopback address (127.0.0.0/8 is
    all loopback on Linux), so one test can play several sources."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


@pytest_twisted.ensureDeferred
async def test_max_connections_holds_and_a_meter_within_it_is_served(tmp_path: Path) -> None:
    # 1,000 idle connections from one source against a limit of 300 (each costs two
    # descriptors here, client and server side, in one process). The table stays at
    # the limit; each newcomer takes the place of the hog's oldest idle connection
    # (or is refused while too many evicted ones wait for their close), and the
    # meter on its own address is never the one closed.
    limit, idle_count = 300, 1000
    setup = make_setup(tmp_path, tcp={"max_connections": limit})
    service = start(setup)
    port = port_of(service, "tcp")
    meter = connect_from("127.0.0.2", port)
    await wait_until(lambda: metric(service, "dlmsd_tcp_connections_open") == 1)
    idle: list[socket.socket] = []
    try:
        for _ in range(idle_count):
            idle.append(connect(port))
            if len(idle) % 100 == 0:
                await sleep(0)  # let the reactor accept

        def closed_by_limits() -> float:
            refused = metric(service, "dlmsd_tcp_connections_refused_total", listener="tcp")
            return refused + metric(service, "dlmsd_tcp_connections_evicted_total", listener="tcp")

        await wait_until(lambda: closed_by_limits() == idle_count + 1 - limit)
        await wait_until(lambda: metric(service, "dlmsd_tcp_connections_open") == limit)
        meter.sendall(vector_bytes(0))
        await wait_until(lambda: len(setup.records()) == 1)
        await wait_until(lambda: sum(is_closed(sock) for sock in idle) == idle_count + 1 - limit)
        assert not is_closed(meter)
    finally:
        meter.close()
        for sock in idle:
            sock.close()
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_a_source_is_held_to_max_connections_per_source(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, tcp={"max_connections_per_source": 5})
    service = start(setup)
    port = port_of(service, "tcp")
    hog = [connect_from("127.0.0.3", port) for _ in range(12)]
    meter: socket.socket | None = None
    try:
        per_source = "dlmsd_tcp_connections_refused_per_source_total"
        await wait_until(lambda: metric(service, per_source, listener="tcp") == 7)
        assert metric(service, "dlmsd_tcp_connections_refused_total", listener="tcp") == 7
        assert metric(service, "dlmsd_tcp_connections_open") == 5
        await wait_until(lambda: sum(is_closed(sock) for sock in hog) == 7)
        # Another address is not affected.
        meter = connect_from("127.0.0.1", port)
        meter.sendall(vector_bytes(0))
        await wait_until(lambda: len(setup.records()) == 1)
        # A closed slot is the source's again.
        for sock in hog:
            sock.close()
        await wait_until(lambda: metric(service, "dlmsd_tcp_connections_open") == 1)
        hog = [connect_from("127.0.0.3", port) for _ in range(5)]
        await wait_until(lambda: metric(service, "dlmsd_tcp_connections_open") == 6)
        assert metric(service, per_source, listener="tcp") == 7
    finally:
        for sock in hog:
            sock.close()
        if meter is not None:
            meter.close()
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_a_full_table_closes_the_oldest_idle_connection_of_the_busiest_source(
    tmp_path: Path,
) -> None:
    setup = make_setup(tmp_path, tcp={"max_connections": 10})
    service = start(setup)
    port = port_of(service, "tcp")
    quiet = connect_from("127.0.0.4", port)  # one connection: not the busiest source
    hog: list[socket.socket] = []
    meter: socket.socket | None = None
    try:
        for _ in range(9):
            hog.append(connect_from("127.0.0.5", port))
            await wait_until(lambda: metric(service, "dlmsd_tcp_connections_open") == len(hog) + 1)
        # The hog's second connection is active: the first is the oldest idle one.
        hog[1].sendall(vector_bytes(0))
        await wait_until(lambda: len(setup.records()) == 1)
        meter = connect_from("127.0.0.1", port)
        meter.sendall(vector_bytes(1))
        await wait_until(lambda: len(setup.records()) == 2)
        assert metric(service, "dlmsd_tcp_connections_evicted_total", listener="tcp") == 1
        assert metric(service, "dlmsd_tcp_connections_refused_total", listener="tcp") == 0
        assert metric(service, "dlmsd_tcp_connections_open") == 10
        await wait_until(lambda: is_closed(hog[0]))
        assert [is_closed(sock) for sock in hog[1:]] == [False] * 8
        assert not is_closed(quiet)
    finally:
        quiet.close()
        for sock in hog:
            sock.close()
        if meter is not None:
            meter.close()
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_shutdown_closes_open_connections_after_taking_their_frames(
    tmp_path: Path,
) -> None:
    setup = make_setup(tmp_path, tcp={})
    service = start(setup)
    sock = connect(port_of(service, "tcp"))
    sock.sendall(vector_bytes(0))
    await wait_until(lambda: service.ingest.staged == 1 or len(setup.records()) == 1)
    await stop(service)
    await wait_until(lambda: is_closed(sock))
    sock.close()
    assert len(setup.records()) == 1  # flushed and drained before exit


@pytest_twisted.ensureDeferred
async def test_arbitrary_streams_never_raise(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, tcp={})
    service = start(setup)
    try:
        _fuzz_stream(service)
        assert rejected(service, "internal_error") == 0
    finally:
        await stop(service)


def _fuzz_stream(service: DaemonService) -> None:
    factory = WrapperPushFactory(
        service.ingest, service.metrics, TcpListenerConfig(name="fuzz", max_frame_size=300)
    )
    good = vector_bytes(0)

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(st.one_of(st.binary(max_size=120), st.just(good)), max_size=8))
    def feed(chunks: list[bytes]) -> None:
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        for chunk in chunks:
            if transport.disconnecting:
                break
            protocol.dataReceived(chunk)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        assert not factory.connections

    feed()
