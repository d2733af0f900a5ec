"""Readings: what a push body says, as (OBIS, value, unit) triples.

Meters lay out DataNotification bodies in a few ways; the ones handled here:

(a) lists of ``structure{octet-string OBIS, value[, structure{scaler, unit}]}``
    (IDIS, Aidon, Iskra, Kaifa/Kamstrup HAN ports), either as an array of such
    structures or flattened into one structure (``OBIS, value, OBIS, value``),
    possibly after a leading list-version string;
(b) a bare structure of values, with the push object list (which OBIS each
    element is) given by the caller from the meter's configuration;
(c) anything else: no readings, and no error; the typed tree is still kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from json.encoder import encode_basestring

import attrs

from dlmsd.protocol.axdr import Data, DataType
from dlmsd.protocol.cosem_datetime import CosemDate, CosemDateTime, CosemTime
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.units import apply_scaler, unit_symbol

ReadingValue = Decimal | int | float | str | bool | None

_INTEGER_TYPES = frozenset(
    {
        DataType.DOUBLE_LONG,
        DataType.DOUBLE_LONG_UNSIGNED,
        DataType.INTEGER,
        DataType.LONG,
        DataType.UNSIGNED,
        DataType.LONG_UNSIGNED,
        DataType.LONG64,
        DataType.LONG64_UNSIGNED,
    }
)
_SCALER_UNIT_TYPES = frozenset({DataType.INTEGER, DataType.ENUM})
# Enum attribute lookups cost ~70 ns each on 3.11; the hot loop uses these.
_STRUCTURE = DataType.STRUCTURE
_OCTET_STRING = DataType.OCTET_STRING


@attrs.frozen(slots=True)
class Reading:
    """One value of one COSEM object, scaled, with its unit when known."""

    obis: Obis
    value: ReadingValue
    unit: str | None = None
    scaler: int | None = None
    unit_code: int | None = None
    attribute: int = 2

    def to_json(self) -> dict[str, object]:
        return {
            "obis": obis_text(self.obis),
            "attribute": self.attribute,
            "value": json_number(self.value),
            "unit": self.unit,
            "scaler": self.scaler,
        }


@attrs.frozen(slots=True)
class PushObject:
    """One element of a push object list: which object a bare value belongs to."""

    obis: Obis
    attribute: int = 2
    scaler: int | None = None
    unit: int | None = None

    @classmethod
    def parse(cls, text: str) -> PushObject:
        """Parse ``1-0:1.8.0*255`` or ``1-0:1.8.0*255:2`` (attribute after the last colon)."""
        head, sep, tail = text.rpartition(":")
        if sep and tail.isdigit() and "-" in head and ":" in head:
            return cls(Obis.parse(head), int(tail))
        return cls(Obis.parse(text))


def json_number(value: ReadingValue) -> ReadingValue:
    """A Decimal as a JSON-friendly number: int if integral, float if exact, else text."""
    if not isinstance(value, Decimal):
        return value
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) == value:
        return as_float
    return str(value)


# Reading JSON as text: what surrounds the value depends only on (OBIS, attribute,
# unit, scaler), which a meter repeats push after push.
_READING_FRAMES: dict[tuple[Obis, int, str | None, int | None], tuple[str, str]] = {}
_VALUE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode_value = _VALUE_ENCODER.encode


def reading_frame(reading: Reading) -> tuple[str, str]:
    """The JSON text of a reading before and after its value (cached per OBIS, attribute,
    unit and scaler)."""
    key = (reading.obis, reading.attribute, reading.unit, reading.scaler)
    frame = _READING_FRAMES.get(key)
    if frame is None:
        if len(_READING_FRAMES) >= _CACHE_LIMIT:
            _READING_FRAMES.clear()
        # Split the encoding of a reading with a marker value where the value goes.
        text = _VALUE_ENCODER.encode(
            {
                "obis": obis_text(reading.obis),
                "attribute": reading.attribute,
                "value": None,
                "unit": reading.unit,
                "scaler": reading.scaler,
            }
        )
        head, _, tail = text.partition('"value":null')
        frame = _READING_FRAMES[key] = (head + '"value":', tail)
    return frame


def value_json_text(value: ReadingValue) -> str:
    """The JSON text of a reading's value, as `readings_json_text` writes it."""
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    return _encode_value(json_number(value))


