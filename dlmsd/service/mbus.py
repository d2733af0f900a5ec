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

from typing import Any

from twisted.internet.interfaces import IListeningPort

from dlmsd.protocol.mbus import FrameError, MbusApdu, MbusPushStream
from dlmsd.service.config import MbusSerialListenerConfig, MbusTcpListenerConfig
from dlmsd.service.ingest import Ingest
from dlmsd.service.line_receiver import LinePushReceiver
from dlmsd.service.line_tcp import LineTcpFactory, listen_line_tcp
from dlmsd.service.metrics import Metrics
from dlmsd.service.serial_push import SerialPushService

SERIAL_TRANSPORT = "mbus_serial"
TCP_TRANSPORT = "mbus_tcp"


class MbusPushReceiver(LinePushReceiver):
    """Bytes from one line in, reassembled APDUs out to the ingest."""

    def _open(self, max_apdu_size: int) -> None:
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
                self._apdu(event.apdu)
            elif isinstance(event, FrameError):
                self._frame_skipped(event.skipped_bytes, event.reason)
            elif event.partial:
                self._dropped(event.reason)
            else:
                self._refused(event.error, event.reason)

    def reset(self) -> None:
        """Forget a partial frame or APDU (the line was reopened)."""
        self._stream.reset()


# --- over TCP -------------------------------------------------------------------


class MbusTcpFactory(LineTcpFactory):
    """M-Bus frames over TCP (``[[listeners.mbus_tcp]]``)."""

    transport_name = TCP_TRANSPORT
    receiver_type = MbusPushReceiver


def listen_mbus_tcp(
    reactor: Any, ingest: Ingest, metrics: Metrics, config: MbusTcpListenerConfig
) -> tuple[IListeningPort, MbusTcpFactory]:
    """Start an M-Bus-over-TCP listener; returns its port and factory."""
    factory = MbusTcpFactory(ingest, metrics, config)
    return listen_line_tcp(reactor, factory, config), factory


# --- on a serial line -----------------------------------------------------------


class MbusSerialService(SerialPushService):
    """Receives M-Bus pushes on one serial device, reopening it while running."""

    pushes = "M-Bus pushes"

    def __init__(
        self,
        reactor: Any,
        ingest: Ingest,
        metrics: Metrics,
        config: MbusSerialListenerConfig,
    ) -> None:
        receiver = MbusPushReceiver(
            ingest,
            transport=SERIAL_TRANSPORT,
            source=config.device,
            on_frame=metrics.listener(config.name).inc,
            max_apdu_size=config.max_apdu_size,
            system_title=config.system_title,
            on_dropped=metrics.partial_pushes_dropped.labels(config.name).inc,
        )
        super().__init__(reactor, config, receiver)
        self.receiver: MbusPushReceiver = receiver
