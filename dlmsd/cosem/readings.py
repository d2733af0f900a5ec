"""Readings: what a push body says, as (OBIS, value, unit) triples.

Meters lay out DataNotification bodies in a few ways; the ones handled here:

(a) lists of ``structure{octet-string OBIS, value[, structure{scaler, unit}]}``
    (IDIS, Aidon, Iskra, Kaifa/Kamstrup HAN ports), either as an array of such
    structures or flattened into one structure (``OBIS, value, OBIS, value``),
    possibly after a leading list-version string;
(b) a structure whose element 1 is the push object list itself (capture
    objects ``{class, OBIS, attribute, data index[, ...]}``), then the values
    (L+G in Switzerland/Cyprus, Iskra, Energomera); when the list starts with the
    push setup object, element 1 is that object's value and the others follow;
(c) a bare structure of values, read with the meter's layout: a push object list
    or a built-in profile (dlmsd.cosem.profiles) from the key store, else the one
    profile the body's shape (element count and types) names, if exactly one does;
(d) anything else: no readings, and no error; the typed tree is still kept.

A body of OBIS structures (a) or with its own list (b) always wins over a
configured layout. A flat OBIS list yields to a configured layout that names
every element (a bare 6-byte value can look like an OBIS code). A configured
layout that fits neither gives no readings and a `LayoutMismatch` (the daemon
logs and counts it), never values under the wrong OBIS codes. docs/profiles.md
has the whole rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring

import attrs

from dlmsd.cosem import profiles
from dlmsd.cosem.profiles import FORM_DATE, FORM_OBIS, FORM_TIME, Profile
from dlmsd.protocol.axdr import Data, DataType
from dlmsd.protocol.cosem_datetime import CosemDate, CosemDateTime, CosemTime
from dlmsd.protocol.errors import DecodeError, DlmsError
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


# Where a reading comes from: (OBIS, the value's item, scaler, unit code, attribute,
# form). `form` is None (the value reads by its type) or a profile's FORM_* (octets
# read as a COSEM time, date or OBIS code).
# The plan depends only on the body's types, lengths, OBIS codes and scaler/unit
# values, and on the items a `Plan` lists as `pinned` (a list version string, a
# meter type: their bytes decide implied scales), never on the other values:
# dlmsd.cosem.shapes relies on that.
ReadingPlan = tuple[Obis, Data, int | None, int | None, int, str | None]

#: A meter's configured layout: a push object list or a built-in profile.
Layout = Sequence[PushObject] | Profile


class Plan(list[ReadingPlan]):
    """The readings of a body (see `ReadingPlan`), with the items whose bytes the
    plan depends on besides types, lengths, OBIS codes and scaler-units."""

    __slots__ = ("pinned",)

    def __init__(self, entries: Sequence[ReadingPlan] = (), pinned: Sequence[Data] = ()) -> None:
        super().__init__(entries)
        self.pinned: tuple[Data, ...] = tuple(pinned)


class LayoutMismatch(DecodeError):
    """A configured push object list or profile does not fit a bare push body."""


def extract_readings(body: Data, layout: Layout | None = None) -> tuple[Reading, ...]:
    """The readings of a notification body; an empty tuple for unknown layouts."""
    return extract_readings_checked(body, layout)[0]


def extract_readings_checked(
    body: Data, layout: Layout | None = None, descriptors: bool = False
) -> tuple[tuple[Reading, ...], str | None]:
    """`extract_readings`, and why a configured layout did not fit the body (else None).

    `descriptors`: the body was sent as untagged descriptors and values (Sagemcom
    XT211, `DataNotification.body_descriptors`): each element is
    ``structure{class id, OBIS, attribute, value}``.
    """
    if descriptors:
        return readings_of(_from_descriptors(body)), None
    try:
        return readings_of(plan_readings(body, layout)), None
    except LayoutMismatch as error:
        return (), error.reason
    except DlmsError:
        # A layout that looked like ours but was not: keep the tree, no readings.
        return (), None


def readings_of(plan: Sequence[ReadingPlan]) -> tuple[Reading, ...]:
    """The readings a plan describes (see `plan_readings`)."""
    return tuple([_reading(*entry) for entry in plan])


def plan_readings(body: Data, layout: Layout | None = None) -> Plan:
    """Which item of the body each reading takes its value from (see `ReadingPlan`).

    In this order: a body of ``{OBIS, value[, scaler-unit]}`` structures or with its
    push object list as element 1 (always wins); the configured layout when it fits
    the body; a flat ``OBIS, value[, scaler-unit]`` list; a configured layout that
    does not fit (raises `LayoutMismatch`); the one profile the body's shape names.
    May raise `DlmsError` for a layout that looked like ours but was not.
    """
    if layout is not None and not isinstance(layout, Profile) and not layout:
        layout = None  # an empty push object list configures nothing
    items = _children(body)
    if items is None:
        return Plan()
    listed = _from_capture_list(items, layout)
    if listed is not None:
        return listed
    structured = _from_structures(items)
    if structured:
        return structured
    # A flat list is self-describing too, but weaker evidence than a configuration that
    # names every element (a bare 6-byte value can look like an OBIS code).
    if layout is not None and _fits(layout, items):
        return _from_layout(items, layout)
    flat = _from_flat(items)
    if flat:
        return flat
    if layout is not None:
        raise LayoutMismatch(_misfit(layout, items))
    if body.type is _STRUCTURE:
        detected = profiles.detect(items)
        if detected is not None:
            return _from_profile(items, detected)
    # Last: a flat list mixed with structures, or ending in bare values (Austrian
    # M-Bus customer interfaces); weaker evidence than any layout above.
    return _from_flat(items, mixed=True)


def _fits(layout: Layout, items: tuple[Data, ...]) -> bool:
    if isinstance(layout, Profile):
        return profiles.fits(layout, items)
    return len(layout) == len(items)


def _from_layout(items: tuple[Data, ...], layout: Layout) -> Plan:
    if isinstance(layout, Profile):
        return _from_profile(items, layout)
    return _from_push_object_list(items, layout)


def _misfit(layout: Layout, items: tuple[Data, ...]) -> str:
    if isinstance(layout, Profile) and layout.list_scales is not None:
        return (
            f"profile {layout.name} is for pushes that carry their push object list;"
            f" the body is {len(items)} bare elements ({_type_names(items)})"
        )
    if isinstance(layout, Profile):
        return (
            f"profile {layout.name} has {len(layout)} elements of other types than"
            f" the body's {len(items)} ({_type_names(items)})"
        )
    return f"push object list has {len(layout)} entries, the body {len(items)} elements"


def _type_names(items: Sequence[Data]) -> str:
    names = [item.type.name.lower().replace("_", "-") for item in items[:8]]
    return ", ".join(names) + (", ..." if len(items) > 8 else "")


def _from_push_object_list(items: tuple[Data, ...], objects: Sequence[PushObject]) -> Plan:
    return Plan(
        [
            (obj.obis, item, obj.scaler, obj.unit, obj.attribute, None)
            for obj, item in zip(objects, items, strict=True)
        ]
    )


def _from_profile(items: tuple[Data, ...], profile: Profile) -> Plan:
    return Plan(
        [
            (element.obis, item, element.scaler, element.unit, element.attribute, element.form)
            for element, item in zip(profile.elements, items, strict=True)
        ]
    )


def _from_structures(items: tuple[Data, ...]) -> Plan:
    """``structure{OBIS, value[, scaler_unit]}`` entries (the common layout), all of them;
    an empty plan when any item is not one."""
    readings = Plan()
    for item in items:
        entry = _structure_entry(item)
        if entry is None:
            return Plan()
        readings.append(entry)
    return readings


def _structure_entry(item: Data) -> ReadingPlan | None:
    """The reading of one ``structure{OBIS, value[, scaler_unit]}``, else None."""
    fields = item.value
    if (
        item.type is not _STRUCTURE
        or type(fields) is not tuple
        or not 2 <= len(fields) <= 3
        or fields[0].type is not _OCTET_STRING
    ):
        return None
    raw = fields[0].value
    if not isinstance(raw, bytes) or not _looks_like_obis(raw):
        return None
    obis = _obis_from(raw)
    scaler_unit = _scaler_unit(fields[2]) if len(fields) == 3 else None
    if scaler_unit is None:
        return (obis, fields[1], None, None, 2, None)
    return (obis, fields[1], *scaler_unit, 2, None)


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


def _looks_like_obis(raw: bytes) -> bool:
    """Six octets that can be an OBIS code. Six printable characters (a serial number
    such as ``b"160456"``) are not: a value group A of 0x20 or more is no medium."""
    if len(raw) != 6:
        return False
    first = raw[0]
    # Value group A is 0..15 in every real code: decided by the first byte, mostly.
    return first < 0x20 or first >= 0x7F or not all(0x20 <= byte < 0x7F for byte in raw)


def _obis_of(item: Data) -> Obis | None:
    value = item.value
    if item.type is DataType.OCTET_STRING and isinstance(value, bytes) and _looks_like_obis(value):
        return _obis_from(value)
    return None


def _is_obis(item: Data) -> bool:
    value = item.value
    return (
        item.type is DataType.OCTET_STRING and isinstance(value, bytes) and _looks_like_obis(value)
    )


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


def _from_flat(items: tuple[Data, ...], *, mixed: bool = False) -> Plan:
    """``OBIS, value[, scaler_unit], OBIS, value ...`` after optional non-OBIS headers.

    A ``null-data, null-data`` pair stands for an object the meter does not have
    (Kamstrup single-phase meters in three-phase lists) and is skipped. With
    `mixed`, a ``structure{OBIS, value[, scaler_unit]}`` among the pairs is read as
    one entry (TINETZ Kaifa: a flat clock pair, then structures), and elements
    without an OBIS code after the last entry (the Netz NÖ meter number) are left
    unread: no guessed OBIS.
    """
    start = 0
    while start < len(items) and not _is_obis(items[start]):
        start += 1
    if start == len(items) or start > 2:
        return Plan()
    readings = Plan()
    index = start
    while index < len(items):
        if items[index].type is _NULL_DATA:
            if index + 1 >= len(items) or items[index + 1].type is not _NULL_DATA:
                return Plan()
            index += 2
            continue
        entry = _structure_entry(items[index]) if mixed and readings else None
        if entry is not None:
            readings.append(entry)
            index += 1
            continue
        obis = _obis_of(items[index])
        if obis is None and mixed and readings and not any(map(_is_obis, items[index:])):
            break  # a tail of bare values: no OBIS to give them
        if obis is None or index + 1 >= len(items):
            return Plan()
        value = items[index + 1]
        index += 2
        scaler_unit = _scaler_unit(items[index]) if index < len(items) else None
        if scaler_unit is not None:
            index += 1
            readings.append((obis, value, *scaler_unit, 2, None))
        else:
            readings.append((obis, value, None, None, 2, None))
    if not readings:
        return readings
    return _with_implied_scales(items[:start], readings)


def _with_implied_scales(headers: tuple[Data, ...], plan: Plan) -> Plan:
    """`plan` with the scales its make documents for values that carry no scaler-unit,
    when a list version identifier (a header, or an ``x-x:0.2.129`` value) names it."""
    list_id: Data | None = None
    meter_type: Data | None = None
    for header in headers:
        if header.type in _TEXT_TYPES:
            list_id = header
    for obis, item, _scaler, _unit, _attribute, _form in plan:
        if obis.c == 0 and obis.d == 2 and obis.e == 129 and item.type in _TEXT_TYPES:
            list_id = item
        elif obis.c == 96 and obis.d == 1 and obis.e in (1, 7) and item.type in _TEXT_TYPES:
            meter_type = item
    if list_id is None:
        return plan
    scales = profiles.implied_scales_for(
        _text_bytes(list_id), None if meter_type is None else _text_bytes(meter_type)
    )
    pinned = (list_id,) if meter_type is None else (list_id, meter_type)
    return _apply_scales(plan, scales, pinned)


def _apply_scales(
    plan: Plan, scales: Mapping[Obis, tuple[int, int]], pinned: tuple[Data, ...]
) -> Plan:
    """`plan` with `scales` on its integer values that carry no scaler-unit; `pinned`
    are the items that named the scales (their bytes now decide the plan)."""
    if not scales:
        return plan
    entries: list[ReadingPlan] = []
    for entry in plan:
        obis, item, scaler, unit, attribute, form = entry
        implied = scales.get(obis) if scaler is None and unit is None else None
        if implied is not None and item.type in _INTEGER_TYPES:
            entries.append((obis, item, implied[0], implied[1], attribute, form))
        else:
            entries.append(entry)
    return Plan(entries, pinned)


def _text_bytes(item: Data) -> bytes:
    value = item.value
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    return b""


def _from_descriptors(body: Data) -> Plan:
    """A descriptor body (see `extract_readings_checked`): each value under its OBIS
    code and attribute, self-described, so no layout applies. In the wrapped form,
    ``structure{enum, array{descriptors}}``, the enum is no reading."""
    entries = _children(body) or ()
    if len(entries) == 2 and entries[0].type is DataType.ENUM:
        entries = _children(entries[1]) or ()
    plan = Plan()
    for entry in entries:
        fields = _children(entry)
        if fields is None or len(fields) != 4:
            return Plan()
        name, attribute = fields[1].value, fields[2].value
        if not isinstance(name, bytes) or len(name) != 6 or not isinstance(attribute, int):
            return Plan()
        plan.append((_obis_from(name), fields[3], None, None, attribute, None))
    return plan


def _from_capture_list(items: tuple[Data, ...], layout: Layout | None = None) -> Plan | None:
    """Element 1 the push object list (capture objects), the values after it; None
    when the body is not one. A selected profile with `list_scales` gives the scales
    (else the logical device name implies them).

    When the first capture object is the push setup itself (class 40), element 1 is
    its value and capture object i describes element i; otherwise capture object i
    describes element i + 1.
    """
    if len(items) < 2 or items[0].type is not DataType.ARRAY:
        return None
    entries = _children(items[0])
    if not entries:
        return None
    objects: list[tuple[int, Obis, int]] = []
    for entry in entries:
        fields = _children(entry)
        if entry.type is not _STRUCTURE or fields is None or len(fields) not in (4, 6):
            return None
        class_id, name, attribute = fields[0], fields[1], fields[2]
        if (
            class_id.type is not DataType.LONG_UNSIGNED
            or name.type is not _OCTET_STRING
            or not isinstance(name.value, bytes)
            or len(name.value) != 6
            or attribute.type is not DataType.INTEGER
            or not isinstance(class_id.value, int)
            or not isinstance(attribute.value, int)
        ):
            return None
        objects.append((class_id.value, _obis_from(name.value), attribute.value))
    if len(objects) == len(items) and objects[0][0] == _PUSH_SETUP_CLASS:
        pairs = zip(objects[1:], items[1:], strict=True)
    elif len(objects) == len(items) - 1:
        pairs = zip(objects, items[1:], strict=True)
    else:
        return None
    # Attribute 1 of any object is its logical name: an OBIS code, read as one.
    plan = Plan(
        [
            (obis, value, None, None, attr, FORM_OBIS if attr == 1 else None)
            for (_c, obis, attr), value in pairs
        ]
    )
    if isinstance(layout, Profile) and layout.list_scales is not None:
        return _apply_scales(plan, layout.list_scales, ())
    return _with_device_scales(plan)


_DEVICE_NAME = Obis.parse("0-0:42.0.0")


def _with_device_scales(plan: Plan) -> Plan:
    """`plan` with the scales its make documents for values without scaler-unit, when
    the logical device name (0-0:42.0.0) names the make."""
    device = next(
        (item for obis, item, *_rest in plan if obis == _DEVICE_NAME and item.type in _TEXT_TYPES),
        None,
    )
    if device is None:
        return plan
    return _apply_scales(plan, profiles.device_scales_for(_text_bytes(device)), (device,))


_PUSH_SETUP_CLASS = 40
_NULL_DATA = DataType.NULL_DATA
_TEXT_TYPES = frozenset({DataType.OCTET_STRING, DataType.VISIBLE_STRING, DataType.UTF8_STRING})


def _reading(
    obis: Obis,
    item: Data,
    scaler: int | None,
    unit: int | None,
    attribute: int = 2,
    form: str | None = None,
) -> Reading:
    raw = item.value
    if form is not None and type(raw) is bytes:
        value = form_text(form, raw)
    else:
        value = scaled_value(item.type, raw, scaler)
    return _new_reading(
        obis,
        value,
        unit_symbol(unit) if unit is not None else None,
        scaler,
        unit,
        attribute,
    )


def form_text(form: str, raw: bytes) -> ReadingValue:
    """The reading value of octets a profile reads in `form` (a COSEM time, date or
    OBIS code); as any octets when they do not fit the form."""
    if form == FORM_TIME and len(raw) == 4:
        clock = CosemTime.from_bytes(raw).to_time()
        return clock.isoformat() if clock is not None else None
    if form == FORM_DATE and len(raw) == 5:
        day = CosemDate.from_bytes(raw).to_date()
        return day.isoformat() if day is not None else None
    if form == FORM_OBIS and len(raw) == 6:
        return obis_text(_obis_from(raw))
    return _octets(raw)


def scaled_value(kind: DataType, value: object, scaler: int | None) -> ReadingValue:
    """The reading value of an item of type `kind` holding `value`, with its scaler applied."""
    plain = plain_value_of(kind, value)
    if scaler is not None and type(plain) is int:
        return apply_scaler(plain, scaler)
    return plain


def plain_value_of(kind: DataType, value: object) -> ReadingValue:
    """A scalar reading value of an item of type `kind` holding `value`: numbers stay
    numbers, times become ISO text, strings lose the NULs that pad them."""
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
        return value.rstrip("\x00")
    if isinstance(value, float):
        return float(value)
    if isinstance(value, CosemDateTime | CosemDate | CosemTime):
        return _time_text(value)
    if kind in (DataType.NULL_DATA, DataType.DONT_CARE):
        return None
    # Structures, arrays, bit strings: no scalar; the typed tree keeps them.
    return None


def _octets(raw: bytes) -> str | None:
    if len(raw) == 12:
        try:
            stamp = CosemDateTime.from_bytes(raw)
        except DlmsError:
            stamp = None
        if stamp is not None:
            text = _time_text(stamp)
            if text is not None:
                return text
    # Empty, or one NUL: an absent value (M-Bus channels without a device send these).
    if raw == b"" or raw == b"\x00":
        return None
    # Text padded with NULs to a fixed width ("RATE2\0\0\0") reads as its text.
    text_bytes = raw.rstrip(b"\x00")
    if text_bytes and all(0x20 <= byte < 0x7F for byte in text_bytes):
        return text_bytes.decode("ascii")
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
