"""The MQTT sink's own wire under stress, against a real mosquitto on the real reactor.

The sink writes PUBLISH packets itself and reads their acknowledgements in
bulk (`dlmsd.sinks.mqtt._Wire`). These tests push it where that is hard: a
stopped broker (full socket buffers, EAGAIN / SSLWantWrite mid-write, keep-alive
pings queued behind megabytes), a broker killed mid-batch and restarted, the
sink closed mid-batch, and, through `_Proxy` (a TCP proxy on the reactor that
edits the broker's bytes), acknowledgements split byte by byte, duplicated, for
unknown packet ids, refused with MQTT 5 reason codes, and a connection cut
after some of a batch's PUBACKs. The invariant throughout: a batch fires only
once every one of its messages was acknowledged, and every record reaches the
subscriber at least once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet import protocol
from twisted.internet.defer import Deferred

from dlmsd.service.state import SpoolRecord
from dlmsd.sinks.mqtt import MqttError, MqttSink
from dlmsd.sinks.mqtt_messages import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    pubrel_packet,
    split_packets,
)
from tests.service.test_daemon import wait_until
from tests.sinks.mosquitto import Mosquitto, Subscriber
from tests.sinks.test_mqtt import (
    TITLE,
    on_reactor,
    reactor,
    record,
    settings,
    sink_options,
    sleep,
    tls_options,
)


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    client = Subscriber(mosquitto.port)
    try:
        yield client
    finally:
        client.close()


def records(first: int, count: int, size: int = 0) -> list[SpoolRecord]:
    padding = {"padding": "x" * size} if size else {}
    return [record(counter, **padding) for counter in range(first, first + count)]


def counters(first: int, count: int) -> set[tuple[str, int]]:
    return {(TITLE, counter) for counter in range(first, first + count)}


async def received(subscriber: Subscriber, expected: set[tuple[str, int]]) -> None:
    """Wait until the subscriber got every expected record (at least once)."""
    deadline = time.monotonic() + 15
    while not expected <= subscriber.counters():
        # Polled slowly: counting parses every payload received so far.
        assert time.monotonic() < deadline, (
            f"missing: {sorted(expected - subscriber.counters())[:5]}"
        )
        await sleep(0.2)


def backlog(sink: MqttSink) -> int:
    """Bytes the sink holds because the socket took no more."""
    descriptor = sink._socket
    return len(descriptor.wire.out) if descriptor is not None else 0


def assert_no_writer_left(sink: MqttSink) -> None:
    """Nothing to send: the reactor must not poll the socket for writing (a busy loop)."""
    descriptor = sink._socket
    if descriptor is not None and not descriptor.wire.out:
        assert descriptor not in reactor.getWriters()
        assert not descriptor.writing


def cpu_seconds() -> float:
    return time.process_time()


def stop_broker(broker: Mosquitto) -> int:
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    return broker.process.pid


# --- a stopped broker: full buffers, partial writes, pings behind megabytes ----------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@on_reactor
async def test_stopped_broker_fills_the_buffers_and_the_batch_completes_after(
    mosquitto: Mosquitto, subscriber: Subscriber, tls: bool
) -> None:
    # 600 x 16 KB: more than the kernel's socket buffers take while mosquitto sleeps,
    # so the wire meets EAGAIN (SSLWantWrite with TLS) in the middle of its writes.
    options = tls_options(mosquitto) if tls else sink_options(mosquitto.port)
    sink = MqttSink("mqtt", settings(**options, keepalive=5))
    try:
        await wait_until(lambda: sink.connected)
        pid = stop_broker(mosquitto)
        try:
            delivery = sink.deliver(records(1, 600, size=16_000))
            await wait_until(lambda: backlog(sink) > 0)
            await sleep(0.2)
            before, cpu = backlog(sink), cpu_seconds()
            await sleep(1.0)
            # Blocked: nothing sent, and no busy loop on a socket that takes nothing.
            assert backlog(sink) == before
            assert cpu_seconds() - cpu < 0.3
            assert not delivery.called
        finally:
            os.kill(pid, signal.SIGCONT)
        await delivery
        assert sink.published == 600
        assert_no_writer_left(sink)
    finally:
        await sink.close()
    await received(subscriber, counters(1, 600))


@on_reactor
async def test_keepalive_ping_queued_behind_a_blocked_batch(
    mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    # Paho pings 5 s after CONNECT and drops the connection if the PINGRESP is 5 s
    # late. Its PINGREQ queues in the wire behind megabytes of PUBLISH that a stopped
    # broker does not take; the broker wakes 2.5 s later and the ping goes through.
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port, keepalive=5)))
    try:
        await wait_until(lambda: sink.connected)
        connected = time.monotonic()
        await sink.deliver(records(1, 100, size=8_000))
        await sleep(connected + 3.5 - time.monotonic())
        pid = stop_broker(mosquitto)
        try:
            delivery = sink.deliver(records(101, 500, size=16_000))
            await wait_until(lambda: backlog(sink) > 0)
            await sleep(connected + 6.5 - time.monotonic())  # the ping is due meanwhile
        finally:
            os.kill(pid, signal.SIGCONT)
        await delivery
        await sleep(connected + 11.5 - time.monotonic())  # past a late PINGRESP's deadline
        assert sink.connected
        assert not sink.health.errors
        await sink.deliver(records(601, 10))
    finally:
        await sink.close()
    await received(subscriber, counters(1, 610))


def test_qos2_over_mqtt311_defaults_to_the_window_brokers_take() -> None:
    assert settings(qos=2).max_inflight == 20
    assert settings(qos=2, protocol="5").max_inflight == 1000  # the broker announces its cap
    assert settings(qos=1).max_inflight == 1000
    assert settings(qos=2, max_inflight=500).max_inflight == 500  # a broker configured for it


@on_reactor
async def test_qos2_over_mqtt311_with_default_settings(
    mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    # 3.1.1 has no Receive Maximum: one QoS 2 message over mosquitto's cap (20) and it
    # drops the connection; a batch bigger than the window failed on every retry.
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port, qos=2)))
    try:
        await sink.deliver(records(1, 300))
        assert sink.published == 300
        assert not sink.health.errors
    finally:
        await sink.close()
    await received(subscriber, counters(1, 300))


@on_reactor
async def test_close_during_a_blocked_batch(mosquitto: Mosquitto) -> None:
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port)))
    pid = 0
    try:
        await wait_until(lambda: sink.connected)
        pid = stop_broker(mosquitto)
        delivery = sink.deliver(records(1, 600, size=16_000))
        await wait_until(lambda: backlog(sink) > 0)
        descriptor = sink._socket
        assert descriptor is not None
        started = time.monotonic()
        await sink.close()
        assert time.monotonic() - started < 0.5  # never blocks on the full socket
        with pytest.raises(MqttError, match="closed"):
            await delivery
        assert descriptor not in reactor.getWriters()
        assert descriptor not in reactor.getReaders()
        assert descriptor.wire.sock.fileno() == -1
        assert sink.published == 0
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        await sink.close()


@on_reactor
async def test_broker_killed_mid_batch_and_restarted(
    mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port, connect_wait=3.0)))
    batch = records(1, 400, size=16_000)
    try:
        await wait_until(lambda: sink.connected)
        pid = stop_broker(mosquitto)
        delivery = sink.deliver(batch)
        await wait_until(lambda: backlog(sink) > 0)
        subscriber.subscribed.clear()
        os.kill(pid, signal.SIGKILL)  # no PUBACK of this batch ever left the broker
        with pytest.raises(MqttError):
            await delivery
        assert sink.published == 0
        mosquitto.process = None
        mosquitto.start()
        await wait_until(subscriber.subscribed.is_set, timeout=10)
        await _deliver_until_done(sink, batch)  # what the pump does
        assert sink.published == 400
    finally:
        await sink.close()
    await received(subscriber, counters(1, 400))


async def _deliver_until_done(sink: MqttSink, batch: list[SpoolRecord], tries: int = 20) -> None:
    for _ in range(tries):
        try:
            await sink.deliver(batch)
            return
        except MqttError:
            await sleep(0.1)
    raise AssertionError(f"not delivered after {tries} tries: {sink.health.last_error}")


# --- through a proxy that edits the broker's bytes ---------------------------------------

Edit = Callable[["_Link", bytes], list[bytes]]


class _Link:
    """One proxied connection: the sink's side and the broker's side."""

    def __init__(self, proxy: _Proxy, client: _ClientSide) -> None:
        self.proxy = proxy
        self.client = client
        self.broker: _BrokerSide | None = None
        self.to_broker = bytearray()  # before the broker side is connected
        self.from_client = bytearray()
        self.from_broker = bytearray()
        self.published: dict[int, bytes] = {}  # packet id -> PUBLISH body, as sent
        self.acked: set[bytes] = set()  # PUBLISH bodies whose ack went to the sink
        self.closed = False

    def client_data(self, data: bytes) -> None:
        self.from_client += data
        packets, used = split_packets(self.from_client)
        out = bytearray()
        for start, body, stop in packets:
            packet = bytes(self.from_client[start:stop])
            kind = packet[0] & 0xF0
            if kind == PUBLISH:
                self._note_publish(packet, body - start)
            out += b"".join(self.proxy.edit_to_broker(self, packet))
        del self.from_client[:used]
        if self.closed:
            return
        if self.broker is None:
            self.to_broker += out
        else:
            _transport(self.broker).write(bytes(out))

    def _note_publish(self, packet: bytes, body: int) -> None:
        topic_length = int.from_bytes(packet[body : body + 2], "big")
        at = body + 2 + topic_length
        self.published[int.from_bytes(packet[at : at + 2], "big")] = packet[at + 2 :]

    def broker_data(self, data: bytes) -> None:
        self.from_broker += data
        packets, used = split_packets(self.from_broker)
        for start, _, stop in packets:
            packet = bytes(self.from_broker[start:stop])
            for piece in self.proxy.edit_to_client(self, packet):
                if self.closed:
                    return
                self.proxy.send_to_client(self, piece)
        del self.from_broker[:used]

    def note_ack(self, packet: bytes) -> None:
        kind = packet[0] & 0xF0
        if kind in (PUBACK, PUBCOMP) and len(packet) >= 4:
            body = self.published.get(int.from_bytes(packet[2:4], "big"))
            refused = len(packet) > 4 and packet[4] >= 0x80
            if body is not None and not refused:
                self.acked.add(body)

    def cut(self) -> None:
        """Drop both sides, as a crashed broker would (the sink gets what was written)."""
        self.closed = True
        _transport(self.client).loseConnection()
        if self.broker is not None:
            _transport(self.broker).abortConnection()


def _transport(side: protocol.Protocol) -> Any:
    """The side's TCP transport (zope interfaces do not type-check)."""
    return side.transport


