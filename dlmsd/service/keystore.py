"""The key store: which meters the daemon knows, with their keys and security policy.

A key file is TOML with one table per meter, keyed by system title in hex::

    [meters.4B464D1234567890]
    name = "gas-42"
    encryption_key = "000102030405060708090A0B0C0D0E0F"
    authentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
    labels = { site = "north" }
    security = ["auth+enc"]                      # allowed forms; this is the default
                                                 # ("enc": encryption only, no tag, as
                                                 # M-Bus customer interfaces send; a
                                                 # meter allowing only "enc"/"none" may
                                                 # omit authentication_key)
    push_object_list = ["0-0:1.0.0*255:2", "7-0:3.0.0*255:2"]
    # or, instead of push_object_list, a built-in layout (dlmsd.cosem.profiles):
    # profile = "kaifa-ma304-list3-3p"

Several files may be loaded together; a system title defined twice is an error.
Key files must be private to the daemon's user (mode 0600 or tighter).

Key bytes never appear in reprs, errors or logs: errors name the file, the key
path and what is wrong with the value, never the value itself.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tomllib
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path

import attrs

from dlmsd.cosem.profiles import PROFILES, Profile, profile_named
from dlmsd.cosem.readings import PushObject
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.service.readback_settings import (
    ReadAfterPush,
    ReadbackSettingsError,
    parse_read_after_push,
)

SECURITY_FORMS = ("none", "auth", "enc", "auth+enc")
DEFAULT_SECURITY: frozenset[str] = frozenset({"auth+enc"})
_AUTHENTICATED_FORMS = frozenset({"auth", "auth+enc"})

_METER_KEYS = frozenset(
    {
        "name",
        "encryption_key",
        "authentication_key",
        "labels",
        "security",
        "push_object_list",
        "profile",
        "read_after_push",
    }
)
_KEY_HEX = re.compile(r"[0-9A-Fa-f]{32}")
_TITLE_HEX = re.compile(r"[0-9A-Fa-f]{16}")


class KeyFileError(Exception):
    """A key file that cannot be used: unsafe permissions, bad TOML or a bad value.

    The message names the file and the key path; it never carries key bytes.
    """

    def __init__(self, path: Path | None, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


def display_id(system_title: bytes) -> str:
    """A readable form of a system title: ``KFM1234567890`` when the first three
    bytes are a FLAG manufacturer id (ASCII capitals), else plain hex."""
    head = system_title[:3]
    if len(system_title) == 8 and head.isalpha() and head.isupper():
        return head.decode("ascii") + system_title[3:].hex().upper()
    return system_title.hex().upper()


# No __weakref__ slot: nothing takes weak references to entries, and without it
# the two lazily built slots fit in the 112-byte object a 100k-meter store already had.
@attrs.frozen(slots=True, weakref_slot=False)
class MeterEntry:
    """One meter of the key store.

    `cipher` and `record_fields` are built on first use: building 100,000 AES
    contexts at start would cost seconds and tens of megabytes for meters that
    may push once a day. Kept on the entry (a slot each), they cost no separate
    cache entry and go away with the entry when the key files are reloaded.
    """

    system_title: bytes
    name: str | None
    labels: Mapping[str, str] = attrs.field(hash=False)
    allowed_security: frozenset[str]
    #: How to read bare push bodies: a push object list or a built-in profile (or None).
    layout: tuple[PushObject, ...] | Profile | None
    encryption_key: bytes | None = attrs.field(repr=False)
    authentication_key: bytes | None = attrs.field(repr=False)
    #: Push-then-read: what to read on the connection the meter pushed on (None: nothing).
    read_after_push: ReadAfterPush | None = attrs.field(default=None, repr=False)

    @property
    def push_object_list(self) -> tuple[PushObject, ...] | None:
        """The configured push object list (None when none or a profile is set)."""
        return None if isinstance(self.layout, Profile) else self.layout

    @property
    def profile(self) -> Profile | None:
        """The configured built-in profile (``profile = "..."``), else None."""
        return self.layout if isinstance(self.layout, Profile) else None

    @cached_property
    def cipher(self) -> Suite0Cipher | None:
        """The suite 0 cipher of this meter; None for a plaintext-only meter without keys.

        A meter allowed only ``enc`` (and ``none``) may come without an
        authentication key: its cipher then refuses every authenticated form.
        """
        if self.encryption_key is None:
            return None
        return Suite0Cipher(
            self.encryption_key,
            self.authentication_key,
            allow_encryption_only="enc" in self.allowed_security,
        )

    @cached_property
    def record_fields(self) -> str:
        """``,"meter":..,"meter_id":..,"labels":{..}``: this meter's members of every
        record it pushes, as JSON text to append after the push's own members."""
        # Imported here: the state module brings Twisted, which `dlmsd keys` does not need.
        from dlmsd.service.state import encode_record

        text = encode_record(
            {"meter": self.name, "meter_id": self.display_id, "labels": dict(self.labels)}
        )
        return "," + text[1:-1]

    @property
    def display_id(self) -> str:
        """The system title as FLAG id + serial when it has one, else hex."""
        return display_id(self.system_title)

    def allows(self, security: str) -> bool:
        """Whether the meter's policy allows a push protected by `security`
        (``none``, ``auth``, ``enc`` or ``auth+enc``)."""
        return security in self.allowed_security


