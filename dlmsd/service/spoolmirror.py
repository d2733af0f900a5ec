"""The SQLite spool's memory: each sink's queue as just committed, and acks not yet written.

Without it every delivered batch cost the SQLite state two more round trips:
the pump's claim SELECTed back the rows the ingest had just committed (and
built their records again), and its acknowledgement DELETEd them in a
transaction of its own (a COMMIT and, with ``synchronous = "full"``, one more
WAL fsync per batch).

**Mirror.** Per sink, while it is *valid*, a deque of the `SpoolEntry`s queued
for that sink, in id order, with the ids SQLite gave them and the record text
as committed: exactly the rows the spool holds for the sink, minus those
acknowledged whose DELETE is still waiting (`deletes`). A claim is then
answered from memory; it returns what the SELECT would (the tests compare the
two on random sequences of commits, claims, acks, failures and restarts).
A sink's mirror is dropped (claims SELECT again) when

* the process starts with rows queued for the sink (they are not read in),
* it would hold more than `max_rows` rows or `max_chars` characters of record
  text (a sink down for hours must not grow the memory),
* any transaction fails (the store cannot tell what the database holds),

and it starts again, empty, when the sink's queue depth reaches 0. Mirroring
stops for good (`disable`) when ids may not be SQLite's usual largest + 1
(`consecutive`): the store computes a commit's ids from the last one.

**Lazy acknowledgement.** An acknowledgement of mirrored records takes them out
of the mirror (and the queue depth) at once and leaves their DELETE in
`deletes`; the store runs those at the start of its next transaction (usually
the ingest's next commit), on a timer when nothing commits for a while, and on
close. Reads of the spool table skip them meanwhile (`waiting`): a read never
writes, so it works on a full disk. Until then the rows are still on disk: a
crash (``kill -9``, power cut) in between delivers those records again after
the restart. That is the spool's contract anyway (at least once; records carry
``record_id`` for consumers to drop duplicates): a record is never lost, and
after a clean stop nothing is delivered twice.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, cast

from twisted.logger import Logger

if TYPE_CHECKING:
    from dlmsd.service.state import SpoolEntry

_log = Logger(namespace="dlmsd.service.state")

MAX_ROWS = 10_000
"""A sink's mirror holds at most this many records (a pump claims 500 at a time)."""
MAX_CHARS = 8 * 1024 * 1024
"""... and at most this much record text (characters, about bytes)."""
FLUSH_DELAY = 0.1
"""Seconds acknowledged DELETEs wait for a commit to ride on before one of their own."""
TRUSTED_IDS = 2**62
"""SQLite gives a new row the largest id + 1, unless the largest is 2**63 - 1: then
it picks ids at random. Below this bound 2**62 inserts are needed to get there;
only a database someone crafted holds larger ids."""


