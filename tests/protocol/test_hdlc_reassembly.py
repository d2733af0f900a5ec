"""Segmented APDUs over HDLC I/UI frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.errors import DecodeError, DlmsError, LengthError
from dlmsd.protocol.hdlc import (
    LLC_RESPONSE,
    ApduReceived,
    Control,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    ReassemblyError,
    SegmentReassembler,
)
from tests.vectors import published

PUBLISHED = published()

METER = HdlcAddress.server(1, 17)
CLIENT = HdlcAddress.client(16)


def ui(information: bytes, segmented: bool, source: HdlcAddress = METER) -> HdlcFrame:
    return HdlcFrame(CLIENT, source, Control(FrameKind.UI), information, segmented)


def i_frame(information: bytes, segmented: bool, ssn: int) -> HdlcFrame:
    return HdlcFrame(CLIENT, METER, Control(FrameKind.I, True, ssn, 0), information, segmented)


def split(apdu: bytes, size: int) -> list[bytes]:
    information = LLC_RESPONSE + apdu
    return [information[start : start + size] for start in range(0, len(information), size)]


def test_ui_push_vector_single_frame() -> None:
    # Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py L247 (Norwegian HAN push).
    (vector,) = [v for v in PUBLISHED if v["kind"] == "hdlc_ui_frame_data_notification"]
    frame = HdlcFrame.from_bytes(bytes.fromhex(vector["hex"]))
    reassembler = SegmentReassembler()
    apdu = reassembler.add(frame)
    assert apdu is not None and apdu[0] == 0x0F
    assert apdu == frame.information[3:]
    assert not reassembler.pending


def test_push_split_over_ui_frames() -> None:
    apdu = bytes(range(256)) * 3
    parts = split(apdu, 100)
    reassembler = SegmentReassembler()
    for part in parts[:-1]:
        assert reassembler.feed(ui(part, True)) == []
        assert reassembler.pending
    assert reassembler.feed(ui(parts[-1], False)) == [ApduReceived(apdu, len(parts))]
    assert not reassembler.pending


def test_segmented_vector_frame_continues() -> None:
    # Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py L39: a segmented I frame
    # (ssn 3) in the middle of a long response; it carries no LLC header.
    (vector,) = [v for v in PUBLISHED if v["kind"] == "hdlc_frame_address_extraction"]
    middle = HdlcFrame.from_bytes(bytes.fromhex(vector["hex"]))
    assert middle.segmented and middle.control.ssn == 3
    first = HdlcFrame(
        middle.destination,
        middle.source,
        Control(FrameKind.I, True, 2, 3),
        LLC_RESPONSE + b"\xc4\x01\x81\x00",
        True,
    )
    last = HdlcFrame(
        middle.destination, middle.source, Control(FrameKind.I, True, 4, 5), b"\x00", False
    )
    reassembler = SegmentReassembler()
    assert reassembler.feed(first) == []
    assert reassembler.feed(middle) == []
    (event,) = reassembler.feed(last)
    assert event == ApduReceived(b"\xc4\x01\x81\x00" + middle.information + b"\x00", 3)


def test_new_apdu_while_pending_drops_the_partial() -> None:
    reassembler = SegmentReassembler()
    reassembler.feed(ui(LLC_RESPONSE + b"\x0f\x01", True))
    events = reassembler.feed(ui(LLC_RESPONSE + b"\x0f\x02", False))
    assert len(events) == 2
    assert isinstance(events[0], ReassemblyError)
    assert events[0].dropped_bytes == 2
    assert "new APDU" in events[0].reason
    assert events[1] == ApduReceived(b"\x0f\x02")


def test_other_sender_kind_or_sequence_gap_drops_the_partial() -> None:
    other = HdlcAddress.server(1, 18)
    reassembler = SegmentReassembler()
    reassembler.feed(ui(LLC_RESPONSE + b"\x0f", True))
    (error,) = reassembler.feed(ui(b"\x01", False, source=other))[:1]
    assert isinstance(error, ReassemblyError) and "address" in error.reason

    reassembler.feed(i_frame(LLC_RESPONSE + b"\xc4", True, 0))
    events = reassembler.feed(i_frame(b"\x01", False, 2))
    assert isinstance(events[0], ReassemblyError) and "sequence" in events[0].reason

    reassembler.feed(i_frame(LLC_RESPONSE + b"\xc4", True, 0))
    events = reassembler.feed(ui(LLC_RESPONSE + b"\x0f", False))
    assert isinstance(events[0], ReassemblyError) and "kind" in events[0].reason
    assert events[1] == ApduReceived(b"\x0f")


def test_size_bound() -> None:
    reassembler = SegmentReassembler(max_apdu_length=50)
    reassembler.feed(ui(LLC_RESPONSE + bytes(30), True))
    (event,) = reassembler.feed(ui(bytes(30), True))
    assert isinstance(event, ReassemblyError)
    assert isinstance(event.error, LengthError)
    assert event.dropped_bytes == 60
    # The rest of the oversized APDU is skipped, then decoding resumes.
    assert reassembler.feed(ui(bytes(30), True)) == []
    assert reassembler.feed(ui(bytes(30), False)) == []
    assert reassembler.feed(ui(LLC_RESPONSE + b"\x0f", False)) == [ApduReceived(b"\x0f")]
    with pytest.raises(LengthError):
        SegmentReassembler(max_apdu_length=2).add(ui(LLC_RESPONSE + b"\x0f\x00\x00", False))


def test_missing_llc() -> None:
    with pytest.raises(DecodeError, match="LLC"):
        SegmentReassembler().add(ui(b"\x0f\x00", False))
    lenient = SegmentReassembler(require_llc=False)
    assert lenient.add(ui(b"\x0f\x00", False)) == b"\x0f\x00"


def test_other_frame_kinds_are_ignored() -> None:
    reassembler = SegmentReassembler()
    rr = HdlcFrame(CLIENT, METER, Control(FrameKind.RR, True, 0, 1))
    assert reassembler.feed(rr) == []
    reassembler.feed(ui(LLC_RESPONSE + b"\x0f", True))
    assert reassembler.reset() == 1
    assert not reassembler.pending


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(3, 200))  # the LLC header is never split
def test_any_split_reassembles(apdu: bytes, size: int) -> None:
    parts = split(apdu, size)
    reassembler = SegmentReassembler()
    results = [
        reassembler.add(i_frame(part, index < len(parts) - 1, index % 8))
        for index, part in enumerate(parts)
    ]
    assert results[-1] == apdu
    assert all(result is None for result in results[:-1])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.booleans(), st.booleans()), max_size=12))
def test_arbitrary_frames_never_raise_from_feed(parts: list[tuple[bytes, bool, bool]]) -> None:
    reassembler = SegmentReassembler(max_apdu_length=100)
    for information, segmented, use_ui in parts:
        frame = ui(information, segmented) if use_ui else i_frame(information, segmented, 0)
        for event in reassembler.feed(frame):
            if isinstance(event, ReassemblyError):
                assert isinstance(event.error, DlmsError)
            else:
                assert len(event.apdu) <= 100


def test_llc_lookalike_continuation() -> None:
    # I frames are chained by N(S), so a continuation that happens to start with
    # E6 E7 00 is still appended; UI frames have only the LLC header to go by.
    reassembler = SegmentReassembler()
    reassembler.feed(i_frame(LLC_RESPONSE + b"\xc4", True, 0))
    assert reassembler.feed(i_frame(LLC_RESPONSE, False, 1)) == [
        ApduReceived(b"\xc4" + LLC_RESPONSE, 2)
    ]
    reassembler.feed(ui(LLC_RESPONSE + b"\x0f", True))
    events = reassembler.feed(ui(LLC_RESPONSE + b"\x01", False))
    assert isinstance(events[0], ReassemblyError)
    assert events[1] == ApduReceived(b"\x01")
