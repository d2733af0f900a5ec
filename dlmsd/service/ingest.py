"""The ingest pipeline: one APDU from any listener in, an accepted push or a reason out.

Order of the checks, cheapest first, so a flood of bad frames costs no AES:

    peel (no crypto) -> key store lookup -> security policy -> replay pre-check
    -> verify tag + decrypt -> decode DataNotification -> readings -> record

An accepted push is *staged* in the state backend: its meter's counter advances
in memory at once (a replay inside the same batch is refused), and the counter
and the spool rows reach the database together in one commit, batched per
reactor turn (`commit_interval`, or at once at `commit_batch` pushes). While
pushes come slowly the interval grows (doubling after each commit of fewer than
32 pushes, halving after one of more than 64) up to `commit_interval_max`: each
commit (and its fsync) then carries more pushes, and a push waits for its commit
at most that long. Only after that commit is the push counted as accepted and
the sink pumps are told to look at the spool. One commit is in flight at a time;
what is staged meanwhile goes in the next, so a slower (shared) database makes
batches bigger instead of queueing transactions. A shared database may refuse
some staged pushes at commit (another daemon accepted them first): they are
counted as ``replay``. While the database is unreachable every push is refused
as ``state_unavailable``, never accepted without the check; while its disk is
full, as ``disk_full`` (one warning when it fills, one line when space returns).

Bad input never raises out of `Ingest.handle_apdu`: protocol errors become a
rejection reason, anything else is a bug that is logged with its traceback,
counted as ``internal_error``, and the daemon keeps serving.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, cast

import attrs
from twisted.internet import defer
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dlmsd.cosem.shapes import ShapeCache
from dlmsd.protocol.errors import AuthenticationFailed, DlmsError, LimitExceeded
from dlmsd.protocol.push import peel
from dlmsd.service.config import DEFAULT_MAX_PUSH_VALUES, DEFAULT_MAX_RECORD_BYTES
from dlmsd.service.keystore import KeyStore, MeterEntry, display_id
from dlmsd.service.metrics import Metrics
from dlmsd.service.quarantine import LogRateLimiter, Quarantine
from dlmsd.service.state import (
    AcceptedPush,
    StateDiskFull,
    StateError,
    escape_line_breaks,
    make_record_id,
)
from dlmsd.service.statebackend import CommitResult, StateBackend, StateUnavailable

# Pushes per commit the adaptive interval aims at: at 1,000 pushes/s a 2 ms interval
# commits 2 at a time and pays a commit + fsync for each pair.
_TARGET_BATCH = 32
_MIN_GROWN_INTERVAL = 0.001  # an interval of 0 (commit every turn) can grow too


class RejectReason(enum.StrEnum):
    """Why a frame was not accepted: the metric label and the log field."""

    MALFORMED = "malformed"
    UNKNOWN_METER = "unknown_meter"
    AUTH_FAILED = "auth_failed"
    REPLAY = "replay"
    POLICY = "policy"
    OVERSIZE = "oversize"
    INTERNAL_ERROR = "internal_error"
    SPOOL_FULL = "spool_full"
    STATE_UNAVAILABLE = "state_unavailable"
    DISK_FULL = "disk_full"


@attrs.frozen(slots=True)
class Outcome:
    """What became of one frame: accepted (staged for commit) or rejected with a reason."""

    accepted: bool
    reason: RejectReason | None = None

    @classmethod
    def rejected(cls, reason: RejectReason) -> Outcome:
        return _REJECTED[reason]


ACCEPTED = Outcome(True)
_REJECTED = {reason: Outcome(False, reason) for reason in RejectReason}


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _utc_text(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


class Ingest:
    """Verifies, decodes and stages pushes for every listener of one daemon.

    `reactor` schedules the batched commits (``callLater``); `clock` gives the
    wall time stamped on records (``received_at``) and used for log limits.
    Callables in `on_commit` run after each successful commit (the sink pumps'
    ``notify``).
    """

    log = Logger()

    def __init__(
        self,
        *,
        keystore: KeyStore,
        state: StateBackend,
        metrics: Metrics,
        quarantine: Quarantine,
        reactor: Any,
        commit_batch: int = 500,
        commit_interval: float = 0.002,
        log_interval: float = 300.0,
        commit_interval_max: float | None = None,
        clock: Callable[[], float] = time.time,
        max_push_values: int = DEFAULT_MAX_PUSH_VALUES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.keystore = keystore
        self.state = state
        self.metrics = metrics
        self.quarantine = quarantine
        self.on_commit: list[Callable[[], object]] = []
        self._reactor = reactor
        self._commit_batch = commit_batch
        self._commit_interval = commit_interval
        # The interval in use: from commit_interval up to commit_interval_max (None: fixed).
        self._interval_min = commit_interval
        self._interval_max = max(commit_interval, commit_interval_max or commit_interval)
        self._clock = clock
        self._commit_call: DelayedCall | None = None
        # Listeners that stopped reading while pushes come slowly: they read right
        # before the next commit (dlmsd.service.udp_burst).
        self._readers: list[Callable[[], object]] = []
        self._committing = False
        self._flush_waiters: list[Deferred[int]] = []
        self._log_limit = LogRateLimiter(log_interval)
        self._staged_meters: list[str] = []
        self._plaintext_ids = itertools.count()
        self._stamp_bucket = -1
        self._stamp_text = ""
        # Pushes refused since the state disk filled up (None: it has room): one
        # warning when it fills, one line when space returns, none per commit between.
        self._disk_full_refused: int | None = None
        self._shapes = ShapeCache(max_values=max_push_values)
        self._max_record_bytes = max_record_bytes
        # A text of n characters is n..4n bytes of UTF-8: below this, no need to count.
        self._record_chars = max_record_bytes // 4
        # Bound once: these run for every frame.
        self._observe_decode = metrics.decode_seconds.observe
        self._per_meter = metrics.meter_pushes

    # --- the pipeline ---------------------------------------------------------

    def handle_apdu(self, apdu: bytes, source: str, transport: str) -> Outcome:
        """Run one APDU through the pipeline. Never raises.

        `ACCEPTED` means verified and staged: the push counts as accepted (metric,
        sinks) once the batch commits, at most `commit_interval` later.
        """
        return self.handle(apdu, source, transport, None)

    def handle(
        self,
        apdu: bytes,
        source: str,
        transport: str,
        system_title: bytes | None,
        received_at: float | None = None,
    ) -> Outcome:
        """As `handle_apdu`; `system_title` names the sender when the transport knows it
        (a serial HAN port serves one meter) and the APDU carries none. `received_at`
        (a quarantine replay) is when the frame arrived, if not now."""
        try:
            return self._handle(apdu, source, transport, system_title, received_at)
        except Exception:
            self.log.failure(
                "internal error on a frame from {source} ({transport}); still serving",
                source=source,
                transport=transport,
            )
            self.metrics.rejected(RejectReason.INTERNAL_ERROR)
            return _REJECTED[RejectReason.INTERNAL_ERROR]

    def _handle(
        self,
        apdu: bytes,
        source: str,
        transport: str,
        known_title: bytes | None,
        received_at: float | None = None,
    ) -> Outcome:
        started = time.perf_counter()
        try:
            envelope = peel(apdu, known_title)
        except DlmsError as error:
            return self.reject(RejectReason.MALFORMED, source, transport, str(error))
        title = envelope.system_title
        if title is None:
            if envelope.security_control is None:
                # Nothing says which meter sent it, so no meter's policy can allow it.
                return self.reject(
                    RejectReason.POLICY, source, transport, "plaintext push without system title"
                )
            return self._unknown(None, apdu, source, transport)
        entry = self.keystore.lookup(title)
        if entry is None:
            return self._unknown(title, apdu, source, transport)
        security = envelope.security
        if security not in entry.allowed_security:
            return self.reject(
                RejectReason.POLICY,
                source,
                transport,
                f"security {security} not allowed for this meter",
                entry,
            )
        if not self.state.available:
            return self._state_unavailable(source, transport)
        counter = envelope.invocation_counter
        state = self.state
        last = state.last_counter(title)
        # Before any AES; the same check (window or strict) the state applies at commit.
        if counter is not None and last is not None and not state.accepts_counter(title, counter):
            return self.reject(
                RejectReason.REPLAY,
                source,
                transport,
                f"invocation counter {counter} already accepted or too old (highest {last})",
                entry,
            )
        try:
            plaintext = envelope.open(entry.cipher)
        except AuthenticationFailed as error:
            return self.reject(RejectReason.AUTH_FAILED, source, transport, str(error), entry)
        except DlmsError as error:
            return self.reject(RejectReason.MALFORMED, source, transport, str(error), entry)
        now = self._clock() if received_at is None else received_at
        # The record goes straight to JSON text (the same text `encode_record` makes of
        # the decoded push's `to_record()` plus these fields): no dicts built per push,
        # and for a layout seen before not even the typed tree (dlmsd.cosem.shapes).
        fields = (
            f',"received_at":"{self._received_at(now)}"'
            f',"source":{encode_basestring(source)},"transport":{encode_basestring(transport)}'
            f"{entry.record_fields}"
        )
        if counter is not None:
            # The id goes in the record too, so consumers can drop duplicates.
            record_id = make_record_id(title, counter)
            stored = counter
        else:
            # A plaintext push (allowed by policy) has no counter: keep the meter's
            # counter where it is and give the record an id of its own.
            record_id = f"{title.hex().upper()}:none:{int(now * 1000)}-{next(self._plaintext_ids)}"
            stored = last if last is not None else -1
        try:
            text = self._shapes.record_json(
                envelope,
                plaintext,
                entry.layout,
                f'{fields},"record_id":{encode_basestring(record_id)}',
            )
        except LimitExceeded as error:
            return self.reject(RejectReason.OVERSIZE, source, transport, str(error), entry)
        except DlmsError as error:
            return self.reject(RejectReason.MALFORMED, source, transport, str(error), entry)
        if len(text) > self._record_chars and _utf8_size(text) > self._max_record_bytes:
            return self.reject(
                RejectReason.OVERSIZE,
                source,
                transport,
                f"record of {_utf8_size(text):,} bytes over max_record_bytes"
                f" ({self._max_record_bytes:,})",
                entry,
            )
        mismatch = self._shapes.layout_mismatch
        if mismatch is not None:
            self._layout_mismatch(entry, source, transport, mismatch)
        if not self.state.spool_has_room():
            # state.spool_full = "refuse": the counter stays, a retransmission is accepted later.
            return self.reject(
                RejectReason.SPOOL_FULL, source, transport, "spool full, push refused", entry
            )
        # The key store's copy of the title: the counters then keep no bytes of their own.
        self.state.stage(
            AcceptedPush(entry.system_title, stored, record_id, escape_line_breaks(text))
        )
        if self._per_meter is not None:
            self._staged_meters.append(entry.name or entry.display_id)
        self._observe_decode(time.perf_counter() - started)
        self._schedule_commit()
        return ACCEPTED

    def _layout_mismatch(
        self, entry: MeterEntry, source: str, transport: str, detail: str
    ) -> None:
        # The push is still accepted (its body is in the record), without readings:
        # values under the wrong OBIS codes would be worse than none.
        self.metrics.layout_mismatches.inc()
        key = f"layout|{entry.display_id}".encode()
        if self._log_limit.should_log(key, self._clock()):
            self.log.warn(
                "layout mismatch from {source} ({transport}) meter {meter}: {detail};"
                " push kept without readings",
                source=source,
                transport=transport,
                meter=entry.display_id,
                meter_name=entry.name,
                detail=detail,
            )

    def _received_at(self, now: float) -> str:
        # Pushes arrive many per millisecond and the text has millisecond resolution.
        bucket = int(now * 1000)
        if bucket != self._stamp_bucket:
            self._stamp_bucket = bucket
            self._stamp_text = _utc_text(now)
        return self._stamp_text

    def _unknown(self, title: bytes | None, apdu: bytes, source: str, transport: str) -> Outcome:
        now = self._clock()
        try:
            self.quarantine.add(title, apdu, source, now, transport)
        except OSError as error:
            self.log.error(
                "cannot write quarantine file: {error}", error=error.strerror or str(error)
            )
        self.metrics.rejected(RejectReason.UNKNOWN_METER)
        if self.quarantine.should_log(title, now):
            # The 16-hex title is what `dlmsd keys add` takes; the FLAG form helps people.
            self.log.warn(
                "push rejected: {reason} system title {system_title} ({meter}) from {source}"
                " ({transport}); frame quarantined",
                reason=RejectReason.UNKNOWN_METER.value,
                system_title=title.hex().upper() if title else "-",
                meter=display_id(title) if title else "without system title",
                source=source,
                transport=transport,
            )
        return _REJECTED[RejectReason.UNKNOWN_METER]

    def reject(
        self,
        reason: RejectReason,
        source: str,
        transport: str,
        detail: str,
        entry: MeterEntry | None = None,
    ) -> Outcome:
        """Count a rejection and log it, at most once per reason and meter (or source)
        per log interval. Listeners use it for framing errors (malformed, oversize)."""
        self.metrics.rejected(reason)
        meter = entry.display_id if entry is not None else None
        key = f"{reason}|{meter or source}".encode()
        if self._log_limit.should_log(key, self._clock()):
            self.log.warn(
                "push rejected: {reason} from {source} ({transport}) meter {meter}: {detail}",
                reason=reason.value,
                source=source,
                transport=transport,
                meter=meter or "-",
                meter_name=entry.name if entry is not None else None,
                detail=detail,
            )
        return _REJECTED[reason]

    def _state_unavailable(self, source: str, transport: str) -> Outcome:
        # One line per log interval for all meters: an outage must not flood the log.
        self.metrics.rejected(RejectReason.STATE_UNAVAILABLE)
        if self._log_limit.should_log(b"state_unavailable", self._clock()):
            self.log.error(
                "push rejected: {reason} from {source} ({transport}): state database"
                " unreachable, refusing pushes until it is back",
                reason=RejectReason.STATE_UNAVAILABLE.value,
                source=source,
                transport=transport,
            )
        return _REJECTED[RejectReason.STATE_UNAVAILABLE]

    # --- batched commits ------------------------------------------------------

    def _schedule_commit(self) -> None:
        if self.state.staged >= self._commit_batch:
            self._start_commit()
        elif self._commit_call is None and not self._committing:
            self._commit_call = self._reactor.callLater(self._commit_interval, self._timed_flush)

    def _timed_flush(self) -> None:
        self._commit_call = None
        self._start_commit()

    def commit_wait(self) -> float:
        """Seconds until a push staged now would be committed."""
        call = self._commit_call
        if call is not None and call.active():
            remaining: float = call.getTime() - self._reactor.seconds()
            return max(0.0, remaining)
        return self._commit_interval

    def read_before_commit(self, read: Callable[[], object]) -> None:
        """Call `read` right before the next commit starts (due within `commit_wait()`;
        one is scheduled if none is): a listener that left its socket alone while
        pushes come slowly reads them then, and they go into that commit."""
        self._readers.append(read)
        if self._commit_call is None:
            self._commit_call = self._reactor.callLater(self._commit_interval, self._timed_flush)

    def flush(self) -> Deferred[int]:
        """Commit the staged pushes now; fires with how many were accepted.

        With a commit in flight, fires once the commit after it (which takes
        everything staged meanwhile) is done.
        """
        if self._committing:
            waiter: Deferred[int] = Deferred()
            self._flush_waiters.append(waiter)
            return waiter
        return self._start_commit()

    def _start_commit(self) -> Deferred[int]:
        if self._commit_call is not None:
            if self._commit_call.active():
                self._commit_call.cancel()
            self._commit_call = None
        # Whatever starts a commit first lets waiting listeners read: what they find
        # joins this commit (or the next, if one is in flight).
        readers, self._readers = self._readers, []
        for read in readers:
            try:
                read()
            except Exception:
                # A bug in one listener: the commit, and the other listeners, go on.
                self.log.failure("a listener failed to read before the commit")
        if self._committing:
            return defer.succeed(0)  # the commit in flight starts the next one
        meters, self._staged_meters = self._staged_meters, []
        staged = self.state.staged
        if not staged:
            return defer.succeed(0)
        self._adapt_interval(staged)
        self._committing = True
        counted = cast(
            "Deferred[int]",
            self.state.commit_staged().addCallbacks(
                self._committed, self._commit_failed, callbackArgs=(meters,), errbackArgs=(staged,)
            ),
        )
        return counted.addBoth(self._commit_done)

    def _adapt_interval(self, batch: int) -> None:
        """Grow the commit interval while commits are small, shrink it when they are big:
        a commit costs about the same for 1 push as for 30 (the fsync dominates)."""
        if batch < _TARGET_BATCH:
            grown = max(self._commit_interval * 2, _MIN_GROWN_INTERVAL)
            self._commit_interval = min(grown, self._interval_max)
        elif batch > 2 * _TARGET_BATCH:
            self._commit_interval = max(self._commit_interval / 2, self._interval_min)

    @property
    def commit_interval(self) -> float:
        """The commit interval in use now (seconds)."""
        return self._commit_interval

    def _committed(self, result: CommitResult, meters: list[str]) -> int:
        if self._disk_full_refused is not None:
            self.log.info(
                "state disk has room again: pushes accepted; {count} were refused while it"
                " was full",
                count=self._disk_full_refused,
            )
            self._disk_full_refused = None
        if result.refused:
            # The shared database saw these first from another daemon (or an
            # earlier copy of the frame): replays, caught by the atomic check.
            self.metrics.pushes_rejected.labels(RejectReason.REPLAY).inc(len(result.refused))
            if self._log_limit.should_log(b"replay-at-commit", self._clock()):
                self.log.warn(
                    "push rejected: {reason}: {count} pushes already accepted elsewhere"
                    " (refused by the state database at commit)",
                    reason=RejectReason.REPLAY.value,
                    count=len(result.refused),
                )
        self.metrics.pushes_accepted.inc(result.accepted)
        if self._per_meter is not None:
            refused = set(result.refused)
            last_push = self.metrics.meter_last_push
            now = self._clock()
            for position, meter in enumerate(meters):
                if position not in refused:
                    self._per_meter.labels(meter).inc()
                    if last_push is not None:
                        last_push[meter] = now
        if result.accepted:
            for notify in self.on_commit:
                notify()
        return result.accepted

    def _commit_failed(self, failure: Any, staged: int) -> int:
        # Nothing of the batch was accepted; the store set its counters back.
        error = failure.value
        if isinstance(error, StateDiskFull):
            if self._disk_full_refused is None:
                self._disk_full_refused = 0
                self.log.warn(
                    "push rejected: {reason}: the state disk is full; refusing pushes (none"
                    " accepted, counters kept, meters may retransmit) until space returns:"
                    " {error}",
                    reason=RejectReason.DISK_FULL.value,
                    error=str(error),
                )
            self._disk_full_refused += staged
            self.metrics.pushes_rejected.labels(RejectReason.DISK_FULL).inc(staged)
            return 0
        if isinstance(error, StateUnavailable):
            self.log.critical(
                "state database unreachable: {count} pushes refused, none accepted: {error}",
                count=staged,
                error=str(error),
            )
            reason = RejectReason.STATE_UNAVAILABLE
        elif isinstance(error, StateError):
            self.log.critical(
                "cannot commit {count} pushes, all rejected: {error}", count=staged, error=error
            )
            reason = RejectReason.INTERNAL_ERROR
        else:
            self.log.failure("commit of {count} pushes failed", failure, count=staged)
            reason = RejectReason.INTERNAL_ERROR
        self.metrics.pushes_rejected.labels(reason).inc(staged)
        return 0

    def _commit_done(self, accepted: int) -> int:
        self._committing = False
        waiters, self._flush_waiters = self._flush_waiters, []
        if self.state.staged or waiters:
            follow = self._start_commit()

            def wake(count: int) -> int:
                for waiter in waiters:
                    waiter.callback(count)
                return count

            follow.addCallback(wake)
        return accepted

    @property
    def staged(self) -> int:
        """Pushes verified and waiting for the next commit."""
        return self.state.staged
