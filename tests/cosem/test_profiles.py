"""Built-in push profiles, shape detection and implied scales, on real captures.

Every capture is a file of tests/data/field/ (source, hex and the values the source
states); the profile and keys come from the file as a key store would give them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dlmsd.cosem import profiles
from dlmsd.cosem.profiles import PROFILES, Profile, profile_named
from dlmsd.cosem.readings import (
    LayoutMismatch,
    PushObject,
    extract_readings,
    extract_readings_checked,
    plan_readings,
)
from dlmsd.cosem.shapes import ShapeCache
from dlmsd.decoding import decode_capture
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import Data, DataType, decode_data_exact
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.push import Envelope, open_decrypted
from dlmsd.protocol.security import Suite0Cipher

FIELD = Path(__file__).parent.parent / "data" / "field"
# The captures this module's layouts were built on; the whole corpus (with each
# capture's own expectations and the features it needs) runs in tests/field.
PROFILE_CAPTURES = [
    FIELD / name
    for name in (
        "aidon/amshan-no-list2.json",
        "aidon/amshan-no-list3.json",
        "iskraemeco/pocki80-am550-kaernten-netz-plaintext.json",
        "iskraemeco/pocki80-am550-wiener-netze-plaintext.json",
        "iskraemeco/shrdzm-am550-carinthia-encrypted.json",
        "kaifa/amshan-no-list1.json",
        "kaifa/amshan-no-list2.json",
        "kaifa/amshan-no-list3.json",
        "kaifa/amshan-se-list.json",
        "kamstrup/amshan-no-list1-single-phase-real-sample.json",
        "kamstrup/amshan-no-list2-single-phase-real-sample.json",
        "kamstrup/amshan-three-phase-hdlc-real-sample.json",
        "siemens/shrdzm-im350-carinthia-encrypted.json",
        "siemens/shrdzm-im350-wels-encrypted.json",
    )
]


def load(path: Path) -> dict[str, Any]:
    capture: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return capture


def decode_file(capture: dict[str, Any]) -> list[dict[str, Any]]:
    keys = capture["keys"]
    cipher = None
    if keys is not None:
        ek = bytes.fromhex(keys["ek"])
        ak = bytes.fromhex(keys["ak"]) if keys["ak"] else ek
        cipher = Suite0Cipher(ek, ak, allow_encryption_only=True)
    profile = profile_named(capture["profile"]) if capture["profile"] else None
    return list(
        decode_capture(
            bytes.fromhex(capture["hex"]),
            lambda _title: cipher,
            bytes.fromhex("4B464D0000000001"),  # plaintext pushes need a sender to attribute
            lambda _title: profile,
        )
    )


def same_number(stated: str, value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return False
    try:
        return Decimal(stated) == Decimal(str(value))
    except ArithmeticError:
        return str(value) == stated


def obis_short(text: str) -> str:
    return text.removesuffix("*255")


@pytest.mark.parametrize("path", PROFILE_CAPTURES, ids=lambda path: path.stem)
def test_field_capture_gives_the_stated_values(path: Path) -> None:
    capture = load(path)
    (record,) = decode_file(capture)
    expected = capture["expected"]
    if expected["datetime"] is not None:
        assert record["datetime"] == expected["datetime"]
    readings = {obis_short(reading["obis"]): reading for reading in record["readings"]}
    for stated in expected["readings"]:
        if stated["obis"] == "0-0:0.0.0":  # no OBIS code in the push: the value is in the body
            assert stated["value"].encode().hex() in json.dumps(record["body"]), stated
            continue
        reading = readings[stated["obis"]]
        value = reading["value"]
        assert same_number(stated["value"], value) or value == stated["value"], stated
        if stated["unit"] is not None:  # checked where the source states one
            assert reading["unit"] == stated["unit"], stated
    if capture["keys"] is not None:
        # Encryption-only frames carry no tag: a decoded list is the proof of the key.
        assert record["security"] == "enc" and record["readings"]


def kaifa_body(name: str) -> Data:
    notification = DataNotification.from_bytes(
        bytes.fromhex(load(FIELD / "kaifa" / f"{name}.json")["hex"])[3:]
    )
    return notification.body


def test_kaifa_list3_is_detected_and_scaled() -> None:
    readings = extract_readings(kaifa_body("amshan-no-list3"))
    assert len(readings) == 18
    by_obis = {str(reading.obis): reading for reading in readings}
    assert by_obis["1-0:0.2.129*255"].value == "KFM_001"
    assert by_obis["1-0:31.7.0*255"].value == Decimal("14.571")
    assert by_obis["1-0:31.7.0*255"].unit == "A"
    assert by_obis["1-0:32.7.0*255"].value == Decimal("219.3")


def test_kaifa_list1_is_too_generic_to_detect_but_reads_when_selected() -> None:
    body = kaifa_body("amshan-no-list1")
    assert profiles.detect(body.value) is None  # type: ignore[arg-type]
    assert extract_readings(body) == ()
    (power,) = extract_readings(body, profile_named("kaifa-ma304-list1"))
    assert (str(power.obis), power.value, power.unit) == ("1-0:1.7.0*255", 5852, "W")


def test_detection_is_by_shape_only_and_refuses_ambiguity(monkeypatch: pytest.MonkeyPatch) -> None:
    items = kaifa_body("amshan-no-list2").value
    assert isinstance(items, tuple)
    found = profiles.detect(items)
    assert found is not None and found.name == "kaifa-ma304-list2-3p"
    # Other values of the same types: the same profile.
    other = tuple(
        Data(item.type, 0) if item.type is DataType.DOUBLE_LONG_UNSIGNED else item
        for item in items
    )
    assert profiles.detect(other) is found
    # A second profile with the same shape: neither is guessed.
    twin = Profile("twin", "x", "x", "x", "synthetic", found.elements)
    monkeypatch.setitem(profiles._BY_COUNT, len(items), (found, twin))
    assert profiles.detect(items) is None
    assert extract_readings(Data.structure(*items)) == ()


def test_every_profile_has_a_source_and_a_unique_name() -> None:
    names = [profile.name for profile in PROFILES]
    assert len(names) == len(set(names))
    for profile in PROFILES:
        assert profile.source.startswith("https://")
        assert all(element.types for element in profile.elements)
    for entry in profiles.IMPLIED_SCALES:
        assert entry.source.startswith("https://")


def test_kamstrup_ct_meters_take_milliamperes() -> None:
    # Synthetic: the Kamstrup list of the HDLC real sample with a CT meter type (685...),
    # built with dlmsd's own encoder; amshan han/kamstrup.py scales those currents -3.
    def body(meter_type: bytes) -> Data:
        return Data.structure(
            Data.visible_string("Kamstrup_V0001"),
            Data.octet_string(bytes.fromhex("0101600101ff")),
            Data(DataType.VISIBLE_STRING, meter_type.decode()),
            Data.octet_string(bytes.fromhex("01011f0700ff")),
            Data.double_long_unsigned(1234),
        )

    (_type, standard) = extract_readings(body(b"6841138BN245101090"))
    (_type, ct) = extract_readings(body(b"6851138BN245101090"))
    assert standard.value == Decimal("12.34") and ct.value == Decimal("1.234")


def test_a_list_without_a_known_list_id_gets_no_implied_scale() -> None:
    body = Data.structure(
        Data.visible_string("Other_V0001"),
        Data.octet_string(bytes.fromhex("01011f0700ff")),
        Data.double_long_unsigned(1234),
    )
    (current,) = extract_readings(body)
    assert current.value == 1234 and current.scaler is None


def test_a_carried_scaler_unit_wins_over_an_implied_one() -> None:
    body = Data.structure(
        Data.visible_string("Kamstrup_V0001"),
        Data.octet_string(bytes.fromhex("01011f0700ff")),
        Data.double_long_unsigned(1234),
        Data.structure(Data.integer(-1), Data.enum(33)),
    )
    (current,) = extract_readings(body)
    assert current.value == Decimal("123.4")


# --- the configured layout and self-describing bodies ------------------------------

AIDON_BODY = (
    # Source: toreamun/amshan tests/test_aidon.py NOTIFICATION_BODY_NO_LIST_1: one register
    # {OBIS, value, {scaler, unit}} in an array.
    "0101020309060100010700ff060000011802020f00161b"
)


def test_self_describing_body_wins_over_a_configured_push_object_list() -> None:
    # The bug: a push object list of N entries was applied by position to any body with
    # N children, so this push was written with "value": null under the list's OBIS.
    body = decode_data_exact(bytes.fromhex(AIDON_BODY))
    configured = [PushObject.parse("0-0:1.0.0")]
    readings, mismatch = extract_readings_checked(body, configured)
    assert mismatch is None
    (power,) = readings
    assert (str(power.obis), power.value, power.unit) == ("1-0:1.7.0*255", 280, "W")


def test_self_describing_body_wins_over_a_configured_profile() -> None:
    body = decode_data_exact(bytes.fromhex(AIDON_BODY))
    (power,) = extract_readings(body, profile_named("kaifa-ma304-list1"))
    assert str(power.obis) == "1-0:1.7.0*255"


def test_a_push_object_list_that_does_not_fit_is_a_mismatch_not_nulls() -> None:
    body = kaifa_body("amshan-no-list2")
    readings, mismatch = extract_readings_checked(body, [PushObject.parse("1-0:1.8.0")])
    assert readings == ()
    assert mismatch == "push object list has 1 entries, the body 13 elements"
    with pytest.raises(LayoutMismatch):
        plan_readings(body, [PushObject.parse("1-0:1.8.0")])


def test_a_profile_that_does_not_fit_is_a_mismatch() -> None:
    body = kaifa_body("amshan-no-list2")
    readings, mismatch = extract_readings_checked(body, profile_named("kaifa-ma304-list3-3p"))
    assert readings == ()
    assert mismatch is not None and mismatch.startswith("profile kaifa-ma304-list3-3p has 18")


def test_a_configured_profile_overrides_detection() -> None:
    # Kärnten Netz list read with the Wels profile: 12 elements against 10, a mismatch.
    capture = load(FIELD / "iskraemeco" / "pocki80-am550-kaernten-netz-plaintext.json")
    body = DataNotification.from_bytes(bytes.fromhex(capture["hex"])).body
    assert len(extract_readings(body)) == 12
    assert extract_readings_checked(body, profile_named("siemens-im350-wels"))[1] is not None


# --- push object list as element 1 -------------------------------------------------


def capture_object(class_id: int, obis: str, attribute: int) -> Data:
    return Data.structure(
        Data.long_unsigned(class_id),
        Data.octet_string(Obis.parse(obis).to_bytes()),
        Data.integer(attribute),
        Data.long_unsigned(0),
    )


def test_push_object_list_as_element_one_starting_with_the_push_setup() -> None:
    # Synthetic (dlmsd's own encoder), in the layout L+G and Iskra use: element 1 is the
    # push setup's object list, which is also the push setup's own value.
    objects = Data.array(
        capture_object(40, "0-0:25.9.0", 2),
        capture_object(8, "0-0:1.0.0", 2),
        capture_object(3, "1-0:1.8.0", 2),
    )
    stamp = Data.octet_string(bytes.fromhex("07e80b1a0412000000ffc400"))
    body = Data.structure(objects, stamp, Data.double_long_unsigned(12345))
    clock, energy = extract_readings(body)
    assert str(clock.obis) == "0-0:1.0.0*255" and clock.value == "2024-11-26T18:00:00+01:00"
    assert (str(energy.obis), energy.value) == ("1-0:1.8.0*255", 12345)


def test_push_object_list_as_element_one_then_the_values() -> None:
    objects = Data.array(capture_object(3, "1-0:1.8.0", 2), capture_object(3, "1-0:2.8.0", 2))
    body = Data.structure(objects, Data.double_long_unsigned(1), Data.double_long_unsigned(2))
    assert [(str(r.obis), r.value) for r in extract_readings(body)] == [
        ("1-0:1.8.0*255", 1),
        ("1-0:2.8.0*255", 2),
    ]
    # One value too many for the list: not this layout, no readings.
    longer = Data.structure(objects, *(Data.double_long_unsigned(n) for n in range(3)))
    assert extract_readings(longer) == ()


def test_lg_push_with_its_own_list_gets_the_scales_its_source_states() -> None:
    # A real L+G E450 push (Swiss VSE configuration) from scs/smartmeter-datacollector,
    # as tests/data/field/landis-gyr/e450-scs-vse-2026.json holds it: the push object list
    # as element 1 (first the push setup itself), values without scaler-unit.
    capture = load(FIELD / "landis-gyr" / "e450-scs-vse-2026.json")
    (record,) = decode_file(capture)
    readings = {obis_short(reading["obis"]): reading for reading in record["readings"]}
    for stated in capture["expected"]["readings"]:
        reading = readings[stated["obis"]]
        assert same_number(stated["value"], reading["value"]) or (
            reading["value"] == stated["value"]
        ), stated
        assert reading["unit"] == stated["unit"], stated
    # The push setup's attribute 1 (its logical name) reads as the OBIS code it is.
    assert readings["0-8:25.9.0"]["value"] == "0-8:25.9.0*255"
    assert readings["0-8:25.9.0"]["attribute"] == 1


E360 = FIELD / "landis-gyr/smdc-e360-vse2026.json"


def reading_of(records: list[dict[str, Any]], obis: str) -> tuple[object, object]:
    (record,) = records
    (found,) = [r for r in record["readings"] if r["obis"] == obis]
    return found["value"], found.get("unit")


def test_e360_voltages_are_tenths_only_when_the_meter_selects_it() -> None:
    capture = load(E360)
    assert capture["profile"] == "lg-e360-push-object-list"
    # Selected (as the key store would): 0.1 V, as the source states for this push.
    selected = decode_file(capture)
    assert reading_of(selected, "1-0:32.7.0*255") == (235.7, "V")
    assert reading_of(selected, "1-0:31.7.0*255") == (0.06, "A")
    assert reading_of(selected, "1-0:1.7.0*255") == (11, "W")
    # Not selected: the push names itself LGZ... like an E450 (volts); no guess.
    plain = decode_file({**capture, "profile": None})
    assert reading_of(plain, "1-0:32.7.0*255") == (2357, "V")
    assert reading_of(plain, "1-0:31.7.0*255") == (0.06, "A")


def test_a_list_scales_profile_is_never_detected_and_does_not_fit_a_bare_body() -> None:
    profile = profile_named("lg-e360-push-object-list")
    assert profile is not None and profile.list_scales is not None and not profile.detect
    assert profile and len(profile) == 0  # selected means configured, though it has no elements
    bare = Data.structure(Data.long_unsigned(2357), Data.long_unsigned(6))
    readings, mismatch = extract_readings_checked(bare, profile)
    assert readings == () and mismatch is not None
    assert mismatch.startswith(f"profile {profile.name} is for pushes that carry their push")


def test_a_list_scales_profile_takes_the_fast_path_with_the_same_text() -> None:
    raw = bytes.fromhex(load(E360)["hex"])
    apdu = raw[raw.index(bytes.fromhex("e6e700")) + 3 : -3]  # one HDLC frame: LLC to FCS
    profile = profile_named("lg-e360-push-object-list")
    envelope = Envelope(apdu, bytes.fromhex("4B464D0000000001"), None, None, apdu)
    full = open_decrypted(envelope, apdu, profile).record_json()
    assert '"value":235.7,"unit":"V"' in full
    cache = ShapeCache()
    for _ in range(3):
        assert cache.record_json(envelope, apdu, profile) == full
    assert cache.compiled == 1 and cache.failed == 0 and cache.refused == 0
    # The scales come from the selection, not the cached shape of another layout.
    assert '"value":2357,"unit":"V"' in cache.record_json(envelope, apdu)


def test_an_e450_list_naming_its_serial_takes_l_g_scales_only_when_selected() -> None:
    capture = load(FIELD / "landis-gyr/amsreader-gh740-gbt.json")
    assert capture["profile"] == "lg-e450-push-object-list"
    selected = decode_file(capture)
    assert reading_of(selected, "1-0:1.7.0*255") == (362, "W")
    assert reading_of(selected, "1-0:31.7.0*255") == (0.51, "A")
    assert reading_of(selected, "1-1:5.8.0*255") == (34671, None)  # no scale documented
    # Not selected: the serial (0-0:96.1.0) names no make, so no units are implied.
    plain = decode_file({**capture, "profile": None})
    assert reading_of(plain, "1-0:1.7.0*255") == (362, None)
