"""xDLMS InitiateRequest (tag 1) / InitiateResponse (tag 8) and the Conformance block.

Both are A-XDR SEQUENCEs carried in the ACSE user-information field (plain,
or ciphered as glo-/ded-initiateRequest elsewhere). A-XDR encodes an OPTIONAL
field as ``00`` (absent) or ``01`` + value, and a DEFAULT field as ``00``
(default) or ``01`` + value. We always encode ``response-allowed = TRUE`` as
the default ``00``; an explicit ``01 01`` decodes to the same value, so it
does not re-encode byte for byte.

The conformance block is the BER ``[APPLICATION 31] IMPLICIT BIT STRING`` of
24 bits, always ``5F 1F 04 00`` + three bytes inside these APDUs.
"""

from __future__ import annotations

import enum
import struct

import attrs

from dlmsd.protocol.apdus.ber import decode_length, encode_length
from dlmsd.protocol.errors import (
    DecodeError,
    EncodeError,
    TruncatedError,
    UnknownTagError,
)

INITIATE_REQUEST_TAG = 0x01
INITIATE_RESPONSE_TAG = 0x08

# Identifier 5F1F = [APPLICATION 31], length 4, 0 unused bits; then 24 bits.
_CONFORMANCE_HEADER = b"\x5f\x1f\x04\x00"
CONFORMANCE_SIZE = 7
_CONFORMANCE_MAX = 0xFFFFFF

# version(1) | conformance(7) | max-pdu(2) for the request; response adds vaa-name(2).
_REQUEST_TAIL = struct.Struct(">B7sH")
_RESPONSE_TAIL = struct.Struct(">B7sHH")


class Conformance(enum.IntFlag):
    """The 24 xDLMS conformance bits (Green Book, ``Conformance`` named bits).

    The standard numbers bits MSB first, so bit *n* has the value ``1 << (23 - n)``
    and the three encoded bytes read big-endian are the flag value itself
    (``00 7E 1F`` = ``0x007E1F``). Bit numbers, cross-checked against the
    conformance_bits vectors ``00007e1f`` / ``0000501f`` (tests/test_asce/
    test_conformance.py) and Wireshark's ``epan/dissectors/asn1/cosem/cosem.asn``
    (which predates bits 1, 2, 16, 17: reserved there). Bit 6 is
    delta-value-encoding in current editions (Gurux, jDLMS-derived tables);
    bits 0 (reserved-zero) and 7 (reserved-seven) have no member and are kept
    as plain bits if a peer sets them.
    """

    GENERAL_PROTECTION = 1 << (23 - 1)
    GENERAL_BLOCK_TRANSFER = 1 << (23 - 2)
    READ = 1 << (23 - 3)
    WRITE = 1 << (23 - 4)
    UNCONFIRMED_WRITE = 1 << (23 - 5)
    DELTA_VALUE_ENCODING = 1 << (23 - 6)
    ATTRIBUTE0_SUPPORTED_WITH_SET = 1 << (23 - 8)
    PRIORITY_MGMT_SUPPORTED = 1 << (23 - 9)
    ATTRIBUTE0_SUPPORTED_WITH_GET = 1 << (23 - 10)
    BLOCK_TRANSFER_WITH_GET_OR_READ = 1 << (23 - 11)
    BLOCK_TRANSFER_WITH_SET_OR_WRITE = 1 << (23 - 12)
    BLOCK_TRANSFER_WITH_ACTION = 1 << (23 - 13)
    MULTIPLE_REFERENCES = 1 << (23 - 14)
    INFORMATION_REPORT = 1 << (23 - 15)
    DATA_NOTIFICATION = 1 << (23 - 16)
    ACCESS = 1 << (23 - 17)
    PARAMETERIZED_ACCESS = 1 << (23 - 18)
    GET = 1 << (23 - 19)
    SET = 1 << (23 - 20)
    SELECTIVE_ACCESS = 1 << (23 - 21)
    EVENT_NOTIFICATION = 1 << (23 - 22)
    ACTION = 1 << (23 - 23)


