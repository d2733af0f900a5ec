"""COSEM date / time / date-time values."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.cosem_datetime import (
    DEVIATION_UNSPECIFIED,
    ClockStatus,
    CosemDate,
    CosemDateTime,
    CosemTime,
)
from dlmsd.protocol.errors import DecodeError, EncodeError
from tests.vectors import vector_params

UTC1 = timezone(timedelta(hours=1))


@pytest.mark.parametrize("vector", vector_params("cosem_date_time_12_bytes"))
def test_published_date_times(vector: dict[str, Any]) -> None:
    # tests/test_time.py:L13/L17/L21 (dlms-cosem): decode + encode_equal
    raw = bytes.fromhex(vector["hex"])
    value = CosemDateTime.from_bytes(raw)
    assert value.to_bytes() == raw
    expected = vector["expected"]["asserted"]["decode"].replace(" (naive)", "")
    dt = value.to_datetime()
    assert dt is not None
    assert dt.isoformat() == expected
    assert value.is_fully_specified
    # weekday FF, hundredths 00, status 00 in all three
    assert CosemDateTime.from_datetime(dt, with_weekday=False) == value


def test_deviation_sign() -> None:
    value = CosemDateTime.from_bytes(bytes.fromhex("07e40106ff00030000ffc400"))
    assert value.deviation == -60
    assert value.to_datetime() == datetime(2020, 1, 6, 0, 3, tzinfo=UTC1)
    flipped = value.to_datetime(invert_deviation=True)
    assert flipped is not None and flipped.utcoffset() == timedelta(hours=-1)
    encoded = CosemDateTime.from_datetime(
        datetime(2020, 1, 6, 0, 3, tzinfo=UTC1), invert_deviation=True
    )
    assert encoded.deviation == 60


def test_han_push_clock() -> None:
    # tests/test_hdlc/test_hdlc.py:L247: 2019-12-16 Mon 07:59:40, deviation and
    # hundredths unspecified, status FF -> naive datetime
    value = CosemDateTime.from_bytes(bytes.fromhex("07e30c1001073b28ff8000ff"))
    assert value.to_datetime() == datetime(2019, 12, 16, 7, 59, 40)
    assert value.weekday == 1
    assert value.deviation == DEVIATION_UNSPECIFIED
    assert value.status is None
    assert value.fields == {
        "year": 2019,
        "month": 12,
        "day": 16,
        "weekday": 1,
        "hour": 7,
        "minute": 59,
        "second": 40,
    }


@pytest.mark.parametrize(
    "hex_",
    [
        "ffffffffffffffffff800000",  # all wildcards
        "07e4ffffff00000000800000",  # month wildcard
        "07e4021eff00000000800000",  # Feb 30
        "07e40101ff19000000800000",  # hour 25
        "07e40101ff003c0000800000",  # minute 60
        "07e4fe01ff00000000800000",  # DST begin
        "07e401feff00000000800000",  # last day of month
        "000001010100000000800000",  # year 0
        "07e40101ff00000000060000",  # deviation 1536 min: beyond +-24 h
        "07e40101ffff000000800000",  # hour wildcard
    ],
)
def test_partial_or_impossible_values_are_none(hex_: str) -> None:
    value = CosemDateTime.from_bytes(bytes.fromhex(hex_))
    assert value.to_datetime() is None
    assert not value.is_fully_specified
    assert value.to_bytes().hex() == hex_
    json.dumps(value.to_json())


def test_fields_name_special_values() -> None:
    value = CosemDateTime.from_fields(month=0xFE, day=0xFD, hour=2, minute=0, second=0)
    assert value.fields == {
        "month": "dst_begin",
        "day": "second_last_day",
        "hour": 2,
        "minute": 0,
        "second": 0,
    }
    assert value.to_json() == {"value": value.fields, "hex": value.to_bytes().hex()}
    assert CosemDateTime.from_fields(month=0xFD).fields == {"month": "dst_end"}
    assert CosemDate.from_fields(day=0xFE).fields == {"day": "last_day"}
    assert CosemTime.from_fields(hour=1).fields == {"hour": 1}


def test_to_json_fully_specified() -> None:
    value = CosemDateTime.from_bytes(bytes.fromhex("07e40101ff00030000ff8800"))
    assert value.to_json() == {
        "value": "2020-01-01T00:03:00+02:00",
        "hex": "07e40101ff00030000ff8800",
    }


def test_clock_status() -> None:
    value = CosemDateTime.from_fields(2020, 1, 1, None, 0, 0, 0, 0, -60, 0x81)
    assert value.status == ClockStatus.DAYLIGHT_SAVING_ACTIVE | ClockStatus.INVALID_VALUE
    assert value.clock_status == 0x81
    assert int(ClockStatus.DOUBTFUL_VALUE) == 0x02
    assert int(ClockStatus.DIFFERENT_CLOCK_BASE) == 0x04
    assert int(ClockStatus.INVALID_CLOCK_STATUS) == 0x08
    # a reserved bit survives
    assert CosemDateTime.from_fields(clock_status=0x10).status == 0x10


def test_from_datetime_sets_dst_bit() -> None:
    class Summer(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=2)

        def dst(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=1)

        def tzname(self, dt: datetime | None) -> str:
            return "CEST"

    value = CosemDateTime.from_datetime(datetime(2024, 7, 1, 12, 0, 0, 120000, tzinfo=Summer()))
    assert value.to_bytes() == bytes.fromhex("07e8 07 01 01 0c 00 00 0c ff88 80".replace(" ", ""))
    assert value.hundredths == 12
    assert value.weekday == 1


def test_wrong_lengths() -> None:
    for cls, size in ((CosemDateTime, 12), (CosemDate, 5), (CosemTime, 4)):
        with pytest.raises(DecodeError):
            cls.from_bytes(bytes(size - 1))
        with pytest.raises(DecodeError):
            cls.from_bytes(bytes(size + 1))
        with pytest.raises(DecodeError):
            cls(bytes(size + 1))
        assert cls.from_bytes(bytearray(size)).to_bytes() == bytes(size)


def test_encode_range_errors() -> None:
    with pytest.raises(EncodeError):
        CosemDateTime.from_fields(month=256)
    with pytest.raises(EncodeError):
        CosemDateTime.from_fields(deviation=0x8000)
    with pytest.raises(EncodeError):
        CosemDate.from_fields(year=0x10000)
    with pytest.raises(EncodeError):
        CosemTime.from_fields(hour=-1)


def test_date_and_time() -> None:
    value = CosemDate.from_bytes(bytes.fromhex("07e80b15ff"))
    assert value.to_date() == date(2024, 11, 21)
    assert value.to_datetime() == datetime(2024, 11, 21)
    assert value.weekday == 0xFF and value.year == 2024
    assert CosemDate.from_date(date(2024, 11, 21)).weekday == 4  # Thursday
    assert CosemDate.from_bytes(b"\xff" * 5).to_datetime() is None
    clock = CosemTime.from_bytes(bytes.fromhex("081e0f17"))
    assert clock.to_time() == time(8, 30, 15, 230000)
    assert clock.to_json() == {"value": "08:30:15.230000", "hex": "081e0f17"}
    assert CosemTime.from_bytes(bytes.fromhex("081e0fff")).to_time() == time(8, 30, 15)
    assert CosemTime.from_bytes(bytes.fromhex("ff1e0f00")).to_time() is None
    assert not CosemTime.from_bytes(b"\xff" * 4).is_fully_specified
    assert (
        repr(clock)
        == "CosemTime(081e0f17: {'hour': 8, 'minute': 30, 'second': 15, 'hundredths': 23})"
    )


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=12, max_size=12))
def test_any_twelve_bytes(raw: bytes) -> None:
    value = CosemDateTime.from_bytes(raw)
    assert value.to_bytes() == raw
    dt = value.to_datetime()
    json.dumps(value.to_json())
    assert value.is_fully_specified == (dt is not None)
    if dt is not None:
        again = CosemDateTime.from_datetime(dt, with_weekday=raw[4] != 0xFF, clock_status=raw[11])
        assert again.to_datetime() == dt
        # only the hundredths wildcard (read as 0) may differ
        if raw[8] != 0xFF:
            assert again.to_bytes() == raw or raw[4] not in (0xFF, dt.isoweekday())


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=5, max_size=5), st.binary(min_size=4, max_size=4))
def test_any_date_and_time_bytes(date_raw: bytes, time_raw: bytes) -> None:
    day = CosemDate.from_bytes(date_raw)
    clock = CosemTime.from_bytes(time_raw)
    assert day.to_bytes() == date_raw and clock.to_bytes() == time_raw
    assert day.is_fully_specified == (day.to_date() is not None)
    assert clock.is_fully_specified == (clock.to_time() is not None)
    json.dumps([day.to_json(), clock.to_json()])


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.one_of(st.none(), st.integers(-12 * 60, 14 * 60)),
)
def test_from_datetime_roundtrip(naive: datetime, offset: int | None) -> None:
    naive = naive.replace(microsecond=naive.microsecond // 10_000 * 10_000)
    dt = naive if offset is None else naive.replace(tzinfo=timezone(timedelta(minutes=offset)))
    value = CosemDateTime.from_datetime(dt)
    assert value.to_datetime() == dt
    assert value.weekday == dt.isoweekday()
    assert CosemDateTime.from_bytes(value.to_bytes()) == value
