"""ACTION-Request / ACTION-Response codecs: published vectors and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlmsd.protocol.apdus.action import (
    ActionOutcome,
    ActionRequestNextPBlock,
    ActionRequestNormal,
    ActionRequestWithFirstPBlock,
    ActionRequestWithList,
    ActionRequestWithListAndFirstPBlock,
    ActionRequestWithPBlock,
    ActionResponseNextPBlock,
    ActionResponseNormal,
    ActionResponseWithList,
    ActionResponseWithPBlock,
    decode_action_request,
    decode_action_response,
)
from dlmsd.protocol.apdus.common import CosemMethodDescriptor
from dlmsd.protocol.apdus.errors import ActionResult, DataAccessResult
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.errors import DlmsError, TruncatedError, UnknownTagError
from dlmsd.protocol.obis import Obis
from tests.protocol.test_get import (
    FAST,
    assert_only_dlms_errors,
    assert_round_trip,
    data_values,
    get_data_results,
    method_descriptors,
    u8,
    u32,
)
from tests.vectors import vector_params

ASSOCIATION_LN = CosemMethodDescriptor(15, Obis.parse("0.0.40.0.0.255"), 1)


@pytest.mark.parametrize(
    "vector", vector_params("action_request_normal", "action_request_reply_to_hls_authentication")
)
def test_reply_to_hls_authentication_requests(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_action_request(raw)
    assert isinstance(apdu, ActionRequestNormal)
    assert apdu.method == ASSOCIATION_LN
    assert apdu.parameters is not None
    # octet-string(17): SC 0x10 | IC | 12-byte GMAC tag
    assert isinstance(apdu.parameters.value, bytes)
    assert len(apdu.parameters.value) == 17
    assert apdu.parameters.value[0] == 0x10
    assert apdu.invoke_id_and_priority == raw[2]
    if "data_hex" in vector["expected"]["asserted"]:
        expected_data = bytes.fromhex(vector["expected"]["asserted"]["data_hex"])
        assert apdu.parameters.to_bytes() == expected_data
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("action_request_normal_no_data"))
def test_action_request_without_parameters_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_action_request(raw)
    assert apdu == ActionRequestNormal(0xC0, ASSOCIATION_LN, None)
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("action_response_normal"))
def test_action_response_normal_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_action_response(raw)
    assert apdu == ActionResponseNormal(0xC0, ActionResult.SUCCESS, None)
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize(
    "vector", vector_params("action_response_with_data", "action_response_with_data_hls")
)
def test_action_response_with_data_vectors(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_action_response(raw)
    assert isinstance(apdu, ActionResponseNormal)
    assert apdu.result == ActionResult.SUCCESS
    assert isinstance(apdu.return_parameters, Data)
    assert isinstance(apdu.return_parameters.value, bytes)
    assert apdu.return_parameters.value[0] == 0x10
    if "data_hex" in vector["expected"]["asserted"]:
        expected_data = bytes.fromhex(vector["expected"]["asserted"]["data_hex"])
        assert apdu.return_parameters.to_bytes() == expected_data
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("action_response_with_error"))
def test_action_response_with_error_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_action_response(raw)
    assert apdu == ActionResponseNormal(0xC0, ActionResult.SUCCESS, DataAccessResult.OTHER_REASON)
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize(
    ("hex_bytes", "error"),
    [
        ("c301c0000f0000280000ff01", TruncatedError),  # parameters flag missing
        ("c301c0000f0000280000ff0101", TruncatedError),  # Data missing
        ("c307c0", UnknownTagError),
        ("c701c000", TruncatedError),
        ("c701c00001", TruncatedError),
        ("c701c0000102", UnknownTagError),  # Get-Data-Result choice 2
        ("c701c005", UnknownTagError),  # action-result 5 undefined
        ("c705c0", UnknownTagError),
    ],
)
def test_malformed_action(hex_bytes: str, error: type[DlmsError]) -> None:
    raw = bytes.fromhex(hex_bytes)
    decode = decode_action_response if raw[0] == 0xC7 else decode_action_request
    with pytest.raises(error):
        decode(raw)


datablocks = (st.booleans(), u32, st.binary(max_size=200))
method_lists = st.lists(method_descriptors, max_size=3).map(tuple)
outcomes = st.builds(ActionOutcome, st.sampled_from(ActionResult), st.none() | get_data_results)
action_requests = st.one_of(
    st.builds(ActionRequestNormal, u8, method_descriptors, st.none() | data_values),
    st.builds(ActionRequestNextPBlock, u8, u32),
    st.builds(
        ActionRequestWithList, u8, method_lists, st.lists(data_values, max_size=3).map(tuple)
    ),
    st.builds(ActionRequestWithFirstPBlock, u8, method_descriptors, *datablocks),
    st.builds(ActionRequestWithListAndFirstPBlock, u8, method_lists, *datablocks),
    st.builds(ActionRequestWithPBlock, u8, *datablocks),
)
action_responses = st.one_of(
    st.builds(
        ActionResponseNormal, u8, st.sampled_from(ActionResult), st.none() | get_data_results
    ),
    st.builds(ActionResponseWithPBlock, u8, *datablocks),
    st.builds(ActionResponseWithList, u8, st.lists(outcomes, max_size=4).map(tuple)),
    st.builds(ActionResponseNextPBlock, u8, u32),
)


@FAST
@given(action_requests)
def test_action_request_round_trip(apdu: Any) -> None:
    assert_round_trip(apdu, decode_action_request)


@FAST
@given(action_responses)
def test_action_response_round_trip(apdu: Any) -> None:
    assert_round_trip(apdu, decode_action_response)


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_into_action_decoders(data: bytes) -> None:
    for decode in (decode_action_request, decode_action_response):
        assert_only_dlms_errors(decode, data)
    assert_only_dlms_errors(decode_action_request, b"\xc3" + data)
    assert_only_dlms_errors(decode_action_response, b"\xc7" + data)


@FAST
@given(st.one_of(action_requests, action_responses), st.data())
def test_truncated_action_apdus_raise(apdu: Any, data: st.DataObject) -> None:
    encoded = apdu.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    decode = decode_action_response if encoded[0] == 0xC7 else decode_action_request
    with pytest.raises(DlmsError):
        decode(encoded[:cut])
