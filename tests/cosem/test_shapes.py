"""Compiled push shapes give the full path's record text, byte for byte, and its errors.

The oracle everywhere is the full path: ``open_decrypted(...).record_json(more)``, and
for the record dicts of the public decode path (``ShapeCache(records=True)``, checked
on a twin cache fed the same pushes) its ``to_record()`` and layout mismatch.
"""

from __future__ import annotations

import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.cosem.profiles import PROFILES, Profile
from dlmsd.cosem.readings import PushObject, scaled_value, value_json_text
from dlmsd.cosem.shapes import ShapeCache, _fractional_text
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import Data, DataType, fixed_size_leaf
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.push import Envelope, open_decrypted
from tests.protocol.test_notification import notifications
from tests.vectors import by_kind, vector_params

SETTINGS = settings(max_examples=300, deadline=None)
MORE = ',"received_at":"2026-11-26T08:00:00.000+00:00","record_id":"X%s"'


def envelope_of(plaintext: bytes) -> Envelope:
    return Envelope(plaintext, bytes.fromhex("4B464D1020000001"), 0x30, 7, b"")


def full_path(plaintext: bytes, objects: tuple[PushObject, ...] | None = None) -> str:
    return open_decrypted(envelope_of(plaintext), plaintext, objects).record_json(MORE)


def outcome(call: Any) -> tuple[str, object]:
    try:
        return "ok", call()
    except DlmsError as error:
        return type(error).__name__, error.offset


# Each cache under test has a twin that makes record dicts, fed the same pushes.
_TWINS: weakref.WeakKeyDictionary[ShapeCache, ShapeCache] = weakref.WeakKeyDictionary()


def assert_same_record(cache: ShapeCache, plaintext: bytes, objects: Any) -> None:
    """The twin's `record` gives the full path's record and mismatch, or its error."""
    twin = _TWINS.setdefault(cache, ShapeCache(records=True))

    def full() -> tuple[dict[str, object], str | None]:
        push = open_decrypted(envelope_of(plaintext), plaintext, objects)
        return push.to_record(), push.layout_mismatch

    fast = outcome(lambda: twin.record(envelope_of(plaintext), plaintext, objects))
    assert fast == outcome(full)
    assert twin.refused == 0 and twin.failed == cache.failed
    assert twin.compiled == cache.compiled and twin.misses == cache.misses


def assert_same(
    cache: ShapeCache, plaintext: bytes, objects: tuple[PushObject, ...] | None = None
) -> None:
    fast = outcome(lambda: cache.record_json(envelope_of(plaintext), plaintext, objects, MORE))
    assert fast == outcome(lambda: full_path(plaintext, objects))
    assert_same_record(cache, plaintext, objects)


# --- layouts: the same types, lengths, OBIS codes and scalers; other values ----------

_INTEGER_TAGS = [tag for tag in range(256) if fixed_size_leaf(tag) is not None]


def _integer_leaf(tag: int, draw: Any) -> Data:
    size, kind, read = fixed_size_leaf(tag)  # type: ignore[misc]
    return Data(kind, read(draw(st.binary(min_size=size, max_size=size))))


@st.composite
def value_leaves(draw: Any) -> Data:
    if draw(st.booleans()):
        return _integer_leaf(draw(st.sampled_from(_INTEGER_TAGS)), draw)
    size = draw(st.sampled_from([0, 1, 6, 12, 12, 20]))
    if size == 12 and draw(st.booleans()):
        # A plausible date-time (hundredths, deviation and status random too).
        stamp = bytes([0x07, 0xEA, draw(st.integers(1, 12)), draw(st.integers(1, 28)), 0xFF])
        stamp += bytes([draw(st.integers(0, 23)), draw(st.integers(0, 59))])
        stamp += bytes([draw(st.integers(0, 59)), draw(st.integers(0, 99))])
        return Data(DataType.OCTET_STRING, stamp + draw(st.binary(min_size=3, max_size=3)))
    return Data(DataType.OCTET_STRING, draw(st.binary(min_size=size, max_size=size)))


