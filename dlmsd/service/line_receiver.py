"""What the HDLC and M-Bus push receivers share: where each outcome of a line goes.

A receiver (one per serial port or TCP connection) turns the bytes of one line
into APDUs with its own stream decoder and reassembler; the outcomes are the
same for both framings: an APDU goes to the ingest (with the line's
`system_title` when the push carries none), a frame the decoder skipped is a
``malformed`` rejection, a refused reassembly ``oversize`` or ``malformed``, and
a partial push dropped without a fault of its own (a line joined mid-push, a
meter restart) is logged and counted, not rejected.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from dlmsd.protocol.errors import DlmsError, LengthError
from dlmsd.service.ingest import Ingest, RejectReason


class LinePushReceiver:
    """Base of the line receivers: the outcomes, to the ingest and the metrics."""

    log = Logger()

    def __init__(
        self,
        ingest: Ingest,
        *,
        transport: str,
        source: str,
        on_frame: Callable[[], object],
        max_apdu_size: int,
        system_title: bytes | None = None,
        on_dropped: Callable[[], object] | None = None,
    ) -> None:
        self._ingest = ingest
        self._transport = transport
        self.source = source
        self._on_frame = on_frame
        self._on_dropped = on_dropped
        self._system_title = system_title
        self._open(max_apdu_size)

    def _open(self, max_apdu_size: int) -> None:
        """Make the framing's decoding state (a stream decoder, a reassembler)."""
        raise NotImplementedError

    def _apdu(self, apdu: bytes) -> None:
        self._ingest.handle(apdu, self.source, self._transport, self._system_title)

    def _frame_skipped(self, skipped_bytes: int, reason: str) -> None:
        self._ingest.reject(
            RejectReason.MALFORMED,
            self.source,
            self._transport,
            f"skipped {skipped_bytes} bytes: {reason}",
        )

    def _refused(self, error: DlmsError, reason: str) -> None:
        too_big = isinstance(error, LengthError)
        rejection = RejectReason.OVERSIZE if too_big else RejectReason.MALFORMED
        self._ingest.reject(rejection, self.source, self._transport, reason)

    def _dropped(self, reason: str) -> None:
        # A meter restart or a line opened mid-message: counted, not a rejection.
        if self._on_dropped is not None:
            self._on_dropped()
        self.log.info(
            "{source} ({transport}): partial push dropped: {reason}",
            source=self.source,
            transport=self._transport,
            reason=reason,
        )
