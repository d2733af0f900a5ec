"""Client side of an HDLC link (IEC 62056-46 normal response mode), sans-io.

The driver owns the line and the timers::

    conn = HdlcConnection(client_address=16, server_address=HdlcAddress.server(1, 17))
    write(conn.connect())                  # SNRM
    conn.receive_data(read())              # UA
    conn.next_event()                      # -> Connected(parameters)
    for frame in conn.send_apdu(aarq):     # I frames, segmented to the negotiated size
        write(frame)
    ...                                    # -> ApduReceived(aare), SegmentReceived, ...

``next_event()`` returns ``NEED_DATA`` when the buffered bytes are used up. On
:class:`SegmentReceived` the driver sends ``acknowledge()``; on
:class:`SendFrames` it writes the frames; on its own timeout it sends
``retransmit()``. Transitions follow :data:`TRANSITIONS`; print
:func:`describe_transitions` to see them.
"""

from __future__ import annotations

import enum
from collections import deque

from dlmsd.protocol.errors import DlmsError, ProtocolError
from dlmsd.protocol.events import NEED_DATA, NeedData
from dlmsd.protocol.hdlc.address import HdlcAddress
from dlmsd.protocol.hdlc.events import (
    ApduReceived,
    Connected,
    Disconnected,
    FrameError,
    FrameIgnored,
    SegmentReceived,
    SendFrames,
)
from dlmsd.protocol.hdlc.frames import LLC_COMMAND, Control, FrameKind, HdlcFrame
from dlmsd.protocol.hdlc.parameters import HdlcParameters
from dlmsd.protocol.hdlc.reassembly import (
    DEFAULT_MAX_APDU_LENGTH,
    ReassemblyError,
    SegmentReassembler,
)
from dlmsd.protocol.hdlc.stream import HdlcStreamDecoder
from dlmsd.protocol.hdlc.window import SEQUENCE_MODULUS, SendWindow

ConnectionEvent = (
    Connected
    | Disconnected
    | ApduReceived
    | SegmentReceived
    | SendFrames
    | FrameIgnored
    | FrameError
    | ReassemblyError
)

_MAX_WINDOW = 7


class ConnectionState(enum.Enum):
    """Where the client side of the link is."""

    DISCONNECTED = "disconnected"
    AWAITING_UA = "awaiting UA"
    CONNECTED = "connected"
    AWAITING_DISCONNECT = "awaiting disconnect"


class Trigger(enum.Enum):
    """What moves the state machine: a frame we send or one we receive."""

    SEND_SNRM = "send SNRM"
    SEND_DISC = "send DISC"
    SEND_I = "send I"
    SEND_RR = "send RR"
    RECEIVE_UA = "receive UA"
    RECEIVE_DM = "receive DM"
    RECEIVE_FRMR = "receive FRMR"
    RECEIVE_I = "receive I"
    RECEIVE_RR = "receive RR"
    RECEIVE_RNR = "receive RNR"
    RECEIVE_UI = "receive UI"


_S = ConnectionState
_T = Trigger

TRANSITIONS: dict[tuple[ConnectionState, Trigger], ConnectionState] = {
    (_S.DISCONNECTED, _T.SEND_SNRM): _S.AWAITING_UA,
    (_S.DISCONNECTED, _T.RECEIVE_UI): _S.DISCONNECTED,
    (_S.AWAITING_UA, _T.SEND_SNRM): _S.AWAITING_UA,
    (_S.AWAITING_UA, _T.SEND_DISC): _S.AWAITING_DISCONNECT,
    (_S.AWAITING_UA, _T.RECEIVE_UA): _S.CONNECTED,
    (_S.AWAITING_UA, _T.RECEIVE_DM): _S.DISCONNECTED,
    (_S.AWAITING_UA, _T.RECEIVE_FRMR): _S.DISCONNECTED,
    (_S.AWAITING_UA, _T.RECEIVE_UI): _S.AWAITING_UA,
    (_S.CONNECTED, _T.SEND_I): _S.CONNECTED,
    (_S.CONNECTED, _T.SEND_RR): _S.CONNECTED,
    (_S.CONNECTED, _T.SEND_DISC): _S.AWAITING_DISCONNECT,
    (_S.CONNECTED, _T.RECEIVE_I): _S.CONNECTED,
    (_S.CONNECTED, _T.RECEIVE_RR): _S.CONNECTED,
    (_S.CONNECTED, _T.RECEIVE_RNR): _S.CONNECTED,
    (_S.CONNECTED, _T.RECEIVE_UI): _S.CONNECTED,
    (_S.CONNECTED, _T.RECEIVE_DM): _S.DISCONNECTED,
    (_S.CONNECTED, _T.RECEIVE_FRMR): _S.DISCONNECTED,
    (_S.AWAITING_DISCONNECT, _T.SEND_DISC): _S.AWAITING_DISCONNECT,
    (_S.AWAITING_DISCONNECT, _T.RECEIVE_UA): _S.DISCONNECTED,
    (_S.AWAITING_DISCONNECT, _T.RECEIVE_DM): _S.DISCONNECTED,
    (_S.AWAITING_DISCONNECT, _T.RECEIVE_UI): _S.AWAITING_DISCONNECT,
}

