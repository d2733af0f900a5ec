"""Moves spooled records to their sink: one SpoolPump service per sink.

At-least-once: a batch is read from the spool, handed to the sink, and deleted
from the spool only after the sink's Deferred fired successfully. A crash in
between redelivers the batch (the SQLite store writes that DELETE with its next
transaction, `dlmsd.service.spoolmirror`: a crash before it redelivers too).
A failing sink is retried with exponential backoff, capped (``retry_backoff_max``,
10 s by default) and jittered; the spool keeps growing meanwhile, on disk.

A sink that goes down is one warning (with the error; a traceback only for an
error no dlmsd sink raises on purpose, i.e. a bug), and one info line when it
delivers again: not a line per retry. A sink with an ``on_ready`` attribute gets
a callable there that it calls when a connection-level signal says it can deliver
again (the MQTT sink: on CONNACK); the pump then retries at once instead of
waiting out its backoff.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from dlmsd.service.state import SpoolEntry, StateError
from dlmsd.service.statebackend import StateBackend
from dlmsd.sinks.base import Sink

DEFAULT_MAX_BACKOFF = 10.0  # seconds: a sink back up waits at most this long
_JITTER = 0.25  # each backoff wait is 75-100% of its step


def _expected(error: BaseException) -> bool:
    """An error that says the sink is unreachable or refused the batch (its own message
    says why), as opposed to a bug in a sink."""
    if isinstance(error, OSError | ConnectError | TimeoutError | defer.TimeoutError):
        return True
    # Errors dlmsd's sinks raise on purpose carry a clear message of their own.
    return type(error).__module__.startswith("dlmsd.sinks")


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
    waits `retry_backoff`, doubled per consecutive failure up to `max_backoff`,
    each wait 75-100% of its step (`jitter` gives the fraction taken off, 0..1, so
    daemons sharing a sink do not retry in step).
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
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        poll_interval: float = 1.0,
        drain_timeout: float = 10.0,
        reactor: Clock | None = None,
        on_delivered: Callable[[str, int], None] | None = None,
        jitter: Callable[[], float] = random.random,
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
        self._jitter = jitter
        self._down_since: float | None = None
        if hasattr(sink, "on_ready"):
            sink.on_ready = self.sink_ready

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

    def sink_ready(self) -> None:
        """The sink says it can deliver again (a reconnect): retry now, not after the
        backoff."""
        if not self.running or self._stopping or not self._backing_off:
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
        step = min(
            self.max_backoff, self.retry_backoff * 2 ** min(self.consecutive_failures - 1, 30)
        )
        delay = step * (1.0 - _JITTER * self._jitter())
        if self.consecutive_failures == 1:
            self._down_since = self._reactor.seconds()
            self._log_down(failure, delay)
        if self._stopping:
            return
        self._backing_off = True
        self._schedule(delay)

    def _log_down(self, failure: Failure, delay: float) -> None:
        error = failure.value
        assert error is not None  # a Failure always holds its exception
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        fields = {
            "sink": self.sink.name,
            "error": text,
            "delay": delay,
            "most": self.max_backoff,
        }
        message = (
            "sink {sink} is down: {error}; records wait in the spool; retrying in"
            " {delay:.1f}s, then at most every {most:g}s"
        )
        if _expected(error):
            self.log.warn(message, **fields)
        else:
            # Not an error a sink raises on purpose: a bug; the traceback, once.
            self.log.failure(message, failure, LogLevel.error, **fields)

    def _log_back(self) -> None:
        down = self._reactor.seconds() - (self._down_since or self._reactor.seconds())
        self.log.info(
            "sink {sink} is back after {seconds:.1f}s and {failures} failed attempts;"
            " delivering the queued records",
            sink=self.sink.name,
            seconds=down,
            failures=self.consecutive_failures,
        )
        self._down_since = None

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
            if self.consecutive_failures:
                self._log_back()
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
