"""A-XDR ``Data`` (IEC 61334-6, Green Book 9.5): the COSEM data types on the wire.

``decode_data`` is on the push hot path: it reads the tag, dispatches with an
if-chain on the common tags and a table for fixed-size integers, and builds
``Data`` without going through the frozen attrs ``__init__`` (which costs
~110 ns more per value on 3.11; neither path runs validators). Measured on the
HAN push of published vector 87 (160 values): ~72 us per body; a two-value
body: ~1.5 us.

Robustness rules: every length and element count is checked against the bytes
present before anything is allocated or looped over (each element needs at
least one byte), nesting is capped at :data:`MAX_DEPTH`, one decoded value
holds at most :data:`MAX_VALUES` values (``max_values``) and at most
:data:`MAX_VALUES_PER_BYTE` per byte of input, and only
:class:`~dlmsd.protocol.errors.DlmsError` subclasses escape.

Why a value budget: a tagged value costs at least its tag byte, but a
compact-array element costs only its description's wire width, and a
``null-data`` member has none. A 4 KB push (a structure of 2,000 null-data
members and one unsigned, packed 2,000 times) once expanded to four million
values. A compact array is charged the values its description makes
(``TypeDescription.values``) times the most elements its contents can hold,
and a tagged container its element count, before any element is decoded: the
budget holds before anything is allocated. The per-byte bound keeps what a
value costs in proportion to its size: tagged values make at most one per
byte, honest compact arrays two or three (a structure of n leaves is n + 1
values in at least n bytes).

Byte-exactness: values keep what the wire said, so ``encode_data(decode)`` gives
the input back: a boolean byte other than 0/1 stays an ``int``, a NaN float
keeps its octets (:class:`NaNFloat`), strings that are visible-strings decode as latin-1, date
types keep their raw octets. Lengths are re-encoded in the shortest form; a
sender using a longer form than needed is accepted but not reproduced.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

from dlmsd.protocol.cosem_datetime import (
    CosemDate,
    CosemDateTime,
    CosemTime,
    _fast_date,
    _fast_datetime,
    _fast_time,
)
from dlmsd.protocol.errors import (
    DecodeError,
    EncodeError,
    LengthError,
    LimitExceeded,
    TruncatedError,
    UnknownTagError,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_VALUES",
    "MAX_VALUES_PER_BYTE",
    "BitString",
    "CompactArray",
    "Data",
    "DataType",
    "DataValue",
    "NaNFloat",
    "TypeDescription",
    "data_json_text",
    "decode_data",
    "decode_data_counted",
    "decode_data_exact",
    "decode_length",
    "decode_type_description",
    "encode_data",
    "encode_length",
]

#: Deepest nesting of arrays / structures / compact arrays accepted (and produced).
MAX_DEPTH = 32

#: Most values one `decode_data` call builds by default (every node counts: a structure
#: of two integers is three). About 10 MB of decoded tree; pushes hold hundreds.
MAX_VALUES = 100_000
#: ... and at most this many per byte of input (plus a few, for the smallest inputs).
MAX_VALUES_PER_BYTE = 8
_VALUES_SLACK = 64


class DataType(enum.IntEnum):
    """A-XDR ``Data`` CHOICE tags (Blue Book 4.1.5)."""

    NULL_DATA = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255

    @property
    def label(self) -> str:
        """The Blue Book name, e.g. ``double-long-unsigned``."""
        return _LABELS[self]


_LABELS = {t: t.name.lower().replace("_", "-") for t in DataType}
_LABELS[DataType.UTF8_STRING] = "utf8-string"

# tag -> DataType, as a list so the hot path indexes instead of calling DataType().
_TAGS: list[DataType | None] = [None] * 256
for _t in DataType:
    _TAGS[_t] = _t

# Packed width of the fixed-size simple types (variable ones need >= 1: a length).
_PACKED_WIDTH = {
    DataType.NULL_DATA: 0,
    DataType.DONT_CARE: 0,
    DataType.BOOLEAN: 1,
    DataType.BCD: 1,
    DataType.INTEGER: 1,
    DataType.UNSIGNED: 1,
    DataType.ENUM: 1,
    DataType.LONG: 2,
    DataType.LONG_UNSIGNED: 2,
    DataType.DOUBLE_LONG: 4,
    DataType.DOUBLE_LONG_UNSIGNED: 4,
    DataType.FLOAT32: 4,
    DataType.LONG64: 8,
    DataType.LONG64_UNSIGNED: 8,
    DataType.FLOAT64: 8,
    DataType.DATE_TIME: 12,
    DataType.DATE: 5,
    DataType.TIME: 4,
}


class NaNFloat(float):
    """A NaN that remembers its wire octets (4 or 8), so it re-encodes exactly.

    It is a ``float`` (``math.isnan`` is true, arithmetic gives NaN) but, unlike
    a bare NaN, equal to another NaNFloat with the same octets, so ``Data``
    equality and hashing keep working.
    """

    __slots__ = ("raw",)
    raw: bytes

    def __new__(cls, raw: bytes) -> NaNFloat:
        value = super().__new__(cls, "nan")
        value.raw = bytes(raw)
        return value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NaNFloat) and other.raw == self.raw

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"NaNFloat({self.raw.hex()})"


@attrs.frozen(slots=True)
class BitString:
    """A bit-string: ``bits`` significant bits, first bit = MSB of ``data[0]``.

    ``data`` holds ceil(bits / 8) octets as sent, padding bits included.
    """

    bits: int
    data: bytes

    @classmethod
    def from_bools(cls, values: list[bool] | tuple[bool, ...]) -> BitString:
        """Pack booleans, first one into the most significant bit."""
        out = bytearray((len(values) + 7) // 8)
        for index, value in enumerate(values):
            if value:
                out[index >> 3] |= 0x80 >> (index & 7)
        return cls(len(values), bytes(out))

    def to_bools(self) -> tuple[bool, ...]:
        """The significant bits, in order."""
        return tuple(self.bit(index) for index in range(self.bits))

    def bit(self, index: int) -> bool:
        """Bit ``index`` (0 = first); IndexError-free: out of range -> False."""
        if not 0 <= index < self.bits:
            return False
        return bool(self.data[index >> 3] & (0x80 >> (index & 7)))

    def to_text(self) -> str:
        """The significant bits as ``"0101..."``."""
        return "".join("1" if bit else "0" for bit in self.to_bools())


@attrs.frozen(slots=True)
class TypeDescription:
    """A compact-array contents description (Blue Book 4.1.5 TypeDescription).

    Simple types carry only ``type``. ``ARRAY`` has ``count`` (number-of-elements,
    Unsigned16) and one child, the element description. ``STRUCTURE`` has one
    child per member.
    """

    type: DataType
    count: int = 0
    children: tuple[TypeDescription, ...] = ()
    # Fewest content octets one element takes; computed once so decoding a
    # compact array never walks the description per element.
    min_width: int = attrs.field(init=False, eq=False, repr=False)
    # Values one element decodes to (itself included): what it costs the decoder,
    # whatever its width on the wire (a null-data member has none).
    values: int = attrs.field(init=False, eq=False, repr=False)

    @min_width.default
    def _compute_min_width(self) -> int:
        if self.type == DataType.ARRAY:
            return self.count * self.children[0].min_width if self.children else 0
        if self.type == DataType.STRUCTURE:
            return sum(child.min_width for child in self.children)
        return _PACKED_WIDTH.get(self.type, 1)

    @values.default
    def _compute_values(self) -> int:
        if self.type == DataType.ARRAY:
            return 1 + (self.count * self.children[0].values if self.children else 0)
        if self.type == DataType.STRUCTURE:
            return 1 + sum(child.values for child in self.children)
        return 1

    @classmethod
    def array_of(cls, count: int, element: TypeDescription) -> TypeDescription:
        return cls(DataType.ARRAY, count, (element,))

    @classmethod
    def structure_of(cls, *members: TypeDescription) -> TypeDescription:
        return cls(DataType.STRUCTURE, len(members), tuple(members))

    def to_bytes(self) -> bytes:
        parts: list[bytes] = []
        _encode_description(self, parts, 0)
        return b"".join(parts)

    def to_json(self) -> object:
        if self.type == DataType.ARRAY:
            return {"array": self.count, "of": self.children[0].to_json()}
        if self.type == DataType.STRUCTURE:
            return {"structure": [child.to_json() for child in self.children]}
        return self.type.label


@attrs.frozen(slots=True)
class CompactArray:
    """A compact-array: one description, elements packed without tags."""

    description: TypeDescription
    elements: tuple[Data, ...]


#: What the decoders accept; anything but bytes is copied once.
Buffer: TypeAlias = bytes | bytearray | memoryview

DataValue: TypeAlias = (
    "bool | int | float | bytes | str | tuple[Data, ...] | BitString | CompactArray"
    " | CosemDateTime | CosemDate | CosemTime | None"
)


@attrs.frozen(slots=True, repr=False)
class Data:
    """One A-XDR value: a type tag and a Python value.

    ============================== ==========================================
    type                           value
    ============================== ==========================================
    NULL_DATA, DONT_CARE           None
    ARRAY, STRUCTURE               tuple[Data, ...]
    BOOLEAN                        bool (an ``int`` if the wire byte was not 0/1)
    BIT_STRING                     BitString
    integers, ENUM, BCD            int (BCD: the raw octet 0..255)
    OCTET_STRING                   bytes
    VISIBLE_STRING                 str (latin-1: every octet round-trips)
    UTF8_STRING                    str
    FLOAT32, FLOAT64               float (a NaN is a NaNFloat keeping its octets)
    DATE_TIME, DATE, TIME          CosemDateTime, CosemDate, CosemTime
    COMPACT_ARRAY                  CompactArray
    ============================== ==========================================
    """

    type: DataType
    value: DataValue

    # -- constructors -------------------------------------------------------
    @classmethod
    def null(cls) -> Data:
        return cls(DataType.NULL_DATA, None)

    @classmethod
    def dont_care(cls) -> Data:
        return cls(DataType.DONT_CARE, None)

    @classmethod
    def array(cls, *items: Data) -> Data:
        return cls(DataType.ARRAY, tuple(items))

    @classmethod
    def structure(cls, *items: Data) -> Data:
        return cls(DataType.STRUCTURE, tuple(items))

    @classmethod
    def boolean(cls, value: bool) -> Data:
        return cls(DataType.BOOLEAN, value)

    @classmethod
    def bit_string(cls, value: BitString) -> Data:
        return cls(DataType.BIT_STRING, value)

    @classmethod
    def double_long(cls, value: int) -> Data:
        return cls(DataType.DOUBLE_LONG, value)

    @classmethod
    def double_long_unsigned(cls, value: int) -> Data:
        return cls(DataType.DOUBLE_LONG_UNSIGNED, value)

    @classmethod
    def octet_string(cls, value: bytes) -> Data:
        return cls(DataType.OCTET_STRING, bytes(value))

    @classmethod
    def visible_string(cls, value: str) -> Data:
        return cls(DataType.VISIBLE_STRING, value)

    @classmethod
    def utf8_string(cls, value: str) -> Data:
        return cls(DataType.UTF8_STRING, value)

    @classmethod
    def bcd(cls, value: int) -> Data:
        return cls(DataType.BCD, value)

    @classmethod
    def integer(cls, value: int) -> Data:
        return cls(DataType.INTEGER, value)

    @classmethod
    def long(cls, value: int) -> Data:
        return cls(DataType.LONG, value)

    @classmethod
    def unsigned(cls, value: int) -> Data:
        return cls(DataType.UNSIGNED, value)

    @classmethod
    def long_unsigned(cls, value: int) -> Data:
        return cls(DataType.LONG_UNSIGNED, value)

    @classmethod
    def long64(cls, value: int) -> Data:
        return cls(DataType.LONG64, value)

    @classmethod
    def long64_unsigned(cls, value: int) -> Data:
        return cls(DataType.LONG64_UNSIGNED, value)

    @classmethod
    def enum(cls, value: int) -> Data:
        return cls(DataType.ENUM, value)

    @classmethod
    def float32(cls, value: float) -> Data:
        return cls(DataType.FLOAT32, value)

    @classmethod
    def float64(cls, value: float) -> Data:
        return cls(DataType.FLOAT64, value)

    @classmethod
    def date_time(cls, value: CosemDateTime) -> Data:
        return cls(DataType.DATE_TIME, value)

    @classmethod
    def date(cls, value: CosemDate) -> Data:
        return cls(DataType.DATE, value)

    @classmethod
    def time(cls, value: CosemTime) -> Data:
        return cls(DataType.TIME, value)

    @classmethod
    def compact_array(cls, description: TypeDescription, *elements: Data) -> Data:
        return cls(DataType.COMPACT_ARRAY, CompactArray(description, tuple(elements)))

    # -- views ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The A-XDR encoding (same as :func:`encode_data`)."""
        return encode_data(self)

    def to_json(self) -> object:
        """A typed JSON-ready tree: ``{"type": "unsigned", "value": 5}``.

        Octet-strings are hex; arrays/structures are lists of typed nodes (a
        compact-array adds ``"description"``); bit-strings are ``"0101..."``; date
        types give ISO text when fully specified (else a dict of the specified
        fields) plus ``"hex"``; non-finite floats are the strings ``"NaN"``,
        ``"Infinity"``, ``"-Infinity"``.
        """
        return _to_json(self, 0)

    def plain(self) -> object:
        """The untyped Python value: int, bool, bytes, str, float, list, ...

        Date types stay COSEM objects and bit-strings stay :class:`BitString`.
        """
        return _plain(self, 0)

    def __repr__(self) -> str:
        return f"Data({self.type.name}, {self.value!r})"


