"""HDLC push receivers: on a serial line (HAN/P1 port) and over TCP (terminal servers).

Both feed the same `HdlcPushReceiver`: the HDLC stream decoder resyncs on
line noise, the push assembler joins segmented UI/I frames or the GBT blocks of
one push (Landis+Gyr) and strips the LLC header, and each complete APDU goes to
the ingest. A serial port (or a TCP bridge in front of one) serves a single
meter, so its listener may name that meter's system title for pushes that carry
none (plaintext HAN pushes). One receiver per serial port or TCP connection:
each has its own reassembly state.

The serial port is reopened after `reopen_delay` when it fails to open or the
line goes away (a USB adapter unplugged), for as long as the service runs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IListeningPort

from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.hdlc.events import FrameError
from dlmsd.protocol.hdlc.pushes import HdlcPushAssembler, MessageDropped
from dlmsd.protocol.hdlc.reassembly import ReassemblyError
from dlmsd.protocol.hdlc.stream import HdlcStreamDecoder
from dlmsd.service.config import HdlcSerialListenerConfig, HdlcTcpListenerConfig
from dlmsd.service.ingest import Ingest
from dlmsd.service.line_receiver import LinePushReceiver
from dlmsd.service.line_tcp import LineTcpFactory, listen_line_tcp
from dlmsd.service.metrics import Metrics
from dlmsd.service.serial_push import SerialPushService

SERIAL_TRANSPORT = "hdlc_serial"
TCP_TRANSPORT = "hdlc_tcp"


class HdlcPushReceiver(LinePushReceiver):
    """Bytes from one line in, reassembled APDUs out to the ingest."""

    def _open(self, max_apdu_size: int) -> None:
        self._decoder = HdlcStreamDecoder()
        self._reassembler = HdlcPushAssembler(max_apdu_size)

    def data_received(self, data: bytes) -> None:
        """Feed bytes read from the line."""
        decoder = self._decoder
        decoder.receive_data(data)
        while True:
            event = decoder.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, FrameError):
                self._frame_skipped(event.skipped_bytes, event.reason)
                continue
            self._on_frame()
            for item in self._reassembler.feed(event):
                if isinstance(item, ReassemblyError):
                    self._refused(item.error, item.reason)
                elif isinstance(item, MessageDropped):
                    self._dropped(item.reason)
                else:
                    self._apdu(item.apdu)

    def reset(self) -> None:
        """Forget a partial frame or APDU (the line was reopened)."""
        self._decoder = HdlcStreamDecoder()
        self._reassembler.reset()


# --- over TCP -------------------------------------------------------------------


class HdlcTcpFactory(LineTcpFactory):
    """HDLC frames over TCP (``[[listeners.hdlc_tcp]]``)."""

    transport_name = TCP_TRANSPORT
    receiver_type = HdlcPushReceiver


def listen_hdlc_tcp(
    reactor: Any, ingest: Ingest, metrics: Metrics, config: HdlcTcpListenerConfig
) -> tuple[IListeningPort, HdlcTcpFactory]:
    """Start an HDLC-over-TCP listener; returns its port and factory."""
    factory = HdlcTcpFactory(ingest, metrics, config)
    return listen_line_tcp(reactor, factory, config), factory


# --- on a serial line -----------------------------------------------------------


class HdlcSerialService(SerialPushService):
    """Receives HDLC pushes on one serial device, reopening it while running."""

    pushes = "HDLC pushes"

    def __init__(
        self,
        reactor: Any,
        ingest: Ingest,
        metrics: Metrics,
        config: HdlcSerialListenerConfig,
    ) -> None:
        receiver = HdlcPushReceiver(
            ingest,
            transport=SERIAL_TRANSPORT,
            source=config.device,
            on_frame=metrics.listener(config.name).inc,
            max_apdu_size=config.max_apdu_size,
            system_title=config.system_title,
            on_dropped=metrics.partial_pushes_dropped.labels(config.name).inc,
        )
        super().__init__(reactor, config, receiver)
        self.receiver: HdlcPushReceiver = receiver
