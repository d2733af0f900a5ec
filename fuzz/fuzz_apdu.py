"""Fuzz `decode_apdu` over every APDU it knows (xDLMS, ACSE, GBT, ciphered containers).

Byte 0 chooses: below 0x40 the rest goes to `decode_apdu` as is; otherwise
byte 1 picks one of the known tags and the rest is that APDU's body, so every
decoder gets its share of the executions instead of the fuzzer having to
find each tag. Checks beyond "only DlmsError": a decoded APDU that encodes
again decodes to an equal value.
"""

from __future__ import annotations

from fuzz.common import guarded, instrumented, main, vector_bytes

with instrumented():
    from dlmsd.protocol.apdus import decode_apdu, known_tags
    from dlmsd.protocol.errors import DlmsError

    # known_tags() imports every APDU module: inside this block, so they are instrumented.
    TAGS = sorted(known_tags())

NAME = "apdu"
DECODERS = "apdus.decode_apdu (every APDU tag)"


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    # Below 0x40: as is; else byte 1 picks the tag.
    apdu = data[1:] if data[0] < 0x40 else bytes((TAGS[data[1] % len(TAGS)],)) + data[2:]
    value = decode_apdu(apdu)
    to_bytes = getattr(value, "to_bytes", None)
    if to_bytes is None:
        return
    try:
        encoded = to_bytes()
    except DlmsError:
        return  # decoders may accept what the encoder refuses (e.g. reserved values)
    again = decode_apdu(encoded)
    assert again == value, f"{type(value).__name__}: decode -> encode -> decode changed it"


test_one_input = guarded(check, (DlmsError,))


def seeds() -> list[bytes]:
    apdus = [apdu for apdu in vector_bytes() if apdu and apdu[0] in TAGS]
    return [b"\x00" + apdu for apdu in apdus] + [
        b"\x80" + bytes((index,)) + apdu[1:]
        for apdu in apdus
        for index, tag in enumerate(TAGS)
        if tag == apdu[0]
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
