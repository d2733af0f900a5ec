"""`dlmsd keys add|list|check|reload|set|remove`: manage a key store file, never printing keys.

`add` appends a meter table to the file's text (comments and layout are kept),
validates the whole result as the daemon would, and replaces the file
atomically (temp file + rename) with mode 0600.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any, TextIO

from dlmsd.keysource import AK_ENV, EK_ENV, KeySourceError, add_key_options, resolve_keys
from dlmsd.service.keyfile import toml_key, toml_string, write_atomically
from dlmsd.service.keystore import (
    DEFAULT_SECURITY,
    SECURITY_FORMS,
    KeyFileError,
    MeterEntry,
    load_key_file,
    parse_key_text,
)

EXIT_OK = 0
EXIT_ERROR = 2

_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")


class _UsageError(Exception):
    pass


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys add|list|check|reload`` to the ``dlmsd`` command's subparsers."""
    keys = subparsers.add_parser(
        "keys",
        help="manage a key store file (never prints keys)",
        description="Add, list and check meters in a key store file.",
    )
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True

    add = sub.add_parser("add", help="add a meter (creates the file with mode 0600)")
    add.add_argument("system_title", metavar="SYSTEM_TITLE", help="16 hex characters")
    add.add_argument("--name", help="a name for logs and records")
    add_key_options(
        add, keys_help="another key store file: copy the keys of its SYSTEM_TITLE entry"
    )
    add.add_argument(
        "--generate", action="store_true", help="generate random keys (read them from the file)"
    )
    add.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    add.add_argument(
        "--security",
        action="append",
        choices=SECURITY_FORMS,
        help="an allowed security form, repeatable (default: auth+enc)",
    )
    add.add_argument("--file", required=True, type=Path, help="the key store file")
    add.set_defaults(func=run_add)

    listing = sub.add_parser("list", help="list meters (title, id, name, labels, security)")
    listing.add_argument("--file", required=True, type=Path, help="the key store file")
    listing.set_defaults(func=run_list)

    check = sub.add_parser("check", help="validate a key file and its permissions")
    check.add_argument("--file", required=True, type=Path, help="the key store file")
    check.set_defaults(func=run_check)

    from dlmsd.service.keys_reload import register_reload

    register_reload(sub)

    from dlmsd.service.keys_edit import register_edit  # keys set|remove

    register_edit(sub)


def _fail(command: str, message: str, err: TextIO | None = None) -> int:
    print(f"dlmsd keys {command}: {message}", file=err or sys.stderr)
    return EXIT_ERROR


def run_check(args: argparse.Namespace) -> int:
    """Validate the file as the daemon would load it; one line either way."""
    try:
        entries = load_key_file(args.file, check_permissions=True)
    except KeyFileError as exc:
        return _fail("check", str(exc))
    print(f"{args.file}: ok, {len(entries)} meters")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    """One tab-separated line per meter; keys are never printed."""
    try:
        # Listing reveals no key, so a too-open file is still listed (`check` flags it).
        entries = load_key_file(args.file, check_permissions=False)
    except KeyFileError as exc:
        return _fail("list", str(exc))
    print("system_title\tid\tname\tlabels\tsecurity")
    for entry in sorted(entries, key=lambda item: item.system_title):
        print(_list_line(entry))
    return EXIT_OK


def _list_line(entry: MeterEntry) -> str:
    labels = ",".join(f"{key}={value}" for key, value in entry.labels.items())
    security = ",".join(form for form in SECURITY_FORMS if form in entry.allowed_security)
    return "\t".join(
        (
            entry.system_title.hex().upper(),
            entry.display_id,
            entry.name or "-",
            labels or "-",
            security,
        )
    )


