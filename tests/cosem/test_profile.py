"""Profile Generic buffer parsing (published vectors cited by source)."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.cosem.profile import (
    ProfileTable,
    ScalerUnitCache,
    column_key,
    fill_missing_clock,
    parse_buffer,
    parse_capture_objects,
)
from dlmsd.protocol.apdus.get import read_get_data_result
from dlmsd.protocol.apdus.selective import CaptureObjectDefinition
from dlmsd.protocol.axdr import Data, DataType, TypeDescription, encode_data
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DecodeError, DlmsError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.units import ScalerUnit
from tests.vectors import only_vector

CLOCK = CaptureObjectDefinition(8, Obis(0, 0, 1, 0, 0, 255), 2)
STATUS = CaptureObjectDefinition(1, Obis(0, 0, 96, 10, 1, 255), 2)
IMPORT = CaptureObjectDefinition(3, Obis(1, 0, 1, 8, 0, 255), 2)
EXPORT = CaptureObjectDefinition(3, Obis(1, 0, 2, 8, 0, 255), 2)


def test_published_buffer_with_null_clocks() -> None:
    """profile_generic_buffer@tests/test_parsers.py:L6: 4 rows x 4 columns, clock null after
    row 0, capture period 60 min."""
    v = only_vector("profile_generic_buffer")
    table = parse_buffer(bytes.fromhex(v["hex"]), (CLOCK, STATUS, IMPORT, EXPORT))
    assert len(table.rows) == v["expected"]["asserted"]["rows"]
    assert all(len(row) == v["expected"]["asserted"]["columns"] for row in table.rows)
    for row, expected in zip(table.rows, v["expected"]["derived"], strict=True):
        first = row[0].raw.hex() if row[0] is not None else None
        assert [first, *row[1:]] == expected
    # the fill is a separate, explicit step
    filled = fill_missing_clock(table, 3600)
    times = [row[0].to_datetime() for row in filled.rows]
    assert all(b - a == dt.timedelta(seconds=3600) for a, b in itertools.pairwise(times))
    assert times[0] == dt.datetime(2019, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert filled.rows[1][0].raw[9:] == table.rows[0][0].raw[9:]  # deviation and status kept
    assert table.rows[1][0] is None  # the original is untouched


def test_published_get_data_result_profile() -> None:
    """axdr_get_data_result_profile@tests/test_a_xdr.py:L31: 24 entries x 3 columns."""
    v = only_vector("axdr_get_data_result_profile")
    raw = bytes.fromhex(v["hex"])
    result, end = read_get_data_result(raw, 0)
    assert end == len(raw)
    assert isinstance(result, Data)
    columns = (CLOCK, STATUS, IMPORT)
    table = parse_buffer(result, columns)
    assert len(table.rows) == v["expected"]["asserted"]["entries"]
    derived = v["expected"]["derived"]
    for row, expected in ((table.rows[0], derived["first"]), (table.rows[-1], derived["last"])):
        assert [row[0].raw.hex(), row[1], row[2]] == expected
    assert table.column(Obis(1, 0, 1, 8, 0, 255))[1] == derived["second"][2]
    assert table.as_dicts()[0][column_key(IMPORT)] == 100000


def test_capture_objects_and_keys() -> None:
    """capture_object_definition@tests/test_xdlms/test_selective_access.py:L20."""
    one = bytes.fromhex(only_vector("capture_object_definition")["hex"])
    value = Data.array(CLOCK.to_data(), IMPORT.to_data())
    assert encode_data(value)[2:] == one + IMPORT.to_data().to_bytes()
    columns = parse_capture_objects(value)
    assert columns == (CLOCK, IMPORT)
    table = ProfileTable(columns, ())
    assert table.keys == ((CLOCK.logical_name, 2, 0), (IMPORT.logical_name, 2, 0))
    assert table.column_index(Obis(1, 0, 1, 8, 0, 255)) == 1
    with pytest.raises(DecodeError):
        table.column_index(Obis(1, 0, 3, 8, 0, 255))
    with pytest.raises(DecodeError):
        parse_capture_objects(Data.unsigned(3))


def test_compact_array_buffer() -> None:
    description = TypeDescription.structure_of(
        TypeDescription(DataType.OCTET_STRING), TypeDescription(DataType.DOUBLE_LONG_UNSIGNED)
    )
    stamp = CosemDateTime.from_fields(2024, 1, 1, 1, 0, 0, 0, 0, -60, 0)
    rows = [
        Data.structure(Data.octet_string(stamp.raw), Data.double_long_unsigned(5)),
        Data.structure(Data.octet_string(stamp.raw), Data.double_long_unsigned(6)),
    ]
    buffer = Data.compact_array(description, *rows)
    table = parse_buffer(encode_data(buffer), (CLOCK, IMPORT))
    assert table.rows == ((stamp, 5), (stamp, 6))


def test_row_and_column_counts_are_checked() -> None:
    rows = Data.array(Data.structure(Data.null(), Data.unsigned(1)))
    assert parse_buffer(rows).rows == ((None, 1),)
    with pytest.raises(DecodeError):
        parse_buffer(rows, (CLOCK, STATUS, IMPORT))
    with pytest.raises(DecodeError):
        parse_buffer(Data.array(Data.unsigned(1)))
    with pytest.raises(DecodeError):
        parse_buffer(Data.unsigned(1))


def test_scaler_unit_cache() -> None:
    cache = ScalerUnitCache()
    columns = (CLOCK, STATUS, IMPORT, EXPORT)
    assert [d.attribute_id for d in cache.missing(columns)] == [3, 3]
    cache.put(3, IMPORT.logical_name, ScalerUnit(-3, 30))
    cache.put(3, EXPORT.logical_name, Data.structure(Data.integer(1), Data.enum(30)))
    assert cache.missing(columns) == [] and len(cache) == 2
    table = parse_buffer(bytes.fromhex(only_vector("profile_generic_buffer")["hex"]), columns)
    scaled = cache.scale(table)
    assert scaled[0][2] == Decimal("1.517") and scaled[0][3] == Decimal("16200")
    assert scaled[0][1] == 6 and scaled[1][0] is None
    assert [u and u.symbol for u in cache.column_units(table)] == [None, None, "Wh", "Wh"]


def test_fill_leaves_wildcard_clocks_alone() -> None:
    wildcard = CosemDateTime.from_fields(hour=1)
    table = ProfileTable((CLOCK,), ((wildcard,), (None,)))
    assert fill_missing_clock(table, 900).rows == table.rows


def test_ten_thousand_rows_parse_quickly() -> None:
    """10,000 rows x 6 columns; measured here, reported as rows/s (the bench has the real run)."""
    columns = (CLOCK, *(CaptureObjectDefinition(3, Obis(1, 0, c, 8, 0, 255), 2) for c in range(5)))
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = [
        Data.structure(
            Data.octet_string(CosemDateTime.from_datetime(start + dt.timedelta(minutes=i)).raw),
            *(Data.double_long_unsigned(i * k) for k in range(5)),
        )
        for i in range(10_000)
    ]
    raw = encode_data(Data.array(*rows))
    began = time.perf_counter()
    table = parse_buffer(raw, columns)
    elapsed = time.perf_counter() - began
    assert len(table.rows) == 10_000
    assert elapsed < 2.0, f"{10_000 / elapsed:,.0f} rows/s"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_dlms_errors(raw: bytes) -> None:
    try:
        table = parse_buffer(raw, (CLOCK, STATUS))
    except DlmsError:
        return
    fill_missing_clock(table, 60)


_cells = st.one_of(
    st.none().map(lambda _: Data.null()),
    st.integers(0, 2**32 - 1).map(Data.double_long_unsigned),
    st.integers(0, 255).map(Data.unsigned),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_cells, _cells), max_size=20))
def test_round_trip_keeps_rows_and_nulls(rows: list[tuple[Data, Data]]) -> None:
    buffer = Data.array(*(Data.structure(*row) for row in rows))
    table = parse_buffer(encode_data(buffer), (STATUS, IMPORT))
    assert table.rows == tuple(tuple(cell.value for cell in row) for row in rows)
