"""HDLC stream decoder: flags, 0x7E inside frames, resync after noise, chunking."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.hdlc import FrameError, HdlcFrame, HdlcStreamDecoder
from tests.protocol.test_hdlc_frames import hdlc_frames
from tests.vectors import published

PUBLISHED = published()


def by_source(suffix: str) -> bytes:
    (vector,) = [v for v in PUBLISHED if v["source"].endswith(suffix)]
    return bytes.fromhex(vector["hex"])


# Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py L39 (length byte 0x7E).
SEGMENT_7E = by_source("test_hdlc.py:L39")
# Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py L247 (Norwegian HAN UI push).
UI_PUSH = by_source("test_hdlc.py:L247")
# Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py L112 (SNRM, no information field).
SNRM = by_source("test_hdlc.py:L112")
# Source: OpenMUC jDLMS HdlcFrameTest decode3 (I frame carrying an AARE).
AARE = by_source("HdlcFrameTest.java decode3")
# Source: OpenMUC jDLMS HdlcFrameTest decode5 (format length one too long).
LENIENT = by_source("HdlcFrameTest.java decode5")


def drain(decoder: HdlcStreamDecoder) -> list[HdlcFrame | FrameError]:
    events: list[HdlcFrame | FrameError] = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def frames_of(events: list[HdlcFrame | FrameError]) -> list[HdlcFrame]:
    return [event for event in events if isinstance(event, HdlcFrame)]


def feed(data: bytes, chunk: int | None = None) -> list[HdlcFrame | FrameError]:
    decoder = HdlcStreamDecoder()
    events: list[HdlcFrame | FrameError] = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        decoder.receive_data(data[start : start + step])
        events.extend(drain(decoder))
    return events


def test_frames_back_to_back_and_shared_flags() -> None:
    separate = SNRM + AARE + UI_PUSH
    shared = SNRM + AARE[1:] + UI_PUSH[1:]  # closing flag doubles as opening flag
    filled = SNRM + b"\x7e\x7e\x7e" + AARE + UI_PUSH
    expected = [HdlcFrame.from_bytes(frame) for frame in (SNRM, AARE, UI_PUSH)]
    for data in (separate, shared, filled):
        for chunk in (None, 1, 7):
            events = feed(data, chunk)
            assert events == expected


def test_flag_inside_frame_is_data() -> None:
    assert SEGMENT_7E[2] == 0x7E and SEGMENT_7E.count(0x7E) > 2
    events = feed(SEGMENT_7E + SNRM, 1)
    assert events == [HdlcFrame.from_bytes(SEGMENT_7E), HdlcFrame.from_bytes(SNRM)]


def test_garbage_before_between_and_after() -> None:
    data = b"\x01\x02garbage" + SNRM + b"\xa0\x55noise" + AARE + b"tail"
    events = feed(data)
    assert frames_of(events) == [HdlcFrame.from_bytes(SNRM), HdlcFrame.from_bytes(AARE)]
    errors = [event for event in events if isinstance(event, FrameError)]
    assert sum(error.skipped_bytes for error in errors) >= len(b"\x01\x02garbage")
    assert errors[0] == FrameError("bytes outside any HDLC frame", 9)


def test_bad_checksum_resyncs() -> None:
    corrupt = bytearray(AARE)
    corrupt[30] ^= 0x55
    events = feed(bytes(corrupt) + SNRM)
    assert isinstance(events[0], FrameError)
    assert "FCS" in events[0].reason
    assert frames_of(events) == [HdlcFrame.from_bytes(SNRM)]


def test_truncated_frame_followed_by_a_good_one() -> None:
    # A frame cut short by line noise: its length reaches into the next frame,
    # whose opening flag must still be found.
    events = feed(AARE[:20] + UI_PUSH, 13)
    assert frames_of(events) == [HdlcFrame.from_bytes(UI_PUSH)]


def test_lenient_length_frame_is_skipped_in_a_stream() -> None:
    # Decision (see test_hdlc_frames.test_lenient_length_decision): a stream never
    # trusts a wrong length; the bad frame is reported and the next one still decodes.
    events = feed(LENIENT + SNRM)
    assert isinstance(events[0], FrameError)
    assert frames_of(events) == [HdlcFrame.from_bytes(SNRM)]


def test_partial_frame_needs_data() -> None:
    decoder = HdlcStreamDecoder()
    decoder.receive_data(UI_PUSH[:-1])
    assert decoder.next_event() is NEED_DATA
    assert decoder.pending_bytes == len(UI_PUSH) - 1
    decoder.receive_data(UI_PUSH[-1:])
    assert decoder.next_event() == HdlcFrame.from_bytes(UI_PUSH)


def test_noise_only_is_reported_and_dropped() -> None:
    decoder = HdlcStreamDecoder()
    decoder.receive_data(b"\x00" * 1000)
    assert decoder.next_event() == FrameError("bytes outside any HDLC frame", 1000)
    assert decoder.next_event() is NEED_DATA
    assert decoder.pending_bytes == 0
    decoder.receive_data(b"\x7e" * 1000)
    assert decoder.next_event() is NEED_DATA
    assert decoder.pending_bytes == 1  # one flag kept to open the next frame


def test_ten_megabytes_of_noise_is_linear() -> None:
    # Mixed noise with many flags and false starts ("7E A0 ...").
    pattern = bytes(range(256)) + b"\x7e\xa0\x20\x03\x21\x10\x00\x00\x7e\xa8"
    noise = pattern * (10_000_000 // len(pattern))
    decoder = HdlcStreamDecoder()
    started = time.perf_counter()
    for start in range(0, len(noise), 65536):
        decoder.receive_data(noise[start : start + 65536])
        for event in drain(decoder):
            assert isinstance(event, FrameError)
    assert time.perf_counter() - started < 30
    assert decoder.pending_bytes < 4096


# -- properties -----------------------------------------------------------------------

garbage = st.binary(max_size=30).map(lambda data: data.replace(b"\x7e", b""))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(garbage, hdlc_frames), max_size=6), garbage, st.data())
def test_valid_frames_survive_garbage_and_chunking(
    items: list[tuple[bytes, HdlcFrame]], tail: bytes, data: st.DataObject
) -> None:
    stream = b"".join(noise + frame.to_bytes() for noise, frame in items) + tail
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = HdlcStreamDecoder()
    events: list[HdlcFrame | FrameError] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.receive_data(stream[start:end])
        events.extend(drain(decoder))
    assert frames_of(events) == [frame for _, frame in items]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=50), max_size=10))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    decoder = HdlcStreamDecoder()
    fed = 0
    for chunk in chunks:
        decoder.receive_data(chunk)
        fed += len(chunk)
        events = drain(decoder)  # returns: each call consumes or waits
        assert len(events) <= fed + 1
    assert decoder.pending_bytes <= 2050


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(hdlc_frames.map(HdlcFrame.to_bytes), st.binary(max_size=20))))
def test_mixed_frames_and_noise_never_raise(parts: list[bytes]) -> None:
    decoder = HdlcStreamDecoder()
    decoder.receive_data(b"".join(parts))
    drain(decoder)
