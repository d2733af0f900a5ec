"""COSEM date, time and date-time values (Blue Book 4.1.6.1).

Each value keeps its raw octets: meters send wildcards, DST markers and
out-of-range fields, and a value must re-encode byte for byte. Field views are
computed on access, so decoding a push costs one slice and one object.

Wire layout (big-endian)::

    date-time (12): year(2) month day weekday hour minute second hundredths
                    deviation(int16, minutes local -> UTC) clock_status
    date (5):       year(2) month day weekday
    time (4):       hour minute second hundredths

0xFF (0xFFFF for the year) means "not specified"; month 0xFD/0xFE = DST end /
begin; day 0xFD/0xFE = second-last / last day of the month; deviation 0x8000 =
not specified.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import attrs

from dlmsd.protocol.errors import DecodeError, EncodeError

__all__ = [
    "DEVIATION_UNSPECIFIED",
    "ClockStatus",
    "CosemDate",
    "CosemDateTime",
    "CosemTime",
]

#: The wire value of ``deviation`` when the meter does not know its offset.
DEVIATION_UNSPECIFIED = -0x8000
_UNSPECIFIED = 0xFF
_YEAR_UNSPECIFIED = 0xFFFF

_MONTH_NAMES = {0xFD: "dst_end", 0xFE: "dst_begin"}
_DAY_NAMES = {0xFD: "second_last_day", 0xFE: "last_day"}


class ClockStatus(enum.IntFlag):
    """Clock status bits of a date-time (0xFF as a whole = not specified)."""

    INVALID_VALUE = 0x01
    DOUBTFUL_VALUE = 0x02
    DIFFERENT_CLOCK_BASE = 0x04
    INVALID_CLOCK_STATUS = 0x08
    DAYLIGHT_SAVING_ACTIVE = 0x80


def _check_length(raw: bytes | bytearray | memoryview, expected: int, what: str) -> None:
    if len(raw) != expected:
        raise DecodeError(f"a COSEM {what} is {expected} bytes, got {len(raw)}")


def _validate_raw(expected: int, what: str) -> Any:
    def check(_instance: object, _attribute: object, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise DecodeError(f"a COSEM {what} is built from bytes, got {type(value).__name__}")
        _check_length(value, expected, what)

    return check


def _year_field(raw: bytes) -> int:
    return (raw[0] << 8) | raw[1]


def _date_fields(raw: bytes, out: dict[str, object]) -> None:
    year = _year_field(raw)
    if year != _YEAR_UNSPECIFIED:
        out["year"] = year
    month, day, weekday = raw[2], raw[3], raw[4]
    if month != _UNSPECIFIED:
        out["month"] = _MONTH_NAMES.get(month, month)
    if day != _UNSPECIFIED:
        out["day"] = _DAY_NAMES.get(day, day)
    if weekday != _UNSPECIFIED:
        out["weekday"] = weekday


def _time_fields(raw: bytes, out: dict[str, object]) -> None:
    for name, value in zip(("hour", "minute", "second", "hundredths"), raw, strict=True):
        if value != _UNSPECIFIED:
            out[name] = value


def _to_date(raw: bytes) -> date | None:
    year, month, day = _year_field(raw), raw[2], raw[3]
    # Wildcards and the DST / last-day markers are all > 12 / > 31, so the
    # date constructor rejects them together with Feb 30 and month 13.
    if year == _YEAR_UNSPECIFIED or year == 0:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _to_time(raw: bytes) -> time | None:
    hour, minute, second, hundredths = raw[0], raw[1], raw[2], raw[3]
    if hundredths == _UNSPECIFIED:
        hundredths = 0  # commonly unspecified on meters that count whole seconds
    try:
        return time(hour, minute, second, hundredths * 10_000)
    except ValueError:
        return None


def _pack_byte(value: int | None, what: str) -> int:
    if value is None:
        return _UNSPECIFIED
    if not 0 <= value <= 0xFF:
        raise EncodeError(f"COSEM {what} out of range 0..255: {value}")
    return value


def _pack_date(year: int | None, month: int | None, day: int | None, weekday: int | None) -> bytes:
    if year is None:
        year = _YEAR_UNSPECIFIED
    if not 0 <= year <= 0xFFFF:
        raise EncodeError(f"COSEM year out of range 0..65535: {year}")
    return year.to_bytes(2, "big") + bytes(
        (_pack_byte(month, "month"), _pack_byte(day, "day"), _pack_byte(weekday, "weekday"))
    )


def _pack_time(
    hour: int | None, minute: int | None, second: int | None, hundredths: int | None
) -> bytes:
    return bytes(
        (
            _pack_byte(hour, "hour"),
            _pack_byte(minute, "minute"),
            _pack_byte(second, "second"),
            _pack_byte(hundredths, "hundredths"),
        )
    )


class _RawCosemValue:
    """What the three COSEM time types share: the raw bytes, the JSON form, the repr."""

    __slots__ = ()
    raw: bytes

    @property
    def fields(self) -> dict[str, object]:
        raise NotImplementedError

    def _python_value(self) -> date | time | None:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return self.raw

    def to_json(self) -> dict[str, object]:
        """``{"value": ISO text or the fields dict, "hex": raw}``."""
        value = self._python_value()
        shown: object = value.isoformat() if value is not None else self.fields
        return {"value": shown, "hex": self.raw.hex()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw.hex()}: {self.fields})"


@attrs.frozen(slots=True, repr=False)
class CosemDateTime(_RawCosemValue):
    """A 12-byte COSEM date-time, kept raw so it re-encodes exactly."""

    raw: bytes = attrs.field(validator=_validate_raw(12, "date-time"))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> CosemDateTime:
        """Wrap 12 octets (a wrong length raises :class:`DecodeError`)."""
        _check_length(data, 12, "date-time")
        return _fast_datetime(bytes(data))

    @classmethod
    def from_fields(
        cls,
        year: int | None = None,
        month: int | None = None,
        day: int | None = None,
        weekday: int | None = None,
        hour: int | None = None,
        minute: int | None = None,
        second: int | None = None,
        hundredths: int | None = None,
        deviation: int | None = None,
        clock_status: int | None = None,
    ) -> CosemDateTime:
        """Build from fields; ``None`` means "not specified" (wildcard)."""
        if deviation is None:
            deviation = DEVIATION_UNSPECIFIED
        if not -0x8000 <= deviation <= 0x7FFF:
            raise EncodeError(f"COSEM deviation out of int16 range: {deviation}")
        raw = (
            _pack_date(year, month, day, weekday)
            + _pack_time(hour, minute, second, hundredths)
            + deviation.to_bytes(2, "big", signed=True)
            + bytes((_pack_byte(clock_status, "clock status"),))
        )
        return cls(raw)

    @classmethod
    def from_datetime(
        cls,
        dt: datetime,
        *,
        with_weekday: bool = True,
        clock_status: int | None = None,
        invert_deviation: bool = False,
    ) -> CosemDateTime:
        """Encode a Python datetime.

        An aware value gets its UTC offset as deviation (Blue Book sign: minutes
        from local time to UTC, so UTC+01:00 -> -60; ``invert_deviation`` for
        meters that expect the opposite); a naive one gets "not specified".
        ``clock_status`` defaults to 0, plus the DST bit when ``dt.dst()`` says so.
        """
        offset = dt.utcoffset()
        if offset is None:
            deviation = DEVIATION_UNSPECIFIED
        else:
            minutes = int(offset.total_seconds()) // 60
            deviation = minutes if invert_deviation else -minutes
        if clock_status is None:
            dst = dt.dst()
            clock_status = ClockStatus.DAYLIGHT_SAVING_ACTIVE if dst else 0
        return cls.from_fields(
            dt.year,
            dt.month,
            dt.day,
            dt.isoweekday() if with_weekday else None,
            dt.hour,
            dt.minute,
            dt.second,
            dt.microsecond // 10_000,
            deviation,
            int(clock_status),
        )

    @property
    def year(self) -> int:
        return _year_field(self.raw)

    @property
    def month(self) -> int:
        return self.raw[2]

    @property
    def day(self) -> int:
        return self.raw[3]

    @property
    def weekday(self) -> int:
        return self.raw[4]

    @property
    def hour(self) -> int:
        return self.raw[5]

    @property
    def minute(self) -> int:
        return self.raw[6]

    @property
    def second(self) -> int:
        return self.raw[7]

    @property
    def hundredths(self) -> int:
        return self.raw[8]

    @property
    def deviation(self) -> int:
        """Signed minutes local -> UTC; :data:`DEVIATION_UNSPECIFIED` if unknown."""
        return int.from_bytes(self.raw[9:11], "big", signed=True)

    @property
    def clock_status(self) -> int:
        """The raw status byte (0xFF = not specified)."""
        return self.raw[11]

    @property
    def status(self) -> ClockStatus | None:
        """The status bits, or None when the byte is 0xFF (not specified)."""
        if self.raw[11] == _UNSPECIFIED:
            return None
        return ClockStatus(self.raw[11])

    @property
    def is_fully_specified(self) -> bool:
        """True when it denotes one instant: to_datetime() is not None.

        Weekday and hundredths may be unspecified (hundredths count as 0);
        deviation may be unspecified (the instant is then local, naive).
        """
        return self.to_datetime() is not None

    def to_datetime(self, *, invert_deviation: bool = False) -> datetime | None:
        """The instant as a datetime, or None for wildcards and impossible fields.

        Aware (fixed offset) when the deviation is given, naive when it is not.
        Never raises.
        """
        raw = self.raw
        day = _to_date(raw)
        if day is None:
            return None
        clock = _to_time(raw[5:9])
        if clock is None:
            return None
        deviation = int.from_bytes(raw[9:11], "big", signed=True)
        if deviation == DEVIATION_UNSPECIFIED:
            return datetime.combine(day, clock)
        if not -1440 < deviation < 1440:
            return None
        offset = deviation if invert_deviation else -deviation
        return datetime.combine(day, clock, timezone(timedelta(minutes=offset)))

    @property
    def fields(self) -> dict[str, object]:
        """The specified fields only; DST and last-day markers by name."""
        out: dict[str, object] = {}
        raw = self.raw
        _date_fields(raw, out)
        _time_fields(raw[5:9], out)
        deviation = self.deviation
        if deviation != DEVIATION_UNSPECIFIED:
            out["deviation"] = deviation
        if raw[11] != _UNSPECIFIED:
            out["clock_status"] = raw[11]
        return out

    def _python_value(self) -> date | time | None:
        return self.to_datetime()


@attrs.frozen(slots=True, repr=False)
class CosemDate(_RawCosemValue):
    """A 5-byte COSEM date, kept raw so it re-encodes exactly."""

    raw: bytes = attrs.field(validator=_validate_raw(5, "date"))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> CosemDate:
        """Wrap 5 octets (a wrong length raises :class:`DecodeError`)."""
        _check_length(data, 5, "date")
        return _fast_date(bytes(data))

    @classmethod
    def from_fields(
        cls,
        year: int | None = None,
        month: int | None = None,
        day: int | None = None,
        weekday: int | None = None,
    ) -> CosemDate:
        """Build from fields; ``None`` means "not specified"."""
        return cls(_pack_date(year, month, day, weekday))

    @classmethod
    def from_date(cls, value: date, *, with_weekday: bool = True) -> CosemDate:
        """Encode a Python date (weekday 1 = Monday, or 0xFF if not wanted)."""
        weekday = value.isoweekday() if with_weekday else None
        return cls.from_fields(value.year, value.month, value.day, weekday)

    @property
    def year(self) -> int:
        return _year_field(self.raw)

    @property
    def month(self) -> int:
        return self.raw[2]

    @property
    def day(self) -> int:
        return self.raw[3]

    @property
    def weekday(self) -> int:
        return self.raw[4]

    @property
    def is_fully_specified(self) -> bool:
        """True when year, month and day name one real day."""
        return _to_date(self.raw) is not None

    def to_date(self) -> date | None:
        """The day, or None for wildcards and impossible dates. Never raises."""
        return _to_date(self.raw)

    def to_datetime(self) -> datetime | None:
        """Midnight (naive) of the day, or None like :meth:`to_date`."""
        day = _to_date(self.raw)
        return None if day is None else datetime(day.year, day.month, day.day)

    @property
    def fields(self) -> dict[str, object]:
        """The specified fields only; DST and last-day markers by name."""
        out: dict[str, object] = {}
        _date_fields(self.raw, out)
        return out

    def _python_value(self) -> date | time | None:
        return _to_date(self.raw)


@attrs.frozen(slots=True, repr=False)
class CosemTime(_RawCosemValue):
    """A 4-byte COSEM time, kept raw so it re-encodes exactly."""

    raw: bytes = attrs.field(validator=_validate_raw(4, "time"))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> CosemTime:
        """Wrap 4 octets (a wrong length raises :class:`DecodeError`)."""
        _check_length(data, 4, "time")
        return _fast_time(bytes(data))

    @classmethod
    def from_fields(
        cls,
        hour: int | None = None,
        minute: int | None = None,
        second: int | None = None,
        hundredths: int | None = None,
    ) -> CosemTime:
        """Build from fields; ``None`` means "not specified"."""
        return cls(_pack_time(hour, minute, second, hundredths))

    @classmethod
    def from_time(cls, value: time) -> CosemTime:
        """Encode a Python time (microseconds truncated to hundredths)."""
        return cls.from_fields(value.hour, value.minute, value.second, value.microsecond // 10_000)

    @property
    def hour(self) -> int:
        return self.raw[0]

    @property
    def minute(self) -> int:
        return self.raw[1]

    @property
    def second(self) -> int:
        return self.raw[2]

    @property
    def hundredths(self) -> int:
        return self.raw[3]

    @property
    def is_fully_specified(self) -> bool:
        """True when hour, minute and second are real (hundredths may be 0xFF)."""
        return _to_time(self.raw) is not None

    def to_time(self) -> time | None:
        """The time of day, or None for wildcards and impossible values."""
        return _to_time(self.raw)

    @property
    def fields(self) -> dict[str, object]:
        """The specified fields only."""
        out: dict[str, object] = {}
        _time_fields(self.raw, out)
        return out

    def _python_value(self) -> date | time | None:
        return _to_time(self.raw)


# Hot-path constructors: skip the validating __init__ when the caller already
# checked the length (the A-XDR decoder does, per value).
_new = object.__new__
_set_datetime_raw = CosemDateTime.__dict__["raw"].__set__
_set_date_raw = CosemDate.__dict__["raw"].__set__
_set_time_raw = CosemTime.__dict__["raw"].__set__


def _fast_datetime(raw: bytes) -> CosemDateTime:
    value: CosemDateTime = _new(CosemDateTime)
    _set_datetime_raw(value, raw)
    return value


def _fast_date(raw: bytes) -> CosemDate:
    value: CosemDate = _new(CosemDate)
    _set_date_raw(value, raw)
    return value


def _fast_time(raw: bytes) -> CosemTime:
    value: CosemTime = _new(CosemTime)
    _set_time_raw(value, raw)
    return value
