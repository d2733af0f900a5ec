"""`dlmsd decode`: read hex, decode, print JSON; exit 2 with one line on bad input."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from dlmsd.cosem.profiles import PROFILES, profile_named
from dlmsd.cosem.readings import Layout
from dlmsd.decoding import CipherLookup, LayoutLookup, decode_capture
from dlmsd.keysource import Keys, KeySourceError, resolve_keys
from dlmsd.protocol.errors import AuthenticationFailed, DlmsError
from dlmsd.protocol.security import Suite0Cipher

EXIT_BAD_INPUT = 2

_HEX_TEXT = re.compile(rb"[0-9A-Fa-fxX\s:]+")


class UsageError(Exception):
    """A problem with the command line or its input, reported as one line."""


def run_decode(args: argparse.Namespace) -> int:
    try:
        cipher_for, layout_for = _lookups(args)
        system_title = _parse_hex(args.system_title, "--system-title", 8)
        if getattr(args, "follow", False) or getattr(args, "device", None):
            return _follow(args, cipher_for, system_title, layout_for)
        records = list(_records(args, cipher_for, system_title, layout_for))
    except (DlmsError, UsageError, KeySourceError) as error:
        print(f"dlmsd decode: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for record in records:
        if args.pretty:
            print(json.dumps(record, indent=2, ensure_ascii=False))
        else:
            print(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return 0


def _records(
    args: argparse.Namespace,
    cipher_for: CipherLookup,
    system_title: bytes | None,
    layout_for: LayoutLookup | None = None,
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
            yield from decode_capture(frame, cipher_for, system_title, layout_for)
        return
    if getattr(args, "file", None):
        yield from decode_capture(_read_capture(args.file), cipher_for, system_title, layout_for)
        return
    text = sys.stdin.read() if args.hex == "-" else args.hex
    yield from decode_capture(_parse_frame(text), cipher_for, system_title, layout_for)


def _read_capture(path: str) -> bytes:
    """A capture file: hex text (whitespace and ':' allowed) or the raw bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    if _HEX_TEXT.fullmatch(data):
        return _parse_frame(data.decode("ascii"))
    return data


def _follow(
    args: argparse.Namespace,
    cipher_for: CipherLookup,
    system_title: bytes | None,
    layout_for: LayoutLookup | None = None,
) -> int:
    from dlmsd.decode_follow import FollowError, run_follow
    from dlmsd.protocol.framing import load_framings

    if args.hex != "-" or args.quarantine:
        raise UsageError("--follow reads stdin, --file or --device, not a hex argument")
    if args.framing is not None and args.framing not in load_framings():
        known = ", ".join(sorted(load_framings()))
        raise UsageError(f"--framing {args.framing!r} is not one of {known}")
    try:
        return run_follow(args, cipher_for, system_title, layout_for)
    except FollowError as error:
        print(f"dlmsd decode: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


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


def _lookups(args: argparse.Namespace) -> tuple[CipherLookup, LayoutLookup | None]:
    """Keys (`dlmsd.keysource`: --keys FILE, --ek/--ak or - for stdin, DLMSD_EK/DLMSD_AK),
    and with --keys each meter's push layout (push object list or profile), looked up
    as the daemon does."""
    profile_name = getattr(args, "profile", None)
    if profile_name is not None and args.keys:
        raise UsageError("use either --keys (each meter's layout) or --profile, not both")
    # stdin carries the frame (or the --follow stream) unless it comes from an argument,
    # a quarantine file, --file or --device.
    frame_on_stdin = args.hex == "-" and not (
        args.quarantine or getattr(args, "file", None) or getattr(args, "device", None)
    )
    keys = resolve_keys(args.keys, args.ek, args.ak, stdin_in_use=frame_on_stdin)
    store = keys.store
    if store is not None:

        def from_store(system_title: bytes | None) -> Suite0Cipher | None:
            entry = store.lookup(system_title) if system_title else None
            return entry.cipher if entry is not None else None

        def layout_from_store(system_title: bytes | None) -> Layout | None:
            entry = store.lookup(system_title) if system_title else None
            return entry.layout if entry is not None else None

        return from_store, layout_from_store
    cipher_for = _loose_cipher(keys)
    if profile_name is not None:
        profile = profile_named(profile_name)
        if profile is None:
            names = ", ".join(known.name for known in PROFILES)
            raise UsageError(f"unknown profile {profile_name!r} (known: {names})")
        return cipher_for, lambda _system_title: profile
    return cipher_for, None


def _loose_cipher(keys: Keys) -> CipherLookup:
    if keys.loose is not None:
        ek, ak = keys.loose.ek, keys.loose.ak
        if ek is None:
            raise UsageError("--ek (or DLMSD_EK) is required with --ak")
        # Keys given by hand for an offline look: encryption-only frames (no tag,
        # shown as "security": "enc") are decrypted too; the daemon's policy is the
        # key store's `security` list.
        cipher = (
            Suite0Cipher(ek, ak, allow_encryption_only=True)
            if ak is not None
            else _WithoutAk(ek, ek, allow_encryption_only=True)
        )
        return lambda _system_title: cipher
    return lambda _system_title: None


class _WithoutAk(Suite0Cipher):
    """``--ek`` without ``--ak``: the encryption key stands in for the missing one.

    When the tag of an authenticated frame then fails, the likely cause is the
    missing authentication key, not a forgery: say so.
    """

    __slots__ = ()

    def decrypt(
        self,
        system_title: bytes,
        security_control: int,
        invocation_counter: int,
        payload: bytes,
        *,
        extra_aad: bytes = b"",
    ) -> bytes:
        try:
            return super().decrypt(
                system_title, security_control, invocation_counter, payload, extra_aad=extra_aad
            )
        except AuthenticationFailed:
            raise AuthenticationFailed(
                "the frame is authenticated and the authentication key is missing: "
                "give --ak (without it the --ek value is tried, and the tag does not verify)"
            ) from None