def revalue(item: Data, draw: Any) -> Data:
    """`item` with other values in its fixed-size integer and octet-string leaves."""
    value = item.value
    if type(value) is tuple:
        return Data(item.type, tuple(revalue(child, draw) for child in value))
    if item.type is DataType.OCTET_STRING:
        assert isinstance(value, bytes)
        return Data(item.type, draw(st.binary(min_size=len(value), max_size=len(value))))
    fixed = fixed_size_leaf(int(item.type))
    if fixed is not None and fixed[1] is item.type:
        return _integer_leaf(int(item.type), draw)
    return item


class Layout:
    """A body layout readings extraction knows, to be filled with values."""

    def __init__(self, form: str, obis: list[bytes], scalers: list[Any], version: bool) -> None:
        self.form = form
        self.obis = obis
        self.scalers = scalers
        self.version = version
        self.objects: tuple[PushObject, ...] | None = None
        if form == "objects":
            self.objects = tuple(
                PushObject(
                    Obis.from_bytes(code),
                    2 + index % 3,
                    None if scaler_unit is None else scaler_unit[0],
                    None if scaler_unit is None else scaler_unit[1],
                )
                for index, (code, scaler_unit) in enumerate(zip(obis, scalers, strict=True))
            )

    def plaintext(self, invoke: int, stamp: CosemDateTime | None, values: list[Data]) -> bytes:
        fields: list[Data] = []
        for code, value, scaler_unit in zip(self.obis, values, self.scalers, strict=True):
            entry = [Data(DataType.OCTET_STRING, code), value]
            if scaler_unit is not None:
                entry.append(
                    Data.structure(
                        Data(DataType.INTEGER, scaler_unit[0]), Data(DataType.ENUM, scaler_unit[1])
                    )
                )
            if self.form == "array":
                fields.append(Data.structure(*entry))
            elif self.form == "flat":
                fields.extend(entry)
            else:
                fields.append(value)
        if self.form == "flat" and self.version:
            fields.insert(0, Data(DataType.VISIBLE_STRING, "KFM_001"))
        body = Data.array(*fields) if self.form == "array" else Data.structure(*fields)
        return DataNotification(invoke, stamp, body, stamp is not None and self.version).to_bytes()


@st.composite
def layouts(draw: Any) -> Layout:
    """Arrays of OBIS entries, flat structures (maybe after a list version), or bare
    values with a push object list."""
    count = draw(st.integers(1, 6))
    return Layout(
        draw(st.sampled_from(["array", "flat", "objects"])),
        # OBIS codes as meters send them: value group A is 0..15 (six printable bytes
        # would be a value such as a serial number, not an OBIS code).
        [
            bytes([draw(st.integers(0, 15))]) + draw(st.binary(min_size=5, max_size=5))
            for _ in range(count)
        ],
        [
            draw(st.none() | st.tuples(st.integers(-12, 12), st.integers(0, 255)))
            for _ in range(count)
        ],
        draw(st.booleans()),
    )


STAMPS = st.none() | st.just(CosemDateTime.from_bytes(bytes.fromhex("07ea0b1a04080914000000ff")))


@SETTINGS
@given(layouts(), STAMPS, st.data())
def test_a_repeated_layout_takes_the_shape_and_gives_the_same_text(
    layout: Layout, stamp: CosemDateTime | None, data: st.DataObject
) -> None:
    first = [data.draw(value_leaves()) for _ in layout.obis]
    cache = ShapeCache()
    for invoke in (1, 2):  # a layout is compiled when it comes again
        assert_same(cache, layout.plaintext(invoke, stamp, first), layout.objects)
    assert cache.compiled == 1 and cache.refused == 0 and cache.failed == 0
    for _ in range(3):
        values = [revalue(value, data.draw) for value in first]
        invoke = data.draw(st.integers(0, 2**32 - 1))
        assert_same(cache, layout.plaintext(invoke, stamp, values), layout.objects)
    # Every push after the first two matched the shape.
    assert cache.misses == 2


@SETTINGS
@given(notifications, st.data())
def test_any_notification_and_its_revalued_twin(
    notification: DataNotification, data: st.DataObject
) -> None:
    cache = ShapeCache()
    assert_same(cache, notification.to_bytes())
    assert_same(cache, notification.to_bytes())
    assert cache.refused == 0 and cache.failed == 0
    twin = DataNotification(
        notification.long_invoke_id_and_priority,
        notification.date_time,
        revalue(notification.body, data.draw),
        notification.date_time_tagged,
    )
    assert_same(cache, twin.to_bytes())