class DelayedCall(Protocol):
    def active(self) -> bool: ...
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The part of IReactorTime the store uses."""

    def callLater(self, delay: float, f: Callable[[], None], /) -> DelayedCall: ...


def id_runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """The ids as ``(first, last)`` runs of consecutive integers, ascending."""
    ordered = sorted(set(ids))
    if not ordered:
        return []
    first = ordered[0]
    if ordered[-1] - first + 1 == len(ordered):
        return [(first, ordered[-1])]  # the usual case: one contiguous batch
    runs: list[tuple[int, int]] = []
    last = first
    for row_id in itertools.islice(ordered, 1, None):
        if row_id != last + 1:
            runs.append((first, last))
            first = row_id
        last = row_id
    runs.append((first, last))
    return runs


def consecutive(first: int, last: int, count: int) -> bool:
    """Whether a sink's `count` rows of one commit, the first and last inserted
    given, have the ids ``first .. last`` (SQLite's usual largest + 1)."""
    return last - first + 1 == count and first > 0 and last < TRUSTED_IDS


class SpoolMirror:
    """The sinks' mirrors and the acknowledged DELETEs waiting for a transaction."""

    def __init__(
        self, depths: Mapping[str, int], *, max_rows: int = MAX_ROWS, max_chars: int = MAX_CHARS
    ) -> None:
        self.max_rows = max_rows
        self.max_chars = max_chars
        self.enabled = True
        # A sink without an entry is not mirrored: its claims SELECT.
        self._queues: dict[str, deque[SpoolEntry]] = {}
        self._chars: dict[str, int] = {}
        for sink, depth in depths.items():
            if depth == 0:
                self.restart(sink)
        self.deletes: list[tuple[str, int, int]] = []
        """(sink, first id, last id) runs acknowledged and not yet deleted."""
        self._scheduler: Scheduler | None = None
        self._timer: DelayedCall | None = None

    # --- the timer that writes `deletes` when nothing else does ---------------------

    def start_timer(self, reactor: object) -> None:
        """From now on `write_soon` times the writes on `reactor`."""
        self._scheduler = cast(Scheduler, reactor)

    def stop_timer(self) -> None:
        """No more timed writes (the store closes)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._scheduler = self._timer = None

    def written(self) -> None:
        """A transaction wrote `deletes`: none wait, and the timer has nothing to do
        (the next acknowledgement sets it again, so while commits come more often
        than `FLUSH_DELAY` it never fires)."""
        self.deletes = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def write_soon(self, write: Callable[[], None]) -> None:
        """Call `write` (the store's flush) after `FLUSH_DELAY`, unless a call is
        pending already (a commit meanwhile leaves it nothing to do)."""
        if self._scheduler is not None and (self._timer is None or not self._timer.active()):
            self._timer = self._scheduler.callLater(FLUSH_DELAY, lambda: self._write(write))

    def _write(self, write: Callable[[], None]) -> None:
        self._timer = None
        try:
            write()
        except Exception as exc:  # StateError: nothing is lost
            # The DELETEs wait for the next transaction (a commit or an eager
            # acknowledgement, which fail alike while this lasts).
            _log.warn("acknowledged spool records not deleted yet: {error}", error=str(exc))

    # --- the sinks' queues --------------------------------------------------------

    def mirrored(self, sink: str) -> bool:
        """Whether the sink's claims are answered from memory."""
        return sink in self._queues

    def restart(self, sink: str) -> None:
        """The sink's queue is empty (but for rows `deletes` hold): mirror it from now on."""
        if self.enabled:
            self._queues[sink] = deque()
            self._chars[sink] = 0

    def drop(self, sink: str | None = None) -> None:
        """Stop mirroring a sink (None: every sink) until its queue is empty again."""
        for name in list(self._queues) if sink is None else [sink]:
            self._queues.pop(name, None)
            self._chars.pop(name, None)

    def disable(self) -> None:
        """Stop mirroring for good (ids may not be consecutive in this database)."""
        self.enabled = False
        self.drop()

    def waiting(self, sink: str) -> set[int]:
        """The sink's ids acknowledged and still on disk (reads skip them)."""
        return {
            row_id
            for name, first, last in self.deletes
            if name == sink
            for row_id in range(first, last + 1)
        }

    def claim(self, sink: str, limit: int) -> list[SpoolEntry] | None:
        """Up to `limit` oldest records of a mirrored sink; None when not mirrored."""
        queue = self._queues.get(sink)
        if queue is None:
            return None
        return list(queue) if limit >= len(queue) else list(itertools.islice(queue, limit))

    def add(self, sink: str, entries: list[SpoolEntry]) -> None:
        """A commit spooled these entries (ids ascending) for the sink."""
        queue = self._queues.get(sink)
        if queue is None:
            return
        chars = self._chars[sink] + sum(len(entry.record.json) for entry in entries)
        if len(queue) + len(entries) > self.max_rows or chars > self.max_chars:
            self.drop(sink)
            return
        queue.extend(entries)
        self._chars[sink] = chars

    def drop_oldest(self, sink: str, count: int) -> None:
        """The ``drop_oldest`` policy deleted the sink's `count` oldest rows."""
        queue = self._queues.get(sink)
        if queue is not None:
            for _ in range(min(count, len(queue))):
                self._chars[sink] -= len(queue.popleft().record.json)

    def acknowledge(self, sink: str, ids: Iterable[int]) -> int | None:
        """Take acknowledged ids out of a mirrored sink and queue their DELETE.

        Returns how many were queued (ids the sink does not hold are ignored:
        dropped meanwhile, or another sink's); None when the sink is not mirrored.
        """
        queue = self._queues.get(sink)
        if queue is None:
            return None
        wanted = set(ids)
        removed: list[int] = []
        chars = 0
        # The usual case: the pump acknowledges the head of the queue.
        while queue and queue[0].id in wanted:
            entry = queue.popleft()
            removed.append(entry.id)
            chars += len(entry.record.json)
        if len(removed) < len(wanted) and queue:
            rest = wanted.difference(removed)
            kept: deque[SpoolEntry] = deque()
            for entry in queue:
                if entry.id in rest:
                    removed.append(entry.id)
                    chars += len(entry.record.json)
                else:
                    kept.append(entry)
            self._queues[sink] = kept
        self._chars[sink] -= chars
        self.deletes.extend((sink, first, last) for first, last in id_runs(removed))
        return len(removed)
