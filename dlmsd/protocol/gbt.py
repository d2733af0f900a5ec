"""General Block Transfer (GBT, Green Book 9.4.6.13): the APDU and both ends of a transfer.

The APDU [224]::

    E0 | block-control(1) | block-number(2) | block-number-ack(2) | block-data (length-prefixed)
    block-control: bit 7 last-block, bit 6 streaming, bits 0-5 window

How a transfer runs (sans-io: the caller moves the APDUs and owns the timers):

* The sender cuts the APDU into blocks numbered from 1 and sends up to `window`
  of them; streaming=1 on every block of a window but the last, so the
  receiver knows when to answer.
* The receiver answers at the end of each window with an empty GBT whose
  block-number-ack is the last block it holds *in order* and whose window is
  how many blocks it wants next. The sender continues from block-number-ack + 1.
* Lost block recovery: when the receiver holds blocks past a gap, it asks for
  the missing run only (block-number-ack = the block before the gap, window =
  the length of the run), as in the Green Book's lost-block figures; blocks it
  already holds are not asked for again. A lost end-of-window block shows up as
  silence: the caller's timer calls :meth:`GbtReceiver.on_timeout` to re-ask.
* Duplicates are ignored; blocks may arrive out of order within a window.
"""

from __future__ import annotations

import struct
from typing import ClassVar

import attrs

from dlmsd.protocol.axdr import decode_length, encode_length
from dlmsd.protocol.errors import (
    DecodeError,
    EncodeError,
    LengthError,
    ProtocolError,
    TruncatedError,
    UnknownTagError,
)
from dlmsd.protocol.events import NEED_DATA, NeedDataType

_HEADER = struct.Struct(">BBHH")
_LAST_BLOCK = 0x80
_STREAMING = 0x40
_WINDOW_MASK = 0x3F

#: Block numbers are 16 bits; block 0 does not exist.
MAX_BLOCK_NUMBER = 0xFFFF
#: The largest window the 6-bit field can express.
MAX_WINDOW = _WINDOW_MASK
#: Default bound on a reassembled APDU.
DEFAULT_MAX_SIZE = 1 << 20


