"""Physical units (Blue Book 4.3.2, "unit" enumeration) and scaler application.

Table sources: DLMS UA Blue Book Ed. 12.2 excerpt, Table 4 (codes 1..65,
70..72, 253..255), as transcribed in the public SML/ThingSet and ESPHome SML
parsers; codes 66 and 67 (g/cm², atm) from later Blue Book editions as listed
in public DLMS unit enumerations. Codes 58, 59, 68 and 69 are not assigned.

A register's value is ``raw x 10^scaler`` in the unit; :func:`apply_scaler`
does this exactly with :class:`~decimal.Decimal` (a float would turn 0.1 kWh
steps into 0.10000000000000001).
"""

from __future__ import annotations

import enum
from decimal import Context, Decimal

import attrs

from dlmsd.protocol.axdr import Data, DataType
from dlmsd.protocol.errors import DecodeError

__all__ = ["ScalerUnit", "Unit", "apply_scaler", "unit_name", "unit_symbol"]


class Unit(enum.IntEnum):
    """Blue Book unit codes."""

    YEAR = 1
    MONTH = 2
    WEEK = 3
    DAY = 4
    HOUR = 5
    MINUTE = 6
    SECOND = 7
    DEGREE = 8
    DEGREE_CELSIUS = 9
    CURRENCY = 10
    METRE = 11
    METRE_PER_SECOND = 12
    CUBIC_METRE = 13
    CUBIC_METRE_CORRECTED = 14
    CUBIC_METRE_PER_HOUR = 15
    CUBIC_METRE_PER_HOUR_CORRECTED = 16
    CUBIC_METRE_PER_DAY = 17
    CUBIC_METRE_PER_DAY_CORRECTED = 18
    LITRE = 19
    KILOGRAM = 20
    NEWTON = 21
    NEWTON_METRE = 22
    PASCAL = 23
    BAR = 24
    JOULE = 25
    JOULE_PER_HOUR = 26
    WATT = 27
    VOLT_AMPERE = 28
    VAR = 29
    WATT_HOUR = 30
    VOLT_AMPERE_HOUR = 31
    VAR_HOUR = 32
    AMPERE = 33
    COULOMB = 34
    VOLT = 35
    VOLT_PER_METRE = 36
    FARAD = 37
    OHM = 38
    OHM_SQUARE_METRE_PER_METRE = 39
    WEBER = 40
    TESLA = 41
    AMPERE_PER_METRE = 42
    HENRY = 43
    HERTZ = 44
    ACTIVE_ENERGY_METER_CONSTANT = 45
    REACTIVE_ENERGY_METER_CONSTANT = 46
    APPARENT_ENERGY_METER_CONSTANT = 47
    VOLT_SQUARED_HOUR = 48
    AMPERE_SQUARED_HOUR = 49
    KILOGRAM_PER_SECOND = 50
    SIEMENS = 51
    KELVIN = 52
    VOLT_SQUARED_HOUR_METER_CONSTANT = 53
    AMPERE_SQUARED_HOUR_METER_CONSTANT = 54
    VOLUME_METER_CONSTANT = 55
    PERCENT = 56
    AMPERE_HOUR = 57
    WATT_HOUR_PER_CUBIC_METRE = 60
    JOULE_PER_CUBIC_METRE = 61
    MOLE_PERCENT = 62
    GRAM_PER_CUBIC_METRE = 63
    PASCAL_SECOND = 64
    JOULE_PER_KILOGRAM = 65
    GRAM_PER_SQUARE_CENTIMETRE = 66
    ATMOSPHERE = 67
    DECIBEL_MILLIWATT = 70
    DECIBEL_MICROVOLT = 71
    DECIBEL = 72
    RESERVED = 253
    OTHER = 254
    COUNT = 255

    @property
    def symbol(self) -> str:
        """The Blue Book symbol (``""`` for count / no unit, reserved, other)."""
        return _TABLE[self][0]

    @property
    def description(self) -> str:
        """What the unit measures, in words."""
        return _TABLE[self][1]


