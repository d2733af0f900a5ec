"""CRC-16/X-25 for HDLC HCS/FCS against the published vectors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.hdlc.crc import checksum_bytes, crc16, crc16_table
from tests.vectors import vector_params


def test_check_value() -> None:
    # ../shared/docs/dlms-reference.md section 1: CRC("123456789") = 0x906E (verified).
    assert crc16(b"123456789") == 0x906E
    assert crc16_table(b"123456789") == 0x906E


@pytest.mark.parametrize("vector", vector_params("hdlc_fcs"))
def test_fcs_vectors(vector: dict[str, Any]) -> None:
    # Source: OpenMUC jDLMS FcsCalcTest (cited in the test id); hex is format..information.
    data = bytes.fromhex(vector["hex"])
    expected = bytes.fromhex(vector["expected"]["asserted"]["fcs_wire_order"])
    assert checksum_bytes(data) == expected
    full = bytes.fromhex(vector["expected"]["derived"]["full_frame"])
    assert full == b"\x7e" + data + expected + b"\x7e"


@pytest.mark.parametrize("vector", vector_params("hdlc_crc_hcs_fcs"))
def test_hcs_vector(vector: dict[str, Any]) -> None:
    # Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py L92.
    assert checksum_bytes(bytes.fromhex(vector["hex"])) == bytes.fromhex("5bec")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fast_path_matches_table(data: bytes) -> None:
    assert crc16(data) == crc16_table(data)
    assert crc16(bytearray(data)) == crc16(memoryview(data))
