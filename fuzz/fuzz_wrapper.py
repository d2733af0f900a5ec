"""Fuzz the IEC 62056-47 wrapper: `decode_datagram` and `WrapperStreamDecoder`.

Input: byte 0 sets the read size the stream is split into (1..256), the rest
is the datagram / stream. Checks beyond "only DlmsError": a decoded datagram
re-encodes byte-exact, and the stream decoder's frames plus its pending bytes
account for every byte fed (until it raises, after which it keeps raising).
"""

from __future__ import annotations

from fuzz.common import chunks, guarded, instrumented, main, vector_bytes

with instrumented():
    from dlmsd.protocol.errors import DlmsError
    from dlmsd.protocol.events import NEED_DATA
    from dlmsd.protocol.wrapper import HEADER_LENGTH, WrapperStreamDecoder, decode_datagram

NAME = "wrapper"
DECODERS = "wrapper.decode_datagram, WrapperStreamDecoder"
# A small limit lets the fuzzer reach the over-long branch without 64 KB inputs.
STREAM_LIMIT = 512


def check(data: bytes) -> None:
    read_size = data[0] + 1 if data else 1
    body = data[1:]
    _check_datagram(body)
    _check_stream(body, read_size)


def _check_datagram(datagram: bytes) -> None:
    try:
        frame = decode_datagram(datagram)
    except DlmsError:
        return
    assert frame.to_bytes() == datagram, "decode_datagram -> to_bytes is not byte-exact"


def _check_stream(stream: bytes, read_size: int) -> None:
    decoder = WrapperStreamDecoder(STREAM_LIMIT)
    framed = 0
    for piece in chunks(stream, read_size):
        decoder.receive_data(piece)
        # Each event consumes at least a header: more than that many is a loop.
        for _ in range(len(stream) // HEADER_LENGTH + 2):
            try:
                event = decoder.next_event()
            except DlmsError:
                _assert_keeps_raising(decoder)
                return
            if event is NEED_DATA:
                break
            framed += HEADER_LENGTH + len(event.apdu)
        else:
            raise AssertionError("WrapperStreamDecoder keeps returning frames: a loop")
    assert framed + decoder.pending_bytes == len(stream), "stream bytes lost or invented"


def _assert_keeps_raising(decoder: WrapperStreamDecoder) -> None:
    decoder.receive_data(b"\x00\x01" * 8)
    try:
        decoder.next_event()
    except DlmsError:
        return
    raise AssertionError("WrapperStreamDecoder recovered after an error it cannot resync from")


test_one_input = guarded(check, (DlmsError,))


def seeds() -> list[bytes]:
    frames = vector_bytes("ip_wrapper", "udp_wrapper")
    two = b"".join(vector_bytes("udp_wrapper")[:2])
    return [bytes((size,)) + frame for frame in [*frames, two] for size in (0, 7, 255)]


if __name__ == "__main__":
    main(test_one_input, seeds)
