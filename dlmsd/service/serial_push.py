"""What every push listener on a serial line shares: open the device, feed its
bytes to a receiver, reopen it after `reopen_delay` when it fails to open or the
line goes away (a USB adapter unplugged), for as long as the service runs.

The HDLC and M-Bus listeners differ only in their receiver (`data_received`,
`reset`) and the word they log for their pushes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.application.service import Service
from twisted.internet.base import DelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure


class LineReceiver(TypingProtocol):
    """Bytes from one line in (a push receiver with its own reassembly state)."""

    def data_received(self, data: bytes) -> None: ...

    def reset(self) -> None: ...


class SerialLineSettings(TypingProtocol):
    """The serial options every serial listener's config has."""

    @property
    def name(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def baudrate(self) -> int: ...
    @property
    def bytesize(self) -> int: ...
    @property
    def parity(self) -> str: ...
    @property
    def stopbits(self) -> float: ...
    @property
    def reopen_delay(self) -> float: ...


class SerialLineProtocol(Protocol):
    """The protocol a `SerialPort` drives; tells its service when the line goes away."""

    def __init__(self, receiver: LineReceiver, on_lost: Callable[[Failure], object]) -> None:
        self._receiver = receiver
        self._on_lost = on_lost

    def dataReceived(self, data: bytes) -> None:
        self._receiver.data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._on_lost(reason)


class SerialPushService(Service):
    """Receives pushes on one serial device through `receiver`, reopening it while running."""

    log = Logger()
    pushes = "pushes"  # what the start line says it listens for ("HDLC pushes", ...)

    def __init__(self, reactor: Any, config: SerialLineSettings, receiver: LineReceiver) -> None:
        self._reactor = reactor
        self.config = config
        self.receiver = receiver
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
        protocol = SerialLineProtocol(self.receiver, self._lost)
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
        self.log.info(
            "listening for {pushes} on {device}", pushes=self.pushes, device=config.device
        )

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
