"""HDLC push listeners: over TCP and on a serial line (a pseudo-terminal stands in
for the HAN/P1 port: `SerialPort` opens the pty's slave side like any tty)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.service import simulator
from dlmsd.service.config import ConfigError
from dlmsd.service.hdlc import HdlcPushReceiver
from dlmsd.service.maker import DaemonService, StartupError
from tests.gbt_captures import SESSION, body_readings, field_hex, frames_of
from tests.service.test_daemon import (
    LogCapture,
    make_setup,
    metric,
    now,
    port_of,
    rejected,
    sleep,
    start,
    stop,
    wait_until,
)
from tests.service.test_daemon import (
    connect_tcp as connect,
)
from tests.vectors import by_kind

# Norwegian HAN style plaintext push in one UI frame (dlms-cosem
# tests/test_hdlc/test_hdlc.py:L247): DataNotification, 27 {OBIS, value, scaler_unit}.
[HAN_VECTOR] = by_kind("hdlc_ui_frame_data_notification")
HAN_FRAME = bytes.fromhex(HAN_VECTOR["hex"])
HAN_TITLE = "4E4F48414E000001"  # what the serial listener's config names the meter


def han_meter(security: str = '["none"]') -> str:
    return f'\n[meters.{HAN_TITLE}]\nname = "han-meter"\nsecurity = {security}\n'


# --- HDLC over TCP -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_segmented_pushes_with_noise_between_frames(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, hdlc_tcp={})
    service = start(setup)
    sock = connect(port_of(service, "hdlc_tcp"))
    try:
        stream = b"\x7e\x7e\x00\x13noise"  # idle flags and line noise first
        for counter, meter in enumerate(setup.meters, start=1):
            stream += simulator.hdlc_frames(simulator.build_push(meter, counter, now()), 32)
        # Delivered in odd-sized pieces, as a terminal server would.
        for start_at in range(0, len(stream), 37):
            sock.sendall(stream[start_at : start_at + 37])
            await sleep(0)
        await wait_until(lambda: len(setup.records()) == len(setup.meters))
        assert rejected(service, "malformed") == 1  # the skipped noise, once
        frames = metric(service, "dlmsd_frames_received_total", listener="hdlc_tcp")
        assert frames > len(setup.meters)  # segmented: several frames per push
    finally:
        sock.close()
        await stop(service)
    assert {r["transport"] for r in setup.records()} == {"hdlc_tcp"}


@pytest_twisted.ensureDeferred
async def test_published_plaintext_han_push_over_tcp_is_refused_by_policy(
    tmp_path: Path,
) -> None:
    # Over TCP nothing names the meter of a plaintext push: policy refuses it.
    setup = make_setup(tmp_path, hdlc_tcp={})
    service = start(setup)
    sock = connect(port_of(service, "hdlc_tcp"))
    try:
        sock.sendall(HAN_FRAME)
        await wait_until(lambda: rejected(service, "policy") == 1)
    finally:
        sock.close()
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_oversized_segmented_apdu_is_dropped(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, hdlc_tcp={"max_apdu_size": 64})
    service = start(setup)
    sock = connect(port_of(service, "hdlc_tcp"))
    meter = setup.meters[1]
    try:
        sock.sendall(simulator.hdlc_frames(simulator.build_push(meter, 1, now()), 40))
        await wait_until(lambda: rejected(service, "oversize") == 1)
        assert setup.records() == []
    finally:
        sock.close()
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_arbitrary_hdlc_bytes_never_raise(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, hdlc_tcp={})
    service = start(setup)
    try:
        _fuzz_receiver(service)
        assert rejected(service, "internal_error") == 0
    finally:
        await stop(service)


def _fuzz_receiver(service: DaemonService) -> None:

    push = simulator.hdlc_frames(simulator.build_push(simulator.make_meter(0), 1, now()), 24)

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=200),
                st.just(HAN_FRAME),
                st.builds(lambda cut: push[:cut], st.integers(0, len(push))),
                st.builds(lambda cut: push[cut:], st.integers(0, len(push))),
                # Real GBT pushes (Landis+Gyr), cut anywhere.
                st.builds(lambda cut: SESSION[cut : cut + 300], st.integers(0, 2000)),
            ),
            max_size=6,
        )
    )
    def feed(chunks: list[bytes]) -> None:
        receiver = HdlcPushReceiver(
            service.ingest,
            transport="hdlc_tcp",
            source="fuzz",
            on_frame=lambda: None,
            max_apdu_size=512,
        )
        for chunk in chunks:
            receiver.data_received(chunk)

    feed()


# --- HDLC on a serial line (pty) ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_serial_han_port_receives_the_published_push(tmp_path: Path) -> None:
    master, slave = os.openpty()
    setup = make_setup(
        tmp_path,
        hdlc_serial={"device": os.ttyname(slave), "baudrate": 2400, "system_title": HAN_TITLE},
        extra_keys=han_meter(),
    )
    service = start(setup)
    try:
        os.write(master, HAN_FRAME[:50])
        await sleep(0.02)
        os.write(master, HAN_FRAME[50:])
        await wait_until(lambda: len(setup.records()) == 1)
        assert metric(service, "dlmsd_frames_received_total", listener="serial") == 1
    finally:
        await stop(service)
        os.close(master)
        os.close(slave)
    record = setup.records()[0]
    assert record["transport"] == "hdlc_serial"
    assert record["system_title"] == HAN_TITLE
    assert record["security"] == "none"
    assert record["meter"] == "han-meter"
    readings = {r["obis"]: r for r in record["readings"]}
    assert len(readings) == 27
    # Items the source lists: 1-0:1.7.0 = 1122 W, 1-0:32.7.0 = 230.7 V (scaler -1).
    assert readings["1-0:1.7.0*255"]["value"] == 1122
    assert readings["1-0:1.7.0*255"]["unit"] == "W"
    assert readings["1-0:32.7.0*255"]["value"] == 230.7
    assert readings["1-0:32.7.0*255"]["unit"] == "V"


@pytest_twisted.ensureDeferred
async def test_serial_encrypted_pushes_and_policy(tmp_path: Path) -> None:
    master, slave = os.openpty()
    meter = simulator.make_meter(0, seed=7)
    setup = make_setup(
        tmp_path,
        hdlc_serial={"device": os.ttyname(slave), "system_title": meter.system_title.hex()},
    )
    service = start(setup)
    try:
        os.write(master, simulator.hdlc_frames(simulator.build_push(meter, 1, now())))
        # The default policy wants auth+enc, also for the meter the port names.
        os.write(master, simulator.hdlc_frames(simulator.build_notification(meter, 2, now())))
        await wait_until(lambda: len(setup.records()) == 1 and rejected(service, "policy") == 1)
    finally:
        await stop(service)
        os.close(master)
        os.close(slave)


@pytest_twisted.ensureDeferred
async def test_missing_serial_device_is_retried_and_others_keep_serving(tmp_path: Path) -> None:
    setup = make_setup(
        tmp_path,
        udp={},
        hdlc_serial={"device": str(tmp_path / "no-such-tty"), "reopen_delay": 0.05},
    )
    with LogCapture() as logs:
        service = start(setup)
        try:
            await wait_until(lambda: len(logs.having(device=str(tmp_path / "no-such-tty"))) >= 2)
            from tests.service.test_daemon import send_udp, vector_bytes

            send_udp(port_of(service, "udp"), vector_bytes(0))
            await wait_until(lambda: len(setup.records()) == 1)
        finally:
            await stop(service)
    assert "cannot open serial device" in logs.text


# --- GBT pushes (Landis+Gyr), real captures -------------------------------------------

LG_TITLE = "4C475A0000000450"  # what the listener's config names the meter (any title)


def lg_meter() -> str:
    return f'\n[meters.{LG_TITLE}]\nname = "lg-e450"\nsecurity = ["none"]\n'


@pytest_twisted.ensureDeferred
async def test_gbt_session_over_a_tcp_bridge_is_attributed_to_its_meter(tmp_path: Path) -> None:
    # ser2net in front of a HAN port: plaintext pushes, named by system_title.
    setup = make_setup(tmp_path, hdlc_tcp={"system_title": LG_TITLE}, extra_keys=lg_meter())
    service = start(setup)
    sock = connect(port_of(service, "hdlc_tcp"))
    try:
        for start_at in range(0, len(SESSION), 61):
            sock.sendall(SESSION[start_at : start_at + 61])
            await sleep(0)
        await wait_until(lambda: len(setup.records()) == 2)
        # The noise before the first frame, and the push with a duplicated block.
        await wait_until(lambda: rejected(service, "malformed") == 2)
        assert rejected(service, "policy") == 0
        # The push cut short by a restart: dropped, counted apart from rejections.
        dropped = metric(service, "dlmsd_partial_pushes_dropped_total", listener="hdlc_tcp")
        assert dropped == 1
    finally:
        sock.close()
        await stop(service)
    records = setup.records()
    assert [r["invoke_id"] for r in records] == [0xCBC6, 0x03B533]
    assert {(r["system_title"], r["meter"], r["transport"]) for r in records} == {
        (LG_TITLE, "lg-e450", "hdlc_tcp")
    }
    # The values the source states for that push came through (see test_decode_follow).
    assert body_readings(records[0])["0-0:42.0.0"] == b"LGZ1030655933512".hex()


@pytest_twisted.ensureDeferred
async def test_each_tcp_connection_joins_its_own_blocks(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, hdlc_tcp={"system_title": LG_TITLE}, extra_keys=lg_meter())
    service = start(setup)
    port = port_of(service, "hdlc_tcp")
    first, second = connect(port), connect(port)
    push = field_hex("e450-scs-vse-2026")
    other = field_hex("e450-scs-alternative-config")
    frames = frames_of(push)
    head = b"".join(frame.to_bytes() for frame in frames[:2])
    tail = b"".join(frame.to_bytes() for frame in frames[2:])
    try:
        first.sendall(head)
        await sleep(0.05)
        second.sendall(other)  # a whole push on the other connection in between
        await wait_until(lambda: len(setup.records()) == 1)
        first.sendall(tail)
        await wait_until(lambda: len(setup.records()) == 2)
        assert rejected(service, "malformed") == 0
    finally:
        first.close()
        second.close()
        await stop(service)
    assert [r["invoke_id"] for r in setup.records()] == [0x03B533, 0xD7DD82]


@pytest_twisted.ensureDeferred
async def test_serial_gbt_push_named_by_meter(tmp_path: Path) -> None:
    master, slave = os.openpty()
    setup = make_setup(
        tmp_path,
        hdlc_serial={"device": os.ttyname(slave), "baudrate": 2400, "meter": "lg-e450"},
        extra_keys=lg_meter(),
    )
    service = start(setup)
    push = field_hex("e450-scs-vse-2026")
    try:
        # A line opened in the middle of a push: its tail is skipped, the next one taken.
        tail = b"".join(frame.to_bytes() for frame in frames_of(push)[1:])
        for piece in (tail, push[:100], push[100:]):
            os.write(master, piece)
            await sleep(0.02)
        await wait_until(lambda: len(setup.records()) == 1)
        dropped = metric(service, "dlmsd_partial_pushes_dropped_total", listener="serial")
        assert dropped == 1
        assert metric(service, "dlmsd_frames_received_total", listener="serial") == 7
    finally:
        await stop(service)
        os.close(master)
        os.close(slave)
    [record] = setup.records()
    assert (record["meter"], record["system_title"]) == ("lg-e450", LG_TITLE)
    assert body_readings(record)["1-1:1.8.0"] == 482939


def test_listener_meter_must_name_one_key_store_meter(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, hdlc_tcp={"meter": "no-such-meter"})
    with pytest.raises(StartupError, match=r"listeners.hdlc_tcp\[0\].meter: no meter named"):
        start(setup)


def test_listener_takes_meter_or_system_title_not_both(tmp_path: Path) -> None:
    setup = make_setup(
        tmp_path, hdlc_tcp={"meter": "lg-e450", "system_title": LG_TITLE}, extra_keys=lg_meter()
    )
    with pytest.raises(ConfigError, match=r"listeners.hdlc_tcp\[0\].meter: give either"):
        start(setup)


def gbt_frames(apdu: bytes, block_size: int) -> bytes:
    """Synthetic (dlmsd's own encoders): an APDU as GBT blocks in UI frames, as L+G sends
    them (no segmentation bit, the LLC header in the first frame only)."""
    from dlmsd.protocol.gbt import GbtSender
    from dlmsd.protocol.hdlc.address import HdlcAddress
    from dlmsd.protocol.hdlc.frames import LLC_RESPONSE, Control, FrameKind, HdlcFrame

    destination, source = HdlcAddress.client(16), HdlcAddress.server(1, 17)
    blocks = GbtSender(apdu, block_size, window=63).start()
    assert blocks[-1].last_block
    return b"".join(
        HdlcFrame(
            destination,
            source,
            Control(FrameKind.UI),
            (LLC_RESPONSE if item.block_number == 1 else b"") + item.to_bytes(),
        ).to_bytes()
        for item in blocks
    )


@pytest_twisted.ensureDeferred
async def test_encrypted_gbt_pushes_are_verified_and_replays_refused(tmp_path: Path) -> None:
    # general-glo-ciphering (auth+enc) pushes of the simulated meters, cut in GBT blocks.
    setup = make_setup(tmp_path, hdlc_tcp={})
    service = start(setup)
    sock = connect(port_of(service, "hdlc_tcp"))
    meter = setup.meters[0]
    pushes = [simulator.build_push(meter, counter, now()) for counter in (1, 2)]
    try:
        sock.sendall(b"".join(gbt_frames(push, 40) for push in pushes))
        await wait_until(lambda: len(setup.records()) == 2)
        sock.sendall(gbt_frames(pushes[0], 50))  # the same push again
        await wait_until(lambda: rejected(service, "replay") == 1)
    finally:
        sock.close()
        await stop(service)
    assert [r["invocation_counter"] for r in setup.records()] == [1, 2]
    assert {r["system_title"] for r in setup.records()} == {meter.system_title.hex().upper()}


def test_hdlc_tcp_system_title_is_validated_like_the_serial_one(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, hdlc_tcp={"system_title": "4C475A"})
    with pytest.raises(ConfigError, match=r"listeners.hdlc_tcp\[0\].system_title: .*16 hex"):
        start(setup)
    setup = make_setup(tmp_path, hdlc_serial={"device": "/dev/null", "meter": ""})
    with pytest.raises(ConfigError, match=r"listeners.hdlc_serial\[0\].meter: .*non-empty"):
        start(setup)


@pytest_twisted.ensureDeferred
async def test_hdlc_tcp_holds_a_source_to_its_limit_and_evicts_at_max_connections(
    tmp_path: Path,
) -> None:
    from tests.service.test_tcp import connect_from, is_closed

    setup = make_setup(tmp_path, hdlc_tcp={"max_connections": 4, "max_connections_per_source": 3})
    service = start(setup)
    port = port_of(service, "hdlc_tcp")
    socks = [connect_from("127.0.0.2", port) for _ in range(5)]
    try:
        per_source = "dlmsd_tcp_connections_refused_per_source_total"
        await wait_until(lambda: metric(service, per_source, listener="hdlc_tcp") == 2)
        socks.append(connect_from("127.0.0.3", port))  # the 4th: the table is full now
        await wait_until(lambda: metric(service, "dlmsd_tcp_connections_open") == 4)
        socks.append(connect_from("127.0.0.1", port))  # displaces 127.0.0.2's oldest
        evicted = "dlmsd_tcp_connections_evicted_total"
        await wait_until(lambda: metric(service, evicted, listener="hdlc_tcp") == 1)
        await wait_until(lambda: is_closed(socks[0]))
        assert not is_closed(socks[-1]) and not is_closed(socks[-2])
    finally:
        for sock in socks:
            sock.close()
        await stop(service)
