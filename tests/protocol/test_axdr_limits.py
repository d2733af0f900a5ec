"""What one A-XDR value may expand to: the value budget of `decode_data`.

The amplification push of issue 13 (synthetic, built here): a compact-array of a
structure of 2,000 null-data members and one unsigned, packed 2,000 times. 4 KB on
the wire, four million values once decoded (1.19 GB in the daemon before the limit).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import (
    MAX_VALUES,
    MAX_VALUES_PER_BYTE,
    CompactArray,
    Data,
    DataType,
    TypeDescription,
    decode_data,
    encode_data,
    encode_length,
)
from dlmsd.protocol.errors import LimitExceeded
from tests.protocol.test_axdr import any_data

N = TypeDescription(DataType.NULL_DATA)
U = TypeDescription(DataType.UNSIGNED)


def amplifier(members: int, elements: int) -> bytes:
    """A compact array of structure{null-data x `members`, unsigned}, `elements` times."""
    description = TypeDescription.structure_of(*([N] * members), U)
    contents = bytes(elements)  # one octet (the unsigned) per element
    return b"\x13" + description.to_bytes() + encode_length(len(contents)) + contents


def count_values(item: Data) -> int:
    """Every node of a decoded value (containers and compact-array elements included)."""
    value = item.value
    if isinstance(value, tuple):
        return 1 + sum(count_values(child) for child in value)
    if isinstance(value, CompactArray):
        return 1 + sum(count_values(child) for child in value.elements)
    return 1


def test_the_issue_13_push_is_refused_before_it_is_built() -> None:
    body = amplifier(2000, 2000)
    assert len(body) < 4100
    started = time.perf_counter()
    with pytest.raises(LimitExceeded) as caught:
        decode_data(body)
    assert time.perf_counter() - started < 0.5  # was 14 s
    assert caught.value.kind == "limit"
    assert "values" in caught.value.reason


def test_the_issue_13_push_inside_a_data_notification() -> None:
    apdu = b"\x0f\x00\x00\x00\x01\x00" + amplifier(2000, 2000)
    with pytest.raises(LimitExceeded):
        DataNotification.from_bytes(apdu)


def test_description_values_count_what_an_element_makes() -> None:
    assert U.values == 1 and N.values == 1 and N.min_width == 0
    structure = TypeDescription.structure_of(N, N, U)
    assert (structure.values, structure.min_width) == (4, 1)
    array = TypeDescription.array_of(3, structure)
    assert (array.values, array.min_width) == (13, 3)


def test_null_members_decode_within_the_per_byte_bound() -> None:
    # 3 values per element of one octet: well inside 8 per byte.
    value, _ = decode_data(amplifier(1, 100))
    assert count_values(value) == 1 + 100 * 3


def test_null_members_beyond_the_per_byte_bound_are_refused() -> None:
    with pytest.raises(LimitExceeded, match="per byte"):
        decode_data(amplifier(20, 100))


def test_max_values_bounds_tagged_containers() -> None:
    body = encode_data(Data.array(*[Data.unsigned(1)] * 200))
    assert count_values(decode_data(body)[0]) == 201
    decode_data(body, 0, 201)
    with pytest.raises(LimitExceeded, match="max 200 values"):
        decode_data(body, 0, 200)


def test_max_values_bounds_compact_arrays() -> None:
    body = amplifier(1, 100)  # 301 values
    decode_data(body, 0, 301)
    with pytest.raises(LimitExceeded):
        decode_data(body, 0, 300)


def test_the_default_holds_a_large_honest_push() -> None:
    # 20,000 double-long-unsigned in one array: 100 KB of body, far below both bounds.
    body = encode_data(Data.array(*[Data.double_long_unsigned(7)] * 20_000))
    assert count_values(decode_data(body)[0]) == 20_001 < MAX_VALUES


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_data, st.integers(1, 400))
def test_a_decoded_value_never_holds_more_than_its_budget(value: Data, most: int) -> None:
    encoded = encode_data(value)
    try:
        decoded, _ = decode_data(encoded, 0, most)
    except LimitExceeded:
        return
    assert count_values(decoded) <= min(most, MAX_VALUES_PER_BYTE * len(encoded) + 64)
    assert decoded == value


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_compact_arrays_of_null_members_cost_what_they_hold(members: int, elements: int) -> None:
    body = amplifier(members, elements)
    try:
        decoded, _ = decode_data(body)
    except LimitExceeded:
        assert elements * (members + 2) > MAX_VALUES_PER_BYTE * len(body) + 64 - 1
        return
    assert count_values(decoded) <= MAX_VALUES_PER_BYTE * len(body) + 64
