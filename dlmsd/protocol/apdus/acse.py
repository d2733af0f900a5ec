"""ACSE APDUs (BER, ISO/IEC 8650 as profiled by the Green Book): AARQ, AARE, RLRQ, RLRE.

Field tags (context-specific; ``Ax`` = constructed/EXPLICIT, ``8x`` = IMPLICIT):

* AARQ ``60``: 80 protocol-version, A1 application-context-name, A6
  calling-AP-title, A7 calling-AE-qualifier, 8A sender-acse-requirements,
  8B mechanism-name, AC calling-authentication-value, BE user-information.
* AARE ``61``: 80 protocol-version, A1 application-context-name, A2 result,
  A3 result-source-diagnostic, A4 responding-AP-title, A5
  responding-AE-qualifier, 88 responder-acse-requirements, 89 mechanism-name,
  AA responding-authentication-value, BE user-information.
* RLRQ ``62`` / RLRE ``63``: 80 reason, BE user-information.

(The fact sheet lists AA/AB for the AARQ's sender-acse-requirements and
mechanism-name; the tags are [10]/[11] IMPLICIT = 8A/8B, as every vector shows.)

Decisions:

* Fields the standard allows but we do not model (called-AP-title,
  invocation identifiers, implementation-information, ...) and anything else
  unknown inside the SEQUENCE are *preserved* as :class:`BerField` in
  ``unknown_fields`` and written back, so a proxy or a log replays the bytes.
* Fields are accepted in any order but each known one at most once; the
  encoder always writes them in ascending tag number, the order the standard
  defines. Long-form or non-minimal lengths decode; encoding is minimal.
* user-information stays raw bytes (an InitiateRequest/Response, a
  glo-/ded-initiate APDU or a ConfirmedServiceError): ciphering is handled
  elsewhere. The ``initiate_request`` / ``initiate_response`` properties
  decode it when it is the plain APDU.
* Authentication values (LLS password, HLS challenges) never show in ``repr``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar, Self, TypeVar

import attrs

from dlmsd.protocol.apdus.ber import (
    TAG_INTEGER,
    TAG_OBJECT_IDENTIFIER,
    TAG_OCTET_STRING,
    BerField,
    decode_fields,
    decode_integer,
    decode_tlv,
    decode_wrapped,
    encode_integer,
    encode_tlv,
    tag_number,
)
from dlmsd.protocol.apdus.initiate import (
    INITIATE_REQUEST_TAG,
    INITIATE_RESPONSE_TAG,
    InitiateRequest,
    InitiateResponse,
)
from dlmsd.protocol.errors import DecodeError, EncodeError, TruncatedError, UnknownTagError

AARQ_TAG = 0x60
AARE_TAG = 0x61
RLRQ_TAG = 0x62
RLRE_TAG = 0x63

# Field identifiers shared by several APDUs.
_PROTOCOL_VERSION = 0x80
_APPLICATION_CONTEXT_NAME = 0xA1
_USER_INFORMATION = 0xBE
_RELEASE_REASON = 0x80
# AARQ
_CALLING_AP_TITLE = 0xA6
_CALLING_AE_QUALIFIER = 0xA7
_SENDER_ACSE_REQUIREMENTS = 0x8A
_AARQ_MECHANISM_NAME = 0x8B
_CALLING_AUTHENTICATION_VALUE = 0xAC
# AARE
_RESULT = 0xA2
_RESULT_SOURCE_DIAGNOSTIC = 0xA3
_RESPONDING_AP_TITLE = 0xA4
_RESPONDING_AE_QUALIFIER = 0xA5
_RESPONDER_ACSE_REQUIREMENTS = 0x88
_AARE_MECHANISM_NAME = 0x89
_RESPONDING_AUTHENTICATION_VALUE = 0xAA

# Authentication-value CHOICE: DLMS only uses charstring [0] (GraphicString).
_AUTH_CHARSTRING = 0x80
# ACSE-requirements BIT STRING {authentication(0)}: 7 unused bits, first bit set.
_AUTHENTICATION_REQUIRED = b"\x07\x80"

# OID prefixes, content octets: 2.16.756.5.8.1 (contexts) and 2.16.756.5.8.2 (mechanisms).
_APPLICATION_CONTEXT_PREFIX = bytes.fromhex("608574050801")
_MECHANISM_PREFIX = bytes.fromhex("608574050802")


class ApplicationContext(enum.IntEnum):
    """Application context name ``2.16.756.5.8.1.N``: referencing and ciphering."""

    LOGICAL_NAME = 1
    SHORT_NAME = 2
    LOGICAL_NAME_CIPHERED = 3
    SHORT_NAME_CIPHERED = 4

    @property
    def ciphered(self) -> bool:
        """True for the "with ciphering" contexts (3 and 4)."""
        return self in (
            ApplicationContext.LOGICAL_NAME_CIPHERED,
            ApplicationContext.SHORT_NAME_CIPHERED,
        )

    @property
    def logical_name(self) -> bool:
        """True for logical-name referencing (1 and 3), False for short names."""
        return self in (ApplicationContext.LOGICAL_NAME, ApplicationContext.LOGICAL_NAME_CIPHERED)


class Mechanism(enum.IntEnum):
    """Authentication mechanism name ``2.16.756.5.8.2.N``."""

    LOWEST = 0
    LLS = 1
    HLS = 2
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


class AssociationResult(enum.IntEnum):
    """AARE result."""

    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class DiagnosticSource(enum.IntEnum):
    """Which side of ACSE produced the result-source-diagnostic (its CHOICE tag)."""

    ACSE_SERVICE_USER = 1
    ACSE_SERVICE_PROVIDER = 2


class AcseServiceUserDiagnostic(enum.IntEnum):
    """Diagnostic values of the acse-service-user choice (ISO/IEC 8650-1)."""

    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNIZED = 3
    CALLING_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 4
    CALLING_AE_QUALIFIER_NOT_RECOGNIZED = 5
    CALLING_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 6
    CALLED_AP_TITLE_NOT_RECOGNIZED = 7
    CALLED_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 8
    CALLED_AE_QUALIFIER_NOT_RECOGNIZED = 9
    CALLED_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 10
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class AcseServiceProviderDiagnostic(enum.IntEnum):
    """Diagnostic values of the acse-service-provider choice."""

    NULL = 0
    NO_REASON_GIVEN = 1
    NO_COMMON_ACSE_VERSION = 2


class ReleaseRequestReason(enum.IntEnum):
    """RLRQ reason."""

    NORMAL = 0
    URGENT = 1
    USER_DEFINED = 30


class ReleaseResponseReason(enum.IntEnum):
    """RLRE reason."""

    NORMAL = 0
    NOT_FINISHED = 1
    USER_DEFINED = 30


_DIAGNOSTIC_ENUMS: dict[int, type[enum.IntEnum]] = {
    DiagnosticSource.ACSE_SERVICE_USER: AcseServiceUserDiagnostic,
    DiagnosticSource.ACSE_SERVICE_PROVIDER: AcseServiceProviderDiagnostic,
}


@attrs.frozen(slots=True)
class ResultSourceDiagnostic:
    """AARE result-source-diagnostic: the source and its value.

    ``value`` is an :class:`AcseServiceUserDiagnostic` or
    :class:`AcseServiceProviderDiagnostic` when the number is one the standard
    names, else the plain int (meters do send private values).
    """

    source: DiagnosticSource
    value: int

    @classmethod
    def user(cls, value: int) -> ResultSourceDiagnostic:
        """An acse-service-user diagnostic."""
        return cls(DiagnosticSource.ACSE_SERVICE_USER, _named(AcseServiceUserDiagnostic, value))

    @classmethod
    def provider(cls, value: int) -> ResultSourceDiagnostic:
        """An acse-service-provider diagnostic."""
        return cls(
            DiagnosticSource.ACSE_SERVICE_PROVIDER, _named(AcseServiceProviderDiagnostic, value)
        )


def _named(enum_type: type[enum.IntEnum], value: int) -> int:
    try:
        return enum_type(value)
    except ValueError:
        return value


def _redacted(value: bytes | None) -> str:
    return "None" if value is None else "<redacted>"


def _in_tag_order(fields: Iterable[BerField]) -> tuple[BerField, ...]:
    """Preserved fields in the order they are encoded (stable by tag number).

    Sorting on the way in keeps ``from_bytes(x.to_bytes()) == x`` for any value.
    """
    return tuple(sorted(fields, key=lambda field: tag_number(field.tag)))


# --- field codecs --------------------------------------------------------------
# Encoders take a field tag and a value and return the whole TLV, or None when
# the value is absent. Decoders take the field's value span ``buf[start:end]``.


def _enum_value(enum_type: type[enum.IntEnum], value: int, what: str, offset: int) -> int:
    try:
        return enum_type(value)
    except ValueError:
        raise UnknownTagError(f"unknown {what} {value}", offset) from None


def _oid_arc(oid: bytes, prefix: bytes, what: str, offset: int) -> int:
    """N of a ``prefix.N`` OID; only the DLMS UA arcs are accepted."""
    if len(oid) != len(prefix) + 1 or not oid.startswith(prefix) or oid[-1] >= 0x80:
        raise UnknownTagError(f"unsupported {what} OID {oid.hex()}", offset)
    return oid[-1]


def _oid_contents(prefix: bytes, arc: int, what: str) -> bytes:
    if not 0 <= arc < 0x80:
        raise EncodeError(f"{what} {arc} out of range 0..127")
    return prefix + bytes((arc,))


def _encode_context(tag: int, context: int) -> bytes:
    oid = _oid_contents(_APPLICATION_CONTEXT_PREFIX, context, "application context")
    return encode_tlv(tag, encode_tlv(TAG_OBJECT_IDENTIFIER, oid))


def _decode_context(buf: bytes, start: int, end: int) -> ApplicationContext:
    oid = decode_wrapped(buf, start, end, TAG_OBJECT_IDENTIFIER, "application-context-name")
    arc = _oid_arc(oid, _APPLICATION_CONTEXT_PREFIX, "application context", start)
    return ApplicationContext(_enum_value(ApplicationContext, arc, "application context", start))


def _encode_mechanism(tag: int, mechanism: int | None) -> bytes | None:
    if mechanism is None:
        return None
    return encode_tlv(tag, _oid_contents(_MECHANISM_PREFIX, mechanism, "mechanism"))


def _decode_mechanism(buf: bytes, start: int, end: int) -> Mechanism:
    arc = _oid_arc(buf[start:end], _MECHANISM_PREFIX, "mechanism", start)
    return Mechanism(_enum_value(Mechanism, arc, "mechanism", start))


def _encode_requirements(tag: int, authentication: bool) -> bytes | None:
    return encode_tlv(tag, _AUTHENTICATION_REQUIRED) if authentication else None


def _decode_requirements(buf: bytes, start: int, end: int) -> bool:
    """ACSE-requirements bit string: True when the authentication bit (bit 0) is set."""
    if start >= end:
        raise DecodeError("empty ACSE-requirements bit string", start)
    unused = buf[start]
    if unused > 7 or (unused and end - start == 1):
        raise DecodeError(f"bad unused-bits count {unused} in ACSE-requirements", start)
    return end - start > 1 and bool(buf[start + 1] & 0x80)


def _encode_raw(tag: int, contents: bytes | None) -> bytes | None:
    return None if contents is None else encode_tlv(tag, bytes(contents))


def _decode_raw(buf: bytes, start: int, end: int) -> bytes:
    return buf[start:end]


def _encode_octets(tag: int, value: bytes | None) -> bytes | None:
    """EXPLICIT tag around an OCTET STRING: AP titles, AE qualifiers, user-information."""
    return None if value is None else encode_tlv(tag, encode_tlv(TAG_OCTET_STRING, bytes(value)))


def _decode_octets(buf: bytes, start: int, end: int) -> bytes:
    return decode_wrapped(buf, start, end, TAG_OCTET_STRING, "octet string field")


def _encode_auth_value(tag: int, value: bytes | None) -> bytes | None:
    """Authentication-value CHOICE, charstring [0] alternative."""
    return None if value is None else encode_tlv(tag, encode_tlv(_AUTH_CHARSTRING, bytes(value)))


def _decode_auth_value(buf: bytes, start: int, end: int) -> bytes:
    return decode_wrapped(buf, start, end, _AUTH_CHARSTRING, "authentication-value")


def _decode_explicit_integer(buf: bytes, start: int, end: int) -> int:
    contents = decode_wrapped(buf, start, end, TAG_INTEGER, "INTEGER field")
    return decode_integer(contents, 0, len(contents))


def _encode_explicit_integer(tag: int, value: int) -> bytes:
    return encode_tlv(tag, encode_tlv(TAG_INTEGER, encode_integer(value)))


def _decode_result(buf: bytes, start: int, end: int) -> AssociationResult:
    value = _decode_explicit_integer(buf, start, end)
    return AssociationResult(_enum_value(AssociationResult, value, "association result", start))


def _decode_diagnostic(buf: bytes, start: int, end: int) -> ResultSourceDiagnostic:
    tag, value_start, value_end = decode_tlv(buf, start, end)
    if value_end != end:
        raise DecodeError("trailing bytes in result-source-diagnostic", value_end)
    # The CHOICE is [1] acse-service-user / [2] acse-service-provider, both EXPLICIT.
    if tag > 0xFF or tag & 0xE0 != 0xA0:
        raise UnknownTagError(f"result-source-diagnostic choice tag 0x{tag:X}", start)
    source = DiagnosticSource(_enum_value(DiagnosticSource, tag & 0x1F, "diagnostic", start))
    value = _decode_explicit_integer(buf, value_start, value_end)
    return ResultSourceDiagnostic(source, _named(_DIAGNOSTIC_ENUMS[source], value))


def _encode_diagnostic(tag: int, diagnostic: ResultSourceDiagnostic) -> bytes:
    source = int(diagnostic.source)
    if source not in _DIAGNOSTIC_ENUMS:
        raise EncodeError(f"unknown diagnostic source {source}")
    return encode_tlv(tag, _encode_explicit_integer(0xA0 | source, diagnostic.value))


def _decode_reason(buf: bytes, start: int, end: int) -> int:
    """RLRQ/RLRE reason: an IMPLICIT INTEGER; the caller maps it to its enum."""
    return decode_integer(buf, start, end)


def _encode_reason(tag: int, reason: int | None) -> bytes | None:
    return None if reason is None else encode_tlv(tag, encode_integer(reason))


# --- APDU framing --------------------------------------------------------------

_T = TypeVar("_T")


class _Fields:
    """The fields of one decoded APDU: known ones by tag, the rest kept raw."""

    __slots__ = ("buf", "name", "spans", "unknown")

    def __init__(self, buf: bytes, apdu_tag: int, name: str, known: frozenset[int]) -> None:
        if not buf:
            raise TruncatedError(f"empty {name}", 0)
        if buf[0] != apdu_tag:
            raise UnknownTagError(
                f"{name} must start with 0x{apdu_tag:02X}, not 0x{buf[0]:02X}", 0
            )
        _, start, end = decode_tlv(buf, 0)
        if end != len(buf):
            raise DecodeError(f"{len(buf) - end} trailing bytes after {name}", end)
        self.buf = buf
        self.name = name
        self.spans: dict[int, tuple[int, int]] = {}
        unknown: list[BerField] = []
        for tag, value_start, value_end in decode_fields(buf, start, end):
            if tag not in known:
                unknown.append(BerField(tag, buf[value_start:value_end]))
            elif tag in self.spans:
                raise DecodeError(f"duplicate field 0x{tag:02X} in {name}", value_start)
            else:
                self.spans[tag] = (value_start, value_end)
        self.unknown = tuple(unknown)

    def optional(self, tag: int, decode: Callable[[bytes, int, int], _T]) -> _T | None:
        span = self.spans.get(tag)
        return None if span is None else decode(self.buf, span[0], span[1])

    def required(self, tag: int, decode: Callable[[bytes, int, int], _T]) -> _T:
        span = self.spans.get(tag)
        if span is None:
            raise DecodeError(f"{self.name} lacks mandatory field 0x{tag:02X}", 0)
        return decode(self.buf, span[0], span[1])


def _encode_apdu(
    apdu_tag: int,
    fields: Iterable[bytes | None],
    unknown: tuple[BerField, ...],
    known: frozenset[int],
    name: str,
) -> bytes:
    """Wrap the present fields and the preserved ones, in ascending tag number."""
    ordered = [(tag_number(encoded[0]), encoded) for encoded in fields if encoded is not None]
    for field in unknown:
        if field.tag in known:
            raise EncodeError(f"unknown_fields of {name} holds known tag 0x{field.tag:02X}")
        ordered.append((tag_number(field.tag), field.to_bytes()))
    # Stable sort: known fields go before preserved ones sharing their number.
    ordered.sort(key=lambda item: item[0])
    return encode_tlv(apdu_tag, b"".join(encoded for _, encoded in ordered))


def _plain_initiate_request(info: bytes | None) -> InitiateRequest | None:
    if not info or info[0] != INITIATE_REQUEST_TAG:
        return None
    return InitiateRequest.from_bytes(info)


def _plain_initiate_response(info: bytes | None) -> InitiateResponse | None:
    if not info or info[0] != INITIATE_RESPONSE_TAG:
        return None
    return InitiateResponse.from_bytes(info)


# --- APDUs ---------------------------------------------------------------------

_AARQ_FIELDS = frozenset(
    (
        _PROTOCOL_VERSION,
        _APPLICATION_CONTEXT_NAME,
        _CALLING_AP_TITLE,
        _CALLING_AE_QUALIFIER,
        _SENDER_ACSE_REQUIREMENTS,
        _AARQ_MECHANISM_NAME,
        _CALLING_AUTHENTICATION_VALUE,
        _USER_INFORMATION,
    )
)


@attrs.frozen(slots=True, kw_only=True)
class AARQ:
    """A-ASSOCIATE request (tag 0x60), client to server.

    ``calling_ap_title`` is the client system title (ciphered contexts);
    ``calling_ae_qualifier`` carries a certificate when used. ``protocol_version``
    is the raw BIT STRING contents of the rarely sent protocol-version field
    (``b"\\x07\\x80"`` = version1), None when absent (the default, version1).
    ``sender_acse_requirements`` is the authentication bit; False omits the field.
    """

    application_context: ApplicationContext
    calling_ap_title: bytes | None = None
    calling_ae_qualifier: bytes | None = None
    sender_acse_requirements: bool = False
    mechanism: Mechanism | None = None
    calling_authentication_value: bytes | None = attrs.field(default=None, repr=_redacted)
    user_information: bytes | None = None
    protocol_version: bytes | None = None
    unknown_fields: tuple[BerField, ...] = attrs.field(default=(), converter=_in_tag_order)

    @property
    def initiate_request(self) -> InitiateRequest | None:
        """The plain InitiateRequest in user-information, or None (absent or ciphered)."""
        return _plain_initiate_request(self.user_information)

    def to_bytes(self) -> bytes:
        """BER encoding, fields in the standard's order."""
        fields = (
            _encode_raw(_PROTOCOL_VERSION, self.protocol_version),
            _encode_context(_APPLICATION_CONTEXT_NAME, self.application_context),
            _encode_octets(_CALLING_AP_TITLE, self.calling_ap_title),
            _encode_octets(_CALLING_AE_QUALIFIER, self.calling_ae_qualifier),
            _encode_requirements(_SENDER_ACSE_REQUIREMENTS, self.sender_acse_requirements),
            _encode_mechanism(_AARQ_MECHANISM_NAME, self.mechanism),
            _encode_auth_value(_CALLING_AUTHENTICATION_VALUE, self.calling_authentication_value),
            _encode_octets(_USER_INFORMATION, self.user_information),
        )
        return _encode_apdu(AARQ_TAG, fields, self.unknown_fields, _AARQ_FIELDS, "AARQ")

    @classmethod
    def from_bytes(cls, buf: bytes) -> AARQ:
        """Decode one complete AARQ; trailing bytes are an error."""
        f = _Fields(bytes(buf), AARQ_TAG, "AARQ", _AARQ_FIELDS)
        return cls(
            application_context=f.required(_APPLICATION_CONTEXT_NAME, _decode_context),
            calling_ap_title=f.optional(_CALLING_AP_TITLE, _decode_octets),
            calling_ae_qualifier=f.optional(_CALLING_AE_QUALIFIER, _decode_octets),
            sender_acse_requirements=bool(
                f.optional(_SENDER_ACSE_REQUIREMENTS, _decode_requirements)
            ),
            mechanism=f.optional(_AARQ_MECHANISM_NAME, _decode_mechanism),
            calling_authentication_value=f.optional(
                _CALLING_AUTHENTICATION_VALUE, _decode_auth_value
            ),
            user_information=f.optional(_USER_INFORMATION, _decode_octets),
            protocol_version=f.optional(_PROTOCOL_VERSION, _decode_raw),
            unknown_fields=f.unknown,
        )


