"""Sans-io APDU transports: move whole APDUs over a byte stream, both ends.

A client session speaks APDUs; a meter is reached over the IEC 62056-47 wrapper
(TCP or UDP) or over HDLC (serial line, or a terminal server on TCP). The
drivers own the sockets and the timers and move bytes through one of these::

    write(transport.connect())             # SNRM for HDLC, nothing for the wrapper
    for chunk in transport.frame(apdu):    # frames for one request APDU
        write(chunk)
    transport.receive_data(read())
    apdu = transport.next_apdu()           # bytes, or NEED_DATA
    for chunk in transport.data_to_send(): # acks the link itself needs (HDLC RR, next window)
        write(chunk)
    on silence: write(b"".join(transport.on_timeout()))  # HDLC retransmission

The server ends (:class:`WrapperServerTransport`, :class:`HdlcServerTransport`)
are what the meter emulator runs: they answer SNRM with UA and negotiated
parameters, number I frames, segment long answers and answer DISC with UA.

Decoding errors are :class:`~dlmsd.protocol.errors.DlmsError`; a link the peer
takes down raises a :class:`~dlmsd.client.errors.ClientError` subclass.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from dlmsd.client.errors import ConnectionClosed, LinkRefused
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.events import NEED_DATA, NeedData
from dlmsd.protocol.hdlc import (
    LLC_RESPONSE,
    ApduReceived,
    Connected,
    Control,
    Disconnected,
    FrameError,
    FrameKind,
    HdlcAddress,
    HdlcConnection,
    HdlcFrame,
    HdlcParameters,
    HdlcStreamDecoder,
    SegmentReassembler,
    SegmentReceived,
    SendFrames,
)
from dlmsd.protocol.hdlc.window import SEQUENCE_MODULUS, SendWindow
from dlmsd.protocol.wrapper import (
    MAX_APDU_LENGTH,
    WrapperFrame,
    WrapperStreamDecoder,
    decode_datagram,
)

PUBLIC_CLIENT = 16
MANAGEMENT_CLIENT = 1
#: The usual server (logical device) address: management logical device 1.
DEFAULT_LOGICAL_DEVICE = 1
#: A common default lower HDLC address (many meters use 0x11 or one from their serial).
DEFAULT_PHYSICAL_ADDRESS = 17
#: What our HDLC client proposes: big frames and a window of 1 (what every meter supports).
DEFAULT_CLIENT_PARAMETERS = HdlcParameters(max_info_tx=512, max_info_rx=512)
#: What our HDLC server end (the emulator) offers.
DEFAULT_SERVER_PARAMETERS = HdlcParameters(max_info_tx=512, max_info_rx=512)
DEFAULT_SERVER_ADDRESS = HdlcAddress.server(DEFAULT_LOGICAL_DEVICE, DEFAULT_PHYSICAL_ADDRESS)


class ClientTransport(Protocol):
    """What a client driver needs from a transport (both ends are sans-io)."""

    @property
    def connected(self) -> bool:
        """The link is up: APDUs may be framed."""

    @property
    def closed(self) -> bool:
        """The link is down after our :meth:`disconnect` was answered (or never opened)."""

    def connect(self) -> bytes:
        """Bytes that open the link (empty when the link needs no opening)."""

    def frame(self, apdu: bytes) -> list[bytes]:
        """The frames for one APDU that may be written now."""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the line."""

    def next_apdu(self) -> bytes | NeedData:
        """The next complete APDU from the peer, or ``NEED_DATA``."""

    def data_to_send(self) -> list[bytes]:
        """Frames the link itself must send now (acknowledgements, the next window)."""

    def on_timeout(self) -> list[bytes]:
        """The driver's timer ran out: frames to retransmit (may be empty)."""

    def disconnect(self) -> bytes:
        """Bytes that close the link (empty when there is nothing to close)."""

    def reassign(self, client_address: int) -> None:
        """Speak as another client SAP from now on (the link must be down for HDLC)."""

    def request_more(self) -> list[bytes]:
        """Frames that let the peer go on sending (HDLC: an RR poll; the wrapper: none)."""