# -- hot-path construction ---------------------------------------------------------
_new = object.__new__
_set_type = Data.__dict__["type"].__set__
_set_value = Data.__dict__["value"].__set__


def _make(data_type: DataType, value: object) -> Data:
    item: Data = _new(Data)
    _set_type(item, data_type)
    _set_value(item, value)
    return item


# -- lengths -------------------------------------------------------------------------
def decode_length(buf: bytes, offset: int) -> tuple[int, int]:
    """Decode an A-XDR length at ``offset``; return ``(length, new_offset)``.

    One byte below 0x80, else 0x8N followed by N (1..4) big-endian bytes.
    The length is not checked against the bytes that follow; callers do that.
    """
    if offset >= len(buf):
        raise TruncatedError("A-XDR length missing", offset)
    first = buf[offset]
    if first < 0x80:
        return first, offset + 1
    size = first & 0x7F
    if size == 0 or size > 4:
        raise LengthError(f"A-XDR length form 0x{first:02x} not supported", offset)
    end = offset + 1 + size
    if end > len(buf):
        raise TruncatedError("A-XDR length truncated", offset)
    return int.from_bytes(buf[offset + 1 : end], "big"), end


def encode_length(n: int) -> bytes:
    """Encode an A-XDR length in the shortest form."""
    if n < 0:
        raise EncodeError(f"negative A-XDR length {n}")
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    if size > 4:
        raise EncodeError(f"A-XDR length {n} does not fit in 4 bytes")
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


