"""The harnesses' cost check: an input may cost time and memory in proportion to its size.

The crash-only contract let through the amplification push of issue 13 (a 4 KB
compact array of null-data members that took 14 s and 1.19 GB). `fuzz.common.guarded`
now fails such an input; the decoder's value budget keeps real inputs under it.
"""

from __future__ import annotations

import importlib
import tracemalloc

import pytest

from dlmsd.protocol import axdr
from fuzz.__main__ import HARNESSES
from fuzz.common import MEMORY_FLOOR, MEMORY_PER_BYTE, CostlyInput, SlowInput, guarded
from tests.protocol.test_axdr_limits import amplifier


def test_an_input_that_takes_far_more_memory_than_its_size_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Exact per input (tracemalloc): the default peak-RSS measure charges only what rises
    # above the process's earlier peak, which a long test session has long set high.
    monkeypatch.setenv("DLMSD_FUZZ_TRACE_MEMORY", "1")
    tracing = tracemalloc.is_tracing()

    def amplify(data: bytes) -> None:
        # What decoding millions of values does: far more memory than bytes of input.
        held = b"\x01" * (MEMORY_FLOOR + MEMORY_PER_BYTE * len(data) * 4)
        assert held

    try:
        with pytest.raises(CostlyInput, match="allocations peaked"):
            guarded(amplify, ())(bytes(1000))
        guarded(lambda data: None, ())(bytes(1000))  # a cheap input passes
    finally:
        if not tracing:
            tracemalloc.stop()


def test_an_input_that_takes_far_longer_than_its_size_allows_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fuzz.common.TIME_FLOOR", 0.01)
    monkeypatch.setattr("fuzz.common.TIME_PER_BYTE", 1e-6)

    def spin(data: bytes) -> None:
        total = 0
        for number in range(2_000_000):  # ~0.1 s: far more than 0.01 s + 10 us
            total += number

    with pytest.raises(SlowInput, match="more than its size allows"):
        guarded(spin, ())(bytes(10))


def test_cost_scale_zero_turns_the_check_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLMSD_FUZZ_COST_SCALE", "0")

    def amplify(data: bytes) -> None:
        assert b"\x01" * (MEMORY_FLOOR * 2)

    guarded(amplify, ())(bytes(10))


def test_the_axdr_harness_would_have_caught_the_amplification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the per-byte value bound, a 620-byte cut-down of the issue-13 shape
    # decodes to 80,800 values: far more than the harness lets such an input cost.
    monkeypatch.setattr(axdr, "MAX_VALUES_PER_BYTE", 10**9)
    # Exact per input: in a long session the peak-RSS measure only sees what rises
    # above an earlier test's peak (see the first test).
    monkeypatch.setenv("DLMSD_FUZZ_TRACE_MEMORY", "1")
    tracing = tracemalloc.is_tracing()
    module = importlib.import_module(HARNESSES["axdr"][0])
    try:
        with pytest.raises(CostlyInput):
            module.test_one_input(b"\x00" + amplifier(200, 400))
    finally:
        if not tracing:
            tracemalloc.stop()


@pytest.mark.parametrize("name", ["axdr", "ciphered"])
def test_the_issue_13_push_is_cheap_in_the_harnesses(name: str) -> None:
    module = importlib.import_module(HARNESSES[name][0])
    body = amplifier(2000, 2000)
    if name == "axdr":
        module.test_one_input(b"\x00" + body)
    else:
        # Form byte 0: general-glo-ciphering, SC 0x30; the bytes are the plaintext.
        module.test_one_input(b"\x00" + b"\x0f\x00\x00\x00\x01\x00" + body)
