"""OBIS codes (IEC 62056-61): six value groups A-B:C.D.E*F."""

from __future__ import annotations

import re

import attrs

from dlmsd.protocol.errors import DecodeError, EncodeError

# Accepts `1-0:1.8.0*255`, `1-0:1.8.0.255`, `1-0:1.8.0` (F defaults to 255),
# `1.0.1.8.0.255` and `1.0.1.8.0`. Separators are not interchangeable at will:
# the reduced form needs `-` and `:` in their places.
# ASCII digits only: `\d` would also take e.g. Arabic-Indic digits, which int() accepts.
_REDUCED = re.compile(
    r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[*.&](\d{1,3}))?\Z", re.ASCII
)
_DOTTED = re.compile(
    r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\.(\d{1,3}))?\Z", re.ASCII
)


@attrs.frozen(slots=True, order=True)
class Obis:
    """One logical name. Immutable, hashable, ordered by its bytes."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    @classmethod
    def from_bytes(cls, data: bytes) -> Obis:
        """Decode the 6-octet form (an octet-string value on the wire)."""
        if len(data) != 6:
            raise DecodeError(f"an OBIS code is 6 bytes, got {len(data)}")
        return cls(data[0], data[1], data[2], data[3], data[4], data[5])

    @classmethod
    def parse(cls, text: str) -> Obis:
        """Parse the reduced (`1-0:1.8.0*255`) or dotted (`1.0.1.8.0.255`) form."""
        stripped = text.strip()
        match = _REDUCED.match(stripped) or _DOTTED.match(stripped)
        if match is None:
            raise DecodeError(f"not an OBIS code: {text!r} (expected e.g. 1-0:1.8.0*255)")
        groups = [int(g) if g is not None else 255 for g in match.groups()]
        for value in groups:
            if value > 255:
                raise DecodeError(f"OBIS value group out of range 0..255 in {text!r}")
        return cls(*groups)

    def to_bytes(self) -> bytes:
        """The 6-octet form; a group outside 0..255 raises :class:`EncodeError`."""
        try:
            return bytes((self.a, self.b, self.c, self.d, self.e, self.f))
        except (ValueError, TypeError):
            raise EncodeError(f"OBIS value groups must be 0..255, got {self.dotted}") from None

    @property
    def dotted(self) -> str:
        """The dotted form, e.g. ``1.0.1.8.0.255``."""
        return f"{self.a}.{self.b}.{self.c}.{self.d}.{self.e}.{self.f}"

    def __str__(self) -> str:
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}*{self.f}"