# -- decoding --------------------------------------------------------------------------
_UnpackFrom = Callable[[bytes, int], tuple[Any, ...]]

# tag -> (size, unpack_from or None for a plain octet, type): the fixed-size integers.
_FIXED: dict[int, tuple[int, _UnpackFrom | None, DataType]] = {
    t: (size, None if fmt is None else struct.Struct(fmt).unpack_from, t)
    for t, size, fmt in (
        (DataType.DOUBLE_LONG, 4, ">i"),
        (DataType.DOUBLE_LONG_UNSIGNED, 4, ">I"),
        (DataType.INTEGER, 1, ">b"),
        (DataType.LONG, 2, ">h"),
        (DataType.LONG_UNSIGNED, 2, ">H"),
        (DataType.LONG64, 8, ">q"),
        (DataType.LONG64_UNSIGNED, 8, ">Q"),
        (DataType.UNSIGNED, 1, None),
        (DataType.ENUM, 1, None),
        (DataType.BCD, 1, None),
    )
}


def fixed_size_leaf(tag: int) -> tuple[int, DataType, Callable[[bytes], int]] | None:
    """For the tag of a fixed-size integer type (integers, unsigned, enum, bcd): its
    content size, its type and a reader of its content octets, as the decoder reads
    them; None for any other tag."""
    fixed = _FIXED.get(tag)
    if fixed is None:
        return None
    size, unpack_from, data_type = fixed
    if unpack_from is None:
        return size, data_type, _first_octet
    return size, data_type, lambda raw: int(unpack_from(raw, 0)[0])


