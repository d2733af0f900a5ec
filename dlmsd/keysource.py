"""Where a command's keys come from: a key file, the environment, stdin, or (last) argv.

Keys on the command line are readable by every local user in ``ps``. Every
command that takes keys (``dlmsd decode``, ``get``, ``profile``, ``objects``,
``keys add``) resolves them here, in this order:

1. ``--keys FILE``: a key store file (TOML, mode 0600, as the daemon reads);
2. ``--ek``/``--ak``: ``-`` reads the key from stdin (one key per ``-``, ``--ek``
   first; whitespace or lines between them); a hex value works too but shows
   in ``ps`` (the ``--help`` says so);
3. ``DLMSD_EK`` / ``DLMSD_AK`` in the environment, when neither of the above is given.

Errors are `KeySourceError`, one line that names the source and never a key.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import attrs

from dlmsd.service.keystore import KeyFileError, KeyStore

EK_ENV = "DLMSD_EK"
AK_ENV = "DLMSD_AK"
STDIN = "-"
KEY_BYTES = 16

PS_WARNING = (
    "a key given here is visible to every local user (ps): prefer --keys FILE,"
    f" {EK_ENV}/{AK_ENV} or '-' (read from stdin)"
)

_HEX_KEY = re.compile(r"[0-9A-Fa-f]{32}")


class KeySourceError(Exception):
    """Keys that cannot be had from the source given; the message is one line."""


@attrs.frozen(slots=True)
class HexKeys:
    """Keys given one by one (options, stdin or environment); None where not given."""

    ek: bytes | None = attrs.field(repr=False)
    ak: bytes | None = attrs.field(repr=False)
    source: str  # "--ek/--ak", "stdin", "environment": for messages, never the keys


@attrs.frozen(slots=True)
class Keys:
    """What a command was given: a key store, loose keys, or nothing."""

    store: KeyStore | None = None
    loose: HexKeys | None = None

    @property
    def given(self) -> bool:
        return self.store is not None or self.loose is not None


def add_key_options(
    group: argparse._ActionsContainer,
    *,
    keys_file: bool = True,
    keys_help: str = "key store file (TOML, mode 0600) with the meter's keys",
    ek_note: str = "",
    ak_note: str = "",
) -> None:
    """``--keys FILE`` (optional), ``--ek HEX|-`` and ``--ak HEX|-``, with the warning;
    a command's own words about the keys go in `ek_note` / `ak_note`."""
    if keys_file:
        group.add_argument("--keys", metavar="FILE", help=keys_help)
    group.add_argument(
        "--ek",
        metavar="HEX|-",
        help=f"encryption key, 32 hex characters, or - to read it from stdin (or {EK_ENV});"
        f"{' ' + ek_note + ';' if ek_note else ''} {PS_WARNING}",
    )
    group.add_argument(
        "--ak",
        metavar="HEX|-",
        help=f"authentication key, 32 hex characters, or - to read it from stdin"
        f" (or {AK_ENV});{' ' + ak_note + ';' if ak_note else ''} {PS_WARNING}",
    )


def resolve_keys(
    keys_file: str | Path | None,
    ek: str | None,
    ak: str | None,
    *,
    stdin: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    stdin_in_use: bool = False,
    check_permissions: bool = True,
) -> Keys:
    """The keys of a command line (see the module docstring for the order).

    `stdin_in_use`: the command reads something else from stdin (``dlmsd decode -``),
    so ``--ek -`` is refused.
    """
    if keys_file and (ek or ak):
        raise KeySourceError("use either --keys or --ek/--ak, not both")
    if keys_file:
        return Keys(store=load_key_store(Path(keys_file), check_permissions=check_permissions))
    if ek or ak:
        return Keys(loose=_from_options(ek, ak, stdin or sys.stdin, stdin_in_use))
    env = os.environ if environ is None else environ
    env_ek, env_ak = env.get(EK_ENV) or None, env.get(AK_ENV) or None
    if env_ek or env_ak:
        return Keys(
            loose=HexKeys(
                _parse(env_ek, EK_ENV) if env_ek else None,
                _parse(env_ak, AK_ENV) if env_ak else None,
                "environment",
            )
        )
    return Keys()


def load_key_store(path: Path, *, check_permissions: bool = True) -> KeyStore:
    """A key store file for a command: missing, unreadable, too open or invalid is one line."""
    try:
        return KeyStore.load([path], check_permissions=check_permissions)
    except KeyFileError as error:
        raise KeySourceError(str(error)) from None


def _from_options(ek: str | None, ak: str | None, stdin: TextIO, stdin_in_use: bool) -> HexKeys:
    wanted = [name for name, value in (("--ek", ek), ("--ak", ak)) if value == STDIN]
    read: dict[str, str] = {}
    if wanted:
        if stdin_in_use:
            raise KeySourceError(
                "stdin carries the frame here: give the frame as an argument, or the keys"
                f" in --keys FILE or {EK_ENV}/{AK_ENV}"
            )
        if stdin.isatty():
            print(f"reading {' and '.join(wanted)} from stdin", file=sys.stderr)
        tokens = stdin.read().split()
        if len(tokens) != len(wanted):
            raise KeySourceError(
                f"stdin: expected {len(wanted)} key(s) for {' and '.join(wanted)}"
                f" (whitespace between them), got {len(tokens)} item(s)"
            )
        read = dict(zip(wanted, tokens, strict=True))
    values = {"--ek": ek, "--ak": ak}
    parsed: dict[str, bytes | None] = {}
    for option, value in values.items():
        if value is None:
            parsed[option] = None
        elif value == STDIN:
            parsed[option] = _parse(read[option], f"{option} (stdin)")
        else:
            parsed[option] = _parse(value, option)
    source = "stdin" if wanted else "--ek/--ak"
    return HexKeys(parsed["--ek"], parsed["--ak"], source)


def _parse(text: str, where: str) -> bytes:
    cleaned = text.strip()
    if not _HEX_KEY.fullmatch(cleaned):
        # Never echo the value: it may be a key with one typo.
        raise KeySourceError(f"{where} must be {KEY_BYTES} bytes ({2 * KEY_BYTES} hex characters)")
    return bytes.fromhex(cleaned)
