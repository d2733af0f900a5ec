"""Profile Generic (class 7) buffers: capture objects -> columns, buffer -> rows.

* :func:`parse_capture_objects` reads attribute 3 into column definitions, each
  keyed by ``(OBIS, attribute, data_index)`` (:func:`column_key`).
* :func:`parse_buffer` turns attribute 2 (an array of structures, or a
  compact-array) into a :class:`ProfileTable`: one tuple of plain cells per row.
  Null cells stay ``None``: row and column counts are what the meter sent.
  Date-time columns (the clock, capture times) give
  :class:`~dlmsd.protocol.cosem_datetime.CosemDateTime` even when the meter sends
  them as octet-strings.
* :func:`fill_missing_clock` is the separate, opt-in step for meters that send
  the clock only in the first row (each null becomes previous + capture period).
* :class:`ScalerUnitCache` keeps each register's scaler and unit per meter and
  scales the register columns of a table.

Speed: the buffer is decoded by the A-XDR hot path, then one list
comprehension per row; no per-cell function calls for ordinary columns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, TypeAlias

import attrs

from dlmsd.protocol.apdus.common import CosemAttributeDescriptor
from dlmsd.protocol.apdus.selective import CaptureObjectDefinition
from dlmsd.protocol.axdr import Buffer, CompactArray, Data, DataType, decode_data_exact
from dlmsd.protocol.cosem_datetime import CosemDateTime, _fast_datetime
from dlmsd.protocol.errors import DecodeError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.units import ScalerUnit

__all__ = [
    "Cell",
    "ColumnKey",
    "ProfileTable",
    "ScalerUnitCache",
    "column_key",
    "fill_missing_clock",
    "parse_buffer",
    "parse_capture_objects",
]

#: A column's identity: logical name, attribute index, data index (0 = whole attribute).
ColumnKey: TypeAlias = tuple[Obis, int, int]
#: One cell: the plain value; compound values keep their members as ``tuple[Data, ...]``.
Cell: TypeAlias = Any

# (class id, attribute) pairs that hold a date-time.
_TIME_ATTRIBUTES = frozenset({(8, 2), (4, 5), (5, 6), (5, 7)})
# (class id, value attribute) -> scaler_unit attribute.
_SCALED_ATTRIBUTES = {(3, 2): 3, (4, 2): 3, (5, 2): 4, (5, 3): 4}


def column_key(definition: CaptureObjectDefinition) -> ColumnKey:
    """The key a column is found by: ``(OBIS, attribute, data_index)``."""
    return definition.logical_name, definition.attribute_index, definition.data_index


def parse_capture_objects(value: Data) -> tuple[CaptureObjectDefinition, ...]:
    """Attribute 3 (capture_objects): one column definition per array element."""
    items = value.value
    if value.type != DataType.ARRAY or not isinstance(items, tuple):
        raise DecodeError(f"capture_objects must be an array, got {value.type.label}")
    return tuple(CaptureObjectDefinition.from_data(item) for item in items)


@attrs.frozen(slots=True)
class ProfileTable:
    """A parsed buffer: the columns and one tuple of cells per row, oldest first."""

    columns: tuple[CaptureObjectDefinition, ...]
    rows: tuple[tuple[Cell, ...], ...]

    @property
    def keys(self) -> tuple[ColumnKey, ...]:
        """The column keys, in column order."""
        return tuple(column_key(column) for column in self.columns)

    def column_index(self, logical_name: Obis, attribute: int = 2, data_index: int = 0) -> int:
        """The index of a column; DecodeError if the profile does not capture it."""
        key = (logical_name, attribute, data_index)
        try:
            return self.keys.index(key)
        except ValueError:
            raise DecodeError(f"no column {logical_name} attribute {attribute}") from None

    def column(self, logical_name: Obis, attribute: int = 2, data_index: int = 0) -> list[Cell]:
        """Every row's cell of one column."""
        index = self.column_index(logical_name, attribute, data_index)
        return [row[index] for row in self.rows]

    def as_dicts(self) -> list[dict[ColumnKey, Cell]]:
        """The rows as dicts keyed by :func:`column_key`."""
        keys = self.keys
        return [dict(zip(keys, row, strict=True)) for row in self.rows]

    @property
    def clock_index(self) -> int | None:
        """The first date-time column (the clock, normally column 0), if any."""
        for index, column in enumerate(self.columns):
            if (column.class_id, column.attribute_index) in _TIME_ATTRIBUTES:
                return index
        return None


def _row_items(buffer: Data) -> tuple[Data, ...]:
    value = buffer.value
    if buffer.type == DataType.ARRAY and isinstance(value, tuple):
        return value
    if buffer.type == DataType.COMPACT_ARRAY and isinstance(value, CompactArray):
        return value.elements
    raise DecodeError(f"a profile buffer is an array or compact-array, got {buffer.type.label}")


