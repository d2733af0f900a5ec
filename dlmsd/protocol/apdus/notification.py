"""DataNotification [15] and EVENT-NOTIFICATION-Request [194].

DataNotification (the push APDU, on the hot path)::

    0F | long-invoke-id-and-priority(4) | date-time | notification-body (one Data)

date-time is an OCTET STRING: ``00`` (empty: no time) or ``0C`` + 12 bytes.
Some meters (Kaifa HAN) send it as a tagged Data octet-string, ``09 0C`` + 12
bytes; that form is accepted and kept (`date_time_tagged`) so it re-encodes
byte-exact.

Tolerated writer quirk: dlms-cosem's DataNotification encoder (and gateways
built on it) writes the date-time as an OPTIONAL presence flag, ``01`` + 12
bytes, without the octet-string length. That form is accepted only when the 12
bytes are a well-formed COSEM date-time (every field in range or "not
specified"), and kept (`date_time_flagged`) so it re-encodes byte-exact.
Anything else is refused as before.

Sagemcom XT211 (RS485 customer port) sends a body that is not one A-XDR value:
``01|02 count`` then, per element, an untagged attribute descriptor (class id
u16, logical name 6 bytes, attribute i8) followed by one tagged value. A generic
decoder stops inside the first descriptor. When the body does not decode as
A-XDR and reads exactly to its end in this form, it is accepted and represented
as a sequence of ``structure{long-unsigned class id, octet-string OBIS, integer
attribute, value}`` (`body_descriptors`, so it re-encodes byte-exact).
Other XT211 firmware wraps that list: ``02 02 16 xx`` (structure{enum, ...}), then
``01 count`` and per element ``02 02`` + descriptor + value; kept as
``structure{enum, array{structure{class id, OBIS, attribute, value}}}``
(real capture: esphome-libs/dlms_parser tests/dumps/raw_sagecom_xt211.log).
Source: esphome/esphome esphome/components/dlms_meter/dlms_parser.cpp (pattern
"U.ZPA" = ``F,C,O,A,TV``) and Tomer27cz/xt211 components/xt211/xt211_axdr_parser.cpp.

EVENT-NOTIFICATION-Request::

    C2 | time: 00 | 01 0C + 12 bytes | cosem-attribute-descriptor(9) | attribute-value (Data)
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import ClassVar

import attrs

from dlmsd.protocol.apdus.common import (
    CosemAttributeDescriptor,
    LongInvokeIdAndPriority,
    check_end,
    read_attribute_descriptor,
    read_data,
    read_octet_string,
    read_presence,
)
from dlmsd.protocol.axdr import (
    MAX_VALUES,
    MAX_VALUES_PER_BYTE,
    Data,
    DataType,
    decode_data,
    decode_data_counted,
    decode_length,
    encode_data,
    encode_length,
)
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import (
    DecodeError,
    DlmsError,
    EncodeError,
    TruncatedError,
    UnknownTagError,
)

_U32 = struct.Struct(">I")
_DATE_TIME_SIZE = 12
_OCTET_STRING_TAG = 0x09
_PRESENCE_FLAG = 0x01


def _date_time_from(raw: bytes, offset: int) -> CosemDateTime:
    if len(raw) != _DATE_TIME_SIZE:
        raise DecodeError(f"a date-time is 12 bytes, got {len(raw)}", offset)
    return CosemDateTime.from_bytes(raw)


@attrs.frozen(slots=True)
class DataNotification:
    """A pushed DataNotification: who (invoke id), when (optional), what (one Data).

    `long_invoke_id_and_priority` stays the raw 32-bit value (see
    :class:`LongInvokeIdAndPriority` for the bits); `date_time_tagged` records the
    non-standard ``09 0C`` date-time form for byte-exact re-encoding.
    """

    TAG: ClassVar[int] = 0x0F

    long_invoke_id_and_priority: int
    date_time: CosemDateTime | None
    body: Data
    date_time_tagged: bool = False
    date_time_flagged: bool = False
    body_descriptors: bool = False

    @property
    def invoke(self) -> LongInvokeIdAndPriority:
        return LongInvokeIdAndPriority(self.long_invoke_id_and_priority)

    @property
    def invoke_id(self) -> int:
        """The 24-bit invoke id (bits 0-23)."""
        return self.long_invoke_id_and_priority & 0x00FFFFFF

    @property
    def timestamp(self) -> datetime | None:
        """The date-time as a Python datetime; None if absent or not fully specified."""
        if self.date_time is None:
            return None
        return self.date_time.to_datetime()

    @property
    def date_time_value(self) -> str | None:
        """The date-time as ISO 8601 text (what JSON records carry), else None."""
        moment = self.timestamp
        return moment.isoformat() if moment is not None else None

    def to_bytes(self) -> bytes:
        if not 0 <= self.long_invoke_id_and_priority <= 0xFFFFFFFF:
            raise EncodeError(
                f"long-invoke-id-and-priority must be 0..2**32-1, "
                f"got {self.long_invoke_id_and_priority}"
            )
        head = b"\x0f" + _U32.pack(self.long_invoke_id_and_priority)
        if self.date_time_tagged and self.date_time_flagged:
            raise EncodeError("a date-time is either tagged (09 0C) or flagged (01), not both")
        if self.date_time is None:
            if self.date_time_tagged or self.date_time_flagged:
                raise EncodeError("a tagged or flagged date-time needs a date-time")
            stamp = b"\x00"
        else:
            raw = self.date_time.to_bytes()
            if self.date_time_tagged:
                stamp = b"\x09\x0c" + raw
            elif self.date_time_flagged:
                stamp = b"\x01" + raw
            else:
                stamp = b"\x0c" + raw
        if self.body_descriptors:
            return head + stamp + encode_descriptor_body(self.body)
        return head + stamp + encode_data(self.body)

    @classmethod
    def from_bytes(cls, buf: bytes, max_values: int = MAX_VALUES) -> DataNotification:
        """Decode a complete DataNotification (trailing bytes raise DecodeError; a body
        of more than `max_values` values raises LimitExceeded)."""
        size = len(buf)
        if size < 7:
            raise TruncatedError(f"a DataNotification needs at least 7 bytes, got {size}", size)
        if buf[0] != 0x0F:
            raise UnknownTagError(f"DataNotification tag must be 0x0F, got 0x{buf[0]:02X}", 0)
        invoke = _U32.unpack_from(buf, 1)[0]
        length = buf[5]
        tagged = flagged = False
        date_time: CosemDateTime | None
        if length == 0:
            date_time = None
            offset = 6
        else:
            if length == _OCTET_STRING_TAG and buf[6] == _DATE_TIME_SIZE:
                tagged = True
                start = 7
            elif length == _DATE_TIME_SIZE:
                start = 6
            elif length == _PRESENCE_FLAG and well_formed_date_time(buf[6:18]):
                flagged = True  # the dlms-cosem writer quirk (see the module docstring)
                start = 6
            else:
                raise DecodeError(
                    "date-time must be 00, 0C + 12 bytes or 09 0C + 12 bytes"
                    f" (or 01 + a 12-byte COSEM date-time), got {length:02X}",
                    5,
                )
            offset = start + _DATE_TIME_SIZE
            if offset > size:
                raise TruncatedError("DataNotification ends inside its date-time", 5)
            date_time = CosemDateTime.from_bytes(bytes(buf[start:offset]))
        if offset >= size:
            raise TruncatedError("DataNotification has no notification-body", offset)
        descriptors = False
        try:
            body, end = decode_data(buf, offset, max_values)
            if end != size:
                raise DecodeError(f"{size - end} trailing bytes after DataNotification", end)
        except DlmsError:
            described = decode_descriptor_body(buf, offset, max_values)
            if described is None:
                raise
            body, descriptors = described, True
        notification = _make_notification(invoke, date_time, body, tagged)
        if flagged:
            _set_flagged(notification, True)
        if descriptors:
            _set_descriptors(notification, True)
        return notification


# Hot path: build decoded notifications through the slot descriptors, skipping the
# frozen attrs __init__ (same trick as axdr's Data; the values are already checked).
_new = object.__new__
_set_invoke = DataNotification.__dict__["long_invoke_id_and_priority"].__set__
_set_date_time = DataNotification.__dict__["date_time"].__set__
_set_body = DataNotification.__dict__["body"].__set__
_set_tagged = DataNotification.__dict__["date_time_tagged"].__set__
_set_flagged = DataNotification.__dict__["date_time_flagged"].__set__
_set_descriptors = DataNotification.__dict__["body_descriptors"].__set__


def _make_notification(
    invoke: int, date_time: CosemDateTime | None, body: Data, tagged: bool
) -> DataNotification:
    notification: DataNotification = _new(DataNotification)
    _set_invoke(notification, invoke)
    _set_date_time(notification, date_time)
    _set_body(notification, body)
    _set_tagged(notification, tagged)
    _set_flagged(notification, False)
    _set_descriptors(notification, False)
    return notification


_SEQUENCE_TAGS = (0x01, 0x02)  # array, structure
_DESCRIPTOR_SIZE = 9  # class id (2), logical name (6), attribute (1)
_MAX_DESCRIPTOR_CLASS = 0xFF  # interface classes in use are below 256
_WRAPPED_HEAD = b"\x02\x02\x16"  # structure(2){enum, ...}: the wrapped form's start
_PAIR_HEAD = b"\x02\x02"  # structure(2){descriptor, value}: one wrapped entry


def decode_descriptor_body(buf: bytes, offset: int, max_values: int = MAX_VALUES) -> Data | None:
    """The XT211 body forms (see the module docstring) at `offset`, read exactly to the
    end of `buf`; None when the bytes are in neither form, or when its values together
    would be more than `decode_data` allows one body (`max_values`, and per byte).

    Flat: a sequence of ``structure{class id, OBIS, attribute, value}``. Wrapped:
    ``structure{enum, array{...}}`` whose array holds those structures."""
    size = len(buf)
    # One budget for all the entries' values, as for one body decoded by decode_data.
    budget = [min(max_values, MAX_VALUES_PER_BYTE * (size - offset) + 64) - 1]
    if buf[offset : offset + 3] == _WRAPPED_HEAD:
        # Never the flat form too: its first class id would be 0x16xx, over the maximum.
        return _read_wrapped(buf, offset, budget) if offset + 4 < size else None
    read = _read_descriptors(buf, offset, budget, False)
    if read is None or read[1] != size:
        return None
    return read[0]


def _read_wrapped(buf: bytes, offset: int, budget: list[int]) -> Data | None:
    """``02 02`` + a tagged enum + an array whose entries are each ``02 02`` + an untagged
    descriptor + a tagged value (Sagemcom XT211 with firmware that wraps its list; real
    capture: esphome-libs/dlms_parser tests/dumps/raw_sagecom_xt211.log)."""
    budget[0] -= 3  # the outer structure, its enum and the array
    read = _read_descriptors(buf, offset + 4, budget, True)
    if read is None or read[1] != len(buf) or read[0].type is not DataType.ARRAY:
        return None
    return Data.structure(Data.enum(buf[offset + 3]), read[0])


def _read_descriptors(
    buf: bytes, offset: int, budget: list[int], wrapped: bool
) -> tuple[Data, int] | None:
    """``01|02 count`` then `count` entries: an untagged descriptor and one tagged value,
    each entry after ``02 02`` when `wrapped`; the sequence and where it ends, or None.
    `budget[0]` is the values still allowed, charged as they are read."""
    size = len(buf)
    if offset + 2 > size or buf[offset] not in _SEQUENCE_TAGS:
        return None
    try:
        count, position = decode_length(buf, offset + 1)
    except DlmsError:
        return None
    head = 2 if wrapped else 0
    if count == 0 or count > (size - position) // (head + _DESCRIPTOR_SIZE + 1):
        return None
    entries = []
    for _ in range(count):
        if wrapped:
            if buf[position : position + 2] != _PAIR_HEAD:
                return None
            position += 2
        if position + _DESCRIPTOR_SIZE >= size:
            return None
        class_id = int.from_bytes(buf[position : position + 2], "big")
        name = bytes(buf[position + 2 : position + 8])
        attribute = int.from_bytes(buf[position + 8 : position + 9], "big", signed=True)
        if class_id == 0 or class_id > _MAX_DESCRIPTOR_CLASS or attribute == 0:
            return None
        budget[0] -= 5  # the entry's structure and its three fields
        if budget[0] < 1:
            return None
        try:
            value, position, used = decode_data_counted(
                buf, position + _DESCRIPTOR_SIZE, budget[0]
            )
        except DlmsError:
            return None
        budget[0] -= used
        entries.append(
            Data.structure(
                Data.long_unsigned(class_id),
                Data.octet_string(name),
                Data.integer(attribute),
                value,
            )
        )
    sequence = Data.array if buf[offset] == 0x01 else Data.structure
    return sequence(*entries), position


def encode_descriptor_body(body: Data) -> bytes:
    """The XT211 body form of a sequence of ``structure{class id, OBIS, attribute, value}``,
    or of ``structure{enum, array{...}}`` holding one (the wrapped form)."""
    outer = body.value
    if (
        body.type is DataType.STRUCTURE
        and isinstance(outer, tuple)
        and len(outer) == 2
        and outer[0].type is DataType.ENUM
        and isinstance(outer[0].value, int)
        and outer[1].type is DataType.ARRAY
    ):
        head = _WRAPPED_HEAD + bytes((outer[0].value & 0xFF,))
        return head + _encode_descriptors(outer[1], _PAIR_HEAD)
    return _encode_descriptors(body, b"")


def _encode_descriptors(body: Data, entry_head: bytes) -> bytes:
    entries = body.value
    if body.type not in (DataType.ARRAY, DataType.STRUCTURE) or not isinstance(entries, tuple):
        raise EncodeError("a descriptor body is an array or structure of descriptors")
    out = bytearray((0x01 if body.type is DataType.ARRAY else 0x02,))
    out += encode_length(len(entries))
    for entry in entries:
        fields = entry.value
        if (
            entry.type is not DataType.STRUCTURE
            or not isinstance(fields, tuple)
            or len(fields) != 4
        ):
            raise EncodeError("a descriptor is structure{class id, OBIS, attribute, value}")
        class_id, name, attribute = fields[0].value, fields[1].value, fields[2].value
        if (
            not isinstance(class_id, int)
            or not isinstance(name, bytes)
            or len(name) != 6
            or not isinstance(attribute, int)
            or not 0 <= class_id <= 0xFFFF
            or not -128 <= attribute <= 127
        ):
            raise EncodeError("a descriptor is structure{class id, OBIS, attribute, value}")
        out += entry_head
        out += class_id.to_bytes(2, "big") + name + attribute.to_bytes(1, "big", signed=True)
        out += encode_data(fields[3])
    return bytes(out)


def well_formed_date_time(raw: bytes) -> bool:
    """Whether 12 bytes are a COSEM date-time with every field in range or "not
    specified" (Blue Book 4.1.6.1); the year is any value."""
    if len(raw) != _DATE_TIME_SIZE:
        return False
    month, day, weekday, hour, minute, second, hundredths = raw[2:9]
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    return (
        (1 <= month <= 12 or month >= 0xFD)
        and (1 <= day <= 31 or day >= 0xFD)
        and (1 <= weekday <= 7 or weekday == 0xFF)
        and (hour <= 23 or hour == 0xFF)
        and (minute <= 59 or minute == 0xFF)
        and (second <= 59 or second == 0xFF)
        and (hundredths <= 99 or hundredths == 0xFF)
        and (-720 <= deviation <= 720 or deviation == -0x8000)
    )


