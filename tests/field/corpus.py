"""The field corpus (tests/data/field/): loading captures and comparing what dlmsd
made of them with what their sources state.

Each capture file holds one real push as its source published it (see the
"Field captures" section of the helpers' brief and docs/field-corpus.md). The
comparison is deliberately plain: every stated value must appear in the record
under its OBIS code, equal as a decimal number (or as text, or as the same
instant for date-times), with the stated unit when the source states one.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs

FIELD = Path(__file__).resolve().parents[1] / "data" / "field"
FRAMINGS = ("hdlc", "mbus", "wrapper", "apdu")
FEATURES = ("gbt-hdlc", "mbus", "profiles")
# A source's name for "this element has no OBIS code" (see the captures' notes).
NO_OBIS = "0-0:0.0.0"
_OBIS = re.compile(r"^(\d+)-(\d+):(\d+)\.(\d+)\.(\d+)(?:\*(\d+))?$")


@attrs.frozen
class Capture:
    """One capture file."""

    path: Path
    data: Mapping[str, Any]

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"

    @property
    def make(self) -> str:
        return str(self.data["make"])

    @property
    def framing(self) -> str:
        return str(self.data["framing"])

    @property
    def raw(self) -> bytes:
        return bytes.fromhex(self.data["hex"])

    @property
    def keys(self) -> Mapping[str, str | None] | None:
        keys: Mapping[str, str | None] | None = self.data.get("keys")
        return keys

    @property
    def system_title(self) -> str | None:
        """The meter's system title: as the file gives it, else from the ciphered header."""
        if self.keys is None:
            return None
        if self.keys.get("system_title"):
            return str(self.keys["system_title"]).upper()
        header = cipher_header(self.raw)
        return None if header is None else header[0]

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(self.data.get("needs", ()))

    @property
    def profile(self) -> str | None:
        profile: str | None = self.data.get("profile")
        return profile

    @property
    def envelope_only(self) -> bool:
        """A ciphered capture whose key is not published: only framing and envelope
        can be checked (the daemon quarantines it under its system title)."""
        return self.keys is None and cipher_header(self.raw) is not None

    @property
    def expected(self) -> Mapping[str, Any]:
        expected: Mapping[str, Any] = self.data["expected"]
        return expected


