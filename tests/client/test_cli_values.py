"""Plain JSON values for `dlmsd get`, and typed JSON / TYPE:TEXT back to data for `set`."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.client.cli_values import (
    TEXT_TYPES,
    data_from_json,
    data_from_text,
    json_value,
)
from dlmsd.protocol.axdr import BitString, Data, DataType
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError
from tests.protocol.test_axdr import simple_data

# Typed trees without compact-arrays (not writable from a command line).
trees: st.SearchStrategy[Data] = st.recursive(
    simple_data,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: Data.array(*items)),
        st.lists(children, max_size=4).map(lambda items: Data.structure(*items)),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_typed_json_reads_back(value: Data) -> None:
    # What `get --raw` prints, `set` takes: the typed view survives the trip through JSON text.
    node = json.loads(json.dumps(value.to_json()))
    again = data_from_json(node)
    assert again.to_json() == value.to_json()
    assert again.to_bytes() == value.to_bytes() or value.type in (
        DataType.BIT_STRING,  # padding bits are not in the text form
        DataType.ARRAY,
        DataType.STRUCTURE,
    )


@settings(max_examples=200, deadline=None)
@given(trees)
def test_plain_values_are_json(value: Data) -> None:
    text = json.dumps(json_value(value), allow_nan=False)  # no NaN/Infinity tokens
    assert json.loads(text) == json_value(value)


def test_plain_values_like_records() -> None:
    clock = CosemDateTime.from_datetime(
        __import__("datetime").datetime.fromisoformat("2024-03-01T12:00:00+01:00")
    )
    assert json_value(Data.octet_string(clock.raw)) == "2024-03-01T12:00:00+01:00"
    assert json_value(Data.octet_string(b"GAS0000001")) == "GAS0000001"
    assert json_value(Data.octet_string(b"\x01\x02")) == "0102"
    assert json_value(Data.visible_string("LGZ1030")) == "LGZ1030"
    assert json_value(Data.double_long_unsigned(3325499)) == 3325499
    assert json_value(Data.boolean(True)) is True
    assert json_value(Data.structure(Data.integer(-3), Data.enum(30))) == [-3, 30]
    assert json_value(Data(DataType.BIT_STRING, BitString.from_bools([True, False]))) == "10"
    assert json_value(Data.float64(math.inf)) == "Infinity"
    assert json_value(Data.null()) is None


@pytest.mark.parametrize(
    ("text", "type_name", "expected"),
    [
        ("900", "long-unsigned", Data.long_unsigned(900)),
        ("0x10", "unsigned", Data.unsigned(16)),
        ("-5", "integer", Data.integer(-5)),
        ("true", "boolean", Data.boolean(True)),
        ("0a0b", "octet-string", Data.octet_string(b"\n\x0b")),
        ("a:b", "visible-string", Data.visible_string("a:b")),
        ("1.5", "float64", Data.float64(1.5)),
        ("", "null-data", Data.null()),
    ],
)
def test_text_of_a_type(text: str, type_name: str, expected: Data) -> None:
    assert type_name in TEXT_TYPES
    assert data_from_text(text, type_name) == expected


def test_clock_text() -> None:
    value = data_from_text("2030-01-02T03:04:05+01:00", "clock")
    assert value.type == DataType.OCTET_STRING and isinstance(value.value, bytes)
    stamp = CosemDateTime.from_bytes(value.value).to_datetime()
    assert stamp is not None and stamp.isoformat() == "2030-01-02T03:04:05+01:00"
    assert len(data_from_text("now", "clock").value or b"") == 12


@pytest.mark.parametrize(
    ("text", "type_name", "message"),
    [
        ("300", "unsigned", "out of range"),
        ("x", "long", "not an integer"),
        ("zz", "octet-string", "not hex"),
        ("maybe", "boolean", "expected true or false"),
        ("yesterday", "clock", "not an ISO 8601 time"),
        ("1", "array", "is not one of"),
    ],
)
def test_bad_text_is_one_message(text: str, type_name: str, message: str) -> None:
    with pytest.raises(DlmsError, match=message):
        data_from_text(text, type_name)


@pytest.mark.parametrize(
    "node",
    [
        5,
        {"type": "no-such-type", "value": 1},
        {"type": "unsigned", "value": "5"},
        {"type": "unsigned", "value": True},
        {"type": "structure", "value": 5},
        {"type": "bit-string", "value": "012"},
        {"type": "date-time", "value": "2024-01-01T00:00:00"},
        {"type": "compact-array", "value": []},
    ],
)
def test_bad_typed_json_is_refused(node: object) -> None:
    with pytest.raises(DlmsError):
        data_from_json(node)
