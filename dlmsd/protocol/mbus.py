"""Wired M-Bus (EN 13757-2 link layer) carrying DLMS: frames, stream decoder, reassembly.

Austrian customer interfaces (Kaifa MA309, Sagemcom T210-D, ...) push one DLMS APDU
as one or more M-Bus *long frames*, usually at 2400 baud 8E1::

    68 L L 68 | C A CI STSAP DTSAP  APDU-part | CS 16

- L counts the user data from C to the end of the APDU part; both L bytes are equal.
- CS is the arithmetic sum, modulo 256, of the user data (C up to the last APDU byte).
- C is 0x53 (SND_UD), A 0xFF (broadcast) on every capture seen.
- CI carries the DLMS transport layer: bit 4 (0x10) marks the last segment and bits
  0-3 count the segments of one APDU from 0; bits 5-7 are zero (CI 0x00-0x1F). One
  frame alone is CI 0x10; two frames are CI 0x00 then 0x11.
- STSAP and DTSAP (0x01 and 0x67 in the field) follow CI in every segment.

Sources for this layout: the operators' interface descriptions, Netz NÖ
"Smart Meter Kundenschnittstelle" (218_9_SmartMeter_Kundenschnittstelle) and TINETZ
"Beschreibung Kundenschnittstelle Smart Meter", as walked through byte by byte in
github.com/fneur/smart-meter-tirol doc/EXAMPLE.md ("CI=0x00 für das 1. Segment und
CI=0x11 für das 2. Segment") and the M-Bus captures with their annotated decodes in
github.com/esphome-libs/dlms_parser tests/dumps/mbus_*.log (CI 0x00/0x11 and 0x10,
STSAP 01 DTSAP 67 in each segment, CS over the L bytes from C).

Sagemcom T210-D (Netz NÖ) quirk: a first frame with 257 bytes of user data whose L
fields hold only the low byte (``68 01 01 68``; github.com/DomiStyle/esphome-dlms-meter
issue 12). Such a frame is taken only when the checksum and the 0x16 stop byte sit
exactly where L + 256 puts them; nothing else is ever guessed.

The stream decoder resynchronises on noise (it drops one byte of a false start and
looks for the next 0x68), reports skipped bytes as :class:`FrameError` and returns
``NEED_DATA`` for a partial frame. The reassembler joins segments into APDUs: a
gap, a duplicate, a segment from another address or TSAP pair, or a message over
the size bound refuses the whole APDU, and a segment that does not start a message
while none is pending (a capture that begins mid-message) is skipped.
"""

from __future__ import annotations

import re

import attrs

from dlmsd.protocol.errors import (
    ChecksumError,
    DecodeError,
    DlmsError,
    EncodeError,
    LengthError,
    TruncatedError,
)
from dlmsd.protocol.events import NEED_DATA, NeedData
from dlmsd.protocol.resync import FrameError, ResyncBuffer

__all__ = [
    "CI_LAST_SEGMENT",
    "CONTROL_SND_UD",
    "DEFAULT_MAX_APDU_LENGTH",
    "FrameError",
    "MbusApdu",
    "MbusEvent",
    "MbusFrame",
    "MbusPushStream",
    "MbusReassembler",
    "MbusStreamDecoder",
    "ReassemblyError",
    "checksum",
    "is_mbus_capture",
    "segment_apdu",
]

START = 0x68
STOP = 0x16
INTRO_LENGTH = 4  # 68 L L 68
TRAILER_LENGTH = 2  # CS 16
CONTROL_SND_UD = 0x53
_SND_UD = (0x53, 0x73)  # SND_UD with the frame count bit clear or set
ADDRESS_BROADCAST = 0xFF
TSAP_SOURCE = 0x01
TSAP_DESTINATION = 0x67
CI_LAST_SEGMENT = 0x10
_CI_SEQUENCE = 0x0F
_CI_NOT_TRANSPORT = 0xE0  # CI 0x20 and above are other EN 13757 protocols
# C, A, CI, STSAP, DTSAP before the APDU part.
SEGMENT_HEADER_LENGTH = 5
MAX_USER_DATA = 255
# The T210-D quirk: the real length is L + 256 (one wrap of the L byte, no more).
_QUIRK_EXTRA = 256
MAX_QUIRK_USER_DATA = MAX_USER_DATA + _QUIRK_EXTRA
# One segment carries at most 250 APDU bytes (255 - 5), 16 segments per CI cycle.
DEFAULT_MAX_APDU_LENGTH = 65535


