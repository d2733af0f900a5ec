"""Minimal BER (X.690) helpers: just what the ACSE APDUs need.

A tag is handled as one int made of its identifier octets read big-endian
(``0x60``, ``0xBE``, ``0x5F1F``), so callers compare against constants. Only
definite lengths exist in DLMS; the long form (``0x81 nn``, ``0x82 nnnn`` ...)
is read and written. Every reader checks lengths against the bytes present
and raises only :class:`~dlmsd.protocol.errors.DlmsError` subclasses.

The A-XDR length prefix (xDLMS octet strings) has the same layout as a BER
definite length, so :func:`decode_length` / :func:`encode_length` serve both.
"""

from __future__ import annotations

import attrs

from dlmsd.protocol.errors import (
    DecodeError,
    EncodeError,
    LengthError,
    TruncatedError,
    UnknownTagError,
)

# Four length octets already allow 4 GiB; more is never sent honestly.
MAX_LENGTH_OCTETS = 4
# Identifier octets: one for tags 0..30, more for the high-tag-number form.
MAX_TAG_OCTETS = 4
# INTEGER contents we accept: ACSE integers are small enums.
MAX_INTEGER_OCTETS = 8

CONSTRUCTED = 0x20
TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_OBJECT_IDENTIFIER = 0x06


@attrs.frozen(slots=True)
class BerField:
    """One TLV kept as it came: its tag (identifier octets as an int) and raw contents."""

    tag: int
    value: bytes

    def to_bytes(self) -> bytes:
        """The TLV again (minimal length)."""
        return encode_tlv(self.tag, self.value)


def tag_number(tag: int) -> int:
    """The tag number (without class and constructed bits) of an identifier int."""
    if tag <= 0xFF:
        return tag & 0x1F
    # High-tag-number form: 7 bits per subsequent octet; the first octet holds no number.
    number = 0
    octets = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    for octet in octets[1:]:
        number = (number << 7) | (octet & 0x7F)
    return number


def decode_tag(buf: bytes, offset: int) -> tuple[int, int]:
    """Read an identifier at ``offset``; return ``(tag, offset_after)``."""
    size = len(buf)
    if offset >= size:
        raise TruncatedError("BER tag missing", offset)
    first = buf[offset]
    if first & 0x1F != 0x1F:
        return first, offset + 1
    end = offset + 1
    while True:
        if end >= size:
            raise TruncatedError("BER tag truncated", offset)
        if end - offset >= MAX_TAG_OCTETS:
            raise LengthError("BER tag longer than supported", offset)
        octet = buf[end]
        end += 1
        if not octet & 0x80:
            return int.from_bytes(buf[offset:end], "big"), end


def encode_tag(tag: int) -> bytes:
    """The identifier octets of ``tag`` (as produced by :func:`decode_tag`)."""
    if tag < 0:
        raise EncodeError(f"BER tag must not be negative: {tag}")
    if tag <= 0xFF:
        return bytes((tag,))
    return tag.to_bytes((tag.bit_length() + 7) // 8, "big")


def decode_length(buf: bytes, offset: int) -> tuple[int, int]:
    """Read a definite length at ``offset``; return ``(length, offset_after)``.

    The length is not checked against the buffer here; :func:`decode_tlv` does.
    """
    size = len(buf)
    if offset >= size:
        raise TruncatedError("length missing", offset)
    first = buf[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if count == 0:
        raise DecodeError("indefinite length is not allowed", offset)
    if count > MAX_LENGTH_OCTETS:
        raise LengthError(f"length of {count} octets is not supported", offset)
    end = offset + 1 + count
    if end > size:
        raise TruncatedError("length truncated", offset)
    return int.from_bytes(buf[offset + 1 : end], "big"), end


def encode_length(length: int) -> bytes:
    """Shortest definite length: one octet below 0x80, else ``0x8N`` and N octets."""
    if length < 0:
        raise EncodeError(f"length must not be negative: {length}")
    if length < 0x80:
        return bytes((length,))
    count = (length.bit_length() + 7) // 8
    if count > MAX_LENGTH_OCTETS:
        raise EncodeError(f"length {length} is too large")
    return bytes((0x80 | count,)) + length.to_bytes(count, "big")


def decode_tlv(buf: bytes, offset: int, end: int | None = None) -> tuple[int, int, int]:
    """Read one TLV; return ``(tag, value_start, value_end)``.

    ``end`` bounds the enclosing structure (default: end of ``buf``); a value
    running past it is a :class:`TruncatedError`.
    """
    limit = len(buf) if end is None else end
    tag, pos = decode_tag(buf, offset)
    length, start = decode_length(buf, pos)
    stop = start + length
    if stop > limit:
        raise TruncatedError(f"BER value of {length} bytes runs past its container", pos)
    return tag, start, stop


def encode_tlv(tag: int, value: bytes) -> bytes:
    """Tag, shortest length, value."""
    return encode_tag(tag) + encode_length(len(value)) + value


def decode_integer(buf: bytes, start: int, end: int) -> int:
    """The signed two's-complement INTEGER contents ``buf[start:end]``."""
    size = end - start
    if size <= 0:
        raise DecodeError("BER INTEGER with no contents", start)
    if size > MAX_INTEGER_OCTETS:
        raise LengthError(f"BER INTEGER of {size} octets is too large", start)
    return int.from_bytes(buf[start:end], "big", signed=True)


def encode_integer(value: int) -> bytes:
    """Shortest two's-complement contents of an INTEGER (no tag, no length)."""
    size = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    if size > MAX_INTEGER_OCTETS:
        raise EncodeError(f"BER INTEGER {value} is too large")
    return value.to_bytes(size, "big", signed=True)


def decode_fields(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The TLVs laid back to back in ``buf[start:end]`` as ``(tag, value_start, value_end)``."""
    fields: list[tuple[int, int, int]] = []
    pos = start
    # Each TLV takes at least two octets, so this loop always advances.
    while pos < end:
        tag, value_start, value_end = decode_tlv(buf, pos, end)
        fields.append((tag, value_start, value_end))
        pos = value_end
    return fields


def decode_wrapped(buf: bytes, start: int, end: int, inner_tag: int, what: str) -> bytes:
    """The contents of the single TLV ``inner_tag`` that fills ``buf[start:end]`` exactly.

    This is the shape of an EXPLICIT tag around one value, e.g. ``BE L 04 L ...``.
    """
    tag, value_start, value_end = decode_tlv(buf, start, end)
    if tag != inner_tag:
        raise UnknownTagError(f"{what}: expected tag 0x{inner_tag:02X}, got 0x{tag:X}", start)
    if value_end != end:
        raise DecodeError(f"{what}: {end - value_end} trailing bytes", value_end)
    return buf[value_start:value_end]