class _WrapperInput:
    """Wrapper frames in, from a TCP stream or from UDP datagrams (one frame each)."""

    def __init__(self, datagram: bool, max_apdu_length: int) -> None:
        self._datagram = datagram
        self._max_apdu_length = max_apdu_length
        self._decoder = WrapperStreamDecoder(max_apdu_length)
        self._datagrams: deque[WrapperFrame] = deque()

    def receive_data(self, data: bytes) -> None:
        if self._datagram:
            self._datagrams.append(decode_datagram(data, self._max_apdu_length))
        else:
            self._decoder.receive_data(data)

    def next_frame(self) -> WrapperFrame | NeedData:
        if self._datagram:
            return self._datagrams.popleft() if self._datagrams else NEED_DATA
        return self._decoder.next_event()


class WrapperTransport:
    """Client end of the IEC 62056-47 wrapper, on a TCP stream or as UDP datagrams.

    Frames from other wPorts are dropped (a meter serving several clients on one
    connection); a bad header raises :class:`DlmsError` (the stream cannot resync).
    """

    def __init__(
        self,
        client_wport: int = PUBLIC_CLIENT,
        server_wport: int = DEFAULT_LOGICAL_DEVICE,
        *,
        datagram: bool = False,
        max_apdu_length: int = MAX_APDU_LENGTH,
    ) -> None:
        self.client_wport = client_wport
        self.server_wport = server_wport
        self._input = _WrapperInput(datagram, max_apdu_length)
        self.ignored_frames = 0

    @property
    def connected(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return True

    def connect(self) -> bytes:
        return b""

    def frame(self, apdu: bytes) -> list[bytes]:
        return [WrapperFrame(self.client_wport, self.server_wport, apdu).to_bytes()]

    def receive_data(self, data: bytes) -> None:
        self._input.receive_data(data)

    def next_apdu(self) -> bytes | NeedData:
        while True:
            frame = self._input.next_frame()
            if frame is NEED_DATA:
                return NEED_DATA
            if (
                frame.destination_wport == self.client_wport
                and frame.source_wport == self.server_wport
            ):
                return frame.apdu
            self.ignored_frames += 1

    def data_to_send(self) -> list[bytes]:
        return []

    def on_timeout(self) -> list[bytes]:
        return []

    def disconnect(self) -> bytes:
        return b""

    def reassign(self, client_address: int) -> None:
        """Talk as another client SAP on the same stream (public, then management)."""
        self.client_wport = client_address

    def request_more(self) -> list[bytes]:
        return []


class HdlcTransport:
    """Client end of an HDLC link (IEC 62056-46), over :class:`HdlcConnection`.

    Segmented answers are acknowledged with RR as they arrive; noise and
    corrupted frames are skipped (the peer's next frame or our retransmission
    recovers); the driver calls :meth:`on_timeout` on silence (a few times,
    then it gives up).
    """

    def __init__(
        self,
        client_address: int = PUBLIC_CLIENT,
        server_address: HdlcAddress | int = DEFAULT_SERVER_ADDRESS,
        *,
        parameters: HdlcParameters | None = DEFAULT_CLIENT_PARAMETERS,
        max_apdu_length: int = MAX_APDU_LENGTH,
    ) -> None:
        self._server_address = server_address
        self._parameters = parameters
        self._max_apdu_length = max_apdu_length
        self._connection = self._new_connection(client_address)
        self._outgoing: list[bytes] = []
        self._connected = False
        self._closing = False
        self._closed = True
        self.skipped_frames = 0

    def _new_connection(self, client_address: int) -> HdlcConnection:
        return HdlcConnection(
            client_address,
            self._server_address,
            parameters=self._parameters,
            max_apdu_length=self._max_apdu_length,
        )

    @property
    def client_address(self) -> int:
        return self._connection.client_address.logical

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def parameters(self) -> HdlcParameters:
        """The negotiated link parameters (client's view)."""
        return self._connection.parameters

    def request_more(self) -> list[bytes]:
        """An RR poll: in normal response mode the meter sends only when polled.

        Needed when it streams several APDUs (a GBT window) in a row: each ends
        with the final bit, and the next waits for our poll.
        """
        if not self._connected:
            return []
        return [self._connection.acknowledge()]

    def reassign(self, client_address: int) -> None:
        """Use another client address for the next :meth:`connect` (link must be down)."""
        self._connection = self._new_connection(client_address)
        self._connected = False

    def connect(self) -> bytes:
        self._closing = False
        self._closed = False
        return self._connection.connect()

    def frame(self, apdu: bytes) -> list[bytes]:
        if not self._connected:
            raise ConnectionClosed("the HDLC link is not connected")
        return self._connection.send_apdu(apdu)

    def receive_data(self, data: bytes) -> None:
        self._connection.receive_data(data)

    def next_apdu(self) -> bytes | NeedData:
        connection = self._connection
        while True:
            event = connection.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if isinstance(event, ApduReceived):
                return event.apdu
            if isinstance(event, SegmentReceived):
                self._outgoing.append(connection.acknowledge())
            elif isinstance(event, SendFrames):
                self._outgoing.extend(event.frames)
            elif isinstance(event, Connected):
                self._connected = True
            elif isinstance(event, Disconnected):
                self._on_disconnected(event.reason)
            elif isinstance(event, FrameError):
                self.skipped_frames += 1
            # FrameIgnored and ReassemblyError: the retransmission recovers.

    def _on_disconnected(self, reason: str) -> None:
        was_connected = self._connected
        self._connected = False
        self._closed = True
        if self._closing:
            return
        if not was_connected:
            raise LinkRefused(f"HDLC link refused: {reason}")
        raise ConnectionClosed(f"HDLC link lost: {reason}")

    def data_to_send(self) -> list[bytes]:
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def on_timeout(self) -> list[bytes]:
        try:
            return [self._connection.retransmit()]
        except DlmsError:
            return []

    def disconnect(self) -> bytes:
        if self._closed:
            return b""
        self._closing = True
        self._connected = False
        return self._connection.disconnect()


# -- server ends (the meter emulator) -----------------------------------------


class WrapperServerTransport:
    """Server end of the wrapper: APDUs in from any client wPort, answers back to it."""

    def __init__(
        self,
        server_wport: int = DEFAULT_LOGICAL_DEVICE,
        *,
        datagram: bool = False,
        max_apdu_length: int = MAX_APDU_LENGTH,
        more_wports: tuple[int, ...] = (),
    ) -> None:
        self.server_wport = server_wport
        #: Every logical device served (frames to others are ignored).
        self.server_wports = frozenset((server_wport, *more_wports))
        self._input = _WrapperInput(datagram, max_apdu_length)
        #: The client wPort of the last APDU returned: answers go there.
        self.client_address = PUBLIC_CLIENT
        #: The logical device the last APDU returned was for: answers come from it.
        self.server_address = server_wport

    def receive_data(self, data: bytes) -> None:
        self._input.receive_data(data)

    def next_apdu(self) -> bytes | NeedData:
        while True:
            frame = self._input.next_frame()
            if frame is NEED_DATA:
                return NEED_DATA
            if frame.destination_wport in self.server_wports:
                self.client_address = frame.source_wport
                self.server_address = frame.destination_wport
                return frame.apdu

    def frame(self, apdu: bytes) -> list[bytes]:
        return [WrapperFrame(self.server_address, self.client_address, apdu).to_bytes()]

    def data_to_send(self) -> list[bytes]:
        return []


class HdlcServerTransport:
    """Server end of an HDLC link in normal response mode (what a meter does).

    * SNRM: reset the link, answer UA with the parameters both sides can use.
    * I frames in sequence are reassembled into APDUs; a segment with the poll
      bit is answered RR. :meth:`frame` segments an answer to the negotiated
      size and sends a window, the final bit on its last frame; the client's RR
      asks for the next window (or, with an old N(R), for a resend: go-back-N).
    * A repeated I frame (the client missed our answer) gets the last window again.
    * DISC: UA (DM when not connected); any other frame when not connected: DM.

    Frames addressed to another server are ignored, as on a shared bus. The upper
    address selects a logical device: ``server_address`` or one of
    ``more_logical_devices``; an SNRM links to the one it names, and frames for a
    device the link is not with get DM from that device.
    """

    def __init__(
        self,
        server_address: HdlcAddress | int = DEFAULT_SERVER_ADDRESS,
        *,
        parameters: HdlcParameters = DEFAULT_SERVER_PARAMETERS,
        max_apdu_length: int = MAX_APDU_LENGTH,
        more_logical_devices: tuple[int, ...] = (),
    ) -> None:
        if isinstance(server_address, int):
            server_address = HdlcAddress.server(server_address)
        #: The logical device of the current (or last) link.
        self.server_address = server_address
        self._logical_devices = frozenset((server_address.logical, *more_logical_devices))
        self._capabilities = parameters
        self._max_apdu_length = max_apdu_length
        self._decoder = HdlcStreamDecoder()
        self._reassembler = SegmentReassembler(max_apdu_length)
        self._apdus: deque[bytes] = deque()
        self._outgoing: list[bytes] = []
        self._client: HdlcAddress | None = None
        self.parameters = HdlcParameters()  # the server's view once connected
        self._window = SendWindow()
        self._receive_state = 0
        self._last_window: list[bytes] = []
        self.skipped_frames = 0

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client_address(self) -> int:
        """The client address of the connected link (the client SAP)."""
        return self._client.logical if self._client is not None else PUBLIC_CLIENT

    def receive_data(self, data: bytes) -> None:
        self._decoder.receive_data(data)

    def next_apdu(self) -> bytes | NeedData:
        while not self._apdus:
            item = self._decoder.next_event()
            if item is NEED_DATA:
                return NEED_DATA
            if isinstance(item, FrameError):
                self.skipped_frames += 1
                continue
            self._handle(item)
        return self._apdus.popleft()

    def frame(self, apdu: bytes) -> list[bytes]:
        """Queue an answer APDU; returns the I frames the window allows now."""
        if self._client is None:
            return []
        information = LLC_RESPONSE + apdu
        size = max(1, self.parameters.max_info_tx)
        # Several answers (GBT blocks of one window) queue up behind each other.
        self._window.enqueue(information, size)
        frames = self._pump()
        if frames:
            self._last_window = frames
        return frames

    def data_to_send(self) -> list[bytes]:
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    # -- frames from the client -----------------------------------------------

    def _handle(self, frame: HdlcFrame) -> None:
        destination = frame.destination
        if destination.logical not in self._logical_devices or (
            destination.physical != self.server_address.physical
        ):
            return  # another meter on the bus, or a logical device this one does not have
        kind = frame.control.kind
        if kind is FrameKind.SNRM:
            self.server_address = HdlcAddress.server(
                destination.logical, self.server_address.physical
            )
            self._on_snrm(frame)
        elif destination.logical != self.server_address.logical:
            if kind is not FrameKind.UI:  # not linked with that logical device
                device = HdlcAddress.server(destination.logical, self.server_address.physical)
                self._reply_dm(frame.source, device)
        elif kind is FrameKind.DISC:
            connected = self._client is not None
            self._client = frame.source
            self._send(FrameKind.UA if connected else FrameKind.DM)
            self._client = None
            self._reset()
        elif self._client is None or frame.source.logical != self._client.logical:
            if kind is not FrameKind.UI:
                self._reply_dm(frame.source)
        elif kind is FrameKind.I:
            self._on_information(frame)
        elif kind in (FrameKind.RR, FrameKind.RNR):
            self._on_receive_ready(frame)

    def _on_snrm(self, frame: HdlcFrame) -> None:
        try:
            proposed = HdlcParameters.from_bytes(frame.information)
        except DlmsError:
            self._reply_dm(frame.source)
            return
        ours = self._capabilities
        # UA values are the server's view: what we send is bounded by what the client takes.
        self.parameters = HdlcParameters(
            max_info_tx=max(1, min(ours.max_info_tx, proposed.max_info_rx)),
            max_info_rx=max(1, min(ours.max_info_rx, proposed.max_info_tx)),
            window_tx=max(1, min(ours.window_tx, proposed.window_rx, 7)),
            window_rx=max(1, min(ours.window_rx, proposed.window_tx, 7)),
        )
        self._client = frame.source
        self._reset()
        self._send(FrameKind.UA, self.parameters.to_bytes())

    def _on_information(self, frame: HdlcFrame) -> None:
        control = frame.control
        if control.ssn != self._receive_state:
            if control.poll_final:
                duplicate = control.ssn == (self._receive_state - 1) % SEQUENCE_MODULUS
                if duplicate and self._last_window and not self._reassembler.pending:
                    self._outgoing.extend(self._last_window)  # our answer was lost
                else:
                    self._send_supervisory()
            return
        self._receive_state = (self._receive_state + 1) % SEQUENCE_MODULUS
        self._window.acknowledge_up_to(control.rsn)
        for event in self._reassembler.feed(frame):
            if isinstance(event, ApduReceived):
                self._window.clear()
                self._apdus.append(event.apdu)
        if frame.segmented and control.poll_final:
            self._send_supervisory()

    def _on_receive_ready(self, frame: HdlcFrame) -> None:
        if not self._window.acknowledge_up_to(frame.control.rsn):
            return
        if not frame.control.poll_final:
            return
        # Unacknowledged frames after the client's poll were lost: go back to N(R).
        frames = self._resend_unacked() if self._window.has_unacked else self._pump()
        if frames:
            self._last_window = frames
            self._outgoing.extend(frames)
        else:
            self._send_supervisory()

    # -- helpers --------------------------------------------------------------

    def _reset(self) -> None:
        self._window.reset()
        self._receive_state = 0
        self._last_window = []
        self._reassembler.reset()

    def _pump(self) -> list[bytes]:
        segments = self._window.take(self.parameters.window_tx)
        return [self._information(s.ssn, s.chunk, s.segmented, s.final) for s in segments]

    def _resend_unacked(self) -> list[bytes]:
        return [
            self._information(s.ssn, s.chunk, s.segmented, s.final) for s in self._window.unacked()
        ]

    def _information(self, ssn: int, chunk: bytes, segmented: bool, final: bool) -> bytes:
        assert self._client is not None
        control = Control(FrameKind.I, final, ssn, self._receive_state)
        return HdlcFrame(self._client, self.server_address, control, chunk, segmented).to_bytes()

    def _send_supervisory(self) -> None:
        assert self._client is not None
        control = Control(FrameKind.RR, True, 0, self._receive_state)
        self._outgoing.append(HdlcFrame(self._client, self.server_address, control).to_bytes())

    def _send(self, kind: FrameKind, information: bytes = b"") -> None:
        assert self._client is not None
        frame = HdlcFrame(self._client, self.server_address, Control(kind), information)
        self._outgoing.append(frame.to_bytes())

    def _reply_dm(self, client: HdlcAddress, server: HdlcAddress | None = None) -> None:
        frame = HdlcFrame(client, server or self.server_address, Control(FrameKind.DM))
        self._outgoing.append(frame.to_bytes())