def encode_conformance(conformance: int) -> bytes:
    """The 7-byte BER bit string ``5F 1F 04 00 xx xx xx``."""
    value = int(conformance)
    if not 0 <= value <= _CONFORMANCE_MAX:
        raise EncodeError(f"conformance 0x{value:X} does not fit 24 bits")
    return _CONFORMANCE_HEADER + value.to_bytes(3, "big")


def decode_conformance(buf: bytes, offset: int) -> tuple[Conformance, int]:
    """Read the 7-byte conformance block at ``offset``; return ``(flags, offset_after)``."""
    end = offset + CONFORMANCE_SIZE
    if end > len(buf):
        raise TruncatedError("conformance block truncated", offset)
    if buf[offset : offset + 4] != _CONFORMANCE_HEADER:
        raise DecodeError("conformance block must start 5F 1F 04 00", offset)
    return Conformance(int.from_bytes(buf[offset + 4 : end], "big")), end


def _redacted(value: bytes | None) -> str:
    return "None" if value is None else "<redacted>"


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise EncodeError(f"{name} {value} out of range {low}..{high}")


def _encode_qos(qos: int | None) -> bytes:
    if qos is None:
        return b"\x00"
    _check_range("quality of service", qos, -128, 127)
    return b"\x01" + qos.to_bytes(1, "big", signed=True)


def _read_flag(buf: bytes, offset: int, what: str) -> bool:
    """An A-XDR OPTIONAL/DEFAULT presence byte: 00 absent, 01 present."""
    if offset >= len(buf):
        raise TruncatedError(f"{what} flag missing", offset)
    flag = buf[offset]
    if flag > 1:
        raise DecodeError(f"{what} flag must be 00 or 01, got {flag:02X}", offset)
    return flag == 1


def _read_qos(buf: bytes, offset: int) -> tuple[int | None, int]:
    if not _read_flag(buf, offset, "quality-of-service"):
        return None, offset + 1
    if offset + 1 >= len(buf):
        raise TruncatedError("quality-of-service truncated", offset + 1)
    return int.from_bytes(buf[offset + 1 : offset + 2], "big", signed=True), offset + 2


def _check_tag(buf: bytes, tag: int, name: str) -> None:
    if not buf:
        raise TruncatedError(f"empty {name}", 0)
    if buf[0] != tag:
        raise UnknownTagError(f"{name} must start with tag {tag:02X}, got {buf[0]:02X}", 0)