def readings_json_text(readings: Sequence[Reading]) -> str:
    """``[r.to_json() for r in readings]`` as compact JSON text (non-ASCII kept)."""
    parts = []
    for reading in readings:
        head, tail = reading_frame(reading)
        parts.append(f"{head}{value_json_text(reading.value)}{tail}")
    return f"[{','.join(parts)}]"


# Where a reading comes from: (OBIS, the value's item, scaler, unit code, attribute).
# The plan depends only on the body's types, lengths, OBIS codes and scaler/unit
# values, never on the other values: dlmsd.cosem.shapes relies on that.
ReadingPlan = tuple[Obis, Data, int | None, int | None, int]


def extract_readings(
    body: Data, push_object_list: Sequence[PushObject] | None = None
) -> tuple[Reading, ...]:
    """The readings of a notification body; an empty tuple for unknown layouts."""
    try:
        return readings_of(plan_readings(body, push_object_list))
    except DlmsError:
        # A layout that looked like ours but was not: keep the tree, no readings.
        return ()


def readings_of(plan: Sequence[ReadingPlan]) -> tuple[Reading, ...]:
    """The readings a plan describes (see `plan_readings`)."""
    return tuple([_reading(*entry) for entry in plan])


def plan_readings(
    body: Data, push_object_list: Sequence[PushObject] | None = None
) -> list[ReadingPlan]:
    """Which item of the body each reading takes its value from (see `ReadingPlan`).

    May raise `DlmsError` for a layout that looked like ours but was not.
    """
    if push_object_list:
        bare = _from_push_object_list(body, push_object_list)
        if bare is not None:
            return bare
    return _from_obis_lists(body)


def _from_push_object_list(body: Data, objects: Sequence[PushObject]) -> list[ReadingPlan] | None:
    items = _children(body)
    if items is None or len(items) != len(objects):
        return None
    return [
        (obj.obis, item, obj.scaler, obj.unit, obj.attribute)
        for obj, item in zip(objects, items, strict=True)
    ]


def _from_obis_lists(body: Data) -> list[ReadingPlan]:
    items = _children(body)
    if items is None:
        return []
    # One pass over ``structure{OBIS, value[, scaler_unit]}`` entries (the common
    # layout); the first item that is not one sends the whole body to the flat reader.
    readings: list[ReadingPlan] = []
    for item in items:
        fields = item.value
        if (
            item.type is not _STRUCTURE
            or type(fields) is not tuple
            or not 2 <= len(fields) <= 3
            or fields[0].type is not _OCTET_STRING
        ):
            break
        raw = fields[0].value
        if not isinstance(raw, bytes) or len(raw) != 6:
            break
        obis = _obis_from(raw)
        scaler_unit = _scaler_unit(fields[2]) if len(fields) == 3 else None
        if scaler_unit is None:
            readings.append((obis, fields[1], None, None, 2))
        else:
            readings.append((obis, fields[1], *scaler_unit, 2))
    else:
        if readings:
            return readings
    return _from_flat(items)


def _children(item: Data) -> tuple[Data, ...] | None:
    """The elements of a structure or array, else None."""
    if item.type in (DataType.STRUCTURE, DataType.ARRAY) and isinstance(item.value, tuple):
        return item.value
    return None


# Pushes repeat the same few OBIS codes: keep their objects and texts. Bounded, since
# the codes come from the wire.
_OBIS_CACHE: dict[bytes, Obis] = {}
_OBIS_TEXT: dict[Obis, str] = {}
_CACHE_LIMIT = 4096


def _obis_from(raw: bytes) -> Obis:
    obis = _OBIS_CACHE.get(raw)
    if obis is None:
        if len(_OBIS_CACHE) >= _CACHE_LIMIT:
            _OBIS_CACHE.clear()
        obis = _OBIS_CACHE[raw] = Obis.from_bytes(raw)
    return obis


def obis_text(obis: Obis) -> str:
    """`str(obis)`, cached."""
    text = _OBIS_TEXT.get(obis)
    if text is None:
        if len(_OBIS_TEXT) >= _CACHE_LIMIT:
            _OBIS_TEXT.clear()
        text = _OBIS_TEXT[obis] = str(obis)
    return text


def _obis_of(item: Data) -> Obis | None:
    value = item.value
    if item.type is DataType.OCTET_STRING and isinstance(value, bytes) and len(value) == 6:
        return _obis_from(value)
    return None


