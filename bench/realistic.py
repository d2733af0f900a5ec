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
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from bench.peers import Adapter, package_version
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
    forged: bytes  # the first push with one bit of its GCM tag flipped, framed alike

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
        frames.append(framed(ciphered(registers, push), framing))
        values.append(tuple(register_value(index, push) for index in range(registers)))
    first = ciphered(registers, 0)
    forged = framed(first[:-1] + bytes((first[-1] ^ 0x01,)), framing)
    return PushSet(name, registers, tuple(frames), tuple(values), forged)


def framed(apdu: bytes, framing: str) -> bytes:
    if framing == "hdlc3":
        return hdlc_segments(apdu, 3)
    if framing == "gbt3":
        return gbt_in_hdlc(apdu, 3)
    return apdu


# --- what each implementation found, and the adapters --------------------------------------


@attrs.frozen(slots=True)
class RegisterSummary:
    """A decoded push as plain values: its invocation counter and the raw register values."""

    invocation_counter: int
    values: tuple[int, ...]

    def mismatches(self, expected: RegisterSummary) -> list[str]:
        return [
            field.name
            for field in attrs.fields(RegisterSummary)
            if getattr(self, field.name) != getattr(expected, field.name)
        ]


def expected_summaries(pushes: PushSet) -> list[RegisterSummary]:
    return [RegisterSummary(1000 + index, values) for index, values in enumerate(pushes.values)]


def dlmsd_decode(framing: str) -> Adapter:
    """dlmsd's public decode path: `decode_capture` finds the APDU in its framing, verifies
    and decrypts it, and gives the record (typed body, readings with OBIS, scaled value,
    unit) as a dict: what `dlmsd decode` prints. Its process-wide cache of compiled
    shapes is on, as it is for every caller."""
    from dlmsd.decoding import decode_capture

    def cipher_for(_title: bytes | None) -> Suite0Cipher:
        return CIPHER

    def decode(frame: bytes) -> list[dict[str, Any]]:
        return list(decode_capture(frame, cipher_for))

    def summarize(records: list[dict[str, Any]]) -> RegisterSummary:
        (record,) = records
        entries = record["body"]["value"][1:]
        if len(record["readings"]) != len(entries) + 1:
            raise ValueError("not one reading per register (and the clock)")
        values = tuple(entry["value"][1]["value"] for entry in entries)
        return RegisterSummary(record["invocation_counter"], values)

    return Adapter(
        "dlmsd",
        package_version("dlmsd"),
        decode,
        summarize,
        f"decode_capture ({framing}), records with readings",
    )


def _hdlc_frames(data: bytes) -> list[bytes]:
    """Back-to-back HDLC frames cut by their format field's length (bench input only)."""
    frames, position = [], 0
    while position < len(data):
        length = ((data[position + 1] & 0x07) << 8 | data[position + 2]) + 2
        frames.append(data[position : position + length])
        position += length
    return frames


def dlms_cosem_decode(framing: str) -> Adapter:
    """dlms-cosem: (HDLC: `UnnumberedInformationFrame.from_bytes` per frame, information
    fields joined, LLC header dropped) -> `XDlmsApduFactory` (GeneralGlobalCipher) ->
    `to_plain_apdu` (verifies the tag) -> DataNotification -> `DlmsDataParser` value tree.
    No readings: no OBIS mapping, scaling or units."""
    from dlms_cosem.connection import XDlmsApduFactory  # type: ignore[import-untyped]
    from dlms_cosem.dlms_data import DlmsDataParser  # type: ignore[import-untyped]
    from dlms_cosem.hdlc.frames import UnnumberedInformationFrame  # type: ignore[import-untyped]

    apdu_from_bytes = XDlmsApduFactory.apdu_from_bytes
    from_frame = UnnumberedInformationFrame.from_bytes

    def decode(frame: bytes) -> tuple[Any, list[Any]]:
        if framing != "apdu":
            information = b"".join(from_frame(part).information for part in _hdlc_frames(frame))
            frame = information[len(_LLC) :]
        ciphered = apdu_from_bytes(frame)
        plain = apdu_from_bytes(ciphered.to_plain_apdu(ENCRYPTION_KEY, AUTHENTICATION_KEY))
        return ciphered, DlmsDataParser().parse(plain.body)

    def summarize(result: tuple[Any, list[Any]]) -> RegisterSummary:
        ciphered, body = result
        values = tuple(entry.value[1].value for entry in body[0].value[1:])
        return RegisterSummary(ciphered.invocation_counter, values)

    return Adapter(
        "dlms-cosem",
        package_version("dlms-cosem"),
        decode,
        summarize,
        "value tree only, no readings (no OBIS mapping, scaling, units)",
    )
