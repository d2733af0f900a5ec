"""IEC 62056-47 wrapper framing for DLMS over UDP and TCP.

``version(2)=1 | source wPort(2) | destination wPort(2) | length(2) | APDU(length)``.
One UDP datagram carries exactly one frame; a TCP stream carries frames back to
back, split across reads at arbitrary points.
"""

from __future__ import annotations

import struct

import attrs

from dlmsd.protocol.errors import DecodeError, EncodeError, LengthError, TruncatedError
from dlmsd.protocol.events import NEED_DATA, NeedData

WRAPPER_VERSION = 1
HEADER_LENGTH = 8
MAX_APDU_LENGTH = 0xFFFF

_HEADER = struct.Struct(">HHHH")
# Compact the stream buffer only once this much has been consumed, so the
# copy cost is amortised over many frames (O(n) overall).
_COMPACT_THRESHOLD = 1 << 16


@attrs.frozen(slots=True)
class WrapperHeader:
    """The 8-byte header alone, e.g. to peek at a frame's length."""

    version: int
    source_wport: int
    destination_wport: int
    length: int


@attrs.frozen(slots=True)
class WrapperFrame:
    """One wrapper frame: the wPorts (SAPs) and the APDU it carries."""

    source_wport: int
    destination_wport: int
    apdu: bytes
    version: int = WRAPPER_VERSION

    def to_bytes(self) -> bytes:
        """Encode header and APDU; raises :class:`EncodeError` on out-of-range fields."""
        for name in ("version", "source_wport", "destination_wport"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFFFF:
                raise EncodeError(f"wrapper {name} {value} does not fit in 16 bits")
        if len(self.apdu) > MAX_APDU_LENGTH:
            raise EncodeError(f"APDU of {len(self.apdu)} bytes exceeds the wrapper's 65535")
        header = _HEADER.pack(
            self.version, self.source_wport, self.destination_wport, len(self.apdu)
        )
        return header + self.apdu


def decode_header(data: bytes | bytearray | memoryview, offset: int = 0) -> WrapperHeader:
    """Decode the 8-byte header at ``offset``, without checking the version."""
    if len(data) - offset < HEADER_LENGTH:
        raise TruncatedError(
            f"wrapper header needs {HEADER_LENGTH} bytes, got {max(len(data) - offset, 0)}",
            offset,
        )
    return WrapperHeader(*_HEADER.unpack_from(data, offset))


def _check_header(version: int, length: int, max_length: int, offset: int) -> None:
    if version != WRAPPER_VERSION:
        raise DecodeError(f"unsupported wrapper version 0x{version:04X} (expected 1)", offset)
    if length > max_length:
        raise LengthError(
            f"wrapper announces {length} bytes, more than the limit {max_length}", offset + 6
        )


def decode_datagram(data: bytes, max_length: int = MAX_APDU_LENGTH) -> WrapperFrame:
    """Decode one UDP datagram, which must hold exactly one wrapper frame."""
    if len(data) < HEADER_LENGTH:
        raise TruncatedError(
            f"wrapper header needs {HEADER_LENGTH} bytes, got {len(data)}", len(data)
        )
    version, source, destination, length = _HEADER.unpack_from(data)
    _check_header(version, length, max_length, 0)
    present = len(data) - HEADER_LENGTH
    if present < length:
        raise TruncatedError(
            f"wrapper announces {length} APDU bytes but the datagram holds {present}", len(data)
        )
    if present > length:
        raise LengthError(
            f"{present - length} bytes after the {length}-byte APDU the wrapper announces",
            HEADER_LENGTH + length,
        )
    return WrapperFrame(source, destination, bytes(data[HEADER_LENGTH:]), version)


def datagram_apdu(data: bytes, max_length: int = MAX_APDU_LENGTH) -> bytes:
    """The APDU of one UDP datagram: ``decode_datagram(data, max_length).apdu``, with the
    same errors, without building a `WrapperFrame` (the UDP listener needs only the APDU)."""
    length = len(data) - HEADER_LENGTH
    # A well-formed datagram is checked byte by byte here; anything else goes through
    # `decode_datagram`, which raises the error it always raised.
    if (
        0 <= length <= max_length
        and data[1] == WRAPPER_VERSION
        and data[0] == 0
        and (data[6] << 8 | data[7]) == length
    ):
        return data[HEADER_LENGTH:]
    return decode_datagram(data, max_length).apdu


class WrapperStreamDecoder:
    """Split a TCP byte stream into wrapper frames (sans-io, h11 style).

    Feed bytes with :meth:`receive_data`, then call :meth:`next_event` until it
    returns ``NEED_DATA``. A bad version or an over-long length raises a
    :class:`DlmsError`: the stream has no flags to resync on, so the transport
    must drop the connection; every later call raises the same error.
    """

    def __init__(self, max_apdu_length: int = MAX_APDU_LENGTH) -> None:
        self._max_apdu_length = max_apdu_length
        self._buffer = bytearray()
        self._start = 0  # first unconsumed byte in _buffer
        self._consumed = 0  # bytes dropped from the buffer so far, for error offsets
        self._error: DecodeError | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet returned as a frame (a partial frame at EOF)."""
        return len(self._buffer) - self._start

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the transport."""
        self._buffer += data

    def next_event(self) -> WrapperFrame | NeedData:
        """The next complete frame, or ``NEED_DATA``."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        start = self._start
        if len(buffer) - start < HEADER_LENGTH:
            return self._need_data()
        version, source, destination, length = _HEADER.unpack_from(buffer, start)
        try:
            _check_header(version, length, self._max_apdu_length, self._consumed + start)
        except DecodeError as error:
            self._error = error
            raise
        end = start + HEADER_LENGTH + length
        if len(buffer) < end:
            return self._need_data()
        self._start = end
        return WrapperFrame(source, destination, bytes(buffer[start + HEADER_LENGTH : end]))

    def _need_data(self) -> NeedData:
        start = self._start
        if start >= _COMPACT_THRESHOLD or (start and start == len(self._buffer)):
            del self._buffer[:start]
            self._consumed += start
            self._start = 0
        return NEED_DATA
