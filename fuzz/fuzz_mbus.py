"""Fuzz wired M-Bus: `MbusStreamDecoder`, `MbusReassembler`, `MbusPushStream` and
`MbusFrame.from_bytes`.

Random bytes rarely carry a right checksum and stop byte, so half of the inputs
are *segment recipes* the harness turns into valid frames (it computes the
checksums, sometimes in the Sagemcom T210-D long-length form): that is what gets
the fuzzer into reassembly. Byte 0 chooses: odd = raw stream, even = recipes.

Checks beyond "only DlmsError": a frame `from_bytes` accepts re-encodes byte-exact;
a clean stream of valid frames comes out frame for frame whatever the read size;
no more events than bytes (a loop); every APDU out of a stream built from whole
messages is one of those messages (nothing half-accepted). Streams with a
long-length frame get only the error contract (see `check`).
"""

from __future__ import annotations

import json

from fuzz.common import ROOT, chunks, guarded, instrumented, main, stream_frames

with instrumented():
    from dlmsd.protocol.errors import DlmsError
    from dlmsd.protocol.mbus import (
        FrameError,
        MbusApdu,
        MbusFrame,
        MbusPushStream,
        MbusStreamDecoder,
        segment_apdu,
    )

NAME = "mbus"
DECODERS = "MbusStreamDecoder, MbusReassembler, MbusPushStream, MbusFrame.from_bytes"
MAX_APDU = 600  # small, so the fuzzer reaches the size limit
FIELD = ROOT / "tests" / "data" / "field"


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, read_size, rest = data[0], data[1] + 1, data[2:]
    if mode & 1:
        _check_single_frame(rest)
        _push_stream(rest, read_size)
        return
    built, messages, stream = _build_stream(rest)
    frames = _stream_frames(stream, read_size)
    apdus = _push_stream(stream, read_size)
    if any(frame.long_length for frame in built):
        # A long-length frame whose bytes at L (low byte) happen to hold a right
        # checksum and a 0x16 is a valid standard frame: the standard reading wins
        # (odds 2^-16 for real data, but the fuzzer steers the bytes).
        return
    assert frames == built, "a clean stream of valid frames did not decode frame for frame"
    for apdu in apdus:
        assert apdu in messages, "an APDU that was never sent whole came out"


def _check_single_frame(data: bytes) -> None:
    try:
        frame = MbusFrame.from_bytes(data)
    except DlmsError:
        return
    assert frame.to_bytes() == data, "MbusFrame.from_bytes -> to_bytes is not byte-exact"


def _stream_frames(stream: bytes, read_size: int) -> list[MbusFrame]:
    return stream_frames(MbusStreamDecoder(), stream, read_size, MbusFrame, FrameError)


def _push_stream(stream: bytes, read_size: int) -> list[bytes]:
    pushes = MbusPushStream(MAX_APDU)
    apdus: list[bytes] = []
    fed = produced = 0
    for piece in chunks(stream, read_size):
        events = pushes.feed(piece)
        fed += len(piece)
        produced += len(events)
        # Each event costs bytes: a frame is 11 or more (two events at most), a skip one.
        assert produced <= fed + 2, "more events than bytes"
        apdus += [event.apdu for event in events if isinstance(event, MbusApdu)]
    apdus += [event.apdu for event in pushes.finish() if isinstance(event, MbusApdu)]
    return apdus


def _build_stream(recipe: bytes) -> tuple[list[MbusFrame], set[bytes], bytes]:
    """Whole messages from a recipe: per message ``segment-size, length, APDU bytes``;
    a segment size of 251..255 makes one long-length (T210-D style) first segment."""
    frames: list[MbusFrame] = []
    messages: set[bytes] = set()
    index = 0
    while index + 2 <= len(recipe) and len(frames) < 64:
        size_byte, length = recipe[index : index + 2]
        apdu = recipe[index + 2 : index + 2 + length]
        index += 2 + length
        size = 252 if size_byte > 250 else max(size_byte, 1)
        if len(apdu) > 16 * size:
            continue
        message = segment_apdu(apdu, segment_size=size)
        frames.extend(message)
        messages.add(apdu)
    return frames, messages, b"".join(frame.to_bytes() for frame in frames)


test_one_input = guarded(check, (DlmsError,))


def seeds() -> list[bytes]:
    found: list[bytes] = []
    for path in sorted(FIELD.glob("*/*.json")):
        capture = json.loads(path.read_text(encoding="utf-8"))
        if capture.get("framing") == "mbus":
            found.append(b"\x01\x00" + bytes.fromhex(capture["hex"]))
            found.append(b"\x01\x10" + bytes.fromhex(capture["hex"]))
    # Recipes: one two-segment message, and three short ones in a row.
    found.append(b"\x00\x07" + b"\x0a\x0f" + bytes(range(15)))
    found.append(b"\x00\x00" + b"\x01\x01A" + b"\x02\x03BCD" + b"\xff\x05EFGHI")
    return found


if __name__ == "__main__":
    main(test_one_input, seeds)
