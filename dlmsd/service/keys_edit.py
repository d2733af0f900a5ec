"""``dlmsd keys remove|set``: change one meter of a key store file in place.

Both edit the file's text: the meter's block (its ``[meters.TITLE]`` table
and any ``[meters.TITLE.*]`` sub-tables) is removed, or replaced by the
updated table; the rest of the file (other meters, comments, layout) stays as
it was. The result is validated as the daemon would load it, then replaces
the file atomically: a temp file in the same directory, fsync, the original
file's mode and owner, rename, fsync of the directory. A failure at any step
leaves the old file in place.

Keys never come from the command line (``ps`` shows it to every local user):
``--ek -`` / ``--ak -`` read them from stdin (EK first), ``--ek env`` /
``--ak env`` from ``DLMSD_EK`` / ``DLMSD_AK``, and ``--keys FILE`` copies both
from another key store file (mode 0600) holding the same system title.

The daemon picks the change up on SIGHUP (``systemctl reload dlmsd``). A
meter whose counter restarted with its new keys needs
``dlmsd state reset-counter`` too.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from dlmsd.service.keyfile import toml_key, toml_string, write_atomically
from dlmsd.service.keystore import (
    SECURITY_FORMS,
    KeyFileError,
    load_key_file,
    parse_key_text,
)

EK_ENV = "DLMSD_EK"
AK_ENV = "DLMSD_AK"
EXIT_OK = 0
EXIT_ERROR = 2

_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")
_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")
# A table header line: [meters.TITLE], [meters."TITLE"], [meters.TITLE.labels], [other]...
_HEADER = re.compile(r"\s*\[\[?\s*([^\]]*?)\s*\]\]?\s*(#.*)?$")
_ORDER = (
    "name",
    "encryption_key",
    "authentication_key",
    "labels",
    "security",
    "push_object_list",
    "profile",
    "read_after_push",
)


class EditError(Exception):
    """The edit cannot be done; one line, never a key."""


def register_edit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys remove`` and ``keys set`` to the ``dlmsd keys`` actions."""
    change = sub.add_parser(
        "set",
        help="rotate a meter's keys, or change its name, labels, security or layout",
        description="Change one meter of a key store file (atomic; keeps mode and owner)."
        " Keys are read from stdin (-), the environment (env: DLMSD_EK/DLMSD_AK) or"
        " another key file, never from the command line.",
    )
    change.add_argument("system_title", metavar="SYSTEM_TITLE", help="16 hex characters")
    change.add_argument("--file", required=True, type=Path, help="the key store file")
    change.add_argument(
        "--ek", choices=("-", "env"), help="new encryption key: - stdin, env DLMSD_EK"
    )
    change.add_argument(
        "--ak", choices=("-", "env"), help="new authentication key: - stdin, env DLMSD_AK"
    )
    change.add_argument(
        "--keys", metavar="FILE", type=Path, help="copy both keys from this key store file"
    )
    change.add_argument("--name", help="a new name ('' removes it)")
    change.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="set a label"
    )
    change.add_argument(
        "--unlabel", action="append", default=[], metavar="KEY", help="remove a label"
    )
    change.add_argument(
        "--security",
        action="append",
        choices=SECURITY_FORMS,
        help="the allowed security forms (repeatable; replaces the list)",
    )
    layout = change.add_mutually_exclusive_group()
    layout.add_argument(
        "--push-object-list",
        metavar="OBIS:ATTR,...",
        help="the push layout, comma separated (replaces a profile; '' removes it)",
    )
    layout.add_argument(
        "--profile",
        metavar="NAME",
        help="a built-in layout (replaces a push object list; '' removes it)",
    )
    change.set_defaults(func=run_set)

    remove = sub.add_parser(
        "remove",
        help="remove a meter (atomic; keeps the file's mode and owner)",
        description="Remove a meter's table from a key store file.",
    )
    remove.add_argument("system_title", metavar="SYSTEM_TITLE", help="16 hex characters")
    remove.add_argument("--file", required=True, type=Path, help="the key store file")
    remove.set_defaults(func=run_remove)


