"""OBIS codes: bytes, text forms, ordering, errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.errors import DecodeError, EncodeError
from dlmsd.protocol.obis import Obis
from tests.vectors import published

VECTORS = published()


@pytest.mark.parametrize(
    "vector",
    [
        pytest.param(v, id=f"obis_bytes@{v['source']}")
        for v in VECTORS
        if v["kind"] == "obis_bytes"
    ],
)
def test_obis_bytes_vector(vector: dict[str, Any]) -> None:
    # tests/test_cosem.py:L12 (dlms-cosem): 00002b0100ff = 0.0.43.1.0.255
    raw = bytes.fromhex(vector["hex"])
    obis = Obis.from_bytes(raw)
    assert obis.dotted == vector["expected"]["asserted"]["obis"]
    assert obis == Obis(0, 0, 43, 1, 0, 255)
    assert obis.to_bytes() == raw
    assert str(obis) == "0-0:43.1.0*255"


@pytest.mark.parametrize(
    "text",
    [
        "1-0:1.8.0*255",
        "1-0:1.8.0.255",
        "1-0:1.8.0&255",
        "1-0:1.8.0",
        "1.0.1.8.0.255",
        "1.0.1.8.0",
        "  1-0:1.8.0*255\n",
        "001-000:001.008.000*255",
    ],
)
def test_parse_forms(text: str) -> None:
    assert Obis.parse(text) == Obis(1, 0, 1, 8, 0, 255)


def test_f_defaults_to_255() -> None:
    assert Obis(1, 0, 1, 8, 0).f == 255
    assert Obis.parse("0-0:96.1.0").to_bytes() == bytes.fromhex("0000600100ff")
    assert Obis.parse("1-0:1.8.1*0").f == 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1-0:1.8",
        "1.0.1.8",
        "1:0-1.8.0*255",
        "1-0:1.8.0*256",
        "256-0:1.8.0",
        "1-0:1.8.0*2555",
        "1-0:1.8.0*",
        "a-b:c.d.e*f",
        "1-0:1.8.0*255 extra",
        "1.0.1.8.0.255.1",
        "\u0661-0:1.8.0",  # Arabic-Indic digit one: int() would accept it
        "1-0:1.8.0*255\n1",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DecodeError) as info:
        Obis.parse(text)
    assert "OBIS" in info.value.reason


@pytest.mark.parametrize("size", [0, 5, 7])
def test_from_bytes_wrong_length(size: int) -> None:
    with pytest.raises(DecodeError):
        Obis.from_bytes(bytes(size))


def test_to_bytes_out_of_range() -> None:
    with pytest.raises(EncodeError):
        Obis(256, 0, 1, 8, 0).to_bytes()
    with pytest.raises(EncodeError):
        Obis(-1, 0, 1, 8, 0).to_bytes()


def test_ordering_and_hashing() -> None:
    codes = [Obis.parse("1-0:2.8.0"), Obis.parse("0-0:1.0.0"), Obis.parse("1-0:1.8.0")]
    assert sorted(codes) == sorted(codes, key=Obis.to_bytes)
    assert len({Obis.parse("1-0:1.8.0"), Obis.parse("1.0.1.8.0.255")}) == 1
    with pytest.raises(AttributeError):
        codes[0].a = 2  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=6, max_size=6))
def test_roundtrips(raw: bytes) -> None:
    obis = Obis.from_bytes(raw)
    assert obis.to_bytes() == raw
    assert Obis.parse(str(obis)) == obis
    assert Obis.parse(obis.dotted) == obis


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789-:.*&  x", max_size=24))
def test_parse_only_raises_decode_error(text: str) -> None:
    try:
        obis = Obis.parse(text)
    except DecodeError:
        return
    assert len(obis.to_bytes()) == 6
