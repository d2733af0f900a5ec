"""The client core against published bytes (tests/data/published.json, sources cited).

Each test names the vector's ``source`` in its id or docstring.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.cosem.objects import decode_object_list
from dlmsd.protocol.apdus.acse import AARQ, Mechanism
from dlmsd.protocol.apdus.action import ActionRequestNormal, ActionResponseNormal
from dlmsd.protocol.apdus.common import CosemAttributeDescriptor
from dlmsd.protocol.apdus.get import GetRequestNext, GetResponseWithDataBlock
from dlmsd.protocol.apdus.initiate import Conformance
from dlmsd.protocol.apdus.selective import CaptureObjectDefinition, RangeDescriptor
from dlmsd.protocol.association import (
    REPLY_TO_HLS_AUTHENTICATION,
    Authentication,
    Ciphering,
    ClientSettings,
)
from dlmsd.protocol.axdr import Data, decode_data
from dlmsd.protocol.client import (
    Associated,
    AssociationRefused,
    ClientConnection,
    ClientEvent,
    ClientState,
    GetResult,
    ProtocolFailure,
)
from dlmsd.protocol.errors import DlmsError, ProtocolError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher
from tests.vectors import only_vector, vector_id


def fixed(data: bytes) -> Any:
    return lambda n: data[:n]


def events(conn: ClientConnection) -> list[ClientEvent]:
    out: list[ClientEvent] = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def associated_client(**kwargs: Any) -> ClientConnection:
    """A client past the AARE of aare_accepted (conformance 0x00501F, max PDU 500)."""
    v = only_vector("aare_accepted")
    conn = ClientConnection(ClientSettings(**kwargs))
    conn.associate()
    conn.receive_apdu(bytes.fromhex(v["hex"]))
    (event,) = events(conn)
    assert isinstance(event, Associated), vector_id(v)
    return conn


# --- AARQ ------------------------------------------------------------------------------------
def test_lls_aarq_is_byte_exact() -> None:
    """aarq_lls@tests/test_asce/test_aarq.py:L23 (encode_equal)."""
    v = only_vector("aarq_lls")
    settings = ClientSettings(
        authentication=Authentication.LLS,
        password=b"12345678",
        conformance=Conformance(0x007E1F),
        max_pdu_size=0x04B0,
    )
    assert ClientConnection(settings).associate().hex() == v["hex"], vector_id(v)


def test_ciphered_lls_aarq_is_byte_exact() -> None:
    """aarq_ciphered_lls@tests/test_asce/test_aarq.py:L41: the Green Book glo-initiateRequest.

    Its plaintext carries dedicated key 00112233..FF, so it is a dedicated-ciphering AARQ.
    """
    v = only_vector("aarq_ciphered_lls")
    keys = v["keys"]
    settings = ClientSettings(
        authentication=Authentication.LLS,
        password=b"12345678",
        ciphering=Ciphering.DEDICATED,
        cipher=Suite0Cipher(
            bytes.fromhex(keys["encryption_key"]), bytes.fromhex(keys["authentication_key"])
        ),
        client_system_title=bytes.fromhex(keys["system_title"]),
        invocation_counter=keys["invocation_counter"],
        dedicated_key=bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
        conformance=Conformance(0x007E1F),
        max_pdu_size=0x04B0,
    )
    conn = ClientConnection(settings)
    assert conn.associate().hex() == v["hex"], vector_id(v)
    assert conn.invocation_counter == keys["invocation_counter"] + 1


def test_hls_gmac_aarq_matches_the_published_one_but_for_the_title() -> None:
    """aarq_hls_gmac@tests/test_asce/test_aarq.py:L32; we add calling-AP-title (GMAC needs it)."""
    v = only_vector("aarq_hls_gmac")
    settings = ClientSettings(
        authentication=Authentication.HLS_GMAC,
        cipher=Suite0Cipher(bytes(16), bytes(16)),
        client_system_title=bytes(8),
        challenge_length=8,
        conformance=Conformance(0x007E1F),
        max_pdu_size=0x04B0,
    )
    ours = AARQ.from_bytes(ClientConnection(settings, fixed(b"K56iVagY")).associate())
    published = AARQ.from_bytes(bytes.fromhex(v["hex"]))
    assert ours.calling_ap_title == bytes(8)
    assert ours.mechanism == Mechanism.HLS_GMAC
    assert ours.calling_authentication_value == b"K56iVagY"
    assert ours.user_information == published.user_information, vector_id(v)
    assert AARQ(
        application_context=ours.application_context,
        sender_acse_requirements=True,
        mechanism=ours.mechanism,
        calling_authentication_value=ours.calling_authentication_value,
        user_information=ours.user_information,
    ).to_bytes() == bytes.fromhex(v["hex"])


# --- HLS-GMAC ------------------------------------------------------------------------------
def hls_client() -> ClientConnection:
    keys = only_vector("hls_gmac_f_stoc")["keys"]
    settings = ClientSettings(
        authentication=Authentication.HLS_GMAC,
        cipher=Suite0Cipher(
            bytes.fromhex(keys["encryption_key"]), bytes.fromhex(keys["authentication_key"])
        ),
        client_system_title=bytes.fromhex(keys["system_title"]),
        invocation_counter=keys["invocation_counter"],
    )
    conn = ClientConnection(settings, fixed(b"K56iVagY" * 2))
    conn.associate()
    return conn


def test_hls_pass_three_sends_the_published_f_stoc() -> None:
    """aare_hls_gmac@tests/test_asce/test_aare.py:L58 gives StoC 'P6wRJ21F';
    hls_gmac_f_stoc@jDLMS GmacTest (Green Book example) gives f(StoC) for it."""
    conn = hls_client()
    conn.receive_apdu(bytes.fromhex(only_vector("aare_hls_gmac")["hex"]))
    assert events(conn) == []
    assert conn.state == ClientState.AWAITING_HLS_REPLY
    (reply,) = conn.data_to_send()
    request = ActionRequestNormal.from_bytes(reply)
    assert request.method == REPLY_TO_HLS_AUTHENTICATION
    assert request.parameters == Data.octet_string(
        bytes.fromhex(only_vector("hls_gmac_f_stoc")["hex"])
    )


def test_hls_reply_from_another_key_is_refused() -> None:
    """action_response_with_data@tests/test_xdlms/test_action.py:L101 as the meter's f(CtoS):
    made with other keys (and the AARE names no meter title), so it cannot verify."""
    conn = hls_client()
    conn.receive_apdu(bytes.fromhex(only_vector("aare_hls_gmac")["hex"]))
    conn.data_to_send()
    published = ActionResponseNormal.from_bytes(
        bytes.fromhex(only_vector("action_response_with_data")["hex"])
    )
    conn.receive_apdu(
        ActionResponseNormal(0xC1, published.result, published.return_parameters).to_bytes()
    )
    (event,) = events(conn)
    assert isinstance(event, AssociationRefused)
    assert conn.state == ClientState.FAILED


@pytest.mark.parametrize(
    "kind", ["action_request_normal", "action_request_reply_to_hls_authentication"]
)
def test_published_hls_replies_have_our_shape(kind: str) -> None:
    """The published reply_to_HLS_authentication requests are what our core sends."""
    v = only_vector(kind)
    request = ActionRequestNormal.from_bytes(bytes.fromhex(v["hex"]))
    assert request.method == REPLY_TO_HLS_AUTHENTICATION, vector_id(v)
    assert isinstance(request.parameters, Data) and isinstance(request.parameters.value, bytes)
    assert len(request.parameters.value) == 17 and request.parameters.value[0] == 0x10
    assert request.to_bytes().hex() == v["hex"]


# --- association outcomes ---------------------------------------------------------------------
def test_accepted_aare_gives_conformance_and_pdu_size() -> None:
    """aare_accepted@tests/test_asce/test_aare.py:L14."""
    conn = ClientConnection(ClientSettings())
    conn.associate()
    conn.receive_apdu(bytes.fromhex(only_vector("aare_accepted")["hex"]))
    (event,) = events(conn)
    assert isinstance(event, Associated)
    assert event.conformance == Conformance(0x00501F)
    assert event.server_max_pdu_size == 500


def test_rejected_aare_gives_a_reason() -> None:
    """aare_rejected_confirmed_service_error@tests/test_asce/test_aare.py:L40."""
    conn = ClientConnection(ClientSettings())
    conn.associate()
    conn.receive_apdu(bytes.fromhex(only_vector("aare_rejected_confirmed_service_error")["hex"]))
    (event,) = events(conn)
    assert isinstance(event, AssociationRefused)
    assert "dlms_version_too_low" in event.reason
    assert conn.state == ClientState.FAILED


# --- GET ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind", ["get_request_with_range_descriptor", "get_request_with_range_descriptor_annotated"]
)
def test_range_read_request_is_byte_exact(kind: str) -> None:
    """get_request_with_range_descriptor(+annotated)@tests/test_xdlms/test_selective_access.py."""
    v = only_vector(kind)
    published = bytes.fromhex(v["hex"])
    # from/to are the two 12-byte octet-strings of the published request
    from_raw = published[published.index(bytes.fromhex("090c")) + 2 :][:12]
    to_at = published.index(bytes.fromhex("090c"), published.index(from_raw) + 12)
    to_raw = published[to_at + 2 : to_at + 14]
    descriptor = RangeDescriptor(
        CaptureObjectDefinition(8, Obis(0, 0, 1, 0, 0, 255), 2, 0),
        Data.octet_string(from_raw),
        Data.octet_string(to_raw),
    )
    conn = associated_client()
    request = conn.get(
        CosemAttributeDescriptor(7, Obis(1, 0, 99, 1, 0, 255), 2),
        descriptor.to_selective_access(),
    )
    assert request.hex() == v["hex"], vector_id(v)


def test_range_descriptor_encoding() -> None:
    """range_descriptor_encode@tests/test_xdlms/test_selective_access.py:L78."""
    v = only_vector("range_descriptor_encode")
    raw = bytes.fromhex(v["hex"])
    parameters, _ = decode_data(raw, 1)
    descriptor = RangeDescriptor.from_data(parameters)
    assert descriptor.restricting_object == CaptureObjectDefinition(8, Obis(0, 0, 1, 0, 0, 255), 2)
    assert descriptor.selected_values == ()
    assert descriptor.to_selective_access().to_bytes() == raw, vector_id(v)


def object_list_blocks() -> list[bytes]:
    v = only_vector("get_response_with_datablock_object_list")
    raw = bytes.fromhex(v["hex"])
    blocks, offset = [], 0
    for size in v["expected"]["derived"]["block_raw_data_lengths"]:
        blocks.append(raw[offset : offset + size])
        offset += size
    assert offset == len(raw)
    return blocks


def test_object_list_in_69_published_blocks() -> None:
    """get_response_with_datablock_object_list@jDLMS kamsprupDataBlockGObjectListGet.txt:
    69 blocks, 123 entries, class ids {3:66, 1:42, 4:6, 7:6, 8:2, 15:1}."""
    v = only_vector("get_response_with_datablock_object_list")
    conn = associated_client()
    conn.get(CosemAttributeDescriptor(15, Obis(0, 0, 40, 0, 0, 255), 2))
    blocks = object_list_blocks()
    for number, block in enumerate(blocks, 1):
        last = number == len(blocks)
        conn.receive_apdu(GetResponseWithDataBlock(0xC1, last, number, block).to_bytes())
        sent = conn.data_to_send()
        if not last:
            assert [GetRequestNext.from_bytes(s).block_number for s in sent] == [number]
            assert conn.next_event() is NEED_DATA
            assert conn.bytes_received == sum(map(len, blocks[:number]))
    (event,) = events(conn)
    assert isinstance(event, GetResult) and isinstance(event.result, Data)
    entries = decode_object_list(event.result)
    assert len(entries) == v["expected"]["derived"]["entries"]
    counts = Counter(str(e.class_id) for e in entries)
    assert dict(counts) == v["expected"]["derived"]["class_id_counts"], vector_id(v)


def test_block_with_a_gap_fails_the_session() -> None:
    """Block 3 after block 1 of the Kamstrup object list: out of sequence."""
    conn = associated_client()
    conn.get(CosemAttributeDescriptor(15, Obis(0, 0, 40, 0, 0, 255), 2))
    blocks = object_list_blocks()
    conn.receive_apdu(GetResponseWithDataBlock(0xC1, False, 1, blocks[0]).to_bytes())
    conn.receive_apdu(GetResponseWithDataBlock(0xC1, False, 3, blocks[2]).to_bytes())
    (event,) = events(conn)
    assert isinstance(event, ProtocolFailure) and "out of sequence" in event.reason


def test_misuse_raises_protocol_error() -> None:
    conn = ClientConnection(ClientSettings())
    with pytest.raises(ProtocolError):
        conn.get(CosemAttributeDescriptor(1, Obis(0, 0, 1, 0, 0, 255), 2))
    conn.associate()
    with pytest.raises(ProtocolError):
        conn.associate()


def test_settings_are_checked() -> None:
    with pytest.raises(DlmsError):
        ClientSettings(authentication=Authentication.HLS_GMAC)
    with pytest.raises(DlmsError):
        ClientSettings(authentication=Authentication.LLS)
    with pytest.raises(DlmsError):
        ClientSettings(max_pdu_size=5)
    assert "secret" not in repr(
        ClientSettings(authentication=Authentication.LLS, password=b"secret")
    )


# --- arbitrary bytes ---------------------------------------------------------------------
def fresh_clients() -> list[ClientConnection]:
    waiting_aare = ClientConnection(ClientSettings())
    waiting_aare.associate()
    waiting_hls = hls_client()
    waiting_get = associated_client()
    waiting_get.get(CosemAttributeDescriptor(1, Obis(0, 0, 1, 0, 0, 255), 2))
    ciphered = ClientConnection(
        ClientSettings(
            ciphering=Ciphering.GLOBAL,
            cipher=Suite0Cipher(bytes(16), bytes(16)),
            client_system_title=bytes(8),
            use_gbt=True,
        )
    )
    ciphered.associate()
    return [waiting_aare, waiting_hls, waiting_get, ciphered]


# Start from real APDU tags so the fuzzing gets past the first byte often.
_TAGS = st.sampled_from([0x61, 0x63, 0xC4, 0xC5, 0xC7, 0xD8, 0x0E, 0xE0, 0xCC, 0xDB, 0x0F])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tag=_TAGS, body=st.binary(max_size=80), whole=st.binary(max_size=40))
def test_arbitrary_bytes_never_escape(tag: int, body: bytes, whole: bytes) -> None:
    for apdu in (bytes((tag,)) + body, whole):
        for conn in fresh_clients():
            conn.receive_apdu(apdu)  # must not raise
            conn.on_timeout()
            assert all(not isinstance(sent, str) for sent in conn.data_to_send())
            events(conn)  # only events, never an exception
