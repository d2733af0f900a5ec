"""Readings extracted from push bodies in the layouts meters really send."""

from __future__ import annotations

from decimal import Decimal

from dlmsd.cosem.readings import PushObject, Reading, extract_readings, json_number
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import Data, DataType, decode_data_exact
from dlmsd.protocol.obis import Obis
from tests.vectors import by_kind


def _obis(text: str) -> Data:
    return Data(DataType.OCTET_STRING, Obis.parse(text).to_bytes())


def _scaler_unit(scaler: int, unit: int) -> Data:
    return Data(
        DataType.STRUCTURE,
        (Data(DataType.INTEGER, scaler), Data(DataType.ENUM, unit)),
    )


def test_norwegian_han_push_in_hdlc_ui_frame() -> None:
    # Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py (hdlc_ui_frame_data_notification),
    # also examples/parse_norwegian_han.py: array of {OBIS, value[, {scaler, unit}]}.
    (vector,) = by_kind("hdlc_ui_frame_data_notification")
    frame = bytes.fromhex(vector["hex"])
    # 7E | format(2) | dest(1) | src(2) | control(1) | HCS(2) | LLC(3) | APDU | FCS(2) | 7E
    apdu = frame[12:-3]
    notification = DataNotification.from_bytes(apdu)
    readings = extract_readings(notification.body)
    assert len(readings) == 27
    by_obis = {str(reading.obis): reading for reading in readings}
    clock = by_obis["0-0:1.0.0*255"]
    assert clock.value == "2019-12-16T07:59:40"  # deviation 0x8000: naive local time
    active = by_obis["1-0:1.7.0*255"]
    assert (active.value, active.unit, active.scaler) == (1122, "W", 0)
    assert by_obis["1-0:3.7.0*255"].unit == "var"
    current = by_obis["1-0:31.7.0*255"]
    assert (current.unit, current.scaler) == ("A", -1)
    voltage = by_obis["1-0:32.7.0*255"]
    assert voltage.value == Decimal("230.7")
    assert voltage.unit == "V"


def test_flat_structure_after_list_version() -> None:
    body = Data(
        DataType.STRUCTURE,
        (
            Data(DataType.VISIBLE_STRING, "Kamstrup_V0001"),
            _obis("1-1:0.2.0.255"),
            Data(DataType.VISIBLE_STRING, "5706567196382485"),
            _obis("1-1:1.7.0.255"),
            Data(DataType.DOUBLE_LONG_UNSIGNED, 1512),
            _scaler_unit(0, 27),
            _obis("1-1:1.8.0.255"),
            Data(DataType.DOUBLE_LONG_UNSIGNED, 123456789),
            _scaler_unit(-3, 30),
        ),
    )
    readings = extract_readings(body)
    assert [str(r.obis) for r in readings] == [
        "1-1:0.2.0*255",
        "1-1:1.7.0*255",
        "1-1:1.8.0*255",
    ]
    assert readings[0].value == "5706567196382485"
    assert readings[2].value == Decimal("123456.789")
    assert readings[2].unit == "Wh"


def test_gas_volume_with_push_object_list() -> None:
    body = Data(
        DataType.STRUCTURE,
        (
            Data(DataType.OCTET_STRING, bytes.fromhex("07e80b1a0412000000ffc400")),
            Data(DataType.DOUBLE_LONG_UNSIGNED, 1234567),
        ),
    )
    objects = [
        PushObject.parse("0-0:1.0.0*255"),
        PushObject(Obis.parse("7-0:3.0.0*255"), 2, scaler=-3, unit=13),
    ]
    clock, volume = extract_readings(body, objects)
    assert clock.value == "2024-11-26T18:00:00+01:00"
    assert volume == Reading(Obis.parse("7-0:3.0.0"), Decimal("1234.567"), "m³", -3, 13, 2)


def test_unknown_layout_gives_no_readings() -> None:
    # Source: pwitab/dlms-cosem tests/test_xdlms/test_data_notification.py: the body is an
    # octet-string of manufacturer data, no OBIS list.
    (vector,) = by_kind("data_notification_apdu")
    notification = DataNotification.from_bytes(bytes.fromhex(vector["hex"]))
    assert extract_readings(notification.body) == ()


def test_push_object_list_of_the_wrong_length_falls_back() -> None:
    body = decode_data_exact(bytes.fromhex("020206000030390906010001 0800ff".replace(" ", "")))
    assert extract_readings(body, [PushObject.parse("1-0:1.8.0")]) == ()


def test_push_object_parse_with_attribute() -> None:
    assert PushObject.parse("1-0:99.1.0*255:2") == PushObject(Obis.parse("1-0:99.1.0"), 2)
    assert PushObject.parse("1.0.1.8.0.255") == PushObject(Obis.parse("1-0:1.8.0"), 2)


def test_json_numbers_stay_exact() -> None:
    assert json_number(Decimal("230.7")) == 230.7
    assert json_number(Decimal("1000")) == 1000
    assert json_number(Decimal("12345678901234567.891")) == "12345678901234567.891"