@attrs.frozen(slots=True)
class GeneralBlockTransfer:
    """One general-block-transfer APDU (a block, or an empty ack / recovery request)."""

    TAG: ClassVar[int] = 0xE0

    last_block: bool
    streaming: bool
    window: int
    block_number: int
    block_number_ack: int
    block_data: bytes = b""

    @property
    def block_control(self) -> int:
        control = self.window
        if self.last_block:
            control |= _LAST_BLOCK
        if self.streaming:
            control |= _STREAMING
        return control

    def to_bytes(self) -> bytes:
        if not 0 <= self.window <= MAX_WINDOW:
            raise EncodeError(f"GBT window must be 0..63, got {self.window}")
        for name, number in (("block-number", self.block_number), ("ack", self.block_number_ack)):
            if not 0 <= number <= MAX_BLOCK_NUMBER:
                raise EncodeError(f"GBT {name} must be 0..65535, got {number}")
        return (
            _HEADER.pack(self.TAG, self.block_control, self.block_number, self.block_number_ack)
            + encode_length(len(self.block_data))
            + self.block_data
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> GeneralBlockTransfer:
        """Decode a complete GBT APDU (trailing bytes raise DecodeError)."""
        if len(buf) < 7:
            raise TruncatedError(f"a GBT APDU needs at least 7 bytes, got {len(buf)}", len(buf))
        tag, control, number, ack = _HEADER.unpack_from(buf, 0)
        if tag != cls.TAG:
            raise UnknownTagError(f"GBT tag must be 0xE0, got 0x{tag:02X}", 0)
        size, start = decode_length(buf, 6)
        end = start + size
        if end > len(buf):
            raise TruncatedError(f"GBT block-data announces {size} bytes", 6)
        if end != len(buf):
            raise DecodeError(f"{len(buf) - end} trailing bytes after GBT APDU", end)
        return cls(
            bool(control & _LAST_BLOCK),
            bool(control & _STREAMING),
            control & _WINDOW_MASK,
            number,
            ack,
            bytes(buf[start:end]),
        )


def decode_general_block_transfer(buf: bytes) -> GeneralBlockTransfer:
    """Decode a complete general-block-transfer APDU (tag 0xE0)."""
    return GeneralBlockTransfer.from_bytes(buf)


def _check_window(window: int) -> int:
    if not 1 <= window <= MAX_WINDOW:
        raise EncodeError(f"GBT window must be 1..63, got {window}")
    return window


class GbtSender:
    """Cuts one APDU into GBT blocks and answers the peer's acks.

    ``start()`` gives the first window; each ack from the peer goes to
    ``receive_ack()``, which gives the blocks to send next (from the peer's
    block-number-ack + 1, as many as the peer's window asks; a recovery request
    therefore gets exactly the missing blocks again). `window` is the number of
    blocks sent before waiting for an ack (also announced in our block-control).
    """

    def __init__(
        self,
        apdu: bytes,
        block_size: int,
        window: int = 1,
        *,
        streaming: bool = True,
        block_number_ack: int = 0,
    ) -> None:
        if block_size < 1:
            raise EncodeError(f"GBT block size must be positive, got {block_size}")
        self._window = _check_window(window)
        self._streaming = streaming
        self._blocks = [apdu[i : i + block_size] for i in range(0, len(apdu), block_size)] or [b""]
        if len(self._blocks) > MAX_BLOCK_NUMBER:
            raise EncodeError(
                f"an APDU of {len(apdu)} bytes needs {len(self._blocks)} GBT blocks of "
                f"{block_size}; at most {MAX_BLOCK_NUMBER}"
            )
        self._peer_block = block_number_ack
        self._acked = 0
        self._highest_sent = 0

    @property
    def block_count(self) -> int:
        return len(self._blocks)

    @property
    def acked(self) -> int:
        """The highest block the peer has acknowledged in order."""
        return self._acked

    @property
    def all_sent(self) -> bool:
        return self._highest_sent == len(self._blocks)

    @property
    def done(self) -> bool:
        """The peer has acknowledged every block."""
        return self._acked >= len(self._blocks)

    def start(self) -> list[GeneralBlockTransfer]:
        """The first window of blocks."""
        return self._window_from(1, self._window)

    def receive_ack(self, ack: GeneralBlockTransfer) -> list[GeneralBlockTransfer]:
        """React to the peer's ack or recovery request: the blocks to send now."""
        if ack.block_number_ack > self._highest_sent:
            raise ProtocolError(
                f"peer acknowledges block {ack.block_number_ack}, "
                f"only {self._highest_sent} were sent"
            )
        self._peer_block = ack.block_number
        self._acked = max(self._acked, ack.block_number_ack)
        # The peer's window says how many blocks it wants next; 0 would stall, read as 1.
        wanted = min(max(ack.window, 1), MAX_WINDOW)
        return self._window_from(ack.block_number_ack + 1, wanted)

    def on_timeout(self) -> list[GeneralBlockTransfer]:
        """The caller's timer ran out waiting for an ack: resend the unacknowledged window."""
        return self._window_from(self._acked + 1, self._window)

    def _window_from(self, first: int, count: int) -> list[GeneralBlockTransfer]:
        if not self._streaming:
            count = 1
        last = min(first + count - 1, len(self._blocks))
        blocks = []
        for number in range(first, last + 1):
            is_last = number == len(self._blocks)
            blocks.append(
                GeneralBlockTransfer(
                    last_block=is_last,
                    # streaming: more blocks of this window follow without an ack.
                    streaming=self._streaming and number < last,
                    window=self._window,
                    block_number=number,
                    block_number_ack=self._peer_block,
                    block_data=self._blocks[number - 1],
                )
            )
        self._highest_sent = max(self._highest_sent, last)
        return blocks


@attrs.frozen(slots=True)
class SendAck:
    """Send this GBT APDU to the peer (an ack, or a request for lost blocks)."""

    apdu: GeneralBlockTransfer


@attrs.frozen(slots=True)
class TransferComplete:
    """Every block arrived: the reassembled APDU."""

    apdu: bytes


GbtEvent = SendAck | TransferComplete | NeedDataType


class GbtReceiver:
    """Collects GBT blocks (windowed or streaming) into the APDU they carry.

    ``receive(block)`` returns :class:`SendAck` at the end of a window (or to
    ask for lost blocks), :class:`TransferComplete` once the last block and all
    before it are in, else ``NEED_DATA``. The total size is bounded by
    `max_size` (LengthError); blocks that contradict the transfer (past the last
    block, beyond any window, a second last block) raise ProtocolError.
    """

    def __init__(
        self, window: int = 1, *, max_size: int = DEFAULT_MAX_SIZE, first_block_number: int = 1
    ) -> None:
        self._window = _check_window(window)
        self._max_size = max_size
        self._next_own_number = first_block_number
        self._parts: list[bytes] = []
        self._pending: dict[int, bytes] = {}
        self._in_order = 0
        self._last: int | None = None
        self._size = 0
        self._peer_ack = 0
        self._complete = False

    @property
    def in_order(self) -> int:
        """The last block held with no gap before it."""
        return self._in_order

    @property
    def missing(self) -> tuple[int, ...]:
        """Block numbers known to be missing (gaps before held or last blocks)."""
        top = max(self._pending, default=self._in_order)
        return tuple(n for n in range(self._in_order + 1, top) if n not in self._pending)

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def peer_ack(self) -> int:
        """The last of *our* blocks the peer acknowledged (its block-number-ack)."""
        return self._peer_ack

    def receive(self, block: GeneralBlockTransfer) -> GbtEvent:
        """Take one GBT APDU from the peer."""
        number = block.block_number
        if number == 0:
            raise ProtocolError("GBT block number 0 carries no data block")
        if self._complete or number <= self._in_order or number in self._pending:
            # A duplicate: its data is ignored. At the end of a window it still gets an
            # answer, since the sender is waiting for one (our last ack may be lost).
            if not self._complete and (block.last_block or not block.streaming):
                return SendAck(self._ack())
            return NEED_DATA
        if self._last is not None and number > self._last:
            raise ProtocolError(f"GBT block {number} after the last block {self._last}")
        if number > self._in_order + MAX_WINDOW:
            raise ProtocolError(
                f"GBT block {number} is beyond any window after block {self._in_order}"
            )
        if block.last_block:
            if self._pending and max(self._pending) > number:
                raise ProtocolError(f"GBT last block {number} before a held later block")
            self._last = number
        self._size += len(block.block_data)
        if self._size > self._max_size:
            raise LengthError(f"GBT transfer exceeds {self._max_size} bytes")
        self._peer_ack = max(self._peer_ack, block.block_number_ack)
        self._pending[number] = block.block_data
        while self._in_order + 1 in self._pending:
            self._in_order += 1
            self._parts.append(self._pending.pop(self._in_order))
        if self._last is not None and self._in_order == self._last:
            self._complete = True
            apdu = b"".join(self._parts)
            self._parts = []
            return TransferComplete(apdu)
        if block.last_block or not block.streaming:
            return SendAck(self._ack())
        return NEED_DATA

    def on_timeout(self) -> GeneralBlockTransfer:
        """The caller's timer ran out waiting for blocks: what to send to re-ask."""
        if self._complete:
            raise ProtocolError("GBT transfer already complete")
        return self._ack()

    def _ack(self) -> GeneralBlockTransfer:
        missing = self.missing
        if missing:
            # Lost block recovery: ask for the first run of missing blocks only.
            run = 1
            while run < len(missing) and missing[run] == missing[0] + run:
                run += 1
            window = min(run, MAX_WINDOW)
        else:
            window = self._window
        number = self._next_own_number
        self._next_own_number = min(number + 1, MAX_BLOCK_NUMBER)
        return GeneralBlockTransfer(
            last_block=True,
            streaming=False,
            window=window,
            block_number=number,
            block_number_ack=self._in_order,
        )
