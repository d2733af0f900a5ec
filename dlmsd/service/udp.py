"""UDP listener: one datagram carries one wrapper frame (IEC 62056-47, port 4059).

With ``reuse_port`` the socket is made here (SO_REUSEPORT set before bind)
and adopted by the reactor, so several daemons, or several processes of
one, can share the port and the kernel spreads datagrams over them.

The socket's receive buffer is set to ``receive_buffer`` (4 MiB by default):
pushes come in bursts (meters on the same schedule) and a burst that finds the
kernel's default ~200 KiB full is dropped before the daemon sees it. Twisted
reads up to ``maxThroughput`` bytes of datagrams per wakeup (256 KiB, some
2,000 pushes) as one burst (`dlmsd.service.udp_burst`); while pushes come
slowly (``batch_reads``) it leaves a dry socket alone until right before the
next commit, so they are read, handled and committed in bursts too.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol

from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.wrapper import datagram_apdu
from dlmsd.service.config import UdpListenerConfig
from dlmsd.service.ingest import Ingest, RejectReason
from dlmsd.service.metrics import Metrics
from dlmsd.service.udp_burst import BurstPort, Datagram

TRANSPORT = "udp"
SOURCE_CACHE_SIZE = 16_384
"""Sender addresses whose ``host:port`` text the listener keeps (then starts afresh)."""


class UdpPushProtocol(DatagramProtocol):
    """Decodes each datagram as a wrapper frame and hands its APDU to the ingest."""

    noisy = False

    def __init__(self, ingest: Ingest, metrics: Metrics, config: UdpListenerConfig) -> None:
        self._ingest = ingest
        self._max_frame_size = config.max_frame_size
        # Bound once: these run for every datagram.
        self._count_frame = metrics.listener(config.name).inc
        self._handle_apdu = ingest.handle_apdu
        # A meter sends from the same address and port push after push.
        self._sources: dict[Any, str] = {}

    def burstReceived(self, burst: Sequence[Datagram]) -> None:
        """The datagrams one read found queued, in order."""
        receive = self.datagramReceived
        for datagram, addr in burst:
            receive(datagram, addr)

    def commit_wait(self) -> float:
        """Seconds until a push handled now would be committed."""
        return self._ingest.commit_wait()

    def read_before_commit(self, read: Callable[[], object]) -> None:
        """Have `read` called right before the ingest's next commit."""
        self._ingest.read_before_commit(read)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._count_frame()
        source = self._sources.get(addr)
        if source is None:
            source = self._source_text(addr)
        if len(datagram) > self._max_frame_size:
            self._ingest.reject(
                RejectReason.OVERSIZE,
                source,
                TRANSPORT,
                f"datagram of {len(datagram)} bytes exceeds max_frame_size {self._max_frame_size}",
            )
            return
        try:
            apdu = datagram_apdu(datagram)
        except DlmsError as error:
            self._ingest.reject(RejectReason.MALFORMED, source, TRANSPORT, str(error))
            return
        self._handle_apdu(apdu, source, TRANSPORT)

    def _source_text(self, addr: Any) -> str:
        """``host:port`` of a sender, remembered for its next datagrams."""
        if len(self._sources) >= SOURCE_CACHE_SIZE:
            # Bounded against floods from many addresses; meters re-enter at once.
            self._sources.clear()
        source = self._sources[addr] = f"{addr[0]}:{addr[1]}"
        return source


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def listen_udp(
    reactor: Any, ingest: Ingest, metrics: Metrics, config: UdpListenerConfig
) -> IListeningPort:
    """Start a UDP listener (adopting our own SO_REUSEPORT socket when asked)."""
    protocol = UdpPushProtocol(ingest, metrics, config)
    # Twisted's udp.Port is untyped: Any here, IListeningPort for the caller.
    port: Any
    if not config.reuse_port:
        port = BurstPort(  # type: ignore[no-untyped-call]
            config.port, protocol, config.address, 65535, reactor
        )
    else:
        family = _family(config.address)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((config.address, config.port))
            sock.setblocking(False)
            # The port dups the descriptor; ours is closed in `finally`.
            port = BurstPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
                reactor, sock.fileno(), family, protocol, maxPacketSize=65535
            )
        finally:
            sock.close()
    port.batch_reads = config.batch_reads
    port.startListening()
    set_receive_buffer(port, config.receive_buffer)
    return cast(IListeningPort, port)


def set_receive_buffer(port: IListeningPort, size: int) -> int:
    """Ask for a `size`-byte receive buffer on a listening UDP port; returns what the
    kernel granted (it caps SO_RCVBUF at net.core.rmem_max unless we may force it).
    0 leaves the kernel default."""
    sock = getattr(port, "socket", None)
    if sock is None:
        return 0
    if size > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
        except (OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted


# Linux: like SO_RCVBUF but not capped by rmem_max, for a process with CAP_NET_ADMIN.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
