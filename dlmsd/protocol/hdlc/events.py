"""Events produced by the HDLC stream decoder, the reassembler and the connection."""

from __future__ import annotations

import attrs

from dlmsd.protocol.hdlc.parameters import HdlcParameters
from dlmsd.protocol.resync import FrameError as FrameError  # the stream decoder's notice


@attrs.frozen(slots=True)
class ReassemblyError:
    """A partial segmented APDU that was dropped, and why."""

    reason: str
    dropped_bytes: int


@attrs.frozen(slots=True)
class ApduReceived:
    """A complete APDU (LLC header removed), reassembled from one or more frames."""

    apdu: bytes
    frames: int = 1


@attrs.frozen(slots=True)
class Connected:
    """The server answered SNRM with UA; ``parameters`` are the client's negotiated view."""

    parameters: HdlcParameters


@attrs.frozen(slots=True)
class Disconnected:
    """The link is down: UA to our DISC, or DM/FRMR from the server."""

    reason: str


@attrs.frozen(slots=True)
class SegmentReceived:
    """A segment of a longer APDU arrived; call ``acknowledge()`` and send the RR it returns."""

    received_bytes: int


@attrs.frozen(slots=True)
class SendFrames:
    """Frames the connection must send now (the next window of a segmented APDU)."""

    frames: tuple[bytes, ...]


@attrs.frozen(slots=True)
class FrameIgnored:
    """A valid frame the connection dropped (other address, wrong state, out of sequence)."""

    reason: str