class KeyStore:
    """Meters by system title, loaded from one or more key files.

    `lookup` is a dict access (the hot path). `reload` builds a complete new
    store and swaps it in one assignment, so a broken file never leaves a half
    loaded store behind.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        meters: dict[bytes, MeterEntry],
        *,
        check_permissions: bool = True,
    ) -> None:
        self._paths = tuple(paths)
        self._meters = meters
        self._check_permissions = check_permissions

    @classmethod
    def load(cls, paths: Sequence[Path], *, check_permissions: bool = True) -> KeyStore:
        """Load and merge key files; raises KeyFileError on the first problem."""
        return cls(
            paths,
            load_meters(paths, check_permissions=check_permissions),
            check_permissions=check_permissions,
        )

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    def lookup(self, system_title: bytes) -> MeterEntry | None:
        """The meter with this system title, or None when unknown."""
        return self._meters.get(system_title)

    def reload(self, *, max_drop: float = 1.0, force: bool = False) -> int:
        """Re-read the key files and swap them in; returns the new meter count.

        On any problem raises KeyFileError and keeps the current keys. A reload that
        would drop more than `max_drop` (a share, 0..1) of the meters loaded now, or
        all of them while `max_drop` < 1, raises `ReloadRefused` unless `force`: an
        empty or truncated file (a deploy tool writing it in place) would otherwise
        send every push to quarantine.
        """
        meters = load_meters(self._paths, check_permissions=self._check_permissions)
        if not force:
            refusal = reload_refusal(self._meters, meters, max_drop)
            if refusal is not None:
                raise ReloadRefused(None, refusal)
        self._meters = meters
        return len(meters)

    def __len__(self) -> int:
        return len(self._meters)

    def __contains__(self, system_title: object) -> bool:
        return system_title in self._meters

    def __iter__(self) -> Iterator[MeterEntry]:
        return iter(self._meters.values())

    def __repr__(self) -> str:
        return f"<KeyStore {len(self._meters)} meters from {[str(p) for p in self._paths]}>"


class ReloadRefused(KeyFileError):
    """A valid reload refused because it would drop too many meters (see `KeyStore.reload`)."""


def reload_refusal(
    current: Mapping[bytes, object], new: Mapping[bytes, object], max_drop: float
) -> str | None:
    """Why replacing `current` meters by `new` ones drops too many, or None when it does not.

    Dropped means a system title loaded now and absent after: a file that swaps
    most meters for others drops them too.
    """
    if not current or max_drop >= 1.0:
        return None
    dropped = sum(1 for title in current if title not in new)
    if not new:
        return f"the key files now hold no meter: the reload would drop all {len(current)}"
    if dropped > max_drop * len(current):
        return (
            f"the reload would drop {dropped} of the {len(current)} meters loaded"
            f" (more than keys.reload_max_drop = {max_drop:g} of them)"
        )
    return None


def load_meters(
    paths: Sequence[Path], *, check_permissions: bool = True
) -> dict[bytes, MeterEntry]:
    """Meters of several key files merged; a system title in two files is an error."""
    merged: dict[bytes, MeterEntry] = {}
    origin: dict[bytes, Path] = {}
    for path in paths:
        for entry in load_key_file(path, check_permissions=check_permissions):
            first = origin.get(entry.system_title)
            if first is not None:
                raise KeyFileError(
                    path,
                    f"meters.{entry.system_title.hex().upper()}: already defined in {first}",
                )
            merged[entry.system_title] = entry
            origin[entry.system_title] = path
    return merged


def load_key_file(path: Path, *, check_permissions: bool = True) -> list[MeterEntry]:
    """The meters of one key file, validated."""
    builder = _EntryBuilder(path)
    try:
        # newline="\n": split lines on LF only, as TOML does (a CR alone is invalid).
        with open(path, encoding="utf-8", newline="\n") as handle:
            if check_permissions:
                check_key_file_stat(path, os.fstat(handle.fileno()))
            try:
                return _unique(path, [builder.build(*item) for item in _fast_meters(handle)])
            except _NotCanonical:
                handle.seek(0)
                text = handle.read()
    except OSError as exc:
        raise KeyFileError(path, f"cannot read key file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise KeyFileError(path, f"not valid UTF-8 ({exc.reason})") from None
    return _unique(path, [builder.build(*item) for item in _toml_meters(path, text)])


def parse_key_text(text: str, path: Path | None = None) -> list[MeterEntry]:
    """The meters of a key file's text, validated (`path` only names it in errors)."""
    builder = _EntryBuilder(path)
    try:
        # Lines as a file opened with newline="\n" gives them: a last line without
        # LF keeps no LF, so a stray CR at the end stays invalid (found by fuzzing).
        lines = io.StringIO(text, newline="\n")
        return _unique(path, [builder.build(*item) for item in _fast_meters(lines)])
    except _NotCanonical:
        return _unique(path, [builder.build(*item) for item in _toml_meters(path, text)])


