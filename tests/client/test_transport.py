"""Sans-io transports: published frames, client against server ends, faults, bad bytes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.client.errors import ConnectionClosed, LinkRefused
from dlmsd.client.transport import (
    HdlcServerTransport,
    HdlcTransport,
    WrapperServerTransport,
    WrapperTransport,
)
from dlmsd.protocol.errors import DecodeError, DlmsError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.hdlc import Control, FrameKind, HdlcAddress, HdlcFrame, HdlcParameters
from tests.vectors import only_vector, vector_params

CLIENT = HdlcAddress.client(16)
SERVER = HdlcAddress.server(1, 17)


# -- published vectors -----------------------------------------------------------------


def test_snrm_without_parameters_is_the_published_frame() -> None:
    # hdlc_snrm: dlms-cosem tests/test_hdlc/test_hdlc.py:L112 (encode_equal)
    vector = only_vector("hdlc_snrm")
    transport = HdlcTransport(16, SERVER, parameters=None)
    assert transport.connect().hex() == vector["hex"]


def test_aarq_i_frame_and_aare_answer_are_the_published_frames() -> None:
    # hdlc_i_frame_aarq / hdlc_i_frame_aare: dlms-cosem tests/test_hdlc/test_hdlc.py:L169, L200
    aarq, aare = only_vector("hdlc_i_frame_aarq"), only_vector("hdlc_i_frame_aare")
    client = HdlcTransport(16, SERVER, parameters=None)
    server = HdlcServerTransport(SERVER)
    server.receive_data(client.connect())
    assert server.next_apdu() is NEED_DATA
    for frame in server.data_to_send():
        client.receive_data(frame)
    assert client.next_apdu() is NEED_DATA and client.connected
    aarq_apdu = bytes.fromhex(aarq["expected"]["asserted"]["payload_hex"])[3:]
    (frame,) = client.frame(aarq_apdu)
    assert frame.hex() == aarq["hex"]
    server.receive_data(frame)
    assert server.next_apdu() == aarq_apdu
    aare_apdu = bytes.fromhex(aare["expected"]["asserted"]["payload_hex"])[3:]
    (answer,) = server.frame(aare_apdu)
    assert answer.hex() == aare["hex"]
    client.receive_data(answer)
    assert client.next_apdu() == aare_apdu


def test_ua_with_negotiated_parameters_is_the_published_frame() -> None:
    # hdlc_ua_with_params: dlms-cosem tests/test_hdlc/test_hdlc.py:L129 (encode_equal)
    vector = only_vector("hdlc_ua_with_params")
    server = HdlcServerTransport(SERVER, parameters=HdlcParameters(154, 154, 1, 1))
    client = HdlcTransport(16, SERVER, parameters=HdlcParameters(512, 512, 1, 1))
    server.receive_data(client.connect())
    server.next_apdu()
    (ua,) = server.data_to_send()
    assert ua.hex() == vector["hex"]
    client.receive_data(ua)
    client.next_apdu()
    assert client.parameters.max_info_tx == client.parameters.max_info_rx == 154


@pytest.mark.parametrize("vector", vector_params("ip_wrapper_header_valid"))
def test_wrapper_server_takes_the_published_frame(vector: dict[str, Any]) -> None:
    # jDLMS WrapperHeaderTest decode1: client wPort 16 to server wPort 17, 34 APDU bytes
    data = bytes.fromhex(vector["hex"])
    server = WrapperServerTransport(17)
    server.receive_data(data[:5])
    assert server.next_apdu() is NEED_DATA
    server.receive_data(data[5:])
    apdu = server.next_apdu()
    assert (
        isinstance(apdu, bytes) and len(apdu) == vector["expected"]["asserted"]["payload_length"]
    )
    assert server.client_address == 16
    (answer,) = server.frame(apdu)
    assert answer[:6] == bytes.fromhex("000100110010")  # wPorts swapped on the way back


@pytest.mark.parametrize("vector", vector_params("ip_wrapper_header_bad_version"))
def test_wrapper_with_a_bad_version_raises_a_decode_error(vector: dict[str, Any]) -> None:
    # jDLMS WrapperHeaderTest illegalVersionTest / decode2: versions 0x1001 and 2 rejected
    for transport in (WrapperServerTransport(17), WrapperTransport(16, 17)):
        transport.receive_data(bytes.fromhex(vector["hex"]))
        with pytest.raises(DecodeError):
            transport.next_apdu()


@pytest.mark.parametrize(
    "vector",
    vector_params("udp_wrapper+general_glo_ciphering_datanotification", "ip_wrapper_header"),
)
def test_udp_datagrams_give_their_apdu(vector: dict[str, Any]) -> None:
    # dlms-cosem tests/test_udp_message.py: wPorts 1 -> 1, 70 APDU bytes
    data = bytes.fromhex(vector["hex"])
    transport = WrapperTransport(1, 1, datagram=True)
    if len(data) == 8:
        with pytest.raises(DlmsError):  # a header alone announces 70 bytes it lacks
            transport.receive_data(data)
        return
    transport.receive_data(data)
    apdu = transport.next_apdu()
    assert isinstance(apdu, bytes) and len(apdu) == 70
    assert transport.next_apdu() is NEED_DATA


# -- client against server, in memory -----------------------------------------------------


def hdlc_pair(
    client_parameters: HdlcParameters, server_parameters: HdlcParameters
) -> tuple[HdlcTransport, HdlcServerTransport]:
    client = HdlcTransport(16, SERVER, parameters=client_parameters)
    server = HdlcServerTransport(SERVER, parameters=server_parameters)
    server.receive_data(client.connect())
    server.next_apdu()
    for frame in server.data_to_send():
        client.receive_data(frame)
    client.next_apdu()
    assert client.connected and server.connected
    return client, server


def exchange(
    client: HdlcTransport,
    server: HdlcServerTransport,
    request: bytes,
    answer: Any,
    lose: set[int] | None = None,
) -> tuple[bytes, bytes]:
    """Run one request/answer; frames numbered in `lose` (server to client) are lost."""
    lose = lose or set()
    sent = 0
    to_server = client.frame(request)
    received: bytes | None = None
    for _ in range(500):
        for frame in to_server:
            server.receive_data(frame)
        to_client: list[bytes] = []
        apdu = server.next_apdu()
        to_client += server.data_to_send()
        if apdu is not NEED_DATA:
            received = apdu
            to_client += server.frame(answer(apdu))
        delivered = False
        for frame in to_client:
            sent += 1
            if sent in lose:
                continue
            delivered = True
            client.receive_data(frame)
        result = client.next_apdu()
        if result is not NEED_DATA:
            assert received is not None
            return received, result
        to_server = client.data_to_send()
        if not to_server and not delivered:
            to_server = client.on_timeout()  # silence: retransmit
    raise AssertionError("no answer")


@settings(max_examples=60, deadline=None)
@given(
    request=st.binary(min_size=1, max_size=1500),
    answer_size=st.integers(1, 3000),
    client_info=st.integers(16, 300),
    server_info=st.integers(16, 300),
    client_window=st.integers(1, 7),
    server_window=st.integers(1, 7),
)
def test_segmented_apdus_cross_in_both_directions(
    request: bytes,
    answer_size: int,
    client_info: int,
    server_info: int,
    client_window: int,
    server_window: int,
) -> None:
    client, server = hdlc_pair(
        HdlcParameters(client_info, client_info, client_window, client_window),
        HdlcParameters(server_info, server_info, server_window, server_window),
    )
    answer = bytes(i & 0xFF for i in range(answer_size))
    for _ in range(2):  # sequence numbers carry on across exchanges
        received, result = exchange(client, server, request, lambda _apdu: answer)
        assert received == request and result == answer


@pytest.mark.parametrize("lost", [{1}, {2}, {3}, {2, 5}])
def test_lost_frames_are_retransmitted(lost: set[int]) -> None:
    client, server = hdlc_pair(HdlcParameters(64, 64, 1, 1), HdlcParameters(64, 64, 1, 1))
    answer = bytes(range(200))
    received, result = exchange(client, server, b"\xc0\x01", lambda _apdu: answer, lost)
    assert received == b"\xc0\x01" and result == answer


def test_corrupted_frames_are_skipped_and_counted() -> None:
    client, server = hdlc_pair(HdlcParameters(), HdlcParameters())
    for frame in client.frame(b"\xc0\x01"):
        server.receive_data(frame)
    assert server.next_apdu() == b"\xc0\x01"
    (frame,) = server.frame(b"\xc4\x01")
    broken = frame[:8] + bytes((frame[8] ^ 0xFF,)) + frame[9:]
    client.receive_data(broken)
    assert client.next_apdu() is NEED_DATA
    assert client.skipped_frames == 1
    (poll,) = client.on_timeout()  # RR with the old N(R): the server sends its answer again
    server.receive_data(poll)
    assert server.next_apdu() is NEED_DATA
    for again in server.data_to_send():
        client.receive_data(again)
    assert client.next_apdu() == b"\xc4\x01"


def test_disconnect_is_answered_with_ua() -> None:
    client, server = hdlc_pair(HdlcParameters(), HdlcParameters())
    server.receive_data(client.disconnect())
    server.next_apdu()
    for frame in server.data_to_send():
        client.receive_data(frame)
    assert client.next_apdu() is NEED_DATA
    assert client.closed and not server.connected


def test_dm_to_snrm_refuses_the_link() -> None:
    client = HdlcTransport(16, SERVER)
    client.connect()
    client.receive_data(HdlcFrame(CLIENT, SERVER, Control(FrameKind.DM)).to_bytes())
    with pytest.raises(LinkRefused):
        client.next_apdu()


def test_dm_while_connected_closes_the_link() -> None:
    client, _server = hdlc_pair(HdlcParameters(), HdlcParameters())
    client.receive_data(HdlcFrame(CLIENT, SERVER, Control(FrameKind.DM)).to_bytes())
    with pytest.raises(ConnectionClosed):
        client.next_apdu()


def test_frames_for_another_server_are_ignored() -> None:
    server = HdlcServerTransport(SERVER)
    other = HdlcTransport(16, HdlcAddress.server(1, 18))
    server.receive_data(other.connect())
    assert server.next_apdu() is NEED_DATA
    assert server.data_to_send() == []


def test_i_frame_without_a_link_gets_dm() -> None:
    server = HdlcServerTransport(SERVER)
    frame = HdlcFrame(SERVER, CLIENT, Control(FrameKind.I), b"\xe6\xe6\x00\xc0").to_bytes()
    server.receive_data(frame)
    assert server.next_apdu() is NEED_DATA
    (dm,) = server.data_to_send()
    assert HdlcFrame.from_bytes(dm).kind is FrameKind.DM


def test_wrapper_client_drops_frames_for_other_wports() -> None:
    client = WrapperTransport(1, 1)
    server = WrapperServerTransport(1)
    server.receive_data(client.frame(b"\xc0\x01")[0])
    assert server.next_apdu() == b"\xc0\x01"
    client.receive_data(server.frame(b"\xc4\x01")[0])
    other = WrapperServerTransport(1)
    other.client_address = 16
    client.receive_data(other.frame(b"\xc4\x02")[0])
    assert client.next_apdu() == b"\xc4\x01"
    assert client.next_apdu() is NEED_DATA
    assert client.ignored_frames == 1


# -- arbitrary bytes ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_only_raise_dlms_errors(chunks: list[bytes]) -> None:
    hdlc_client = HdlcTransport(16, SERVER)
    hdlc_client.connect()
    transports: list[Any] = [
        WrapperTransport(),
        WrapperServerTransport(),
        HdlcServerTransport(SERVER),
        hdlc_client,
    ]
    for transport in transports:
        for chunk in chunks:
            try:
                transport.receive_data(chunk)
                for _ in range(100):
                    if transport.next_apdu() is NEED_DATA:
                        break
                transport.data_to_send()
            except (DlmsError, ConnectionClosed, LinkRefused):
                break


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_datagrams_only_raise_dlms_errors(data: bytes) -> None:
    for transport in (WrapperTransport(datagram=True), WrapperServerTransport(datagram=True)):
        try:
            transport.receive_data(data)
            transport.next_apdu()
        except DlmsError:
            pass
