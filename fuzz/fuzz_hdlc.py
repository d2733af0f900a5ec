"""Fuzz HDLC: `HdlcStreamDecoder`, `SegmentReassembler` and `HdlcFrame.from_bytes`.

Random bytes rarely carry a right HCS and FCS, so half of the inputs are
*frame recipes* the harness turns into valid frames (it computes the
checksums): that is what gets the fuzzer into segment reassembly. Byte 0
chooses: odd = raw stream, even = recipes.

Checks beyond "only DlmsError": a frame `from_bytes` accepts re-encodes
byte-exact; a clean stream of valid frames comes out of the stream decoder
frame for frame, whatever the read size; the decoders never return more
events than there are bytes (a loop).
"""

from __future__ import annotations

from fuzz.common import guarded, instrumented, main, stream_frames, vector_bytes

with instrumented():
    from dlmsd.protocol.errors import DlmsError
    from dlmsd.protocol.hdlc.address import HdlcAddress
    from dlmsd.protocol.hdlc.events import FrameError
    from dlmsd.protocol.hdlc.frames import LLC_RESPONSE, Control, FrameKind, HdlcFrame
    from dlmsd.protocol.hdlc.reassembly import SegmentReassembler
    from dlmsd.protocol.hdlc.stream import HdlcStreamDecoder

NAME = "hdlc"
DECODERS = "HdlcStreamDecoder, SegmentReassembler, HdlcFrame.from_bytes"
MAX_APDU = 300  # small, so the fuzzer reaches the size limit

_CLIENT = HdlcAddress.client(16)
_SERVER = HdlcAddress.server(1, 17)
_OTHER = HdlcAddress.server(1, 18)


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, read_size, rest = data[0], data[1] + 1, data[2:]
    if mode & 1:
        _check_single_frame(rest)
        frames = _stream_frames(rest, read_size)
    else:
        built, noisy, stream = _build_stream(rest)
        frames = _stream_frames(stream, read_size)
        if not noisy:
            assert frames == built, "a clean stream of valid frames did not decode frame for frame"
    _reassemble(frames, require_llc=not mode & 2)


def _check_single_frame(data: bytes) -> None:
    for lenient in (False, True):
        try:
            frame = HdlcFrame.from_bytes(data, lenient_length=lenient)
        except DlmsError:
            continue
        if not lenient:
            assert frame.to_bytes() == data, "HdlcFrame.from_bytes -> to_bytes is not byte-exact"


def _stream_frames(stream: bytes, read_size: int) -> list[HdlcFrame]:
    return stream_frames(HdlcStreamDecoder(), stream, read_size, HdlcFrame, FrameError)


def _build_stream(recipe: bytes) -> tuple[list[HdlcFrame], bool, bytes]:
    """Frames from a recipe: per frame ``control-choice, flags, length, information``.

    flags: bit 0 segmented, bit 1 LLC header in front, bit 2 a noise byte before
    the frame, bit 3 from another server address.
    """
    frames: list[HdlcFrame] = []
    parts: list[bytes] = []
    noisy = False
    index = 0
    while index + 3 <= len(recipe) and len(frames) < 64:
        choice, flags, length = recipe[index : index + 3]
        information = recipe[index + 3 : index + 3 + length]
        index += 3 + length
        if flags & 2:
            information = LLC_RESPONSE + information
        if choice & 1:
            control = Control(FrameKind.UI, bool(choice & 2))
        else:
            control = Control(FrameKind.I, bool(choice & 2), (choice >> 2) & 7, (choice >> 5) & 7)
        source = _OTHER if flags & 8 else _SERVER
        frame = HdlcFrame(_CLIENT, source, control, information, bool(flags & 1))
        if flags & 4:
            parts.append(bytes((flags >> 4,)))  # 0x00..0x0F: noise, sometimes a flag-free gap
            noisy = True
        parts.append(frame.to_bytes())
        frames.append(frame)
    return frames, noisy, b"".join(parts)


def _reassemble(frames: list[HdlcFrame], require_llc: bool) -> None:
    lenient = SegmentReassembler(MAX_APDU, require_llc=require_llc)
    strict = SegmentReassembler(MAX_APDU, require_llc=require_llc)
    for frame in frames:
        events = lenient.feed(frame)
        assert len(events) <= 2, f"one frame gave {len(events)} reassembly events"
        try:
            strict.add(frame)
        except DlmsError:
            strict.reset()


test_one_input = guarded(check, (DlmsError,))


def seeds() -> list[bytes]:
    raw = vector_bytes("hdlc_frame", "hdlc_ui", "hdlc_i_frame", "hdlc_snrm", "hdlc_ua")
    seeds = [b"\x01\x00" + frame for frame in raw]
    seeds.append(b"\x01\x03" + b"".join(raw))
    # Recipes: a two-segment UI push (LLC on the first), and I frames in sequence.
    seeds.append(b"\x00\x10" + b"\x01\x03\x04ABCD" + b"\x01\x00\x02EF")
    seeds.append(b"\x00\x00" + b"\x00\x03\x02ab" + b"\x02\x01\x02cd" + b"\x04\x00\x01e")
    return seeds


if __name__ == "__main__":
    main(test_one_input, seeds)