@SETTINGS
@given(layouts(), STAMPS, st.data())
def test_damaged_pushes_of_a_known_layout_fail_as_the_full_path_does(
    layout: Layout, stamp: CosemDateTime | None, data: st.DataObject
) -> None:
    cache = ShapeCache()
    raw = layout.plaintext(1, stamp, [data.draw(value_leaves()) for _ in layout.obis])
    assert_same(cache, raw, layout.objects)
    assert_same(cache, raw, layout.objects)
    position = data.draw(st.integers(0, len(raw) - 1))
    damaged = bytearray(raw)
    damaged[position] = data.draw(st.integers(0, 255))
    assert_same(cache, bytes(damaged), layout.objects)
    assert_same(cache, raw[: data.draw(st.integers(0, len(raw) - 1))], layout.objects)


def test_an_impossible_date_time_in_a_known_layout_reads_as_before() -> None:
    stamp = CosemDateTime.from_bytes(bytes.fromhex("07ea0b1a04080914000000ff"))
    body = Data.array(
        Data.structure(
            Data(DataType.OCTET_STRING, bytes.fromhex("0100010800ff")),
            Data(DataType.DOUBLE_LONG_UNSIGNED, 5),
        )
    )
    cache = ShapeCache()
    good = DataNotification(1, stamp, body).to_bytes()
    assert_same(cache, good)
    assert_same(cache, good)
    bad = bytearray(good)
    bad[8] = 13  # month 13: no datetime, "datetime":null
    assert '"datetime":null' in full_path(bytes(bad))
    assert_same(cache, bytes(bad))
    assert cache.misses == 2


def test_a_layout_that_changes_every_push_is_compiled_now_and_then() -> None:
    # The list version is not a reading, so it stays literal: each push misses. A
    # layout is compiled at its 2nd, 4th, 8th... miss, and at most once per 64 misses.
    cache = ShapeCache()
    for version in range(200):
        body = Data.structure(
            Data(DataType.VISIBLE_STRING, f"v{version:03d}"),
            Data(DataType.OCTET_STRING, bytes.fromhex("0100010800ff")),
            Data(DataType.DOUBLE_LONG_UNSIGNED, version),
        )
        assert_same(cache, DataNotification(1, None, body).to_bytes())
    assert cache.misses == 200
    assert cache.compiled == 2  # misses 2 and 128


def test_ever_new_layouts_compile_at_most_once_per_64_pushes() -> None:
    # Each length is a new layout (as a sender varying its pushes would make them).
    cache = ShapeCache()
    for size in range(1, 400):
        body = Data.array(
            Data.structure(
                Data(DataType.OCTET_STRING, bytes.fromhex("0000600100ff")),
                Data(DataType.OCTET_STRING, bytes(size)),
            )
        )
        raw = DataNotification(1, None, body).to_bytes()
        assert_same(cache, raw)
        assert_same(cache, raw)
    assert cache.misses == 798
    assert cache.compiled <= 798 // 64 + 1


def test_a_long_array_gets_holes_too() -> None:
    # 130 entries: the array's count takes the 0x81 long form.
    def push(values: range) -> bytes:
        entries = [
            Data.structure(
                Data(DataType.OCTET_STRING, bytes([1, 0, 1, 8, index % 256, 255])),
                Data(DataType.DOUBLE_LONG_UNSIGNED, value),
            )
            for index, value in enumerate(values)
        ]
        return DataNotification(1, None, Data.array(*entries)).to_bytes()

    cache = ShapeCache()
    assert_same(cache, push(range(130)))
    assert_same(cache, push(range(130)))
    assert cache.compiled == 1
    assert_same(cache, push(range(1000, 1130)))
    assert cache.misses == 2


