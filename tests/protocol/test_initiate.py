"""InitiateRequest / InitiateResponse / Conformance against the published vectors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.apdus.initiate import (
    Conformance,
    InitiateRequest,
    InitiateResponse,
    decode_conformance,
    encode_conformance,
)
from dlmsd.protocol.errors import (
    DecodeError,
    DlmsError,
    EncodeError,
    TruncatedError,
    UnknownTagError,
)
from tests.vectors import only_vector, vector_params

# Names used by the conformance vectors (tests/test_asce/test_conformance.py) -> ours.
VECTOR_FLAG_NAMES = {
    "priority_management_supported": Conformance.PRIORITY_MGMT_SUPPORTED,
    "attribute_0_supported_with_get": Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET,
    "block_transfer_with_get_or_read": Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ,
    "block_transfer_with_set_or_write": Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE,
    "block_transfer_with_action": Conformance.BLOCK_TRANSFER_WITH_ACTION,
    "multiple_references": Conformance.MULTIPLE_REFERENCES,
    "get": Conformance.GET,
    "set": Conformance.SET,
    "selective_access": Conformance.SELECTIVE_ACCESS,
    "event_notification": Conformance.EVENT_NOTIFICATION,
    "action": Conformance.ACTION,
}


def flags_from_vector(flags: dict[str, bool]) -> Conformance:
    """The exact flag set a vector asserts ("others": false = nothing else set)."""
    assert flags.pop("others") is False
    result = Conformance(0)
    for name, present in flags.items():
        if present:
            result |= VECTOR_FLAG_NAMES[name]
    return result


# --- Conformance ---------------------------------------------------------------

# Green Book bit numbers (MSB first). Sources: Wireshark
# epan/dissectors/asn1/cosem/cosem.asn (bits 3-5, 8-15, 18-23), current Green
# Book naming as used by Gurux/jDLMS enums (1, 2, 6, 16, 17).
GREEN_BOOK_BITS = [
    ("GENERAL_PROTECTION", 1),
    ("GENERAL_BLOCK_TRANSFER", 2),
    ("READ", 3),
    ("WRITE", 4),
    ("UNCONFIRMED_WRITE", 5),
    ("DELTA_VALUE_ENCODING", 6),
    ("ATTRIBUTE0_SUPPORTED_WITH_SET", 8),
    ("PRIORITY_MGMT_SUPPORTED", 9),
    ("ATTRIBUTE0_SUPPORTED_WITH_GET", 10),
    ("BLOCK_TRANSFER_WITH_GET_OR_READ", 11),
    ("BLOCK_TRANSFER_WITH_SET_OR_WRITE", 12),
    ("BLOCK_TRANSFER_WITH_ACTION", 13),
    ("MULTIPLE_REFERENCES", 14),
    ("INFORMATION_REPORT", 15),
    ("DATA_NOTIFICATION", 16),
    ("ACCESS", 17),
    ("PARAMETERIZED_ACCESS", 18),
    ("GET", 19),
    ("SET", 20),
    ("SELECTIVE_ACCESS", 21),
    ("EVENT_NOTIFICATION", 22),
    ("ACTION", 23),
]


@pytest.mark.parametrize(("name", "bit"), GREEN_BOOK_BITS)
def test_conformance_bit_numbers(name: str, bit: int) -> None:
    assert Conformance[name] == 1 << (23 - bit)


def test_conformance_members_are_exactly_the_named_bits() -> None:
    assert {m.name for m in Conformance} == {name for name, _ in GREEN_BOOK_BITS}


@pytest.mark.parametrize("v", vector_params("conformance_bits"))
def test_conformance_vectors(v: dict[str, Any]) -> None:
    # The vector is the BER bit-string contents (unused-bits byte + 3 bytes).
    encoded = b"\x5f\x1f\x04" + bytes.fromhex(v["hex"])
    flags, end = decode_conformance(encoded, 0)
    assert end == 7
    assert flags == flags_from_vector(dict(v["expected"]["asserted"]["flags"]))
    assert encode_conformance(flags) == encoded


def test_reserved_conformance_bits_are_kept() -> None:
    # reserved-zero (bit 0) and reserved-seven (bit 7) have no member but survive.
    raw = b"\x5f\x1f\x04\x00\x81\x00\x00"
    flags, _ = decode_conformance(raw, 0)
    assert int(flags) == 0x810000
    assert encode_conformance(flags) == raw


@pytest.mark.parametrize(
    "bad",
    [
        b"\x5f\x1f\x04\x00\x00\x00",
        b"\x5f\x1e\x04\x00\x00\x00\x00",
        b"\x5f\x1f\x05\x00\x00\x00\x00",
    ],
)
def test_conformance_decode_errors(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_conformance(bad, 0)


def test_conformance_encode_range() -> None:
    with pytest.raises(EncodeError):
        encode_conformance(1 << 24)


# --- InitiateRequest -----------------------------------------------------------


@pytest.mark.parametrize("v", vector_params("initiate_request"))
def test_initiate_request_vector(v: dict[str, Any]) -> None:
    asserted = v["expected"]["asserted"]
    raw = bytes.fromhex(v["hex"])
    request = InitiateRequest.from_bytes(raw)
    assert request.proposed_conformance == flags_from_vector(
        dict(asserted["proposed_conformance"])
    )
    assert request.client_max_receive_pdu_size == asserted["client_max_receive_pdu_size"]
    assert request.proposed_dlms_version == asserted["dlms_version"]
    assert request.dedicated_key is asserted["dedicated_key"] is None
    assert request.response_allowed is True
    assert request.proposed_quality_of_service is None
    assert request.to_bytes() == raw  # asserted roundtrip


@pytest.mark.parametrize("v", vector_params("initiate_request_dedicated_key"))
def test_initiate_request_dedicated_key_vector(v: dict[str, Any]) -> None:
    raw = bytes.fromhex(v["hex"])
    request = InitiateRequest.from_bytes(raw)
    assert request.dedicated_key == bytes.fromhex(v["expected"]["asserted"]["dedicated_key_hex"])
    assert request.to_bytes() == raw  # asserted roundtrip


@pytest.mark.parametrize("v", vector_params("glo_initiate_request_green_book"))
def test_green_book_glo_initiate_request_plaintext(v: dict[str, Any]) -> None:
    # The plaintext under the Green Book's ciphering example.
    plaintext = bytes.fromhex(v["expected"]["derived"]["plaintext_hex"])
    want = v["expected"]["asserted"]["initiate_request"]
    request = InitiateRequest.from_bytes(plaintext)
    assert request.dedicated_key == bytes.fromhex(want["dedicated_key"])
    assert request.response_allowed is want["response_allowed"]
    assert request.proposed_quality_of_service is want["proposed_quality_of_service"]
    assert request.proposed_dlms_version == want["proposed_dlms_version_number"]
    assert request.proposed_conformance == int(want["proposed_conformance"], 16)
    assert request.client_max_receive_pdu_size == want["client_max_receive_pdu_size"]
    assert request.to_bytes() == plaintext


@pytest.mark.parametrize("v", vector_params("glo_initiate_request_apdu"))
def test_glo_initiate_request_apdu_plaintext(v: dict[str, Any]) -> None:
    plaintext = bytes.fromhex(v["expected"]["plaintext_hex"])
    request = InitiateRequest.from_bytes(plaintext)
    assert request.dedicated_key == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert request.proposed_conformance == 0x007E1F
    assert request.client_max_receive_pdu_size == 1200
    assert request.to_bytes() == plaintext


def test_initiate_request_response_allowed_and_qos() -> None:
    request = InitiateRequest(
        proposed_conformance=Conformance.GET,
        client_max_receive_pdu_size=0xFFFF,
        response_allowed=False,
        proposed_quality_of_service=-3,
    )
    raw = request.to_bytes()
    assert raw == bytes.fromhex("01 00 0100 01fd 06 5f1f0400000010 ffff")
    assert InitiateRequest.from_bytes(raw) == request


def test_initiate_request_explicit_default_response_allowed() -> None:
    # "01 01" is an explicit TRUE: same value as the default, re-encoded as "00".
    raw = bytes.fromhex("01 00 0101 00 06 5f1f0400007e1f 04b0")
    request = InitiateRequest.from_bytes(raw)
    assert request.response_allowed is True
    assert request.to_bytes() == bytes.fromhex("01 00 00 00 06 5f1f0400007e1f 04b0")


def test_initiate_request_repr_hides_dedicated_key() -> None:
    key = bytes.fromhex("00112233445566778899aabbccddeeff")
    request = InitiateRequest(
        proposed_conformance=Conformance.GET, client_max_receive_pdu_size=1200, dedicated_key=key
    )
    text = repr(request)
    assert "<redacted>" in text
    assert key.hex() not in text
    assert repr(key) not in text
    assert str(key) not in text


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", TruncatedError),
        (bytes.fromhex("08000006"), UnknownTagError),
        (bytes.fromhex("0102"), DecodeError),  # presence flag must be 00/01
        (bytes.fromhex("01017f00"), TruncatedError),  # key length runs past the end
        (bytes.fromhex("010185"), DecodeError),  # 5 length octets: unsupported
        (bytes.fromhex("01000000065f1f0400007e1f04b000"), DecodeError),  # trailing byte
        (bytes.fromhex("01000000065f1f0500007e1f04b0"), DecodeError),  # bad bit string
    ],
)
def test_initiate_request_errors(raw: bytes, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        InitiateRequest.from_bytes(raw)


@pytest.mark.parametrize(
    "kind", ["initiate_request", "initiate_request_dedicated_key", "initiate_response"]
)
def test_every_prefix_is_truncated(kind: str) -> None:
    raw = bytes.fromhex(only_vector(kind)["hex"])
    decoder = InitiateResponse if raw[0] == 0x08 else InitiateRequest
    for size in range(len(raw)):
        with pytest.raises(TruncatedError):
            decoder.from_bytes(raw[:size])


@pytest.mark.parametrize(
    "fields",
    [
        {"proposed_dlms_version": 256},
        {"client_max_receive_pdu_size": 0x10000},
        {"proposed_quality_of_service": 128},
        {"proposed_conformance": 1 << 24},
    ],
)
def test_initiate_request_encode_range(fields: dict[str, int]) -> None:
    base: dict[str, Any] = {
        "proposed_conformance": Conformance.GET,
        "client_max_receive_pdu_size": 1200,
    }
    with pytest.raises(EncodeError):
        InitiateRequest(**{**base, **fields}).to_bytes()


# --- InitiateResponse ----------------------------------------------------------


@pytest.mark.parametrize("v", vector_params("initiate_response"))
def test_initiate_response_vector(v: dict[str, Any]) -> None:
    asserted = v["expected"]["asserted"]
    raw = bytes.fromhex(v["hex"])
    response = InitiateResponse.from_bytes(raw)
    assert response.negotiated_conformance == int(asserted["negotiated_conformance_hex"], 16)
    assert response.server_max_receive_pdu_size == asserted["server_max_receive_pdu_size"]
    assert response.negotiated_dlms_version == asserted["dlms_version"]
    assert response.negotiated_quality_of_service is None
    assert response.vaa_name == 0x0007  # LN referencing
    assert response.to_bytes() == raw  # asserted roundtrip


@pytest.mark.parametrize("v", vector_params("initiate_response_qos"))
def test_initiate_response_qos_vector(v: dict[str, Any]) -> None:
    raw = bytes.fromhex(v["hex"])
    response = InitiateResponse.from_bytes(raw)
    want = v["expected"]["asserted"]["negotiated_quality_of_service"]
    assert response.negotiated_quality_of_service == want
    assert response.negotiated_conformance == 0x001E1D
    assert response.server_max_receive_pdu_size == 1224
    assert response.to_bytes() == raw


@pytest.mark.parametrize("v", vector_params("rlre_ciphered"))
def test_initiate_response_inside_ciphered_rlre(v: dict[str, Any]) -> None:
    # The derived plaintext of the glo-initiateResponse in the ciphered RLRE.
    plaintext = bytes.fromhex(v["expected"]["derived"]["plaintext_hex"])
    response = InitiateResponse.from_bytes(plaintext)
    assert response.negotiated_conformance == 0x007C1F
    assert response.server_max_receive_pdu_size == 1024
    assert response.vaa_name == 0x0007
    assert response.to_bytes() == plaintext


def test_initiate_response_short_name_vaa() -> None:
    response = InitiateResponse(
        negotiated_conformance=Conformance.READ | Conformance.WRITE,
        server_max_receive_pdu_size=2400,
        vaa_name=0xFA00,
    )
    assert response.to_bytes().endswith(b"\x09\x60\xfa\x00")
    assert InitiateResponse.from_bytes(response.to_bytes()) == response


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", TruncatedError),
        (b"\x01", UnknownTagError),
        (bytes.fromhex("0802"), DecodeError),
        (bytes.fromhex("0801"), TruncatedError),
        (bytes.fromhex("0800065f1f040000501f01f4000700"), DecodeError),
    ],
)
def test_initiate_response_errors(raw: bytes, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        InitiateResponse.from_bytes(raw)


def test_initiate_response_encode_range() -> None:
    with pytest.raises(EncodeError):
        InitiateResponse(
            negotiated_conformance=Conformance.GET, server_max_receive_pdu_size=1, vaa_name=-1
        ).to_bytes()


# --- hypothesis ----------------------------------------------------------------

conformances = st.integers(0, 0xFFFFFF).map(Conformance)
qos = st.none() | st.integers(-128, 127)

initiate_requests = st.builds(
    InitiateRequest,
    proposed_conformance=conformances,
    client_max_receive_pdu_size=st.integers(0, 0xFFFF),
    proposed_dlms_version=st.integers(0, 0xFF),
    dedicated_key=st.none() | st.binary(max_size=300),
    response_allowed=st.booleans(),
    proposed_quality_of_service=qos,
)
initiate_responses = st.builds(
    InitiateResponse,
    negotiated_conformance=conformances,
    server_max_receive_pdu_size=st.integers(0, 0xFFFF),
    negotiated_dlms_version=st.integers(0, 0xFF),
    vaa_name=st.integers(0, 0xFFFF),
    negotiated_quality_of_service=qos,
)


@settings(max_examples=300, deadline=None)
@given(initiate_requests)
def test_initiate_request_roundtrip(request: InitiateRequest) -> None:
    raw = request.to_bytes()
    decoded = InitiateRequest.from_bytes(raw)
    assert decoded == request
    assert decoded.to_bytes() == raw


@settings(max_examples=300, deadline=None)
@given(initiate_responses)
def test_initiate_response_roundtrip(response: InitiateResponse) -> None:
    raw = response.to_bytes()
    decoded = InitiateResponse.from_bytes(raw)
    assert decoded == response
    assert decoded.to_bytes() == raw


def _decodes_or_dlms_error(decoder: Any, raw: bytes) -> None:
    try:
        value = decoder.from_bytes(raw)
    except DlmsError:
        return
    # Whatever decodes must re-encode to a value that decodes to itself.
    assert decoder.from_bytes(value.to_bytes()) == value


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64) | st.binary(max_size=64).map(lambda b: b"\x01" + b))
def test_initiate_request_arbitrary_bytes(raw: bytes) -> None:
    _decodes_or_dlms_error(InitiateRequest, raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=32) | st.binary(max_size=32).map(lambda b: b"\x08" + b))
def test_initiate_response_arbitrary_bytes(raw: bytes) -> None:
    _decodes_or_dlms_error(InitiateResponse, raw)


@settings(max_examples=300, deadline=None)
@given(initiate_requests, st.integers(0, 0xFF), st.integers(0, 40))
def test_initiate_request_mutations(request: InitiateRequest, value: int, index: int) -> None:
    raw = bytearray(request.to_bytes())
    raw[index % len(raw)] = value
    _decodes_or_dlms_error(InitiateRequest, bytes(raw))
