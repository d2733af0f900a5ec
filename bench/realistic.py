"""Realistic pushes for the benchmarks, built with dlmsd's own encoders (synthetic).

What meters send in the field: a DataNotification whose body is an array of a
clock entry and N registers, each ``{OBIS, value, {scaler, unit}}``, in
general-glo-ciphering (suite 0, SC 0x30); as one APDU (UDP/TCP), as HDLC UI
frames with the segmentation bit (most meters), or as General Block Transfer
blocks inside plain HDLC frames (Landis+Gyr E450/E570). The layout is the one of
the published HAN pushes (tests/data/field/), the values and keys are made up.
Every frame of a set has its own invocation counter, clock and values, as
consecutive pushes of one meter do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import attrs

from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.ciphered import GeneralGloCiphering
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.gbt import GeneralBlockTransfer
from dlmsd.protocol.hdlc.address import HdlcAddress
from dlmsd.protocol.hdlc.frames import Control, FrameKind, HdlcFrame
from dlmsd.protocol.security import Suite0Cipher

SYSTEM_TITLE = bytes.fromhex("4C475A0000BC614E")  # made up
_DIGEST = hashlib.sha256(b"dlmsd bench realistic pushes").digest()
ENCRYPTION_KEY, AUTHENTICATION_KEY = _DIGEST[:16], _DIGEST[16:]
CIPHER = Suite0Cipher(ENCRYPTION_KEY, AUTHENTICATION_KEY)
_LLC = b"\xe6\xe7\x00"
_START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_CLOCK = bytes((0, 0, 1, 0, 0, 255))

# (C, E, value type, scaler, unit): energies (Wh), powers (W), voltages (V), currents (A).
_REGISTERS: tuple[tuple[int, int, str, int, int], ...] = (
    (1, 0, "double_long_unsigned", 0, 30),
    (2, 0, "double_long_unsigned", 0, 30),
    (3, 0, "double_long_unsigned", 0, 32),
    (4, 0, "double_long_unsigned", 0, 32),
    (1, 7, "double_long_unsigned", 0, 27),
    (2, 7, "double_long_unsigned", 0, 27),
    (32, 7, "long_unsigned", -1, 35),
    (52, 7, "long_unsigned", -1, 35),
    (72, 7, "long_unsigned", -1, 35),
    (31, 7, "long", -2, 33),
    (51, 7, "long", -2, 33),
    (71, 7, "long", -2, 33),
)


@attrs.frozen(slots=True)
class PushSet:
    """Frames of one meter's consecutive pushes, and the raw register values in each."""

    name: str
    registers: int
    frames: tuple[bytes, ...]
    values: tuple[tuple[int, ...], ...]  # per frame, the unscaled register values

    @property
    def sizes(self) -> str:
        low, high = min(map(len, self.frames)), max(map(len, self.frames))
        return f"{low} B" if low == high else f"{low}-{high} B"


def register_obis(index: int) -> bytes:
    """The OBIS code of register `index`: the 12 above, then tariffs and harmonics."""
    c, e = _REGISTERS[index % len(_REGISTERS)][:2]
    return bytes((1, 0, c, 8 if e == 0 else e, index // len(_REGISTERS), 255))


def register_value(index: int, push: int) -> int:
    kind = _REGISTERS[index % len(_REGISTERS)][2]
    if kind == "double_long_unsigned":
        return (1_000_000 * (index + 1) + push * 37 * (index + 3)) & 0xFFFFFFFF
    if kind == "long_unsigned":
        return 2300 + (push * 7 + index) % 60
    return ((push * 13 + index * 5) % 4000) - 2000


def notification(registers: int, push: int) -> bytes:
    """The plaintext DataNotification of push number `push` (from 0)."""
    stamp = CosemDateTime.from_datetime(_START + timedelta(seconds=10 * push)).to_bytes()
    entries = [Data.structure(Data.octet_string(_CLOCK), Data.octet_string(stamp))]
    for index in range(registers):
        _c, _e, kind, scaler, unit = _REGISTERS[index % len(_REGISTERS)]
        value = getattr(Data, kind)(register_value(index, push))
        entries.append(
            Data.structure(
                Data.octet_string(register_obis(index)),
                value,
                Data.structure(Data.integer(scaler), Data.enum(unit)),
            )
        )
    body = Data.array(*entries)
    return DataNotification(0x40000000 | (push + 1), None, body).to_bytes()


def ciphered(registers: int, push: int) -> bytes:
    counter = 1000 + push
    payload = CIPHER.encrypt(SYSTEM_TITLE, 0x30, counter, notification(registers, push))
    return GeneralGloCiphering(SYSTEM_TITLE, 0x30, counter, payload).to_bytes()


def _frame(information: bytes, segmented: bool) -> bytes:
    return HdlcFrame(
        HdlcAddress.client(16),
        HdlcAddress.server(1, 17),
        Control(FrameKind.UI),
        information,
        segmented,
    ).to_bytes()


def hdlc_segments(apdu: bytes, segments: int) -> bytes:
    """The APDU as `segments` HDLC UI frames with the segmentation bit (LLC in the first)."""
    information = _LLC + apdu
    size = -(-len(information) // segments)
    chunks = [information[start : start + size] for start in range(0, len(information), size)]
    return b"".join(_frame(chunk, index < len(chunks) - 1) for index, chunk in enumerate(chunks))


def gbt_in_hdlc(apdu: bytes, blocks: int) -> bytes:
    """The APDU as `blocks` GBT blocks, one per plain HDLC frame (LLC in the first only),
    as Landis+Gyr E450s push."""
    size = -(-len(apdu) // blocks)
    chunks = [apdu[start : start + size] for start in range(0, len(apdu), size)]
    frames = []
    for index, chunk in enumerate(chunks):
        block = GeneralBlockTransfer(
            index == len(chunks) - 1, True, 1, index + 1, 0, chunk
        ).to_bytes()
        frames.append(_frame((_LLC if index == 0 else b"") + block, False))
    return b"".join(frames)


def push_set(name: str, registers: int, count: int = 16, framing: str = "apdu") -> PushSet:
    """`count` consecutive pushes with `registers` registers; `framing` is ``apdu``,
    ``hdlc3`` (3 HDLC segments) or ``gbt3`` (3 GBT blocks in HDLC frames)."""
    frames: list[bytes] = []
    values: list[tuple[int, ...]] = []
    for push in range(count):
        apdu = ciphered(registers, push)
        if framing == "hdlc3":
            apdu = hdlc_segments(apdu, 3)
        elif framing == "gbt3":
            apdu = gbt_in_hdlc(apdu, 3)
        frames.append(apdu)
        values.append(tuple(register_value(index, push) for index in range(registers)))
    return PushSet(name, registers, tuple(frames), tuple(values))