def test_a_compile_that_fails_costs_no_push(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection: compiling raises; the push still gets the full path's record.
    import dlmsd.cosem.shapes as shapes

    def broken(*arguments: object) -> None:
        raise RuntimeError("bug in compile_shape")

    monkeypatch.setattr(shapes, "compile_shape", broken)
    body = Data.array(
        Data.structure(
            Data(DataType.OCTET_STRING, bytes.fromhex("0100010800ff")),
            Data(DataType.DOUBLE_LONG_UNSIGNED, 5),
        )
    )
    cache = ShapeCache()
    raw = DataNotification(1, None, body).to_bytes()
    assert_same(cache, raw)
    assert_same(cache, raw)
    assert cache.failed == 1 and cache.compiled == 0


@pytest.mark.parametrize(
    "vector", vector_params("udp_wrapper+general_glo_ciphering_datanotification")
)
def test_published_push_plaintexts(vector: dict[str, Any]) -> None:
    # The plaintexts of the four encrypted UDP pushes (derived in published.json).
    plaintext = bytes.fromhex(vector["expected"]["derived"]["plaintext_hex"])
    cache = ShapeCache()
    for _ in range(3):
        assert_same(cache, plaintext)
    # Its body is one octet-string, no readings: nothing to leave open, no shape.
    assert cache.compiled == 0


def test_published_han_push_with_27_registers() -> None:
    # hdlc_ui_frame_data_notification: the APDU after the LLC bytes E6 E7 00, before the FCS.
    (vector,) = by_kind("hdlc_ui_frame_data_notification")
    frame = vector["hex"]
    plaintext = bytes.fromhex(frame[frame.index("e6e700") + 6 : -6])
    cache = ShapeCache()
    assert_same(cache, plaintext)
    notification = DataNotification.from_bytes(plaintext)
    # The next push: every register moved.
    entries = notification.body.value
    assert isinstance(entries, tuple)
    moved = []
    for entry in entries:
        fields = entry.value
        assert isinstance(fields, tuple)
        value = fields[1]
        if isinstance(value.value, int):
            fields = (fields[0], Data(value.type, value.value // 2 + 1), *fields[2:])
        moved.append(Data.structure(*fields))
    later = DataNotification(2, None, Data.array(*moved)).to_bytes()
    assert_same(cache, later)
    assert cache.compiled == 1
    assert_same(cache, DataNotification(3, None, Data.array(*moved)).to_bytes())
    assert cache.misses == 2


@given(
    st.sampled_from([tag for tag in _INTEGER_TAGS]),
    st.binary(min_size=8, max_size=8),
    st.integers(-15, -1),
)
def test_negative_scalers_without_decimal_give_the_decimal_text(
    tag: int, raw: bytes, scaler: int
) -> None:
    size, kind, read = fixed_size_leaf(tag)  # type: ignore[misc]
    leaf = raw[:size]
    convert = _fractional_text(kind, read, scaler)
    assert convert(leaf) == value_json_text(scaled_value(kind, read(leaf), scaler))


@given(st.integers(-(2**63), 2**64), st.integers(-15, -1))
def test_negative_scalers_on_any_integer(number: int, scaler: int) -> None:
    convert = _fractional_text(DataType.LONG64, lambda raw: number, scaler)
    assert convert(b"") == value_json_text(scaled_value(DataType.LONG64, number, scaler))


# --- built-in profiles and implied scales (dlmsd.cosem.profiles) -------------------

_PROFILE_VALUE_TYPES = {
    DataType.DOUBLE_LONG_UNSIGNED: lambda draw: Data(
        DataType.DOUBLE_LONG_UNSIGNED, draw(st.integers(0, 2**32 - 1))
    ),
    DataType.LONG_UNSIGNED: lambda draw: Data(
        DataType.LONG_UNSIGNED, draw(st.integers(0, 2**16 - 1))
    ),
    DataType.OCTET_STRING: lambda draw: Data(
        DataType.OCTET_STRING, draw(st.sampled_from([b"", b"\x00", b"KFM_001", b"RATE2\x00"]))
    ),
    DataType.VISIBLE_STRING: lambda draw: Data(
        DataType.VISIBLE_STRING, draw(st.sampled_from(["", "MA304H3E", "x\x00"]))
    ),
}


def _profile_body(profile: Profile, draw: Any) -> Data:
    values = []
    for element in profile.elements:
        kind = draw(st.sampled_from(sorted(element.types)))
        if element.form is not None:
            # Octets of the element's form: 4-byte times, 5-byte dates, 6-byte names.
            size = {"time": 4, "date": 5, "obis": 6}[element.form]
            values.append(Data(kind, draw(st.binary(min_size=size, max_size=size))))
        else:
            values.append(_PROFILE_VALUE_TYPES[kind](draw))
    return Data.structure(*values)


@SETTINGS
# Element layouts (a profile of only `list_scales` has no bare body: see test_profiles).
@given(st.sampled_from([p for p in PROFILES if p.elements]), st.booleans(), STAMPS, st.data())
def test_profile_layouts_take_the_shape_and_give_the_same_text(
    profile: Profile, configured: bool, stamp: CosemDateTime | None, data: st.DataObject
) -> None:
    layout = profile if configured or not profile.detect else None
    first = _profile_body(profile, data.draw)
    cache = ShapeCache()
    for invoke in (1, 2):
        assert_same_layout(cache, DataNotification(invoke, stamp, first).to_bytes(), layout)
    assert cache.compiled == 1 and cache.refused == 0 and cache.failed == 0
    for _ in range(3):
        raw = DataNotification(9, stamp, revalue(first, data.draw)).to_bytes()
        assert_same_layout(cache, raw, layout)


def full_path_layout(plaintext: bytes, layout: Any) -> str:
    return open_decrypted(envelope_of(plaintext), plaintext, layout).record_json(MORE)


def assert_same_layout(cache: ShapeCache, plaintext: bytes, layout: Any) -> None:
    fast = outcome(lambda: cache.record_json(envelope_of(plaintext), plaintext, layout, MORE))
    assert fast == outcome(lambda: full_path_layout(plaintext, layout))
    if fast[0] == "ok":
        full = open_decrypted(envelope_of(plaintext), plaintext, layout)
        assert cache.layout_mismatch == full.layout_mismatch
    assert_same_record(cache, plaintext, layout)


def _kamstrup_body(list_id: str, meter_type: str, current: int, energy: int) -> Data:
    return Data.structure(
        Data.visible_string(list_id),
        Data.octet_string(bytes.fromhex("0101600101ff")),
        Data.visible_string(meter_type),
        Data.octet_string(bytes.fromhex("01011f0700ff")),
        Data.double_long_unsigned(current),
        Data.octet_string(bytes.fromhex("0101010800ff")),
        Data.double_long_unsigned(energy),
    )


@SETTINGS
@given(
    st.sampled_from(["Kamstrup_V0001", "Kamstrup_V0002", "KFM_001", "Other_V0001"]),
    st.sampled_from(["6841138BN245101090", "6851138BN245101090"]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
def test_implied_scales_follow_the_list_id_in_the_fast_path_too(
    list_id: str, meter_type: str, current: int, energy: int
) -> None:
    # The list id and meter type decide the scales: a shape compiled for one list must
    # not read another. Synthetic bodies in the layout of Kamstrup's HAN lists.
    cache = ShapeCache()
    for known in ("Kamstrup_V0001", "Kamstrup_V0002"):
        for invoke in (1, 2):
            raw = DataNotification(
                invoke, None, _kamstrup_body(known, "6841138BN245101090", 1, 1)
            ).to_bytes()
            assert_same(cache, raw)
    raw = DataNotification(3, None, _kamstrup_body(list_id, meter_type, current, energy))
    assert_same(cache, raw.to_bytes())


@SETTINGS
@given(st.sampled_from([p for p in PROFILES if p.detect]), st.data())
def test_a_configured_list_that_does_not_fit_is_a_mismatch_on_both_paths(
    profile: Profile, data: st.DataObject
) -> None:
    body = _profile_body(profile, data.draw)
    wrong = (PushObject.parse("1-0:1.8.0"),) * (len(profile) + 1)
    cache = ShapeCache()
    for invoke in (1, 2, 3):
        raw = DataNotification(invoke, None, body).to_bytes()
        assert_same(cache, raw, wrong)
        assert cache.layout_mismatch is not None
    assert cache.compiled == 0
