"""The MQTT sink: paho-mqtt 2.x driven by the Twisted reactor, QoS 1, acked on PUBACK.

How paho runs here: no ``loop_start()`` thread. Paho's socket is registered
with the reactor (`_PahoSocket`, an IReadDescriptor/IWriteDescriptor), so
readable means ``loop_read()``, writable ``loop_write()``, and a LoopingCall
runs ``loop_misc()`` (keep-alive pings, their timeouts). The one blocking
step, opening the connection (DNS, TCP connect, TLS handshake, bounded by
`connect_timeout`), runs in the reactor's thread pool while nothing else
touches that client; every other call to paho happens on the reactor thread.
Paho runs its callbacks holding a lock that most of its calls take again, so
the callbacks only queue an event; `_process` handles the queue after each
call into paho returns.

Delivery: `deliver()` publishes the batch's messages at QoS 1 (or 2), at most
`max_inflight` unacknowledged at a time, and fires only when every message was
acknowledged (PUBACK/PUBCOMP). A lost connection, a refused PUBACK (MQTT 5
reason code >= 0x80) or no acknowledgement for `ack_timeout` seconds fails
the batch; the pump keeps it in the spool and delivers it again (duplicates
are possible, loss is not: consumers drop duplicates by ``system_title`` +
``invocation_counter``). Each connection gets a fresh paho client, so nothing
half-sent by a previous connection is replayed behind the spool's back.

Messages (built by `dlmsd.sinks.mqtt_messages`): ``mode = "push"`` sends each
record as one JSON message on `topic`; ``"obis"`` one message per reading on
`obis_topic` (value, unit, time, ids); ``"both"`` does both. With
``homeassistant = true`` a retained Home Assistant discovery config is
published (once per meter and OBIS code per run) before the first reading of
each sensor.

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
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
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
    PROTOCOLS,
    Message,
    MessageBuilder,
    MqttSettings,
    TlsSettings,
    TlsSetupError,
    describe_error,
    homeassistant_classes,
    obis_slug,
    parse_mqtt_settings,
)
from dlmsd.sinks.options import Backoff, SecretError
from dlmsd.sinks.spool import SinkHealth

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class MqttError(Exception):
    """A batch could not be delivered (not connected, connection lost, refused, timeout)."""


# --- the reactor-driven paho client --------------------------------------------------


@implementer(IReadDescriptor, IWriteDescriptor)
class _PahoSocket:
    """Paho's socket as the reactor sees it; events go back to the sink."""

    def __init__(self, sink: MqttSink, client: paho.Client, sock: Any) -> None:
        self.sink = sink
        self.client = client
        self.sock = sock
        # Cached: a closed socket reports -1, and the reactor needs the number to unregister.
        self._fileno: int = sock.fileno()
        self.writing = False

    def fileno(self) -> int:
        return self._fileno

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
        self._reactor = reactor
        self._builder = MessageBuilder(name, settings)
        self._backoff = Backoff(settings.reconnect_min, settings.reconnect_max)
        self._log_limit = LogRateLimiter(60.0)
        self._state = "idle"  # idle, connecting, handshake, connected, closed
        self._client: Any = None
        self._socket: _PahoSocket | None = None
        self._window = settings.max_inflight
        self._retry: Any = None
        self._connack_timer: Any = None
        self._batch: _Batch | None = None
        self._misc = LoopingCall(self._loop_misc)
        self._events: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._misc.clock = reactor
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
        # 0 (no paho limit): the sink keeps its own window; with a paho limit every
        # PUBACK walks all messages in flight looking for queued ones.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if settings.username is not None:
            password = settings.password.read() if settings.password is not None else None
            client.username_pw_set(settings.username, password)
        if settings.tls is not None:
            client.tls_set_context(settings.tls.context())
        client.on_connect = self._queue_connect
        client.on_disconnect = self._queue_disconnect
        client.on_publish = self._queue_publish
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
        self._socket = _PahoSocket(self, client, sock)
        self._reactor.addReader(self._socket)
        self._state = "handshake"
        self._connack_timer = self._reactor.callLater(
            self.settings.connect_timeout, self._connack_missing, client
        )
        self._flush(client)

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

    def _queue_publish(
        self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self._events.append((self._on_publish, (client, mid, reason)))

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
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if isinstance(receive_maximum, int) and receive_maximum > 0:
            # The broker's limit of unacknowledged QoS>0 messages (MQTT 5); paho ignores it.
            self._window = min(self._window, receive_maximum)
        self._backoff.reset()
        self.health.connected = True
        self.log.info(
            "sink {sink}: connected to {url} (MQTT {protocol}, session present: {present})",
            sink=self.name,
            url=self.settings.url,
            protocol=self.settings.protocol,
            present=bool(getattr(flags, "session_present", False)),
        )
        batch = self._batch
        if batch is not None:
            self._start(batch)

    def _on_disconnect(self, client: Any, reason: Any) -> None:
        if client is not self._client or self._state in ("closed", "idle"):
            return
        self._lost(client, f"connection to {self.settings.url} lost ({reason})")

    def _lost(self, client: Any, text: str) -> None:
        was_connected = self._state == "connected"
        self._drop(client)
        self._fail_batch(MqttError(text), only_started=True)
        if was_connected:
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
        if self._log_limit.should_log(f"{kind}|{text}".encode(), self._reactor.seconds()):
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
        client = descriptor.client
        client.loop_read()
        self._process()
        if _QUICKACK is not None:
            # Acknowledge at once: a broker that leaves Nagle on holds its last
            # PUBACKs until our (delayed, up to 40 ms) ACK, once per batch.
            with contextlib.suppress(OSError):
                descriptor.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        # TLS may hold decrypted bytes the kernel no longer signals: read them too.
        sock = descriptor.sock
        if not isinstance(sock, ssl.SSLSocket):
            return
        while sock.pending() > 0 and client.socket() is descriptor.sock:
            result = client.loop_read()
            self._process()
            if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break

    def _writable(self, descriptor: _PahoSocket) -> None:
        descriptor.client.loop_write()
        self._process()

    def _descriptor_lost(self, descriptor: _PahoSocket) -> None:
        # The reactor dropped the descriptor (it is shutting down).
        if descriptor is self._socket and self._state not in ("closed", "idle"):
            self._lost(descriptor.client, "connection closed by the reactor")

    def _flush(self, client: Any) -> None:
        """Write what paho queued now rather than at the next reactor turn."""
        if client.want_write():
            client.loop_write()
            self._process()

    def _on_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        descriptor = self._socket
        # Calls from the connect thread find no descriptor yet: _connection_opened flushes.
        if descriptor is not None and descriptor.client is client and not descriptor.writing:
            descriptor.writing = True
            self._reactor.addWriter(descriptor)

    def _on_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        descriptor = self._socket
        if descriptor is not None and descriptor.client is client and descriptor.writing:
            descriptor.writing = False
            self._reactor.removeWriter(descriptor)

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
        self._publish_more(batch, flush=True)

    def _publish_more(self, batch: _Batch, flush: bool = False) -> None:
        """Publish while the window has room. Without `flush`, the reactor writes the
        queued packets once it is done reading (one send for many PUBACKs' worth)."""
        client = self._client
        if client is None or self._state != "connected":
            return
        qos = self.settings.qos
        messages, pending, window = batch.messages, batch.pending, self._window
        publish = client.publish
        while batch.next < len(messages) and len(pending) < window:
            message = messages[batch.next]
            batch.next += 1
            info = publish(message.topic, message.payload, qos, message.retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                text = f"publish failed: {paho.error_string(info.rc)}"
                self.health.error("publish", text)
                self._fail_batch(MqttError(text))
                return
            pending.add(info.mid)
        if flush:
            self._flush(client)

    def _on_publish(self, client: Any, mid: int, reason: Any) -> None:
        batch = self._batch
        if client is not self._client or batch is None or mid not in batch.pending:
            return
        if reason is not None and reason.is_failure:
            text = f"broker refused a message: {reason}"
            self.health.error("refused", text)
            self._fail_batch(MqttError(text))
            return
        batch.pending.discard(mid)
        self.published += 1
        batch.last_progress = self._reactor.seconds()
        if batch.next < len(batch.messages):
            self._publish_more(batch)
        elif not batch.pending:
            self._finish(batch)

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
                    client.disconnect()
                    client.loop_write()
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
    ack_timeout, reconnect_min, reconnect_max, max_inflight, homeassistant,
    discovery_prefix.
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
