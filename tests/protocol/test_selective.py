"""Profile Generic selective access: range and entry descriptors, capture objects."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlmsd.protocol.apdus.common import CosemAttributeDescriptor, SelectiveAccess
from dlmsd.protocol.apdus.get import GetRequestNormal, decode_get_request
from dlmsd.protocol.apdus.selective import (
    CaptureObjectDefinition,
    EntryDescriptor,
    RangeDescriptor,
    parse_selective_access,
)
from dlmsd.protocol.axdr import Data, decode_data_exact, encode_data
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DecodeError, DlmsError, UnknownTagError
from dlmsd.protocol.obis import Obis
from tests.protocol.test_get import FAST, data_values, i8, obis_codes, u16, u32
from tests.vectors import vector_params

CLOCK_TIME = CaptureObjectDefinition(8, Obis.parse("0.0.1.0.0.255"), 2, 0)
LOAD_PROFILE = CosemAttributeDescriptor(7, Obis.parse("1.0.99.1.0.255"), 2)


def _selective_access(raw: bytes) -> SelectiveAccess:
    """`selector(1) parameters(Data)`, the bytes after the access-selection flag."""
    return SelectiveAccess(raw[0], decode_data_exact(raw[1:]))


@pytest.mark.parametrize("vector", vector_params("capture_object_definition"))
def test_capture_object_definition_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    asserted = vector["expected"]["asserted"]
    column = CaptureObjectDefinition.from_data(decode_data_exact(raw))
    assert column == CaptureObjectDefinition(
        asserted["class_id"],
        Obis.parse(asserted["obis"]),
        asserted["attribute_index"],
        asserted["data_index"],
    )
    assert encode_data(column.to_data()) == raw


@pytest.mark.parametrize("vector", vector_params("range_descriptor_encode"))
def test_range_descriptor_encode_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    # from 2020-01-01 00:03 (deviation -120) to 2020-01-06 00:03 (deviation -60), all columns
    start = CosemDateTime.from_bytes(bytes.fromhex("07e40101ff00030000ff8800"))
    end = CosemDateTime.from_bytes(bytes.fromhex("07e40106ff00030000ffc400"))
    descriptor = RangeDescriptor(
        CLOCK_TIME, Data.octet_string(start.to_bytes()), Data.octet_string(end.to_bytes())
    )
    assert descriptor.to_selective_access().to_bytes() == raw
    parsed = parse_selective_access(_selective_access(raw))
    assert parsed == descriptor
    assert start.deviation == -120 and end.deviation == -60


@pytest.mark.parametrize(
    "vector",
    vector_params(
        "get_request_with_range_descriptor", "get_request_with_range_descriptor_annotated"
    ),
)
def test_get_request_with_range_descriptor_vectors(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_request(raw)
    assert isinstance(apdu, GetRequestNormal)
    assert apdu.attribute == LOAD_PROFILE
    assert apdu.access is not None and apdu.access.selector == 1
    descriptor = parse_selective_access(apdu.access)
    assert isinstance(descriptor, RangeDescriptor)
    assert descriptor.restricting_object == CLOCK_TIME
    assert descriptor.selected_values == ()  # 01 00: all columns
    assert isinstance(descriptor.from_value.value, bytes)
    assert isinstance(descriptor.to_value.value, bytes)
    start = CosemDateTime.from_bytes(descriptor.from_value.value)
    assert start.month in (6, 10)
    rebuilt = GetRequestNormal(0xC1, LOAD_PROFILE, descriptor.to_selective_access())
    assert rebuilt.to_bytes() == raw


def test_entry_descriptor_layout() -> None:
    # selector 2: structure{ double-long-unsigned x2, long-unsigned x2 }
    descriptor = EntryDescriptor(1, 10, 1, 0)
    access = descriptor.to_selective_access()
    assert access.to_bytes() == bytes.fromhex("0202040600000001060000000a120001120000")
    assert parse_selective_access(access) == descriptor


def test_range_descriptor_with_selected_columns() -> None:
    columns = (CLOCK_TIME, CaptureObjectDefinition(3, Obis.parse("1.0.1.8.0.255"), 2))
    descriptor = RangeDescriptor(CLOCK_TIME, Data.null(), Data.null(), columns)
    assert RangeDescriptor.from_data(descriptor.to_data()) == descriptor


@pytest.mark.parametrize(
    "parameters",
    [
        Data.unsigned(1),
        Data.structure(Data.unsigned(1)),
        Data.structure(Data.null(), Data.null(), Data.null(), Data.array()),
        Data.structure(CLOCK_TIME.to_data(), Data.null(), Data.null(), Data.null()),
        Data.structure(
            CLOCK_TIME.to_data(), Data.null(), Data.null(), Data.array(Data.unsigned(1))
        ),
        Data.structure(
            Data.structure(
                Data.long_unsigned(8),
                Data.octet_string(b"\x00\x00\x01\x00\x00"),  # 5-byte OBIS
                Data.integer(2),
                Data.long_unsigned(0),
            ),
            Data.null(),
            Data.null(),
            Data.array(),
        ),
        Data.structure(
            Data.structure(
                Data.unsigned(8),
                Data.octet_string(bytes(6)),
                Data.integer(2),
                Data.long_unsigned(0),
            ),
            Data.null(),
            Data.null(),
            Data.array(),
        ),
    ],
)
def test_malformed_range_descriptor(parameters: Data) -> None:
    with pytest.raises(DecodeError):
        parse_selective_access(SelectiveAccess(1, parameters))


def test_malformed_entry_descriptor_and_selector() -> None:
    wrong_types = Data.structure(*(Data.unsigned(1) for _ in range(4)))
    with pytest.raises(DecodeError):
        parse_selective_access(SelectiveAccess(2, wrong_types))
    with pytest.raises(UnknownTagError):
        parse_selective_access(SelectiveAccess(3, Data.null()))


columns = st.builds(CaptureObjectDefinition, u16, obis_codes, i8, u16)
range_descriptors = st.builds(
    RangeDescriptor, columns, data_values, data_values, st.lists(columns, max_size=3).map(tuple)
)
entry_descriptors = st.builds(EntryDescriptor, u32, u32, u16, u16)


@FAST
@given(st.one_of(range_descriptors, entry_descriptors))
def test_descriptor_round_trip(descriptor: RangeDescriptor | EntryDescriptor) -> None:
    access = descriptor.to_selective_access()
    assert parse_selective_access(access) == descriptor
    encoded = access.to_bytes()
    assert _selective_access(encoded) == access
    request = GetRequestNormal(0xC1, LOAD_PROFILE, access)
    assert decode_get_request(request.to_bytes()) == request


@FAST
@given(st.integers(0, 255), data_values)
def test_arbitrary_parameters_raise_only_dlms_errors(selector: int, parameters: Data) -> None:
    with contextlib.suppress(DlmsError):
        parse_selective_access(SelectiveAccess(selector, parameters))
