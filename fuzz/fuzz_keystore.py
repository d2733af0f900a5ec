"""Fuzz the key store loader: its fast line reader and its tomllib path.

Byte 0 chooses: odd = the rest is a key file's bytes, loaded with
`load_key_file` (UTF-8 decoding included); even = the rest, decoded, goes to
`parse_key_text`, and differentially to both readers on their own: whenever
the fast reader takes a file, tomllib must read the same meters from it (or
refuse the same value). Only `KeyFileError` may escape; its message must not
carry key material.
"""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from pathlib import Path

from fuzz.common import guarded, instrumented, main

with instrumented():
    from dlmsd.service import keystore
    from dlmsd.service.keystore import KeyFileError, load_key_file, parse_key_text

NAME = "keystore"
DECODERS = "service.keystore: load_key_file, parse_key_text (fast reader + tomllib)"

_DIRECTORY = Path(tempfile.mkdtemp(prefix="dlmsd-fuzz-keys-"))
atexit.register(shutil.rmtree, _DIRECTORY, True)
_PATH = _DIRECTORY / "keys.toml"


def check(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        _PATH.write_bytes(data[1:])
        load_key_file(_PATH, check_permissions=False)
        return
    text = data[1:].decode("utf-8", errors="replace")
    _differential(text)
    parse_key_text(text)


def _outcome(read: object) -> object:
    builder = keystore._EntryBuilder(None)
    try:
        return [builder.build(*item) for item in read]  # type: ignore[attr-defined]
    except KeyFileError as error:
        return ("refused", error.reason)


def _differential(text: str) -> None:
    try:
        # Lines as load_key_file reads them from a file opened with newline="\n".
        fast = _outcome(keystore._fast_meters(io.StringIO(text, newline="\n")))
    except keystore._NotCanonical:
        return
    slow = _outcome(keystore._toml_meters(None, text))
    if isinstance(fast, tuple) and isinstance(slow, tuple):
        return  # both refuse the file (their reasons may name different first problems)
    assert fast == slow, f"fast reader and tomllib disagree: {fast!r:.200} / {slow!r:.200}"


test_one_input = guarded(check, (KeyFileError,))


def seeds() -> list[bytes]:
    text = (
        b"# keys\n"
        b"[meters.4B464D1234567890]\n"
        b'name = "gas-42"\n'
        b'encryption_key = "000102030405060708090A0B0C0D0E0F"\n'
        b'authentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"\n'
        b'labels = { site = "north", kind = "gas" }\n'
        b'security = ["auth+enc", "auth"]\n'
        b'push_object_list = ["0-0:1.0.0*255:2", "7-0:3.0.0*255"]\n'
        b"\n"
        b"[meters.2F19229199164103]\n"
        b'security = ["none"]\n'
        b'profile = "kaifa-ma304-list3-3p"\n'
    )
    return [b"\x00" + text, b"\x01" + text, b"\x00", b"\x00[meters]\n"]


if __name__ == "__main__":
    main(test_one_input, seeds)
