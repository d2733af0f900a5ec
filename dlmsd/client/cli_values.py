"""Values on the command line: A-XDR data as plain JSON and back.

`json_value` is what ``dlmsd get`` prints: the same plain values push records
carry (numbers as numbers, date-times as ISO text, printable octet-strings as
text, other octet-strings as hex), with structures and arrays as lists.
``--raw`` prints the typed tree instead (:meth:`Data.to_json`), and
`data_from_json` reads that tree back, so ``dlmsd set`` can write what
``dlmsd get --raw`` printed. `data_from_text` turns a plain command-line value
of a named type into data.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from dlmsd.cosem.readings import json_number, plain_value_of
from dlmsd.protocol.axdr import BitString, CompactArray, Data, DataType
from dlmsd.protocol.cosem_datetime import CosemDate, CosemDateTime, CosemTime
from dlmsd.protocol.errors import DecodeError

_BY_LABEL = {data_type.label: data_type for data_type in DataType}
_INTEGERS = frozenset(
    {
        DataType.INTEGER,
        DataType.LONG,
        DataType.DOUBLE_LONG,
        DataType.LONG64,
        DataType.UNSIGNED,
        DataType.LONG_UNSIGNED,
        DataType.DOUBLE_LONG_UNSIGNED,
        DataType.LONG64_UNSIGNED,
        DataType.ENUM,
        DataType.BCD,
    }
)
_TIMES: dict[DataType, type[CosemDateTime] | type[CosemDate] | type[CosemTime]] = {
    DataType.DATE_TIME: CosemDateTime,
    DataType.DATE: CosemDate,
    DataType.TIME: CosemTime,
}

_NON_FINITE = ("NaN", "Infinity", "-Infinity")

#: The TYPE names `data_from_text` accepts: the Blue Book labels plus
#: ``clock``, a date-time as the 12-octet octet-string COSEM objects hold.
TEXT_TYPES = (
    "clock",
    "null-data",
    "boolean",
    *sorted(data_type.label for data_type in _INTEGERS),
    "float32",
    "float64",
    "octet-string",
    "visible-string",
    "utf8-string",
)


def json_value(item: Data) -> object:
    """The plain JSON value of `item` (see the module docstring)."""
    value = item.value
    if isinstance(value, tuple):
        return [json_value(child) for child in value]
    if isinstance(value, CompactArray):
        return [json_value(child) for child in value.elements]
    if isinstance(value, BitString):
        return value.to_text()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, CosemDateTime | CosemDate | CosemTime):
        shown = value.to_json()["value"]
        return shown
    return plain_value_of(item.type, value)


def number(value: object) -> object:
    """A scaled register value as a JSON number (text only if no float holds it exactly)."""
    if isinstance(value, Decimal):
        return json_number(value)
    return value


def data_from_json(node: object, depth: int = 0) -> Data:
    """Data from its typed JSON tree (what :meth:`Data.to_json` and ``get --raw`` give)."""
    if depth > 32:
        raise DecodeError("typed value nested too deep")
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise DecodeError('a typed value is {"type": "<Blue Book type>", "value": ...}')
    data_type = _BY_LABEL.get(node["type"])
    if data_type is None:
        raise DecodeError(f"unknown data type {node['type']!r}")
    value = node.get("value")
    if data_type in (DataType.ARRAY, DataType.STRUCTURE):
        if not isinstance(value, list):
            raise DecodeError(f"{data_type.label} needs a list of typed values")
        return Data(data_type, tuple(data_from_json(child, depth + 1) for child in value))
    if data_type in _TIMES:
        raw = node.get("hex")
        if not isinstance(raw, str):
            raise DecodeError(f'{data_type.label} needs its octets as "hex"')
        return Data(data_type, _TIMES[data_type].from_bytes(_octets(raw)))
    if data_type == DataType.COMPACT_ARRAY:
        raise DecodeError("compact-array values cannot be written from the command line")
    if data_type == DataType.BIT_STRING:
        if not isinstance(value, str) or set(value) - {"0", "1"}:
            raise DecodeError('bit-string needs text of 0 and 1, e.g. "0101"')
        return Data(data_type, BitString.from_bools([bit == "1" for bit in value]))
    if data_type == DataType.OCTET_STRING:
        if not isinstance(value, str):
            raise DecodeError("octet-string needs hex text")
        return Data(data_type, _octets(value))
    if data_type == DataType.BOOLEAN and isinstance(node.get("raw"), int):
        value = node["raw"]  # a wire octet other than 0/1, kept as the meter sent it
        if not 0 <= value <= 255:
            raise DecodeError(f"boolean raw octet out of range: {value}")
        return Data(data_type, value)
    if data_type in (DataType.FLOAT32, DataType.FLOAT64) and value in _NON_FINITE:
        return Data(data_type, float(str(value).replace("Infinity", "inf")))
    return _scalar(data_type, value)


def data_from_text(text: str, type_name: str) -> Data:
    """Data of type `type_name` (one of `TEXT_TYPES`) from command-line text."""
    if type_name == "clock":
        return Data(DataType.OCTET_STRING, clock_octets(text))
    data_type = _BY_LABEL.get(type_name)
    if data_type is None or type_name not in TEXT_TYPES:
        raise DecodeError(f"--type {type_name!r} is not one of {', '.join(TEXT_TYPES)}")
    if data_type == DataType.NULL_DATA:
        return Data.null()
    if data_type == DataType.OCTET_STRING:
        return Data(data_type, _octets(text))
    if data_type in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        return _scalar(data_type, text)
    if data_type == DataType.BOOLEAN:
        flags = {"true": True, "1": True, "false": False, "0": False}
        if text.lower() not in flags:
            raise DecodeError(f"boolean: expected true or false, got {text!r}")
        return Data(data_type, flags[text.lower()])
    if data_type in (DataType.FLOAT32, DataType.FLOAT64):
        try:
            return Data(data_type, float(text))
        except ValueError:
            raise DecodeError(f"{type_name}: not a number: {text!r}") from None
    try:
        return _scalar(data_type, int(text, 0))
    except ValueError:
        raise DecodeError(f"{type_name}: not an integer: {text!r}") from None


def clock_octets(text: str) -> bytes:
    """A date-time as the 12 octets of a clock: ISO 8601 text, or ``now`` (local time)."""
    if text == "now":
        moment = datetime.now().astimezone()
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise DecodeError(f"not an ISO 8601 time (or 'now'): {text!r}") from None
    return CosemDateTime.from_datetime(moment).to_bytes()


def _scalar(data_type: DataType, value: object) -> Data:
    item = Data(data_type, value)  # type: ignore[arg-type]  # checked by encoding below
    if data_type in _INTEGERS and (not isinstance(value, int) or isinstance(value, bool)):
        raise DecodeError(f"{data_type.label} needs an integer, got {value!r}")
    item.to_bytes()  # raises EncodeError (a DlmsError) for values out of range
    return item


def _octets(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise DecodeError(f"not hex: {text!r}") from None
