"""Quarantine for pushes from meters the key store does not know.

Their frames cannot be verified or decoded yet, but they may be wanted once the
keys arrive: each is kept as one JSON line (``received_at`` ISO-8601 UTC like
records; files of older versions hold epoch seconds, still read) in a file
bounded in size. `dlmsd quarantine replay` feeds them through the running
daemon's ingest once their keys are in the key store (`replace` then keeps
only what is still waiting); ``dlmsd decode --quarantine`` decodes them
offline. Logging is rate limited per system
title, with bounded memory, since a misconfigured fleet (or an attacker) can
send from 100,000 unknown titles.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs

from dlmsd.protocol.push import RECORD_SCHEMA_VERSION

QUARANTINE_FILE = "quarantine.jsonl"
_MAX_TITLES = 100_000


@attrs.frozen(slots=True)
class QuarantinedFrame:
    """One line of the quarantine file."""

    received_at: float
    system_title: bytes | None
    source: str
    transport: str
    frame: bytes


class LogRateLimiter:
    """Says whether to log an event about a key: at most once per key per interval.

    Memory stays flat: at most `max_keys` keys are remembered (least recently
    seen dropped first), and at most `max_per_interval` events are let through
    per interval over all keys, so a flood of distinct keys cannot flood the log.
    """

    def __init__(
        self, interval: float = 300.0, max_keys: int = 10_000, max_per_interval: int = 100
    ) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.max_per_interval = max_per_interval
        self.suppressed = 0
        self._last: OrderedDict[bytes | None, float] = OrderedDict()
        self._window_start = float("-inf")
        self._window_count = 0

    def should_log(self, key: bytes | None, now: float) -> bool:
        """True when an event for `key` at time `now` should be logged."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._last.move_to_end(key)
            self.suppressed += 1
            return False
        if now - self._window_start >= self.interval:
            self._window_start = now
            self._window_count = 0
        if self._window_count >= self.max_per_interval:
            self.suppressed += 1
            return False
        self._window_count += 1
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._last)


class Quarantine:
    """Appends unknown-meter frames to ``<directory>/quarantine.jsonl``.

    When the file would grow past `max_bytes` it is renamed to
    ``quarantine.jsonl.1`` (replacing the previous one), so the disk used stays
    under about twice `max_bytes`; 0 keeps no frames (only the rate limiter
    works). Writes are flushed, not fsynced: these are frames nobody accepted,
    kept as a convenience.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 16 * 1024 * 1024,
        *,
        log_interval: float = 300.0,
        max_tracked_titles: int = 10_000,
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.path = directory / QUARANTINE_FILE
        self.max_bytes = max_bytes
        self.limiter = LogRateLimiter(log_interval, max_tracked_titles)
        self.added = 0
        # Titles quarantined since start (bounded): a key reload that makes one of
        # them known replays the quarantine at once (`dlmsd.service.lifecycle`).
        self.titles: set[bytes] = set()
        self.titles_overflow = False
        directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the daemon's life
        self._size = self._file.tell()

    def add(
        self,
        system_title: bytes | None,
        frame_bytes: bytes,
        source: str,
        received_at: float,
        transport: str = "unknown",
    ) -> None:
        """Keep one frame; raises OSError if the file cannot be written."""
        if not self.max_bytes:
            return
        if system_title is not None and system_title not in self.titles:
            if len(self.titles) < _MAX_TITLES:
                self.titles.add(system_title)
            else:
                self.titles_overflow = True
        line = _line(QuarantinedFrame(received_at, system_title, source, transport, frame_bytes))
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
        self._file.write(line)
        self._file.flush()
        self._size += len(line)
        self.added += 1

    def should_log(self, system_title: bytes | None, now: float) -> bool:
        """Whether to log this unknown title now (at most once per title per interval)."""
        return self.limiter.should_log(system_title, now)

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(QUARANTINE_FILE + ".1"))
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def frames(self) -> list[QuarantinedFrame]:
        """Every frame kept, oldest first (the rotated file, then the current one)."""
        self._file.flush()
        found: list[QuarantinedFrame] = []
        for path in (self.path.with_name(QUARANTINE_FILE + ".1"), self.path):
            if path.exists():
                found.extend(read_quarantine(path))
        return found

    def replace(self, frames: Iterable[QuarantinedFrame]) -> None:
        """Keep exactly `frames` (e.g. those a replay could not use yet), atomically:
        a temp file in the same directory, fsync, rename; the rotated file goes."""
        kept = list(frames)
        temp = self.path.with_name(QUARANTINE_FILE + ".new")
        with open(temp, "wb") as handle:
            for frame in kept:
                handle.write(_line(frame))
            handle.flush()
            os.fsync(handle.fileno())
        self._file.close()
        os.replace(temp, self.path)
        rotated = self.path.with_name(QUARANTINE_FILE + ".1")
        if rotated.exists():
            rotated.unlink()
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = self._file.tell()
        self.titles = {frame.system_title for frame in kept if frame.system_title is not None}
        self.titles_overflow = len(self.titles) > _MAX_TITLES

    def close(self) -> None:
        """Flush and close the file."""
        if not self._file.closed:
            self._file.close()


def _line(frame: QuarantinedFrame) -> bytes:
    received = datetime.fromtimestamp(frame.received_at, UTC).isoformat(timespec="milliseconds")
    return (
        json.dumps(
            {
                "schema_version": RECORD_SCHEMA_VERSION,
                "kind": "quarantine",
                "received_at": received,
                "system_title": frame.system_title.hex().upper() if frame.system_title else None,
                "source": frame.source,
                "transport": frame.transport,
                "frame_hex": frame.frame.hex().upper(),
            },
            ensure_ascii=False,
        )
        + "\n"
    ).encode("utf-8")


def _timestamp(value: object) -> float:
    """``received_at``: ISO-8601 text, or epoch seconds (files of older versions)."""
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("received_at")
    return float(value)


def read_quarantine(path: Path) -> Iterator[QuarantinedFrame]:
    """The frames of a quarantine file, oldest first; broken lines (a crash in
    the middle of a write) are skipped."""
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                item = json.loads(raw)
                title = item["system_title"]
                yield QuarantinedFrame(
                    received_at=_timestamp(item["received_at"]),
                    system_title=bytes.fromhex(title) if title else None,
                    source=str(item["source"]),
                    transport=str(item["transport"]),
                    frame=bytes.fromhex(item["frame_hex"]),
                )
            except (ValueError, KeyError, TypeError):
                continue
