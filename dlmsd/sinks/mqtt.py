"""The MQTT sink: paho-mqtt 2.x driven by the Twisted reactor, QoS 1, acked on PUBACK.

How paho runs here: no ``loop_start()`` thread. Paho opens the session
(TCP, TLS, CONNECT with the credentials, CONNACK), keeps it alive (PINGREQ)
and closes it; the sink moves the messages itself. The one blocking step,
opening the connection (DNS, TCP connect, TLS handshake, bounded by
`connect_timeout`), runs in the reactor's thread pool while nothing else
touches that client; every other call to paho happens on the reactor thread.
Once connected, paho's socket is swapped for a `_Wire`, paho's own notion of a
socket-like object, registered with the reactor (`_PahoSocket`). The sink reads
the real socket in bulk, takes the PUBACK/PUBREC/PUBCOMP of its own PUBLISH
packets (written with `publish_packet`, one send for many) and hands every
other packet to paho through the wire (``loop_read()``); paho's writes
(``loop_write()``) land in the same output buffer. A LoopingCall runs
``loop_misc()`` (keep-alive pings, their timeouts). Why not paho's
``publish()``: it cost ~40 µs of Python per message, most of the sink's time.
Paho runs its callbacks holding a lock that most of its calls take again, so
the callbacks only queue an event; `_process` handles the queue after each
call into paho returns.

Delivery: `deliver()` publishes the batch's messages at QoS 1 (or 2), at most
`max_inflight` unacknowledged at a time on the connection, and fires only when
every message was acknowledged (PUBACK/PUBCOMP). A lost connection, a refused
PUBACK (MQTT 5 reason code >= 0x80) or no acknowledgement for `ack_timeout`
seconds fails the batch; the pump keeps it in the spool and delivers it again
(duplicates are possible, loss is not: consumers drop duplicates by
``system_title`` + ``invocation_counter``). Each connection gets a fresh paho
client and wire, so nothing half-sent by a previous connection is replayed
behind the spool's back. One exception, QoS 2 with a persistent session: the
broker keeps the messages it PUBREC'd by packet id, so the ids run on across
connections (a new message never takes an id the broker may still hold) and,
when the CONNACK says the session is present, the PUBREL of every message that
got its PUBREC but no PUBCOMP is sent again before any new PUBLISH (MQTT 3.1.1
and 5, §4.4). Their records failed with their batch and are redelivered anyway.

Messages (built by `dlmsd.sinks.mqtt_messages`): ``mode = "push"`` sends each
record as one JSON message on `topic`; ``"obis"`` one message per reading on
`obis_topic` (value, unit, time, ids); ``"both"`` does both. With
``homeassistant = true`` a retained Home Assistant discovery config is
published before the first reading of each sensor (docs/homeassistant.md),
and all of them again on every new connection (a broker restarted without
persistence has lost them) and whenever Home Assistant publishes ``online``
on ``<discovery_prefix>/status``. With an availability topic (the default
with ``homeassistant``), the connection carries a retained last will
``offline`` there, publishes a retained ``online`` once connected and
``offline`` before a clean DISCONNECT. These extra messages go at QoS 0,
outside the batches: the next connection sends them again if this one drops.

Errors (unreachable broker, refused CONNECT, TLS or certificate problems, an
unreadable password file) are logged with the reason, counted in
`health.errors` (``dlmsd_sink_errors_total``) and retried with backoff; the
daemon keeps receiving and spooling meanwhile. The password is read from a
file or the environment at each connect and never logged.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from dlmsd.service.quarantine import LogRateLimiter
from dlmsd.sinks.mqtt_messages import (
    ACKNOWLEDGEMENTS,
    PROTOCOLS,
    PUBREC,
    Message,
    MessageBuilder,
    MqttSettings,
    PacketError,
    TlsSettings,
    TlsSetupError,
    describe_error,
    homeassistant_classes,
    obis_slug,
    parse_mqtt_settings,
    publish_packet,
    publish_packet_qos0,
    pubrel_packet,
    split_packets,
    subscribe_packet,
)
from dlmsd.sinks.options import Backoff, SecretError
from dlmsd.sinks.spool import SinkHealth

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_READ_SIZE = 64 * 1024  # one read takes the PUBACKs of a whole window (4 bytes each)
_WRITE_CHUNK = 32 * 1024  # a batch goes out in pieces: the broker starts on the first


class MqttError(Exception):
    """A batch could not be delivered (not connected, connection lost, refused, timeout)."""


# --- the reactor-driven paho client --------------------------------------------------


class _Wire:
    """The connection's socket, buffered; paho gets it in place of the socket.

    For paho it is a socket (its ``SocketLike``: recv, send, close, fileno,
    setblocking): `recv` serves the whole packets the sink set aside for paho,
    then reports the end of the connection the sink saw; `send` appends to the
    output buffer. The sink reads the socket with `read`, splits `unread` into
    packets and writes `out` with `write`, many packets per system call.
    """

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        # Cached: a closed socket reports -1, and the reactor needs the number to unregister.
        self._fileno: int = sock.fileno()
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self.unread = bytearray()  # read, not yet split into packets
        self.for_paho = bytearray()  # whole packets paho reads next
        self.out = bytearray()  # to send
        self.ended: OSError | None = None  # how the connection ended, once paho's packets are read
        self.read_wants_write = False  # TLS: a read waits for the socket to take a write

    # --- paho's side ---

    def recv(self, size: int) -> bytes:
        data = self.for_paho
        if data:
            chunk = bytes(data[:size])
            del data[:size]
            return chunk
        if self.ended is None:
            raise BlockingIOError
        if isinstance(self.ended, _EndOfStream):
            return b""
        raise self.ended

    def send(self, data: bytes | bytearray) -> int:
        self.out += data
        return len(data)

    def close(self) -> None:
        # What paho sends last (DISCONNECT) is still buffered: send what the socket takes.
        with contextlib.suppress(OSError, ValueError):
            self.write()
        self.sock.close()

    def fileno(self) -> int:
        return self._fileno

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def pending(self) -> int:
        return len(self.for_paho)

    # --- the sink's side ---

    def read(self) -> None:
        """Append what the socket has to `unread`; an end or error goes to `ended`."""
        sock, buffer = self.sock, self._buffer
        while True:
            try:
                size = sock.recv_into(buffer)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                self.read_wants_write = True
                return
            except OSError as error:
                self.end(error)
                return
            if not size:
                self.end(_EndOfStream("connection closed by the broker"))
                return
            self.unread += buffer[:size]
            # TLS may hold decrypted bytes the kernel no longer signals: read them too.
            if not (self.tls and sock.pending()):
                return

    def write(self) -> None:
        """Send as much of `out` as the socket takes now; raises OSError."""
        out = self.out
        while out:
            try:
                # A TLS write refused (want write/read) is retried with the same bytes
                # and at least the same length: `out` only grows at its end meanwhile.
                sent = self.sock.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            del out[:sent]

    def end(self, error: OSError) -> None:
        if self.ended is None:
            self.ended = error


class _EndOfStream(OSError):
    """The broker closed the connection (paho reads it as an empty recv())."""


@implementer(IReadDescriptor, IWriteDescriptor)
class _PahoSocket:
    """The wire as the reactor sees it; events go back to the sink."""

    def __init__(self, sink: MqttSink, client: paho.Client, wire: _Wire) -> None:
        self.sink = sink
        self.client = client
        self.wire = wire
        self.writing = False

    def fileno(self) -> int:
        return self.wire.fileno()

    def doRead(self) -> None:
        self.sink._readable(self)

    def doWrite(self) -> None:
        self.sink._writable(self)

    def connectionLost(self, reason: Failure) -> None:
        self.sink._descriptor_lost(self)

    def logPrefix(self) -> str:
        return f"mqtt-{self.sink.name}"


class _Batch:
    """One deliver() call in progress."""

    __slots__ = ("announcing", "deferred", "last_progress", "messages", "next", "pending", "wait")

    def __init__(self, messages: list[Message], announcing: set[str], now: float) -> None:
        self.messages = messages
        self.announcing = announcing
        self.deferred: Deferred[None] = Deferred()
        self.next = 0
        self.pending: set[int] = set()
        self.last_progress = now
        self.wait: Any = None  # the connect_wait timer while not connected


class MqttSink:
    """Publishes records to an MQTT broker; see the module docstring."""

    log = Logger()

    def __init__(self, name: str, settings: MqttSettings, *, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.name = name
        self.settings = settings
        self.health = SinkHealth(connected=False)
        self.published = 0
        self.republished = 0  # discovery configs sent again (reconnects, Home Assistant online)
        self._reactor = reactor
        self._builder = MessageBuilder(name, settings)
        self._backoff = Backoff(settings.reconnect_min, settings.reconnect_max)
        self._log_limit = LogRateLimiter(60.0)
        # An outage is one line here (lost, or the first failed connect), not one a minute:
        # the spool pump says "down" and "back" for every sink type.
        self._outage_logged = False
        self._state = "idle"  # idle, connecting, handshake, connected, closed
        self._client: Any = None
        self._socket: _PahoSocket | None = None
        self._window = settings.max_inflight
        # The connection's unacknowledged packet ids (any batch) and the last one given.
        self._in_flight: set[int] = set()
        self._mid = 0
        # QoS 2 ids PUBREL'd and not yet PUBCOMP'd; re-released when a session resumes.
        self._released: set[int] = set()
        self._retry: Any = None
        self._connack_timer: Any = None
        self._batch: _Batch | None = None
        self._misc = LoopingCall(self._loop_misc)
        self._events: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._misc.clock = reactor
        # Set by the spool pump: called on CONNACK, so a pump backing off retries at once.
        self.on_ready: Callable[[], None] | None = None
        reactor.callWhenRunning(self._connect)

    @property
    def connected(self) -> bool:
        """True between CONNACK and the loss of the connection."""
        return self._state == "connected"

    # --- connecting ----------------------------------------------------------------

    def _new_client(self) -> Any:
        settings = self.settings
        v5 = settings.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=None if v5 else settings.clean_session,
            protocol=PROTOCOLS[settings.protocol],
            reconnect_on_failure=False,
        )
        client.connect_timeout = settings.connect_timeout
        if settings.username is not None:
            password = settings.password.read() if settings.password is not None else None
            client.username_pw_set(settings.username, password)
        if settings.tls is not None:
            client.tls_set_context(settings.tls.context())
        if settings.availability_topic is not None:
            client.will_set(settings.availability_topic, "offline", qos=1, retain=True)
        client.on_connect = self._queue_connect
        client.on_disconnect = self._queue_disconnect
        client.on_message = self._queue_message
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _connect(self) -> None:
        self._retry = None
        if self._state != "idle":
            return
        try:
            client = self._new_client()
        except SecretError as error:
            self._failed("credentials", str(error))
            return
        except TlsSetupError as error:
            self._failed("tls", f"cannot set up TLS: {error}")
            return
        self._client = client
        self._state = "connecting"
        if not self._misc.running:
            self._misc.start(min(1.0, self.settings.keepalive / 4), now=False)
        d = deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._open_connection, client
        )
        d.addCallbacks(
            self._connection_opened,
            self._connection_failed,
            callbackArgs=(client,),
            errbackArgs=(client,),
        )

    def _open_connection(self, client: Any) -> None:
        """In a pool thread: DNS, TCP connect, TLS handshake, CONNECT queued (not sent)."""
        settings = self.settings
        properties = None
        if settings.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = settings.session_expiry
            clean_start: Any = settings.clean_session
        else:
            clean_start = paho.MQTT_CLEAN_START_FIRST_ONLY
        client.connect(
            settings.host,
            settings.port,
            settings.keepalive,
            clean_start=clean_start,
            properties=properties,
        )

    def _connection_opened(self, _: object, client: Any) -> None:
        if client is not self._client or self._state != "connecting":
            _abandon(client)  # closed while the thread was connecting
            return
        sock = client.socket()
        if sock is not None:
            # Many small PUBLISH packets: Nagle would hold them back waiting for ACKs.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock is None:
            failure = Failure(MqttError("no socket after connect"))  # type: ignore[no-untyped-call]
            self._connection_failed(failure, client)
            return
        wire = _Wire(sock)
        # Paho's own hook for socket-like objects (its websocket transport uses it).
        client._sock = wire
        self._socket = _PahoSocket(self, client, wire)
        self._reactor.addReader(self._socket)
        self._state = "handshake"
        self._connack_timer = self._reactor.callLater(
            self.settings.connect_timeout, self._connack_missing, client
        )
        self._flush(self._socket)

    def _connection_failed(self, failure: Failure, client: Any) -> None:
        if client is not self._client:
            return
        self._client = None
        _abandon(client)
        if self._state == "closed":
            return
        self._state = "idle"
        error: BaseException = failure.value or MqttError("connect failed")
        if isinstance(error, ssl.SSLCertVerificationError):
            kind, text = "tls", f"TLS certificate not accepted: {error.verify_message}"
        elif isinstance(error, ssl.SSLError | ssl.CertificateError):
            kind, text = "tls", f"TLS handshake failed: {describe_error(error)}"
        elif isinstance(error, socket.gaierror):
            kind, text = "connect", f"cannot resolve {self.settings.host}: {error.strerror}"
        else:
            kind, text = "connect", f"cannot connect: {describe_error(error)}"
        self._failed(kind, text)

    def _connack_missing(self, client: Any) -> None:
        self._connack_timer = None
        if client is self._client and self._state == "handshake":
            self._drop(client)
            self._failed("connect", "no CONNACK from the broker within connect_timeout")

    # Paho's callbacks: queue only, never call back into paho from here.

    def _queue_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._events.append((self._on_connect, (client, flags, reason, properties)))

    def _queue_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._events.append((self._on_disconnect, (client, reason)))

    def _queue_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._events.append((self._on_message, (client, message.topic, bytes(message.payload))))

    def _process(self) -> None:
        """Handle the events paho's callbacks queued (outside paho's callback lock)."""
        events = self._events
        while events:
            handler, arguments = events.pop(0) if len(events) > 1 else events.pop()
            handler(*arguments)

    def _on_connect(self, client: Any, flags: Any, reason: Any, properties: Any) -> None:
        if client is not self._client or self._state != "handshake":
            return
        self._cancel_connack_timer()
        if reason.is_failure:
            self._drop(client)
            value = int(reason.value)
            # 4/5 (3.1.1) and 0x86/0x87 (5): bad user name/password, not authorised.
            kind = "credentials" if value in (4, 5, 0x86, 0x87) else "refused"
            self._failed(kind, f"broker refused the connection: {reason}")
            return
        self._state = "connected"
        self._window = self.settings.max_inflight
        session_present = bool(getattr(flags, "session_present", False))
        if session_present:
            # The broker may hold the last connection's ids: keep counting past them.
            self._in_flight = set(self._released)
        else:
            self._released.clear()
            self._in_flight = set()
            self._mid = 0
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if isinstance(receive_maximum, int) and receive_maximum > 0:
            # The broker's limit of unacknowledged QoS>0 messages (MQTT 5); paho ignores it.
            self._window = min(self._window, receive_maximum)
        self._backoff.reset()
        self.health.connected = True
        self._outage_logged = False
        self.log.info(
            "sink {sink}: connected to {url} (MQTT {protocol}, session present: {present})",
            sink=self.name,
            url=self.settings.url,
            protocol=self.settings.protocol,
            present=session_present,
        )
        descriptor = self._socket
        if self._released and descriptor is not None:
            # Before any new PUBLISH (§4.4); the PUBCOMPs settle them like any other.
            for mid in sorted(self._released):
                descriptor.wire.out += pubrel_packet(mid)
        if descriptor is not None:
            self._announce(descriptor, subscribe=True)
        batch = self._batch
        if batch is not None:
            self._start(batch)
        elif descriptor is not None:
            self._write(descriptor)
        if self.on_ready is not None:
            self.on_ready()

    def _announce(self, descriptor: _PahoSocket, *, subscribe: bool) -> None:
        """On a new connection: availability ``online``, the subscription to Home
        Assistant's status, and every discovery config published so far (a broker
        restarted without persistence has lost them; QoS 0, see the module docstring)."""
        settings = self.settings
        v5 = settings.protocol == "5"
        out = descriptor.wire.out
        if settings.availability_topic is not None:
            out += publish_packet_qos0(settings.availability_topic, b"online", True, v5)
        if settings.homeassistant and subscribe:
            # A packet id of the sink's own counter: the next PUBLISH ids run past it.
            self._mid = self._mid % 0xFFFF + 1
            while self._mid in self._in_flight:
                self._mid = self._mid % 0xFFFF + 1
            out += subscribe_packet(settings.status_topic, self._mid, v5)
        for message in list(self._builder.discovery.values()):
            out += publish_packet_qos0(message.topic, message.payload, True, v5)
        self.republished += len(self._builder.discovery)

    def _on_message(self, client: Any, topic: str, payload: bytes) -> None:
        descriptor = self._socket
        if (
            client is self._client
            and self._state == "connected"
            and descriptor is not None
            and topic == self.settings.status_topic
            and payload.strip() == b"online"
        ):
            # Home Assistant (re)started: it wants the discovery configs again.
            self.log.info("sink {sink}: Home Assistant is online", sink=self.name)
            self._announce(descriptor, subscribe=False)
            self._write(descriptor)

    def _on_disconnect(self, client: Any, reason: Any) -> None:
        if client is not self._client or self._state in ("closed", "idle"):
            return
        self._lost(client, f"connection to {self.settings.url} lost ({reason})")

    def _lost(self, client: Any, text: str) -> None:
        was_connected = self._state == "connected"
        self._drop(client)
        self._fail_batch(MqttError(text), only_started=True)
        if was_connected:
            self._outage_logged = True
            self.log.warn("sink {sink}: {error}; reconnecting", sink=self.name, error=text)
            self.health.error("disconnected", text)
            self._schedule_reconnect(0.0)
        else:
            self._failed("connect", text)

    def _drop(self, client: Any) -> None:
        """Forget this connection: unregister and close its socket."""
        self._cancel_connack_timer()
        self._remove_socket()
        self._client = None
        _abandon(client)
        self.health.connected = False
        if self._state != "closed":
            self._state = "idle"

    def _failed(self, kind: str, text: str) -> None:
        """A connection attempt failed: count, log (rate-limited), retry later."""
        self.health.error(kind, text)
        self.health.connected = False
        delay = self._backoff.next()
        if not self._outage_logged and self._log_limit.should_log(
            f"{kind}|{text}".encode(), self._reactor.seconds()
        ):
            self._outage_logged = True
            self.log.error(
                "sink {sink}: {url}: {error}; retrying in {delay:.1f}s (pushes stay spooled)",
                sink=self.name,
                url=self.settings.url,
                error=text,
                kind=kind,
                delay=delay,
            )
        self._schedule_reconnect(delay)

    def _schedule_reconnect(self, delay: float) -> None:
        if self._state == "closed" or (self._retry is not None and self._retry.active()):
            return
        self._retry = self._reactor.callLater(delay, self._connect)

    def _cancel_connack_timer(self) -> None:
        if self._connack_timer is not None and self._connack_timer.active():
            self._connack_timer.cancel()
        self._connack_timer = None

    # --- the reactor side of paho's socket -------------------------------------------

    def _readable(self, descriptor: _PahoSocket) -> None:
        wire = descriptor.wire
        wire.read()
        if _QUICKACK is not None:
            # Acknowledge at once: a broker that leaves Nagle on holds its last
            # PUBACKs until our (delayed, up to 40 ms) ACK, once per batch.
            with contextlib.suppress(OSError):
                wire.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        self._take_packets(descriptor)
        self._feed_paho(descriptor)
        batch = self._batch
        if batch is not None and self._state == "connected" and self._socket is descriptor:
            if batch.next < len(batch.messages):
                self._publish_more(batch)
            elif not batch.pending:
                self._finish(batch)
        self._write(descriptor)

    def _take_packets(self, descriptor: _PahoSocket) -> None:
        """Settle the acknowledgements read; set the other packets aside for paho."""
        wire = descriptor.wire
        data = wire.unread
        try:
            packets, used = split_packets(data)
        except PacketError as error:
            wire.end(ConnectionError(f"protocol error: {error}"))
            return
        if not packets:
            return
        v5 = self.settings.protocol == "5"
        connected = self._state == "connected"
        in_flight, released = self._in_flight, self._released
        batch = self._batch
        pending = batch.pending if batch is not None else set()
        acknowledged = 0
        for start, body, stop in packets:
            kind = data[start] & 0xF0
            if not (connected and kind in ACKNOWLEDGEMENTS):
                wire.for_paho += data[start:stop]
                continue
            size = stop - body
            if size != 2 and not (v5 and size > 2):
                wire.end(ConnectionError(f"protocol error: acknowledgement of {size} bytes"))
                break
            mid = data[body] << 8 | data[body + 1]
            reason = data[body + 2] if size > 2 else 0
            if kind == PUBREC and reason < 0x80:
                wire.out += pubrel_packet(mid)  # QoS 2 goes on; PUBCOMP settles it
                if mid in in_flight:
                    released.add(mid)
                continue
            in_flight.discard(mid)
            released.discard(mid)
            if mid not in pending:
                continue  # a failed batch's message, or a duplicate
            if reason >= 0x80:
                self._refused(kind, reason)
                pending = set()
                continue
            pending.discard(mid)
            acknowledged += 1
        del data[:used]
        if acknowledged and batch is not None:
            self.published += acknowledged
            batch.last_progress = self._reactor.seconds()

    def _refused(self, kind: int, reason: int) -> None:
        packet_type = PacketTypes.PUBREC if kind == PUBREC else PacketTypes.PUBACK
        try:
            name = str(ReasonCode(packet_type, identifier=reason))
        except Exception:  # a code paho does not know
            name = f"reason code 0x{reason:02x}"
        text = f"broker refused a message: {name}"
        self.health.error("refused", text)
        self._fail_batch(MqttError(text))

    def _feed_paho(self, descriptor: _PahoSocket) -> None:
        """Let paho read its packets (CONNACK, PINGRESP, DISCONNECT), then the end."""
        client, wire = descriptor.client, descriptor.wire
        while client.socket() is wire and (wire.for_paho or wire.ended is not None):
            left = len(wire.for_paho)
            client.loop_read()
            self._process()
            if wire.ended is None and len(wire.for_paho) == left:
                break  # paho took nothing: never spin

    def _writable(self, descriptor: _PahoSocket) -> None:
        if descriptor.wire.read_wants_write:
            descriptor.wire.read_wants_write = False
            self._readable(descriptor)
        self._flush(descriptor)

    def _descriptor_lost(self, descriptor: _PahoSocket) -> None:
        # The reactor dropped the descriptor (it is shutting down).
        if descriptor is self._socket and self._state not in ("closed", "idle"):
            self._lost(descriptor.client, "connection closed by the reactor")

    def _flush(self, descriptor: _PahoSocket) -> None:
        """Move what paho queued into the wire, then write the wire."""
        client = descriptor.client
        if client.want_write():
            client.loop_write()
            self._process()
        self._write(descriptor)

    def _write(self, descriptor: _PahoSocket) -> None:
        """Send what the socket takes now; the reactor reports when it takes more."""
        if descriptor is not self._socket:
            return  # a connection dropped meanwhile
        wire = descriptor.wire
        if wire.out and wire.ended is None:
            try:
                wire.write()
            except OSError as error:
                wire.end(error)
                self._feed_paho(descriptor)  # paho reports the lost connection
                return
        self._want_writes(descriptor)

    def _want_writes(self, descriptor: _PahoSocket) -> None:
        if descriptor is not self._socket:
            return
        wire = descriptor.wire
        want = bool(wire.out) or wire.read_wants_write or bool(descriptor.client.want_write())
        if want and not descriptor.writing:
            descriptor.writing = True
            self._reactor.addWriter(descriptor)
        elif descriptor.writing and not want:
            descriptor.writing = False
            self._reactor.removeWriter(descriptor)

    def _on_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        descriptor = self._socket
        # Calls from the connect thread find no descriptor yet: _connection_opened flushes.
        if descriptor is not None and descriptor.client is client and not descriptor.writing:
            descriptor.writing = True
            self._reactor.addWriter(descriptor)

    def _on_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        descriptor = self._socket
        if descriptor is not None and descriptor.client is client:
            self._want_writes(descriptor)  # the wire may still hold bytes to send

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        # Paho calls this before closing the fd: unregister while the number is still ours.
        descriptor = self._socket
        if descriptor is not None and descriptor.client is client:
            self._remove_socket()

    def _remove_socket(self) -> None:
        descriptor, self._socket = self._socket, None
        if descriptor is not None:
            self._reactor.removeReader(descriptor)
            if descriptor.writing:
                descriptor.writing = False
                self._reactor.removeWriter(descriptor)

    def _loop_misc(self) -> None:
        client = self._client
        if client is not None and self._state in ("handshake", "connected"):
            client.loop_misc()
            self._process()
        batch = self._batch
        if (
            batch is not None
            and batch.pending
            and self._reactor.seconds() - batch.last_progress > self.settings.ack_timeout
        ):
            text = f"no acknowledgement for {self.settings.ack_timeout:g}s"
            self.health.error("timeout", text)
            if client is not None:
                # Start over on a fresh connection: paho's state of this one is suspect.
                self._drop(client)
                self._schedule_reconnect(0.0)
            self._fail_batch(MqttError(text))

    # --- delivering ----------------------------------------------------------------

    def deliver(self, records: Sequence[Mapping[str, object]]) -> Deferred[None]:
        """Publish the batch; fires once the broker acknowledged every message."""
        if self._state == "closed":
            return defer.fail(MqttError(f"sink {self.name} is closed"))
        if self._batch is not None:
            return defer.fail(MqttError("deliver() called while a batch is in flight"))
        try:
            messages, announcing = self._builder.messages(records)
        except Exception:
            return defer.fail()
        batch = _Batch(messages, announcing, self._reactor.seconds())
        self._batch = batch
        if not messages:
            self._finish(batch)
        elif self._state == "connected":
            self._start(batch)
        else:
            # Wait a little for a connection rather than fail at once: a broker
            # restart then costs the pump no backoff round. Short, because a
            # stopping pump waits for the delivery in flight.
            batch.wait = self._reactor.callLater(
                self.settings.connect_wait,
                self._not_connected,
                batch,
            )
        return batch.deferred

    def _not_connected(self, batch: _Batch) -> None:
        batch.wait = None
        if self._batch is batch and batch.next == 0:
            error = self.health.last_error or "not connected yet"
            self._fail_batch(MqttError(f"not connected to {self.settings.url}: {error}"))

    def _start(self, batch: _Batch) -> None:
        if batch.wait is not None and batch.wait.active():
            batch.wait.cancel()
        batch.wait = None
        batch.last_progress = self._reactor.seconds()
        self._publish_more(batch)
        if self._socket is not None:
            self._write(self._socket)

    def _publish_more(self, batch: _Batch) -> None:
        """Put PUBLISH packets on the wire while the window has room. Every
        `_WRITE_CHUNK` bytes go out at once, so the broker works on them while the
        rest is encoded; the caller writes the last ones (after a read, one send
        carries many PUBACKs' worth of refill)."""
        descriptor = self._socket
        if descriptor is None or self._state != "connected":
            return
        settings = self.settings
        qos, v5, window = settings.qos, settings.protocol == "5", self._window
        messages, pending, in_flight = batch.messages, batch.pending, self._in_flight
        out = descriptor.wire.out
        index, count, mid = batch.next, len(messages), self._mid
        try:
            while index < count and len(in_flight) < window:
                message = messages[index]
                mid = mid % 0xFFFF + 1  # packet ids 1..65535, none still in flight
                while mid in in_flight:
                    mid = mid % 0xFFFF + 1
                out += publish_packet(message.topic, message.payload, qos, message.retain, mid, v5)
                index += 1
                in_flight.add(mid)
                pending.add(mid)
                if len(out) >= _WRITE_CHUNK:
                    self._write(descriptor)
                    if self._socket is not descriptor:
                        break  # the connection was lost, and the batch failed with it
        except ValueError as error:
            text = f"publish failed: {error}"
            self.health.error("publish", text)
            self._fail_batch(MqttError(text))
        finally:
            batch.next, self._mid = index, mid

    def _finish(self, batch: _Batch) -> None:
        self._batch = None
        self._builder.announced |= batch.announcing
        batch.deferred.callback(None)

    def _fail_batch(self, error: Exception, *, only_started: bool = False) -> None:
        batch = self._batch
        if batch is None or (only_started and batch.next == 0):
            return  # a batch still waiting for a connection keeps waiting
        self._batch = None
        if batch.wait is not None and batch.wait.active():
            batch.wait.cancel()
        batch.deferred.errback(error)

    # --- closing -------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Send DISCONNECT when connected, close the socket, stop retrying."""
        if self._state == "closed":
            return defer.succeed(None)
        client = self._client
        connected = self._state == "connected"
        self._state = "closed"
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._misc.running:
            self._misc.stop()
        self._fail_batch(MqttError(f"sink {self.name} closed"))
        if client is not None:
            if connected:
                with contextlib.suppress(Exception):
                    topic = self.settings.availability_topic
                    if topic is not None and self._socket is not None:
                        # A clean DISCONNECT drops the last will: say it ourselves.
                        v5 = self.settings.protocol == "5"
                        self._socket.wire.out += publish_packet_qos0(topic, b"offline", True, v5)
                    client.disconnect()
                    client.loop_write()  # into the wire, which sends it as paho closes it
            self._drop(client)
            self._events.clear()
        self.health.connected = False
        return defer.succeed(None)


def _abandon(client: Any) -> None:
    """Close a paho client's socket without going through its callbacks' logic."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(Exception):
            client._sock_close()  # paho has no public "drop this connection now"


def mqtt_sink_factory(name: str, options: Mapping[str, Any]) -> MqttSink:
    """Build an MqttSink from its ``[[sinks]]`` table (type ``mqtt``).

    Keys: host, port (1883, 8883 with TLS), protocol ("3.1.1" or "5"),
    client_id, clean_session, session_expiry (MQTT 5), keepalive, topic,
    obis_topic, mode ("push", "obis", "both"), retain, qos (1 or 2), username,
    password_file / password_env, tls, ca_file, cert_file, key_file,
    key_password_file / key_password_env, connect_timeout, connect_wait,
    ack_timeout, reconnect_min, reconnect_max, max_inflight (1000; 20 for QoS 2 over
    MQTT 3.1.1, mosquitto's default cap), homeassistant, discovery_prefix, obis_retain,
    availability_topic, expire_after_pushes (docs/homeassistant.md).
    """
    return MqttSink(name, parse_mqtt_settings(name, options))


__all__ = [
    "Message",
    "MessageBuilder",
    "MqttError",
    "MqttSettings",
    "MqttSink",
    "TlsSettings",
    "homeassistant_classes",
    "mqtt_sink_factory",
    "obis_slug",
    "parse_mqtt_settings",
]
