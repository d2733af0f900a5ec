"""UDP listener: one datagram carries one wrapper frame (IEC 62056-47, port 4059).

With ``reuse_port`` the socket is made here (SO_REUSEPORT set before bind)
and adopted by the reactor, so several daemons, or several processes of
one, can share the port and the kernel spreads datagrams over them.

The socket's receive buffer is set to ``receive_buffer`` (4 MiB by default):
pushes come in bursts (meters on the same schedule) and a burst that finds the
kernel's default ~200 KiB full is dropped before the daemon sees it. Twisted
reads up to ``maxThroughput`` bytes of datagrams per wakeup (256 KiB, some
2,000 pushes), which already amortises the reactor's cost per datagram.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol

from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.wrapper import datagram_apdu
from dlmsd.service.config import UdpListenerConfig
from dlmsd.service.ingest import Ingest, RejectReason
from dlmsd.service.metrics import Metrics

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
    if not config.reuse_port:
        port: IListeningPort = reactor.listenUDP(
            config.port, protocol, interface=config.address, maxPacketSize=65535
        )
        set_receive_buffer(port, config.receive_buffer)
        return port
    family = _family(config.address)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.address, config.port))
        sock.setblocking(False)
        # The reactor dups the descriptor; ours is closed in `finally`.
        port = reactor.adoptDatagramPort(sock.fileno(), family, protocol, maxPacketSize=65535)
    finally:
        sock.close()
    set_receive_buffer(port, config.receive_buffer)
    return port


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