def _first_octet(raw: bytes) -> int:
    return raw[0]


_DATE_SIZES: dict[int, int] = {DataType.DATE_TIME: 12, DataType.DATE: 5, DataType.TIME: 4}
_DATE_TYPES: dict[int, DataType] = {
    t: t for t in (DataType.DATE_TIME, DataType.DATE, DataType.TIME)
}
_DATE_FACTORIES: dict[int, Callable[[bytes], object]] = {
    DataType.DATE_TIME: _fast_datetime,
    DataType.DATE: _fast_date,
    DataType.TIME: _fast_time,
}
_FLOAT32 = struct.Struct(">f")
_FLOAT64 = struct.Struct(">d")


# Enum attribute access costs ~70 ns on 3.11; the hot path uses these instead.
_STRUCTURE = DataType.STRUCTURE
_ARRAY = DataType.ARRAY
_OCTET_STRING = DataType.OCTET_STRING


def _truncated(what: str, offset: int) -> TruncatedError:
    return TruncatedError(f"A-XDR {what} truncated", offset)


def decode_data(buf: Buffer, offset: int = 0, max_values: int = MAX_VALUES) -> tuple[Data, int]:
    """Decode one A-XDR value at ``offset``; return ``(value, new_offset)``.

    A value that would hold more than `max_values` values, or more than
    `MAX_VALUES_PER_BYTE` per byte from `offset` on (nested ones and compact-array
    elements included), raises :class:`LimitExceeded` before they are built.
    """
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    if offset < 0 or offset >= len(buf):
        raise TruncatedError("A-XDR data missing", offset)
    limit = min(max_values, MAX_VALUES_PER_BYTE * (len(buf) - offset) + _VALUES_SLACK)
    return _decode(buf, offset + 1, len(buf), 0, buf[offset], [limit - 1, limit, max_values])


def decode_data_counted(
    buf: Buffer, offset: int = 0, max_values: int = MAX_VALUES
) -> tuple[Data, int, int]:
    """`decode_data`, and the values it charged to its budget: for callers that decode
    several values out of one input and hold them to one budget together."""
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    if offset < 0 or offset >= len(buf):
        raise TruncatedError("A-XDR data missing", offset)
    limit = min(max_values, MAX_VALUES_PER_BYTE * (len(buf) - offset) + _VALUES_SLACK)
    budget = [limit - 1, limit, max_values]
    value, end = _decode(buf, offset + 1, len(buf), 0, buf[offset], budget)
    return value, end, limit - budget[0]


def decode_data_exact(buf: Buffer, max_values: int = MAX_VALUES) -> Data:
    """Decode a buffer that holds exactly one A-XDR value (trailing bytes raise)."""
    value, end = decode_data(buf, 0, max_values)
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} trailing bytes after A-XDR data", end)
    return value


# The value budget of one decode_data call: [values still allowed, the limit,
# max_values] (a list: one mutable cell shared down the recursion, cheaper than an object).
_Budget: TypeAlias = list[int]


def _over_budget(budget: _Budget, wanted: int, offset: int) -> LimitExceeded:
    _left, limit, max_values = budget
    which = (
        f"max {max_values:,} values"
        if limit == max_values
        else f"{MAX_VALUES_PER_BYTE} values per byte of input"
    )
    return LimitExceeded(
        f"A-XDR value expands to more than {limit:,} values ({wanted:,} wanted at once"
        f" here; limit: {which})",
        offset,
    )