def _is_obis(item: Data) -> bool:
    value = item.value
    return item.type is DataType.OCTET_STRING and isinstance(value, bytes) and len(value) == 6


def _scaler_unit(item: Data) -> tuple[int, int] | None:
    fields = _children(item) if item.type is DataType.STRUCTURE else None
    if fields is None or len(fields) != 2:
        return None
    scaler, unit = fields
    if scaler.type not in _SCALER_UNIT_TYPES or unit.type is not DataType.ENUM:
        return None
    if not isinstance(scaler.value, int) or not isinstance(unit.value, int):
        return None
    return scaler.value, unit.value


def _from_flat(items: tuple[Data, ...]) -> list[ReadingPlan]:
    """``OBIS, value[, scaler_unit], OBIS, value ...`` after optional non-OBIS headers."""
    start = 0
    while start < len(items) and not _is_obis(items[start]):
        start += 1
    if start == len(items) or start > 2:
        return []
    readings: list[ReadingPlan] = []
    index = start
    while index < len(items):
        obis = _obis_of(items[index])
        if obis is None or index + 1 >= len(items):
            return []
        value = items[index + 1]
        index += 2
        scaler_unit = _scaler_unit(items[index]) if index < len(items) else None
        if scaler_unit is not None:
            index += 1
            readings.append((obis, value, *scaler_unit, 2))
        else:
            readings.append((obis, value, None, None, 2))
    return readings


def _reading(
    obis: Obis, item: Data, scaler: int | None, unit: int | None, attribute: int = 2
) -> Reading:
    return _new_reading(
        obis,
        scaled_value(item.type, item.value, scaler),
        unit_symbol(unit) if unit is not None else None,
        scaler,
        unit,
        attribute,
    )


def scaled_value(kind: DataType, value: object, scaler: int | None) -> ReadingValue:
    """The reading value of an item of type `kind` holding `value`, with its scaler applied."""
    plain = plain_value_of(kind, value)
    if scaler is not None and type(plain) is int:
        return apply_scaler(plain, scaler)
    return plain


def plain_value_of(kind: DataType, value: object) -> ReadingValue:
    """A scalar reading value of an item of type `kind` holding `value`: numbers stay
    numbers, times become ISO text."""
    if type(value) is int and kind in _INTEGER_TYPES:
        return value
    if kind is DataType.BOOLEAN:
        return bool(value)
    if isinstance(value, int) and (
        kind in _INTEGER_TYPES or kind is DataType.ENUM or kind is DataType.BCD
    ):
        return value
    if isinstance(value, bytes):
        return _octets(value)
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, CosemDateTime | CosemDate | CosemTime):
        return _time_text(value)
    if kind in (DataType.NULL_DATA, DataType.DONT_CARE):
        return None
    # Structures, arrays, bit strings: no scalar; the typed tree keeps them.
    return None


def _octets(raw: bytes) -> str:
    if len(raw) == 12:
        try:
            stamp = CosemDateTime.from_bytes(raw)
        except DlmsError:
            stamp = None
        if stamp is not None:
            text = _time_text(stamp)
            if text is not None:
                return text
    if raw and all(0x20 <= byte < 0x7F for byte in raw):
        return raw.decode("ascii")
    return raw.hex()


def _time_text(value: CosemDateTime | CosemDate | CosemTime) -> str | None:
    if isinstance(value, CosemDateTime):
        moment = value.to_datetime()
        return moment.isoformat() if moment is not None else None
    return None


# Hot path: readings are built per value of every push. Set the slots directly rather
# than through the frozen attrs __init__ (values come from the decoder, already typed).
_new = object.__new__
_SETTERS = tuple(
    Reading.__dict__[name].__set__
    for name in ("obis", "value", "unit", "scaler", "unit_code", "attribute")
)


def _new_reading(
    obis: Obis,
    value: ReadingValue,
    unit: str | None,
    scaler: int | None,
    unit_code: int | None,
    attribute: int,
) -> Reading:
    reading: Reading = _new(Reading)
    set_obis, set_value, set_unit, set_scaler, set_unit_code, set_attribute = _SETTERS
    set_obis(reading, obis)
    set_value(reading, value)
    set_unit(reading, unit)
    set_scaler(reading, scaler)
    set_unit_code(reading, unit_code)
    set_attribute(reading, attribute)
    return reading