# code -> (symbol, description)
_TABLE: dict[int, tuple[str, str]] = {
    1: ("a", "time, year"),
    2: ("mo", "time, month"),
    3: ("wk", "time, week"),
    4: ("d", "time, day"),
    5: ("h", "time, hour"),
    6: ("min", "time, minute"),
    7: ("s", "time, second"),
    8: ("°", "(phase) angle, degree"),
    9: ("°C", "temperature, degree Celsius"),
    10: ("currency", "(local) currency"),
    11: ("m", "length, metre"),
    12: ("m/s", "speed, metre per second"),
    13: ("m³", "volume, cubic metre"),
    14: ("m³", "corrected volume, cubic metre"),
    15: ("m³/h", "volume flux, cubic metre per hour"),
    16: ("m³/h", "corrected volume flux, cubic metre per hour"),
    17: ("m³/d", "volume flux, cubic metre per day"),
    18: ("m³/d", "corrected volume flux, cubic metre per day"),
    19: ("l", "volume, litre"),
    20: ("kg", "mass, kilogram"),
    21: ("N", "force, newton"),
    22: ("Nm", "energy, newton metre"),
    23: ("Pa", "pressure, pascal"),
    24: ("bar", "pressure, bar"),
    25: ("J", "energy, joule"),
    26: ("J/h", "thermal power, joule per hour"),
    27: ("W", "active power, watt"),
    28: ("VA", "apparent power, volt-ampere"),
    29: ("var", "reactive power, var"),
    30: ("Wh", "active energy, watt-hour"),
    31: ("VAh", "apparent energy, volt-ampere-hour"),
    32: ("varh", "reactive energy, var-hour"),
    33: ("A", "current, ampere"),
    34: ("C", "electrical charge, coulomb"),
    35: ("V", "voltage, volt"),
    36: ("V/m", "electric field strength, volt per metre"),
    37: ("F", "capacitance, farad"),
    38: ("Ω", "resistance, ohm"),
    39: ("Ωm²/m", "resistivity"),
    40: ("Wb", "magnetic flux, weber"),
    41: ("T", "magnetic flux density, tesla"),
    42: ("A/m", "magnetic field strength, ampere per metre"),
    43: ("H", "inductance, henry"),
    44: ("Hz", "frequency, hertz"),
    45: ("1/(Wh)", "active energy meter constant or pulse value"),
    46: ("1/(varh)", "reactive energy meter constant or pulse value"),
    47: ("1/(VAh)", "apparent energy meter constant or pulse value"),
    48: ("V²h", "volt-squared hours"),
    49: ("A²h", "ampere-squared hours"),
    50: ("kg/s", "mass flux, kilogram per second"),
    51: ("S", "conductance, siemens (mho)"),
    52: ("K", "temperature, kelvin"),
    53: ("1/(V²h)", "volt-squared hour meter constant or pulse value"),
    54: ("1/(A²h)", "ampere-squared hour meter constant or pulse value"),
    55: ("1/m³", "volume meter constant or pulse value"),
    56: ("%", "percentage"),
    57: ("Ah", "energy, ampere-hour"),
    60: ("Wh/m³", "energy per volume"),
    61: ("J/m³", "calorific value, wobbe"),
    62: ("Mol %", "molar fraction of gas composition, mole percent"),
    63: ("g/m³", "mass density, quantity of material"),
    64: ("Pa s", "dynamic viscosity, pascal second"),
    65: ("J/kg", "specific energy, joule per kilogram"),
    66: ("g/cm²", "pressure, gram per square centimetre"),
    67: ("atm", "pressure, atmosphere"),
    70: ("dBm", "signal strength, dB milliwatt"),
    71: ("dBµV", "signal strength, dB microvolt"),
    72: ("dB", "logarithmic ratio, decibel"),
    253: ("", "reserved"),
    254: ("", "other unit"),
    255: ("", "no unit, unitless, count"),
}


def unit_symbol(code: int) -> str | None:
    """The symbol of a unit code; None for codes the Blue Book does not assign."""
    entry = _TABLE.get(code)
    return None if entry is None else entry[0]


def unit_name(code: int) -> str | None:
    """The enum name (e.g. ``WATT_HOUR``) of a unit code, or None if unassigned."""
    return Unit(code).name if code in _TABLE else None


# Wide enough for any 64-bit register, so scaleb below never rounds.
_EXACT = Context(prec=40)
_EXACT_LIMIT = 10**39


def apply_scaler(raw: int | Decimal, scaler: int) -> Decimal:
    """Exactly ``raw x 10^scaler`` (no context rounding, no float)."""
    if type(raw) is int and -_EXACT_LIMIT < raw < _EXACT_LIMIT:
        return Decimal(raw).scaleb(scaler, _EXACT)
    value = Decimal(raw)
    if not value.is_finite():
        return value
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite values have an integer exponent
    return Decimal((sign, digits, exponent + scaler))


@attrs.frozen(slots=True)
class ScalerUnit:
    """Register attribute 3, ``structure{integer scaler, enum unit}``."""

    scaler: int
    unit: int

    @classmethod
    def from_data(cls, data: Data) -> ScalerUnit:
        """Parse the A-XDR structure; any other shape raises :class:`DecodeError`."""
        items = data.value
        if data.type != DataType.STRUCTURE or not isinstance(items, tuple) or len(items) != 2:
            raise DecodeError(f"scaler_unit must be a structure of 2, got {data!r}")
        scaler, unit = items
        if scaler.type != DataType.INTEGER or not isinstance(scaler.value, int):
            raise DecodeError(f"scaler must be an integer, got {scaler!r}")
        if unit.type != DataType.ENUM or not isinstance(unit.value, int):
            raise DecodeError(f"unit must be an enum, got {unit!r}")
        return cls(scaler.value, unit.value)

    def to_data(self) -> Data:
        return Data.structure(Data.integer(self.scaler), Data.enum(self.unit))

    def apply(self, raw: int | Decimal) -> Decimal:
        """The scaled value of ``raw``."""
        return apply_scaler(raw, self.scaler)

    @property
    def symbol(self) -> str | None:
        """The unit symbol, None for an unassigned code."""
        return unit_symbol(self.unit)