def _decode(
    buf: bytes, off: int, limit: int, depth: int, tag: int, budget: _Budget
) -> tuple[Data, int]:
    """Decode the body of a value whose tag (at ``off - 1``) was ``tag``.

    ``limit`` is where the enclosing container's bytes end; ``budget`` is charged
    for the values a container or compact array holds before they are built.
    """
    if tag == 2 or tag == 1:  # structure / array
        if depth >= MAX_DEPTH:
            raise LengthError(f"A-XDR nesting deeper than {MAX_DEPTH}", off - 1)
        if off >= limit:
            raise _truncated("element count", off)
        count = buf[off]
        if count < 0x80:
            off += 1
        else:
            count, off = decode_length(buf, off)
            if off > limit:
                raise _truncated("element count", off)
        if count > limit - off:  # every element needs its tag byte
            raise TruncatedError(f"A-XDR container announces {count} elements", off)
        budget[0] -= count
        if budget[0] < 0:
            raise _over_budget(budget, count, off)
        items = []
        depth += 1
        for _ in range(count):
            if off >= limit:
                raise _truncated("container", off)
            child_tag = buf[off]
            # Leaves inline (fixed-size integers, short octet-strings): saves a call
            # per value; anything else, and every error, goes through _decode.
            fixed = _FIXED.get(child_tag)
            if fixed is not None:
                size, unpack_from, data_type = fixed
                end = off + 1 + size
                if end <= limit:
                    item = _new(Data)
                    _set_type(item, data_type)
                    _set_value(
                        item, buf[off + 1] if unpack_from is None else unpack_from(buf, off + 1)[0]
                    )
                    items.append(item)
                    off = end
                    continue
            elif child_tag == 9 and off + 1 < limit:
                size = buf[off + 1]
                end = off + 2 + size
                if size < 0x80 and end <= limit:
                    item = _new(Data)
                    _set_type(item, _OCTET_STRING)
                    _set_value(item, buf[off + 2 : end])
                    items.append(item)
                    off = end
                    continue
            item, off = _decode(buf, off + 1, limit, depth, child_tag, budget)
            items.append(item)
        result: Data = _new(Data)
        _set_type(result, _STRUCTURE if tag == 2 else _ARRAY)
        _set_value(result, tuple(items))
        return result, off
    fixed = _FIXED.get(tag)
    if fixed is not None:
        size, unpack_from, data_type = fixed
        end = off + size
        if end > limit:
            raise _truncated(data_type.label, off)
        result = _new(Data)
        _set_type(result, data_type)
        # one-octet unsigned types: the octet is the value, no struct call
        _set_value(result, buf[off] if unpack_from is None else unpack_from(buf, off)[0])
        return result, end
    if tag == 9:  # octet-string
        if off >= limit:
            raise _truncated("octet-string length", off)
        size = buf[off]
        if size < 0x80:
            off += 1
        else:
            size, off = decode_length(buf, off)
        end = off + size
        if end > limit:
            raise _truncated("octet-string", off)
        result = _new(Data)
        _set_type(result, _OCTET_STRING)
        _set_value(result, buf[off:end])
        return result, end
    return _decode_rare(buf, off, limit, depth, tag, budget)


def _decode_rare(
    buf: bytes, off: int, limit: int, depth: int, tag: int, budget: _Budget
) -> tuple[Data, int]:
    """The tags that pushes seldom carry; same contract as :func:`_decode`."""
    if tag == 0 or tag == 255:
        return _make(DataType.NULL_DATA if tag == 0 else DataType.DONT_CARE, None), off
    if tag == 3:  # boolean
        if off >= limit:
            raise _truncated("boolean", off)
        octet = buf[off]
        return _make(DataType.BOOLEAN, octet == 1 if octet <= 1 else octet), off + 1
    if tag == 10 or tag == 12:  # visible-string / utf8-string
        size, off = decode_length(buf, off)
        end = off + size
        if end > limit:
            raise _truncated("string", off)
        if tag == 10:
            return _make(DataType.VISIBLE_STRING, buf[off:end].decode("latin-1")), end
        try:
            text = buf[off:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"invalid UTF-8 in utf8-string: {exc.reason}", off + exc.start
            ) from None
        return _make(DataType.UTF8_STRING, text), end
    date_size = _DATE_SIZES.get(tag)
    if date_size is not None:
        end = off + date_size
        if end > limit:
            raise _truncated("date/time", off)
        return _make(_DATE_TYPES[tag], _DATE_FACTORIES[tag](buf[off:end])), end
    if tag == 23 or tag == 24:  # float32 / float64
        codec = _FLOAT32 if tag == 23 else _FLOAT64
        end = off + codec.size
        if end > limit:
            raise _truncated("float", off)
        number = codec.unpack_from(buf, off)[0]
        # NaN payloads do not survive a float round trip; keep the octets.
        value: object = NaNFloat(buf[off:end]) if number != number else number
        return _make(DataType.FLOAT32 if tag == 23 else DataType.FLOAT64, value), end
    if tag == 4:  # bit-string
        bits, off = decode_length(buf, off)
        end = off + (bits + 7) // 8
        if end > limit:
            raise _truncated("bit-string", off)
        return _make(DataType.BIT_STRING, BitString(bits, buf[off:end])), end
    if tag == 19:  # compact-array
        if depth >= MAX_DEPTH:
            raise LengthError(f"A-XDR nesting deeper than {MAX_DEPTH}", off - 1)
        description, off = _decode_description(buf, off, limit, depth + 1)
        size, off = decode_length(buf, off)
        end = off + size
        if end > limit:
            raise _truncated("compact-array contents", off)
        elements = _decode_compact_contents(buf, off, end, description, depth + 1, budget)
        return _make(DataType.COMPACT_ARRAY, CompactArray(description, elements)), end
    raise UnknownTagError(f"unknown A-XDR data tag {tag}", off - 1)


# -- compact arrays --------------------------------------------------------------------
_LEAF_DESCRIPTIONS: dict[DataType, TypeDescription] = {
    t: TypeDescription(t)
    for t in DataType
    if t not in (DataType.ARRAY, DataType.STRUCTURE, DataType.COMPACT_ARRAY)
}
_LEAF_BY_TAG: list[TypeDescription | None] = [None] * 256
for _leaf in _LEAF_DESCRIPTIONS.values():
    _LEAF_BY_TAG[_leaf.type] = _leaf


