"""Fuzz the encrypted push path with a VALID key: `peel`, `Suite0Cipher`, `open_push`.

Random bytes never carry a valid GCM tag, so a plain fuzzer stops at the tag
check. Here the fuzzer's bytes are the *plaintext*: the harness encrypts them
with the meter's keys, wraps them in a ciphered container and a wrapper frame,
and runs the daemon's path (`decode_datagram`, `peel`, `open_push`, readings,
the JSON record). Byte 0 chooses the form:

* bits 0-1: general-glo-ciphering, general-ded-ciphering, a service-specific
  glo- APDU (system title from the "transport"), or 3 = raw bytes into
  `peel` and `open` (the attacker without keys);
* bits 2-3: security control 0x30, 0x10, 0x20 (enc-only allowed) or 0x30;
* bit 4: the meter has a push object list (bare values mapped to OBIS codes);
* bit 5 (raw form only): tamper mode: a valid frame with one byte changed
  (byte 1 says where, byte 2 the XOR), which must never be accepted.

Checks beyond "only DlmsError": a frame we encrypted always peels and
decrypts back to the plaintext; a tampered frame never opens.
"""

from __future__ import annotations

import json
from typing import Any

from fuzz.common import guarded, instrumented, main, vector_bytes

with instrumented():
    from dlmsd.cosem.readings import PushObject
    from dlmsd.protocol.ciphered import (
        CipheredApduTag,
        GeneralDedCiphering,
        GeneralGloCiphering,
        ServiceSpecificCiphered,
    )
    from dlmsd.protocol.errors import DlmsError
    from dlmsd.protocol.push import open_decrypted, peel
    from dlmsd.protocol.security import Suite0Cipher
    from dlmsd.protocol.wrapper import WrapperFrame, decode_datagram

NAME = "ciphered"
DECODERS = "push.peel + Suite0Cipher.decrypt + open_push (valid key), raw peel/decrypt"

# The published push vectors' meter (tests/data/published.json,
# tests/test_udp_message.py:L6..L9): keys "MYDUMMYGLOBALKEY".
SYSTEM_TITLE = bytes.fromhex("2F19229199164103")
KEY = b"MYDUMMYGLOBALKEY"
CIPHER = Suite0Cipher(KEY, KEY)
ENC_ONLY_CIPHER = Suite0Cipher(KEY, KEY, allow_encryption_only=True)
INVOCATION_COUNTER = 0x01020304
SECURITY = (0x30, 0x10, 0x20, 0x30)
OBJECTS = (
    PushObject.parse("0-0:1.0.0*255:2"),
    PushObject.parse("1-0:1.8.0*255:2"),
    PushObject.parse("1-0:2.8.0*255"),
)
_GLO = CipheredApduTag.GLO_EVENT_NOTIFICATION_REQUEST


def check(data: bytes) -> None:
    if not data:
        return
    control, body = data[0], data[1:]
    objects = OBJECTS if control & 0x10 else None
    form = control & 3
    if form == 3:
        if control & 0x20:
            _check_tampered(body)
        else:
            _check_raw(body, objects)
        return
    security = SECURITY[control >> 2 & 3]
    cipher = ENC_ONLY_CIPHER if security == 0x20 else CIPHER
    payload = cipher.encrypt(SYSTEM_TITLE, security, INVOCATION_COUNTER, body)
    container: GeneralGloCiphering | GeneralDedCiphering | ServiceSpecificCiphered
    if form == 0:
        container = GeneralGloCiphering(SYSTEM_TITLE, security, INVOCATION_COUNTER, payload)
    elif form == 1:
        container = GeneralDedCiphering(SYSTEM_TITLE, security, INVOCATION_COUNTER, payload)
    else:
        container = ServiceSpecificCiphered(_GLO, security, INVOCATION_COUNTER, payload)
    datagram = WrapperFrame(1, 1, container.to_bytes()).to_bytes()
    apdu = decode_datagram(datagram).apdu
    envelope = peel(apdu, SYSTEM_TITLE)
    assert envelope.system_title == SYSTEM_TITLE
    assert envelope.invocation_counter == INVOCATION_COUNTER
    plaintext = envelope.open(cipher)
    assert plaintext == body, "a frame encrypted with the meter's key did not decrypt to its body"
    _record(open_decrypted(envelope, plaintext, objects).to_record())


def _check_raw(apdu: bytes, objects: tuple[PushObject, ...] | None) -> None:
    envelope = peel(apdu, SYSTEM_TITLE)
    plaintext = envelope.open(ENC_ONLY_CIPHER)
    _record(open_decrypted(envelope, plaintext, objects).to_record())


def _check_tampered(data: bytes) -> None:
    if len(data) < 3:
        return
    where, flip, body = data[0], data[1] or 1, data[2:]
    payload = CIPHER.encrypt(SYSTEM_TITLE, 0x30, INVOCATION_COUNTER, body)
    apdu = bytearray(
        GeneralGloCiphering(SYSTEM_TITLE, 0x30, INVOCATION_COUNTER, payload).to_bytes()
    )
    apdu[where % len(apdu)] ^= flip
    try:
        envelope = peel(bytes(apdu), SYSTEM_TITLE)
        envelope.open(CIPHER)
    except DlmsError:
        return
    raise AssertionError(f"a frame with byte {where % len(apdu)} changed was accepted")


def _record(record: dict[str, object]) -> None:
    # What the daemon stores; a value JSON cannot carry would break the sinks.
    json.dumps(record, ensure_ascii=False)


test_one_input = guarded(check, (DlmsError,))


def seeds() -> list[bytes]:
    pushes = vector_bytes("udp_wrapper")
    plaintexts = [
        bytes.fromhex(vector["expected"]["derived"]["plaintext_hex"]) for vector in _push_vectors()
    ]
    plaintexts += vector_bytes("data_notification")
    seeds = [bytes((control,)) + text for text in plaintexts for control in (0, 1, 2, 4, 8, 16)]
    seeds += [b"\x03" + push[8:] for push in pushes]  # raw: the ciphered APDU
    seeds += [b"\x23\x05\x01" + text for text in plaintexts[:1]]
    return seeds


def _push_vectors() -> list[dict[str, Any]]:
    from fuzz.common import published

    return [v for v in published() if v["kind"].startswith("udp_wrapper")]


if __name__ == "__main__":
    main(test_one_input, seeds)
