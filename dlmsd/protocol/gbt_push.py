"""General Block Transfer in pushes: one APDU sent as numbered blocks, no acks.

Landis+Gyr E450/E570/E360 (and others) push a long DataNotification as several
ordinary HDLC frames, each carrying one GBT APDU (tag 0xE0, see
:mod:`dlmsd.protocol.gbt`) whose raw block data, joined in block-number order,
is the APDU. Nothing is acknowledged: the meter sends blocks 1, 2, ... with the
streaming bit on all but the last, which has the last-block bit.

The rules here (a push has no way to ask for a lost block again):

* Block 1 starts a message. Arriving while a message is open, it starts a new
  one: the partial message is dropped (:class:`MessageDropped`; seen after a
  meter restart).
* The next block must be the next number. A gap, a duplicate or an
  out-of-order block refuses the whole message (:class:`ReassemblyError`,
  ``GBT block 4 after 2 (block 3 missing)``); its later blocks are skipped up
  to the next block 1.
* Blocks without their block 1 (a capture or a connection that starts in the
  middle of a message) are skipped up to the next block 1, reported once.
* The joined size is bounded (`max_size`): past it the message is refused.

Nothing is half-accepted: an APDU comes out only when every block from 1 to
the one with the last-block bit arrived, in order.
"""

from __future__ import annotations

import attrs

from dlmsd.protocol.errors import DecodeError, DlmsError, LengthError
from dlmsd.protocol.gbt import GeneralBlockTransfer
from dlmsd.protocol.hdlc.events import ApduReceived
from dlmsd.protocol.hdlc.reassembly import ReassemblyError

#: The default bound on a joined APDU (the same as for segmented HDLC APDUs).
DEFAULT_MAX_PUSH_SIZE = 65535


@attrs.frozen(slots=True)
class MessageDropped:
    """A partial message given up without a fault of its own: a new message began
    (block 1 again) or blocks came without their block 1. Counted, not refused."""

    reason: str
    dropped_bytes: int


GbtPushEvent = ApduReceived | ReassemblyError | MessageDropped


class GbtPushAssembler:
    """Joins the blocks of pushed GBT messages (one stream: a line or a connection).

    :meth:`feed` takes a decoded block, :meth:`feed_bytes` the GBT APDU's bytes;
    both return events and never raise.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_PUSH_SIZE) -> None:
        self._max_size = max_size
        self._parts: list[bytes] = []
        self._size = 0
        self._next = 0  # the block number expected next; 0: no message open
        self._skipping = False  # the blocks of a refused or orphan message follow

    @property
    def pending(self) -> bool:
        """True while a message is open (block 1 arrived, its last block not yet)."""
        return self._next != 0

    @property
    def expected_block(self) -> int:
        """The block number the open message needs next (0 when none is open)."""
        return self._next

    def feed_bytes(self, data: bytes) -> list[GbtPushEvent]:
        """Take one GBT APDU as bytes; one that does not decode refuses the open message."""
        try:
            block = GeneralBlockTransfer.from_bytes(data)
        except DlmsError as error:
            return [self._refuse(DecodeError(f"bad GBT block: {error.reason}", error.offset))]
        return self.feed(block)

    def feed(self, block: GeneralBlockTransfer) -> list[GbtPushEvent]:
        """Take one block; returns the APDU once its last block is in."""
        number = block.block_number
        events: list[GbtPushEvent] = []
        if number == 1:
            if self._next:
                reason = f"GBT message restarted at block 1 after block {self._next - 1}"
                events.append(MessageDropped(reason, self._size))
            self._clear()
            self._skipping = False
            self._next = 1
        elif not self._next:
            if self._skipping:
                return events
            self._skipping = True
            reason = f"GBT block {number} without its block 1: skipped up to the next block 1"
            return [MessageDropped(reason, len(block.block_data))]
        elif number != self._next:
            error = DecodeError(_out_of_sequence(number, self._next - 1))
            return [self._refuse(error, len(block.block_data))]
        if self._size + len(block.block_data) > self._max_size:
            error = LengthError(f"GBT message exceeds {self._max_size} bytes", self._size)
            events.append(self._refuse(error, len(block.block_data)))
            return events
        self._parts.append(block.block_data)
        self._size += len(block.block_data)
        if not block.last_block:
            self._next = number + 1
            return events
        events.append(ApduReceived(b"".join(self._parts), number))
        self._clear()
        return events

    def interrupt(self, reason: str) -> list[GbtPushEvent]:
        """Another APDU came while a message is open: refuse the open message."""
        if not self._next:
            return []
        return [self._refuse(DecodeError(reason))]

    def reset(self) -> int:
        """Forget any open message (the line was reopened); returns the bytes dropped."""
        dropped = self._size
        self._clear()
        self._skipping = False
        return dropped

    def _refuse(self, error: DlmsError, extra_bytes: int = 0) -> ReassemblyError:
        event = ReassemblyError(error.reason, self._size + extra_bytes, error)
        self._clear()
        self._skipping = True
        return event

    def _clear(self) -> None:
        self._parts = []
        self._size = 0
        self._next = 0


def _out_of_sequence(number: int, last: int) -> str:
    if number == last:
        what = "a duplicate"
    elif number < last:
        what = "out of order"
    elif number == last + 2:
        what = f"block {last + 1} missing"
    else:
        what = f"blocks {last + 1}..{number - 1} missing"
    return f"GBT block {number} after {last} ({what})"
