"""EXCEPTION-Response, ConfirmedServiceError and the result enums."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlmsd.protocol.apdus.errors import (
    SERVICE_ERROR_REASONS,
    AccessError,
    ActionResult,
    ConfirmedServiceError,
    ConfirmedServiceErrorChoice,
    DataAccessResult,
    ExceptionResponse,
    ExceptionServiceError,
    InitiateError,
    ServiceError,
    ServiceErrorKind,
    StateError,
    decode_confirmed_service_error,
    decode_exception_response,
)
from dlmsd.protocol.errors import (
    DecodeError,
    DlmsError,
    EncodeError,
    TruncatedError,
    UnknownTagError,
)
from tests.protocol.test_get import FAST, assert_only_dlms_errors, u32
from tests.vectors import vector_params


def test_result_codes_match_the_green_book() -> None:
    assert int(DataAccessResult.HARDWARE_FAULT) == 1
    assert int(DataAccessResult.OBJECT_CLASS_INCONSISTENT) == 9
    assert int(DataAccessResult.DATA_BLOCK_NUMBER_INVALID) == 19
    assert int(DataAccessResult.OTHER_REASON) == 250
    assert int(ActionResult.LONG_ACTION_ABORTED) == 15
    assert int(ActionResult.OTHER_REASON) == 250


@pytest.mark.parametrize("vector", vector_params("aare_rejected_confirmed_service_error"))
def test_confirmed_service_error_inside_aare(vector: dict[str, Any]) -> None:
    # user-information BE 06 04 04 | 0E 01 06 01: initiateError, initiate, dlms-version-too-low.
    aare = bytes.fromhex(vector["hex"])
    apdu = aare[aare.index(bytes.fromhex("be0604040e")) + 4 :]
    error = ConfirmedServiceError.from_bytes(apdu)
    assert error.service == ConfirmedServiceErrorChoice.INITIATE_ERROR
    assert error.error == ServiceError(
        ServiceErrorKind.INITIATE, InitiateError.DLMS_VERSION_TOO_LOW
    )
    assert error.error.reason_name == "DLMS_VERSION_TOO_LOW"
    assert error.to_bytes() == apdu


def test_confirmed_service_error_read_access() -> None:
    error = ConfirmedServiceError(
        ConfirmedServiceErrorChoice.READ,
        ServiceError(ServiceErrorKind.ACCESS, AccessError.OBJECT_UNAVAILABLE),
    )
    assert error.to_bytes() == bytes.fromhex("0e050504")
    assert decode_confirmed_service_error(bytes.fromhex("0e050504")) == error
    assert error.error.reason_enum is AccessError.OBJECT_UNAVAILABLE


@pytest.mark.parametrize(
    ("hex_bytes", "error"),
    [
        ("", TruncatedError),
        ("0e0106", TruncatedError),
        ("0f010601", UnknownTagError),
        ("0e000601", UnknownTagError),  # tag 0 is reserved
        ("0e140601", UnknownTagError),  # service 20
        ("0e010801", UnknownTagError),  # change-scope [8] is reserved
        ("0e010605", UnknownTagError),  # initiate reason 5 undefined
        ("0e01060100", DecodeError),  # trailing byte
    ],
)
def test_malformed_confirmed_service_error(hex_bytes: str, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        ConfirmedServiceError.from_bytes(bytes.fromhex(hex_bytes))


def test_exception_response_simple() -> None:
    raw = bytes.fromhex("d80102")
    response = ExceptionResponse.from_bytes(raw)
    assert response == ExceptionResponse(
        StateError.SERVICE_NOT_ALLOWED, ExceptionServiceError.SERVICE_NOT_SUPPORTED
    )
    assert response.to_bytes() == raw


def test_exception_response_invocation_counter_error_carries_the_counter() -> None:
    # Green Book 8.x: invocation-counter-error [6] IMPLICIT Unsigned32.
    raw = bytes.fromhex("d8020600001a91")
    response = decode_exception_response(raw)
    assert response.service_error == ExceptionServiceError.INVOCATION_COUNTER_ERROR
    assert response.invocation_counter == 0x1A91
    assert response.to_bytes() == raw


@pytest.mark.parametrize(
    ("hex_bytes", "error"),
    [
        ("d801", TruncatedError),
        ("d90101", UnknownTagError),
        ("d80001", UnknownTagError),
        ("d80107", UnknownTagError),
        ("d80106", TruncatedError),  # counter missing
        ("d8010600000001ff", DecodeError),
        ("d8010100", DecodeError),
    ],
)
def test_malformed_exception_response(hex_bytes: str, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        ExceptionResponse.from_bytes(bytes.fromhex(hex_bytes))


def test_exception_response_counter_only_with_counter_error() -> None:
    with pytest.raises(EncodeError):
        ExceptionResponse(
            StateError.SERVICE_UNKNOWN, ExceptionServiceError.OTHER_REASON, 5
        ).to_bytes()
    with pytest.raises(EncodeError):
        ExceptionResponse(
            StateError.SERVICE_UNKNOWN, ExceptionServiceError.INVOCATION_COUNTER_ERROR
        ).to_bytes()


exception_responses = st.one_of(
    st.builds(
        ExceptionResponse,
        st.sampled_from(StateError),
        st.sampled_from(
            [
                e
                for e in ExceptionServiceError
                if e != ExceptionServiceError.INVOCATION_COUNTER_ERROR
            ]
        ),
    ),
    st.builds(
        ExceptionResponse,
        st.sampled_from(StateError),
        st.just(ExceptionServiceError.INVOCATION_COUNTER_ERROR),
        u32,
    ),
)
service_errors = st.sampled_from(list(SERVICE_ERROR_REASONS)).flatmap(
    lambda kind: st.builds(
        ServiceError, st.just(kind), st.sampled_from(SERVICE_ERROR_REASONS[kind]).map(int)
    )
)
confirmed_service_errors = st.builds(
    ConfirmedServiceError, st.sampled_from(ConfirmedServiceErrorChoice), service_errors
)


@FAST
@given(exception_responses)
def test_exception_response_round_trip(response: ExceptionResponse) -> None:
    encoded = response.to_bytes()
    assert decode_exception_response(encoded) == response
    assert decode_exception_response(encoded).to_bytes() == encoded


@FAST
@given(confirmed_service_errors)
def test_confirmed_service_error_round_trip(error: ConfirmedServiceError) -> None:
    encoded = error.to_bytes()
    assert decode_confirmed_service_error(encoded) == error
    assert decode_confirmed_service_error(encoded).to_bytes() == encoded


@FAST
@given(st.binary(max_size=16))
def test_arbitrary_bytes_into_error_decoders(data: bytes) -> None:
    for decode in (decode_exception_response, decode_confirmed_service_error):
        assert_only_dlms_errors(decode, data)
    assert_only_dlms_errors(decode_exception_response, b"\xd8" + data)
    assert_only_dlms_errors(decode_confirmed_service_error, b"\x0e" + data)
