"""The MQTT sink's own wire: PUBLISH packets out, acknowledgements in, through a real mosquitto.

The sink writes its PUBLISH packets and reads their PUBACK/PUBREC/PUBCOMP
itself (paho keeps the session: CONNECT, pings, DISCONNECT). These tests pin
the packet codec and the paths paho used to cover: QoS 2, a window smaller
than the batch, packet ids wrapping, big TLS batches, a refused message.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlmsd.sinks.mqtt import MqttError, MqttSink
from dlmsd.sinks.mqtt_messages import PacketError, publish_packet, pubrel_packet, split_packets
from tests.service.test_daemon import wait_until
from tests.sinks.mosquitto import MOSQUITTO, Mosquitto, Subscriber, free_port
from tests.sinks.test_mqtt import on_reactor, record, settings, sink_options, sleep, tls_options

# --- the codec ---------------------------------------------------------------------------


def test_publish_packet_bytes() -> None:
    packet = publish_packet("a/b", b"{}", 1, False, 0x1234, v5=False)
    assert packet == b"\x32\x09\x00\x03a/b\x12\x34{}"
    assert (
        publish_packet("a/b", b"{}", 2, True, 1, v5=True) == b"\x35\x0a\x00\x03a/b\x00\x01\x00{}"
    )


@pytest.mark.parametrize("size", [0, 100, 120, 121, 16_000, 16_380, 2_100_000])
def test_publish_packet_remaining_length_splits_back(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    packet = publish_packet("dlmsd/x/push", payload, 1, False, 7, v5=False)
    packets, used = split_packets(packet + packet[:3])
    assert used == len(packet)
    [(start, body, stop)] = packets
    assert (start, stop) == (0, len(packet))
    assert packet[body:stop] == b"\x00\x0cdlmsd/x/push\x00\x07" + payload


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "x" * 70_000])
def test_publish_packet_refuses_what_a_broker_would(topic: str) -> None:
    with pytest.raises(ValueError, match="invalid topic"):
        publish_packet(topic, b"{}", 1, False, 1, v5=False)


def test_split_packets_keeps_partial_packets() -> None:
    acks = b"\x40\x02\x00\x01\x40\x02\x00\x02"
    assert split_packets(acks + b"\x40") == ([(0, 2, 4), (4, 6, 8)], 8)
    assert split_packets(acks[:3]) == ([], 0)
    long_header = b"\x30\xff\xff"  # the remaining length goes on past the bytes we have
    assert split_packets(long_header) == ([], 0)
    with pytest.raises(PacketError):
        split_packets(b"\x30\xff\xff\xff\xff\x01")
    assert pubrel_packet(0x0102) == b"\x62\x02\x01\x02"


# --- against the broker --------------------------------------------------------------------


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    client = Subscriber(mosquitto.port)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@on_reactor
async def test_qos2_and_a_window_smaller_than_the_batch(
    mosquitto: Mosquitto, subscriber: Subscriber, protocol: str
) -> None:
    options = sink_options(mosquitto.port, protocol=protocol, qos=2, max_inflight=7)
    sink = MqttSink("mqtt", settings(**options))
    try:
        await sink.deliver([record(counter) for counter in range(1, 201)])
        await sink.deliver([record(counter) for counter in range(201, 301)])
        assert sink.published == 300
    finally:
        await sink.close()
    await wait_until(lambda: len(subscriber.counters()) == 300)


@on_reactor
async def test_packet_ids_wrap_past_65535(mosquitto: Mosquitto, subscriber: Subscriber) -> None:
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port)))
    try:
        await wait_until(lambda: sink.connected)
        sink._mid = 0xFFFF - 5  # as after 65,530 messages: ids 65531..65535, then 1..15
        await sink.deliver([record(counter) for counter in range(1, 21)])
        assert sink._mid == 15
        assert sink.published == 20
    finally:
        await sink.close()
    await wait_until(lambda: len(subscriber.counters()) == 20)


@on_reactor
async def test_big_batches_over_tls(mosquitto: Mosquitto, subscriber: Subscriber) -> None:
    # Many TLS records per read and per write, more than the socket takes at once.
    sink = MqttSink("mqtt", settings(**tls_options(mosquitto)))
    padding = "x" * 3000
    try:
        for start in (1, 1001):
            batch = [record(c, padding=padding) for c in range(start, start + 1000)]
            await sink.deliver(batch)
    finally:
        await sink.close()
    await wait_until(lambda: len(subscriber.counters()) == 2000, timeout=20)


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[int]:
    """A mosquitto that lets anonymous clients publish under ``allowed/`` only."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (make test-deps installs it)")
    port = free_port()
    acl = tmp_path / "acl"
    acl.write_text("topic write allowed/#\n")
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"
        f"user {getpass.getuser()}\n"
    )
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _accepts(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@on_reactor
async def test_refused_message_fails_the_batch_and_the_connection_goes_on(
    acl_broker: int,
) -> None:
    # MQTT 5: mosquitto answers a publish its ACL denies with PUBACK "Not authorized".
    options = sink_options(acl_broker, protocol="5", topic="{system_title}/push")
    sink = MqttSink("mqtt", settings(**options))
    try:
        with pytest.raises(MqttError, match="broker refused a message: Not authorized"):
            await sink.deliver([record(counter, title="denied") for counter in range(1, 11)])
        assert sink.health.errors["refused"] == 1
        assert sink.connected
        # The same connection: the refused batch's late PUBACKs settle nothing of this one.
        await sink.deliver([record(counter, title="allowed") for counter in range(1, 11)])
        assert sink.connected
    finally:
        await sink.close()


@on_reactor
async def test_keepalive_pings_pass_through_the_wire(
    mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    # Paho pings every 5 s and needs the PINGRESP the wire hands it within 5 s more;
    # mosquitto drops a client silent for 7.5 s. 11 s idle covers both.
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port, keepalive=5)))
    try:
        await wait_until(lambda: sink.connected)
        await sleep(11)
        assert sink.connected
        assert not sink.health.errors
        await sink.deliver([record(1)])
    finally:
        await sink.close()
    await wait_until(lambda: subscriber.counters() == {("53494D0100000007", 1)})
