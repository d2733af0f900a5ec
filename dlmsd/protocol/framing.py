"""Framing streams: bytes of one line or capture in, push APDUs out, whatever the framing.

A *framing stream* turns a byte stream (a serial line, a TCP connection, a
capture file) into events: :class:`StreamApdu` for each complete APDU,
:class:`StreamError` for bytes or messages it refused (the stream goes on),
:class:`StreamNotice` for a partial message it dropped without a fault (a
meter restart, a capture that starts mid-message). `dlmsd decode` (whole
captures and ``--follow``) drives every framing through this one interface.

Each framing registers a :class:`Framing`: its name, a factory and a *sniff*
function that says where in the first bytes of a stream its first frame could
start. :func:`detect` picks the framing whose frame starts earliest. HDLC and
the IEC 62056-47 wrapper are registered here; another framing (wired M-Bus)
registers itself from its own module with :func:`register`, and
:func:`load_framings` imports the modules listed in `FRAMING_MODULES`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Protocol

import attrs

from dlmsd.protocol import wrapper
from dlmsd.protocol.errors import DecodeError, DlmsError, TruncatedError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.gbt_push import DEFAULT_MAX_PUSH_SIZE, MessageDropped
from dlmsd.protocol.hdlc.events import ApduReceived, FrameError
from dlmsd.protocol.hdlc.pushes import HdlcPushAssembler
from dlmsd.protocol.hdlc.reassembly import ReassemblyError
from dlmsd.protocol.hdlc.stream import HdlcStreamDecoder


@attrs.frozen(slots=True)
class StreamApdu:
    """One complete APDU and the framing it came in (addresses where the framing has them)."""

    framing: str
    apdu: bytes
    source: int | None = None
    destination: int | None = None


@attrs.frozen(slots=True)
class StreamError:
    """Bytes, a frame or a message refused; the stream continues after it."""

    reason: str
    error: DlmsError = attrs.field(eq=False, repr=False)


@attrs.frozen(slots=True)
class StreamNotice:
    """A partial message dropped without a fault of its own (not an error)."""

    reason: str


StreamEvent = StreamApdu | StreamError | StreamNotice


class FramingStream(Protocol):
    """What every framing stream does (sans-io; never raises)."""

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Take bytes read from the line; the events they complete."""
        ...

    def finish(self) -> list[StreamEvent]:
        """The input ended: an error for a partial frame or message, if any."""
        ...


@attrs.frozen(slots=True)
class Framing:
    """A registered framing: ``make(max_apdu_size)`` builds a stream; ``sniff(prefix)``
    is the offset where this framing's first frame may start in `prefix`, or None."""

    name: str
    make: Callable[[int], FramingStream]
    sniff: Callable[[bytes], int | None]


#: Registered framings by name, in registration order (ties in :func:`detect` go to the first).
FRAMINGS: dict[str, Framing] = {}

#: Modules that register further framings when imported (see :func:`load_framings`).
FRAMING_MODULES: list[str] = ["dlmsd.protocol.mbus_framing"]

#: How many bytes :func:`detect` looks at before it gives up.
DETECT_WINDOW = 4096


def register(framing: Framing) -> None:
    """Add a framing (a later registration under the same name replaces the earlier)."""
    FRAMINGS[framing.name] = framing


def load_framings() -> dict[str, Framing]:
    """Import the modules of `FRAMING_MODULES` (each registers itself); the registry."""
    for module in FRAMING_MODULES:
        importlib.import_module(module)
    return FRAMINGS


def detect(prefix: bytes) -> str | None:
    """The framing whose first frame starts earliest in `prefix`, or None if none fits."""
    best: tuple[int, str] | None = None
    for framing in FRAMINGS.values():
        offset = framing.sniff(prefix)
        if offset is not None and (best is None or offset < best[0]):
            best = (offset, framing.name)
    return best[1] if best is not None else None


