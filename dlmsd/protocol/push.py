"""The push pipeline: from one APDU a meter pushed to a record.

Split in steps so the daemon can do its cheap checks (which meter? allowed
security form? replayed counter?) before it spends an AES operation:

    envelope = peel(apdu)                 # no crypto
    plaintext = envelope.open(cipher)     # verifies the tag first
    notification = DataNotification.from_bytes(plaintext)

`decode_push` chains them for callers that need no such checks (CLI, bench).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring

import attrs

from dlmsd.cosem.readings import Layout, Reading, extract_readings_checked, readings_json_text
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import MAX_VALUES, data_json_text
from dlmsd.protocol.ciphered import (
    CIPHERED_TAGS,
    GeneralCiphering,
    GeneralCipheringTag,
    GeneralDedCiphering,
    GeneralGloCiphering,
    ServiceSpecificCiphered,
    decode_ciphered,
)
from dlmsd.protocol.errors import DecodeError, TruncatedError, UnsupportedSecurity
from dlmsd.protocol.security import SecurityControl, Suite0Cipher

DATA_NOTIFICATION = 0x0F
_UNSUPPORTED_BITS = 0x8E  # suite id (bits 0-3) other than 0 or 1, compression (bit 7)
_AUTH_OR_ENC = SecurityControl.AUTH | SecurityControl.ENC
_SC_IC_LENGTH = 5  # security control and invocation counter before the payload
_COUNTER = struct.Struct(">I")
_GENERAL_GLO_OR_DED = frozenset(
    (
        GeneralCipheringTag.GENERAL_GLO_CIPHERING.value,
        GeneralCipheringTag.GENERAL_DED_CIPHERING.value,
    )
)
_SERVICE_SPECIFIC_TAGS = CIPHERED_TAGS - {tag.value for tag in GeneralCipheringTag}

_LABELS = {0x00: "none", 0x10: "auth", 0x20: "enc", 0x30: "auth+enc"}


def security_label(security_control: int | None) -> str:
    """`none`, `auth`, `enc` or `auth+enc` for a security control byte."""
    if security_control is None:
        return "none"
    return _LABELS[security_control & 0x30]


@attrs.frozen(slots=True)
class Envelope:
    """What can be read of a pushed APDU without its keys."""

    apdu: bytes
    system_title: bytes | None
    security_control: int | None
    invocation_counter: int | None
    payload: bytes
    # general-ciphering authenticates its header fields too (Green Book 9.2.7.2.4).
    extra_aad: bytes = b""

    @property
    def security(self) -> str:
        return security_label(self.security_control)

    @property
    def ciphered(self) -> bool:
        return self.security_control is not None

    def open(self, cipher: Suite0Cipher | None) -> bytes:
        """The plaintext APDU; for ciphered ones the tag is verified first."""
        if self.security_control is None:
            return self.apdu
        if cipher is None:
            raise UnsupportedSecurity("a ciphered APDU needs keys")
        if self.system_title is None or self.invocation_counter is None:
            raise DecodeError("a ciphered APDU without system title")
        return cipher.decrypt(
            self.system_title,
            self.security_control,
            self.invocation_counter,
            self.payload,
            extra_aad=self.extra_aad,
        )


def is_push_or_ciphered(apdu: bytes) -> bool:
    """Whether `peel` applies: a plaintext DataNotification or a ciphered container."""
    return bool(apdu) and (apdu[0] == DATA_NOTIFICATION or apdu[0] in CIPHERED_TAGS)


def peel(apdu: bytes, system_title: bytes | None = None) -> Envelope:
    """Read the envelope of a pushed APDU.

    `system_title` is the one known from the transport or association; it
    fills in when the APDU carries none (service-specific glo- APDUs, and the
    empty system title some meters put in general-glo-ciphering).
    """
    if not apdu:
        raise TruncatedError("empty APDU", 0)
    if apdu[0] == DATA_NOTIFICATION:
        return Envelope(apdu, system_title, None, None, apdu)
    # This runs per push: the usual well-formed container is read straight from its
    # bytes; anything else (and every error) goes through the full decoder.
    envelope = _peel_short_form(apdu, system_title)
    if envelope is not None:
        return envelope
    return _peel_decoded(apdu, system_title)


def _peel_short_form(apdu: bytes, system_title: bytes | None) -> Envelope | None:
    """`_peel_decoded` of a valid general-glo/-ded or service-specific container whose
    length fields are at most three bytes, without building the container; None for
    anything else (including every input `_peel_decoded` rejects)."""
    size = len(apdu)
    tag = apdu[0]
    if tag in _GENERAL_GLO_OR_DED:
        if size < 2 or apdu[1] >= 0x80:
            return None
        title_end = 2 + apdu[1]
        if title_end >= size:
            return None
        length = apdu[title_end]
        start = title_end + 1
        title = apdu[2:title_end] or system_title
    elif tag in _SERVICE_SPECIFIC_TAGS:
        if size < 2:
            return None
        length = apdu[1]
        start = 2
        title = system_title
    else:
        return None
    if length >= 0x80:
        # Only the shortest forms decode_ciphered accepts: 0x81 for 128..255, 0x82 above.
        if length == 0x81 and start < size and apdu[start] >= 0x80:
            length = apdu[start]
            start += 1
        elif length == 0x82 and start + 1 < size and apdu[start]:
            length = apdu[start] << 8 | apdu[start + 1]
            start += 2
        else:
            return None
    if length < _SC_IC_LENGTH or start + length != size:
        return None
    control = apdu[start]
    if control & _UNSUPPORTED_BITS or not control & _AUTH_OR_ENC:
        return None
    (counter,) = _COUNTER.unpack_from(apdu, start + 1)
    return Envelope(apdu, title, control, counter, apdu[start + _SC_IC_LENGTH :])


def _peel_decoded(apdu: bytes, system_title: bytes | None) -> Envelope:
    """`peel` of a ciphered container through `decode_ciphered` (every form, every error)."""
    container = decode_ciphered(apdu)
    extra_aad = b""
    if isinstance(container, GeneralGloCiphering | GeneralDedCiphering):
        title = container.system_title or system_title
    elif isinstance(container, GeneralCiphering):
        title = container.originator_system_title or system_title
        extra_aad = container.header_aad()
    elif isinstance(container, ServiceSpecificCiphered):
        title = system_title
    else:  # pragma: no cover - decode_ciphered returns one of the above
        raise DecodeError("unexpected ciphered container")
    # Bit tests on the byte rather than a SecurityControl object: this runs per push.
    control = container.security_control
    if control & _UNSUPPORTED_BITS:
        raise UnsupportedSecurity(
            f"security control 0x{control:02X} is not suite 0 or 1 uncompressed"
        )
    if not control & _AUTH_OR_ENC:
        raise UnsupportedSecurity("ciphered APDU with neither authentication nor encryption")
    return Envelope(
        apdu,
        title,
        container.security_control,
        container.invocation_counter,
        container.payload,
        extra_aad,
    )


@attrs.frozen(slots=True)
class Push:
    """A decoded push: its envelope, the notification and the readings found in it."""

    envelope: Envelope
    notification: DataNotification
    readings: tuple[Reading, ...]
    #: Why the meter's configured layout did not fit the body (None: it did, or none).
    layout_mismatch: str | None = None

    @property
    def system_title(self) -> bytes | None:
        return self.envelope.system_title

    @property
    def invocation_counter(self) -> int | None:
        return self.envelope.invocation_counter

    def to_record(self) -> dict[str, object]:
        return build_record(self.envelope, self.notification, self.readings)

    def record_json(self, more: str = "") -> str:
        """`to_record()` as compact JSON text, with `more` (``,"key":value...``,
        already JSON) added before the closing brace. See `build_record_json`."""
        return build_record_json(self.envelope, self.notification, self.readings, more)


def open_push(
    envelope: Envelope,
    cipher: Suite0Cipher | None,
    push_object_list: Layout | None = None,
) -> Push:
    """Verify, decrypt and decode the notification inside an envelope."""
    return open_decrypted(envelope, envelope.open(cipher), push_object_list)


def open_decrypted(
    envelope: Envelope,
    plaintext: bytes,
    push_object_list: Layout | None = None,
    max_values: int = MAX_VALUES,
) -> Push:
    """Decode the notification of an envelope whose plaintext is already known (a body of
    more than `max_values` values raises LimitExceeded before it is built)."""
    if not plaintext or plaintext[0] != DATA_NOTIFICATION:
        raise DecodeError(
            f"expected a DataNotification (0x0F), got tag 0x{plaintext[0]:02X}"
            if plaintext
            else "empty plaintext",
            0,
        )
    notification = DataNotification.from_bytes(plaintext, max_values)
    readings, mismatch = extract_readings_checked(
        notification.body, push_object_list, notification.body_descriptors
    )
    return Push(envelope, notification, readings, mismatch)


def decode_push(
    apdu: bytes,
    cipher_for: Callable[[bytes | None], Suite0Cipher | None],
    system_title: bytes | None = None,
    push_object_list: Layout | None = None,
) -> Push:
    """Peel, open and decode in one call (`cipher_for` maps a system title to keys)."""
    envelope = peel(apdu, system_title)
    cipher = cipher_for(envelope.system_title) if envelope.ciphered else None
    return open_push(envelope, cipher, push_object_list)


#: The version of the record format (docs/record.schema.json): raised when a field
#: changes meaning or goes away; new optional fields keep it.
RECORD_SCHEMA_VERSION = 1


def build_record(
    envelope: Envelope, notification: DataNotification, readings: Sequence[Reading]
) -> dict[str, object]:
    """The JSON record of one push, as `dlmsd decode` prints it and sinks carry it."""
    stamp = notification.date_time_value
    return {
        **record_head(envelope),
        "invoke_id": notification.invoke_id,
        "datetime": stamp,
        "body": notification.body.to_json(),
        "readings": [reading.to_json() for reading in readings],
    }


def record_head(envelope: Envelope) -> dict[str, object]:
    """The record's fields up to ``"security"`` (the one place both `build_record` and
    the record builders of compiled shapes take them from)."""
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "kind": "push",
        "system_title": envelope.system_title.hex().upper() if envelope.system_title else None,
        "invocation_counter": envelope.invocation_counter,
        "security": envelope.security,
    }


def build_record_json(
    envelope: Envelope, notification: DataNotification, readings: Sequence[Reading], more: str = ""
) -> str:
    """`build_record` as compact JSON text (``separators=(",", ":")``, non-ASCII kept, keys
    in the same order), written without the intermediate dicts: the daemon does this
    for every push. `more` is spliced in before the closing brace."""
    return (
        f"{record_head_json(envelope)}{notification_fields_json(notification, readings)}{more}}}"
    )


def record_head_json(envelope: Envelope) -> str:
    """The opening of a record's JSON text: ``{"schema_version":..`` up to ``"security"``
    (the one place both the full path and compiled shapes take it from)."""
    title = envelope.system_title
    counter = envelope.invocation_counter
    title_text = '"' + title.hex().upper() + '"' if title else "null"
    return (
        f'{{"schema_version":{RECORD_SCHEMA_VERSION},"kind":"push"'
        f',"system_title":{title_text}'
        f',"invocation_counter":{"null" if counter is None else counter}'
        f',"security":"{envelope.security}"'
    )


def notification_fields_json(notification: DataNotification, readings: Sequence[Reading]) -> str:
    """The record's JSON text from ``,"invoke_id"`` to the readings' closing bracket."""
    stamp = notification.date_time_value
    return (
        f',"invoke_id":{notification.invoke_id}'
        f',"datetime":{"null" if stamp is None else encode_basestring(stamp)}'
        f',"body":{data_json_text(notification.body)}'
        f',"readings":{readings_json_text(readings)}'
    )
