"""Home Assistant MQTT discovery: which sensor a reading becomes, and its name.

Pure tables and functions (no connection); `dlmsd.sinks.mqtt_messages` builds
the discovery messages with them. See docs/homeassistant.md for the rules and
the Home Assistant pages they follow.

Classes (`sensor_classes`) come from three things together, never from the
unit alone: the OBIS medium (value group A: 1 electricity, 6 heat, 7 gas,
8 water, 9 hot water), the quantity (C/D: a cumulative register is
``total_increasing``, an instantaneous value ``measurement``, a status word
or a text neither) and the unit. `RULES` is the table, first match wins; a
device class is only ever paired with a unit Home Assistant accepts for it
(``DEVICE_CLASS_UNITS``, from Home Assistant's ``sensor/const.py``).

Names (`sensor_name`) come from a built-in table of OBIS codes and, for
electricity, from value groups C (quantity and phase), D (energy, power,
demand) and E (tariff): ``1-0:1.8.0`` is "Active energy import",
``1-0:1.8.2`` "Active energy import T2", ``1-0:32.7.0`` "Voltage L1".
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.obis import Obis

# Home Assistant's accepted units per device class (the subset dlmsd can produce):
# homeassistant/components/sensor/const.py DEVICE_CLASS_UNITS, documented at
# https://www.home-assistant.io/integrations/sensor/#device-class
DEVICE_CLASS_UNITS: dict[str, frozenset[str | None]] = {
    "energy": frozenset({"J", "kJ", "MJ", "GJ", "Wh", "kWh", "MWh", "GWh"}),
    "gas": frozenset({"m³", "ft³", "CCF"}),
    "water": frozenset({"m³", "L", "ft³", "CCF", "gal"}),
    "volume": frozenset({"m³", "L", "mL", "ft³", "CCF", "gal"}),
    "volume_flow_rate": frozenset({"m³/h", "L/min", "mL/s", "ft³/min", "gal/min"}),
    "power": frozenset({"W", "kW", "MW"}),
    "reactive_power": frozenset({"var", "kvar"}),
    "reactive_energy": frozenset({"varh", "kvarh"}),
    "apparent_power": frozenset({"VA"}),
    "voltage": frozenset({"V", "mV", "kV"}),
    "current": frozenset({"A", "mA"}),
    "frequency": frozenset({"Hz", "kHz"}),
    "power_factor": frozenset({None, "%"}),
    "temperature": frozenset({"°C", "K"}),
    "pressure": frozenset({"Pa", "hPa", "kPa", "bar", "mbar"}),
    "timestamp": frozenset({None}),
}
# The state classes Home Assistant allows per device class (DEVICE_CLASS_STATE_CLASSES).
DEVICE_CLASS_STATE_CLASSES: dict[str, frozenset[str]] = {
    "energy": frozenset({"total", "total_increasing"}),
    "gas": frozenset({"total", "total_increasing"}),
    "water": frozenset({"total", "total_increasing"}),
    "volume": frozenset({"total", "total_increasing"}),
    "reactive_energy": frozenset({"total", "total_increasing"}),
    "timestamp": frozenset(),
}
# DLMS unit symbols (Blue Book) that Home Assistant spells differently.
HA_UNITS = {"l": "L"}

ELECTRICITY, HEAT, GAS, WATER, HOT_WATER = 1, 6, 7, 8, 9
_ENERGY_UNITS = frozenset({"Wh", "kWh", "MWh", "J", "kJ", "MJ", "GJ"})
# Electricity value group D: time integrals (registers that count up) ...
_INTEGRALS = frozenset({8, 9, 10})
# ... and C: the quantities that are power/energy (per phase: +20, +40, +60).
_POWER_C = frozenset(range(1, 11)) | {15, 16}
# Value group C of status words, identifiers, error and event registers: no state class.
_STATUS_C = frozenset({0, 96, 97, 98, 99})


@attrs.frozen(slots=True)
class SensorClasses:
    """What Home Assistant gets for one reading: device class, state class, unit."""

    device_class: str | None
    state_class: str | None
    unit: str | None

    def config(self) -> dict[str, str]:
        """The discovery keys (absent when None)."""
        out: dict[str, str] = {}
        if self.unit is not None:
            out["unit_of_measurement"] = self.unit
        if self.device_class is not None:
            out["device_class"] = self.device_class
        if self.state_class is not None:
            out["state_class"] = self.state_class
        return out


@attrs.frozen(slots=True)
class Rule:
    """One row of the class table: media, a test of the OBIS code, units -> classes."""

    name: str
    media: frozenset[int]
    units: frozenset[str | None]
    device_class: str | None
    state_class: str | None
    when: Callable[[Obis], bool] = lambda obis: True


def _counting(obis: Obis) -> bool:
    """An electricity time integral: an energy register (1-0:1.8.0, 1-0:2.8.1, ...)."""
    return obis.d in _INTEGRALS


def _instant(obis: Obis) -> bool:
    return obis.d not in _INTEGRALS


def _power_factor(obis: Obis) -> bool:
    return obis.c in (13, 33, 53, 73)


def _mbus_value(obis: Obis) -> bool:
    """0-n:24.2.x, the M-Bus channel values (DSMR gas on channel 1-4)."""
    return obis.b >= 1 and obis.c == 24 and obis.d == 2


def _clock(obis: Obis) -> bool:
    return obis.c == 1 and obis.d == 0


_ALL_MEDIA = frozenset({ELECTRICITY, HEAT, GAS, WATER, HOT_WATER})
_NON_ELECTRIC = frozenset({HEAT, GAS, WATER, HOT_WATER})

RULES: tuple[Rule, ...] = (
    # Electricity: energy registers count up; energy of other D (a period's delta) is a total.
    Rule(
        "electric energy",
        frozenset({ELECTRICITY}),
        frozenset({"Wh", "kWh", "MWh"}),
        "energy",
        "total_increasing",
        _counting,
    ),
    Rule(
        "electric energy, period",
        frozenset({ELECTRICITY}),
        frozenset({"Wh", "kWh", "MWh"}),
        "energy",
        "total",
        _instant,
    ),
    Rule(
        "reactive energy",
        frozenset({ELECTRICITY}),
        frozenset({"varh", "kvarh"}),
        "reactive_energy",
        "total_increasing",
        _counting,
    ),
    Rule(
        "reactive energy, period",
        frozenset({ELECTRICITY}),
        frozenset({"varh", "kvarh"}),
        "reactive_energy",
        "total",
        _instant,
    ),
    # Apparent energy has no Home Assistant device class: a counter without one.
    Rule(
        "apparent energy",
        frozenset({ELECTRICITY}),
        frozenset({"VAh"}),
        None,
        "total_increasing",
        _counting,
    ),
    Rule("active power", frozenset({ELECTRICITY}), frozenset({"W", "kW"}), "power", "measurement"),
    Rule(
        "reactive power",
        frozenset({ELECTRICITY}),
        frozenset({"var"}),
        "reactive_power",
        "measurement",
    ),
    Rule(
        "apparent power",
        frozenset({ELECTRICITY}),
        frozenset({"VA"}),
        "apparent_power",
        "measurement",
    ),
    Rule("voltage", frozenset({ELECTRICITY}), frozenset({"V"}), "voltage", "measurement"),
    Rule("current", frozenset({ELECTRICITY}), frozenset({"A"}), "current", "measurement"),
    Rule("frequency", frozenset({ELECTRICITY}), frozenset({"Hz"}), "frequency", "measurement"),
    Rule(
        "power factor",
        frozenset({ELECTRICITY}),
        frozenset({None}),
        "power_factor",
        "measurement",
        _power_factor,
    ),
    # Heat (and cooling) meters: energy counts up, so does the water volume through them.
    Rule("heat energy", frozenset({HEAT}), _ENERGY_UNITS, "energy", "total_increasing"),
    Rule("heat volume", frozenset({HEAT}), frozenset({"m³", "l"}), "volume", "total_increasing"),
    Rule("heat power", frozenset({HEAT}), frozenset({"W", "kW"}), "power", "measurement"),
    Rule("gas volume", frozenset({GAS}), frozenset({"m³"}), "gas", "total_increasing"),
    Rule("gas energy", frozenset({GAS}), _ENERGY_UNITS, "energy", "total_increasing"),
    Rule("gas pressure", frozenset({GAS}), frozenset({"Pa", "bar"}), "pressure", "measurement"),
    Rule(
        "water volume",
        frozenset({WATER, HOT_WATER}),
        frozenset({"m³", "l"}),
        "water",
        "total_increasing",
    ),
    Rule("flow", _NON_ELECTRIC, frozenset({"m³/h"}), "volume_flow_rate", "measurement"),
    Rule("temperature", _ALL_MEDIA | {0}, frozenset({"°C", "K"}), "temperature", "measurement"),
    # Abstract objects: the M-Bus channel value of a DSMR/ESMR meter in m³ is the gas meter
    # behind it (DSMR 5.0.2 P1 companion standard, 0-n:24.2.1); the clock is a timestamp.
    Rule(
        "M-Bus gas volume",
        frozenset({0}),
        frozenset({"m³"}),
        "gas",
        "total_increasing",
        _mbus_value,
    ),
    Rule("clock", frozenset({0}), frozenset({None}), "timestamp", None, _clock),
)


def _check_rules() -> None:
    """Every row pairs a device class with units and a state class Home Assistant takes."""
    for rule in RULES:
        if rule.device_class is None:
            continue
        accepted = DEVICE_CLASS_UNITS[rule.device_class]
        for unit in rule.units:
            ha_unit = HA_UNITS.get(unit, unit) if unit is not None else None
            assert ha_unit in accepted, (rule.name, unit)
        states = DEVICE_CLASS_STATE_CLASSES.get(rule.device_class, frozenset({"measurement"}))
        assert rule.state_class is None or rule.state_class in states, rule.name


_check_rules()


def parse_obis(text: str) -> Obis | None:
    try:
        return Obis.parse(text)
    except (DlmsError, ValueError):
        return None


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def sensor_classes(obis_text: str, unit: str | None, value: object) -> SensorClasses:
    """Device class, state class and Home Assistant's spelling of the unit for a reading.

    The first rule of `RULES` whose medium, OBIS test and unit match decides.
    Otherwise: a status word, identifier or text gets no class; another number with
    a unit is a plain measurement; a number without a unit gets no class either
    (nothing says it is a measurement rather than a count or a code).
    """
    ha_unit = HA_UNITS.get(unit, unit) if unit else None
    obis = parse_obis(obis_text)
    if obis is None:
        return SensorClasses(None, None, ha_unit)
    clock_text = isinstance(value, str) and _is_aware_iso(value)
    for rule in RULES:
        if obis.a in rule.media and (unit or None) in rule.units and rule.when(obis):
            if rule.device_class == "timestamp" and not clock_text:
                continue
            if rule.state_class is not None and not is_number(value):
                continue
            return SensorClasses(rule.device_class, rule.state_class, ha_unit)
    if not is_number(value) or obis.c in _STATUS_C or ha_unit is None:
        return SensorClasses(None, None, ha_unit)
    return SensorClasses(None, "measurement", ha_unit)


def _is_aware_iso(text: str) -> bool:
    """An ISO date-time with a UTC offset: what a ``timestamp`` sensor needs."""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment.tzinfo is not None


# --- names --------------------------------------------------------------------------

# Whole codes (A-B:C.D.E, any F; B = 0 unless written).
_NAMES: dict[tuple[int, int, int, int, int], str] = {
    (0, 0, 1, 0, 0): "Clock",
    (0, 0, 42, 0, 0): "Logical device name",
    (0, 0, 96, 1, 0): "Meter serial number",
    (0, 0, 96, 1, 1): "Device ID 2",
    (0, 0, 96, 1, 2): "Device ID 3",
    (0, 0, 96, 1, 4): "Device ID 5",
    (0, 0, 96, 3, 10): "Disconnect control",
    (0, 0, 96, 5, 0): "Status word",
    (0, 0, 96, 7, 9): "Long power failures",
    (0, 0, 96, 7, 21): "Power failures",
    (0, 0, 96, 13, 0): "Text message",
    (0, 0, 96, 14, 0): "Active tariff",
    (0, 0, 17, 0, 0): "Limiter threshold",
    (1, 0, 0, 2, 0): "Firmware version",
    (1, 0, 0, 2, 8): "Firmware signature",
    (1, 0, 99, 97, 0): "Power failure event log",
    (6, 0, 1, 0, 0): "Heat energy",
    (6, 0, 2, 0, 0): "Heat volume",
    (7, 0, 3, 0, 0): "Gas volume",
    (7, 0, 13, 0, 0): "Gas volume (converted)",
    (8, 0, 1, 0, 0): "Water volume",
    (9, 0, 1, 0, 0): "Hot water volume",
}
# Electricity quantities by value group C (the per-phase ones come from C - 20/40/60).
_POWER_NAMES = {
    1: ("Active", "import"),
    2: ("Active", "export"),
    3: ("Reactive", "import"),
    4: ("Reactive", "export"),
    5: ("Reactive", "QI"),
    6: ("Reactive", "QII"),
    7: ("Reactive", "QIII"),
    8: ("Reactive", "QIV"),
    9: ("Apparent", "import"),
    10: ("Apparent", "export"),
    15: ("Active", "absolute"),
    16: ("Active", "net"),
}
_OTHER_ELECTRIC = {11: "Current", 12: "Voltage", 13: "Power factor", 14: "Frequency"}
_PHASE_OTHER = {31: "Current", 32: "Voltage", 33: "Power factor"}
_DEMAND = {4: " (current average)", 5: " (last average)", 6: " (maximum demand)"}
_MEDIUM_NAMES = {HEAT: "Heat", GAS: "Gas", WATER: "Water", HOT_WATER: "Hot water"}


def sensor_name(obis_text: str, classes: SensorClasses | None = None) -> str:
    """A readable name for an OBIS code; the code itself when the table has none."""
    obis = parse_obis(obis_text)
    if obis is None:
        return obis_text
    reduced = _reduced(obis)
    named = _NAMES.get((obis.a, obis.b, obis.c, obis.d, obis.e))
    if named is not None:
        return named
    if obis.a == 0 and obis.c == 24 and obis.d == 2 and obis.b >= 1:
        return f"M-Bus channel {obis.b} value"
    if obis.a == ELECTRICITY:
        name = _electricity_name(obis)
        if name is not None:
            return name
    medium = _MEDIUM_NAMES.get(obis.a)
    if medium is not None and classes is not None and classes.device_class is not None:
        what = {
            "energy": "energy",
            "gas": "volume",
            "water": "volume",
            "volume": "volume",
            "volume_flow_rate": "flow",
            "power": "power",
            "temperature": "temperature",
            "pressure": "pressure",
        }.get(classes.device_class)
        if what is not None:
            return f"{medium} {what} ({reduced})"
    return reduced


def _electricity_name(obis: Obis) -> str | None:
    c, d, e = obis.c, obis.d, obis.e
    phase = ""
    if 21 <= c <= 80:
        phase = f" L{(c - 1) // 20}"
        base_c = (c - 1) % 20 + 1
    else:
        base_c = c
    if base_c in _POWER_NAMES and (phase == "" or base_c <= 10):
        kind, direction = _POWER_NAMES[base_c]
        if d in _INTEGRALS:
            what = "energy"
        elif d in (7, 4, 5, 6):
            what = "power"
        else:
            return None
        tariff = f" T{e}" if e and d in _INTEGRALS | {6} else ""
        return f"{kind} {what} {direction}{phase}{tariff}{_DEMAND.get(d, '')}"
    if d == 7 and c in _OTHER_ELECTRIC:
        return _OTHER_ELECTRIC[c]
    if d == 7 and 31 <= c <= 73 and (c - 31) % 20 in (0, 1, 2):
        return f"{_PHASE_OTHER[31 + (c - 31) % 20]} L{(c - 31) // 20 + 1}"
    if d == 7 and c == 91:
        return "Current neutral"
    return None


def _reduced(obis: Obis) -> str:
    """``1-0:99.1.0``: the code without the F group when it is 255."""
    text = str(obis)
    return text[:-4] if text.endswith("*255") else text