def decode_type_description(buf: Buffer, offset: int = 0) -> tuple[TypeDescription, int]:
    """Decode a compact-array TypeDescription; return ``(description, new_offset)``."""
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    return _decode_description(buf, offset, len(buf), 0)


def _decode_description(
    buf: bytes, off: int, limit: int, depth: int
) -> tuple[TypeDescription, int]:
    if off >= limit:
        raise _truncated("type description", off)
    tag = buf[off]
    data_type = _TAGS[tag]
    if data_type is None or data_type == DataType.COMPACT_ARRAY:
        raise UnknownTagError(f"type description tag {tag} not allowed", off)
    off += 1
    if data_type == DataType.ARRAY or data_type == DataType.STRUCTURE:
        if depth >= MAX_DEPTH:
            raise LengthError(f"type description nesting deeper than {MAX_DEPTH}", off - 1)
        if data_type == DataType.ARRAY:
            if off + 2 > limit:
                raise _truncated("type description count", off)
            count = (buf[off] << 8) | buf[off + 1]
            element, off = _decode_description(buf, off + 2, limit, depth + 1)
            return TypeDescription(DataType.ARRAY, count, (element,)), off
        count, off = decode_length(buf, off)
        if count > limit - off:
            raise TruncatedError(f"type description announces {count} members", off)
        members = []
        for _ in range(count):
            # Leaf members inline: no call each.
            leaf = _LEAF_BY_TAG[buf[off]] if off < limit else None
            if leaf is not None:
                members.append(leaf)
                off += 1
                continue
            member, off = _decode_description(buf, off, limit, depth + 1)
            members.append(member)
        return TypeDescription(DataType.STRUCTURE, count, tuple(members)), off
    # Leaves are immutable values: one shared instance per type (a description of
    # thousands of members then costs a lookup each, not an attrs construction).
    return _LEAF_DESCRIPTIONS[data_type], off


def _decode_compact_contents(
    buf: bytes, off: int, end: int, description: TypeDescription, depth: int, budget: _Budget
) -> tuple[Data, ...]:
    if off == end:
        return ()
    width = description.min_width
    if width == 0:
        # Zero-width elements in non-empty contents: the count is undefined.
        raise DecodeError("compact-array of zero-width elements has contents", off)
    if width > end - off:
        raise _truncated("compact-array element", off)
    # Charged before any element is decoded: as many elements as the contents can
    # hold (each takes at least `width` octets), each costing the values its
    # description makes, whatever its wire width (null-data members have none).
    wanted = (end - off) // width * description.values
    budget[0] -= wanted
    if budget[0] < 0:
        raise _over_budget(budget, wanted, off)
    elements = []
    while off < end:
        element, off = _decode_packed(buf, off, end, description, depth, budget)
        elements.append(element)
    return tuple(elements)


def _decode_packed(
    buf: bytes, off: int, limit: int, description: TypeDescription, depth: int, budget: _Budget
) -> tuple[Data, int]:
    """One packed element; its values were charged to ``budget`` by the caller."""
    data_type = description.type
    if data_type == DataType.ARRAY or data_type == DataType.STRUCTURE:
        if depth >= MAX_DEPTH:
            raise LengthError(f"A-XDR nesting deeper than {MAX_DEPTH}", off)
        if data_type == DataType.ARRAY:
            element = description.children[0]
            count = description.count
            if count and element.min_width == 0:
                raise DecodeError("compact-array description repeats zero-width elements", off)
            if description.min_width > limit - off:
                raise _truncated("compact-array element", off)
            children = [element] * count
        else:
            children = list(description.children)
        items = []
        for child in children:
            item, off = _decode_packed(buf, off, limit, child, depth + 1, budget)
            items.append(item)
        return _make(data_type, tuple(items)), off
    # A simple type: its body is exactly the tagged encoding minus the tag.
    return _decode(buf, off, limit, depth, data_type, budget)


# -- encoding --------------------------------------------------------------------------
_INT_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.DOUBLE_LONG: (-(1 << 31), (1 << 31) - 1),
    DataType.DOUBLE_LONG_UNSIGNED: (0, (1 << 32) - 1),
    DataType.INTEGER: (-128, 127),
    DataType.LONG: (-(1 << 15), (1 << 15) - 1),
    DataType.UNSIGNED: (0, 255),
    DataType.LONG_UNSIGNED: (0, 0xFFFF),
    DataType.LONG64: (-(1 << 63), (1 << 63) - 1),
    DataType.LONG64_UNSIGNED: (0, (1 << 64) - 1),
    DataType.ENUM: (0, 255),
    DataType.BCD: (0, 255),
}
_INT_SIZES: dict[DataType, int] = {
    DataType.DOUBLE_LONG: 4,
    DataType.DOUBLE_LONG_UNSIGNED: 4,
    DataType.INTEGER: 1,
    DataType.LONG: 2,
    DataType.UNSIGNED: 1,
    DataType.LONG_UNSIGNED: 2,
    DataType.LONG64: 8,
    DataType.LONG64_UNSIGNED: 8,
    DataType.ENUM: 1,
    DataType.BCD: 1,
}
_DATE_CLASSES: dict[DataType, type] = {
    DataType.DATE_TIME: CosemDateTime,
    DataType.DATE: CosemDate,
    DataType.TIME: CosemTime,
}


