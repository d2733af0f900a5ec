"""Fuzz the A-XDR codec: `decode_data`, `decode_type_description`, `encode_data`.

Byte 0 chooses: odd = a type description (compact-array header) alone,
even = a data value. Checks beyond "only DlmsError": a decoded value
re-encodes and decodes to an equal value (the encoder writes the shortest
lengths, so bytes may differ from the input but values may not), and the
JSON and plain forms the sinks use never raise.
"""

from __future__ import annotations

import json

from fuzz.common import guarded, instrumented, main, vector_bytes

with instrumented():
    from dlmsd.protocol.axdr import (
        decode_data,
        decode_data_exact,
        decode_type_description,
        encode_data,
    )
    from dlmsd.protocol.errors import DlmsError, EncodeError

NAME = "axdr"
DECODERS = "axdr.decode_data, decode_type_description, encode_data"


def check(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        _check_description(data[1:])
    else:
        _check_data(data[1:])


def _check_description(data: bytes) -> None:
    description, end = decode_type_description(data, 0)
    assert 0 < end <= len(data), f"decode_type_description ended at {end} of {len(data)}"
    again, _ = decode_type_description(description.to_bytes(), 0)
    assert again == description, "type description does not survive re-encoding"


def _check_data(data: bytes) -> None:
    value, end = decode_data(data, 0)
    assert 0 < end <= len(data), f"decode_data ended at {end} of {len(data)}"
    json.dumps(value.to_json())
    value.plain()
    try:
        encoded = encode_data(value)
    except EncodeError as error:
        raise AssertionError(f"a decoded value does not encode: {error}") from error
    again = decode_data_exact(encoded)
    assert again == value, "decode -> encode -> decode changed the value"


test_one_input = guarded(check, (DlmsError,))


def seeds() -> list[bytes]:
    values = vector_bytes("axdr_", "profile_generic", "capture_object", "cosem_date_time")
    return [b"\x00" + value for value in values] + [
        b"\x01\x02\x02\x06\x12",  # structure{double-long-unsigned, long-unsigned}
        b"\x00\x13\x02\x02\x06\x12\x00\x0c\x00\x00\x00\x01\x00\x02\x00\x00\x00\x03\x00\x04",
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
