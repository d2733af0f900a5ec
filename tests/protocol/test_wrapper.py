"""IEC 62056-47 wrapper: datagrams, TCP stream splitting, published vectors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.errors import DecodeError, DlmsError, LengthError, TruncatedError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.wrapper import (
    WrapperFrame,
    WrapperStreamDecoder,
    datagram_apdu,
    decode_datagram,
    decode_header,
)
from tests.vectors import vector_params


def drain(decoder: WrapperStreamDecoder) -> list[WrapperFrame]:
    frames = []
    while (event := decoder.next_event()) is not NEED_DATA:
        assert isinstance(event, WrapperFrame)
        frames.append(event)
    return frames


# -- published vectors ---------------------------------------------------------


@pytest.mark.parametrize(
    "vector", vector_params("udp_wrapper+general_glo_ciphering_datanotification")
)
def test_udp_push_vectors(vector: dict[str, Any]) -> None:
    # Source: pwitab/dlms-cosem tests/test_udp_message.py (cited in the test id).
    data = bytes.fromhex(vector["hex"])
    frame = decode_datagram(data)
    assert (frame.version, frame.source_wport, frame.destination_wport) == (1, 1, 1)
    assert len(frame.apdu) == 70
    assert frame.apdu[0] == 0xDB  # general-glo-ciphering
    assert frame.to_bytes() == data
    asserted = vector["expected"]["asserted"]
    if isinstance(asserted, dict):
        wrapper = asserted["wrapper"]
        assert frame.source_wport == wrapper["source_wport"]
        assert frame.destination_wport == wrapper["destination_wport"]
        assert len(frame.apdu) == wrapper["length"]


@pytest.mark.parametrize("vector", vector_params("ip_wrapper_header"))
def test_header_only_vector(vector: dict[str, Any]) -> None:
    # Source: pwitab/dlms-cosem tests/test_udp_message.py L23: the 8-byte header alone.
    data = bytes.fromhex(vector["hex"])
    header = decode_header(data)
    asserted = vector["expected"]["asserted"]
    assert header.version == asserted["version"]
    assert header.source_wport == asserted["source_wport"]
    assert header.destination_wport == asserted["destination_wport"]
    assert header.length == asserted["length"]
    # Without its 70 APDU bytes it is a truncated datagram and a partial stream frame.
    with pytest.raises(TruncatedError):
        decode_datagram(data)
    decoder = WrapperStreamDecoder()
    decoder.receive_data(data)
    assert decoder.next_event() is NEED_DATA
    assert decoder.pending_bytes == 8


@pytest.mark.parametrize("vector", vector_params("ip_wrapper_header_valid"))
def test_jdlms_valid_header(vector: dict[str, Any]) -> None:
    # Source: OpenMUC jDLMS WrapperHeaderTest decode1 (cited in the test id).
    data = bytes.fromhex(vector["hex"])
    frame = decode_datagram(data)
    derived = vector["expected"]["derived"]
    assert frame.version == derived["version"]
    assert frame.source_wport == derived["source_wport"]
    assert frame.destination_wport == derived["destination_wport"]
    assert len(frame.apdu) == vector["expected"]["asserted"]["payload_length"]
    assert frame.to_bytes() == data


@pytest.mark.parametrize("vector", vector_params("ip_wrapper_header_bad_version"))
def test_bad_version_vectors(vector: dict[str, Any]) -> None:
    # Source: OpenMUC jDLMS WrapperHeaderTest illegalVersionTest / decode2.
    data = bytes.fromhex(vector["hex"])
    with pytest.raises(DecodeError, match="version") as info:
        decode_datagram(data)
    assert info.value.offset == 0
    decoder = WrapperStreamDecoder()
    decoder.receive_data(data)
    with pytest.raises(DecodeError, match="version"):
        decoder.next_event()
    # The stream cannot resync: it keeps failing until the transport drops it.
    with pytest.raises(DecodeError):
        decoder.next_event()


def test_reference_sheet_vector() -> None:
    # ../shared/docs/dlms-reference.md section 4, vector 3 in a UDP wrapper (wPorts 1 -> 1).
    apdu = bytes.fromhex(
        "DB084D4D4D0000BC614E263001234567"
        "8E1212FF9A5A45556E273B55851798F90F624704884948FC3E15574307AF2732AE"
    )
    frame = WrapperFrame(1, 1, apdu)
    assert frame.to_bytes()[:8] == bytes.fromhex("0001000100010031")
    assert decode_datagram(frame.to_bytes()) == frame


# -- datagram errors -------------------------------------------------------------


def test_datagram_length_mismatch() -> None:
    frame = WrapperFrame(16, 1, b"\x01\x02\x03").to_bytes()
    with pytest.raises(TruncatedError):
        decode_datagram(frame[:-1])
    with pytest.raises(LengthError) as info:
        decode_datagram(frame + b"\x00")
    assert info.value.offset == len(frame)
    with pytest.raises(TruncatedError):
        decode_datagram(frame[:5])


def test_datagram_length_limit() -> None:
    frame = WrapperFrame(16, 1, bytes(100)).to_bytes()
    with pytest.raises(LengthError):
        decode_datagram(frame, max_length=99)
    assert decode_datagram(frame, max_length=100).apdu == bytes(100)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(DlmsError):
        WrapperFrame(0x10000, 1, b"").to_bytes()
    with pytest.raises(DlmsError):
        WrapperFrame(1, 1, bytes(0x10000)).to_bytes()


# -- stream ------------------------------------------------------------------------


def test_stream_split_and_joined_frames() -> None:
    frames = [WrapperFrame(1, 16, bytes([n]) * n) for n in range(5)]
    data = b"".join(frame.to_bytes() for frame in frames)
    decoder = WrapperStreamDecoder()
    got: list[WrapperFrame] = []
    for byte in data:  # worst case: one byte per read
        decoder.receive_data(bytes([byte]))
        got.extend(drain(decoder))
    assert got == frames
    assert decoder.pending_bytes == 0


def test_stream_over_long_length_raises() -> None:
    decoder = WrapperStreamDecoder(max_apdu_length=10)
    decoder.receive_data(WrapperFrame(1, 1, bytes(11)).to_bytes())
    with pytest.raises(LengthError):
        decoder.next_event()


def test_stream_many_frames_is_linear() -> None:
    # 10 MB in one read must not cost O(n^2) in buffer copies.
    frame = WrapperFrame(1, 1, bytes(1000)).to_bytes()
    decoder = WrapperStreamDecoder()
    decoder.receive_data(frame * 10_000)
    assert len(drain(decoder)) == 10_000
    assert decoder.pending_bytes == 0


def test_stream_error_offset_counts_consumed_bytes() -> None:
    good = WrapperFrame(1, 1, bytes(10)).to_bytes()
    decoder = WrapperStreamDecoder()
    decoder.receive_data(good * 3)
    assert len(drain(decoder)) == 3
    decoder.receive_data(b"\x00\x02" + good[2:])
    with pytest.raises(DecodeError) as info:
        decoder.next_event()
    assert info.value.offset == 3 * len(good)


# -- properties ----------------------------------------------------------------------

wrapper_frames = st.builds(
    WrapperFrame,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
)


@settings(max_examples=300, deadline=None)
@given(wrapper_frames)
def test_datagram_round_trip(frame: WrapperFrame) -> None:
    data = frame.to_bytes()
    assert decode_datagram(data) == frame
    assert decode_datagram(data).to_bytes() == data


@settings(max_examples=200, deadline=None)
@given(st.lists(wrapper_frames, max_size=8), st.data())
def test_stream_any_chunking(frames: list[WrapperFrame], data: st.DataObject) -> None:
    stream = b"".join(frame.to_bytes() for frame in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = WrapperStreamDecoder()
    got: list[WrapperFrame] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.receive_data(stream[start:end])
        got.extend(drain(decoder))
    assert got == frames


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_datagram_arbitrary_bytes(data: bytes) -> None:
    try:
        frame = decode_datagram(data)
    except DlmsError:
        return
    assert frame.to_bytes() == data


# -- datagram_apdu: decode_datagram(...).apdu without the frame --------------------------


def apdu_or_error(decode: Any, data: bytes, max_length: int) -> Any:
    try:
        return decode(data, max_length)
    except DlmsError as error:
        return (type(error), error.offset, error.reason)


def assert_datagram_apdu_matches(data: bytes, max_length: int) -> None:
    expected = apdu_or_error(lambda d, m: decode_datagram(d, m).apdu, data, max_length)
    assert apdu_or_error(datagram_apdu, data, max_length) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(7),
        bytes.fromhex("0001000100010000"),
        bytes.fromhex("000100010001000301"),  # truncated
        bytes.fromhex("00010001000100010102"),  # trailing byte
        bytes.fromhex("0002000100010001FF"),  # version 2
        bytes.fromhex("0101000100010001FF"),  # version 0x0101
        bytes.fromhex("000100010001000A") + bytes(10),
    ],
)
@pytest.mark.parametrize("max_length", [0, 9, 10, 0xFFFF])
def test_datagram_apdu_same_results_and_errors(data: bytes, max_length: int) -> None:
    assert_datagram_apdu_matches(data, max_length)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 0xFFFF))
def test_datagram_apdu_arbitrary_bytes(data: bytes, max_length: int) -> None:
    assert_datagram_apdu_matches(data, max_length)


@settings(max_examples=500, deadline=None)
@given(wrapper_frames, st.integers(0, 9), st.integers(0, 255), st.integers(0, 310), st.data())
def test_datagram_apdu_near_valid_frames(
    frame: WrapperFrame, at: int, value: int, max_length: int, data: st.DataObject
) -> None:
    encoded = bytearray(frame.to_bytes())
    if data.draw(st.booleans()):
        encoded[at % len(encoded)] = value  # mostly the header
    cut = data.draw(st.just(len(encoded)) | st.integers(0, len(encoded)))
    extra = data.draw(st.just(b"") | st.binary(max_size=2))
    assert_datagram_apdu_matches(bytes(encoded[:cut]) + extra, max_length)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_stream_arbitrary_bytes(chunks: list[bytes]) -> None:
    decoder = WrapperStreamDecoder()
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            drain(decoder)
    except DlmsError:
        pass
