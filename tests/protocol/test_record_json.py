"""The push record written straight to JSON text must be the text the dict path makes.

`data_json_text`, `readings_json_text` and `build_record_json` replace
``encode_record(build_record(...))`` on the daemon's hot path; these tests pin
them to it, on the published push vectors, simulator pushes and hypothesis trees.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.cosem.readings import Reading, extract_readings, readings_json_text
from dlmsd.protocol.axdr import Data, DataType, data_json_text, decode_data_exact
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.push import Envelope, build_record, build_record_json, decode_push, peel
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.wrapper import decode_datagram
from dlmsd.service import simulator
from tests.protocol.test_axdr import any_data
from tests.vectors import by_kind, vector_id

PUSH_KINDS = (
    "udp_wrapper+general_glo_ciphering_datanotification",
    "general_glo_ciphering_apdu",
)


def dict_path(value: object) -> str:
    """What the record used to be: the dict tree through a compact encoder."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cipher(keys: dict[str, Any]) -> Suite0Cipher:
    return Suite0Cipher(
        bytes.fromhex(keys["encryption_key"]), bytes.fromhex(keys["authentication_key"])
    )


def _apdu(vector: dict[str, Any]) -> bytes:
    raw = bytes.fromhex(vector["hex"])
    if vector["kind"].startswith("udp_wrapper"):
        return decode_datagram(raw).apdu
    return raw


@pytest.mark.parametrize("vector", by_kind(*PUSH_KINDS), ids=vector_id)
def test_published_pushes_record_text_matches_dict_path(vector: dict[str, Any]) -> None:
    # Sources: tests/test_udp_message.py:L6..L9 and tests/test_general_global_cipher.py:L7
    # (dlms-cosem test suite), keys as published.
    cipher = _cipher(vector["keys"])
    push = decode_push(_apdu(vector), lambda _title: cipher)
    record = build_record(push.envelope, push.notification, push.readings)
    text = build_record_json(push.envelope, push.notification, push.readings)
    assert text == dict_path(record)
    assert json.loads(text)["invocation_counter"] == vector["keys"]["invocation_counter"]
    assert push.record_json(',"extra":1') == dict_path({**record, "extra": 1})


def test_published_plaintext_notification_record_text() -> None:
    # Source: tests/test_xdlms/test_data_notification.py:L9 (no date-time, octet-string body).
    (vector,) = by_kind("data_notification_apdu")
    push = decode_push(bytes.fromhex(vector["hex"]), lambda _title: None)
    assert push.notification.date_time is None
    text = push.record_json()
    assert text == dict_path(push.to_record())
    assert json.loads(text)["system_title"] is None


def test_published_han_push_body_text() -> None:
    # Source: tests/test_hdlc/test_hdlc.py:L247, the 27-item Norwegian HAN push (flat layout).
    (vector,) = by_kind("hdlc_ui_frame_data_notification")
    apdu = bytes.fromhex(vector["hex"])[12:-3]
    push = decode_push(apdu, lambda _title: None, system_title=b"HAN00001")
    assert push.readings
    assert push.record_json() == dict_path(push.to_record())


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_simulator_pushes_record_text(index: int) -> None:
    meter = simulator.make_meter(index)
    apdu = simulator.build_push(meter, 1000 + index, datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC))
    push = decode_push(apdu, lambda _title: meter.cipher)
    assert len(push.readings) >= 3
    assert push.record_json() == dict_path(push.to_record())


def test_readings_text_covers_every_value_kind() -> None:
    obis = Obis(1, 0, 1, 8, 0, 255)
    readings = [
        Reading(obis, 5),
        Reading(obis, True),
        Reading(obis, None),
        Reading(obis, 1.5),
        Reading(obis, float("nan")),
        Reading(obis, Decimal("12.5"), "kWh", -1, 30),
        Reading(obis, Decimal("0.1"), "m³", -1, 13),
        Reading(obis, Decimal("1E+3"), "W", 3, 27),
        Reading(obis, Decimal("0.30000000000000000001"), None, -20),
        Reading(obis, 'quote " and \u2028 and zähler', None, None, None, 3),
    ]
    assert readings_json_text(readings) == dict_path([r.to_json() for r in readings])
    assert readings_json_text([]) == "[]"


def test_body_text_of_rare_types() -> None:
    parts = (
        "0206",
        "0301",  # boolean
        "0302",  # boolean with a byte other than 0/1
        "0a03616263",  # visible-string
        "1741200000",  # float32 10.0
        "19ffffffffffffffffff800000",  # date-time, nothing specified
        "0403a0",  # bit-string
    )
    body = decode_data_exact(bytes.fromhex("".join(parts)))
    assert data_json_text(body) == dict_path(body.to_json())


@settings(max_examples=300, deadline=None)
@given(any_data)
def test_body_text_equals_dict_path(item: Data) -> None:
    assert data_json_text(item) == dict_path(item.to_json())


entries = st.builds(
    lambda obis, value, scaler, unit: Data.structure(
        Data.octet_string(obis), value, Data.structure(Data.integer(scaler), Data.enum(unit))
    ),
    st.binary(min_size=6, max_size=6),
    any_data,
    st.integers(-10, 10),
    st.integers(0, 255),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(entries, any_data), max_size=6), st.booleans())
def test_readings_and_record_text_equal_dict_path(items: list[Data], as_array: bool) -> None:
    body = Data(DataType.ARRAY if as_array else DataType.STRUCTURE, tuple(items))
    readings = extract_readings(body)
    assert readings_json_text(readings) == dict_path([r.to_json() for r in readings])
    envelope = peel(b"\x0f\x00\x00\x00\x01\x00" + body.to_bytes(), b"ABCDEFGH")
    assert isinstance(envelope, Envelope)
    push = decode_push(envelope.apdu, lambda _title: None, system_title=b"ABCDEFGH")
    assert push.record_json() == dict_path(push.to_record())