def _unique(path: Path | None, entries: list[MeterEntry]) -> list[MeterEntry]:
    # Titles differing only in letter case are distinct TOML keys but one meter.
    seen: set[bytes] = set()
    for entry in entries:
        if entry.system_title in seen:
            raise KeyFileError(path, f"meters.{entry.system_title.hex().upper()}: defined twice")
        seen.add(entry.system_title)
    return entries


def check_key_file_stat(path: Path, info: os.stat_result) -> None:
    """Refuse a key file others could read or that another user owns."""
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(path, "key file is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            path,
            f"key file mode is {mode:04o}: group or others have access; run chmod 600 {path}",
        )
    euid = os.geteuid()
    if info.st_uid != euid:
        raise KeyFileError(
            path,
            f"key file is owned by uid {info.st_uid}, not by this process's user (uid {euid})",
        )


class _EntryBuilder:
    """Validates meter tables into MeterEntry values, sharing equal small values
    (label maps, policies, object lists) between meters to keep 100k entries small."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._labels: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
        self._security: dict[tuple[str, ...], frozenset[str]] = {}
        self._objects: dict[tuple[str, ...], tuple[PushObject, ...]] = {}

    def _error(self, where: str, reason: str) -> KeyFileError:
        return KeyFileError(self._path, f"{where}: {reason}")

    def build(self, title_text: str, table: object) -> MeterEntry:
        where = f"meters.{title_text}"
        if not _TITLE_HEX.fullmatch(title_text):
            raise self._error(where, "a system title is 16 hex characters (8 bytes)")
        if not isinstance(table, dict):
            raise self._error(where, "expected a table")
        for key in table:
            if key not in _METER_KEYS:
                allowed = ", ".join(sorted(_METER_KEYS))
                raise self._error(f"{where}.{key}", f"unknown key (allowed: {allowed})")
        name = table.get("name")
        if name is not None and not isinstance(name, str):
            raise self._error(f"{where}.name", "expected a string")
        security = self._security_of(where, table.get("security"))
        encryption_key = self._key(where, table, "encryption_key", security)
        authentication_key = self._key(where, table, "authentication_key", security)
        read_after_push = None
        if "read_after_push" in table:
            has_keys = encryption_key is not None and authentication_key is not None
            try:
                read_after_push = parse_read_after_push(
                    f"{where}.read_after_push", table["read_after_push"], self._path, has_keys
                )
            except ReadbackSettingsError as error:
                raise KeyFileError(self._path, str(error)) from None
        push_object_list = self._objects_of(where, table.get("push_object_list"))
        profile = self._profile_of(where, table.get("profile"))
        if profile is not None and push_object_list is not None:
            raise self._error(f"{where}.profile", "give either profile or push_object_list")
        return MeterEntry(
            system_title=bytes.fromhex(title_text),
            name=name,
            labels=self._labels_of(where, table.get("labels")),
            allowed_security=security,
            layout=profile if profile is not None else push_object_list,
            encryption_key=encryption_key,
            authentication_key=authentication_key,
            read_after_push=read_after_push,
        )

    def _profile_of(self, where: str, value: object) -> Profile | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._error(f"{where}.profile", "expected the name of a built-in profile")
        profile = profile_named(value)
        if profile is None:
            names = ", ".join(profile.name for profile in PROFILES)
            raise self._error(f"{where}.profile", f"unknown profile {value!r} (known: {names})")
        return profile

    def _key(
        self, where: str, table: dict[str, object], key: str, security: frozenset[str]
    ) -> bytes | None:
        value = table.get(key)
        if value is None:
            if security == {"none"}:
                return None
            if key == "authentication_key" and not security & _AUTHENTICATED_FORMS:
                return None  # encryption-only meters (M-Bus customer interfaces)
            raise self._error(
                f"{where}.{key}",
                'missing (required unless security is ["none"];'
                ' authentication_key also unless security allows only "enc" and "none")',
            )
        if not isinstance(value, str):
            raise self._error(f"{where}.{key}", "expected a string of 32 hex characters")
        if not _KEY_HEX.fullmatch(value):
            if len(value) != 32:
                reason = f"expected 32 hex characters, got {len(value)}"
            else:
                reason = "expected 32 hex characters (0-9, A-F)"
            raise self._error(f"{where}.{key}", reason)
        return bytes.fromhex(value)

    def _security_of(self, where: str, value: object) -> frozenset[str]:
        if value is None:
            return DEFAULT_SECURITY
        if not isinstance(value, list) or not value:
            raise self._error(
                f"{where}.security", f"expected a non-empty list of {', '.join(SECURITY_FORMS)}"
            )
        for index, form in enumerate(value):
            if form not in SECURITY_FORMS:
                raise self._error(
                    f"{where}.security[{index}]",
                    f"expected one of {', '.join(SECURITY_FORMS)}, got {form!r}",
                )
        key = tuple(sorted(value))
        cached = self._security.get(key)
        if cached is None:
            cached = self._security[key] = frozenset(key)
        return cached

    def _labels_of(self, where: str, value: object) -> Mapping[str, str]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self._error(f"{where}.labels", "expected a table of strings")
        for label, text in value.items():
            if not isinstance(text, str):
                raise self._error(f"{where}.labels.{label}", "expected a string")
        key = tuple(value.items())
        cached = self._labels.get(key)
        if cached is None:
            cached = self._labels[key] = types.MappingProxyType(dict(value))
        return cached

    def _objects_of(self, where: str, value: object) -> tuple[PushObject, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._error(f"{where}.push_object_list", "expected a list of OBIS:attribute")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self._error(f"{where}.push_object_list[{index}]", "expected a string")
        key = tuple(value)
        cached = self._objects.get(key)
        if cached is None:
            parsed = []
            for index, item in enumerate(key):
                try:
                    parsed.append(PushObject.parse(item))
                except DlmsError as exc:
                    raise self._error(f"{where}.push_object_list[{index}]", exc.reason) from None
            cached = self._objects[key] = tuple(parsed)
        return cached


def _toml_meters(path: Path | None, text: str) -> Iterator[tuple[str, object]]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(path, f"not valid TOML: {exc}") from None
    for key in document:
        if key != "meters":
            raise KeyFileError(path, f"{key}: unknown key (allowed: meters)")
    meters = document.get("meters", {})
    if not isinstance(meters, dict):
        raise KeyFileError(path, "meters: expected a table of meters")
    yield from meters.items()


# --- fast path ----------------------------------------------------------------
# tomllib reads about 4 MB/s: a 100,000-meter file (18 MB) took 5 s and 300 MB.
# Files as `dlmsd keys add` and generators write them use a small subset of TOML
# (table headers, bare keys, plain strings, string arrays, inline tables of
# strings); that subset is read here line by line. Anything outside it, however
# harmless, raises _NotCanonical and the whole file goes through tomllib, so
# both paths give the same values and tomllib reports every syntax error.


class _NotCanonical(Exception):
    pass


_STR = r'"[^"\\\x00-\x08\x0a-\x1f\x7f]*"'
_KEY = r"[A-Za-z0-9_-]+"
_WS = r"[ \t]*"
_COMMENT = r"(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"
_ARRAY = rf"\[{_WS}(?:{_STR}{_WS},{_WS})*(?:{_STR}{_WS})?\]"
_PAIR = rf"{_KEY}{_WS}={_WS}{_STR}"
_INLINE = rf"\{{{_WS}(?:{_PAIR}{_WS}(?:,{_WS}{_PAIR}{_WS})*)?\}}"
_LINE = re.compile(
    rf"(?P<key>{_KEY}){_WS}={_WS}"
    rf"(?:(?P<str>{_STR})|(?P<arr>{_ARRAY})|(?P<tbl>{_INLINE})){_WS}{_COMMENT}"
)
_HEADER = re.compile(rf"\[{_WS}meters\.({_KEY}){_WS}\]{_WS}{_COMMENT}")
_BLANK = re.compile(rf"{_WS}{_COMMENT}")
_STRINGS = re.compile(r'"([^"]*)"')
_PAIRS = re.compile(rf'({_KEY}){_WS}={_WS}"([^"]*)"')


def _fast_meters(lines: Iterable[str]) -> Iterator[tuple[str, object]]:
    # Every pattern above refuses the control characters TOML forbids
    # (including a CR that is not part of CRLF), so none needs a separate check.
    titles: set[str] = set()
    title: str | None = None
    table: dict[str, object] = {}
    for raw in lines:
        line = raw[:-2] if raw.endswith("\r\n") else raw.rstrip("\n")
        line = line.lstrip(" \t")
        if not line or line[0] == "#":
            if _BLANK.fullmatch(line) is None:
                raise _NotCanonical
            continue
        if line[0] == "[":
            header = _HEADER.fullmatch(line)
            if header is None:
                raise _NotCanonical
            if title is not None:
                yield title, table
            title = header.group(1)
            if title in titles:
                raise _NotCanonical
            titles.add(title)
            table = {}
            continue
        match = _LINE.fullmatch(line)
        if match is None or title is None:
            raise _NotCanonical
        key = match.group("key")
        if key in table:
            raise _NotCanonical
        string, array, inline = match.group("str", "arr", "tbl")
        if string is not None:
            table[key] = string[1:-1]
        elif array is not None:
            table[key] = _STRINGS.findall(array)
        else:
            pairs = _PAIRS.findall(inline)
            labels = dict(pairs)
            if len(labels) != len(pairs):
                raise _NotCanonical
            table[key] = labels
    if title is not None:
        yield title, table