class _ClientSide(protocol.Protocol):
    def __init__(self, proxy: _Proxy) -> None:
        self.proxy = proxy
        self.link: _Link | None = None

    def connectionMade(self) -> None:
        self.link = _Link(self.proxy, self)
        self.proxy.links.append(self.link)
        link = self.link
        factory = protocol.ClientFactory.forProtocol(lambda: _BrokerSide(link))
        reactor.connectTCP("127.0.0.1", self.proxy.broker_port, factory)

    def dataReceived(self, data: bytes) -> None:
        assert self.link is not None
        self.link.client_data(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.link is not None and self.link.broker is not None:
            _transport(self.link.broker).loseConnection()


class _BrokerSide(protocol.Protocol):
    def __init__(self, link: _Link) -> None:
        self.link = link

    def connectionMade(self) -> None:
        self.link.broker = self
        if self.link.closed:
            _transport(self).abortConnection()
            return
        _transport(self).write(bytes(self.link.to_broker))
        self.link.to_broker.clear()

    def dataReceived(self, data: bytes) -> None:
        self.link.broker_data(data)

    def connectionLost(self, reason: Any = None) -> None:
        _transport(self.link.client).loseConnection()


class _Proxy:
    """Forwards the sink's connections to mosquitto; tests set the edit hooks."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.links: list[_Link] = []
        self.edit_to_client: Edit = lambda link, packet: [packet]
        self.edit_to_broker: Edit = lambda link, packet: [packet]
        self.byte_by_byte = False  # each byte to the sink in its own write, a tick apart
        self._queue: list[tuple[_Link, bytes]] = []
        self._draining = False
        factory = protocol.Factory.forProtocol(lambda: _ClientSide(self))
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    @property
    def number(self) -> int:
        return int(self.port.getHost().port)

    def send_to_client(self, link: _Link, data: bytes) -> None:
        if not self.byte_by_byte:
            link.note_ack(data)
            _transport(link.client).write(data)
            return
        self._queue.append((link, data))
        if not self._draining:
            self._draining = True
            reactor.callLater(0, self._drain)

    def _drain(self) -> None:
        # One byte per reactor turn (and a sleep): the sink sees acks split across reads.
        if not self._queue:
            self._draining = False
            return
        link, data = self._queue[0]
        if not link.closed:
            _transport(link.client).write(data[:1])
        if len(data) > 1:
            self._queue[0] = (link, data[1:])
        else:
            self._queue.pop(0)
            link.note_ack(data)  # the sink can only have it once its last byte left
        reactor.callLater(0.0005, self._drain)

    def close(self) -> Deferred[None]:
        for link in self.links:
            link.cut()
        return self.port.stopListening()  # type: ignore[no-any-return]


@pytest.fixture
def proxy(mosquitto: Mosquitto) -> Iterator[_Proxy]:
    through = _Proxy(mosquitto.port)
    try:
        yield through
    finally:
        through.close()


def proxied(proxy: _Proxy, **extra: object) -> MqttSink:
    return MqttSink("mqtt", settings(**sink_options(proxy.number, **extra)))


def ack_id(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


@pytest.mark.parametrize("qos", [1, 2])
@on_reactor
async def test_acks_split_byte_by_byte(proxy: _Proxy, subscriber: Subscriber, qos: int) -> None:
    proxy.byte_by_byte = True
    sink = proxied(proxy, qos=qos, max_inflight=20)
    try:
        await sink.deliver(records(1, 60))
        assert sink.published == 60
        assert_no_writer_left(sink)
    finally:
        await sink.close()
    await received(subscriber, counters(1, 60))


@on_reactor
async def test_duplicate_acks_and_acks_for_unknown_ids(
    proxy: _Proxy, subscriber: Subscriber
) -> None:
    def edit(link: _Link, packet: bytes) -> list[bytes]:
        if packet[0] & 0xF0 != PUBACK:
            return [packet]
        stranger = (ack_id(packet) + 30_000) % 0xFFFF + 1  # never in flight here
        return [packet, packet, b"\x40\x02" + stranger.to_bytes(2, "big")]

    proxy.edit_to_client = edit
    sink = proxied(proxy, max_inflight=50)
    try:
        for first in (1, 201):
            await sink.deliver(records(first, 200))
        assert sink.published == 400
        assert sink.connected
    finally:
        await sink.close()
    await received(subscriber, counters(1, 400))


@pytest.mark.parametrize("qos", [1, 2])
@on_reactor
async def test_connection_cut_after_some_acks_acknowledges_nothing_early(
    proxy: _Proxy, subscriber: Subscriber, qos: int
) -> None:
    forwarded = 0

    def edit(link: _Link, packet: bytes) -> list[bytes]:
        nonlocal forwarded
        if packet[0] & 0xF0 in (PUBACK, PUBCOMP) and len(proxy.links) == 1:
            forwarded += 1
            if forwarded > 50:
                return []  # the broker died after its 50th acknowledgement
            if forwarded == 50:
                reactor.callLater(0, link.cut)
        return [packet]

    proxy.edit_to_client = edit
    sink = proxied(proxy, qos=qos, max_inflight=100 if qos == 1 else 20)
    batch = records(1, 300)
    try:
        with pytest.raises(MqttError, match="lost"):
            await sink.deliver(batch)
        # Counted: exactly what the broker acknowledged, and the batch failed.
        assert sink.published == len(proxy.links[0].acked) == 50
        await _deliver_until_done(sink, batch)
        link = proxy.links[-1]
        assert {r.utf8 for r in batch} <= link.acked  # success: every message acked
    finally:
        await sink.close()
    await received(subscriber, counters(1, 300))


@on_reactor
async def test_mqtt5_refusal_codes_in_puback_and_pubrec(
    proxy: _Proxy, subscriber: Subscriber
) -> None:
    # Quota exceeded (0x97) for one PUBACK, Not authorized (0x87) for one PUBREC.
    def edit(link: _Link, packet: bytes) -> list[bytes]:
        kind = packet[0] & 0xF0
        if kind in (PUBACK, PUBREC) and ack_id(packet) == 7:
            code = 0x97 if kind == PUBACK else 0x87
            if kind == PUBREC and link.broker is not None:
                # The broker accepted it, and holds it until a PUBREL the sink will not
                # send: release it here, or it takes one of the broker's 20 slots.
                _transport(link.broker).write(pubrel_packet(7))
            return [bytes((packet[0], 3)) + packet[2:4] + bytes((code,))]
        return [packet]

    for qos, reason in ((1, "Quota exceeded"), (2, "Not authorized")):
        proxy.edit_to_client = edit
        sink = proxied(proxy, protocol="5", qos=qos, max_inflight=20)
        try:
            with pytest.raises(MqttError, match=f"refused a message: {reason}"):
                await sink.deliver(records(1, 40))
            assert sink.connected  # the connection goes on; the next batch is clean
            proxy.edit_to_client = lambda link, packet: [packet]
            await sink.deliver(records(101, 40))
            # Counted: the acks before the refusal (QoS 2: those whose PUBCOMP came first).
            assert 40 <= sink.published <= 46 and (qos == 2 or sink.published == 46)
        finally:
            await sink.close()
    await received(subscriber, counters(101, 40))


@on_reactor
async def test_packet_ids_wrap_around_ids_still_in_flight(
    proxy: _Proxy, subscriber: Subscriber
) -> None:
    # Ids 1..3 stay in flight (their PUBACKs held back); the ids wrap past 65535
    # and must skip them, and their late PUBACKs settle nothing of the batch.
    held: list[bytes] = []

    def edit(link: _Link, packet: bytes) -> list[bytes]:
        if packet[0] & 0xF0 == PUBACK and ack_id(packet) in (1, 2, 3) and not held_done:
            held.append(packet)
            return []
        return [packet]

    held_done = False
    proxy.edit_to_client = edit
    sink = proxied(proxy, max_inflight=10)
    try:
        first = sink.deliver(records(1, 3))
        await wait_until(lambda: len(held) == 3)
        first.addErrback(lambda _: None)
        # The first batch is stuck on its ids 1..3; fail it, as a refusal would.
        sink._fail_batch(MqttError("test"))
        sink._mid = 0xFFFF - 2
        second = sink.deliver(records(11, 10))
        await wait_until(lambda: sink._mid == 11)
        ids = {mid for mid in proxy.links[0].published if mid > 3}
        assert ids == {65534, 65535, *range(4, 12)}
        held_done = True
        for packet in held:
            proxy.send_to_client(proxy.links[0], packet)
        await second
        assert sink.published == 10
    finally:
        await sink.close()
    await received(subscriber, counters(11, 10))


@on_reactor
async def test_qos2_session_resumed_after_a_cut_between_pubrec_and_pubrel(
    proxy: _Proxy, subscriber: Subscriber
) -> None:
    # The broker holds the batch's first messages as "PUBREC sent, PUBREL awaited" in
    # the persistent session; the sink reconnects with the session and sends again.
    def cut_at_pubrel(link: _Link, packet: bytes) -> list[bytes]:
        if packet[0] & 0xF0 == PUBREL and len(proxy.links) == 1:
            reactor.callLater(0, link.cut)
            return []
        return [packet]

    proxy.edit_to_broker = cut_at_pubrel
    sink = proxied(proxy, qos=2, clean_session=False, max_inflight=5)
    try:
        with pytest.raises(MqttError):
            await sink.deliver(records(1, 20))
        assert sink.published == 0
        await _deliver_until_done(sink, records(1, 20))
        # A later batch goes on with the ids, past those of the first connection.
        await sink.deliver(records(21, 20))
        assert sink.published == 40
    finally:
        await sink.close()
    await received(subscriber, counters(1, 40))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@on_reactor
async def test_qos2_session_resumed_releases_the_pubrecd_ids_first_and_never_reuses_them(
    proxy: _Proxy, subscriber: Subscriber, protocol: str
) -> None:
    # The sink gets the PUBREC of ids 1..3 (not 4, 5), its PUBRELs never reach the
    # broker, and the connection is cut. The broker holds 1..5 by packet id in the
    # session: on the next connection the sink must release 1..3 before publishing
    # anything, and its new messages must not take those ids (or 4, 5: a broker may
    # take a new message under a held id for the held one's duplicate and drop it).
    sent: list[tuple[int, int, int]] = []  # (link number, packet type, packet id)

    def to_broker(link: _Link, packet: bytes) -> list[bytes]:
        number = proxy.links.index(link)
        kind = packet[0] & 0xF0
        if kind == PUBLISH:
            sent.append((number, kind, _publish_id(packet)))
        elif kind == PUBREL:
            sent.append((number, kind, ack_id(packet)))
            if number == 0:
                if sum(1 for n, k, _ in sent if n == 0 and k == PUBREL) == 3:
                    reactor.callLater(0, link.cut)
                return []
        return [packet]

    def to_client(link: _Link, packet: bytes) -> list[bytes]:
        if packet[0] & 0xF0 == PUBREC and proxy.links.index(link) == 0:
            return [packet] if ack_id(packet) <= 3 else []
        return [packet]

    proxy.edit_to_broker = to_broker
    proxy.edit_to_client = to_client
    extra: dict[str, object] = {"session_expiry": 600} if protocol == "5" else {}
    sink = proxied(proxy, protocol=protocol, qos=2, clean_session=False, max_inflight=5, **extra)
    try:
        with pytest.raises(MqttError):
            await sink.deliver(records(1, 20))
        assert {mid for n, k, mid in sent if n == 0 and k == PUBLISH} == {1, 2, 3, 4, 5}
        assert sink.published == 0
        await _deliver_until_done(sink, records(1, 20))
        second = [(kind, mid) for n, kind, mid in sent if n == 1]
        assert second[:3] == [(PUBREL, 1), (PUBREL, 2), (PUBREL, 3)]
        new_ids = [mid for kind, mid in second if kind == PUBLISH]
        assert new_ids and min(new_ids) > 5
        assert not sink._released  # settled by the broker's PUBCOMPs
    finally:
        await sink.close()
    await received(subscriber, counters(1, 20))


def _publish_id(packet: bytes) -> int:
    body = 2
    while packet[body - 1] & 0x80:
        body += 1
    topic_length = int.from_bytes(packet[body : body + 2], "big")
    at = body + 2 + topic_length
    return int.from_bytes(packet[at : at + 2], "big")


@on_reactor
async def test_ack_timeout_when_unanswered_ids_of_a_failed_batch_hold_the_window(
    proxy: _Proxy, subscriber: Subscriber
) -> None:
    # A broker refuses the first message and never answers the other nine: they hold
    # nine of the window's ten slots, and the next batch sends one message at a time.
    # It must still time out and start over on a fresh connection, not wait forever.
    def edit(link: _Link, packet: bytes) -> list[bytes]:
        if packet[0] & 0xF0 != PUBACK or len(proxy.links) > 1:
            return [packet]
        if ack_id(packet) == 1:
            return [b"\x40\x03\x00\x01\x97"]  # Quota exceeded
        return []

    proxy.edit_to_client = edit
    sink = proxied(proxy, protocol="5", max_inflight=10, ack_timeout=0.5)
    try:
        with pytest.raises(MqttError, match="Quota exceeded"):
            await sink.deliver(records(1, 10))
        stuck = sink.deliver(records(11, 5))
        timeout = reactor.callLater(5, stuck.cancel)
        with pytest.raises(MqttError, match="no acknowledgement"):
            await stuck
        timeout.cancel()
        await _deliver_until_done(sink, records(11, 5))
    finally:
        await sink.close()
    await received(subscriber, counters(11, 5))
