"""HDLC frame format type 3 (IEC 62056-46): format field, control field, frames, LLC.

``7E | format(2) | dest | src | control | HCS(2) | information | FCS(2) | 7E``

DLMS HDLC does not byte-stuff: the format length, not the next 0x7E, says where
a frame ends. The HCS (over format..control) is present only when there is an
information field; the FCS covers format..information.
"""

from __future__ import annotations

import enum

import attrs

from dlmsd.protocol.errors import (
    ChecksumError,
    DecodeError,
    EncodeError,
    LengthError,
    TruncatedError,
    UnknownTagError,
)
from dlmsd.protocol.hdlc.address import HdlcAddress, decode_address
from dlmsd.protocol.hdlc.crc import checksum_bytes, crc16

FLAG = 0x7E
FORMAT_TYPE_3 = 0xA
MAX_FRAME_LENGTH = 0x7FF  # 11-bit length field
# format(2) + dest(1) + src(1) + control(1) + FCS(2)
MIN_FRAME_LENGTH = 7

LLC_COMMAND = b"\xe6\xe6\x00"  # client -> server
LLC_RESPONSE = b"\xe6\xe7\x00"  # server -> client, and pushes

_SEGMENTED_BIT = 0x0800
_POLL_FINAL_BIT = 0x10


@attrs.frozen(slots=True)
class FrameFormat:
    """The 2-byte frame format field: type 3, segmentation bit, 11-bit length."""

    length: int
    segmented: bool = False

    def to_bytes(self) -> bytes:
        if not 0 <= self.length <= MAX_FRAME_LENGTH:
            raise EncodeError(f"HDLC frame length {self.length} does not fit in 11 bits")
        value = FORMAT_TYPE_3 << 12 | (_SEGMENTED_BIT if self.segmented else 0) | self.length
        return value.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray, offset: int = 0) -> FrameFormat:
        """Decode the two bytes at ``offset``; the type must be 3 (0xA)."""
        if len(data) - offset < 2:
            raise TruncatedError("HDLC frame format field needs 2 bytes", offset)
        value = data[offset] << 8 | data[offset + 1]
        if value >> 12 != FORMAT_TYPE_3:
            raise DecodeError(
                f"HDLC frame format type 0x{value >> 12:X} is not type 3 (0xA)", offset
            )
        return cls(value & MAX_FRAME_LENGTH, bool(value & _SEGMENTED_BIT))


class FrameKind(enum.IntEnum):
    """Frame types, valued by their control byte with P/F and sequence numbers cleared."""

    I = 0x00  # noqa: E741 - the standard's name for an information frame
    RR = 0x01
    RNR = 0x05
    SNRM = 0x83
    DISC = 0x43
    UA = 0x63
    DM = 0x0F
    FRMR = 0x87
    UI = 0x03


_SUPERVISORY = (FrameKind.RR, FrameKind.RNR)


@attrs.frozen(slots=True)
class Control:
    """A decoded control byte: kind, poll/final bit, and send/receive sequence numbers.

    ``ssn`` is used by I frames only, ``rsn`` by I, RR and RNR frames; both are 0
    for the others. I: ``RRRP SSS0``; RR: ``RRRP 0001``; RNR: ``RRRP 0101``.
    """

    kind: FrameKind
    poll_final: bool = True
    ssn: int = 0
    rsn: int = 0

    def to_byte(self) -> int:
        """The control byte; raises :class:`EncodeError` for out-of-range sequence numbers."""
        if not (0 <= self.ssn <= 7 and 0 <= self.rsn <= 7):
            raise EncodeError(f"HDLC sequence numbers are 0..7, got {self.ssn}/{self.rsn}")
        value = int(self.kind) | (_POLL_FINAL_BIT if self.poll_final else 0)
        if self.kind is FrameKind.I:
            return value | self.rsn << 5 | self.ssn << 1
        if self.kind in _SUPERVISORY:
            if self.ssn:
                raise EncodeError(f"{self.kind.name} frames have no send sequence number")
            return value | self.rsn << 5
        if self.ssn or self.rsn:
            raise EncodeError(f"{self.kind.name} frames have no sequence numbers")
        return value

    @classmethod
    def from_byte(cls, value: int, offset: int | None = None) -> Control:
        """Decode a control byte; REJ, SREJ and undefined U frames are unknown tags."""
        control = _CONTROLS[value & 0xFF]
        if control is None:
            raise UnknownTagError(f"HDLC control byte 0x{value:02X} is not used by DLMS", offset)
        return control


def _decode_control(value: int) -> Control | None:
    poll_final = bool(value & _POLL_FINAL_BIT)
    if not value & 1:
        return Control(FrameKind.I, poll_final, (value >> 1) & 7, value >> 5)
    if value & 3 == 1:
        kind = value & 0x0F
        if kind == FrameKind.RR:
            return Control(FrameKind.RR, poll_final, 0, value >> 5)
        if kind == FrameKind.RNR:
            return Control(FrameKind.RNR, poll_final, 0, value >> 5)
        return None  # REJ / SREJ: not part of DLMS HDLC
    try:
        return Control(FrameKind(value & ~_POLL_FINAL_BIT & 0xFF), poll_final)
    except ValueError:
        return None


