"""The sending half of an HDLC link: V(S), queued segments and the unacknowledged window.

Shared by the client link (:mod:`.connection`) and the emulated server link
(:mod:`dlmsd.client.transport`); both build the actual I frames themselves
because addresses and N(R) belong to the link, not to the window.
"""

from __future__ import annotations

from collections import deque

import attrs

SEQUENCE_MODULUS = 8  # 3-bit N(S)/N(R) in frame format type 3


@attrs.frozen(slots=True)
class WindowSegment:
    """One I frame to put on the line: its N(S), payload, segmentation and poll/final bit."""

    ssn: int
    chunk: bytes
    segmented: bool
    final: bool


class SendWindow:
    """Go-back-N sending state: segments not sent yet and those sent but not acknowledged."""

    def __init__(self) -> None:
        self.send_state = 0  # V(S): ssn of our next I frame
        self._queue: deque[tuple[bytes, bool]] = deque()  # segments not sent yet
        self._unacked: list[tuple[bytes, bool]] = []  # sent, not acknowledged, oldest first

    @property
    def has_unacked(self) -> bool:
        """True while some sent I frame waits for its acknowledgement."""
        return bool(self._unacked)

    def enqueue(self, information: bytes, size: int) -> None:
        """Cut ``information`` into ``size``-byte segments behind those already queued."""
        for start in range(0, len(information), size):
            self._queue.append(
                (information[start : start + size], start + size < len(information))
            )

    def acknowledge_up_to(self, rsn: int) -> bool:
        """Drop the frames ``rsn`` acknowledges; False if ``rsn`` is outside the window."""
        oldest = (self.send_state - len(self._unacked)) % SEQUENCE_MODULUS
        count = (rsn - oldest) % SEQUENCE_MODULUS
        if count > len(self._unacked):
            return False
        del self._unacked[:count]
        return True

    def take(self, window: int) -> list[WindowSegment]:
        """Move queued segments into the window while it has room."""
        segments = []
        while self._queue and len(self._unacked) < window:
            chunk, segmented = self._queue.popleft()
            ssn = self.send_state
            self.send_state = (ssn + 1) % SEQUENCE_MODULUS
            self._unacked.append((chunk, segmented))
            # Poll/final on the last frame of a window so the peer answers.
            final = len(self._unacked) == window or not self._queue
            segments.append(WindowSegment(ssn, chunk, segmented, final))
        return segments

    def unacked(self) -> list[WindowSegment]:
        """The unacknowledged frames again, oldest first (go back to N(R))."""
        oldest = (self.send_state - len(self._unacked)) % SEQUENCE_MODULUS
        last = len(self._unacked) - 1
        return [
            WindowSegment((oldest + index) % SEQUENCE_MODULUS, chunk, segmented, index == last)
            for index, (chunk, segmented) in enumerate(self._unacked)
        ]

    def clear(self) -> None:
        """Forget queued and unacknowledged segments, keeping V(S)."""
        self._queue.clear()
        self._unacked.clear()

    def reset(self) -> None:
        """Back to a fresh link: nothing pending and V(S) = 0."""
        self.clear()
        self.send_state = 0
