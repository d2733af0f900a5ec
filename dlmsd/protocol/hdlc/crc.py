"""CRC-16/X-25 for the HDLC HCS and FCS (poly 0x1021 reflected, init and xorout 0xFFFF).

Check value: ``crc16(b"123456789") == 0x906E``. The checksum goes on the wire
least significant byte first.

The hot path uses :func:`binascii.crc_hqx` (the same polynomial, MSB-first, in C)
on bit-reversed bytes and reverses the result: a reflected CRC equals the
bit-reversed unreflected CRC of the bit-reversed input. :func:`crc16_table` is
the classic byte-table implementation, kept as the reference the tests compare
against.
"""

from __future__ import annotations

import binascii

_POLY_REFLECTED = 0x8408
_INIT = 0xFFFF
_XOROUT = 0xFFFF


def _reverse_byte(value: int) -> int:
    return int(f"{value:08b}"[::-1], 2)


_REVERSED = bytes(_reverse_byte(value) for value in range(256))


def _build_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _build_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X-25 of ``data``."""
    unreflected = binascii.crc_hqx(bytes(data).translate(_REVERSED), _INIT)
    reflected = (_REVERSED[unreflected & 0xFF] << 8) | _REVERSED[unreflected >> 8]
    return reflected ^ _XOROUT


def crc16_table(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X-25 with a per-byte table loop (reference implementation)."""
    crc = _INIT
    table = _TABLE
    for byte in bytes(data):
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ _XOROUT


def checksum_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The HCS/FCS of ``data`` as it goes on the wire (least significant byte first)."""
    return crc16(data).to_bytes(2, "little")
