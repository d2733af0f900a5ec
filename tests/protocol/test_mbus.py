"""Wired M-Bus (EN 13757-2 long frames carrying DLMS): codec, stream decoder, reassembly.

Real frames come from tests/data/field/*/ (each file cites its source). Frames the
tests build with `segment_apdu` / `MbusFrame.to_bytes` are synthetic and labelled so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.errors import ChecksumError, DecodeError, DlmsError, LengthError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.mbus import (
    FrameError,
    MbusApdu,
    MbusFrame,
    MbusPushStream,
    MbusReassembler,
    MbusStreamDecoder,
    ReassemblyError,
    checksum,
    is_mbus_capture,
    segment_apdu,
)

FIELD = Path(__file__).resolve().parents[1] / "data" / "field"


def field(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIELD / path).read_text(encoding="utf-8"))
    return data


NETZ_NOE = field("kaifa/netz-noe-kundenschnittstelle-example.json")
TINETZ = field("kaifa/tinetz-kundenschnittstelle-example.json")
T210_D = field("sagemcom/t210-d-netz-noe-domistyle-issue-12.json")
ELSTER = field("elster/kmswest-single-frame.json")
T210_D_EVN = field("sagemcom/t210-d-evn-energyagent-test.json")
CAPTURES = [NETZ_NOE, TINETZ, T210_D, ELSTER, T210_D_EVN]


def frames_of(data: bytes, read_size: int | None = None) -> list[MbusFrame | FrameError]:
    decoder = MbusStreamDecoder()
    events: list[MbusFrame | FrameError] = []
    step = read_size or max(len(data), 1)
    for start in range(0, len(data), step):
        decoder.receive_data(data[start : start + step])
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
    return events


def apdus_of(data: bytes, read_size: int | None = None) -> list[MbusApdu | ReassemblyError]:
    stream = MbusPushStream()
    events: list[MbusApdu | ReassemblyError] = []
    step = read_size or max(len(data), 1)
    for start in range(0, len(data), step):
        events += [
            e for e in stream.feed(data[start : start + step]) if not isinstance(e, FrameError)
        ]
    return events + list(stream.finish())


# --- real captures ---------------------------------------------------------------


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda c: c["source"][:60])
def test_real_captures_frame_and_reencode_byte_exact(capture: dict[str, Any]) -> None:
    data = bytes.fromhex(capture["hex"])
    assert is_mbus_capture(data)
    frames = frames_of(data)
    assert all(isinstance(frame, MbusFrame) for frame in frames)
    assert b"".join(frame.to_bytes() for frame in frames if isinstance(frame, MbusFrame)) == data
    for frame in frames:
        assert isinstance(frame, MbusFrame)
        # Every field capture: SND_UD to the broadcast address, TSAPs 01 -> 67.
        assert (frame.control, frame.address, frame.stsap, frame.dtsap) == (0x53, 0xFF, 1, 0x67)


def test_netz_noe_example_is_two_segments() -> None:
    data = bytes.fromhex(NETZ_NOE["hex"])
    frames = frames_of(data)
    assert [f.ci for f in frames if isinstance(f, MbusFrame)] == [0x00, 0x11]
    [apdu] = apdus_of(data)
    assert isinstance(apdu, MbusApdu)
    # general-glo-ciphering from the published system title, SC 0x20, IC 35.
    assert apdu.apdu[:10] == bytes.fromhex("DB08") + bytes.fromhex(
        NETZ_NOE["keys"]["system_title"]
    )
    assert apdu.apdu[10:17] == bytes.fromhex("81F82000000023")
    assert len(apdu.apdu) == 2 + 8 + 2 + 0xF8
    assert apdu.frames == 2


def test_tinetz_example_reassembles_to_the_published_apdu() -> None:
    # doc/EXAMPLE.md prints the joined DLMS message as text: it must match byte for byte.
    published = (
        "DB084B464D10100000238201092100295B9AEFC1546E644A2C9E32EDD42CBD0F"
        "1B945B194D086885C4D8DF86DD52CB5B448854A6D548D5D270739B2A169D05B0"
        "13F9015070089D3C5FA45CA05E92309A645CC83D7DA40FBC8F4CF9C225AFA69A"
        "25FF0B2AC9C2744550ABA53CE9143FD10B0AD85FD30BD6B6DFFEE65F8204DC9C"
        "5067CA73B62E299A39D50AA730B2B9AE3836BC2F3490FB41BE5B6F930D849529"
        "76369DD7DABBB5A4354AECA1D2486CFF2EB0C6206380BA501D122AF75D716D30"
        "92C3960506A15E06FAB0EE5B7DFA3C2CDF0CAFD051B88E44B8B9FB8865F20CB8"
        "9D1143CDC7EFEB07FB4C4898E764E9E3A32DDC3D1FB46961CE962B2C78050C96"
        "598C7E4D26658043F9CBCA78189BD01B139F8AE0F739"
    )
    [apdu] = apdus_of(bytes.fromhex(TINETZ["hex"]))
    assert isinstance(apdu, MbusApdu)
    assert apdu.apdu == bytes.fromhex(published)


def test_t210_d_low_byte_length_is_proven_by_checksum_and_stop_byte() -> None:
    data = bytes.fromhex(T210_D["hex"])
    assert data[:4] == bytes.fromhex("68010168")
    first, second = frames_of(data)
    assert isinstance(first, MbusFrame) and isinstance(second, MbusFrame)
    assert first.long_length and len(first.user_data) == 257
    assert not second.long_length and second.ci == 0x11
    [apdu] = apdus_of(data)
    assert isinstance(apdu, MbusApdu)
    assert apdu.apdu[:10] == bytes.fromhex("DB085341475905EADB83")
    assert apdu.apdu[10:17] == bytes.fromhex("81F820000067C9")  # SC 0x20, IC 0x67C9
    assert len(apdu.apdu) == 260


@pytest.mark.parametrize("position", [5, 100, 261, 262])
def test_t210_d_frame_with_a_changed_byte_is_never_taken(position: int) -> None:
    # 5, 100: user data (checksum fails); 261: the checksum; 262: the stop byte.
    data = bytearray(bytes.fromhex(T210_D["hex"])[:263])
    data[position] ^= 0x01
    events = frames_of(bytes(data))
    assert not any(isinstance(event, MbusFrame) and event.long_length for event in events)


def test_t210_d_frame_waits_for_its_real_end() -> None:
    data = bytes.fromhex(T210_D["hex"])
    decoder = MbusStreamDecoder()
    decoder.receive_data(data[:262])  # one byte short of the stop byte
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(data[262:263])
    event = decoder.next_event()
    assert isinstance(event, MbusFrame) and event.long_length


def test_elster_single_frame_is_ci_0x10() -> None:
    [apdu] = apdus_of(bytes.fromhex(ELSTER["hex"]))
    assert isinstance(apdu, MbusApdu) and apdu.frames == 1
    assert apdu.apdu[2:10] == bytes.fromhex("454C536570000001")


def test_capture_starting_with_a_tail_segment_skips_it() -> None:
    # The Netz NÖ example with its first frame cut off in front of a complete push.
    data = bytes.fromhex(NETZ_NOE["hex"])
    tail = data[256:]
    events = apdus_of(tail + data)
    assert isinstance(events[0], ReassemblyError) and events[0].partial
    assert "segment 1 without the segments before it" in events[0].reason
    assert isinstance(events[1], MbusApdu) and len(events) == 2


# --- codec (synthetic frames) ------------------------------------------------------


def test_checksum_is_the_sum_modulo_256() -> None:
    assert checksum(b"") == 0
    assert checksum(bytes([0xFF, 0x02])) == 0x01


def test_frame_round_trip_and_errors() -> None:
    frame = MbusFrame(0x53, 0xFF, 0x10, 1, 0x67, b"\x0f\x00")  # synthetic
    wire = frame.to_bytes()
    assert wire == bytes.fromhex("6807076853FF1001670F00") + bytes((checksum(wire[4:-2]), 0x16))
    assert MbusFrame.from_bytes(wire) == frame
    with pytest.raises(LengthError):
        MbusFrame.from_bytes(wire + b"\x00")
    with pytest.raises(DlmsError):
        MbusFrame.from_bytes(wire[:-1])
    bad = bytearray(wire)
    bad[-2] ^= 0xFF
    with pytest.raises(ChecksumError):
        MbusFrame.from_bytes(bytes(bad))
    with pytest.raises(DecodeError):
        MbusFrame.from_bytes(bytes.fromhex("68070868") + wire[4:])  # L fields differ
    with pytest.raises(LengthError):  # no room for CI, STSAP, DTSAP
        MbusFrame.from_bytes(bytes.fromhex("6802026853FF5216"))


def test_stream_resyncs_after_noise_and_false_starts() -> None:
    apdu = bytes(range(60))
    frames = segment_apdu(apdu, segment_size=25)  # synthetic
    wire = b"".join(frame.to_bytes() for frame in frames)
    noisy = b"\xe5\x68\x05\x05\x68\x00" + wire[:40] + b"\x68" + wire[40:]
    events = frames_of(noisy, read_size=7)
    assert [e for e in events if isinstance(e, MbusFrame)] == frames[:1] + frames[2:]
    errors = [e for e in events if isinstance(e, FrameError)]
    assert errors and all(e.skipped_bytes > 0 for e in errors)
    # The stray 0x68 inside frame 2 costs that frame: its APDU is refused, never half-taken.
    assert not any(isinstance(e, MbusApdu) for e in apdus_of(noisy, 7))


def test_reassembly_refuses_gaps_duplicates_and_other_tsaps() -> None:
    frames = segment_apdu(bytes(100), segment_size=30)  # synthetic, 4 segments
    assert [f.ci for f in frames] == [0x00, 0x01, 0x02, 0x13]

    def run(order: list[MbusFrame]) -> list[MbusApdu | ReassemblyError]:
        reassembler = MbusReassembler()
        return [event for frame in order for event in reassembler.feed(frame)]

    [whole] = run(frames)
    assert isinstance(whole, MbusApdu) and whole.apdu == bytes(100)
    gap = run([frames[0], frames[1], frames[3]])
    assert [type(e) for e in gap] == [ReassemblyError]
    assert isinstance(gap[0], ReassemblyError) and "segment 3 after 1" in gap[0].reason
    duplicate = run([frames[0], frames[1], frames[1], frames[2], frames[3]])
    assert [e.reason for e in duplicate if isinstance(e, ReassemblyError)] == [
        "duplicate M-Bus segment 1"
    ]
    assert not any(isinstance(e, MbusApdu) for e in duplicate)
    other = MbusFrame(0x53, 0xFF, 0x01, 2, 0x67, bytes(30))
    mixed = run([frames[0], other, frames[2], frames[3]])
    assert not any(isinstance(e, MbusApdu) for e in mixed)
    # A restart (segment 0 again) drops the partial APDU as "partial" and takes the new one.
    restart = run([frames[0], frames[1], *frames])
    assert isinstance(restart[0], ReassemblyError) and restart[0].partial
    assert isinstance(restart[1], MbusApdu) and restart[1].apdu == bytes(100)


def test_non_transport_ci_is_refused() -> None:
    reassembler = MbusReassembler()
    [event] = reassembler.feed(MbusFrame(0x08, 0x01, 0x72, 0, 0, b"abc"))  # EN 13757-3 data
    assert isinstance(event, ReassemblyError) and not event.partial
    assert "0x72" in event.reason


def test_size_bound_refuses_the_whole_apdu() -> None:
    reassembler = MbusReassembler(max_apdu_length=50)
    frames = segment_apdu(bytes(80), segment_size=30)  # synthetic
    events = [event for frame in frames for event in reassembler.feed(frame)]
    assert len(events) == 1 and isinstance(events[0], ReassemblyError)
    assert isinstance(events[0].error, LengthError)
    # The next APDU is taken again.
    [ok] = [e for f in segment_apdu(b"x" * 40, segment_size=30) for e in reassembler.feed(f)]
    assert isinstance(ok, MbusApdu)


def test_truncated_input_ends_with_an_error_not_a_loop() -> None:
    wire = b"".join(f.to_bytes() for f in segment_apdu(bytes(300), segment_size=200))
    for cut in range(len(wire)):
        stream = MbusPushStream()
        events = stream.feed(wire[:cut]) + list(stream.finish())
        assert not any(isinstance(e, MbusApdu) for e in events)
        assert len(events) <= cut + 2


# --- properties (synthetic streams) --------------------------------------------------


def _messages() -> st.SearchStrategy[list[tuple[bytes, int]]]:
    return st.lists(
        st.tuples(st.binary(min_size=1, max_size=600), st.integers(1, 300)),
        min_size=1,
        max_size=5,
    ).filter(lambda items: all(len(a) <= 16 * size for a, size in items))


def _wire(messages: list[tuple[bytes, int]]) -> list[MbusFrame]:
    return [frame for apdu, size in messages for frame in segment_apdu(apdu, segment_size=size)]


@settings(max_examples=200, deadline=None, database=None)
@given(_messages(), st.integers(1, 97))
def test_clean_streams_decode_whole_at_any_read_size(
    messages: list[tuple[bytes, int]], read_size: int
) -> None:
    data = b"".join(frame.to_bytes() for frame in _wire(messages))
    events = apdus_of(data, read_size)
    assert [e.apdu for e in events if isinstance(e, MbusApdu)] == [a for a, _ in messages]
    assert not any(isinstance(e, ReassemblyError) for e in events)


@settings(max_examples=300, deadline=None, database=None)
@given(
    _messages(),
    st.sampled_from(["gap", "duplicate", "restart", "truncate", "noise"]),
    st.data(),
)
def test_damaged_streams_never_yield_a_message_that_was_not_whole(
    messages: list[tuple[bytes, int]], damage: str, data: st.DataObject
) -> None:
    # The damage a serial line does: one frame lost or repeated, a push cut short by
    # a meter restart (its last segments never sent), the capture cut, noise.
    per_message = [segment_apdu(apdu, segment_size=size) for apdu, size in messages]
    if damage == "restart":
        which = data.draw(st.integers(0, len(per_message) - 1))
        keep = data.draw(st.integers(1, len(per_message[which])))
        per_message[which] = per_message[which][:keep]
    frames = [frame for message in per_message for frame in message]
    index = data.draw(st.integers(0, len(frames) - 1))
    if damage == "gap":
        del frames[index]
    elif damage == "duplicate":
        frames.insert(index, frames[index])
    wire = b"".join(frame.to_bytes() for frame in frames)
    if damage == "truncate":
        wire = wire[: data.draw(st.integers(0, len(wire)))]
    if damage == "noise":
        at = data.draw(st.integers(0, len(wire)))
        wire = wire[:at] + data.draw(st.binary(min_size=1, max_size=20)) + wire[at:]
    events = apdus_of(wire, data.draw(st.integers(1, 300)))
    whole = {apdu for apdu, _ in messages}
    for event in events:
        if isinstance(event, MbusApdu):
            assert event.apdu in whole, "an APDU that was never sent whole came out"


def test_the_transport_cannot_tell_two_losses_in_a_row() -> None:
    # The limit of the M-Bus transport (no message id): losing the last segment of
    # one push and the first of the next joins the two halves. Only the DLMS layer
    # can refuse that: the GCM tag of an authenticated push (the daemon's default
    # policy) or the APDU's own length; encryption-only pushes have no tag.
    first = segment_apdu(b"A" * 40, segment_size=20)  # synthetic
    second = segment_apdu(b"B" * 40, segment_size=20)
    reassembler = MbusReassembler()
    events = [e for f in (first[0], second[1]) for e in reassembler.feed(f)]
    assert [e.apdu for e in events if isinstance(e, MbusApdu)] == [b"A" * 20 + b"B" * 20]


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_raise_nothing_and_terminate(chunks: list[bytes]) -> None:
    stream = MbusPushStream(max_apdu_length=500)
    fed = produced = 0
    for chunk in chunks:
        fed += len(chunk)
        produced += len(stream.feed(chunk))
        assert produced <= fed + 2  # every event costs bytes: no loop
    stream.finish()


def test_a_false_start_that_looks_like_a_long_frame_holds_back_until_the_end() -> None:
    # "68 05 05 68 53 FF 00 .." starts like a DLMS segment whose checksum fails: it
    # might be a T210-D long frame, so the bytes behind it wait (live line), and at
    # the end of a capture they are decided without it.
    wire = MbusFrame(0x53, 0xFF, 0x10, 1, 0x67, b"push").to_bytes()  # synthetic
    noisy = bytes.fromhex("68050568 53FF000167 00 16") + wire
    stream = MbusPushStream()
    assert not any(isinstance(e, MbusApdu) for e in stream.feed(noisy))
    assert [e.apdu for e in stream.finish() if isinstance(e, MbusApdu)] == [b"push"]
