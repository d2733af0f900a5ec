"""Client-side HDLC connection state machine, driven with published frames."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.errors import DlmsError, ProtocolError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.hdlc import (
    LLC_COMMAND,
    LLC_RESPONSE,
    ApduReceived,
    Connected,
    ConnectionState,
    Control,
    Disconnected,
    FrameError,
    FrameIgnored,
    FrameKind,
    HdlcAddress,
    HdlcConnection,
    HdlcFrame,
    HdlcParameters,
    SegmentReceived,
    SendFrames,
    describe_transitions,
)
from dlmsd.protocol.hdlc.connection import ConnectionEvent
from tests.vectors import published

PUBLISHED = published()


def vector_hex(kind: str) -> str:
    (vector,) = [v for v in PUBLISHED if v["kind"] == kind]
    return str(vector["hex"])


CLIENT = HdlcAddress.client(16)
SERVER = HdlcAddress.server(1, 17)


def from_server(
    kind: FrameKind,
    information: bytes = b"",
    *,
    ssn: int = 0,
    rsn: int = 0,
    final: bool = True,
    segmented: bool = False,
) -> bytes:
    return HdlcFrame(
        CLIENT, SERVER, Control(kind, final, ssn, rsn), information, segmented
    ).to_bytes()


def state(connection: HdlcConnection) -> ConnectionState:
    # A call, so mypy does not keep the narrowing of an earlier assert.
    return connection.state


def events(connection: HdlcConnection, data: bytes = b"") -> list[ConnectionEvent]:
    connection.receive_data(data)
    found: list[ConnectionEvent] = []
    while (event := connection.next_event()) is not NEED_DATA:
        found.append(event)
    return found


def connected(ua_information: bytes = b"", **kwargs: Any) -> HdlcConnection:
    connection = HdlcConnection(16, SERVER, **kwargs)
    connection.connect()
    (event,) = events(connection, from_server(FrameKind.UA, ua_information))
    assert isinstance(event, Connected)
    return connection


def test_published_exchange_snrm_ua_aarq_aare_disc() -> None:
    # Sources: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py L112 (SNRM), L129 (UA),
    # L169 (I frame with AARQ), L200 (I frame with AARE).
    connection = HdlcConnection(16, SERVER)
    assert connection.connect().hex() == vector_hex("hdlc_snrm")
    assert state(connection) is ConnectionState.AWAITING_UA

    (event,) = events(connection, bytes.fromhex(vector_hex("hdlc_ua_with_params")))
    # The server offers 154 bytes; we proposed nothing, i.e. the default 128.
    assert event == Connected(HdlcParameters(128, 128, 1, 1))
    assert state(connection) is ConnectionState.CONNECTED

    aarq_frame = vector_hex("hdlc_i_frame_aarq")
    aarq = HdlcFrame.from_bytes(bytes.fromhex(aarq_frame)).information[3:]
    assert [frame.hex() for frame in connection.send_apdu(aarq)] == [aarq_frame]

    aare_frame = bytes.fromhex(vector_hex("hdlc_i_frame_aare"))
    (event,) = events(connection, aare_frame)
    assert event == ApduReceived(HdlcFrame.from_bytes(aare_frame).information[3:])

    disc = HdlcFrame.from_bytes(connection.disconnect())
    assert disc.kind is FrameKind.DISC
    assert (disc.destination, disc.source) == (SERVER, CLIENT)
    assert state(connection) is ConnectionState.AWAITING_DISCONNECT
    assert events(connection, from_server(FrameKind.UA)) == [Disconnected("disconnected")]
    assert state(connection) is ConnectionState.DISCONNECTED


def test_proposed_parameters_are_negotiated() -> None:
    proposed = HdlcParameters(max_info_tx=512, max_info_rx=512, window_tx=1, window_rx=1)
    connection = HdlcConnection(16, SERVER, parameters=proposed)
    snrm = HdlcFrame.from_bytes(connection.connect())
    assert HdlcParameters.from_bytes(snrm.information) == proposed
    # Source: OpenMUC jDLMS HdlcFrameTest decode1 (E650 UA: tx 128, rx 62).
    ua = bytes.fromhex(
        next(v for v in PUBLISHED if v["source"].endswith("HdlcFrameTest.java decode1"))["hex"]
    )
    information = HdlcFrame.from_bytes(ua).information
    (event,) = events(connection, from_server(FrameKind.UA, information))
    assert event == Connected(HdlcParameters(62, 128, 1, 1))


def test_segmented_send_with_window_one() -> None:
    connection = connected(HdlcParameters(max_info_rx=20).to_bytes())
    apdu = bytes(range(50))
    (first,) = connection.send_apdu(apdu)
    frames = [HdlcFrame.from_bytes(first)]
    while frames[-1].segmented:
        ssn = frames[-1].control.ssn
        (event,) = events(connection, from_server(FrameKind.RR, rsn=(ssn + 1) % 8))
        assert isinstance(event, SendFrames)
        (frame,) = event.frames
        frames.append(HdlcFrame.from_bytes(frame))
    assert [frame.control.ssn for frame in frames] == [0, 1, 2]
    assert all(frame.control.poll_final for frame in frames)
    assert b"".join(frame.information for frame in frames) == LLC_COMMAND + apdu
    assert all(len(frame.information) <= 20 for frame in frames)


def test_segmented_send_with_window_two() -> None:
    proposed = HdlcParameters(window_tx=2, window_rx=2)
    ua = HdlcParameters(max_info_rx=10, window_rx=2, window_tx=2).to_bytes()
    connection = connected(ua, parameters=proposed)
    assert connection.parameters.window_tx == 2
    sent = [HdlcFrame.from_bytes(frame) for frame in connection.send_apdu(bytes(30))]
    assert [(f.control.ssn, f.control.poll_final) for f in sent] == [(0, False), (1, True)]
    (event,) = events(connection, from_server(FrameKind.RR, rsn=2))
    assert isinstance(event, SendFrames)
    more = [HdlcFrame.from_bytes(frame) for frame in event.frames]
    assert [(f.control.ssn, f.control.poll_final) for f in more] == [(2, False), (3, True)]
    assert [f.segmented for f in sent + more] == [True, True, True, False]


def test_rnr_pauses_and_rr_resumes() -> None:
    connection = connected(HdlcParameters(max_info_rx=10).to_bytes())
    connection.send_apdu(bytes(15))
    assert events(connection, from_server(FrameKind.RNR, rsn=1)) == []
    # While busy, the timeout sends an RR poll instead of data.
    poll = HdlcFrame.from_bytes(connection.retransmit())
    assert poll.control == Control(FrameKind.RR, True, 0, 0)
    (event,) = events(connection, from_server(FrameKind.RR, rsn=1))
    assert isinstance(event, SendFrames)
    assert HdlcFrame.from_bytes(event.frames[0]).control.ssn == 1


def test_final_rr_behind_our_frames_triggers_go_back() -> None:
    connection = connected()
    (frame,) = connection.send_apdu(b"\xc0\x01")
    (event,) = events(connection, from_server(FrameKind.RR, rsn=0))
    assert event == SendFrames((frame,))


def test_segmented_response_and_acknowledge() -> None:
    connection = connected()
    connection.send_apdu(b"\xc0\x01\xc1")
    first = from_server(FrameKind.I, LLC_RESPONSE + b"\xc4\x01", ssn=0, rsn=1, segmented=True)
    assert events(connection, first) == [SegmentReceived(5)]
    rr = HdlcFrame.from_bytes(connection.acknowledge())
    assert rr.control == Control(FrameKind.RR, True, 0, 1)
    last = from_server(FrameKind.I, b"\xc1\x00", ssn=1, rsn=1)
    assert events(connection, last) == [ApduReceived(b"\xc4\x01\xc1\x00", 2)]
    # Our next I frame carries N(R) = 2.
    (frame,) = connection.send_apdu(b"\xc0")
    assert HdlcFrame.from_bytes(frame).control == Control(FrameKind.I, True, 1, 2)


def test_out_of_sequence_and_bad_nr_are_ignored() -> None:
    connection = connected()
    connection.send_apdu(b"\xc0")
    (event,) = events(connection, from_server(FrameKind.I, LLC_RESPONSE + b"\xc4", ssn=3, rsn=1))
    assert isinstance(event, FrameIgnored) and "sequence" in event.reason
    (event,) = events(connection, from_server(FrameKind.I, LLC_RESPONSE + b"\xc4", ssn=0, rsn=5))
    assert isinstance(event, FrameIgnored) and "N(R)" in event.reason
    good = from_server(FrameKind.I, LLC_RESPONSE + b"\xc4", ssn=0, rsn=1)
    assert events(connection, good) == [ApduReceived(b"\xc4")]


def test_frames_for_other_stations_are_ignored() -> None:
    connection = connected()
    other_client = HdlcFrame(HdlcAddress.client(1), SERVER, Control(FrameKind.UA)).to_bytes()
    other_server = HdlcFrame(CLIENT, HdlcAddress.server(2), Control(FrameKind.UA)).to_bytes()
    (first,) = events(connection, other_client)
    (second,) = events(connection, other_server)
    assert isinstance(first, FrameIgnored) and isinstance(second, FrameIgnored)
    # A 4-byte form of the same server address is the same station.
    same = HdlcFrame(CLIENT, HdlcAddress(1, 17, 4), Control(FrameKind.RR, True, 0, 0))
    assert events(connection, same.to_bytes()) == []


def test_dm_and_frmr() -> None:
    connection = HdlcConnection(16, SERVER)
    connection.connect()
    (event,) = events(connection, from_server(FrameKind.DM))
    assert isinstance(event, Disconnected) and "DM" in event.reason
    assert state(connection) is ConnectionState.DISCONNECTED

    connection = connected()
    (event,) = events(connection, from_server(FrameKind.FRMR, b"\x10\x00\x01"))
    assert isinstance(event, Disconnected) and "FRMR 100001" in event.reason
    with pytest.raises(ProtocolError):
        connection.send_apdu(b"\xc0")


def test_unexpected_frames_in_state() -> None:
    connection = HdlcConnection(16, SERVER)
    (event,) = events(connection, from_server(FrameKind.UA))
    assert event == FrameIgnored("UA frame in state disconnected")
    connection = connected()
    (event,) = events(connection, from_server(FrameKind.SNRM))
    assert isinstance(event, FrameIgnored)


def test_malformed_ua_parameters_disconnect() -> None:
    connection = HdlcConnection(16, SERVER)
    connection.connect()
    (event,) = events(connection, from_server(FrameKind.UA, b"\x81\x80\x05\x05"))
    assert isinstance(event, Disconnected) and "UA parameters" in event.reason


def test_ui_push_while_connected() -> None:
    # Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py L247, re-addressed to us.
    push = HdlcFrame.from_bytes(bytes.fromhex(vector_hex("hdlc_ui_frame_data_notification")))
    connection = connected()
    frame = HdlcFrame(CLIENT, SERVER, push.control, push.information).to_bytes()
    (event,) = events(connection, frame)
    assert event == ApduReceived(push.information[3:])


def test_retransmit_by_state() -> None:
    connection = HdlcConnection(16, SERVER)
    with pytest.raises(ProtocolError):
        connection.retransmit()
    snrm = connection.connect()
    assert connection.retransmit() == snrm
    events(connection, from_server(FrameKind.UA))
    (frame,) = connection.send_apdu(b"\xc0\x01")
    assert connection.retransmit() == frame
    events(connection, from_server(FrameKind.I, LLC_RESPONSE + b"\xc4", ssn=0, rsn=1))
    assert HdlcFrame.from_bytes(connection.retransmit()).kind is FrameKind.RR
    disc = connection.disconnect()
    assert connection.retransmit() == disc


def test_misuse_raises_protocol_error() -> None:
    connection = HdlcConnection(16, SERVER)
    for call in (lambda: connection.send_apdu(b""), connection.acknowledge, connection.disconnect):
        with pytest.raises(ProtocolError):
            call()
    with pytest.raises(ProtocolError):
        connected().connect()


def test_line_noise_surfaces_as_frame_error() -> None:
    connection = connected()
    (event,) = events(connection, b"\x00\x01\x02")
    assert isinstance(event, FrameError)


def test_state_table_prints_every_state() -> None:
    table = describe_transitions()
    for state in ConnectionState:
        assert state.value in table
    assert "awaiting UA          --receive UA--->  connected" in table


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    connection = connected()
    for chunk in chunks:
        events(connection, chunk)


def _decodable(byte: int) -> bool:
    try:
        Control.from_byte(byte)
    except DlmsError:
        return False
    return True


frames_from_server = st.builds(
    lambda control, information, segmented: HdlcFrame(
        CLIENT, SERVER, Control.from_byte(control), information, segmented
    ).to_bytes(),
    st.integers(0, 255).filter(_decodable),
    st.binary(max_size=20),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames_from_server, max_size=10))
def test_arbitrary_valid_frames_never_raise(frames: list[bytes]) -> None:
    connection = connected(HdlcParameters(max_info_rx=8).to_bytes())
    connection.send_apdu(bytes(20))
    for frame in frames:
        events(connection, frame)
