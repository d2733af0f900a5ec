"""Ciphered APDU containers: bytes in, bytes out, no cryptography inside.

Layouts (Green Book, xDLMS ASN.1; all OCTET STRINGs carry an A-XDR length):

* service-specific glo-/ded- APDUs: ``tag | length | SC | IC(4) | payload``
* general-glo-ciphering (219) / general-ded-ciphering (220):
  ``tag | system-title (length-prefixed, may be empty) | ciphered content (length-prefixed)``
* general-ciphering (221), Green Book 9.5 ``General-Ciphering ::= SEQUENCE {
  transaction-id, originator-system-title, recipient-system-title, date-time,
  other-information (OCTET STRINGs), key-info Key-Info OPTIONAL,
  ciphered-content OCTET STRING }``

where the ciphered content is ``SC | IC(4) | payload`` and the payload is what
:meth:`dlmsd.protocol.security.Suite0Cipher.decrypt` takes.

Lengths must use the shortest A-XDR form: the decoder rejects padded length
fields so that decode -> encode is byte-exact and the general-ciphering AAD
(built from the encoded header) matches what the sender authenticated.

These decoders run on every encrypted push, so they slice directly and build
their values without validators.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Self, TypeAlias

import attrs

from dlmsd.protocol.errors import (
    DecodeError,
    EncodeError,
    LengthError,
    TruncatedError,
    UnknownTagError,
    UnsupportedSecurity,
)

__all__ = [
    "CIPHERED_TAGS",
    "MASTER_KEY",
    "CipheredApdu",
    "CipheredApduTag",
    "GeneralCiphering",
    "GeneralCipheringTag",
    "GeneralDedCiphering",
    "GeneralGloCiphering",
    "IdentifiedKey",
    "KeyId",
    "KeyInfo",
    "KeyInfoChoice",
    "ServiceSpecificCiphered",
    "WrappedKey",
    "decode_ciphered",
]


class CipheredApduTag(enum.IntEnum):
    """Service-specific ciphered xDLMS APDU tags (COSEMpdu CHOICE, Green Book).

    A glo- tag is the plain tag + 32 (initiate/SN services) or + 8 (LN services);
    a ded- tag is + 64 or + 16. Tags 206 and 214 are unused, like 198.
    """

    GLO_INITIATE_REQUEST = 33
    GLO_READ_REQUEST = 37
    GLO_WRITE_REQUEST = 38
    GLO_INITIATE_RESPONSE = 40
    GLO_READ_RESPONSE = 44
    GLO_WRITE_RESPONSE = 45
    GLO_CONFIRMED_SERVICE_ERROR = 46
    GLO_UNCONFIRMED_WRITE_REQUEST = 54
    GLO_INFORMATION_REPORT_REQUEST = 56
    DED_INITIATE_REQUEST = 65
    DED_READ_REQUEST = 69
    DED_WRITE_REQUEST = 70
    DED_INITIATE_RESPONSE = 72
    DED_READ_RESPONSE = 76
    DED_WRITE_RESPONSE = 77
    DED_CONFIRMED_SERVICE_ERROR = 78
    DED_UNCONFIRMED_WRITE_REQUEST = 86
    DED_INFORMATION_REPORT_REQUEST = 88
    GLO_GET_REQUEST = 200
    GLO_SET_REQUEST = 201
    GLO_EVENT_NOTIFICATION_REQUEST = 202
    GLO_ACTION_REQUEST = 203
    GLO_GET_RESPONSE = 204
    GLO_SET_RESPONSE = 205
    GLO_ACTION_RESPONSE = 207
    DED_GET_REQUEST = 208
    DED_SET_REQUEST = 209
    DED_EVENT_NOTIFICATION_REQUEST = 210
    DED_ACTION_REQUEST = 211
    DED_GET_RESPONSE = 212
    DED_SET_RESPONSE = 213
    DED_ACTION_RESPONSE = 215

    @property
    def is_dedicated(self) -> bool:
        """True for ded- tags: protected with the dedicated (session) key."""
        return 65 <= self <= 88 or 208 <= self <= 215

    @property
    def plain_tag(self) -> int:
        """The tag of the APDU inside (e.g. glo-get-request 200 -> get-request 192)."""
        if self >= 208:
            return self - 16
        if self >= 200:
            return self - 8
        return self - 64 if self >= 65 else self - 32


class GeneralCipheringTag(enum.IntEnum):
    """Tags of the general ciphering APDUs."""

    GENERAL_GLO_CIPHERING = 219
    GENERAL_DED_CIPHERING = 220
    GENERAL_CIPHERING = 221


class KeyInfoChoice(enum.IntEnum):
    """The Key-Info CHOICE of general-ciphering."""

    IDENTIFIED_KEY = 0
    WRAPPED_KEY = 1
    AGREED_KEY = 2


class KeyId(enum.IntEnum):
    """Identified-Key key-id."""

    GLOBAL_UNICAST_ENCRYPTION_KEY = 0
    GLOBAL_BROADCAST_ENCRYPTION_KEY = 1


# kek-id of Wrapped-Key: the only value the Green Book defines.
MASTER_KEY = 0

_SERVICE_TAGS: dict[int, CipheredApduTag] = {tag.value: tag for tag in CipheredApduTag}
#: Every first byte :func:`decode_ciphered` accepts (a quick "is it ciphered?" test).
CIPHERED_TAGS: frozenset[int] = frozenset(_SERVICE_TAGS) | frozenset(
    tag.value for tag in GeneralCipheringTag
)
_KEY_IDS: dict[int, KeyId] = {key.value: key for key in KeyId}
_SC_IC_LENGTH = 5


# --- A-XDR length codec, inlined here because this is the hot path ----------


def _length_at(buf: bytes, offset: int, what: str) -> tuple[int, int]:
    """Read an A-XDR length at `offset`; return (length, offset after it)."""
    if offset >= len(buf):
        raise TruncatedError(f"{what}: length missing", offset)
    first = buf[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if not 1 <= count <= 4:
        raise LengthError(f"{what}: length form 0x{first:02x} not supported", offset)
    end = offset + 1 + count
    if end > len(buf):
        raise TruncatedError(f"{what}: length field cut short", offset)
    length = int.from_bytes(buf[offset + 1 : end], "big")
    if length < 0x80 or length >> (8 * (count - 1)) == 0:
        raise LengthError(f"{what}: length {length} not in its shortest form", offset)
    return length, end


def _octets_at(buf: bytes, offset: int, what: str) -> tuple[bytes, int]:
    """Read a length-prefixed octet string; return (bytes, offset after it)."""
    length, start = _length_at(buf, offset, what)
    end = start + length
    if end > len(buf):
        raise TruncatedError(
            f"{what}: {length} bytes announced, {len(buf) - start} present", start
        )
    return buf[start:end], end


def _encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(body) > 4:
        raise EncodeError(f"length {length} does not fit an A-XDR length field")
    return bytes((0x80 | len(body),)) + body


def _encode_octets(value: bytes) -> bytes:
    return _encode_length(len(value)) + value


def _split_content(content: bytes, offset: int) -> tuple[int, int, bytes]:
    """Split ciphered content into (SC, IC, payload); offset is for errors."""
    if len(content) < _SC_IC_LENGTH:
        raise LengthError(
            f"ciphered content of {len(content)} bytes cannot hold SC and IC", offset
        )
    return content[0], int.from_bytes(content[1:5], "big"), content[5:]


def _encode_content(security_control: int, invocation_counter: int, payload: bytes) -> bytes:
    if not 0 <= security_control <= 0xFF:
        raise EncodeError(f"security control must be one byte, got {security_control}")
    if not 0 <= invocation_counter <= 0xFFFFFFFF:
        raise EncodeError(f"invocation counter must be 0..2**32-1, got {invocation_counter}")
    content = bytes((security_control,)) + invocation_counter.to_bytes(4, "big") + payload
    return _encode_octets(content)


def _expect_end(buf: bytes, end: int) -> None:
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} trailing bytes after the ciphered APDU", end)


def _expect_tag(buf: bytes, tag: int, name: str) -> None:
    if not buf:
        raise TruncatedError(f"empty input, expected {name}", 0)
    if buf[0] != tag:
        raise UnknownTagError(f"expected {name} tag {tag}, got {buf[0]}", 0)


# --- the containers -----------------------------------------------------------


@attrs.frozen(slots=True)
class ServiceSpecificCiphered:
    """A glo-/ded- service-specific APDU: ``tag | length | SC | IC | payload``.

    The system title is not on the wire: it comes from the association.
    """

    tag: int
    security_control: int
    invocation_counter: int
    payload: bytes

    @classmethod
    def from_bytes(cls, buf: bytes) -> ServiceSpecificCiphered:
        """Decode one complete APDU."""
        if not buf:
            raise TruncatedError("empty input, expected a ciphered APDU", 0)
        tag = _SERVICE_TAGS.get(buf[0])
        if tag is None:
            raise UnknownTagError(f"tag {buf[0]} is not a service-specific ciphered APDU", 0)
        content, end = _octets_at(buf, 1, "ciphered APDU content")
        _expect_end(buf, end)
        sc, ic, payload = _split_content(content, end - len(content))
        return cls(tag, sc, ic, payload)

    def to_bytes(self) -> bytes:
        """Encode, shortest length form."""
        if _SERVICE_TAGS.get(self.tag) is None:
            raise EncodeError(f"tag {self.tag} is not a service-specific ciphered APDU")
        return bytes((self.tag,)) + _encode_content(
            self.security_control, self.invocation_counter, self.payload
        )

    @property
    def is_dedicated(self) -> bool:
        """True when the dedicated key (not the global unicast key) protects it."""
        return CipheredApduTag(self.tag).is_dedicated


def _decode_general(buf: bytes, tag: int, name: str) -> tuple[bytes, int, int, bytes]:
    _expect_tag(buf, tag, name)
    system_title, offset = _octets_at(buf, 1, "system-title")
    content, end = _octets_at(buf, offset, "ciphered-content")
    _expect_end(buf, end)
    sc, ic, payload = _split_content(content, end - len(content))
    return system_title, sc, ic, payload


@attrs.frozen(slots=True)
class _GeneralCiphering:
    """The body general-glo- and general-ded-ciphering share; only the tag differs."""

    TAG: ClassVar[GeneralCipheringTag]
    NAME: ClassVar[str]

    system_title: bytes
    security_control: int
    invocation_counter: int
    payload: bytes

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        """Decode one complete APDU."""
        return cls(*_decode_general(buf, cls.TAG, cls.NAME))

    def to_bytes(self) -> bytes:
        """Encode, shortest length forms."""
        return (
            bytes((self.TAG,))
            + _encode_octets(self.system_title)
            + _encode_content(self.security_control, self.invocation_counter, self.payload)
        )


@attrs.frozen(slots=True)
class GeneralGloCiphering(_GeneralCiphering):
    """general-glo-ciphering (219): the usual envelope of encrypted pushes.

    ``system_title`` is the sender's (it forms the IV); some meters send it empty.
    """

    TAG = GeneralCipheringTag.GENERAL_GLO_CIPHERING
    NAME = "general-glo-ciphering"


@attrs.frozen(slots=True)
class GeneralDedCiphering(_GeneralCiphering):
    """general-ded-ciphering (220): as general-glo, protected with the dedicated key."""

    TAG = GeneralCipheringTag.GENERAL_DED_CIPHERING
    NAME = "general-ded-ciphering"


@attrs.frozen(slots=True)
class IdentifiedKey:
    """Key-Info identified-key: the EK is one of the global keys the parties hold."""

    key_id: int

    def to_bytes(self) -> bytes:
        """Encode as the Key-Info CHOICE (without the OPTIONAL presence byte)."""
        if not 0 <= self.key_id <= 0xFF:
            raise EncodeError(f"key-id must be one byte, got {self.key_id}")
        return bytes((KeyInfoChoice.IDENTIFIED_KEY, self.key_id))


@attrs.frozen(slots=True)
class WrappedKey:
    """Key-Info wrapped-key: a fresh EK wrapped (RFC 3394) with the KEK `kek_id`."""

    kek_id: int
    key_ciphered_data: bytes

    def to_bytes(self) -> bytes:
        """Encode as the Key-Info CHOICE (without the OPTIONAL presence byte)."""
        if not 0 <= self.kek_id <= 0xFF:
            raise EncodeError(f"kek-id must be one byte, got {self.kek_id}")
        return bytes((KeyInfoChoice.WRAPPED_KEY, self.kek_id)) + _encode_octets(
            self.key_ciphered_data
        )


KeyInfo: TypeAlias = IdentifiedKey | WrappedKey


def _key_info_at(buf: bytes, offset: int) -> tuple[KeyInfo | None, int]:
    if offset >= len(buf):
        raise TruncatedError("general-ciphering: key-info presence byte missing", offset)
    present = buf[offset]
    if present == 0:
        return None, offset + 1
    if present != 1:
        raise DecodeError(f"general-ciphering: key-info presence byte {present}", offset)
    offset += 1
    if offset + 2 > len(buf):
        raise TruncatedError("general-ciphering: key-info cut short", offset)
    choice, value = buf[offset], buf[offset + 1]
    if choice == KeyInfoChoice.IDENTIFIED_KEY:
        key_id = _KEY_IDS.get(value)
        if key_id is None:
            raise UnknownTagError(f"general-ciphering: unknown key-id {value}", offset + 1)
        return IdentifiedKey(key_id), offset + 2
    if choice == KeyInfoChoice.WRAPPED_KEY:
        if value != MASTER_KEY:
            raise UnknownTagError(f"general-ciphering: unknown kek-id {value}", offset + 1)
        data, end = _octets_at(buf, offset + 2, "general-ciphering key-ciphered-data")
        return WrappedKey(value, data), end
    if choice == KeyInfoChoice.AGREED_KEY:
        # Key agreement is ECDH (suites 1 and 2); suite 0 cannot use it.
        raise UnsupportedSecurity("general-ciphering: agreed-key is not supported", offset)
    raise UnknownTagError(f"general-ciphering: unknown key-info choice {choice}", offset)


@attrs.frozen(slots=True)
class GeneralCiphering:
    """general-ciphering (221), Green Book 9.5: the envelope that names its keys.

    The IV uses ``originator_system_title``. For authenticated forms the Green
    Book adds the five header fields, each with its length, to the AAD after
    SC | AK: pass :meth:`header_aad` as ``extra_aad`` to the cipher.
    """

    TAG = GeneralCipheringTag.GENERAL_CIPHERING

    transaction_id: bytes
    originator_system_title: bytes
    recipient_system_title: bytes
    date_time: bytes
    other_information: bytes
    key_info: KeyInfo | None
    security_control: int
    invocation_counter: int
    payload: bytes

    @classmethod
    def from_bytes(cls, buf: bytes) -> GeneralCiphering:
        """Decode one complete APDU. Agreed-key key-info raises UnsupportedSecurity."""
        _expect_tag(buf, cls.TAG, "general-ciphering")
        transaction_id, offset = _octets_at(buf, 1, "general-ciphering transaction-id")
        originator, offset = _octets_at(buf, offset, "general-ciphering originator-system-title")
        recipient, offset = _octets_at(buf, offset, "general-ciphering recipient-system-title")
        date_time, offset = _octets_at(buf, offset, "general-ciphering date-time")
        other, offset = _octets_at(buf, offset, "general-ciphering other-information")
        key_info, offset = _key_info_at(buf, offset)
        content, end = _octets_at(buf, offset, "general-ciphering ciphered-content")
        _expect_end(buf, end)
        sc, ic, payload = _split_content(content, end - len(content))
        return cls(
            transaction_id, originator, recipient, date_time, other, key_info, sc, ic, payload
        )

    def header_aad(self) -> bytes:
        """transaction-id .. other-information as encoded (length | value each)."""
        return (
            _encode_octets(self.transaction_id)
            + _encode_octets(self.originator_system_title)
            + _encode_octets(self.recipient_system_title)
            + _encode_octets(self.date_time)
            + _encode_octets(self.other_information)
        )

    def to_bytes(self) -> bytes:
        """Encode, shortest length forms."""
        key_info = b"\x00" if self.key_info is None else b"\x01" + self.key_info.to_bytes()
        return (
            bytes((self.TAG,))
            + self.header_aad()
            + key_info
            + _encode_content(self.security_control, self.invocation_counter, self.payload)
        )


CipheredApdu: TypeAlias = (
    ServiceSpecificCiphered | GeneralGloCiphering | GeneralDedCiphering | GeneralCiphering
)

_GENERAL_DECODERS: dict[
    int,
    type[GeneralGloCiphering] | type[GeneralDedCiphering] | type[GeneralCiphering],
] = {
    GeneralCipheringTag.GENERAL_GLO_CIPHERING: GeneralGloCiphering,
    GeneralCipheringTag.GENERAL_DED_CIPHERING: GeneralDedCiphering,
    GeneralCipheringTag.GENERAL_CIPHERING: GeneralCiphering,
}


def decode_ciphered(buf: bytes) -> CipheredApdu:
    """Decode any ciphered APDU, dispatching on its first byte.

    A tag that is not a ciphered APDU raises UnknownTagError.
    """
    if not buf:
        raise TruncatedError("empty input, expected a ciphered APDU", 0)
    general = _GENERAL_DECODERS.get(buf[0])
    if general is not None:
        return general.from_bytes(buf)
    return ServiceSpecificCiphered.from_bytes(buf)
