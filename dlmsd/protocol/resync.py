"""What the HDLC and M-Bus stream decoders share: a byte buffer scanned for frames,
with the bytes skipped between them reported once as a :class:`FrameError`.

Both framings resynchronise the same way after noise (drop one start byte, look
for the next); only how a frame starts and ends differs, and that stays in each
decoder's ``next_event``.
"""

from __future__ import annotations

import attrs

from dlmsd.protocol.events import NEED_DATA, NeedData

# Drop consumed bytes once this many have piled up; what remains is at most
# one partial frame, so the copy is cheap and the total cost stays O(n).
_COMPACT_THRESHOLD = 4096


@attrs.frozen(slots=True)
class FrameError:
    """Bytes the stream decoder skipped: noise, a bad checksum, a malformed frame.

    The decoder has already resynchronised; this is a notice, not a failure.
    """

    reason: str
    skipped_bytes: int


class ResyncBuffer:
    """The buffer, scan position and skipped-bytes bookkeeping of a stream decoder.

    `outside` is the reason given for skipped bytes when no frame check said why.
    """

    outside = "bytes outside any frame"

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0  # where scanning resumes
        self._skipped = 0  # bytes dropped since the last FrameError
        self._reason: str | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a frame that has not been completed yet."""
        return len(self._buffer) - self._position

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the line."""
        self._buffer += data

    def _report_or_need_data(self) -> FrameError | NeedData:
        if self._skipped:
            return self._take_error()
        return self._need_data()

    def _take_error(self) -> FrameError:
        event = FrameError(self._reason or self.outside, self._skipped)
        self._skipped = 0
        self._reason = None
        self._compact()
        return event

    def _need_data(self) -> NeedData:
        self._compact()
        return NEED_DATA

    def _compact(self) -> None:
        position = self._position
        if position >= _COMPACT_THRESHOLD or (position and position == len(self._buffer)):
            del self._buffer[:position]
            self._position = 0
