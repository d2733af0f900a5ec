"""Split a serial/TCP byte stream into HDLC frames, resynchronising after noise.

DLMS HDLC does not byte-stuff, so a 0x7E inside a frame is data: the frame
format length says where a frame ends. A candidate frame starts at a flag; if
its format, header checksum, closing flag or FCS is wrong, the decoder drops
that one flag and looks for the next, so a valid frame hidden behind a false
start is still found. Skipped bytes are reported as :class:`FrameError` events.
"""

from __future__ import annotations

import re

from dlmsd.protocol.errors import DlmsError, TruncatedError
from dlmsd.protocol.events import NEED_DATA, NeedData
from dlmsd.protocol.hdlc.events import FrameError
from dlmsd.protocol.hdlc.frames import (
    FLAG,
    FORMAT_TYPE_3,
    MAX_FRAME_LENGTH,
    MIN_FRAME_LENGTH,
    HdlcFrame,
    decode_frame,
    decode_header,
)

_NOT_FLAG = re.compile(b"[^\x7e]")
# Drop consumed bytes once this many have piled up; what remains is at most
# one partial frame, so the copy is cheap and the total cost stays O(n).
_COMPACT_THRESHOLD = 4096


class HdlcStreamDecoder:
    """Sans-io HDLC frame decoder: ``receive_data(bytes)`` then ``next_event()``.

    ``next_event()`` returns an :class:`HdlcFrame`, a :class:`FrameError` notice
    for skipped bytes, or ``NEED_DATA``. It never raises on bad input.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0  # where scanning resumes; a flag there opens the next frame
        self._skipped = 0  # bytes dropped since the last FrameError
        self._reason: str | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a frame that has not been completed yet."""
        return len(self._buffer) - self._position

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the line."""
        self._buffer += data

    def next_event(self) -> HdlcFrame | FrameError | NeedData:
        """The next frame, a notice about skipped bytes, or ``NEED_DATA``."""
        buffer = self._buffer
        while True:
            size = len(buffer)
            position = self._position
            if position >= size or buffer[position] != FLAG:
                flag_at = buffer.find(FLAG, position)
                if flag_at < 0:
                    self._skipped += size - position
                    self._position = size
                    return self._report_or_need_data()
                self._skipped += flag_at - position
                position = flag_at
            # Several flags in a row are idle fill; the last one opens the frame.
            match = _NOT_FLAG.search(buffer, position)
            if match is None:
                self._position = size - 1
                return self._report_or_need_data()
            opening = match.start() - 1
            self._position = opening
            if self._skipped:
                return self._take_error()
            result = self._try_frame(opening)
            if result is None:
                return self._need_data()
            if isinstance(result, HdlcFrame):
                return result
            self._reason = result
            self._skipped += 1
            self._position = opening + 1

    def _try_frame(self, opening: int) -> HdlcFrame | str | None:
        """The frame opened by the flag at ``opening``, a reason it is not one, or None."""
        buffer = self._buffer
        start = opening + 1
        if len(buffer) - start < 2:
            return None
        value = buffer[start] << 8 | buffer[start + 1]
        if value >> 12 != FORMAT_TYPE_3:
            return "no HDLC frame format after the flag"
        length = value & MAX_FRAME_LENGTH
        if length < MIN_FRAME_LENGTH:
            return f"HDLC frame length {length} is too short"
        closing = start + length
        if len(buffer) <= closing:
            # Check the header (and its HCS) now: a false start then fails
            # after a dozen bytes instead of holding back up to 2 KB.
            try:
                decode_header(buffer, start, closing)
            except TruncatedError:
                pass
            except DlmsError as error:
                return error.reason
            return None
        if buffer[closing] != FLAG:
            return "no closing flag where the HDLC frame length ends"
        try:
            frame = decode_frame(buffer, start, closing)
        except DlmsError as error:
            return error.reason
        self._position = closing  # the closing flag may open the next frame
        return frame

    def _report_or_need_data(self) -> FrameError | NeedData:
        if self._skipped:
            return self._take_error()
        return self._need_data()

    def _take_error(self) -> FrameError:
        event = FrameError(self._reason or "bytes outside any HDLC frame", self._skipped)
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