def encode_data(value: Data) -> bytes:
    """Encode one value (tag included). Bad values raise :class:`EncodeError`."""
    parts: list[bytes] = []
    _encode(value, parts, 0, True)
    return b"".join(parts)


def _wrong(value: Data) -> EncodeError:
    return EncodeError(f"{value.type.label} cannot hold {type(value.value).__name__}")


def _encode(item: Data, parts: list[bytes], depth: int, tagged: bool) -> None:
    """Append the encoding of ``item``; without tag when packed in a compact array."""
    data_type = item.type
    value = item.value
    if not isinstance(data_type, DataType):
        raise EncodeError(f"not a DataType: {data_type!r}")
    if tagged:
        parts.append(bytes((data_type,)))
    size = _INT_SIZES.get(data_type)
    if size is not None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong(item)
        low, high = _INT_RANGES[data_type]
        if not low <= value <= high:
            raise EncodeError(f"{data_type.label} out of range {low}..{high}: {value}")
        parts.append(value.to_bytes(size, "big", signed=low < 0))
        return
    if data_type == DataType.ARRAY or data_type == DataType.STRUCTURE:
        if not isinstance(value, tuple):
            raise _wrong(item)
        if depth >= MAX_DEPTH:
            raise EncodeError(f"A-XDR nesting deeper than {MAX_DEPTH}")
        if tagged:
            parts.append(encode_length(len(value)))
        for child in value:
            if not isinstance(child, Data):
                raise EncodeError(f"{data_type.label} element is not Data: {child!r}")
            _encode(child, parts, depth + 1, tagged)
        return
    if data_type == DataType.OCTET_STRING:
        if not isinstance(value, bytes | bytearray):
            raise _wrong(item)
        parts.append(encode_length(len(value)))
        parts.append(bytes(value))
        return
    if data_type == DataType.NULL_DATA or data_type == DataType.DONT_CARE:
        if value is not None:
            raise _wrong(item)
        return
    if data_type == DataType.BOOLEAN:
        if not isinstance(value, int) or not 0 <= value <= 255:
            raise _wrong(item)
        parts.append(bytes((int(value),)))
        return
    if data_type == DataType.VISIBLE_STRING or data_type == DataType.UTF8_STRING:
        if not isinstance(value, str):
            raise _wrong(item)
        codec = "latin-1" if data_type == DataType.VISIBLE_STRING else "utf-8"
        try:
            raw = value.encode(codec)
        except UnicodeEncodeError as exc:
            raise EncodeError(
                f"{data_type.label} cannot encode {exc.object[exc.start]!r}"
            ) from None
        parts.append(encode_length(len(raw)))
        parts.append(raw)
        return
    if data_type == DataType.FLOAT32 or data_type == DataType.FLOAT64:
        _encode_float(item, parts)
        return
    date_class = _DATE_CLASSES.get(data_type)
    if date_class is not None:
        if not isinstance(value, CosemDateTime | CosemDate | CosemTime) or (
            type(value) is not date_class
        ):
            raise _wrong(item)
        parts.append(value.raw)
        return
    if data_type == DataType.BIT_STRING:
        if not isinstance(value, BitString):
            raise _wrong(item)
        if len(value.data) != (value.bits + 7) // 8:
            raise EncodeError(
                f"bit-string of {value.bits} bits needs {(value.bits + 7) // 8} octets"
            )
        parts.append(encode_length(value.bits))
        parts.append(value.data)
        return
    if data_type == DataType.COMPACT_ARRAY:
        if not isinstance(value, CompactArray):
            raise _wrong(item)
        if not tagged:
            raise EncodeError("a compact-array cannot be packed in a compact-array")
        if depth >= MAX_DEPTH:
            raise EncodeError(f"A-XDR nesting deeper than {MAX_DEPTH}")
        _encode_description(value.description, parts, depth + 1)
        contents: list[bytes] = []
        for element in value.elements:
            _encode_packed(element, value.description, contents, depth + 1)
        body = b"".join(contents)
        if value.elements and not body:
            raise EncodeError("compact-array of zero-width elements cannot be decoded back")
        parts.append(encode_length(len(body)))
        parts.append(body)
        return
    raise EncodeError(f"cannot encode {data_type!r}")


def _encode_float(item: Data, parts: list[bytes]) -> None:
    value = item.value
    codec = _FLOAT32 if item.type == DataType.FLOAT32 else _FLOAT64
    if isinstance(value, NaNFloat):
        if len(value.raw) != codec.size:
            raise EncodeError(f"{item.type.label} NaN must be {codec.size} octets")
        parts.append(value.raw)
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong(item)
    try:
        parts.append(codec.pack(value))
    except (OverflowError, struct.error):
        raise EncodeError(f"{item.type.label} out of range: {value!r}") from None


