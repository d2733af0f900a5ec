"""Moves spooled records to their sink: one SpoolPump service per sink.

At-least-once: a batch is read from the spool, handed to the sink, and deleted
from the spool only after the sink's Deferred fired successfully. A crash in
between redelivers the batch. A failing sink is retried with exponential
backoff (capped); the spool keeps growing meanwhile, on disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from dlmsd.service.state import SpoolEntry, StateError
from dlmsd.service.statebackend import StateBackend
from dlmsd.sinks.base import Sink


class _DelayedCall(Protocol):
    def active(self) -> bool: ...
    def cancel(self) -> None: ...
    def getTime(self) -> float: ...


class Clock(Protocol):
    """The part of IReactorTime the pump uses (zope interfaces do not type-check)."""

    def seconds(self) -> float: ...
    def callLater(self, delay: float, f: Callable[[], None], /) -> _DelayedCall: ...


class SpoolPump(Service):
    """Drains one sink's spool queue into the sink.

    The ingest calls `notify()` after each commit so records go out at once; a
    periodic timer (`poll_interval`) is the safety net. On failure the next try
    waits `retry_backoff`, doubled per consecutive failure up to `max_backoff`.
    `stopService` waits for the delivery in flight, then keeps delivering what
    is queued (for at most `drain_timeout` seconds), then closes the sink.
    The pump owns the sink: it closes it.
    """

    log = Logger()

    def __init__(
        self,
        state: StateBackend,
        sink: Sink,
        batch_size: int = 500,
        retry_backoff: float = 1.0,
        *,
        max_backoff: float = 60.0,
        poll_interval: float = 1.0,
        drain_timeout: float = 10.0,
        reactor: Clock | None = None,
        on_delivered: Callable[[str, int], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast(Clock, default_reactor)
        self.state = state
        self.sink = sink
        self.batch_size = batch_size
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self.drain_timeout = drain_timeout
        self.on_delivered = on_delivered
        self.setName(f"pump-{sink.name}")  # type: ignore[no-untyped-call]
        self.delivered = 0
        self.failures = 0
        self.consecutive_failures = 0
        self._reactor: Clock = reactor
        self._in_flight: Deferred[Any] | None = None
        self._wakeup: _DelayedCall | None = None
        self._backing_off = False
        self._stopping = False
        self._more = False
        self._idle_waiters: list[Deferred[None]] = []

    # --- scheduling -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        self._schedule(0.0)

    def notify(self) -> None:
        """New records were committed: deliver soon (unless backing off)."""
        if not self.running or self._backing_off:
            return
        if self._in_flight is not None:
            self._more = True  # picked up when the delivery in flight is done
            return
        if (
            self._wakeup is not None
            and self._wakeup.active()
            and self._wakeup.getTime() <= self._reactor.seconds()
        ):
            return
        self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._wakeup = None
        self._backing_off = False
        if self._in_flight is not None or self._stopping:
            return
        d = self._deliver_batch()
        d.addCallback(self._after_success)
        d.addErrback(self._after_failure)

    def _after_success(self, count: int) -> None:
        more, self._more = self._more, False
        if self._stopping:
            return
        # A full batch means more is probably queued: go on at once.
        self._schedule(0.0 if more or count >= self.batch_size else self.poll_interval)

    def _after_failure(self, failure: Failure) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        delay = min(
            self.max_backoff, self.retry_backoff * 2 ** min(self.consecutive_failures - 1, 30)
        )
        self.log.failure(
            "sink {sink} failed ({failures} in a row); retrying in {delay:.1f}s",
            failure,
            sink=self.sink.name,
            failures=self.consecutive_failures,
            delay=delay,
        )
        if self._stopping:
            return
        self._backing_off = True
        self._schedule(delay)

    # --- delivering -------------------------------------------------------------

    def _deliver_batch(self) -> Deferred[int]:
        """Claim, deliver and acknowledge one batch; fires with the count (0: queue empty).

        The state backend may answer later (a shared database): the claim is
        part of the delivery in flight.
        """
        in_flight = self.state.claim(self.sink.name, self.batch_size).addCallback(self._deliver)
        self._in_flight = in_flight

        def done(result: Any) -> Any:
            self._in_flight = None
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            return result

        return in_flight.addBoth(done)

    def _deliver(self, entries: list[SpoolEntry]) -> Deferred[int] | int:
        if not entries:
            return 0
        try:
            delivery = self.sink.deliver([entry.record for entry in entries])
        except Exception:
            delivery = defer.fail()

        def acked(_: object) -> Deferred[int]:
            return self._ack(entries)

        return delivery.addCallback(acked)

    def _ack(self, entries: list[SpoolEntry]) -> Deferred[int]:
        # A failed ack redelivers the batch later: duplicates, never a loss.
        def done(_: object) -> int:
            self.consecutive_failures = 0
            self.delivered += len(entries)
            if self.on_delivered is not None:
                self.on_delivered(self.sink.name, len(entries))
            return len(entries)

        ids = [entry.id for entry in entries]
        return self.state.acknowledge(self.sink.name, ids).addCallback(done)

    # --- stopping ---------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Stop polling, finish the delivery in flight, drain, close the sink."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None
        return defer.ensureDeferred(self._drain_and_close())

    async def _drain_and_close(self) -> None:
        deadline = self._reactor.seconds() + self.drain_timeout
        if self._in_flight is not None:
            idle = Deferred[None]()
            self._idle_waiters.append(idle)
            await idle
        while self.consecutive_failures == 0 and self._reactor.seconds() < deadline:
            try:
                if not await self._deliver_batch():
                    break
            except Exception:
                self.log.failure("sink {sink} failed while draining", sink=self.sink.name)
                break
        left = 0
        with contextlib.suppress(StateError):
            left = self.state.depth(self.sink.name)
        if left:
            self.log.warn(
                "sink {sink}: {left} records stay spooled for the next start",
                sink=self.sink.name,
                left=left,
            )
        try:
            await self.sink.close()
        except Exception:
            self.log.failure("sink {sink} failed to close", sink=self.sink.name)