def make_stream(name: str, max_apdu_size: int = DEFAULT_MAX_PUSH_SIZE) -> FramingStream:
    """A new stream of the named framing (KeyError for an unknown name)."""
    return FRAMINGS[name].make(max_apdu_size)


# --- HDLC -----------------------------------------------------------------------------

# A flag and the first byte of a type 3 frame format (0xA0..0xAF).
_HDLC_START = re.compile(b"\x7e[\xa0-\xaf]")


class HdlcFramingStream:
    """HDLC frames, resynchronising on noise; segmented APDUs and GBT pushes joined."""

    name = "hdlc"

    def __init__(self, max_apdu_size: int = DEFAULT_MAX_PUSH_SIZE) -> None:
        self._decoder = HdlcStreamDecoder()
        self._assembler = HdlcPushAssembler(max_apdu_size)

    def feed(self, data: bytes) -> list[StreamEvent]:
        decoder = self._decoder
        decoder.receive_data(data)
        events: list[StreamEvent] = []
        while True:
            event = decoder.next_event()
            if event is NEED_DATA:
                return events
            if isinstance(event, FrameError):
                reason = f"bad HDLC frame: {event.reason} ({event.skipped_bytes} bytes skipped)"
                events.append(StreamError(reason, DecodeError(reason)))
                continue
            for item in self._assembler.feed(event):
                if isinstance(item, ApduReceived):
                    source = event.source.logical
                    events.append(StreamApdu("hdlc", item.apdu, source, event.destination.logical))
                elif isinstance(item, ReassemblyError):
                    events.append(StreamError(item.reason, item.error))
                elif isinstance(item, MessageDropped):
                    events.append(StreamNotice(item.reason))

    def finish(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self._decoder.pending_bytes > 1:  # a lone flag may close the last frame
            reason = f"input ends inside an HDLC frame ({self._decoder.pending_bytes} bytes)"
            events.append(StreamError(reason, TruncatedError(reason)))
        partial = self._assembler.pending_reason
        if partial is not None:
            events.append(StreamError(partial, TruncatedError(partial)))
        return events


def _sniff_hdlc(prefix: bytes) -> int | None:
    match = _HDLC_START.search(prefix)
    return match.start() if match else None


# --- IEC 62056-47 wrapper -------------------------------------------------------------


class WrapperFramingStream:
    """Wrapper frames back to back. The wrapper has no resync: after a bad header the
    bytes held are dropped and decoding restarts with the next bytes read."""

    name = "wrapper"

    def __init__(self, max_apdu_size: int = DEFAULT_MAX_PUSH_SIZE) -> None:
        self._max = max(max_apdu_size, 1)
        self._decoder = wrapper.WrapperStreamDecoder(self._max)

    def feed(self, data: bytes) -> list[StreamEvent]:
        self._decoder.receive_data(data)
        events: list[StreamEvent] = []
        while True:
            try:
                event = self._decoder.next_event()
            except DlmsError as error:
                events.append(StreamError(f"bad wrapper frame: {error.reason}", error))
                self._decoder = wrapper.WrapperStreamDecoder(self._max)
                return events
            if event is NEED_DATA:
                return events
            assert isinstance(event, wrapper.WrapperFrame)
            events.append(
                StreamApdu("wrapper", event.apdu, event.source_wport, event.destination_wport)
            )

    def finish(self) -> list[StreamEvent]:
        pending = self._decoder.pending_bytes
        if not pending:
            return []
        reason = f"wrapper frame truncated: {pending} bytes left over"
        return [StreamError(reason, TruncatedError(reason))]


def _sniff_wrapper(prefix: bytes) -> int | None:
    # No resync in this framing: it only fits a stream that starts with a header
    # (version 0x0001, then two wPorts).
    if len(prefix) >= wrapper.HEADER_LENGTH and prefix[:2] == b"\x00\x01":
        return 0
    return None


register(Framing("hdlc", HdlcFramingStream, _sniff_hdlc))
register(Framing("wrapper", WrapperFramingStream, _sniff_wrapper))
