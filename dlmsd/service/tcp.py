"""TCP listeners: connection limits and idle timeouts, and the wrapper stream protocol.

`PushStreamProtocol` holds what every TCP push listener needs (the HDLC-over-TCP
listener reuses it): the connection counts against ``max_connections`` and
``max_connections_per_source`` (`PushStreamFactory` says what happens at
each), the open-connections gauge, and the idle timeout. "Idle" means *no complete
frame* for ``idle_timeout`` seconds, not "no bytes": a client trickling one
byte a minute never completes a frame and is cut like a silent one.

`WrapperPushProtocol` splits the stream into IEC 62056-47 wrapper frames. The
wrapper has no flags to resync on, so a bad version or an over-long length
drops the connection (counted as ``malformed`` or ``oversize``).

Push-then-read (:mod:`dlmsd.service.readback`): after an accepted push the
factory's ``after_push`` may turn the daemon client on the same connection;
while it does, the connection is *diverted*: complete frames go to the client
session (the meter's answers) instead of the ingest, and the idle timer rests
(the session keeps its own timers).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from dlmsd.protocol.errors import DlmsError, LengthError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.wrapper import HEADER_LENGTH, WrapperStreamDecoder
from dlmsd.service.config import TcpListenerConfig
from dlmsd.service.ingest import Ingest, RejectReason
from dlmsd.service.metrics import Metrics
from dlmsd.service.quarantine import LogRateLimiter


def peer_text(address: IAddress) -> str:
    """``host:port`` of a peer (or its repr for non-IP addresses)."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


EVICTION_BACKLOG = 32
"""Evicted connections a listener lets wait for their close (the reactor closes
them on its next turn) before it refuses newcomers instead: bounds the
descriptors above ``max_connections`` while a flood of connections arrives."""

LIMIT_LOG_INTERVAL = 60.0
"""Seconds between two log lines about one connection limit (per listener and source)."""


def peer_host(address: IAddress | None) -> str:
    """The host of a peer without its port: what `max_connections_per_source` counts."""
    host = getattr(address, "host", None)
    return str(host) if host is not None else str(address)