@attrs.frozen(slots=True, kw_only=True)
class InitiateRequest:
    """xDLMS-Initiate.request: what the client proposes in the AARQ.

    ``dedicated_key`` is the session key for ded-ciphering; it never appears in
    ``repr()``.
    """

    proposed_conformance: Conformance
    client_max_receive_pdu_size: int
    proposed_dlms_version: int = 6
    dedicated_key: bytes | None = attrs.field(default=None, repr=_redacted)
    response_allowed: bool = True
    proposed_quality_of_service: int | None = None

    def to_bytes(self) -> bytes:
        """A-XDR encoding, starting with tag 0x01."""
        _check_range("DLMS version", self.proposed_dlms_version, 0, 0xFF)
        _check_range("client max receive PDU size", self.client_max_receive_pdu_size, 0, 0xFFFF)
        parts = [b"\x01"]
        if self.dedicated_key is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x01", encode_length(len(self.dedicated_key)), bytes(self.dedicated_key))
        parts.append(b"\x00" if self.response_allowed else b"\x01\x00")
        parts.append(_encode_qos(self.proposed_quality_of_service))
        parts.append(bytes((self.proposed_dlms_version,)))
        parts.append(encode_conformance(self.proposed_conformance))
        parts.append(self.client_max_receive_pdu_size.to_bytes(2, "big"))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, buf: bytes) -> InitiateRequest:
        """Decode a complete InitiateRequest (tag included); trailing bytes are an error."""
        buf = bytes(buf)
        _check_tag(buf, INITIATE_REQUEST_TAG, "InitiateRequest")
        pos = 1
        dedicated_key: bytes | None = None
        if _read_flag(buf, pos, "dedicated-key"):
            length, start = decode_length(buf, pos + 1)
            if start + length > len(buf):
                raise TruncatedError("dedicated-key truncated", pos + 1)
            dedicated_key = buf[start : start + length]
            pos = start + length
        else:
            pos += 1
        response_allowed = True
        if _read_flag(buf, pos, "response-allowed"):
            if pos + 1 >= len(buf):
                raise TruncatedError("response-allowed truncated", pos + 1)
            response_allowed = buf[pos + 1] != 0
            pos += 2
        else:
            pos += 1
        qos, pos = _read_qos(buf, pos)
        if pos + _REQUEST_TAIL.size > len(buf):
            raise TruncatedError("InitiateRequest truncated", pos)
        if pos + _REQUEST_TAIL.size < len(buf):
            raise DecodeError("trailing bytes after InitiateRequest", pos + _REQUEST_TAIL.size)
        version, _, max_pdu = _REQUEST_TAIL.unpack_from(buf, pos)
        conformance, _ = decode_conformance(buf, pos + 1)
        return cls(
            proposed_conformance=conformance,
            client_max_receive_pdu_size=max_pdu,
            proposed_dlms_version=version,
            dedicated_key=dedicated_key,
            response_allowed=response_allowed,
            proposed_quality_of_service=qos,
        )


@attrs.frozen(slots=True, kw_only=True)
class InitiateResponse:
    """xDLMS-Initiate.response: what the server grants in the AARE.

    ``vaa_name`` is ``ObjectName`` (Integer16 in the ASN.1); we keep it as the
    unsigned 16-bit value everybody writes (0x0007 for LN, 0xFA00 for SN).
    """

    negotiated_conformance: Conformance
    server_max_receive_pdu_size: int
    negotiated_dlms_version: int = 6
    vaa_name: int = 0x0007
    negotiated_quality_of_service: int | None = None

    def to_bytes(self) -> bytes:
        """A-XDR encoding, starting with tag 0x08."""
        _check_range("DLMS version", self.negotiated_dlms_version, 0, 0xFF)
        _check_range("server max receive PDU size", self.server_max_receive_pdu_size, 0, 0xFFFF)
        _check_range("vaa-name", self.vaa_name, 0, 0xFFFF)
        return b"".join(
            (
                b"\x08",
                _encode_qos(self.negotiated_quality_of_service),
                bytes((self.negotiated_dlms_version,)),
                encode_conformance(self.negotiated_conformance),
                self.server_max_receive_pdu_size.to_bytes(2, "big"),
                self.vaa_name.to_bytes(2, "big"),
            )
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> InitiateResponse:
        """Decode a complete InitiateResponse (tag included); trailing bytes are an error."""
        buf = bytes(buf)
        _check_tag(buf, INITIATE_RESPONSE_TAG, "InitiateResponse")
        qos, pos = _read_qos(buf, 1)
        if pos + _RESPONSE_TAIL.size > len(buf):
            raise TruncatedError("InitiateResponse truncated", pos)
        if pos + _RESPONSE_TAIL.size < len(buf):
            raise DecodeError("trailing bytes after InitiateResponse", pos + _RESPONSE_TAIL.size)
        version, _, max_pdu, vaa_name = _RESPONSE_TAIL.unpack_from(buf, pos)
        conformance, _ = decode_conformance(buf, pos + 1)
        return cls(
            negotiated_conformance=conformance,
            server_max_receive_pdu_size=max_pdu,
            negotiated_dlms_version=version,
            vaa_name=vaa_name,
            negotiated_quality_of_service=qos,
        )
