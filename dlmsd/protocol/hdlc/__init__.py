"""HDLC framing for DLMS (IEC 62056-46, frame format type 3).

Modules: :mod:`.crc` (CRC-16/X-25), :mod:`.address`, :mod:`.frames` (format,
control, frames, LLC), :mod:`.parameters` (SNRM/UA negotiation), :mod:`.stream`
(bytes -> frames with resync), :mod:`.reassembly` (segmented APDUs),
:mod:`.pushes` (push APDUs from segmented frames or GBT blocks; not re-exported
here, it imports :mod:`dlmsd.protocol.gbt_push`), :mod:`.window` (the sending
window) and :mod:`.connection` (the client link state machine).
"""

from __future__ import annotations

from dlmsd.protocol.hdlc.address import HdlcAddress, decode_address
from dlmsd.protocol.hdlc.connection import (
    TRANSITIONS,
    ConnectionState,
    HdlcConnection,
    Trigger,
    describe_transitions,
    negotiate,
)
from dlmsd.protocol.hdlc.crc import checksum_bytes, crc16
from dlmsd.protocol.hdlc.events import (
    ApduReceived,
    Connected,
    Disconnected,
    FrameError,
    FrameIgnored,
    SegmentReceived,
    SendFrames,
)
from dlmsd.protocol.hdlc.frames import (
    FLAG,
    LLC_COMMAND,
    LLC_RESPONSE,
    Control,
    FrameFormat,
    FrameKind,
    HdlcFrame,
    add_llc,
    decode_frame,
    strip_llc,
)
from dlmsd.protocol.hdlc.parameters import HdlcParameters
from dlmsd.protocol.hdlc.reassembly import ReassemblyError, SegmentReassembler
from dlmsd.protocol.hdlc.stream import HdlcStreamDecoder

__all__ = [
    "FLAG",
    "LLC_COMMAND",
    "LLC_RESPONSE",
    "TRANSITIONS",
    "ApduReceived",
    "Connected",
    "ConnectionState",
    "Control",
    "Disconnected",
    "FrameError",
    "FrameFormat",
    "FrameIgnored",
    "FrameKind",
    "HdlcAddress",
    "HdlcConnection",
    "HdlcFrame",
    "HdlcParameters",
    "HdlcStreamDecoder",
    "ReassemblyError",
    "SegmentReassembler",
    "SegmentReceived",
    "SendFrames",
    "Trigger",
    "add_llc",
    "checksum_bytes",
    "crc16",
    "decode_address",
    "decode_frame",
    "describe_transitions",
    "negotiate",
    "strip_llc",
]