# Every byte decoded once at import: control decoding is a table lookup.
_CONTROLS: tuple[Control | None, ...] = tuple(_decode_control(value) for value in range(256))


@attrs.frozen(slots=True)
class HdlcFrame:
    """One HDLC frame type 3, flags and checksums excluded from the value."""

    destination: HdlcAddress
    source: HdlcAddress
    control: Control
    information: bytes = b""
    segmented: bool = False

    @property
    def kind(self) -> FrameKind:
        return self.control.kind

    def to_bytes(self) -> bytes:
        """Encode with both flags; computes HCS (only with information) and FCS."""
        header = self.destination.to_bytes() + self.source.to_bytes()
        header += bytes((self.control.to_byte(),))
        length = 2 + len(header) + 2
        if self.information:
            length += 2 + len(self.information)
        body = FrameFormat(length, self.segmented).to_bytes() + header
        if self.information:
            body += checksum_bytes(body) + self.information
        return b"\x7e" + body + checksum_bytes(body) + b"\x7e"

    @classmethod
    def from_bytes(cls, data: bytes, *, lenient_length: bool = False) -> HdlcFrame:
        """Decode one complete frame including both 0x7E flags; checks HCS and FCS.

        ``lenient_length`` accepts a format length one more than the frame holds,
        as one E650 capture has (vector hdlc_frame_lenient_length); off by
        default, because the stream decoder relies on the length being right.
        """
        if len(data) < MIN_FRAME_LENGTH + 2:
            raise TruncatedError(f"an HDLC frame is at least 9 bytes, got {len(data)}", 0)
        if data[0] != FLAG:
            raise DecodeError("HDLC frame does not start with the 0x7E flag", 0)
        if data[-1] != FLAG:
            raise DecodeError("HDLC frame does not end with the 0x7E flag", len(data) - 1)
        frame_format = FrameFormat.from_bytes(data, 1)
        present = len(data) - 2
        if frame_format.length != present and not (
            lenient_length and frame_format.length == present + 1
        ):
            raise LengthError(
                f"HDLC format length {frame_format.length} but the frame holds {present} bytes",
                1,
            )
        return decode_frame(data, 1, 1 + present)


def decode_header(
    data: bytes | bytearray, start: int, end: int
) -> tuple[HdlcAddress, HdlcAddress, Control, int]:
    """Check the header of the frame whose format field is at ``data[start]``.

    ``end`` is where the frame (FCS included) ends. Returns destination, source,
    control and the offset of the information field (after the HCS, if any).
    Raises :class:`TruncatedError` when ``data`` ends before the header does, so
    a stream decoder can check a header before the whole frame has arrived.
    """
    destination, index = decode_address(data, start + 2, end)
    source, index = decode_address(data, index, end)
    if index >= end:
        raise DecodeError("HDLC frame too short for its control field", index)
    if index >= len(data):
        raise TruncatedError("HDLC frame ends before its control field", index)
    control = Control.from_byte(data[index], index)
    header_end = index + 1
    trailing = end - header_end
    if trailing == 2:
        return destination, source, control, header_end  # no information field, no HCS
    if trailing < 5:
        raise LengthError(f"HDLC frame length leaves {trailing} bytes after the header", start)
    if len(data) < header_end + 2:
        raise TruncatedError("HDLC frame ends before its HCS", header_end)
    hcs = data[header_end] | data[header_end + 1] << 8
    if crc16(data[start:header_end]) != hcs:
        raise ChecksumError("HDLC header check sequence (HCS) does not match", header_end)
    return destination, source, control, header_end + 2


def decode_frame(data: bytes | bytearray, start: int, end: int) -> HdlcFrame:
    """Decode the frame in ``data[start:end]`` (format field to FCS, no flags).

    The caller has checked that the format length equals ``end - start``
    (or chosen to tolerate a mismatch).
    """
    if end - start < MIN_FRAME_LENGTH or end > len(data):
        raise TruncatedError("HDLC frame too short", start)
    segmented = bool(data[start] << 8 & _SEGMENTED_BIT)
    fcs_at = end - 2
    destination, source, control, info_start = decode_header(data, start, end)
    fcs = data[fcs_at] | data[fcs_at + 1] << 8
    if crc16(data[start:fcs_at]) != fcs:
        raise ChecksumError("HDLC frame check sequence (FCS) does not match", fcs_at)
    return HdlcFrame(destination, source, control, bytes(data[info_start:fcs_at]), segmented)


def add_llc(apdu: bytes, *, command: bool = True) -> bytes:
    """Prefix the LLC header: ``E6 E6 00`` for commands, ``E6 E7 00`` for responses."""
    return (LLC_COMMAND if command else LLC_RESPONSE) + apdu


def strip_llc(information: bytes, expected: bytes | None = None) -> bytes:
    """Remove the 3-byte LLC header (either kind, or only ``expected`` if given)."""
    header = information[:3]
    allowed = (LLC_COMMAND, LLC_RESPONSE) if expected is None else (expected,)
    if header not in allowed:
        raise DecodeError(
            f"information field does not start with an LLC header: {header.hex()}", 0
        )
    return information[3:]