@attrs.frozen(slots=True)
class EventNotificationRequest:
    """EVENT-NOTIFICATION-Request [194]: an attribute value a server reports unasked.

    `time` is the optional date-time (Green Book: ``time OCTET STRING OPTIONAL``,
    so ``01 0C`` + 12 bytes). Some devices put a Data tag where the presence
    flag goes (``09 0C`` + 12 bytes); that form is accepted and kept in
    `time_tagged` so it re-encodes byte-exact.
    """

    TAG: ClassVar[int] = 0xC2

    time: CosemDateTime | None
    attribute: CosemAttributeDescriptor
    value: Data
    time_tagged: bool = False

    def to_bytes(self) -> bytes:
        if self.time is None:
            if self.time_tagged:
                raise EncodeError("a tagged time needs a time")
            stamp = b"\x00"
        else:
            stamp = (b"\x09\x0c" if self.time_tagged else b"\x01\x0c") + self.time.to_bytes()
        return b"\xc2" + stamp + self.attribute.to_bytes() + encode_data(self.value)

    @classmethod
    def from_bytes(cls, buf: bytes) -> EventNotificationRequest:
        """Decode a complete EVENT-NOTIFICATION-Request (trailing bytes raise)."""
        if not buf:
            raise TruncatedError("empty event-notification-request", 0)
        if buf[0] != cls.TAG:
            raise UnknownTagError(
                f"event-notification-request tag must be 0xC2, got 0x{buf[0]:02X}", 0
            )
        tagged = len(buf) > 1 and buf[1] == _OCTET_STRING_TAG
        if tagged:
            present, offset = True, 2
        else:
            present, offset = read_presence(buf, 1, "time")
        time: CosemDateTime | None = None
        if present:
            raw, offset = read_octet_string(buf, offset, "time")
            time = _date_time_from(raw, 2)
        attribute, offset = read_attribute_descriptor(buf, offset)
        value, offset = read_data(buf, offset)
        check_end(buf, offset, "event-notification-request")
        return cls(time, attribute, value, tagged)


def decode_data_notification(buf: bytes) -> DataNotification:
    """Decode a complete DataNotification APDU (tag 0x0F)."""
    return DataNotification.from_bytes(buf)


def decode_event_notification_request(buf: bytes) -> EventNotificationRequest:
    """Decode a complete EVENT-NOTIFICATION-Request APDU (tag 0xC2)."""
    return EventNotificationRequest.from_bytes(buf)
