"""A UDP port that reads datagrams in bursts, and lets slow traffic gather until the
commit that will carry it.

Twisted's `udp.Port` hands each datagram to the protocol as it reads it and goes
back to the reactor when the socket is dry. At a thousand pushes a second that
is one reactor wake-up per push, and each push runs through a pipeline whose
code and data have gone cold in the CPU's caches since the last one: measured
here, the same push costs about twice the CPU one per millisecond as in a row of
twenty. Yet an accepted push waits for its commit anyway (up to the commit
interval, which grows while pushes come slowly). `BurstPort` therefore

* reads everything queued (up to ``maxThroughput`` bytes) and hands the list to
  the protocol's ``burstReceived`` in one call, and
* when the socket ran dry after a small burst, stops reading and asks the
  ingest to read it again right before its next commit (``read_before_commit``):
  what came meanwhile is read, handled and committed in one go. A push then waits
  in the kernel's queue instead of the ingest's staging list, for no longer: the
  commit comes when it would have come.

It only waits while that is safe for the receive buffer: when the rate measured
over the last burst would queue more than `MAX_QUEUED` datagrams before the
commit, it reads again as soon as the socket is readable (at such rates bursts
are big anyway). A read that finds nothing does not wait: an idle listener
costs no timer.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet import udp
from twisted.logger import Logger

MAX_QUEUED = 128
"""Datagrams a wait may let queue up (at the last burst's rate): far inside the
default 4 MiB receive buffer, and inside the kernel's default too."""

Datagram = tuple[bytes, Any]


def worth_waiting(count: int, elapsed: float, wait: float) -> bool:
    """Whether to leave the socket alone for `wait` seconds after reading `count`
    datagrams that came in `elapsed` seconds: only when something will read it
    (`wait` > 0) and, at that rate, fewer than `MAX_QUEUED` would queue meanwhile."""
    return wait > 0 and count * wait <= MAX_QUEUED * elapsed


class BurstProtocol(Protocol):
    """What `BurstPort` needs of its protocol besides `DatagramProtocol`."""

    def burstReceived(self, burst: Sequence[Datagram]) -> None:
        """The datagrams one read found queued, in order."""

    def commit_wait(self) -> float:
        """Seconds until pushes handled now would be committed (0: at once)."""

    def read_before_commit(self, read: Callable[[], object]) -> None:
        """Call `read` right before the next commit, due within `commit_wait()`."""


class BurstPort(udp.Port):
    """`udp.Port` with burst reads and waits while traffic is slow (module docstring).

    `batch_reads` is set after construction (`listen_udp` does); False never waits.
    """

    log = Logger()
    batch_reads = False
    _waiting = False
    _last_read = 0.0

    def doRead(self) -> None:
        burst: list[Datagram] = []
        receive = self.socket.recvfrom
        size = self.maxPacketSize
        trim = self.addressFamily == socket.AF_INET6
        read = 0
        dry = False
        while read < self.maxThroughput:
            try:
                data, addr = receive(size)
            except OSError as error:
                # Dry (EAGAIN), interrupted, or an ICMP error from an earlier send:
                # nothing more to read this time.
                dry = error.errno in udp._sockErrReadIgnore
                break
            read += len(data)
            # IPv6 addresses come with flow and scope ids: keep (host, port).
            burst.append((data, addr[:2] if trim else addr))
        if not burst:
            return
        try:
            self.protocol.burstReceived(burst)
        except Exception:
            self.log.failure("UDP burst of {count} datagrams", count=len(burst))
        if dry and self.batch_reads:
            self._maybe_wait(len(burst))

    def _maybe_wait(self, count: int) -> None:
        now = self.reactor.seconds()
        elapsed, self._last_read = now - self._last_read, now
        if not worth_waiting(count, elapsed, self.protocol.commit_wait()):
            return
        self.stopReading()  # type: ignore[no-untyped-call]
        self._waiting = True
        self.protocol.read_before_commit(self._read_now)

    def _read_now(self) -> None:
        if not self._waiting:
            return
        self._waiting = False
        if self.connected:
            self.startReading()  # type: ignore[no-untyped-call]
            self.doRead()

    def stopListening(self) -> Any:
        # Pushes left queued while the port waited for the commit: read them now;
        # the daemon's stop commits them, as it would had they been read at once.
        if self._waiting:
            self._read_now()
        return super().stopListening()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Any = None) -> None:
        self._waiting = False
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
