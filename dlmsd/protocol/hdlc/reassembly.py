"""Reassemble APDUs that a meter splits over several HDLC I or UI frames.

Every segment but the last has the segmentation bit set; the LLC header sits in
front of the first segment only. Used for pushes on HAN/P1 ports and by the
client connection for segmented responses.

A pending APDU is dropped (with a :class:`ReassemblyError`) when the next frame
cannot continue it: another address pair, another frame kind, a gap in the
I-frame send sequence numbers, or a UI frame whose information field starts
with an LLC header, i.e. a new APDU began because the last segment was lost.
UI frames have no sequence numbers, so that last test is a heuristic: it
misfires if a continuation happens to start with ``E6 E6 00``/``E6 E7 00``
(odds 2^-23 per segment for random data), losing that one APDU.
"""

from __future__ import annotations

import attrs

from dlmsd.protocol.errors import DecodeError, DlmsError, LengthError
from dlmsd.protocol.hdlc.events import ApduReceived
from dlmsd.protocol.hdlc.frames import LLC_COMMAND, LLC_RESPONSE, FrameKind, HdlcFrame

DEFAULT_MAX_APDU_LENGTH = 65535
_DATA_KINDS = (FrameKind.I, FrameKind.UI)


@attrs.frozen(slots=True)
class ReassemblyError:
    """A partial APDU that was dropped; ``error`` is the matching :class:`DlmsError`."""

    reason: str
    dropped_bytes: int
    error: DlmsError = attrs.field(eq=False, repr=False)


ReassemblyEvent = ApduReceived | ReassemblyError


def _has_llc(information: bytes) -> bool:
    header = information[:3]
    return header in (LLC_RESPONSE, LLC_COMMAND)


class SegmentReassembler:
    """Concatenate segmented information fields into APDUs, bounded in size.

    :meth:`feed` returns events and never raises; :meth:`add` is the strict form
    for decoding captures: it raises the error of any dropped partial APDU.
    """

    def __init__(
        self, max_apdu_length: int = DEFAULT_MAX_APDU_LENGTH, *, require_llc: bool = True
    ) -> None:
        self._max_apdu_length = max_apdu_length
        self._require_llc = require_llc
        self._parts: list[bytes] = []
        self._size = 0
        self._frames = 0
        self._last: HdlcFrame | None = None  # previous segment of the current APDU
        self._discarding = False  # skipping the rest of an APDU that failed

    @property
    def pending(self) -> bool:
        """True while a segmented APDU is incomplete."""
        return self._frames > 0

    def feed(self, frame: HdlcFrame) -> list[ReassemblyEvent]:
        """Take one frame; frames other than I and UI are ignored."""
        if frame.control.kind not in _DATA_KINDS:
            return []
        events: list[ReassemblyEvent] = []
        starts_apdu = _has_llc(frame.information)
        if self._last is not None:
            reason = self._interruption(frame, starts_apdu)
            if reason is None:
                if self._discarding:
                    self._last = frame if frame.segmented else None
                    self._discarding = frame.segmented
                    return events
                return self._append(frame, frame.information)
            if self._frames:
                events.append(self._drop(DecodeError(reason), 0))
            self._discarding = False
            self._last = None
        if starts_apdu:
            payload = frame.information[3:]
        elif self._require_llc:
            header = frame.information[:3].hex()
            error = DecodeError(f"first segment lacks the LLC header (starts {header!r})", 0)
            events.append(self._fail(error, frame))
            return events
        else:
            payload = frame.information
        events.extend(self._append(frame, payload))
        return events

    def add(self, frame: HdlcFrame) -> bytes | None:
        """The APDU once ``frame`` completes one, else None; raises on a dropped partial."""
        result = None
        for event in self.feed(frame):
            if isinstance(event, ReassemblyError):
                raise event.error
            result = event.apdu
        return result

    def reset(self) -> int:
        """Drop any partial APDU; returns how many bytes were dropped."""
        dropped = self._size
        self._reset()
        self._discarding = False
        return dropped

    def _interruption(self, frame: HdlcFrame, starts_apdu: bool) -> str | None:
        """Why ``frame`` cannot continue the pending APDU, or None if it can."""
        last = self._last
        assert last is not None
        if frame.source != last.source or frame.destination != last.destination:
            return "segment from another address pair"
        if frame.control.kind is not last.control.kind:
            return "frame kind changed in the middle of a segmented APDU"
        if frame.control.kind is FrameKind.I and frame.control.ssn != (last.control.ssn + 1) % 8:
            return "gap in the I-frame sequence of a segmented APDU"
        # UI frames carry no sequence numbers: an LLC header is the only sign
        # that the last segment was lost and a new APDU began.
        if frame.control.kind is FrameKind.UI and starts_apdu and self._require_llc:
            return "a new APDU started before the last segment of the previous one"
        return None

    def _append(self, frame: HdlcFrame, payload: bytes) -> list[ReassemblyEvent]:
        if self._size + len(payload) > self._max_apdu_length:
            limit = self._max_apdu_length
            error = LengthError(f"segmented APDU exceeds {limit} bytes", self._size)
            return [self._fail(error, frame)]
        self._parts.append(payload)
        self._size += len(payload)
        self._frames += 1
        if frame.segmented:
            self._last = frame
            return []
        event = ApduReceived(b"".join(self._parts), self._frames)
        self._reset()
        return [event]

    def _fail(self, error: DlmsError, frame: HdlcFrame) -> ReassemblyError:
        event = self._drop(error, len(frame.information))
        # The remaining segments of this APDU are useless: skip up to its last one.
        self._discarding = frame.segmented
        self._last = frame if frame.segmented else None
        return event

    def _drop(self, error: DlmsError, extra_bytes: int) -> ReassemblyError:
        event = ReassemblyError(error.reason, self._size + extra_bytes, error)
        self._reset()
        return event

    def _reset(self) -> None:
        self._parts = []
        self._size = 0
        self._frames = 0
        self._last = None