_RECEIVE_TRIGGERS = {
    FrameKind.UA: Trigger.RECEIVE_UA,
    FrameKind.DM: Trigger.RECEIVE_DM,
    FrameKind.FRMR: Trigger.RECEIVE_FRMR,
    FrameKind.I: Trigger.RECEIVE_I,
    FrameKind.RR: Trigger.RECEIVE_RR,
    FrameKind.RNR: Trigger.RECEIVE_RNR,
    FrameKind.UI: Trigger.RECEIVE_UI,
}


def describe_transitions() -> str:
    """The state table as aligned text, one transition per line."""
    width = max(len(state.value) for state in ConnectionState)
    trigger_width = max(len(trigger.value) for trigger in Trigger)
    return "\n".join(
        f"{state.value:<{width}}  --{trigger.value:-<{trigger_width}}->  {target.value}"
        for (state, trigger), target in TRANSITIONS.items()
    )


def negotiate(proposed: HdlcParameters, answer: HdlcParameters) -> HdlcParameters:
    """The client's view of the link after the server's UA ``answer`` to ``proposed``.

    The UA speaks for the server: what it transmits bounds what we receive.
    Results are clamped to sane ranges, so a UA announcing 0 cannot stall
    segmentation.
    """
    return HdlcParameters(
        max_info_tx=max(1, min(proposed.max_info_tx, answer.max_info_rx)),
        max_info_rx=max(1, min(proposed.max_info_rx, answer.max_info_tx)),
        window_tx=max(1, min(proposed.window_tx, answer.window_rx, _MAX_WINDOW)),
        window_rx=max(1, min(proposed.window_rx, answer.window_tx, _MAX_WINDOW)),
    )


def _as_client(address: HdlcAddress | int) -> HdlcAddress:
    return HdlcAddress.client(address) if isinstance(address, int) else address


def _as_server(address: HdlcAddress | int) -> HdlcAddress:
    return HdlcAddress.server(address) if isinstance(address, int) else address


def _same_station(a: HdlcAddress, b: HdlcAddress) -> bool:
    # 02 23 and 00 02 00 23 name the same station.
    return a.logical == b.logical and a.physical == b.physical


