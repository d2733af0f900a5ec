"""Wired M-Bus push receivers: on a serial line (customer interface) and over TCP (bridge).

Austrian meters (Kaifa MA309, Sagemcom T210-D, ...) push DLMS APDUs split over
EN 13757-2 long frames on their M-Bus customer interface, 2400 baud 8E1. Both
listeners feed an `MbusPushReceiver` (one per serial port or TCP connection, so
one reassembly state each): the stream decoder resyncs on line noise, the
reassembler joins the segments, and each complete APDU goes to the ingest. One
line serves one meter, so a listener may name it (`system_title` or `meter`) for
pushes that carry no system title.

Segments dropped without a fault of their own (the line was joined mid-push, a
new push began before the last segment of the previous one) are logged and
counted in ``dlmsd_partial_pushes_dropped{listener}``; every other refusal is a
rejection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from dlmsd.protocol.errors import LengthError
from dlmsd.protocol.mbus import FrameError, MbusApdu, MbusPushStream, ReassemblyError
from dlmsd.service.config import MbusSerialListenerConfig, MbusTcpListenerConfig
from dlmsd.service.ingest import Ingest, RejectReason
from dlmsd.service.metrics import Metrics
from dlmsd.service.tcp import PushStreamFactory, PushStreamProtocol

SERIAL_TRANSPORT = "mbus_serial"
TCP_TRANSPORT = "mbus_tcp"


class MbusPushReceiver:
    """Bytes from one line in, reassembled APDUs out to the ingest."""

    log = Logger()

    def __init__(
        self,
        ingest: Ingest,
        *,
        transport: str,
        source: str,
        on_frame: Callable[[], object],
        max_apdu_size: int,
        system_title: bytes | None = None,
        on_dropped: Callable[[], object] | None = None,
    ) -> None:
        self._ingest = ingest
        self._transport = transport
        self.source = source
        self._on_frame = on_frame
        self._on_dropped = on_dropped
        self._system_title = system_title
        self._stream = MbusPushStream(max_apdu_size)

    def data_received(self, data: bytes) -> None:
        """Feed bytes read from the line."""
        stream = self._stream
        frames = stream.frames
        events = stream.feed(data)
        for _ in range(stream.frames - frames):
            self._on_frame()
        for event in events:
            if isinstance(event, MbusApdu):
                self._ingest.handle(event.apdu, self.source, self._transport, self._system_title)
            elif isinstance(event, FrameError):
                self._ingest.reject(
                    RejectReason.MALFORMED,
                    self.source,
                    self._transport,
                    f"skipped {event.skipped_bytes} bytes: {event.reason}",
                )
            elif event.partial:
                self._dropped(event)
            else:
                too_big = isinstance(event.error, LengthError)
                reason = RejectReason.OVERSIZE if too_big else RejectReason.MALFORMED
                self._ingest.reject(reason, self.source, self._transport, event.reason)

    def _dropped(self, event: ReassemblyError) -> None:
        if self._on_dropped is not None:
            self._on_dropped()
        self.log.info(
            "{source} ({transport}): partial push dropped: {reason}",
            source=self.source,
            transport=self._transport,
            reason=event.reason,
        )

    def reset(self) -> None:
        """Forget a partial frame or APDU (the line was reopened)."""
        self._stream.reset()


# --- over TCP -------------------------------------------------------------------


class MbusTcpFactory(PushStreamFactory):
    """M-Bus frames over TCP (``[[listeners.mbus_tcp]]``)."""

    transport_name = TCP_TRANSPORT

    def __init__(self, ingest: Ingest, metrics: Metrics, config: MbusTcpListenerConfig) -> None:
        super().__init__(
            ingest,
            metrics,
            name=config.name,
            idle_timeout=config.idle_timeout,
            max_connections=config.max_connections,
            max_connections_per_source=config.max_connections_per_source,
        )
        self.max_apdu_size = config.max_apdu_size
        self.system_title = config.system_title
        self.dropped = metrics.partial_pushes_dropped.labels(config.name).inc

    def make_protocol(self) -> PushStreamProtocol:
        return MbusTcpProtocol()


class MbusTcpProtocol(PushStreamProtocol):
    """One TCP connection carrying M-Bus frames."""

    _receiver: MbusPushReceiver

    def connectionMade(self) -> None:
        super().connectionMade()
        factory = self.factory
        assert isinstance(factory, MbusTcpFactory)
        self._receiver = MbusPushReceiver(
            factory.ingest,
            transport=TCP_TRANSPORT,
            source=self.source,
            on_frame=self.frame_received,
            max_apdu_size=factory.max_apdu_size,
            system_title=factory.system_title,
            on_dropped=factory.dropped,
        )

    def dataReceived(self, data: bytes) -> None:
        self._receiver.data_received(data)


def listen_mbus_tcp(
    reactor: Any, ingest: Ingest, metrics: Metrics, config: MbusTcpListenerConfig
) -> tuple[IListeningPort, MbusTcpFactory]:
    """Start an M-Bus-over-TCP listener; returns its port and factory."""
    factory = MbusTcpFactory(ingest, metrics, config)
    port: IListeningPort = reactor.listenTCP(
        config.port, factory, backlog=1024, interface=config.address
    )
    return port, factory


# --- on a serial line -----------------------------------------------------------


class _SerialProtocol(Protocol):
    """The protocol a `SerialPort` drives; tells its service when the line goes away."""

    def __init__(self, receiver: MbusPushReceiver, on_lost: Callable[[Failure], object]) -> None:
        self._receiver = receiver
        self._on_lost = on_lost

    def dataReceived(self, data: bytes) -> None:
        self._receiver.data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._on_lost(reason)


class MbusSerialService(Service):
    """Receives M-Bus pushes on one serial device, reopening it while running
    (as `dlmsd.service.hdlc.HdlcSerialService` does for HDLC)."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        ingest: Ingest,
        metrics: Metrics,
        config: MbusSerialListenerConfig,
    ) -> None:
        self._reactor = reactor
        self.config = config
        self.receiver = MbusPushReceiver(
            ingest,
            transport=SERIAL_TRANSPORT,
            source=config.device,
            on_frame=metrics.listener(config.name).inc,
            max_apdu_size=config.max_apdu_size,
            system_title=config.system_title,
            on_dropped=metrics.partial_pushes_dropped.labels(config.name).inc,
        )
        self.port: Any = None
        self._reopen: DelayedCall | None = None
        self.setName(config.name)  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._open()

    def _open(self) -> None:
        self._reopen = None
        from twisted.internet.serialport import SerialPort

        config = self.config
        self.receiver.reset()
        protocol = _SerialProtocol(self.receiver, self._lost)
        try:
            self.port = SerialPort(  # type: ignore[no-untyped-call]
                protocol,
                config.device,
                self._reactor,
                baudrate=config.baudrate,
                bytesize=config.bytesize,
                parity=config.parity,
                stopbits=config.stopbits,
            )
        except Exception as error:  # serial.SerialException is an OSError only sometimes
            self.log.error(
                "cannot open serial device {device}: {error}; retrying in {delay}s",
                device=config.device,
                error=str(error),
                delay=config.reopen_delay,
            )
            self._schedule_reopen()
            return
        self.log.info("listening for M-Bus pushes on {device}", device=config.device)

    def _lost(self, reason: Failure) -> None:
        self.port = None
        if not self.running:
            return
        self.log.warn(
            "serial device {device} closed: {error}; reopening in {delay}s",
            device=self.config.device,
            error=reason.getErrorMessage(),
            delay=self.config.reopen_delay,
        )
        self._schedule_reopen()

    def _schedule_reopen(self) -> None:
        if self.running and self._reopen is None:
            self._reopen = self._reactor.callLater(self.config.reopen_delay, self._open)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._reopen is not None and self._reopen.active():
            self._reopen.cancel()
        self._reopen = None
        if self.port is not None:
            self.port.loseConnection()
            self.port = None