class PushStreamFactory(Factory):
    """Builds one protocol per connection within the listener's connection limits.

    ``max_connections_per_source`` bounds what one source address holds; past
    it, its new connections are refused. At ``max_connections`` a newcomer is
    not refused: the oldest idle connection (longest without a complete frame)
    of the source holding the most connections is closed to make room, so one
    client cannot lock genuine meters out until ``idle_timeout``. Refusals and
    evictions are counted in metrics and logged at most once per
    `LIMIT_LOG_INTERVAL` per listener and source.
    """

    log = Logger()
    transport_name = "tcp"
    noisy = False  # no "Starting factory" lines; the service logs its port

    def __init__(
        self,
        ingest: Ingest,
        metrics: Metrics,
        *,
        name: str,
        idle_timeout: float,
        max_connections: int,
        max_connections_per_source: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ingest = ingest
        self.metrics = metrics
        self.name = name
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_connections_per_source = max_connections_per_source or max_connections
        self.clock = clock
        self.connections: set[PushStreamProtocol] = set()
        #: Open connections per source host.
        self.by_source: dict[str, set[PushStreamProtocol]] = {}
        self.frames_received = metrics.listener(name)
        self._refused = metrics.tcp_connections_refused.labels(name)
        self._refused_per_source = metrics.tcp_connections_refused_per_source.labels(name)
        self._evicted = metrics.tcp_connections_evicted.labels(name)
        self._evicting = 0
        self._log_limit = LogRateLimiter(LIMIT_LOG_INTERVAL)
        self.refused_count = 0
        self.evicted_count = 0

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        # Returning None makes Twisted close the new connection at once.
        host = peer_host(addr)
        held = self.by_source.get(host)
        if held is not None and len(held) >= self.max_connections_per_source:
            self._refused_per_source.inc()
            self._refuse(
                f"per-source|{host}",
                "listener {listener}: source {host} holds max_connections_per_source={limit}:"
                " refusing its new connections ({refused} refused so far)",
                host=host,
                limit=self.max_connections_per_source,
            )
            return None
        if len(self.connections) >= self.max_connections and not self._evict_one():
            self._refuse(
                "full",
                "listener {listener} at max_connections={limit} with no connection to"
                " evict: refusing new connections ({refused} refused so far)",
                limit=self.max_connections,
            )
            return None
        protocol = self.make_protocol()
        protocol.factory = self
        protocol.host = host
        return protocol

    def _refuse(self, key: str, text: str, **fields: object) -> None:
        self._refused.inc()
        self.refused_count += 1
        if self._log_limit.should_log(key.encode(), self.clock()):
            self.log.warn(text, listener=self.name, refused=self.refused_count, **fields)

    def _evict_one(self) -> bool:
        """Close the oldest idle connection of the busiest source; False if none may go."""
        if self._evicting >= EVICTION_BACKLOG:
            return False
        victim: PushStreamProtocol | None = None
        busiest = 0
        for held in self.by_source.values():
            if len(held) <= busiest:
                continue
            candidates = [protocol for protocol in held if not protocol.diverted]
            if candidates:
                busiest = len(held)
                victim = min(candidates, key=lambda protocol: protocol.last_active)
        if victim is None:
            return False
        self._forget(victim)
        victim.evicted = True
        self._evicting += 1
        self._evicted.inc()
        self.evicted_count += 1
        if self._log_limit.should_log(b"evict", self.clock()):
            self.log.warn(
                "listener {listener} at max_connections={limit}: closing the oldest idle"
                " connection of the busiest source {host} ({held} connections) for each"
                " newcomer ({evicted} closed so far)",
                listener=self.name,
                limit=self.max_connections,
                host=victim.host,
                held=busiest,
                evicted=self.evicted_count,
            )
        victim.link.abortConnection()
        return True

    def _track(self, protocol: PushStreamProtocol) -> None:
        self.connections.add(protocol)
        self.by_source.setdefault(protocol.host, set()).add(protocol)
        self.metrics.tcp_connections_open.inc()

    def _forget(self, protocol: PushStreamProtocol) -> None:
        """Stop counting a connection (closed, or evicted and closing)."""
        if protocol not in self.connections:
            return
        self.connections.discard(protocol)
        held = self.by_source.get(protocol.host)
        if held is not None:
            held.discard(protocol)
            if not held:
                del self.by_source[protocol.host]
        self.metrics.tcp_connections_open.dec()

    def _closed(self, protocol: PushStreamProtocol) -> None:
        if protocol.evicted:
            protocol.evicted = False
            self._evicting -= 1
        self._forget(protocol)

    def make_protocol(self) -> PushStreamProtocol:
        """The protocol for one accepted connection."""
        raise NotImplementedError

    def close_all(self) -> None:
        """Drop every open connection (at shutdown, after the port stopped listening)."""
        for protocol in list(self.connections):
            protocol.link.loseConnection()


class PushStreamProtocol(Protocol, TimeoutMixin):
    """One pushing connection: counted, timed out when idle; subclasses split frames."""

    factory: PushStreamFactory
    log = Logger()
    source = "?"
    host = "?"
    #: When the last complete frame arrived (or the connection was made), factory clock.
    last_active = 0.0
    #: Closed by the factory to make room; not counted any more.
    evicted = False

    @property
    def link(self) -> Any:
        """The transport, typed loosely: zope interface methods do not type-check."""
        return self.transport

    @property
    def diverted(self) -> bool:
        """A client session owns the connection (push-then-read): never evicted."""
        return False

    def _idle_timer(self, period: float | None) -> None:
        self.setTimeout(period)  # type: ignore[no-untyped-call]

    def connectionMade(self) -> None:
        factory = self.factory
        self.last_active = factory.clock()
        factory._track(self)
        self.source = peer_text(self.link.getPeer())
        self._idle_timer(factory.idle_timeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._idle_timer(None)
        self.factory._closed(self)

    def frame_received(self) -> None:
        """A complete frame arrived: the connection is not idle."""
        factory = self.factory
        factory.frames_received.inc()
        self.last_active = factory.clock()
        self.resetTimeout()  # type: ignore[no-untyped-call]

    def timeoutConnection(self) -> None:
        self.log.info(
            "closing {listener} connection from {source}: no complete frame for {timeout}s",
            listener=self.factory.name,
            source=self.source,
            timeout=self.factory.idle_timeout,
        )
        self.link.abortConnection()

    def drop(self, reason: RejectReason, detail: str) -> None:
        """Count a stream we cannot continue and close the connection."""
        self.factory.ingest.reject(reason, self.source, self.factory.transport_name, detail)
        self._idle_timer(None)
        self.link.abortConnection()


class WrapperPushFactory(PushStreamFactory):
    """Wrapper frames over TCP (``[[listeners.tcp]]``)."""

    transport_name = "tcp"

    def __init__(self, ingest: Ingest, metrics: Metrics, config: TcpListenerConfig) -> None:
        super().__init__(
            ingest,
            metrics,
            name=config.name,
            idle_timeout=config.idle_timeout,
            max_connections=config.max_connections,
            max_connections_per_source=config.max_connections_per_source,
        )
        self.max_apdu_length = config.max_frame_size - HEADER_LENGTH
        #: Called with the connection and the APDU of each accepted push (push-then-read).
        self.after_push: Callable[[WrapperPushProtocol, bytes], None] | None = None

    def make_protocol(self) -> PushStreamProtocol:
        return WrapperPushProtocol(self.max_apdu_length)


class WrapperPushProtocol(PushStreamProtocol):
    """Splits a TCP stream into wrapper frames and hands each APDU to the ingest."""

    factory: WrapperPushFactory

    def __init__(self, max_apdu_length: int) -> None:
        self._decoder = WrapperStreamDecoder(max_apdu_length)
        self.max_apdu_length = max_apdu_length
        self._diverted_to: Callable[[bytes], None] | None = None
        self._on_lost: Callable[[], None] | None = None
        self._gone = False

    def dataReceived(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.receive_data(data)
        handle = self.factory.ingest.handle_apdu
        after_push = self.factory.after_push
        while True:
            try:
                event = decoder.next_event()
            except LengthError as error:
                self.drop(RejectReason.OVERSIZE, str(error))
                return
            except DlmsError as error:
                self.drop(RejectReason.MALFORMED, f"garbage on the stream: {error}")
                return
            if event is NEED_DATA:
                return
            receive = self._diverted_to
            if receive is not None:
                receive(event.to_bytes())  # a client session owns the connection
                continue
            self.frame_received()
            outcome = handle(event.apdu, self.source, "tcp")
            if after_push is not None and outcome.accepted:
                after_push(self, event.apdu)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        lost, self._on_lost = self._on_lost, None
        self._diverted_to = None
        if lost is not None:
            lost()
        super().connectionLost(reason)

    # -- for a readback (dlmsd.service.readback.ReadbackConnection) ---------------------

    @property
    def diverted(self) -> bool:
        """A client session owns the connection."""
        return self._diverted_to is not None

    def write(self, data: bytes) -> None:
        """Send bytes to the meter."""
        self.link.write(data)

    def abort(self) -> None:
        """Drop the connection."""
        if not self._gone:
            self.link.abortConnection()

    def divert(self, receive: Callable[[bytes], None], lost: Callable[[], None]) -> None:
        """Frames go to `receive` (re-framed), the loss of the line to `lost`."""
        self._diverted_to = receive
        self._on_lost = lost
        self._idle_timer(None)

    def undivert(self) -> None:
        """Frames go to the ingest again; the idle timer restarts."""
        self._diverted_to = None
        self._on_lost = None
        if not self._gone:
            self._idle_timer(self.factory.idle_timeout)


def listen_tcp(
    reactor: Any,
    ingest: Ingest,
    metrics: Metrics,
    config: TcpListenerConfig,
    after_push: Callable[[WrapperPushProtocol, bytes], None] | None = None,
) -> tuple[IListeningPort, WrapperPushFactory]:
    """Start a wrapper-over-TCP listener; returns its port and factory.

    With ``reuse_port`` the socket is made here with SO_REUSEPORT and adopted,
    so several daemons on one host (one per core) share the port and the
    kernel spreads connections over them.
    """
    factory = WrapperPushFactory(ingest, metrics, config)
    factory.after_push = after_push
    if config.reuse_port:
        return listen_reuse_port(reactor, factory, config.address, config.port), factory
    port: IListeningPort = reactor.listenTCP(
        config.port, factory, backlog=1024, interface=config.address
    )
    return port, factory


def listen_reuse_port(reactor: Any, factory: Factory, address: str, port: int) -> IListeningPort:
    """A listening TCP socket with SO_REUSEPORT (set before bind), adopted by the reactor."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((address, port))
        except OSError as error:
            raise CannotListenError(address, port, error) from None  # type: ignore[no-untyped-call]
        sock.listen(1024)
        sock.setblocking(False)
        # The reactor dups the descriptor; ours is closed in `finally`.
        listening: IListeningPort = reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()
    return listening
