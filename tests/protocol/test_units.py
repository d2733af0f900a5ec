"""Unit table, scaler application, scaler_unit parsing."""

from __future__ import annotations

from decimal import Context, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.axdr import Data, decode_data_exact
from dlmsd.protocol.errors import DecodeError
from dlmsd.protocol.units import ScalerUnit, Unit, apply_scaler, unit_name, unit_symbol
from tests.vectors import published

VECTORS = published()

# Blue Book Ed. 12.2 excerpt, Table 4 (see dlmsd/protocol/units.py for the sources).
BLUE_BOOK = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C",
    10: "currency", 11: "m", 12: "m/s", 13: "m³", 14: "m³", 15: "m³/h", 16: "m³/h",
    17: "m³/d", 18: "m³/d", 19: "l", 20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar",
    25: "J", 26: "J/h", 27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh", 32: "varh",
    33: "A", 34: "C", 35: "V", 36: "V/m", 37: "F", 38: "Ω", 39: "Ωm²/m", 40: "Wb",
    41: "T", 42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)", 46: "1/(varh)", 47: "1/(VAh)",
    48: "V²h", 49: "A²h", 50: "kg/s", 51: "S", 52: "K", 53: "1/(V²h)", 54: "1/(A²h)",
    55: "1/m³", 56: "%", 57: "Ah", 60: "Wh/m³", 61: "J/m³", 62: "Mol %", 63: "g/m³",
    64: "Pa s", 65: "J/kg", 66: "g/cm²", 67: "atm", 70: "dBm", 71: "dBµV", 72: "dB",
    253: "", 254: "", 255: "",
}  # fmt: skip


def test_table_is_complete() -> None:
    assert {int(u): u.symbol for u in Unit} == BLUE_BOOK
    for code, symbol in BLUE_BOOK.items():
        assert unit_symbol(code) == symbol
        assert Unit(code).description
    assert int(Unit.WATT_HOUR) == 30 and unit_name(30) == "WATT_HOUR"
    assert int(Unit.COUNT) == 255 and int(Unit.CUBIC_METRE_CORRECTED) == 14


@pytest.mark.parametrize("code", [0, 58, 59, 68, 69, 73, 200, 252, 256, -1])
def test_unknown_codes(code: int) -> None:
    assert unit_symbol(code) is None
    assert unit_name(code) is None


@pytest.mark.parametrize(
    ("raw", "scaler", "expected"),
    [
        (1122, 0, "1122"),
        (2307, -1, "230.7"),
        (12345, -3, "12.345"),
        (5, 3, "5E+3"),
        (-64, -2, "-0.64"),
        (0, -2, "0.00"),
        ((1 << 64) - 1, -128, "18446744073709551615E-128"),
        (10**40 + 1, -1, "1000000000000000000000000000000000000000.1"),
    ],
)
def test_apply_scaler(raw: int, scaler: int, expected: str) -> None:
    result = apply_scaler(raw, scaler)
    assert result == Decimal(expected)
    assert str(result) == str(Decimal(expected))


def test_apply_scaler_decimal_input() -> None:
    assert apply_scaler(Decimal("1.5"), 2) == Decimal("150")
    assert apply_scaler(Decimal("NaN"), 2).is_nan()


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 64), 1 << 64), st.integers(-128, 127))
def test_apply_scaler_is_exact(raw: int, scaler: int) -> None:
    exact = Context(prec=200)
    assert apply_scaler(raw, scaler) == exact.multiply(Decimal(raw), exact.power(10, scaler))


def test_scaler_unit_from_han_push() -> None:
    # tests/test_hdlc/test_hdlc.py:L247: {0, 27} = W, {-1, 35} = 0.1 V
    (han,) = [v for v in VECTORS if v["kind"] == "hdlc_ui_frame_data_notification"]
    voltage = han["expected"]["derived"]["first_items"][5]
    scaler_unit = ScalerUnit.from_data(decode_data_exact(bytes.fromhex("02020fff1623")))
    assert [scaler_unit.scaler, scaler_unit.unit] == voltage[2]
    assert scaler_unit.symbol == "V"
    assert scaler_unit.apply(voltage[1]) == Decimal("230.7")
    assert scaler_unit.to_data().to_bytes() == bytes.fromhex("02020fff1623")
    assert ScalerUnit.from_data(decode_data_exact(bytes.fromhex("02020f00161b"))) == ScalerUnit(
        0, Unit.WATT
    )


@pytest.mark.parametrize(
    "bad",
    [
        Data.structure(Data.integer(0)),
        Data.structure(Data.integer(0), Data.enum(27), Data.enum(1)),
        Data.structure(Data.unsigned(0), Data.enum(27)),
        Data.structure(Data.integer(0), Data.unsigned(27)),
        Data.array(Data.integer(0), Data.enum(27)),
        Data.unsigned(27),
    ],
    ids=repr,
)
def test_scaler_unit_bad_shapes(bad: Data) -> None:
    with pytest.raises(DecodeError):
        ScalerUnit.from_data(bad)


def test_scaler_unit_unknown_unit_is_kept() -> None:
    value = ScalerUnit.from_data(Data.structure(Data.integer(-2), Data.enum(99)))
    assert value.unit == 99 and value.symbol is None