class HdlcConnection:
    """The client end of one HDLC link to one server (a meter's logical device)."""

    def __init__(
        self,
        client_address: HdlcAddress | int,
        server_address: HdlcAddress | int,
        *,
        parameters: HdlcParameters | None = None,
        max_apdu_length: int = DEFAULT_MAX_APDU_LENGTH,
    ) -> None:
        """``parameters`` are proposed in the SNRM; None sends an SNRM without them."""
        self.client_address = _as_client(client_address)
        self.server_address = _as_server(server_address)
        self._proposed = parameters
        self.state = ConnectionState.DISCONNECTED
        self.parameters = HdlcParameters()  # negotiated, client's view
        self._decoder = HdlcStreamDecoder()
        self._reassembler = SegmentReassembler(max_apdu_length)
        self._ui_reassembler = SegmentReassembler(max_apdu_length)
        self._events: deque[ConnectionEvent] = deque()
        self._window = SendWindow()
        self._receive_state = 0  # V(R): ssn we expect from the server next
        self._peer_busy = False

    # -- frames we send -------------------------------------------------------

    def connect(self) -> bytes:
        """Start the link: returns the SNRM frame."""
        self._transition(Trigger.SEND_SNRM)
        self._reset_link()
        return self._snrm()

    def disconnect(self) -> bytes:
        """Close the link: returns the DISC frame; pending segments are dropped."""
        self._transition(Trigger.SEND_DISC)
        self._reset_link()
        return self._frame(FrameKind.DISC)

    def send_apdu(self, apdu: bytes) -> list[bytes]:
        """Queue an APDU (LLC header added) and return the I frames the window allows now.

        The rest follow as :class:`SendFrames` events as the server acknowledges.
        """
        self._transition(Trigger.SEND_I)
        information = LLC_COMMAND + apdu
        self._window.enqueue(information, self.parameters.max_info_tx)
        return self._pump()

    def acknowledge(self) -> bytes:
        """An RR frame with poll bit: acknowledge received I frames and ask for more."""
        self._transition(Trigger.SEND_RR)
        return self._supervisory(FrameKind.RR)

    def retransmit(self) -> bytes:
        """Frames to resend after the driver's response timeout, by state.

        SNRM or DISC again; in the connected state the unacknowledged I frames,
        or an RR poll when everything sent was acknowledged.
        """
        if self.state is ConnectionState.AWAITING_UA:
            return self._snrm()
        if self.state is ConnectionState.AWAITING_DISCONNECT:
            return self._frame(FrameKind.DISC)
        if self.state is ConnectionState.CONNECTED:
            if self._window.has_unacked and not self._peer_busy:
                return b"".join(self._resend_unacked())
            return self._supervisory(FrameKind.RR)
        raise ProtocolError(f"nothing to retransmit in state {self.state.value}")

    # -- bytes we receive -----------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the line."""
        self._decoder.receive_data(data)

    def next_event(self) -> ConnectionEvent | NeedData:
        """The next event, or ``NEED_DATA`` when the received bytes are used up."""
        while not self._events:
            item = self._decoder.next_event()
            if item is NEED_DATA or isinstance(item, FrameError):
                return item
            self._handle(item)
        return self._events.popleft()

    def _handle(self, frame: HdlcFrame) -> None:
        if not _same_station(frame.destination, self.client_address):
            self._events.append(FrameIgnored("frame addressed to another client"))
            return
        if not _same_station(frame.source, self.server_address):
            self._events.append(FrameIgnored("frame from another server"))
            return
        kind = frame.control.kind
        trigger = _RECEIVE_TRIGGERS.get(kind)
        target = None if trigger is None else TRANSITIONS.get((self.state, trigger))
        if trigger is None or target is None:
            self._events.append(FrameIgnored(f"{kind.name} frame in state {self.state.value}"))
            return
        previous = self.state
        self.state = target
        if kind is FrameKind.UI:
            self._events.extend(self._ui_reassembler.feed(frame))
        elif kind is FrameKind.UA and previous is ConnectionState.AWAITING_UA:
            self._on_connected(frame)
        elif kind in (FrameKind.UA, FrameKind.DM, FrameKind.FRMR):
            self._on_disconnected(frame)
        else:
            self._on_numbered(frame)

    def _on_connected(self, frame: HdlcFrame) -> None:
        try:
            answer = HdlcParameters.from_bytes(frame.information)
        except DlmsError as error:
            self.state = ConnectionState.DISCONNECTED
            self._events.append(Disconnected(f"malformed UA parameters: {error.reason}"))
            return
        self.parameters = negotiate(self._proposed or HdlcParameters(), answer)
        self._events.append(Connected(self.parameters))

    def _on_disconnected(self, frame: HdlcFrame) -> None:
        kind = frame.control.kind
        if kind is FrameKind.UA:
            reason = "disconnected"
        elif kind is FrameKind.DM:
            reason = "server is in disconnected mode (DM)"
        else:
            reason = f"server rejected a frame (FRMR {frame.information.hex()})"
        self._reset_link()
        self._events.append(Disconnected(reason))

    def _on_numbered(self, frame: HdlcFrame) -> None:
        control = frame.control
        if not self._window.acknowledge_up_to(control.rsn):
            self._events.append(FrameIgnored(f"N(R)={control.rsn} acknowledges nothing we sent"))
            return
        if control.kind is FrameKind.I:
            self._on_information(frame)
        else:
            self._peer_busy = control.kind is FrameKind.RNR
            if control.poll_final and self._window.has_unacked and not self._peer_busy:
                # The server's final answer does not cover all we sent: the
                # rest was lost, go back to N(R).
                self._events.append(SendFrames(tuple(self._resend_unacked())))
        frames = self._pump()
        if frames:
            self._events.append(SendFrames(tuple(frames)))

    def _on_information(self, frame: HdlcFrame) -> None:
        control = frame.control
        if control.ssn != self._receive_state:
            expected = self._receive_state
            self._events.append(
                FrameIgnored(f"I frame N(S)={control.ssn} out of sequence (expected {expected})")
            )
            return
        self._receive_state = (self._receive_state + 1) % SEQUENCE_MODULUS
        self._peer_busy = False
        self._events.extend(self._reassembler.feed(frame))
        if frame.segmented and control.poll_final:
            self._events.append(SegmentReceived(len(frame.information)))

    # -- helpers --------------------------------------------------------------

    def _transition(self, trigger: Trigger) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise ProtocolError(f"cannot {trigger.value} in state {self.state.value}")
        self.state = target

    def _reset_link(self) -> None:
        self._window.reset()
        self._receive_state = 0
        self._peer_busy = False
        self._reassembler.reset()

    def _pump(self) -> list[bytes]:
        """Send queued segments while the window and the server allow."""
        if self._peer_busy:
            return []
        segments = self._window.take(self.parameters.window_tx)
        return [self._information(s.ssn, s.chunk, s.segmented, s.final) for s in segments]

    def _resend_unacked(self) -> list[bytes]:
        return [
            self._information(s.ssn, s.chunk, s.segmented, s.final) for s in self._window.unacked()
        ]

    def _information(self, ssn: int, chunk: bytes, segmented: bool, poll: bool) -> bytes:
        control = Control(FrameKind.I, poll, ssn, self._receive_state)
        return HdlcFrame(
            self.server_address, self.client_address, control, chunk, segmented
        ).to_bytes()

    def _supervisory(self, kind: FrameKind) -> bytes:
        control = Control(kind, True, 0, self._receive_state)
        return HdlcFrame(self.server_address, self.client_address, control).to_bytes()

    def _snrm(self) -> bytes:
        information = self._proposed.to_bytes() if self._proposed is not None else b""
        return self._frame(FrameKind.SNRM, information)

    def _frame(self, kind: FrameKind, information: bytes = b"") -> bytes:
        return HdlcFrame(
            self.server_address, self.client_address, Control(kind), information
        ).to_bytes()