def _fail(command: str, message: object) -> int:
    print(f"dlmsd keys {command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def run_remove(args: argparse.Namespace) -> int:
    try:
        title = _title(args.system_title)
        text = _read(args.file)
        new_text, _ = _cut(text, title, comments=True)
        entries = parse_key_text(new_text, args.file)
        if any(entry.system_title == bytes.fromhex(title) for entry in entries):
            raise EditError(f"meters.{title} is defined in a way this command cannot edit")
        replace_keeping_mode(args.file, new_text)
    except (EditError, KeyFileError) as error:
        return _fail("remove", error)
    except OSError as error:
        return _fail("remove", f"{args.file}: {error.strerror or error}")
    print(f"removed {title} from {args.file} ({len(entries)} meters left); reload the daemon")
    return EXIT_OK


def run_set(args: argparse.Namespace, stdin: TextIO | None = None) -> int:
    try:
        title = _title(args.system_title)
        text = _read(args.file)
        new_text, table = _cut(text, title)
        changed = _apply(table, args, stdin or sys.stdin, title)
        block = render_meter(title, table)
        new_text = _insert(text, new_text, title, block)
        [entry] = [
            e for e in parse_key_text(new_text, args.file) if e.system_title.hex().upper() == title
        ]
        replace_keeping_mode(args.file, new_text)
    except (EditError, KeyFileError) as error:
        return _fail("set", error)
    except OSError as error:
        return _fail("set", f"{args.file}: {error.strerror or error}")
    what = ", ".join(changed) or "nothing"
    print(f"{title} ({entry.name or entry.display_id}) in {args.file}: changed {what}")
    if "keys" in changed:
        print(
            "reload the daemon (systemctl reload dlmsd); if the meter's invocation counter"
            " restarted with its new keys, also run: dlmsd state reset-counter " + title
        )
    return EXIT_OK


def _title(text: str) -> str:
    if not _HEX16.fullmatch(text):
        raise EditError("SYSTEM_TITLE must be 16 hex characters (8 bytes)")
    return text.upper()


def _read(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        raise EditError(f"{path}: no such key file") from None
    except UnicodeDecodeError:
        raise EditError(f"{path}: not valid UTF-8") from None


def _owner_title(header: str, title: str) -> bool:
    """Whether a table header belongs to meter `title`."""
    parts = [part.strip().strip('"').strip("'") for part in header.split(".")]
    return len(parts) >= 2 and parts[0] == "meters" and parts[1].upper() == title


def _blocks(
    text: str, title: str, comments: bool = False
) -> tuple[int, int, list[tuple[int, int]]]:
    """Line spans of the meter's tables: (first line, end line, [spans]); with
    `comments`, the comment lines right above a table header belong to it."""
    lines = text.splitlines(keepends=True)
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for number, line in enumerate(lines):
        match = _HEADER.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        if start is not None:
            spans.append((start, _trim(lines, start, number)))
            start = None
        if _owner_title(match.group(1), title):
            start = number
            while comments and start > 0 and lines[start - 1].lstrip()[:1] == "#":
                start -= 1
    if start is not None:
        spans.append((start, _trim(lines, start, len(lines))))
    if not spans:
        return -1, -1, []
    return spans[0][0], spans[-1][1], spans


def _trim(lines: list[str], start: int, end: int) -> int:
    """Blank and comment lines at the end of a table belong to what follows it."""
    while end - 1 > start and (not lines[end - 1].strip() or lines[end - 1].lstrip()[:1] == "#"):
        end -= 1
    return end


def _cut(text: str, title: str, comments: bool = False) -> tuple[str, dict[str, Any]]:
    """The text without the meter's tables (and, with `comments`, the comments right
    above them), and the meter's table as parsed."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise EditError(f"not valid TOML: {error}") from None
    meters = document.get("meters", {})
    tables = [value for key, value in meters.items() if key.upper() == title]
    if not tables:
        raise EditError(f"meters.{title}: no such meter")
    lines = text.splitlines(keepends=True)
    _, _, spans = _blocks(text, title, comments)
    if not spans:
        raise EditError(f"meters.{title} is not a [meters.{title}] table: edit the file by hand")
    drop = {number for first, end in spans for number in range(first, end)}
    kept = "".join(line for number, line in enumerate(lines) if number not in drop)
    return kept, dict(tables[0])


def _insert(text: str, kept: str, title: str, block: str) -> str:
    """`kept` with `block` where the meter's first table was."""
    first, _, _ = _blocks(text, title)
    lines = text.splitlines(keepends=True)
    before = "".join(lines[:first])
    assert kept.startswith(before)
    after = kept[len(before) :]
    return before + block + ("\n" if after and not after.startswith("\n") else "") + after


def _apply(table: dict[str, Any], args: Any, stdin: TextIO, title: str) -> list[str]:
    changed = []
    keys = _new_keys(args, stdin, title)
    if keys is not None:
        table["encryption_key"], table["authentication_key"] = keys
        changed.append("keys")
    if args.name is not None:
        if args.name:
            table["name"] = args.name
        else:
            table.pop("name", None)
        changed.append("name")
    if args.label or args.unlabel:
        labels = dict(table.get("labels") or {})
        for key in args.unlabel:
            labels.pop(key, None)
        for item in args.label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise EditError(f"--label expects KEY=VALUE, got {item!r}")
            labels[key] = value
        if labels:
            table["labels"] = labels
        else:
            table.pop("labels", None)
        changed.append("labels")
    if args.security:
        table["security"] = list(dict.fromkeys(args.security))
        changed.append("security")
    if args.push_object_list is not None:
        items = [item.strip() for item in args.push_object_list.split(",") if item.strip()]
        if items:
            table["push_object_list"] = items
            table.pop("profile", None)
        else:
            table.pop("push_object_list", None)
        changed.append("push object list")
    if args.profile is not None:
        if args.profile:
            table["profile"] = args.profile
            table.pop("push_object_list", None)
        else:
            table.pop("profile", None)
        changed.append("profile")
    if not changed:
        raise EditError(
            "nothing to change: give --ek/--ak or --keys, --name, --label, --unlabel,"
            " --security, --push-object-list or --profile"
        )
    return changed


def _new_keys(args: Any, stdin: TextIO, title: str) -> tuple[str, str] | None:
    if args.keys is not None:
        if args.ek or args.ak:
            raise EditError("use either --keys or --ek/--ak, not both")
        try:
            entries = load_key_file(args.keys, check_permissions=True)
        except KeyFileError as error:
            raise EditError(str(error)) from None
        for entry in entries:
            if entry.system_title.hex().upper() == title:
                if entry.encryption_key is None or entry.authentication_key is None:
                    break
                return entry.encryption_key.hex().upper(), entry.authentication_key.hex().upper()
        raise EditError(f"{args.keys}: no keys for meters.{title}")
    if not args.ek and not args.ak:
        return None
    if not (args.ek and args.ak):
        raise EditError("rotating keys needs both --ek and --ak")
    tokens: list[str] = []
    if "-" in (args.ek, args.ak):
        tokens = stdin.read().split()
    values = []
    for option, source, variable in (("--ek", args.ek, EK_ENV), ("--ak", args.ak, AK_ENV)):
        if source == "env":
            value = os.environ.get(variable, "").strip()
            where = variable
        else:
            value = tokens.pop(0) if tokens else ""
            where = f"stdin ({option} -)"
        if not _HEX32.fullmatch(value):
            raise EditError(f"{option}: {where} holds no key of 32 hex characters")
        values.append(value.upper())
    if tokens:
        raise EditError("stdin holds more than the keys asked for")
    return values[0], values[1]


# --- writing -------------------------------------------------------------------------


def render_meter(title: str, table: Mapping[str, Any]) -> str:
    """A ``[meters.TITLE]`` table in the layout `dlmsd keys add` writes."""
    lines = [f"[meters.{title}]"]
    for key in (*_ORDER, *sorted(set(table) - set(_ORDER))):
        if key in table:
            lines.append(f"{toml_key(key)} = {_toml_value(table[key])}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise EditError(f"cannot write a {type(value).__name__} value back: edit the file by hand")


def replace_keeping_mode(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (`dlmsd.service.keyfile`), keeping its
    mode and owner."""
    info = os.stat(path)

    def keep_mode_and_owner(fd: int) -> None:
        if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, info.st_uid, info.st_gid)
            except PermissionError:
                raise EditError(
                    f"{path}: cannot keep its owner (uid {info.st_uid}, gid {info.st_gid});"
                    " run as that user or as root"
                ) from None
        os.fchmod(fd, info.st_mode & 0o7777)

    write_atomically(path, text, keep_mode_and_owner)
