"""The UDP listener: one datagram, one wrapper frame; bad datagrams counted, never fatal."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.service import simulator, udp
from dlmsd.service.config import UdpListenerConfig
from dlmsd.service.maker import DaemonService
from dlmsd.service.udp import UdpPushProtocol
from tests.service.test_daemon import (
    UDP_VECTORS,
    make_setup,
    metric,
    now,
    port_of,
    rejected,
    send_udp,
    start,
    stop,
    vector_bytes,
    wait_until,
)
from tests.vectors import vector_id


@pytest_twisted.ensureDeferred
async def test_consecutive_published_pushes_in_order(tmp_path: Path) -> None:
    # All four vectors of udp_wrapper+general_glo_ciphering_datanotification
    # (dlms-cosem tests/test_udp_message.py:L6..L9), IC 485..488 in order.
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    try:
        send_udp(port_of(service, "udp"), *(vector_bytes(i) for i in range(len(UDP_VECTORS))))
        await wait_until(lambda: len(setup.records()) == 4)
        assert metric(service, "dlmsd_frames_received_total", listener="udp") == 4
    finally:
        await stop(service)
    assert [r["invocation_counter"] for r in setup.records()] == [485, 486, 487, 488]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("index", range(len(UDP_VECTORS)), ids=[vector_id(v) for v in UDP_VECTORS])
async def test_truncated_published_datagram_is_malformed(tmp_path: Path, index: int) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    frame = vector_bytes(index)
    try:
        port = port_of(service, "udp")
        # Cut inside the header, inside the APDU, and just before the last tag byte.
        send_udp(port, frame[:5], frame[:40], frame[:-1])
        await wait_until(lambda: rejected(service, "malformed") == 3)
        send_udp(port, frame)  # the whole frame still goes through
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_oversized_and_garbage_datagrams(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={"max_frame_size": 100})
    service = start(setup)
    try:
        port = port_of(service, "udp")
        big = simulator.wrap(b"\x0f" + bytes(200))
        send_udp(port, big, b"", b"\xff" * 30, b"\x00\x02" + bytes(10))
        await wait_until(lambda: rejected(service, "oversize") == 1)
        await wait_until(lambda: rejected(service, "malformed") == 3)
        # A frame whose APDU is no push at all (a GET request) is malformed too.
        send_udp(port, simulator.wrap(bytes.fromhex("C001C100080000010000FF0200")))
        await wait_until(lambda: rejected(service, "malformed") == 4)
        send_udp(port, vector_bytes(0))
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_reuse_port_socket_is_adopted_and_shared(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    setup = make_setup(tmp_path, udp={"reuse_port": True, "port": port})
    service = start(setup)
    try:
        listener: Any = service.listener("udp")
        handle = listener.port.getHandle()
        assert handle.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        # Another SO_REUSEPORT socket may bind the same port while we listen.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            other.bind(("127.0.0.1", port))
        send_udp(port, vector_bytes(0))
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_arbitrary_datagrams_never_raise(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    try:
        _fuzz_datagrams(service)
        assert rejected(service, "internal_error") == 0
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_source_text_per_sender_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The listener keeps "host:port" per address; the cache is bounded and restarts when full.
    monkeypatch.setattr(udp, "SOURCE_CACHE_SIZE", 3)
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    protocol = UdpPushProtocol(service.ingest, service.metrics, UdpListenerConfig(name="direct"))
    try:
        protocol.datagramReceived(vector_bytes(0), ("192.0.2.7", 4059))
        for port in range(1000, 1010):
            protocol.datagramReceived(b"junk", ("192.0.2.8", port))
            assert len(protocol._sources) <= 3
        protocol.datagramReceived(vector_bytes(1), ("2001:db8::1", 4059))
        protocol.datagramReceived(vector_bytes(2), ("192.0.2.7", 4059))
        await wait_until(lambda: len(setup.records()) == 3)
        assert rejected(service, "malformed") == 10
        assert service.metrics.value("dlmsd_frames_received_total", {"listener": "direct"}) == 13
    finally:
        await stop(service)
    assert [r["source"] for r in setup.records()] == [
        "192.0.2.7:4059",
        "2001:db8::1:4059",
        "192.0.2.7:4059",
    ]


def _fuzz_datagrams(service: DaemonService) -> None:
    protocol = UdpPushProtocol(
        service.ingest, service.metrics, UdpListenerConfig(name="fuzz", max_frame_size=512)
    )
    seeds = [
        vector_bytes(0),
        simulator.wrap(simulator.build_push(simulator.make_meter(0), 1, now())),
    ]

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        st.one_of(
            st.binary(max_size=600),
            st.builds(_mutate, st.sampled_from(seeds), st.integers(0, 200), st.integers(0, 255)),
            st.builds(lambda frame, cut: frame[:cut], st.sampled_from(seeds), st.integers(0, 120)),
        )
    )
    def feed(datagram: bytes) -> None:
        frames = service.metrics.value("dlmsd_frames_received_total", {"listener": "fuzz"})
        protocol.datagramReceived(datagram, ("127.0.0.1", 9))
        after = service.metrics.value("dlmsd_frames_received_total", {"listener": "fuzz"})
        assert after == frames + 1

    feed()


def _mutate(frame: bytes, position: int, value: int) -> bytes:
    position %= len(frame)
    return frame[:position] + bytes((value,)) + frame[position + 1 :]
