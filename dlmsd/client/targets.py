"""Naming what to read: ``[class/]OBIS[:attribute]`` text and class-id guesses.

GET needs a class id; users name objects by OBIS code. :func:`guess_class_id`
covers the common objects (IEC 62056-6-1 value groups); when the meter says
the guess is wrong, the session looks the object up in the association's
object list and tries again.
"""

from __future__ import annotations

import re

import attrs

from dlmsd.protocol.apdus.common import CosemAttributeDescriptor
from dlmsd.protocol.errors import DecodeError
from dlmsd.protocol.obis import Obis

DATA_CLASS = 1
REGISTER_CLASS = 3
EXTENDED_REGISTER_CLASS = 4
PROFILE_GENERIC_CLASS = 7
CLOCK_CLASS = 8
ASSOCIATION_LN_CLASS = 15
PUSH_SETUP_CLASS = 40
SECURITY_SETUP_CLASS = 64
DISCONNECT_CONTROL_CLASS = 70

_CLASS_PREFIX = re.compile(r"^(\d{1,5})/(.*)\Z", re.ASCII | re.DOTALL)
_ATTRIBUTE_SUFFIX = re.compile(r"^(.*):(-?\d{1,3})\Z", re.ASCII | re.DOTALL)


@attrs.frozen(slots=True)
class Target:
    """One attribute to read: OBIS, attribute id and (when known) the class id."""

    obis: Obis
    attribute: int = 2
    class_id: int | None = None

    @property
    def resolved_class_id(self) -> int:
        """The class id given, else the best guess from the OBIS code."""
        return self.class_id if self.class_id is not None else guess_class_id(self.obis)

    def descriptor(self, class_id: int | None = None) -> CosemAttributeDescriptor:
        """The attribute descriptor (``class_id`` overrides the guess)."""
        chosen = class_id if class_id is not None else self.resolved_class_id
        return CosemAttributeDescriptor(chosen, self.obis, self.attribute)

    def __str__(self) -> str:
        prefix = f"{self.class_id}/" if self.class_id is not None else ""
        return f"{prefix}{self.obis}:{self.attribute}"


def parse_target(text: str, default_attribute: int = 2) -> Target:
    """Parse ``[CLASS/]OBIS[:ATTRIBUTE]``, e.g. ``1-0:1.8.0*255:2`` or ``3/1.0.1.8.0.255``.

    Raises :class:`DecodeError` with a message fit for a command line.
    """
    rest = text.strip()
    class_id: int | None = None
    prefixed = _CLASS_PREFIX.match(rest)
    if prefixed is not None:
        class_id = int(prefixed.group(1))
        if class_id > 0xFFFF:
            raise DecodeError(f"class id {class_id} out of range 0..65535 in {text!r}")
        rest = prefixed.group(2)
    attribute = default_attribute
    suffixed = _ATTRIBUTE_SUFFIX.match(rest)
    # `1-0:1.8.0` also ends in `:digits`; it is an attribute only if what is left is OBIS.
    if suffixed is not None:
        try:
            obis = Obis.parse(suffixed.group(1))
        except DecodeError:
            obis = Obis.parse(rest)
        else:
            attribute = int(suffixed.group(2))
    else:
        obis = Obis.parse(rest)
    if not -128 <= attribute <= 127:
        raise DecodeError(f"attribute {attribute} out of range -128..127 in {text!r}")
    return Target(obis, attribute, class_id)


def as_target(value: Target | Obis | str, attribute: int | None = None) -> Target:
    """Accept a :class:`Target`, an :class:`Obis` or text; ``attribute`` overrides."""
    if isinstance(value, Target):
        target = value
    elif isinstance(value, Obis):
        target = Target(value)
    else:
        target = parse_target(value)
    if attribute is not None and attribute != target.attribute:
        target = attrs.evolve(target, attribute=attribute)
    return target


def guess_class_id(obis: Obis) -> int:
    """The interface class an object with this OBIS code usually has."""
    a, c, d, e = obis.a, obis.c, obis.d, obis.e
    if a == 0:
        if c == 1 and d == 0:
            return CLOCK_CLASS
        if c == 40 and d == 0:
            return ASSOCIATION_LN_CLASS
        if c == 43 and d == 0:
            return SECURITY_SETUP_CLASS
        if c == 25 and d == 9:
            return PUSH_SETUP_CLASS
        if (c, d, e) == (96, 3, 10) or (c, d) == (24, 4):
            return DISCONNECT_CONTROL_CLASS
    if c in (98, 99):
        return PROFILE_GENERIC_CLASS
    if a != 0 and 1 <= c <= 89:
        return REGISTER_CLASS
    return DATA_CLASS