def checksum(user_data: bytes | bytearray | memoryview) -> int:
    """The M-Bus CS byte: the arithmetic sum of the user data, modulo 256."""
    return sum(user_data) & 0xFF


@attrs.frozen(slots=True)
class MbusFrame:
    """One M-Bus long frame carrying a DLMS transport segment.

    `long_length` is set when the frame came with user data over 255 bytes and
    only the low byte of its length in the L fields (the Sagemcom T210-D form).
    """

    control: int
    address: int
    ci: int
    stsap: int
    dtsap: int
    payload: bytes
    long_length: bool = False

    @property
    def sequence(self) -> int:
        """The segment number (CI bits 0-3)."""
        return self.ci & _CI_SEQUENCE

    @property
    def last(self) -> bool:
        """Whether this is the last segment of its APDU (CI bit 4)."""
        return bool(self.ci & CI_LAST_SEGMENT)

    @property
    def user_data(self) -> bytes:
        """C through the end of the APDU part: what L counts and CS sums."""
        return bytes((self.control, self.address, self.ci, self.stsap, self.dtsap)) + self.payload

    def to_bytes(self) -> bytes:
        """The frame as sent on the wire (L low byte only when `long_length`)."""
        for name in ("control", "address", "ci", "stsap", "dtsap"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise EncodeError(f"M-Bus {name} must be one byte, got {value}")
        user_data = self.user_data
        size = len(user_data)
        if self.long_length:
            if not MAX_USER_DATA < size <= MAX_QUIRK_USER_DATA:
                raise EncodeError(
                    f"a long-length M-Bus frame holds {MAX_USER_DATA + 1}..{MAX_QUIRK_USER_DATA}"
                    f" user data bytes, got {size}"
                )
        elif size > MAX_USER_DATA:
            raise EncodeError(f"M-Bus user data is at most {MAX_USER_DATA} bytes, got {size}")
        length = size & 0xFF
        return (
            bytes((START, length, length, START)) + user_data + bytes((checksum(user_data), STOP))
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> MbusFrame:
        """Decode exactly one complete long frame (strict: no trailing bytes)."""
        result = _try_frame(data, 0, final=True)
        if result is None:
            raise TruncatedError(f"M-Bus frame truncated after {len(data)} bytes", len(data))
        if isinstance(result, DlmsError):
            raise result
        frame, end = result
        if end != len(data):
            raise LengthError(f"{len(data) - end} bytes after the M-Bus frame", end)
        return frame


def _user_data_frame(
    data: bytes | bytearray, start: int, size: int, long_length: bool
) -> MbusFrame:
    if size < SEGMENT_HEADER_LENGTH:
        raise LengthError(
            f"M-Bus frame with {size} user data bytes has no room for CI, STSAP and DTSAP",
            start,
        )
    control, address, ci, stsap, dtsap = data[start : start + SEGMENT_HEADER_LENGTH]
    return MbusFrame(
        control,
        address,
        ci,
        stsap,
        dtsap,
        bytes(data[start + SEGMENT_HEADER_LENGTH : start + size]),
        long_length,
    )


def _try_frame(
    data: bytes | bytearray, start: int, *, final: bool = False
) -> tuple[MbusFrame, int] | DlmsError | None:
    """The frame opening at ``start`` with where it ends, the error if it is none,
    or None while more bytes are needed to tell (`final`: no more bytes will come)."""
    available = len(data) - start
    if available < INTRO_LENGTH:
        if available >= 1 and data[start] != START:
            return DecodeError("no M-Bus start byte", start)
        return None
    if data[start] != START or data[start + 3] != START:
        return DecodeError("no M-Bus long frame start (68 L L 68)", start)
    length = data[start + 1]
    if data[start + 2] != length:
        return DecodeError(
            f"M-Bus L fields differ (0x{length:02X} and 0x{data[start + 2]:02X})", start + 2
        )
    user = start + INTRO_LENGTH
    if len(data) < user + length + TRAILER_LENGTH:
        return None
    short = _trailer_error(data, user, length)
    if short is None:
        return _finish(data, user, length, False)
    # The standard length does not fit; only L + 256 may, proven by CS and stop byte,
    # and only for what starts like a DLMS segment (SND_UD, transport CI): a false
    # start then holds back the bytes behind it only in that rare case.
    if len(data) < user + 3:
        return short if final else None
    if data[user] not in _SND_UD or data[user + 2] & _CI_NOT_TRANSPORT:
        return short
    if len(data) < user + length + _QUIRK_EXTRA + TRAILER_LENGTH:
        return short if final else None
    if _trailer_error(data, user, length + _QUIRK_EXTRA) is None:
        return _finish(data, user, length + _QUIRK_EXTRA, True)
    return short


def _trailer_error(data: bytes | bytearray, user: int, size: int) -> DlmsError | None:
    """Why CS and the stop byte do not follow `size` user data bytes at `user` (all
    present), or None when they do."""
    end = user + size
    if data[end + 1] != STOP:
        return DecodeError("no M-Bus stop byte (0x16) where the L field ends", end + 1)
    expected = checksum(data[user:end])
    if data[end] != expected:
        return ChecksumError(
            f"M-Bus checksum 0x{data[end]:02X} does not match the user data (0x{expected:02X})",
            end,
        )
    return None


def _finish(
    data: bytes | bytearray, user: int, size: int, long_length: bool
) -> tuple[MbusFrame, int] | DlmsError:
    try:
        frame = _user_data_frame(data, user, size, long_length)
    except DlmsError as error:
        return error
    return frame, user + size + TRAILER_LENGTH


class MbusStreamDecoder(ResyncBuffer):
    """Sans-io M-Bus long frame decoder: ``receive_data(bytes)`` then ``next_event()``.

    ``next_event()`` returns an :class:`MbusFrame`, a :class:`FrameError` notice for
    skipped bytes, or ``NEED_DATA``. It never raises on bad input, and every call
    either consumes bytes or returns ``NEED_DATA`` (no loop without progress).
    """

    outside = "bytes outside any M-Bus frame"

    def __init__(self) -> None:
        super().__init__()
        self._final = False

    def close(self) -> None:
        """No more bytes will come: a frame that waits for bytes to prove a long
        length is decided now, so the frames behind a false start come out."""
        self._final = True

    def next_event(self) -> MbusFrame | FrameError | NeedData:
        """The next frame, a notice about skipped bytes, or ``NEED_DATA``."""
        buffer = self._buffer
        while True:
            position = self._position
            size = len(buffer)
            if position >= size or buffer[position] != START:
                start_at = buffer.find(START, position)
                if start_at < 0:
                    self._skipped += size - position
                    self._position = size
                    return self._report_or_need_data()
                self._skipped += start_at - position
                self._position = position = start_at
            if self._skipped:
                return self._take_error()
            result = _try_frame(buffer, position, final=self._final)
            if result is None:
                return self._need_data()
            if isinstance(result, DlmsError):
                # Drop this start byte only: a real frame may begin right behind it.
                self._reason = result.reason
                self._skipped += 1
                self._position = position + 1
                continue
            frame, end = result
            self._position = end
            return frame


# --- reassembly -----------------------------------------------------------------


@attrs.frozen(slots=True)
class MbusApdu:
    """A complete APDU joined from one or more M-Bus segments."""

    apdu: bytes
    frames: int
    address: int
    stsap: int
    dtsap: int


@attrs.frozen(slots=True)
class ReassemblyError:
    """Segments that were dropped, and why.

    ``partial`` marks a drop without a fault of its own: segments that arrive while
    no APDU is pending (the line was joined mid-message), or a partial APDU cut
    short by a new segment 0 (the meter restarted). Everything else is a refusal.
    """

    reason: str
    dropped_bytes: int
    error: DlmsError = attrs.field(eq=False, repr=False)
    partial: bool = False


ReassemblyEvent = MbusApdu | ReassemblyError


class MbusReassembler:
    """Join DLMS transport segments (CI 0x00-0x1F) into APDUs, bounded in size.

    :meth:`feed` returns events and never raises. Segment 0 always starts a new
    APDU (a partial one is dropped: the meter restarted or a last segment was
    lost); any other segment must be the next in sequence, from the same
    address and TSAP pair, or the whole APDU is refused and its remaining
    segments are skipped up to the next segment 0.
    """

    def __init__(self, max_apdu_length: int = DEFAULT_MAX_APDU_LENGTH) -> None:
        self._max_apdu_length = max_apdu_length
        self._parts: list[bytes] = []
        self._size = 0
        self._first: MbusFrame | None = None
        self._next = 0  # the sequence number the next segment must carry
        self._discarding = False  # skipping the rest of a refused APDU

    @property
    def pending(self) -> bool:
        """True while an APDU has segments but not its last one."""
        return self._first is not None

    def reset(self) -> int:
        """Drop any partial APDU; returns how many bytes were dropped."""
        dropped = self._size
        self._clear()
        self._discarding = False
        return dropped

    def feed(self, frame: MbusFrame) -> list[ReassemblyEvent]:
        """Take one frame; returns the APDU it completes and/or what was dropped."""
        if frame.ci & _CI_NOT_TRANSPORT:
            error = DecodeError(
                f"M-Bus CI 0x{frame.ci:02X} is not a DLMS transport segment (0x00-0x1F)"
            )
            self._discarding = False
            if self._first is not None:
                return [self._drop(error, len(frame.payload))]
            return [ReassemblyError(error.reason, len(frame.payload), error)]
        events: list[ReassemblyEvent] = []
        if frame.sequence == 0:
            if self._first is not None:
                error = DecodeError(
                    f"M-Bus segment 0 after segment {self._next - 1}: a new APDU began"
                    " before the last segment of the previous one"
                )
                events.append(self._drop(error, 0, partial=True))
            self._discarding = False
            return events + self._start(frame)
        if self._first is None:
            if self._discarding:
                self._discarding = not frame.last
                return events
            error = DecodeError(f"M-Bus segment {frame.sequence} without the segments before it")
            self._discarding = not frame.last
            events.append(ReassemblyError(error.reason, len(frame.payload), error, partial=True))
            return events
        reason = self._interruption(frame)
        if reason is not None:
            events.append(self._drop(DecodeError(reason), len(frame.payload)))
            self._discarding = not frame.last
            return events
        return self._append(frame)

    def _interruption(self, frame: MbusFrame) -> str | None:
        first = self._first
        assert first is not None
        if frame.sequence != self._next:
            if frame.sequence == (self._next - 1) & _CI_SEQUENCE:
                return f"duplicate M-Bus segment {frame.sequence}"
            return f"M-Bus segment {frame.sequence} after {(self._next - 1) & _CI_SEQUENCE}"
        if (frame.address, frame.stsap, frame.dtsap) != (first.address, first.stsap, first.dtsap):
            return "M-Bus segment from another address or TSAP pair"
        return None

    def _start(self, frame: MbusFrame) -> list[ReassemblyEvent]:
        self._first = frame
        return self._append(frame)

    def _append(self, frame: MbusFrame) -> list[ReassemblyEvent]:
        if self._size + len(frame.payload) > self._max_apdu_length:
            error = LengthError(
                f"segmented APDU exceeds {self._max_apdu_length} bytes", self._size
            )
            dropped = self._drop(error, len(frame.payload))
            self._discarding = not frame.last
            return [dropped]
        self._parts.append(frame.payload)
        self._size += len(frame.payload)
        self._next = (frame.sequence + 1) & _CI_SEQUENCE
        if not frame.last:
            return []
        first = self._first
        assert first is not None
        event = MbusApdu(
            b"".join(self._parts), len(self._parts), first.address, first.stsap, first.dtsap
        )
        self._clear()
        return [event]

    def _drop(
        self, error: DlmsError, extra_bytes: int, *, partial: bool = False
    ) -> ReassemblyError:
        event = ReassemblyError(error.reason, self._size + extra_bytes, error, partial)
        self._clear()
        return event

    def _clear(self) -> None:
        self._parts = []
        self._size = 0
        self._first = None
        self._next = 0


# --- a whole line ---------------------------------------------------------------

MbusEvent = MbusApdu | FrameError | ReassemblyError


class MbusPushStream:
    """Bytes of one line (serial port, TCP bridge, capture) in; APDUs and refusals out.

    The stream decoder and the reassembler together, one per line. :meth:`feed`
    and :meth:`finish` never raise. `frames` counts the valid frames seen.
    """

    def __init__(self, max_apdu_length: int = DEFAULT_MAX_APDU_LENGTH) -> None:
        self._decoder = MbusStreamDecoder()
        self._reassembler = MbusReassembler(max_apdu_length)
        self.frames = 0

    def feed(self, data: bytes) -> list[MbusEvent]:
        """Take bytes read from the line; the events they complete."""
        self._decoder.receive_data(data)
        return self._drain()

    def _drain(self) -> list[MbusEvent]:
        decoder = self._decoder
        events: list[MbusEvent] = []
        while True:
            event = decoder.next_event()
            if event is NEED_DATA:
                return events
            if isinstance(event, FrameError):
                events.append(event)
                continue
            self.frames += 1
            events.extend(self._reassembler.feed(event))

    def finish(self) -> list[MbusEvent]:
        """The input ended: what the bytes held still give, then errors for a partial
        frame or a partial APDU, if any."""
        self._decoder.close()
        events = self._drain()
        pending = self._decoder.pending_bytes
        if pending:
            error = TruncatedError(f"input ends inside an M-Bus frame ({pending} bytes)")
            events.append(ReassemblyError(error.reason, pending, error))
        if self._reassembler.pending:
            dropped = self._reassembler.reset()
            error = TruncatedError("input ends before the last M-Bus segment")
            events.append(ReassemblyError(error.reason, dropped, error))
        return events

    def reset(self) -> None:
        """Forget a partial frame or APDU (the line was reopened)."""
        self._decoder = MbusStreamDecoder()
        self._reassembler.reset()


# --- helpers --------------------------------------------------------------------

_MBUS_INTRO = re.compile(rb"\x68(.)\1\x68", re.DOTALL)


def is_mbus_capture(data: bytes) -> bool:
    """Whether a capture starts with an M-Bus long frame intro (``68 L L 68``)."""
    return _MBUS_INTRO.match(data) is not None


def segment_apdu(
    apdu: bytes,
    *,
    segment_size: int = MAX_USER_DATA - SEGMENT_HEADER_LENGTH,
    control: int = CONTROL_SND_UD,
    address: int = ADDRESS_BROADCAST,
    stsap: int = TSAP_SOURCE,
    dtsap: int = TSAP_DESTINATION,
) -> list[MbusFrame]:
    """Split an APDU into M-Bus segments as a meter sends it (for the emulator and
    tests): `segment_size` APDU bytes per frame, CI counting from 0, the last with
    bit 4 set. A `segment_size` over 250 gives long-length (T210-D style) frames."""
    if not 1 <= segment_size <= MAX_QUIRK_USER_DATA - SEGMENT_HEADER_LENGTH:
        raise EncodeError(f"M-Bus segment size must be 1..506, got {segment_size}")
    pieces = [apdu[i : i + segment_size] for i in range(0, len(apdu), segment_size)] or [b""]
    if len(pieces) > 16:
        raise EncodeError(f"an APDU of {len(apdu)} bytes needs more than 16 M-Bus segments")
    frames = []
    for index, piece in enumerate(pieces):
        ci = index | (CI_LAST_SEGMENT if index == len(pieces) - 1 else 0)
        long_length = len(piece) + SEGMENT_HEADER_LENGTH > MAX_USER_DATA
        frames.append(MbusFrame(control, address, ci, stsap, dtsap, piece, long_length))
    return frames