def run_add(args: argparse.Namespace) -> int:
    """Append a meter, validate the result, replace the file atomically (0600)."""
    try:
        path: Path = args.file
        block = _meter_block(args)
        old_text = _read_existing(path)
        title = bytes.fromhex(args.system_title)
        if any(entry.system_title == title for entry in parse_key_text(old_text, path)):
            raise _UsageError(f"{path}: meters.{title.hex().upper()} is already defined")
        new_text = old_text
        if new_text and not new_text.endswith("\n"):
            new_text += "\n"
        new_text += ("\n" if new_text else "") + block
        _validate(path, new_text)
        _write_atomically(path, new_text)
    except (_UsageError, KeyFileError) as exc:
        return _fail("add", str(exc))
    except OSError as exc:
        return _fail("add", f"{args.file}: {exc.strerror}")
    how = "generated keys" if args.generate else "keys"
    print(f"added {args.system_title.upper()} to {path} ({how} stored in the file, mode 0600)")
    return EXIT_OK


def _meter_block(args: Any) -> str:
    title = args.system_title
    if not _HEX16.fullmatch(title):
        raise _UsageError("SYSTEM_TITLE must be 16 hex characters (8 bytes)")
    authentication_key: str | None
    if args.generate:
        if args.ek or args.ak or args.keys:
            raise _UsageError("--generate makes the keys: no --ek, --ak or --keys with it")
        encryption_key = secrets.token_hex(16).upper()
        authentication_key = secrets.token_hex(16).upper()
    else:
        # An encryption-only meter (M-Bus customer interface) has one key.
        encryption_only = not set(args.security or DEFAULT_SECURITY) & {"auth", "auth+enc"}
        encryption, authentication = _given_keys(
            args, bytes.fromhex(title), need_ak=not encryption_only
        )
        encryption_key = encryption.hex().upper()
        authentication_key = authentication.hex().upper() if authentication else None
    lines = [f"[meters.{title.upper()}]"]
    if args.name is not None:
        lines.append(f"name = {toml_string(args.name)}")
    lines.append(f'encryption_key = "{encryption_key}"')
    if authentication_key is not None:
        lines.append(f'authentication_key = "{authentication_key}"')
    labels = []
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"--label expects KEY=VALUE, got {item!r}")
        labels.append(f"{toml_key(key)} = {toml_string(value)}")
    if labels:
        lines.append(f"labels = {{ {', '.join(labels)} }}")
    security = args.security or sorted(DEFAULT_SECURITY)
    if set(security) != DEFAULT_SECURITY:
        forms = ", ".join(toml_string(form) for form in dict.fromkeys(security))
        lines.append(f"security = [{forms}]")
    return "\n".join(lines) + "\n"


def _given_keys(args: Any, title: bytes, *, need_ak: bool) -> tuple[bytes, bytes | None]:
    """EK and AK from --keys FILE, --ek/--ak (hex or - for stdin) or DLMSD_EK/DLMSD_AK.

    The AK may be absent only where the meter is encryption-only (``need_ak`` false).
    """
    try:
        given = resolve_keys(args.keys, args.ek, args.ak)
    except KeySourceError as error:
        raise _UsageError(str(error)) from None
    if given.store is not None:
        entry = given.store.lookup(title)
        if entry is None or entry.encryption_key is None:
            raise _UsageError(f"{args.keys}: no keys for meters.{title.hex().upper()}")
        if need_ak and entry.authentication_key is None:
            raise _UsageError(
                f"{args.keys}: no authentication key for meters.{title.hex().upper()}"
            )
        return entry.encryption_key, entry.authentication_key
    if given.loose is None:
        raise _UsageError(
            f"no keys: give --keys FILE, --ek/--ak (- reads stdin), {EK_ENV}/{AK_ENV},"
            " or --generate"
        )
    if given.loose.ek is None:
        raise _UsageError(f"--ek (or {EK_ENV}) is required")
    if need_ak and given.loose.ak is None:
        raise _UsageError(f"both keys are needed: --ek and --ak (or {EK_ENV} and {AK_ENV})")
    return given.loose.ek, given.loose.ak


def _read_existing(path: Path) -> str:
    try:
        # newline="": keep the file's line endings as they are.
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise _UsageError(f"{path}: not valid UTF-8") from None


def _validate(path: Path, text: str) -> None:
    """Check the new text as the daemon would load it (duplicates, values)."""
    parse_key_text(text, path)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new or rewritten key file is readable by its owner only.
    write_atomically(path, text, lambda fd: os.fchmod(fd, 0o600))
