"""Wired M-Bus as a framing stream (`dlmsd.protocol.framing`): `dlmsd decode` whole
captures and ``--follow`` read M-Bus through the same `MbusPushStream` the
``mbus_serial`` / ``mbus_tcp`` listeners use.

Imported through `framing.FRAMING_MODULES`; registering is its only side effect.
"""

from __future__ import annotations

import re

from dlmsd.protocol.errors import DecodeError
from dlmsd.protocol.framing import (
    Framing,
    StreamApdu,
    StreamError,
    StreamEvent,
    StreamNotice,
    register,
)
from dlmsd.protocol.mbus import FrameError, MbusApdu, MbusEvent, MbusPushStream

NAME = "mbus"
# A long frame intro whose user data starts like a DLMS segment: SND_UD, then any
# address, then a transport CI (0x00-0x1F).
_MBUS_START = re.compile(rb"\x68(.)\1\x68[\x53\x73].[\x00-\x1f]", re.DOTALL)


class MbusFramingStream:
    """M-Bus long frames, resynchronising on noise; DLMS transport segments joined."""

    name = NAME

    def __init__(self, max_apdu_size: int) -> None:
        self._stream = MbusPushStream(max(max_apdu_size, 1))

    def feed(self, data: bytes) -> list[StreamEvent]:
        return _events(self._stream.feed(data))

    def finish(self) -> list[StreamEvent]:
        return _events(self._stream.finish())


def _events(items: list[MbusEvent]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for item in items:
        if isinstance(item, MbusApdu):
            events.append(StreamApdu(NAME, item.apdu, item.stsap, item.dtsap))
        elif isinstance(item, FrameError):
            reason = f"bad M-Bus frame: {item.reason} ({item.skipped_bytes} bytes skipped)"
            events.append(StreamError(reason, DecodeError(reason)))
        elif item.partial:
            events.append(StreamNotice(item.reason))
        else:
            events.append(StreamError(item.reason, item.error))
    return events


def _sniff_mbus(prefix: bytes) -> int | None:
    match = _MBUS_START.search(prefix)
    return match.start() if match else None


register(Framing(NAME, MbusFramingStream, _sniff_mbus))