def parse_buffer(
    buffer: Data | Buffer, columns: Sequence[CaptureObjectDefinition] = ()
) -> ProfileTable:
    """Attribute 2 (buffer) as rows of plain cells.

    `buffer` is the decoded value or its A-XDR bytes. With `columns` (from
    attribute 3, or the selected values of a range read) every row must have
    that many cells; without, rows are taken as they come.
    """
    if not isinstance(buffer, Data):
        buffer = decode_data_exact(buffer)
    columns = tuple(columns)
    width = len(columns)
    times = [
        index
        for index, column in enumerate(columns)
        if (column.class_id, column.attribute_index) in _TIME_ATTRIBUTES and column.data_index == 0
    ]
    rows: list[tuple[Cell, ...]] = []
    append = rows.append
    structure = DataType.STRUCTURE
    for number, row in enumerate(_row_items(buffer)):
        cells = row.value
        if row.type is not structure or not isinstance(cells, tuple):
            raise DecodeError(f"profile row {number} is {row.type.label}, not a structure")
        if width and len(cells) != width:
            raise DecodeError(f"profile row {number} has {len(cells)} cells for {width} columns")
        values = [cell.value for cell in cells]
        for index in times:
            raw = values[index]
            if type(raw) is bytes and len(raw) == 12:
                # Built without re-validating the length: the check is right here.
                values[index] = _fast_datetime(raw)
        append(tuple(values))
    return ProfileTable(columns, tuple(rows))


def _shifted(previous: CosemDateTime, period: dt.timedelta) -> CosemDateTime | None:
    """`previous` + `period`, keeping the meter's deviation, status and wildcards."""
    moment = previous.to_datetime()
    if moment is None:
        return None
    naive = moment.replace(tzinfo=None) + period
    raw = previous.raw
    weekday = 0xFF if raw[4] == 0xFF else naive.isoweekday()
    hundredths = 0xFF if raw[8] == 0xFF else naive.microsecond // 10_000
    fields = bytes(
        (naive.month, naive.day, weekday, naive.hour, naive.minute, naive.second, hundredths)
    )
    return CosemDateTime(naive.year.to_bytes(2, "big") + fields + raw[9:12])


def fill_missing_clock(
    table: ProfileTable, capture_period: int | dt.timedelta, clock_index: int | None = None
) -> ProfileTable:
    """Fill null clock cells as previous + capture period (a compression some meters use).

    `capture_period` is attribute 4 (seconds). Cells before the first clock, or
    after one that is not a single instant, stay None.
    """
    index = table.clock_index if clock_index is None else clock_index
    period = (
        capture_period
        if isinstance(capture_period, dt.timedelta)
        else dt.timedelta(seconds=capture_period)
    )
    if index is None or not period:
        return table
    previous: CosemDateTime | None = None
    rows = []
    for row in table.rows:
        cell = row[index]
        if cell is None and previous is not None:
            cell = _shifted(previous, period)
            if cell is not None:
                row = (*row[:index], cell, *row[index + 1 :])
        previous = cell if isinstance(cell, CosemDateTime) else None
        rows.append(row)
    return ProfileTable(table.columns, tuple(rows))


class ScalerUnitCache:
    """Scaler and unit of each register a meter's profiles capture.

    Keep one per meter: scalers do not change, so attribute 3 is read once
    (:meth:`missing` says which reads are still needed) and applied to every
    profile read after.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, Obis], ScalerUnit] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, class_id: int, logical_name: Obis, scaler_unit: ScalerUnit | Data) -> None:
        """Remember the scaler_unit of one object (the structure or its decoded form)."""
        if isinstance(scaler_unit, Data):
            scaler_unit = ScalerUnit.from_data(scaler_unit)
        self._entries[class_id, logical_name] = scaler_unit

    def get(self, class_id: int, logical_name: Obis) -> ScalerUnit | None:
        """The cached scaler_unit, or None."""
        return self._entries.get((class_id, logical_name))

    def missing(
        self, columns: Iterable[CaptureObjectDefinition]
    ) -> list[CosemAttributeDescriptor]:
        """The scaler_unit attributes to read before these columns can be scaled."""
        wanted: dict[tuple[int, Obis], CosemAttributeDescriptor] = {}
        for column in columns:
            attribute = _SCALED_ATTRIBUTES.get((column.class_id, column.attribute_index))
            key = (column.class_id, column.logical_name)
            if attribute is not None and key not in self._entries:
                wanted[key] = CosemAttributeDescriptor(
                    column.class_id, column.logical_name, attribute
                )
        return list(wanted.values())

    def column_units(self, table: ProfileTable) -> list[ScalerUnit | None]:
        """Per column: the scaler_unit that applies to it, or None."""
        units: list[ScalerUnit | None] = []
        for column in table.columns:
            scaled = (column.class_id, column.attribute_index) in _SCALED_ATTRIBUTES
            units.append(self.get(column.class_id, column.logical_name) if scaled else None)
        return units

    def scale(self, table: ProfileTable) -> tuple[tuple[Cell, ...], ...]:
        """The rows with register columns as exact Decimals (value x 10^scaler).

        Non-numeric and null cells pass through unchanged.
        """
        plan = [
            (index, unit)
            for index, unit in enumerate(self.column_units(table))
            if unit is not None
        ]
        if not plan:
            return table.rows
        out = []
        for row in table.rows:
            values = list(row)
            for index, unit in plan:
                raw = values[index]
                if isinstance(raw, int | Decimal) and not isinstance(raw, bool):
                    values[index] = unit.apply(raw)
            out.append(tuple(values))
        return tuple(out)
