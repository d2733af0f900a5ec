"""The server core (the emulator's) against published client APDUs (sources cited)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.cosem import objects as ic
from dlmsd.cosem.model import ObjectModel, ProfileStore, gas_meter_model, profile_generic
from dlmsd.cosem.profile import parse_buffer
from dlmsd.protocol.apdus.acse import AARE, RLRE, AcseServiceUserDiagnostic, AssociationResult
from dlmsd.protocol.apdus.action import ActionResponseNormal
from dlmsd.protocol.apdus.errors import (
    ActionResult,
    DataAccessResult,
    ExceptionResponse,
    ExceptionServiceError,
)
from dlmsd.protocol.apdus.get import (
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
)
from dlmsd.protocol.apdus.initiate import InitiateResponse
from dlmsd.protocol.apdus.selective import CaptureObjectDefinition
from dlmsd.protocol.apdus.set import SetResponseNormal
from dlmsd.protocol.association import Authentication, Ciphering, ClientSettings, ServerSettings
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.ciphered import ServiceSpecificCiphered
from dlmsd.protocol.client import Associated, ClientConnection
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.server import ServerConnection, ServerState
from tests.vectors import published

VECTORS = published()

EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
SERVER_TITLE = bytes.fromhex("4d4d4d0000000001")
START = dt.datetime(2023, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))


def vector(kind: str, index: int = 0) -> dict[str, Any]:
    return [v for v in VECTORS if v["kind"] == kind][index]


def apdu(kind: str, index: int = 0) -> bytes:
    return bytes.fromhex(vector(kind, index)["hex"])


def server(model: ObjectModel | None = None, **kwargs: Any) -> ServerConnection:
    base: dict[str, Any] = {
        "server_system_title": SERVER_TITLE,
        "password": b"12345678",
        "cipher": Suite0Cipher(EK, AK),
    }
    base.update(kwargs)
    return ServerConnection(
        model or gas_meter_model(start=START, hours=48), ServerSettings(**base), lambda n: b"S" * n
    )


def only(answers: list[bytes]) -> bytes:
    assert len(answers) == 1
    return answers[0]


def associated(model: ObjectModel | None = None, **kwargs: Any) -> ServerConnection:
    """After aarq_no_security@tests/test_asce/test_aarq.py:L16."""
    conn = server(model, **kwargs)
    aare = AARE.from_bytes(only(conn.receive_apdu(apdu("aarq_no_security"))))
    assert aare.accepted
    return conn


# --- association --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["aarq_no_security", "aarq_encode", "aarq_lls"])
def test_published_aarqs_are_accepted(kind: str) -> None:
    """aarq_no_security / aarq_encode / aarq_lls @ tests/test_asce/test_aarq.py."""
    conn = server()
    aare = AARE.from_bytes(only(conn.receive_apdu(apdu(kind))))
    assert aare.accepted, vector(kind)["source"]
    initiate = aare.initiate_response
    assert isinstance(initiate, InitiateResponse)
    assert conn.state == ServerState.ASSOCIATED
    expected = Authentication.LLS if kind == "aarq_lls" else Authentication.NONE
    assert conn.level == expected


def test_wrong_lls_password_is_rejected() -> None:
    """aarq_lls@tests/test_asce/test_aarq.py:L23 against another password."""
    conn = server(password=b"87654321")
    aare = AARE.from_bytes(only(conn.receive_apdu(apdu("aarq_lls"))))
    assert aare.result == AssociationResult.REJECTED_PERMANENT
    assert aare.result_source_diagnostic.value == AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE
    assert conn.state == ServerState.IDLE


def test_unsupported_mechanism_is_rejected() -> None:
    """aarq_hls_mech2@tests/test_asce/test_aarq.py:L66: HLS mechanism 2 is not served."""
    aare = AARE.from_bytes(only(server().receive_apdu(apdu("aarq_hls_mech2"))))
    assert not aare.accepted
    assert (
        aare.result_source_diagnostic.value
        == AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED
    )


def test_hls_gmac_without_a_client_title_is_rejected() -> None:
    """aarq_hls_gmac@tests/test_asce/test_aarq.py:L32 has no calling-AP-title: no GMAC possible."""
    aare = AARE.from_bytes(only(server().receive_apdu(apdu("aarq_hls_gmac"))))
    assert not aare.accepted
    assert (
        aare.result_source_diagnostic.value
        == AcseServiceUserDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED
    )


def test_ciphered_aarq_is_accepted_and_answered_ciphered() -> None:
    """aarq_ciphered_lls@tests/test_asce/test_aarq.py:L41 (Green Book glo-initiateRequest)."""
    conn = server()
    aare = AARE.from_bytes(only(conn.receive_apdu(apdu("aarq_ciphered_lls"))))
    assert aare.accepted and aare.responding_ap_title == SERVER_TITLE
    assert aare.user_information is not None
    container = ServiceSpecificCiphered.from_bytes(aare.user_information)
    assert container.tag == 40  # glo-initiateResponse
    plain = Suite0Cipher(EK, AK).decrypt(
        SERVER_TITLE, container.security_control, container.invocation_counter, container.payload
    )
    assert isinstance(InitiateResponse.from_bytes(plain), InitiateResponse)
    assert conn.level == Authentication.LLS
    # the published glo-get-request reuses the AARQ's invocation counter: a replay
    answer = ExceptionResponse.from_bytes(only(conn.receive_apdu(apdu("glo_get_request"))))
    assert answer.service_error == ExceptionServiceError.INVOCATION_COUNTER_ERROR
    assert answer.invocation_counter == vector("glo_get_request")["keys"]["invocation_counter"] + 1


def test_published_glo_get_request_is_served() -> None:
    """glo_get_request_auth_enc@jDLMS CipheringTest: GET clock time, deciphered and answered."""
    v = vector("glo_get_request_auth_enc")
    model = gas_meter_model(start=START, hours=2)
    conn = server(model)
    # associate ciphered with the same title and keys, at a lower counter
    client = ClientConnection(
        ClientSettings(
            ciphering=Ciphering.GLOBAL,
            cipher=Suite0Cipher(EK, AK),
            client_system_title=bytes.fromhex(v["keys"]["system_title"]),
            invocation_counter=7,
        )
    )
    for answer in conn.receive_apdu(client.associate()):
        client.receive_apdu(answer)
    assert isinstance(client.next_event(), Associated)
    (answer,) = conn.receive_apdu(bytes.fromhex(v["hex"]))
    container = ServiceSpecificCiphered.from_bytes(answer)
    assert container.tag == 204  # glo-get-response
    plain = Suite0Cipher(EK, AK).decrypt(
        SERVER_TITLE, container.security_control, container.invocation_counter, container.payload
    )
    response = GetResponseNormal.from_bytes(plain)
    assert isinstance(response.result, Data) and isinstance(response.result.value, bytes)
    clock = CosemDateTime.from_bytes(response.result.value)
    assert clock.to_datetime() == START + dt.timedelta(hours=2)


def test_plain_request_in_a_ciphered_association_is_refused() -> None:
    conn = server()
    conn.receive_apdu(apdu("aarq_ciphered_lls"))
    answer = ExceptionResponse.from_bytes(only(conn.receive_apdu(apdu("get_request_normal"))))
    assert answer.service_error == ExceptionServiceError.OPERATION_NOT_POSSIBLE


# --- services -------------------------------------------------------------------------------
def test_get_request_normal_reads_the_frame_counter() -> None:
    """get_request_normal@tests/test_xdlms/test_get.py:L23: 0-0:43.1.0.255 attribute 2."""
    conn = associated()
    response = GetResponseNormal.from_bytes(only(conn.receive_apdu(apdu("get_request_normal"))))
    assert response.invoke_id_and_priority == 0xC1
    assert response.result == Data.double_long_unsigned(0)


def test_get_request_with_list() -> None:
    """get_request_with_list@tests/test_xdlms/test_get.py:L90: device name and clock."""
    conn = associated()
    answer = only(conn.receive_apdu(apdu("get_request_with_list")))
    response = GetResponseWithList.from_bytes(answer)
    name, clock = response.results
    assert name == Data.octet_string(b"DLMSDGAS0000001")
    assert isinstance(clock, Data) and isinstance(clock.value, bytes) and len(clock.value) == 12


@pytest.mark.parametrize("index", [0, 1])
def test_get_request_next_without_a_long_get(index: int) -> None:
    """get_request_next@tests/test_xdlms/test_get.py (L56, L84)."""
    conn = associated()
    answer = only(conn.receive_apdu(apdu("get_request_next", index)))
    response = GetResponseWithDataBlock.from_bytes(answer)
    assert response.result == DataAccessResult.NO_LONG_GET_IN_PROGRESS


def test_set_clock_needs_rights() -> None:
    """set_request_normal@tests/test_xdlms/test_set.py:L9: clock time, denied to the public."""
    conn = associated()
    response = SetResponseNormal.from_bytes(only(conn.receive_apdu(apdu("set_request_normal"))))
    assert response.result == DataAccessResult.READ_WRITE_DENIED


def test_hls_reply_outside_hls_is_denied() -> None:
    """action_request_normal@tests/test_xdlms/test_action.py:L9 in a public association."""
    conn = associated()
    answer = only(conn.receive_apdu(apdu("action_request_normal")))
    assert ActionResponseNormal.from_bytes(answer).result == ActionResult.READ_WRITE_DENIED


def billing_model() -> ObjectModel:
    """A 15-minute profile at 1-0:99.1.0 around 2017-10-01, as the published range read wants."""
    model = gas_meter_model(start=START, hours=2)
    columns = (
        CaptureObjectDefinition(8, ic.CLOCK, 2),
        CaptureObjectDefinition(3, Obis(1, 0, 1, 8, 0, 255), 2),
    )
    zone = dt.timezone(dt.timedelta(hours=1))
    first = dt.datetime(2017, 9, 30, 22, 0, tzinfo=zone)
    rows = [
        (
            Data.octet_string(
                CosemDateTime.from_datetime(first + dt.timedelta(minutes=15 * i)).raw
            ),
            Data.double_long_unsigned(1000 + i),
        )
        for i in range(24)
    ]
    store = ProfileStore(columns, rows, capture_period=900)
    model.add(profile_generic(Obis(1, 0, 99, 1, 0, 255), store))
    return model


def test_published_range_read_is_served() -> None:
    """get_request_with_range_descriptor@tests/test_xdlms/test_selective_access.py:L91:
    2017-10-01 00:00 to 01:00 at deviation -60: five 15-minute rows."""
    conn = associated(billing_model())
    answer = only(conn.receive_apdu(apdu("get_request_with_range_descriptor")))
    response = GetResponseNormal.from_bytes(answer)
    assert isinstance(response.result, Data)
    table = parse_buffer(response.result)
    assert [row[1] for row in table.rows] == [1008, 1009, 1010, 1011, 1012]


def test_release_then_nothing_is_served() -> None:
    """rlrq@tests/test_asce/test_rlrq.py after aarq_no_security."""
    conn = associated()
    assert isinstance(RLRE.from_bytes(only(conn.receive_apdu(apdu("rlrq")))), RLRE)
    assert conn.state == ServerState.RELEASED
    answer = only(conn.receive_apdu(apdu("get_request_normal")))
    assert answer[0] == ExceptionResponse.TAG


# --- arbitrary bytes --------------------------------------------------------------------------
def servers() -> list[ServerConnection]:
    fresh = server(gas_meter_model(start=START, hours=4))
    public = associated(gas_meter_model(start=START, hours=4))
    ciphered = server(gas_meter_model(start=START, hours=4))
    ciphered.receive_apdu(apdu("aarq_ciphered_lls"))
    return [fresh, public, ciphered]


_TAGS = st.sampled_from([0x60, 0x62, 0xC0, 0xC1, 0xC3, 0xC8, 0xD0, 0xDB, 0xE0, 0x01])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tag=_TAGS, body=st.binary(max_size=80), whole=st.binary(max_size=40))
def test_arbitrary_bytes_get_answers_not_exceptions(tag: int, body: bytes, whole: bytes) -> None:
    for data in (bytes((tag,)) + body, whole):
        for conn in servers():
            answers = conn.receive_apdu(data)
            assert isinstance(answers, list)
            assert all(isinstance(a, bytes) and a for a in answers)
