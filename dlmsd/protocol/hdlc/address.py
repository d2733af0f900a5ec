"""HDLC address field codec (IEC 62056-46 clause 6.4.2.2).

Each address byte carries 7 bits shifted left by one; a least significant bit
of 1 marks the last byte. A client address is one byte. A server address is
1 byte (upper/logical only), 2 bytes (upper and lower, 7 bits each) or 4 bytes
(upper and lower, 14 bits each); the lower half is the physical address.
"""

from __future__ import annotations

import attrs

from dlmsd.protocol.errors import DecodeError, EncodeError, TruncatedError

VALID_SIZES = (1, 2, 4)


@attrs.frozen(slots=True)
class HdlcAddress:
    """An HDLC address: ``logical`` (upper), ``physical`` (lower, None in 1-byte form).

    ``size`` is the number of bytes on the wire; it is kept so that a decoded
    address re-encodes byte for byte (``00 02 00 23`` and ``02 23`` mean the same).
    Build addresses with :meth:`client` or :meth:`server` to get the shortest size.
    """

    logical: int
    physical: int | None = None
    size: int = 1

    @classmethod
    def client(cls, address: int) -> HdlcAddress:
        """A one-byte client address (e.g. 16 = public client, encoded 0x21)."""
        return cls(address, None, 1)

    @classmethod
    def server(
        cls, logical: int, physical: int | None = None, size: int | None = None
    ) -> HdlcAddress:
        """A server address; ``size`` defaults to the shortest form that fits."""
        if size is None:
            if physical is None:
                size = 1
            elif logical < 0x80 and physical < 0x80:
                size = 2
            else:
                size = 4
        return cls(logical, physical, size)

    def to_bytes(self) -> bytes:
        """Encode; raises :class:`EncodeError` when a value does not fit ``size``."""
        if self.size == 1:
            if self.physical is not None:
                raise EncodeError("a 1-byte HDLC address has no physical part")
            return bytes((_check(self.logical, 7) << 1 | 1,))
        if self.physical is None:
            raise EncodeError(f"a {self.size}-byte HDLC address needs a physical part")
        if self.size == 2:
            return bytes((_check(self.logical, 7) << 1, _check(self.physical, 7) << 1 | 1))
        if self.size == 4:
            upper = _check(self.logical, 14)
            lower = _check(self.physical, 14)
            return bytes(
                (
                    (upper >> 7) << 1,
                    (upper & 0x7F) << 1,
                    (lower >> 7) << 1,
                    (lower & 0x7F) << 1 | 1,
                )
            )
        raise EncodeError(f"HDLC addresses are 1, 2 or 4 bytes, not {self.size}")

    @classmethod
    def from_bytes(cls, data: bytes) -> HdlcAddress:
        """Decode a complete address field (no trailing bytes)."""
        address, end = decode_address(data, 0, len(data))
        if end != len(data):
            raise DecodeError("bytes after the end of the HDLC address", end)
        return address


def _check(value: int, bits: int) -> int:
    if not 0 <= value < 1 << bits:
        raise EncodeError(f"HDLC address value {value} does not fit in {bits} bits")
    return value


def decode_address(
    data: bytes | bytearray, offset: int, end: int | None = None
) -> tuple[HdlcAddress, int]:
    """Decode the address starting at ``offset``; returns it and the offset after it.

    ``end`` bounds the search (defaults to ``len(data)``). Raises
    :class:`TruncatedError` if the data ends before the last address byte and
    :class:`DecodeError` for a 3-byte or over-long address.
    """
    limit = len(data) if end is None else min(end, len(data))
    index = offset
    # At most 4 bytes: look for the byte with the "last" bit set.
    while index < limit and index - offset < 4:
        if data[index] & 1:
            break
        index += 1
    else:
        if index - offset >= 4:
            raise DecodeError("HDLC address longer than 4 bytes", offset)
        raise TruncatedError("HDLC address runs past the end of the data", limit)
    size = index - offset + 1
    if size == 1:
        return HdlcAddress(data[offset] >> 1, None, 1), index + 1
    if size == 2:
        return HdlcAddress(data[offset] >> 1, data[offset + 1] >> 1, 2), index + 1
    if size == 4:
        upper = (data[offset] >> 1) << 7 | data[offset + 1] >> 1
        lower = (data[offset + 2] >> 1) << 7 | data[offset + 3] >> 1
        return HdlcAddress(upper, lower, 4), index + 1
    raise DecodeError("a 3-byte HDLC address is not allowed", offset)
