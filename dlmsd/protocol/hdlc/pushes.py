"""Push APDUs out of HDLC frames: segmented frames and General Block Transfer.

Meters split a long push in one of two ways:

* HDLC segmentation: the segmentation bit on every frame but the last, the LLC
  header in the first (:class:`~dlmsd.protocol.hdlc.reassembly.SegmentReassembler`).
* GBT inside ordinary frames (Landis+Gyr E450/E570/E360): no segmentation bit,
  each frame's information field one GBT block, the LLC header in the first
  frame only (:class:`~dlmsd.protocol.gbt_push.GbtPushAssembler`).

A frame that is not segmented, continues no segmented APDU and whose
information field starts with the GBT tag 0xE0 (no LLC header) is a block
after the first. Everything else goes through the segment reassembler; an APDU
it completes that is itself a GBT block (block 1, behind the LLC header) goes to
the GBT assembler, any other APDU is a push of its own. One instance per line
or connection; :meth:`feed` never raises.
"""

from __future__ import annotations

from dlmsd.protocol.gbt import GeneralBlockTransfer
from dlmsd.protocol.gbt_push import (
    DEFAULT_MAX_PUSH_SIZE,
    GbtPushAssembler,
    GbtPushEvent,
    MessageDropped,
)
from dlmsd.protocol.hdlc.events import ApduReceived
from dlmsd.protocol.hdlc.frames import FrameKind, HdlcFrame
from dlmsd.protocol.hdlc.reassembly import ReassemblyError, SegmentReassembler

__all__ = ["HdlcPushAssembler", "MessageDropped", "PushEvent"]

PushEvent = GbtPushEvent
_GBT_TAG = GeneralBlockTransfer.TAG
_DATA_KINDS = (FrameKind.I, FrameKind.UI)


class HdlcPushAssembler:
    """HDLC I/UI frames in; APDUs, refused messages and dropped partials out."""

    def __init__(self, max_apdu_length: int = DEFAULT_MAX_PUSH_SIZE) -> None:
        self._segments = SegmentReassembler(max_apdu_length)
        self._blocks = GbtPushAssembler(max_apdu_length)

    @property
    def pending(self) -> bool:
        """True while a segmented APDU or a GBT message is incomplete."""
        return self._segments.pending or self._blocks.pending

    @property
    def pending_reason(self) -> str | None:
        """What is incomplete, in words (for an input that ends here), or None."""
        if self._segments.pending:
            return "HDLC segments end before the last segment"
        if self._blocks.pending:
            return f"GBT message ends before its last block (block {self._blocks.expected_block})"
        return None

    def feed(self, frame: HdlcFrame) -> list[PushEvent]:
        """Take one frame; frames other than I and UI, and empty ones, are ignored."""
        information = frame.information
        if frame.control.kind not in _DATA_KINDS or not information:
            return []
        if information[0] == _GBT_TAG and not frame.segmented and not self._segments.pending:
            return self._blocks.feed_bytes(information)
        events: list[PushEvent] = []
        for item in self._segments.feed(frame):
            if isinstance(item, ReassemblyError):
                events.append(item)
            elif item.apdu[:1] == bytes((_GBT_TAG,)):
                events.extend(self._blocks.feed_bytes(item.apdu))
            else:
                events.extend(self._blocks.interrupt("GBT message interrupted by another APDU"))
                events.append(ApduReceived(item.apdu, item.frames))
        return events

    def reset(self) -> int:
        """Forget any partial APDU or message; returns the bytes dropped."""
        return self._segments.reset() + self._blocks.reset()