_AARE_FIELDS = frozenset(
    (
        _PROTOCOL_VERSION,
        _APPLICATION_CONTEXT_NAME,
        _RESULT,
        _RESULT_SOURCE_DIAGNOSTIC,
        _RESPONDING_AP_TITLE,
        _RESPONDING_AE_QUALIFIER,
        _RESPONDER_ACSE_REQUIREMENTS,
        _AARE_MECHANISM_NAME,
        _RESPONDING_AUTHENTICATION_VALUE,
        _USER_INFORMATION,
    )
)

_NULL_USER_DIAGNOSTIC = ResultSourceDiagnostic(
    DiagnosticSource.ACSE_SERVICE_USER, AcseServiceUserDiagnostic.NULL
)


@attrs.frozen(slots=True, kw_only=True)
class AARE:
    """A-ASSOCIATE response (tag 0x61), server to client.

    ``responding_ap_title`` is the server system title; ``responding_authentication_value``
    the HLS server-to-client challenge (StoC). ``user_information`` holds an
    InitiateResponse, a glo-/ded-initiateResponse or a ConfirmedServiceError, raw.
    """

    application_context: ApplicationContext
    result: AssociationResult = AssociationResult.ACCEPTED
    result_source_diagnostic: ResultSourceDiagnostic = _NULL_USER_DIAGNOSTIC
    responding_ap_title: bytes | None = None
    responding_ae_qualifier: bytes | None = None
    responder_acse_requirements: bool = False
    mechanism: Mechanism | None = None
    responding_authentication_value: bytes | None = attrs.field(default=None, repr=_redacted)
    user_information: bytes | None = None
    protocol_version: bytes | None = None
    unknown_fields: tuple[BerField, ...] = attrs.field(default=(), converter=_in_tag_order)

    @property
    def accepted(self) -> bool:
        """True when the association was accepted."""
        return self.result == AssociationResult.ACCEPTED

    @property
    def initiate_response(self) -> InitiateResponse | None:
        """The plain InitiateResponse in user-information, or None (absent, ciphered, error)."""
        return _plain_initiate_response(self.user_information)

    def to_bytes(self) -> bytes:
        """BER encoding, fields in the standard's order."""
        fields = (
            _encode_raw(_PROTOCOL_VERSION, self.protocol_version),
            _encode_context(_APPLICATION_CONTEXT_NAME, self.application_context),
            _encode_explicit_integer(_RESULT, self.result),
            _encode_diagnostic(_RESULT_SOURCE_DIAGNOSTIC, self.result_source_diagnostic),
            _encode_octets(_RESPONDING_AP_TITLE, self.responding_ap_title),
            _encode_octets(_RESPONDING_AE_QUALIFIER, self.responding_ae_qualifier),
            _encode_requirements(_RESPONDER_ACSE_REQUIREMENTS, self.responder_acse_requirements),
            _encode_mechanism(_AARE_MECHANISM_NAME, self.mechanism),
            _encode_auth_value(
                _RESPONDING_AUTHENTICATION_VALUE, self.responding_authentication_value
            ),
            _encode_octets(_USER_INFORMATION, self.user_information),
        )
        return _encode_apdu(AARE_TAG, fields, self.unknown_fields, _AARE_FIELDS, "AARE")

    @classmethod
    def from_bytes(cls, buf: bytes) -> AARE:
        """Decode one complete AARE; trailing bytes are an error."""
        f = _Fields(bytes(buf), AARE_TAG, "AARE", _AARE_FIELDS)
        return cls(
            application_context=f.required(_APPLICATION_CONTEXT_NAME, _decode_context),
            result=f.required(_RESULT, _decode_result),
            result_source_diagnostic=f.required(_RESULT_SOURCE_DIAGNOSTIC, _decode_diagnostic),
            responding_ap_title=f.optional(_RESPONDING_AP_TITLE, _decode_octets),
            responding_ae_qualifier=f.optional(_RESPONDING_AE_QUALIFIER, _decode_octets),
            responder_acse_requirements=bool(
                f.optional(_RESPONDER_ACSE_REQUIREMENTS, _decode_requirements)
            ),
            mechanism=f.optional(_AARE_MECHANISM_NAME, _decode_mechanism),
            responding_authentication_value=f.optional(
                _RESPONDING_AUTHENTICATION_VALUE, _decode_auth_value
            ),
            user_information=f.optional(_USER_INFORMATION, _decode_octets),
            protocol_version=f.optional(_PROTOCOL_VERSION, _decode_raw),
            unknown_fields=f.unknown,
        )


