"""Field quirks of push bodies and headers, each from a real capture where one exists.

Captures are files of tests/data/field/ (source and stated values there); a test that
builds its bytes with dlmsd's own encoder says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.cosem.readings import extract_readings
from dlmsd.cosem.shapes import ShapeCache
from dlmsd.decoding import decode_capture
from dlmsd.protocol.apdus.notification import (
    DataNotification,
    decode_descriptor_body,
    well_formed_date_time,
)
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DecodeError, DlmsError
from dlmsd.protocol.push import Envelope, open_decrypted

FIELD = Path(__file__).parent.parent / "data" / "field"
TITLE = bytes.fromhex("4B464D0000000001")


def field_record(path: str) -> dict[str, object]:
    capture = json.loads((FIELD / path).read_text(encoding="utf-8"))
    (record,) = decode_capture(bytes.fromhex(capture["hex"]), lambda _title: None, TITLE)
    return record


@pytest.mark.parametrize(
    ("path", "form", "stamp"),
    [
        # 0C + 12 bytes, hundredths and deviation not specified
        ("kamstrup/amshan-three-phase-hdlc-real-sample.json", "0c", "2022-01-24T18:58:50"),
        # 09 0C + 12 bytes (Kaifa)
        ("kaifa/amshan-no-list2.json", "09", "2020-01-25T13:09:30"),
        # absent: 00
        ("kaifa/amshan-se-list.json", "00", None),
        # deviation -60 (FFC4)
        (
            "iskraemeco/pocki80-am550-wiener-netze-plaintext.json",
            "0c",
            "2021-01-27T16:11:45+01:00",
        ),
        # deviation -120 (FF88)
        (
            "iskraemeco/pocki80-am550-kaernten-netz-plaintext.json",
            "0c",
            "2021-08-01T12:05:50+02:00",
        ),
    ],
)
def test_date_time_forms_of_real_pushes(path: str, form: str, stamp: str | None) -> None:
    capture = json.loads((FIELD / path).read_text(encoding="utf-8"))
    assert form in capture["hex"].lower()
    assert field_record(path)["datetime"] == stamp


def test_kaernten_time_and_date_as_two_octet_strings() -> None:
    record = field_record("iskraemeco/pocki80-am550-kaernten-netz-plaintext.json")
    readings = {r["obis"]: r["value"] for r in record["readings"]}  # type: ignore[attr-defined]
    assert readings["1-0:0.9.1*255"] == "12:05:50"
    assert readings["1-0:0.9.2*255"] == "2021-08-01"
    # The push setup's name is an OBIS code because the layout says so...
    assert readings["0-6:25.9.0*255"] == "0-6:25.9.0*255"
    # ... and the empty customer information strings (09 00) are absent values.
    assert readings["0-0:96.13.0*255"] is None


def test_deviation_unspecified_with_status_ff() -> None:
    # Source: toreamun/amshan tests/test_aidon.py NOTIFICATION_BODY_NO_LIST_3, the clock
    # 07e30c1001073b28ff8000ff: hundredths FF, deviation 0x8000, status FF.
    stamp = CosemDateTime.from_bytes(bytes.fromhex("07e30c1001073b28ff8000ff"))
    moment = stamp.to_datetime()
    assert moment is not None and moment.isoformat() == "2019-12-16T07:59:40"


def test_wildcard_weekday_and_deviation_minus_180() -> None:
    # Synthetic (bytes written here): weekday FF, hundredths FF, deviation -180 (FF4C).
    stamp = CosemDateTime.from_bytes(bytes.fromhex("07e80b1aff0c0000ffff4c00"))
    moment = stamp.to_datetime()
    assert moment is not None and moment.isoformat() == "2024-11-26T12:00:00+03:00"


# --- the dlms-cosem writer quirk: date-time as 01 + 12 bytes ------------------------
# dlms-cosem's DataNotification encoding_conf declares the date-time an OPTIONAL
# attribute of fixed length 12 (dlms_cosem/protocol/xdlms/data_notification.py), so its
# writer puts a presence flag 01 and no octet-string length before the 12 bytes.
FLAGGED = bytes.fromhex("0f000000010107e80b1a0412000000ffc4000600003039")


def test_flagged_date_time_is_accepted_and_re_encodes() -> None:
    notification = DataNotification.from_bytes(FLAGGED)
    assert notification.date_time_flagged and not notification.date_time_tagged
    assert notification.date_time_value == "2024-11-26T18:00:00+01:00"
    assert notification.body == Data.double_long_unsigned(12345)
    assert notification.to_bytes() == FLAGGED


@pytest.mark.parametrize(
    "stamp",
    [
        "07e80d1a0412000000ffc400",  # month 13
        "07e80b200412000000ffc400",  # day 32
        "07e80b1a0418000000ffc400",  # hour 24
        "07e80b1a04120000640ffc40",  # hundredths 100
        "07e80b1a0412000000f00000",  # deviation -4096
    ],
)
def test_flag_before_anything_but_a_date_time_is_refused(stamp: str) -> None:
    with pytest.raises(DecodeError, match="date-time must be"):
        DataNotification.from_bytes(bytes.fromhex("0f0000000101" + stamp + "0600003039"))


def test_other_date_time_markers_stay_refused() -> None:
    with pytest.raises(DecodeError):
        DataNotification.from_bytes(bytes.fromhex("0f000000010207e80b1a0412000000ffc4000600"))


well_formed = st.builds(
    lambda year, month, day, weekday, hour, minute, second, hundredths, deviation, status: (
        year.to_bytes(2, "big")
        + bytes((month, day, weekday, hour, minute, second, hundredths))
        + deviation.to_bytes(2, "big", signed=True)
        + bytes((status,))
    ),
    st.integers(0, 0xFFFF),
    st.integers(1, 12) | st.sampled_from([0xFD, 0xFE, 0xFF]),
    st.integers(1, 31) | st.sampled_from([0xFD, 0xFE, 0xFF]),
    st.integers(1, 7) | st.just(0xFF),
    st.integers(0, 23) | st.just(0xFF),
    st.integers(0, 59) | st.just(0xFF),
    st.integers(0, 59) | st.just(0xFF),
    st.integers(0, 99) | st.just(0xFF),
    st.integers(-720, 720) | st.just(-0x8000),
    st.integers(0, 255),
)


@settings(max_examples=200, deadline=None)
@given(well_formed, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_flagged_pushes_round_trip_and_take_the_shape(raw: bytes, invoke: int, value: int) -> None:
    assert well_formed_date_time(raw)
    body = Data.structure(
        Data.octet_string(bytes.fromhex("0100010800ff")), Data.double_long_unsigned(value)
    )
    notification = DataNotification(invoke, CosemDateTime.from_bytes(raw), body, False, True)
    encoded = notification.to_bytes()
    assert DataNotification.from_bytes(encoded) == notification
    # The compiled shape of a flagged push gives the full path's text.
    envelope = Envelope(encoded, TITLE, None, None, encoded)
    cache = ShapeCache()
    for _ in range(3):
        assert (
            cache.record_json(envelope, encoded) == open_decrypted(envelope, encoded).record_json()
        )
    assert cache.misses == 2 and cache.compiled == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=12))
def test_any_flagged_bytes_decode_or_raise_dlms_errors(raw: bytes) -> None:
    try:
        DataNotification.from_bytes(b"\x0f\x00\x00\x00\x01\x01" + raw + b"\x11\x05")
    except DlmsError:
        assert not well_formed_date_time(raw)


# --- strings: NUL padding, absent values, six printable bytes -----------------------


def test_nul_padded_strings_are_trimmed() -> None:
    # Synthetic (dlmsd's encoder): the tariff text "RATE2" padded to 8 with NULs, as an
    # octet-string and as a visible-string, in a self-describing list.
    body = Data.structure(
        Data.octet_string(bytes.fromhex("0000600e00ff")),
        Data.octet_string(b"RATE2\x00\x00\x00"),
        Data.octet_string(bytes.fromhex("0000600e01ff")),
        Data.visible_string("RATE2\x00\x00\x00"),
    )
    assert [reading.value for reading in extract_readings(body)] == ["RATE2", "RATE2"]


def test_empty_octet_strings_are_absent_values() -> None:
    # Synthetic: M-Bus channel ids of a meter without M-Bus devices (09 00 and 09 01 00).
    body = Data.structure(
        Data.octet_string(bytes.fromhex("0001600100ff")),
        Data.octet_string(b""),
        Data.octet_string(bytes.fromhex("0002600100ff")),
        Data.octet_string(b"\x00"),
    )
    assert [reading.value for reading in extract_readings(body)] == [None, None]


def test_six_printable_bytes_are_not_an_obis_code() -> None:
    # Synthetic: a serial number "160456" (6 bytes) before a value. Read as an OBIS code
    # it would be 49-54:48.52.53.54; it is a value, so the body has no OBIS list.
    flat = Data.structure(Data.octet_string(b"160456"), Data.double_long_unsigned(7))
    assert extract_readings(flat) == ()
    nested = Data.array(Data.structure(Data.octet_string(b"160456"), Data.long_unsigned(7)))
    assert extract_readings(nested) == ()
    # As a value after a real OBIS code it is text.
    listed = Data.structure(
        Data.octet_string(bytes.fromhex("0000600100ff")), Data.octet_string(b"160456")
    )
    (serial,) = extract_readings(listed)
    assert serial.value == "160456"


# --- Sagemcom XT211: untagged descriptors before each value ------------------------
# No public capture found; bytes written here in the layout of the esphome dlms_meter
# parser's "U.ZPA" pattern (F,C,O,A,TV: class id u16, OBIS 6 bytes, attribute i8, then
# one tagged value; esphome/esphome esphome/components/dlms_meter/dlms_parser.cpp).
XT211 = bytes.fromhex(
    "0f00000001"
    "0c07e80b1a0412000000ffc400"
    "0203"
    "0001"
    "0000600100ff"
    "02"
    "0a083132333435363738"  # 0-0:96.1.0 serial number (data)
    "0003"
    "0100010800ff"
    "02"
    "0600003039"  # 1-0:1.8.0 (register)
    "0003"
    "0100200700ff"
    "02"
    "1200e6"  # 1-0:32.7.0
)


def test_xt211_descriptor_body_reads_as_values_under_their_descriptors() -> None:
    notification = DataNotification.from_bytes(XT211)
    assert notification.body_descriptors
    assert notification.to_bytes() == XT211
    envelope = Envelope(XT211, TITLE, None, None, XT211)
    push = open_decrypted(envelope, XT211)
    assert [(str(r.obis), r.attribute, r.value) for r in push.readings] == [
        ("0-0:96.1.0*255", 2, "12345678"),
        ("1-0:1.8.0*255", 2, 12345),
        ("1-0:32.7.0*255", 2, 230),
    ]
    # The fast path leaves it to the full path (it is not one A-XDR value) and agrees.
    cache = ShapeCache()
    for _ in range(3):
        assert cache.record_json(envelope, XT211) == push.record_json()
    assert cache.compiled == 0 and cache.failed == 0


XT211_WRAPPED = "sagemcom/dlmsparser-raw-xt211.json"


def test_xt211_wrapped_descriptor_body_from_a_real_capture() -> None:
    """structure{enum, array{structure(2){untagged descriptor, value}}}: real XT211."""
    capture = json.loads((FIELD / XT211_WRAPPED).read_text(encoding="utf-8"))
    apdu = bytes.fromhex(capture["hex"])
    notification = DataNotification.from_bytes(apdu)
    assert notification.body_descriptors
    assert notification.to_bytes() == apdu
    envelope = Envelope(apdu, TITLE, None, None, apdu)
    push = open_decrypted(envelope, apdu)
    readings = [(str(r.obis), r.attribute, r.value) for r in push.readings]
    assert len(readings) == 22  # the enum before the array is no reading
    assert readings[0] == ("0-0:96.1.1*255", 2, "5100005149")
    assert readings[-1] == ("1-0:2.8.0*255", 2, 52)
    cache = ShapeCache()
    for _ in range(3):
        assert cache.record_json(envelope, apdu) == push.record_json()
    assert cache.compiled == 0 and cache.failed == 0


def test_xt211_wrapped_body_shares_one_value_budget() -> None:
    capture = json.loads((FIELD / XT211_WRAPPED).read_text(encoding="utf-8"))
    apdu = bytes.fromhex(capture["hex"])
    # As charged: 1 for the body, 3 for the wrapping, per entry 5 and its value (1 here).
    needed = 1 + 3 + 22 * 6
    assert decode_descriptor_body(apdu, 6, needed) is not None
    assert decode_descriptor_body(apdu, 6, needed - 1) is None
    with pytest.raises(DlmsError):
        DataNotification.from_bytes(apdu, max_values=needed - 1)


def test_a_wrapped_body_that_does_not_read_to_its_end_is_refused() -> None:
    capture = json.loads((FIELD / XT211_WRAPPED).read_text(encoding="utf-8"))
    apdu = bytes.fromhex(capture["hex"])
    for broken in (apdu[:-1], apdu + b"\x00", apdu[:12] + b"\x02\x03" + apdu[14:]):
        with pytest.raises(DlmsError):
            DataNotification.from_bytes(broken)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=48))
def test_arbitrary_wrapped_bodies_give_a_notification_or_a_dlms_error(tail: bytes) -> None:
    head = bytes.fromhex("0f8000f1d500020216010102")
    try:
        notification = DataNotification.from_bytes(head + tail)
    except DlmsError:
        return
    assert notification.to_bytes() == head + tail


def test_a_body_that_is_neither_form_is_refused_as_before() -> None:
    with pytest.raises(DlmsError):
        DataNotification.from_bytes(XT211[:-1])
    with pytest.raises(DlmsError):
        DataNotification.from_bytes(XT211 + b"\x00")
    # Class id 0 and attribute 0 are no descriptors.
    with pytest.raises(DlmsError):
        DataNotification.from_bytes(XT211.replace(bytes.fromhex("0003"), b"\x00\x00", 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=48))
def test_arbitrary_bodies_give_a_notification_or_a_dlms_error(tail: bytes) -> None:
    try:
        notification = DataNotification.from_bytes(XT211[:18] + tail)
    except DlmsError:
        return
    # Whatever was accepted re-encodes to the very bytes.
    assert notification.to_bytes() == XT211[:18] + tail
