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
from dlmsd.protocol.events import NeedData
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
from dlmsd.protocol.resync import ResyncBuffer

_NOT_FLAG = re.compile(b"[^\x7e]")


class HdlcStreamDecoder(ResyncBuffer):
    """Sans-io HDLC frame decoder: ``receive_data(bytes)`` then ``next_event()``.

    ``next_event()`` returns an :class:`HdlcFrame`, a :class:`FrameError` notice
    for skipped bytes, or ``NEED_DATA``. It never raises on bad input.
    """

    outside = "bytes outside any HDLC frame"

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
