"""Fuzz GBT pushes inside HDLC: `HdlcFramingStream` (stream decoder, `HdlcPushAssembler`,
`GbtPushAssembler`) and `GbtPushAssembler.feed_bytes` on raw blocks.

Byte 0 chooses: odd = raw bytes (a stream, and GBT APDUs), even = a *block recipe*
the harness turns into valid HDLC frames carrying GBT blocks (checksums right),
so the fuzzer gets into the block rules: restarts, gaps, duplicates, out-of-order
blocks, plain APDUs in between, the size bound. Byte 1 is the read size.

Checks beyond "never raises": every APDU that comes out is the joined data of
blocks 1..n sent one after the other, the last with the last-block bit (nothing
half-accepted, nothing invented); no more events than frames plus bytes (a loop).
"""

from __future__ import annotations

import json

from fuzz.common import ROOT, chunks, guarded, instrumented, main

with instrumented():
    from dlmsd.protocol.errors import DlmsError
    from dlmsd.protocol.framing import HdlcFramingStream, StreamApdu, StreamEvent
    from dlmsd.protocol.gbt import GeneralBlockTransfer
    from dlmsd.protocol.gbt_push import GbtPushAssembler
    from dlmsd.protocol.hdlc.address import HdlcAddress
    from dlmsd.protocol.hdlc.frames import LLC_RESPONSE, Control, FrameKind, HdlcFrame

NAME = "gbt_hdlc"
DECODERS = "HdlcFramingStream (HdlcPushAssembler, GbtPushAssembler), GbtPushAssembler.feed_bytes"
MAX_APDU = 400  # small, so the fuzzer reaches the size bound

_CLIENT = HdlcAddress.client(16)
_SERVER = HdlcAddress.server(1, 17)


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, read_size, rest = data[0], data[1] + 1, data[2:]
    if mode & 1:
        _run_stream(rest, read_size)
        _run_raw_blocks(rest)
        return
    stream, sent = _build(rest)
    events = _run_stream(stream, read_size)
    whole = _whole_messages(sent)
    for event in events:
        if isinstance(event, StreamApdu):
            assert event.apdu in whole, "an APDU came out that no run of blocks 1..n makes"


def _run_stream(stream: bytes, read_size: int) -> list[StreamEvent]:
    decoder = HdlcFramingStream(MAX_APDU)
    events: list[StreamEvent] = []
    try:
        for piece in chunks(stream, read_size):
            events += decoder.feed(piece)
        events += decoder.finish()
    except DlmsError as error:  # the stream reports, it never raises
        raise AssertionError(f"HdlcFramingStream raised {error!r}") from None
    assert len(events) <= len(stream) + 2, "more events than bytes: a loop"
    return events


def _run_raw_blocks(data: bytes) -> None:
    assembler = GbtPushAssembler(MAX_APDU)
    for start in range(0, len(data), 16):
        events = assembler.feed_bytes(data[start : start + 16])
        assert len(events) <= 2, f"one block gave {len(events)} events"


def _build(recipe: bytes) -> tuple[bytes, list[tuple[int, bool, bytes] | bytes]]:
    """Frames from a recipe: per item ``flags, number, length, data``.

    flags: bit 0 last block, bit 1 LLC header in front, bit 2 a noise byte before
    the frame, bit 3 a plain APDU (no GBT) instead of a block. `sent` lists the
    blocks in order (number, last, data), and the plain APDUs as bytes.
    """
    parts: list[bytes] = []
    sent: list[tuple[int, bool, bytes] | bytes] = []
    index = 0
    while index + 3 <= len(recipe) and len(sent) < 64:
        flags, number, length = recipe[index : index + 3]
        payload = recipe[index + 3 : index + 3 + length % 64]
        index += 3 + length % 64
        last = bool(flags & 1)
        if flags & 8:
            information = LLC_RESPONSE + b"\x0f" + payload
            sent.append(b"\x0f" + payload)
        else:
            block = GeneralBlockTransfer(last, not last, 0, number % 8, 0, payload)
            information = (LLC_RESPONSE if flags & 2 else b"") + block.to_bytes()
            sent.append((number % 8, last, payload))
        if flags & 4:
            parts.append(bytes((flags >> 4,)))  # 0x00..0x0F: never a flag
        parts.append(HdlcFrame(_CLIENT, _SERVER, Control(FrameKind.UI), information).to_bytes())
    return b"".join(parts), sent


def _whole_messages(sent: list[tuple[int, bool, bytes] | bytes]) -> set[bytes]:
    """Every plain APDU, and every join of blocks 1..n sent back to back, block n
    being a last block."""
    whole: set[bytes] = {item for item in sent if isinstance(item, bytes)}
    for start, item in enumerate(sent):
        if isinstance(item, bytes) or item[0] != 1:
            continue
        joined = b""
        for offset, later in enumerate(sent[start:]):
            if isinstance(later, bytes) or later[0] != offset + 1:
                break
            joined += later[2]
            if later[1]:
                whole.add(joined)
                break
    return whole


test_one_input = guarded(check, ())


def seeds() -> list[bytes]:
    # Recipes: a 3-block push (LLC on block 1); a restart; a gap; a plain APDU between.
    push = b"\x02\x01\x03abc" + b"\x00\x02\x02de" + b"\x01\x03\x01f"
    restart = b"\x02\x01\x02ab" + b"\x02\x01\x02cd" + b"\x01\x02\x01e"
    gap = b"\x02\x01\x01a" + b"\x00\x03\x01b" + b"\x02\x01\x01c" + b"\x01\x02\x01d"
    plain = b"\x02\x01\x01a" + b"\x08\x00\x03xyz" + b"\x03\x01\x01q"
    seeds = [seed for recipe in (push, restart, gap, plain) for seed in _sized(recipe)]
    # Raw: a synthetic push as HDLC frames (built with dlmsd's encoders), and the real
    # Landis+Gyr GBT captures of tests/data/field/landis-gyr/ (sources cited there).
    stream, _ = _build(push)
    seeds.append(b"\x01\x07" + stream)
    for path in sorted((ROOT / "tests" / "data" / "field" / "landis-gyr").glob("*.json")):
        capture = json.loads(path.read_text(encoding="utf-8"))
        seeds.append(b"\x01\x3f" + bytes.fromhex("".join(capture["hex"].split())))
    return seeds


def _sized(recipe: bytes) -> list[bytes]:
    return [b"\x00" + bytes((size,)) + recipe for size in (0, 5, 255)]


if __name__ == "__main__":
    main(test_one_input, seeds)