_RELEASE_FIELDS = frozenset((_RELEASE_REASON, _USER_INFORMATION))
_E = TypeVar("_E", bound=enum.IntEnum)


def _release_reason(f: _Fields, reason_type: type[_E]) -> _E | None:
    span = f.spans.get(_RELEASE_REASON)
    if span is None:
        return None
    value = _decode_reason(f.buf, span[0], span[1])
    return reason_type(_enum_value(reason_type, value, "release reason", span[0]))


class _ReleaseApdu:
    """Codec RLRQ and RLRE share: same fields, only the tag and the reason enum differ."""

    __slots__ = ()
    TAG: ClassVar[int]
    NAME: ClassVar[str]
    REASON: ClassVar[type[enum.IntEnum]]

    reason: enum.IntEnum | None
    user_information: bytes | None
    unknown_fields: tuple[BerField, ...]

    if TYPE_CHECKING:  # attrs writes the subclasses' __init__

        def __init__(
            self,
            *,
            reason: enum.IntEnum | None = None,
            user_information: bytes | None = None,
            unknown_fields: Iterable[BerField] = (),
        ) -> None: ...

    def to_bytes(self) -> bytes:
        """BER encoding."""
        fields = (
            _encode_reason(_RELEASE_REASON, self.reason),
            _encode_octets(_USER_INFORMATION, self.user_information),
        )
        return _encode_apdu(self.TAG, fields, self.unknown_fields, _RELEASE_FIELDS, self.NAME)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        """Decode one complete APDU; trailing bytes are an error."""
        f = _Fields(bytes(buf), cls.TAG, cls.NAME, _RELEASE_FIELDS)
        return cls(
            reason=_release_reason(f, cls.REASON),
            user_information=f.optional(_USER_INFORMATION, _decode_octets),
            unknown_fields=f.unknown,
        )