def _encode_packed(
    item: Data, description: TypeDescription, parts: list[bytes], depth: int
) -> None:
    if item.type != description.type:
        raise EncodeError(
            f"compact-array element is {item.type.label}, description says "
            f"{description.type.label}"
        )
    if depth >= MAX_DEPTH:
        raise EncodeError(f"A-XDR nesting deeper than {MAX_DEPTH}")
    if description.type == DataType.ARRAY or description.type == DataType.STRUCTURE:
        value = item.value
        if not isinstance(value, tuple):
            raise _wrong(item)
        if description.type == DataType.ARRAY:
            if description.count and description.children[0].min_width == 0:
                raise EncodeError("compact-array description repeats zero-width elements")
            if len(value) != description.count:
                raise EncodeError(
                    f"compact-array description says {description.count} elements, "
                    f"got {len(value)}"
                )
            children = [description.children[0]] * len(value)
        else:
            children = list(description.children)
            if len(value) != len(children):
                raise EncodeError(
                    f"compact-array description says {len(children)} members, got {len(value)}"
                )
        for child, child_description in zip(value, children, strict=True):
            if not isinstance(child, Data):
                raise EncodeError(f"element is not Data: {child!r}")
            _encode_packed(child, child_description, parts, depth + 1)
        return
    _encode(item, parts, depth, False)


def _encode_description(description: TypeDescription, parts: list[bytes], depth: int) -> None:
    data_type = description.type
    if not isinstance(data_type, DataType) or data_type == DataType.COMPACT_ARRAY:
        raise EncodeError(f"type description cannot be {data_type!r}")
    # Only containers count towards the depth, as in _decode_description: what
    # decodes must encode.
    if depth >= MAX_DEPTH and data_type in (DataType.ARRAY, DataType.STRUCTURE):
        raise EncodeError(f"type description nesting deeper than {MAX_DEPTH}")
    parts.append(bytes((data_type,)))
    if data_type == DataType.ARRAY:
        if len(description.children) != 1 or not 0 <= description.count <= 0xFFFF:
            raise EncodeError("array type description needs one child and a count 0..65535")
        parts.append(description.count.to_bytes(2, "big"))
        _encode_description(description.children[0], parts, depth + 1)
    elif data_type == DataType.STRUCTURE:
        parts.append(encode_length(len(description.children)))
        for child in description.children:
            _encode_description(child, parts, depth + 1)


# -- views --------------------------------------------------------------------------
def _float_json(value: object) -> object:
    assert isinstance(value, float | int)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


_DATE_TIME_CLASSES = (CosemDateTime, CosemDate, CosemTime)


def _to_json(item: Data, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise EncodeError(f"A-XDR nesting deeper than {MAX_DEPTH}")
    data_type = item.type
    value = item.value
    # Fast paths for what push bodies are made of: this runs for every record.
    if type(value) is int and data_type is not DataType.BOOLEAN:
        return {"type": _LABELS[data_type], "value": value}
    if type(value) is bytes:
        return {"type": _LABELS[data_type], "value": value.hex()}
    if type(value) is tuple:
        return {
            "type": _LABELS[data_type],
            "value": [_to_json(child, depth + 1) for child in value],
        }
    node: dict[str, object] = {"type": _LABELS[data_type]}
    if isinstance(value, tuple):
        node["value"] = [_to_json(child, depth + 1) for child in value]
    elif isinstance(value, CompactArray):
        node["description"] = value.description.to_json()
        node["value"] = [_to_json(child, depth + 1) for child in value.elements]
    elif isinstance(value, _DATE_TIME_CLASSES):
        node.update(value.to_json())
    elif isinstance(value, BitString):
        node["value"] = value.to_text()
    elif data_type == DataType.FLOAT32 or data_type == DataType.FLOAT64:
        node["value"] = _float_json(value)
    elif isinstance(value, bytes):
        node["value"] = value.hex()
    elif data_type == DataType.BOOLEAN:
        node["value"] = bool(value)
        if not isinstance(value, bool):
            node["raw"] = value
    else:
        node["value"] = value
    return node


# JSON text of the typed tree, written directly: the record of every push embeds its
# body, and building the dict tree then serialising it costs about twice as much.
_JSON_OPEN = {t: f'{{"type":"{_LABELS[t]}","value":' for t in DataType}
_TREE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_text_open(data_type: DataType) -> str:
    """What `data_json_text` writes before the value of an item of `data_type`:
    ``{"type":"<label>","value":``."""
    return _JSON_OPEN[data_type]


def data_json_text(item: Data) -> str:
    """``Data.to_json()`` as compact JSON text (``separators=(",", ":")``, non-ASCII kept).

    Same text as ``json.dumps(item.to_json(), ensure_ascii=False, separators=(",", ":"))``,
    without building the intermediate dicts.
    """
    return _json_text(item, 0)


def _json_text(item: Data, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise EncodeError(f"A-XDR nesting deeper than {MAX_DEPTH}")
    data_type = item.type
    value = item.value
    if type(value) is tuple:
        depth += 1
        children = ",".join([_json_text(child, depth) for child in value])
        return f"{_JSON_OPEN[data_type]}[{children}]}}"
    if type(value) is int and data_type is not DataType.BOOLEAN:
        return f"{_JSON_OPEN[data_type]}{value}}}"
    if type(value) is bytes:
        return f'{_JSON_OPEN[data_type]}"{value.hex()}"}}'
    # Dates, floats, strings, bit strings, compact arrays: rare in pushes.
    return _TREE_ENCODER.encode(_to_json(item, depth))


def _plain(item: Data, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise EncodeError(f"A-XDR nesting deeper than {MAX_DEPTH}")
    value = item.value
    if isinstance(value, tuple):
        return [_plain(child, depth + 1) for child in value]
    if isinstance(value, CompactArray):
        return [_plain(child, depth + 1) for child in value.elements]
    data_type = item.type
    if data_type == DataType.BOOLEAN:
        return bool(value)
    return value
