"""`dlmsd decode`: read hex, decode, print JSON; exit 2 with one line on bad input."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from dlmsd.decoding import CipherLookup, decode_capture
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.security import Suite0Cipher

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A problem with the command line or its input, reported as one line."""


def run_decode(args: argparse.Namespace) -> int:
    try:
        cipher_for = _cipher_lookup(args)
        system_title = _parse_hex(args.system_title, "--system-title", 8)
        records = list(_records(args, cipher_for, system_title))
    except (DlmsError, UsageError) as error:
        print(f"dlmsd decode: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for record in records:
        if args.pretty:
            print(json.dumps(record, indent=2, ensure_ascii=False))
        else:
            print(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return 0


def _records(
    args: argparse.Namespace, cipher_for: CipherLookup, system_title: bytes | None
) -> Iterator[dict[str, object]]:
    if args.quarantine:
        try:
            lines = Path(args.quarantine).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise UsageError(f"cannot read {args.quarantine}: {error.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                frame = bytes.fromhex(entry["frame_hex"])
            except (ValueError, KeyError, TypeError) as error:
                raise UsageError(f"quarantine line {number}: {error}") from None
            yield from decode_capture(frame, cipher_for, system_title)
        return
    text = sys.stdin.read() if args.hex == "-" else args.hex
    yield from decode_capture(_parse_frame(text), cipher_for, system_title)


def _parse_frame(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    if not cleaned:
        raise UsageError("no input: give the frame as hex, or '-' to read stdin")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError("input is not hex") from None


def _parse_hex(value: str | None, option: str, length: int) -> bytes | None:
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"{option} is not hex") from None
    if len(raw) != length:
        raise UsageError(f"{option} must be {length} bytes ({2 * length} hex characters)")
    return raw


def _cipher_lookup(args: argparse.Namespace) -> CipherLookup:
    if args.keys and (args.ek or args.ak):
        raise UsageError("use either --keys or --ek/--ak, not both")
    if args.keys:
        from dlmsd.service.keystore import KeyStore

        store = KeyStore.load([Path(args.keys)])

        def from_store(system_title: bytes | None) -> Suite0Cipher | None:
            entry = store.lookup(system_title) if system_title else None
            return entry.cipher if entry is not None else None

        return from_store
    if args.ek or args.ak:
        ek = _parse_hex(args.ek, "--ek", 16)
        ak = _parse_hex(args.ak, "--ak", 16) if args.ak else ek
        if ek is None or ak is None:
            raise UsageError("--ek is required with --ak")
        cipher = Suite0Cipher(ek, ak)
        return lambda _system_title: cipher
    return lambda _system_title: None