@attrs.frozen(slots=True, kw_only=True)
class RLRQ(_ReleaseApdu):
    """A-RELEASE request (tag 0x62); user-information may carry a (ciphered) InitiateRequest."""

    TAG: ClassVar[int] = RLRQ_TAG
    NAME: ClassVar[str] = "RLRQ"
    REASON: ClassVar[type[enum.IntEnum]] = ReleaseRequestReason

    reason: ReleaseRequestReason | None = None
    user_information: bytes | None = None
    unknown_fields: tuple[BerField, ...] = attrs.field(default=(), converter=_in_tag_order)

    @property
    def initiate_request(self) -> InitiateRequest | None:
        """The plain InitiateRequest in user-information, or None."""
        return _plain_initiate_request(self.user_information)


@attrs.frozen(slots=True, kw_only=True)
class RLRE(_ReleaseApdu):
    """A-RELEASE response (tag 0x63); user-information may carry a (ciphered) InitiateResponse."""

    TAG: ClassVar[int] = RLRE_TAG
    NAME: ClassVar[str] = "RLRE"
    REASON: ClassVar[type[enum.IntEnum]] = ReleaseResponseReason

    reason: ReleaseResponseReason | None = None
    user_information: bytes | None = None
    unknown_fields: tuple[BerField, ...] = attrs.field(default=(), converter=_in_tag_order)

    @property
    def initiate_response(self) -> InitiateResponse | None:
        """The plain InitiateResponse in user-information, or None."""
        return _plain_initiate_response(self.user_information)
