"""Selective access parameters of Profile Generic (class 7) buffer reads (Blue Book 4.3.6).

* selector 1, ``range_descriptor``::

      structure { restricting_object: capture_object_definition,
                  from_value: Data, to_value: Data,
                  selected_values: array of capture_object_definition }

* selector 2, ``entry_descriptor``::

      structure { from_entry: double-long-unsigned, to_entry: double-long-unsigned,
                  from_selected_value: long-unsigned, to_selected_value: long-unsigned }

* ``capture_object_definition``::

      structure { class_id: long-unsigned, logical_name: octet-string(6),
                  attribute_index: integer, data_index: long-unsigned }

An empty `selected_values` means "all columns"; to_entry / to_selected_value 0
mean "up to the last".
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from dlmsd.protocol.apdus.common import SelectiveAccess
from dlmsd.protocol.axdr import Data, DataType
from dlmsd.protocol.errors import DecodeError, UnknownTagError
from dlmsd.protocol.obis import Obis


def _members(value: Data, count: int, what: str) -> tuple[Data, ...]:
    if value.type != DataType.STRUCTURE or not isinstance(value.value, tuple):
        raise DecodeError(f"{what} must be a structure, got {value.type.name}")
    if len(value.value) != count:
        raise DecodeError(f"{what} must have {count} members, got {len(value.value)}")
    return value.value


def _int(value: Data, expected: DataType, what: str) -> int:
    if value.type != expected or not isinstance(value.value, int):
        raise DecodeError(f"{what} must be {expected.name}, got {value.type.name}")
    return value.value


@attrs.frozen(slots=True)
class CaptureObjectDefinition:
    """One column of a profile: an attribute (and element, data_index > 0) of an object."""

    class_id: int
    logical_name: Obis
    attribute_index: int
    data_index: int = 0

    def to_data(self) -> Data:
        return Data.structure(
            Data.long_unsigned(self.class_id),
            Data.octet_string(self.logical_name.to_bytes()),
            Data.integer(self.attribute_index),
            Data.long_unsigned(self.data_index),
        )

    @classmethod
    def from_data(cls, value: Data) -> CaptureObjectDefinition:
        class_id, name, attribute, data_index = _members(value, 4, "capture_object_definition")
        if name.type != DataType.OCTET_STRING or not isinstance(name.value, bytes):
            raise DecodeError(f"logical_name must be an octet-string, got {name.type.name}")
        return cls(
            _int(class_id, DataType.LONG_UNSIGNED, "class_id"),
            Obis.from_bytes(name.value),
            _int(attribute, DataType.INTEGER, "attribute_index"),
            _int(data_index, DataType.LONG_UNSIGNED, "data_index"),
        )


def _columns(value: Data) -> tuple[CaptureObjectDefinition, ...]:
    if value.type != DataType.ARRAY or not isinstance(value.value, tuple):
        raise DecodeError(f"selected_values must be an array, got {value.type.name}")
    return tuple(CaptureObjectDefinition.from_data(item) for item in value.value)


@attrs.frozen(slots=True)
class RangeDescriptor:
    """Rows whose `restricting_object` value lies in [from_value, to_value] (selector 1)."""

    SELECTOR: ClassVar[int] = 1

    restricting_object: CaptureObjectDefinition
    from_value: Data
    to_value: Data
    selected_values: tuple[CaptureObjectDefinition, ...] = ()

    def to_data(self) -> Data:
        return Data.structure(
            self.restricting_object.to_data(),
            self.from_value,
            self.to_value,
            Data.array(*(column.to_data() for column in self.selected_values)),
        )

    @classmethod
    def from_data(cls, value: Data) -> RangeDescriptor:
        restricting, from_value, to_value, selected = _members(value, 4, "range_descriptor")
        return cls(
            CaptureObjectDefinition.from_data(restricting),
            from_value,
            to_value,
            _columns(selected),
        )

    def to_selective_access(self) -> SelectiveAccess:
        return SelectiveAccess(self.SELECTOR, self.to_data())


@attrs.frozen(slots=True)
class EntryDescriptor:
    """Rows from_entry..to_entry, columns from_selected_value..to_selected_value (selector 2).

    Entries and columns count from 1; 0 as an upper bound means "to the last".
    """

    SELECTOR: ClassVar[int] = 2

    from_entry: int = 1
    to_entry: int = 0
    from_selected_value: int = 1
    to_selected_value: int = 0

    def to_data(self) -> Data:
        return Data.structure(
            Data.double_long_unsigned(self.from_entry),
            Data.double_long_unsigned(self.to_entry),
            Data.long_unsigned(self.from_selected_value),
            Data.long_unsigned(self.to_selected_value),
        )

    @classmethod
    def from_data(cls, value: Data) -> EntryDescriptor:
        from_entry, to_entry, from_column, to_column = _members(value, 4, "entry_descriptor")
        return cls(
            _int(from_entry, DataType.DOUBLE_LONG_UNSIGNED, "from_entry"),
            _int(to_entry, DataType.DOUBLE_LONG_UNSIGNED, "to_entry"),
            _int(from_column, DataType.LONG_UNSIGNED, "from_selected_value"),
            _int(to_column, DataType.LONG_UNSIGNED, "to_selected_value"),
        )

    def to_selective_access(self) -> SelectiveAccess:
        return SelectiveAccess(self.SELECTOR, self.to_data())


def parse_selective_access(access: SelectiveAccess) -> RangeDescriptor | EntryDescriptor:
    """Interpret the parameters of a Profile Generic selective access (selector 1 or 2)."""
    if access.selector == RangeDescriptor.SELECTOR:
        return RangeDescriptor.from_data(access.parameters)
    if access.selector == EntryDescriptor.SELECTOR:
        return EntryDescriptor.from_data(access.parameters)
    raise UnknownTagError(f"profile generic access selector must be 1 or 2, got {access.selector}")
