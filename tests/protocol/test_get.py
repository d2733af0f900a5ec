"""GET-Request / GET-Response codecs: published vectors, long-GET reassembly, properties.

The hypothesis strategies at the top are shared by the SET/ACTION/notification tests.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.apdus.common import (
    AttributeWithSelection,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    InvokeIdAndPriority,
    SelectiveAccess,
)
from dlmsd.protocol.apdus.errors import DataAccessResult
from dlmsd.protocol.apdus.get import (
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
    decode_get_request,
    decode_get_response,
)
from dlmsd.protocol.axdr import Data, DataType, decode_data_exact
from dlmsd.protocol.errors import DlmsError, LengthError, TruncatedError, UnknownTagError
from dlmsd.protocol.obis import Obis
from tests.vectors import only_vector, published, vector_params

VECTORS = published()


# --- shared strategies --------------------------------------------------------

FAST = settings(max_examples=300, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
i8 = st.integers(-128, 127)
obis_codes = st.builds(Obis, u8, u8, u8, u8, u8, u8)

_leaf_data = st.one_of(
    st.just(Data.null()),
    st.booleans().map(Data.boolean),
    u8.map(Data.unsigned),
    u16.map(Data.long_unsigned),
    u32.map(Data.double_long_unsigned),
    st.integers(-(2**31), 2**31 - 1).map(Data.double_long),
    st.integers(-(2**63), 2**63 - 1).map(Data.long64),
    i8.map(Data.integer),
    u8.map(Data.enum),
    st.binary(max_size=40).map(Data.octet_string),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(
        Data.visible_string
    ),
)
data_values = st.recursive(
    _leaf_data,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: Data.structure(*items)),
        st.lists(children, max_size=4).map(lambda items: Data.array(*items)),
    ),
    max_leaves=12,
)
attribute_descriptors = st.builds(CosemAttributeDescriptor, u16, obis_codes, i8)
method_descriptors = st.builds(CosemMethodDescriptor, u16, obis_codes, i8)
selective_accesses = st.builds(SelectiveAccess, u8, data_values)
optional_access = st.none() | selective_accesses
attributes_with_selection = st.builds(
    AttributeWithSelection, attribute_descriptors, optional_access
)
data_access_results = st.sampled_from(DataAccessResult)
get_data_results = st.one_of(data_values, data_access_results)


def assert_round_trip(apdu: Any, decode: Any) -> None:
    """encode -> decode gives the value back; decode -> encode gives the bytes back."""
    encoded = apdu.to_bytes()
    decoded = decode(encoded)
    assert decoded == apdu
    assert type(decoded).from_bytes(encoded) == apdu
    assert decoded.to_bytes() == encoded


def assert_only_dlms_errors(decode: Any, data: bytes) -> None:
    with contextlib.suppress(DlmsError):
        decode(data)


# --- published vectors ------------------------------------------------------------

COVERED_KINDS = {
    "get_request_normal": 1,
    "get_request_next": 2,
    "get_request_with_list": 1,
    "get_response_normal": 1,
    "get_response_normal_with_error": 1,
    "get_response_with_block": 2,
    "get_response_last_block": 1,
    "get_response_last_block_with_error": 1,
    "get_response_with_list": 1,
    "get_response_with_list_compound": 1,
    "get_request_with_range_descriptor": 1,
    "get_request_with_range_descriptor_annotated": 1,
    "range_descriptor_encode": 1,
    "capture_object_definition": 1,
    "set_request_normal": 1,
    "set_response_normal": 1,
    "set_request_with_first_block": 1,
    "set_response_with_block": 1,
    "set_response_last_block": 1,
    "action_request_normal": 1,
    "action_request_normal_no_data": 1,
    "action_response_normal": 1,
    "action_response_with_data": 1,
    "action_response_with_error": 1,
    "action_request_reply_to_hls_authentication": 1,
    "action_response_with_data_hls": 1,
    "data_notification_apdu": 1,
    "get_response_with_datablock_object_list": 1,
}


def test_every_covered_kind_is_in_the_vector_file() -> None:
    """Guards the parametrized tests of all seven test files against silently empty params."""
    counts = Counter(v["kind"] for v in VECTORS)
    assert {kind: counts[kind] for kind in COVERED_KINDS} == COVERED_KINDS


@pytest.mark.parametrize("vector", vector_params("get_request_normal"))
def test_get_request_normal_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_request(raw)
    assert isinstance(apdu, GetRequestNormal)
    assert apdu.attribute == CosemAttributeDescriptor(1, Obis.parse("0.0.43.1.0.255"), 2)
    assert apdu.access is None
    assert apdu.invoke == InvokeIdAndPriority(0xC1)
    assert (apdu.invoke.invoke_id, apdu.invoke.confirmed, apdu.invoke.high_priority) == (
        1,
        True,
        True,
    )
    assert apdu.to_bytes() == raw


def test_fact_sheet_clock_read() -> None:
    # dlms-reference.md section 3: "read clock time C0 01 C1 00 08 00 00 01 00 00 FF 02 00".
    apdu = GetRequestNormal(
        InvokeIdAndPriority.make(1).raw,
        CosemAttributeDescriptor(8, Obis.parse("0-0:1.0.0*255"), 2),
    )
    assert apdu.to_bytes() == bytes.fromhex("C001C1000800000100 00FF0200".replace(" ", ""))


@pytest.mark.parametrize("vector", vector_params("get_request_next"))
def test_get_request_next_vectors(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_request(raw)
    assert isinstance(apdu, GetRequestNext)
    assert apdu.block_number == vector["expected"]["asserted"]["block_number"]
    assert apdu.invoke_id_and_priority == 0xC1
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("get_request_with_list"))
def test_get_request_with_list_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_request(raw)
    assert isinstance(apdu, GetRequestWithList)
    expected = [
        AttributeWithSelection(
            CosemAttributeDescriptor(item["class_id"], Obis.parse(item["obis"]), item["attribute"])
        )
        for item in vector["expected"]["asserted"]["items"]
    ]
    assert list(apdu.items) == expected
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("get_response_normal"))
def test_get_response_normal_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_response(raw)
    assert apdu == GetResponseNormal(0xC1, Data.double_long_unsigned(5009))
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("get_response_normal_with_error"))
def test_get_response_normal_with_error_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_response(raw)
    assert apdu == GetResponseNormal(0xC1, DataAccessResult.HARDWARE_FAULT)
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize(
    "vector", vector_params("get_response_with_block", "get_response_last_block")
)
def test_get_response_with_datablock_vectors(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    asserted = vector["expected"]["asserted"]
    apdu = decode_get_response(raw)
    assert isinstance(apdu, GetResponseWithDataBlock)
    assert apdu.block_number == asserted["block_number"]
    assert apdu.last_block is asserted.get("last_block", apdu.last_block)
    assert isinstance(apdu.result, bytes)
    if "raw_data_len" in asserted:
        assert len(apdu.result) == asserted["raw_data_len"]
    if "raw_data_starts" in asserted:
        assert apdu.result.startswith(bytes.fromhex(asserted["raw_data_starts"].split()[0]))
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("get_response_last_block_with_error"))
def test_get_response_last_block_with_error_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_response(raw)
    assert apdu == GetResponseWithDataBlock(0xC1, True, 19, DataAccessResult.HARDWARE_FAULT)
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("get_response_with_list"))
def test_get_response_with_list_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_response(raw)
    assert apdu == GetResponseWithList(
        0xC1,
        (
            Data.octet_string(b"ISK1030777764366"),
            Data.octet_string(bytes.fromhex("07e50603040e091700ffc400")),
        ),
    )
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("get_response_with_list_compound"))
def test_get_response_with_list_compound_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    apdu = decode_get_response(raw)
    assert isinstance(apdu, GetResponseWithList)
    assert all(isinstance(result, Data) for result in apdu.results)
    assert [r.plain() for r in apdu.results if isinstance(r, Data)] == vector["expected"][
        "asserted"
    ]["result"]
    assert apdu.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("get_response_with_datablock_object_list"))
def test_long_get_of_object_list_reassembles(vector: dict[str, Any]) -> None:
    """69 published raw-data blocks, each wrapped in a get-response-with-datablock."""
    raw = bytes.fromhex(vector["hex"])
    derived = vector["expected"]["derived"]
    lengths = derived["block_raw_data_lengths"]
    assert sum(lengths) == len(raw) == derived["total_bytes"]
    collected = []
    offset = 0
    for number, size in enumerate(lengths, start=1):
        block = GetResponseWithDataBlock(
            0xC1, number == len(lengths), number, raw[offset : offset + size]
        )
        offset += size
        decoded = decode_get_response(block.to_bytes())
        assert decoded == block
        assert isinstance(decoded, GetResponseWithDataBlock)
        assert isinstance(decoded.result, bytes)
        collected.append(decoded.result)
    assembled = b"".join(collected)
    assert len(assembled) == 5307
    object_list = decode_data_exact(assembled)
    assert object_list.type == DataType.ARRAY
    assert isinstance(object_list.value, tuple)
    assert len(object_list.value) == derived["entries"] == 123
    entries = [entry.plain() for entry in object_list.value]
    assert all(isinstance(entry, list) for entry in entries)
    class_ids = Counter(str(entry[0]) for entry in entries if isinstance(entry, list))
    assert class_ids == derived["class_id_counts"]
    first, last = entries[0], entries[-1]
    assert isinstance(first, list) and isinstance(last, list)
    assert first[0] == derived["first_entry"]["class_id"]
    assert first[2] == Obis.parse(derived["first_entry"]["logical_name"]).to_bytes()
    assert last[0] == derived["last_entry"]["class_id"]
    assert last[2] == Obis.parse(derived["last_entry"]["logical_name"]).to_bytes()


# --- malformed input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_bytes", "error"),
    [
        ("", TruncatedError),
        ("c0", TruncatedError),
        ("c001", TruncatedError),
        ("c001c1000100002b0100ff02", TruncatedError),  # no access-selection flag
        ("c001c1000100002b0100ff0201", TruncatedError),  # selector missing
        ("c004c1", UnknownTagError),
        ("c4", TruncatedError),
        ("c409c1", UnknownTagError),
        ("c401c102", UnknownTagError),  # Get-Data-Result choice 2
        ("c401c10105", UnknownTagError),  # undefined data-access-result 5
        ("c402c100000000010082049e01", TruncatedError),  # raw-data shorter than announced
        ("c403c17f", TruncatedError),  # 127 results announced
        ("c403c1ff", LengthError),  # length form 0xFF
        ("c403c18400ffffff", TruncatedError),  # 16M results announced
        ("c0", TruncatedError),
        ("c5", UnknownTagError),
    ],
)
def test_malformed_get(hex_bytes: str, error: type[DlmsError]) -> None:
    raw = bytes.fromhex(hex_bytes)
    decode = decode_get_response if raw[:1] in (b"\xc4", b"\xc5") else decode_get_request
    with pytest.raises(error):
        decode(raw)


def test_trailing_bytes_are_refused() -> None:
    raw = bytes.fromhex(only_vector("get_request_normal")["hex"]) + b"\x00"
    with pytest.raises(DlmsError, match="trailing"):
        decode_get_request(raw)


def test_presence_flag_must_be_zero_or_one() -> None:
    with pytest.raises(DlmsError):
        decode_get_request(bytes.fromhex("c001c1000100002b0100ff0202"))


def test_wrong_class_refuses_other_choice() -> None:
    with pytest.raises(UnknownTagError):
        GetRequestNormal.from_bytes(bytes.fromhex("c002c100000001"))


# --- properties ----------------------------------------------------------------------

get_requests = st.one_of(
    st.builds(GetRequestNormal, u8, attribute_descriptors, optional_access),
    st.builds(GetRequestNext, u8, u32),
    st.builds(GetRequestWithList, u8, st.lists(attributes_with_selection, max_size=4).map(tuple)),
)
get_responses = st.one_of(
    st.builds(GetResponseNormal, u8, get_data_results),
    st.builds(
        GetResponseWithDataBlock,
        u8,
        st.booleans(),
        u32,
        st.binary(max_size=300) | data_access_results,
    ),
    st.builds(GetResponseWithList, u8, st.lists(get_data_results, max_size=5).map(tuple)),
)


@FAST
@given(get_requests)
def test_get_request_round_trip(apdu: Any) -> None:
    assert_round_trip(apdu, decode_get_request)


@FAST
@given(get_responses)
def test_get_response_round_trip(apdu: Any) -> None:
    assert_round_trip(apdu, decode_get_response)


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_into_get_request(data: bytes) -> None:
    assert_only_dlms_errors(decode_get_request, data)
    assert_only_dlms_errors(decode_get_request, b"\xc0" + data)


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_into_get_response(data: bytes) -> None:
    assert_only_dlms_errors(decode_get_response, data)
    assert_only_dlms_errors(decode_get_response, b"\xc4" + data)


@FAST
@given(get_responses, st.data())
def test_truncated_get_response_raises_dlms_error(apdu: Any, data: st.DataObject) -> None:
    encoded = apdu.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DlmsError):
        decode_get_response(encoded[:cut])