def load_captures(root: Path = FIELD) -> list[Capture]:
    return [
        Capture(path, json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(root.glob("*/*.json"))
    ]


# --- features being built on other branches ------------------------------------------


def _module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def feature_present(feature: str) -> bool:
    """Whether this tree has a feature a capture `needs` (detected by its module)."""
    if feature == "gbt-hdlc":
        return _module("dlmsd.protocol.gbt_push")
    if feature == "mbus":
        return _module("dlmsd.protocol.mbus")
    if feature == "profiles":
        return any(_module(name) for name in ("dlmsd.cosem.profiles", "dlmsd.cosem.layouts"))
    raise ValueError(f"unknown feature {feature!r}")


def missing_features(capture: Capture) -> list[str]:
    return [feature for feature in capture.needs if not feature_present(feature)]


# --- comparison -----------------------------------------------------------------------


def obis_key(text: str) -> str:
    """``1-0:1.8.0`` and ``1-0:1.8.0*255`` name the same object."""
    match = _OBIS.match(text)
    if match is None:
        return text
    a, b, c, d, e, f = match.groups()
    return f"{a}-{b}:{c}.{d}.{e}*{f or 255}"


def _as_datetime(text: object) -> datetime | None:
    if not isinstance(text, str) or not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d", text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def same_time(expected: str, actual: object) -> bool:
    """Naive expected: the same wall-clock time. With an offset: the same instant.
    Sources state seconds, so hundredths in the push do not count."""
    want, got = _as_datetime(expected), _as_datetime(actual)
    if want is None or got is None:
        return False
    got = got.replace(microsecond=0)
    if want.tzinfo is None:
        return got.replace(tzinfo=None) == want
    return got.tzinfo is not None and got == want


def same_value(expected: str, actual: object, *, scaler: object = None, raw: bool = False) -> bool:
    if actual is None or isinstance(actual, bool):
        return False
    if _as_datetime(expected) is not None:
        return same_time(expected, actual)
    if isinstance(actual, int | float):
        try:
            number = Decimal(str(actual))
            if raw and isinstance(scaler, int):
                number = number.scaleb(-scaler)
            return number == Decimal(expected)
        except InvalidOperation:
            return False
    if isinstance(actual, str):
        if actual == expected or actual.rstrip("\0") == expected:
            return True
        if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", actual):
            text = bytes.fromhex(actual).rstrip(b"\0").decode("latin-1")
            if text == expected:
                return True
        try:
            return Decimal(actual) == Decimal(expected)
        except InvalidOperation:
            return False
    return False


def _readings(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    readings = record.get("readings")
    return list(readings) if isinstance(readings, list) else []


def compare(capture: Capture, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the source states but the records do not show ([] means it matches).

    The last record counts (a capture that restarts a message yields one). A capture
    whose source states no values passes when it decodes to a record: framing,
    ciphering and APDU read (a bare structure of an unknown layout has no readings).
    """
    if not records:
        return ["no record"]
    record = records[-1]
    readings = _readings(record)
    problems: list[str] = []
    if not readings and capture.expected.get("readings"):
        problems.append("the record has no readings")
    stated_time = capture.expected.get("datetime")
    if stated_time is not None:
        candidates = [record.get("datetime")] + [r.get("value") for r in readings]
        if not any(same_time(stated_time, value) for value in candidates):
            problems.append(f"date-time {stated_time}: record has {record.get('datetime')!r}")
    for want in capture.expected.get("readings", ()):
        problem = _check_reading(want, readings, record.get("body"))
        if problem:
            problems.append(problem)
    return problems


def body_values(node: object) -> Iterable[object]:
    """Every plain value of a record's typed A-XDR tree (``{"type", "value"}`` nodes)."""
    if isinstance(node, Mapping):
        inner = node.get("value")
        if isinstance(inner, list | Mapping):
            yield from body_values(inner)
        else:
            yield inner
    elif isinstance(node, list):
        for item in node:
            yield from body_values(item)


def _check_reading(
    want: Mapping[str, Any], readings: Iterable[Mapping[str, Any]], body: object = None
) -> str | None:
    value = str(want["value"])
    raw = bool(want.get("raw", False))
    if want["obis"] == NO_OBIS:
        if any(same_value(value, r.get("value")) for r in readings):
            return None
        if any(same_value(value, leaf) for leaf in body_values(body)):
            return None  # a value whose object the push does not name stays in the body
        return f"(no OBIS) {value!r}: neither a reading nor in the body"
    key = obis_key(want["obis"])
    found = [r for r in readings if r.get("obis") == key]
    if not found:
        return f"{want['obis']} = {value}: no reading"
    for reading in found:
        if not same_value(value, reading.get("value"), scaler=reading.get("scaler"), raw=raw):
            continue
        unit = want.get("unit")
        if unit is not None and reading.get("unit") != unit:
            return f"{want['obis']} = {value} {unit}: unit {reading.get('unit')!r}"
        return None
    shown = ", ".join(f"{r.get('value')!r} {r.get('unit') or ''}".strip() for r in found)
    return f"{want['obis']} = {value}: record has {shown}"


# --- the parts of a capture the harness needs to feed it --------------------------------

LLC_HEADERS = (b"\xe6\xe7\x00", b"\xe6\xe6\x00")


def without_llc(apdu: bytes) -> bytes:
    for header in LLC_HEADERS:
        if apdu.startswith(header):
            return apdu[len(header) :]
    return apdu


def cipher_header(raw: bytes) -> tuple[str, int] | None:
    """System title and invocation counter of the first general-glo/ded-ciphering
    header in a capture (used to tell which daemon record belongs to which capture)."""
    for tag in (b"\xdb\x08", b"\xdc\x08"):
        at = raw.find(tag)
        if at < 0:
            continue
        title = raw[at + 2 : at + 10]
        offset = at + 10
        first = raw[offset] if offset < len(raw) else 0
        offset += 1 + (first - 0x80 if first > 0x80 else 0)
        counter = raw[offset + 1 : offset + 5]
        if len(title) == 8 and len(counter) == 4:
            return title.hex().upper(), int.from_bytes(counter, "big")
    return None
