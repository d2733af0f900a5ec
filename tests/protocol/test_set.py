"""SET-Request / SET-Response codecs: published vectors and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlmsd.protocol.apdus.common import CosemAttributeDescriptor
from dlmsd.protocol.apdus.errors import DataAccessResult
from dlmsd.protocol.apdus.set import (
    SetRequestNormal,
    SetRequestWithDataBlock,
    SetRequestWithFirstDataBlock,
    SetRequestWithList,
    SetRequestWithListAndFirstDataBlock,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseLastDataBlockWithList,
    SetResponseNormal,
    SetResponseWithList,
    decode_set_request,
    decode_set_response,
)
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError, TruncatedError, UnknownTagError
from dlmsd.protocol.obis import Obis
from tests.protocol.test_get import (
    FAST,
    assert_only_dlms_errors,
    assert_round_trip,
    attribute_descriptors,
    attributes_with_selection,
    data_access_results,
    data_values,
    optional_access,
    u8,
    u32,
)
from tests.vectors import vector_params


@pytest.mark.parametrize("vector", vector_params("set_request_normal"))
def test_set_request_normal_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    asserted = vector["expected"]["asserted"]
    apdu = decode_set_request(raw)
    assert isinstance(apdu, SetRequestNormal)
    assert apdu.invoke_id_and_priority == 0xC1
    assert apdu.attribute == CosemAttributeDescriptor(8, Obis.parse(asserted["obis"]), 2)
    assert apdu.access is None
    assert apdu.value.to_bytes() == bytes.fromhex(asserted["data_hex"])
    # The clock value: 2021-01-24 14:48:57.80, deviation -60, status 0.
    assert isinstance(apdu.value.value, bytes)
    stamp = CosemDateTime.from_bytes(apdu.value.value)
    assert (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute) == (2021, 1, 24, 14, 48)
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("set_request_with_first_block"))
def test_set_request_with_first_block_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    asserted = vector["expected"]["asserted"]
    apdu = decode_set_request(raw)
    assert apdu == SetRequestWithFirstDataBlock(
        0xC1,
        CosemAttributeDescriptor(1, Obis.parse(asserted["obis"]), 2),
        None,
        False,
        1,
        bytes.fromhex(asserted["raw_data_hex"]),
    )
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("set_response_normal"))
def test_set_response_normal_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_set_response(raw)
    assert apdu == SetResponseNormal(0xC1, DataAccessResult.SUCCESS)
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("set_response_with_block"))
def test_set_response_with_block_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_set_response(raw)
    assert apdu == SetResponseDataBlock(0xC1, 1)
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("set_response_last_block"))
def test_set_response_last_block_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_set_response(raw)
    assert apdu == SetResponseLastDataBlock(0xC1, DataAccessResult.SUCCESS, 2)
    assert apdu.to_bytes() == raw


def test_set_with_list_layout() -> None:
    # Green Book Set-Request-With-List: descriptors (with selection), then the values.
    apdu = SetRequestWithList(
        0xC1,
        (),
        (Data.unsigned(1),),
    )
    assert apdu.to_bytes() == bytes.fromhex("c104c100011101")
    assert decode_set_request(apdu.to_bytes()) == apdu


@pytest.mark.parametrize(
    ("hex_bytes", "error"),
    [
        ("c101c100080000010000ff0200", TruncatedError),  # value missing
        ("c102c100010000800000ff020000000000011509", TruncatedError),  # raw-data short
        ("c106c1", UnknownTagError),
        ("c506c1", UnknownTagError),
        ("c501c107", UnknownTagError),  # data-access-result 7 undefined
        ("c503c10000", TruncatedError),  # block number cut
        ("c504c10200", TruncatedError),
    ],
)
def test_malformed_set(hex_bytes: str, error: type[DlmsError]) -> None:
    raw = bytes.fromhex(hex_bytes)
    decode = decode_set_response if raw[0] == 0xC5 else decode_set_request
    with pytest.raises(error):
        decode(raw)


datablocks = (st.booleans(), u32, st.binary(max_size=200))
item_lists = st.lists(attributes_with_selection, max_size=3).map(tuple)
set_requests = st.one_of(
    st.builds(SetRequestNormal, u8, attribute_descriptors, optional_access, data_values),
    st.builds(
        SetRequestWithFirstDataBlock, u8, attribute_descriptors, optional_access, *datablocks
    ),
    st.builds(SetRequestWithDataBlock, u8, *datablocks),
    st.builds(SetRequestWithList, u8, item_lists, st.lists(data_values, max_size=3).map(tuple)),
    st.builds(SetRequestWithListAndFirstDataBlock, u8, item_lists, *datablocks),
)
result_lists = st.lists(data_access_results, max_size=6).map(tuple)
set_responses = st.one_of(
    st.builds(SetResponseNormal, u8, data_access_results),
    st.builds(SetResponseDataBlock, u8, u32),
    st.builds(SetResponseLastDataBlock, u8, data_access_results, u32),
    st.builds(SetResponseLastDataBlockWithList, u8, result_lists, u32),
    st.builds(SetResponseWithList, u8, result_lists),
)


@FAST
@given(set_requests)
def test_set_request_round_trip(apdu: Any) -> None:
    assert_round_trip(apdu, decode_set_request)


@FAST
@given(set_responses)
def test_set_response_round_trip(apdu: Any) -> None:
    assert_round_trip(apdu, decode_set_response)


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_into_set_decoders(data: bytes) -> None:
    for decode in (decode_set_request, decode_set_response):
        assert_only_dlms_errors(decode, data)
    assert_only_dlms_errors(decode_set_request, b"\xc1" + data)
    assert_only_dlms_errors(decode_set_response, b"\xc5" + data)


@FAST
@given(st.one_of(set_requests, set_responses), st.data())
def test_truncated_set_apdus_raise(apdu: Any, data: st.DataObject) -> None:
    encoded = apdu.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    decode = decode_set_response if encoded[0] == 0xC5 else decode_set_request
    with pytest.raises(DlmsError):
        decode(encoded[:cut])
