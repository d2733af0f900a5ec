"""The public decode path (`decode_capture`, `dlmsd decode`) takes the daemon's compiled
shapes for a layout seen before, and gives exactly the full path's records and errors.

Frames here are synthetic, built with dlmsd's own encoders: a clock entry and N
``{OBIS, value, {scaler, unit}}`` registers in general-glo-ciphering, as HAN pushes are.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlmsd.decoding
from dlmsd.cli import main
from dlmsd.cosem.shapes import ShapeCache
from dlmsd.decoding import decode_capture
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.ciphered import GeneralGloCiphering
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.push import open_decrypted, peel
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.service.simulator import hdlc_frames

TITLE = bytes.fromhex("4C475A0000BC614E")
CIPHER = Suite0Cipher(bytes(range(16)), bytes(range(16, 32)))
CLOCK = bytes.fromhex("0000010000ff")
STAMP = bytes.fromhex("07e90301060c000000ff8880")
# (value constructor, scaler, unit) per register, cycled: energy, power, voltage, current.
KINDS = [
    (Data.double_long_unsigned, 0, 30),
    (Data.double_long_unsigned, 0, 27),
    (Data.long_unsigned, -1, 35),
    (Data.long, -2, 33),
]


@pytest.fixture(autouse=True)
def records(monkeypatch: pytest.MonkeyPatch) -> ShapeCache:
    """A fresh process-wide cache per test (compiles are spaced over all layouts)."""
    cache = ShapeCache(records=True)
    monkeypatch.setattr(dlmsd.decoding, "RECORDS", cache)
    return cache


def push(values: list[int], counter: int = 1) -> bytes:
    entries = [Data.structure(Data.octet_string(CLOCK), Data.octet_string(STAMP))]
    for index, value in enumerate(values):
        make, scaler, unit = KINDS[index % len(KINDS)]
        entries.append(
            Data.structure(
                Data.octet_string(bytes((1, 0, 1 + index % 90, 8, index // 90, 255))),
                make(value),
                Data.structure(Data.integer(scaler), Data.enum(unit)),
            )
        )
    plaintext = DataNotification(counter, None, Data.array(*entries)).to_bytes()
    payload = CIPHER.encrypt(TITLE, 0x30, counter, plaintext)
    return GeneralGloCiphering(TITLE, 0x30, counter, payload).to_bytes()


def full_records(apdu: bytes, framing: str) -> dict[str, object]:
    envelope = peel(apdu)
    record = open_decrypted(envelope, envelope.open(CIPHER)).to_record()
    return {**record, "framing": framing}


def decode(capture: bytes) -> list[dict[str, object]]:
    return list(decode_capture(capture, lambda _title: CIPHER))


def values_for(count: int, seed: int) -> list[int]:
    ranges = [(0, 2**32 - 1), (0, 2**32 - 1), (0, 2**16 - 1), (-(2**15), 2**15 - 1)]
    out = []
    for index in range(count):
        low, high = ranges[index % 4]
        out.append(low + (seed * 7919 + index * 104729) % (high - low + 1))
    return out


@pytest.mark.parametrize("registers", [12, 90, 200])
def test_repeated_layouts_take_a_shape_and_give_the_full_records(
    registers: int, records: ShapeCache
) -> None:
    # 200 registers is a 4 kB plaintext: shapes have no size limit any more.
    for counter in range(1, 6):
        apdu = push(values_for(registers, counter), counter)
        assert decode(apdu) == [full_records(apdu, "apdu")]
    assert records.misses == 2  # the layout's first two pushes
    assert records.compiled == 1 and records.refused == 0 and records.failed == 0


def test_hdlc_segmented_pushes_too(records: ShapeCache) -> None:
    for counter in range(10, 14):
        apdu = push(values_for(12, counter), counter)
        assert decode(hdlc_frames(apdu, 128)) == [full_records(apdu, "hdlc")]
    assert records.misses == 2


def test_the_cli_prints_the_same_records(
    records: ShapeCache, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = ["--ek", bytes(range(16)).hex(), "--ak", bytes(range(16, 32)).hex()]
    for counter in (1, 2, 3):
        apdu = push(values_for(12, counter), counter)
        assert main(["decode", apdu.hex(), *keys]) == 0
        assert json.loads(capsys.readouterr().out) == full_records(apdu, "apdu")
    assert records.misses == 2


def test_a_forged_push_of_a_known_layout_is_refused() -> None:
    good = [push(values_for(12, counter), counter) for counter in (20, 21, 22)]
    for apdu in good:
        decode(apdu)
    forged = good[-1][:-1] + bytes((good[-1][-1] ^ 1,))
    with pytest.raises(DlmsError):
        decode(forged)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3))
def test_random_register_counts_and_values(registers: int, seeds: list[int]) -> None:
    # The fixture's cache is shared by the examples: layouts come and go, as in a file.
    for counter, seed in enumerate(seeds, start=1):
        apdu = push(values_for(registers, seed), counter)
        assert decode(apdu) == [full_records(apdu, "apdu")]


def test_a_4_kb_push_is_compiled() -> None:
    cache = ShapeCache(records=True)
    pushes = [push(values_for(200, seed), seed) for seed in (1, 2, 3, 4)]
    plaintexts: list[Any] = [(peel(apdu), peel(apdu).open(CIPHER)) for apdu in pushes]
    assert len(plaintexts[0][1]) > 4000
    for envelope, plaintext in plaintexts:
        cache.record(envelope, plaintext)
        cache.record_json(envelope, plaintext)
    assert cache.compiled == 1 and cache.misses == 2 and cache.refused == 0
