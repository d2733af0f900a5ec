"""The default sink: one JSON object per line in a local file.

Rotation renames the current file to ``<path>.YYYYMMDD-HHMMSS-N`` (UTC time of
the rotation, N making the name unique) when the next line would take it past
`rotate_bytes`, or when the UTC day changed since the file was started.

fsync policy: ``always`` after every line, ``batch`` once per delivered batch
(the default: the pump deletes a batch from the spool only after this), ``never``
leaves it to the OS (a power cut can lose lines the spool already dropped).

Writes are blocking and happen on the reactor thread: a batch is one write and
at most a few fsyncs, shorter than a thread hand-off's latency for this size.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from twisted.internet import defer
from twisted.internet.defer import Deferred

from dlmsd.service.state import SpoolRecord, encode_record
from dlmsd.sinks.base import SinkConfigError

FsyncPolicy = Literal["always", "batch", "never"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "batch", "never")


def _utc_day(timestamp: float) -> int:
    return int(timestamp // 86400)


class JsonlSink:
    """Writes records as JSON lines to `path`, rotating by size and/or UTC day."""

    def __init__(
        self,
        path: Path,
        rotate_bytes: int | None = None,
        rotate_daily: bool = False,
        fsync: FsyncPolicy = "batch",
        *,
        name: str = "jsonl",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.name = name
        self.path = path
        self.rotate_bytes = rotate_bytes or None
        self.rotate_daily = rotate_daily
        self.fsync = fsync
        self.written = 0
        self._rotations = 0  # tells a failed batch whether it may truncate the file
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        # a+b: appends, and lets _open read the last byte back.
        self._file = open(self.path, "a+b")  # noqa: SIM115 - kept open between batches
        self._size = self._file.tell()
        fd = self._file.fileno()
        # An existing file belongs to the day it was last written, so a restart
        # on the next day still rotates it.
        started = os.fstat(fd).st_mtime if self._size else self._clock()
        self._day = _utc_day(started)
        if self._size and os.pread(fd, 1, self._size - 1) != b"\n":
            # A crash cut the last line short: end it so the next one parses.
            self._file.write(b"\n")
            self._file.flush()
            self._size += 1

    def deliver(self, records: Sequence[Mapping[str, object]]) -> Deferred[None]:
        """Append the records; fire after the fsync the policy asks for."""
        try:
            self._write(records)
        except Exception:
            return defer.fail()
        return defer.succeed(None)

    def _write(self, records: Sequence[Mapping[str, object]]) -> None:
        if self.rotate_daily:
            today = _utc_day(self._clock())
            if today != self._day:
                if self._size:
                    self._rotate()
                self._day = today
        # Spooled records are written as the bytes the spool holds: never parsed,
        # never re-encoded, so a line is exactly the record that was committed.
        lines = [
            record.utf8 if isinstance(record, SpoolRecord) else encode_record(record).encode()
            for record in records
        ]
        count = len(lines)
        if not count:
            return
        batch_start, rotations = self._size, self._rotations
        try:
            if self.fsync == "always" or not self._fits(lines):
                self._write_lines(lines)
            else:
                # The usual case: the whole batch is one write (and one fsync).
                lines.append(b"")
                data = b"\n".join(lines)
                self._append([data], len(data))
            if self.fsync == "batch":
                os.fsync(self._file.fileno())
        except OSError:
            if self._rotations == rotations:
                # The pump retries the whole batch: drop what of it reached this
                # file, so the file holds no half line and fewer duplicates.
                self._truncate_to(batch_start)
            raise
        self.written += count

    def _fits(self, lines: list[bytes]) -> bool:
        """Whether the lines (each plus its LF) go into the current file without rotating."""
        if self.rotate_bytes is None:
            return True
        return self._size + sum(map(len, lines)) + len(lines) <= self.rotate_bytes

    def _write_lines(self, lines: list[bytes]) -> None:
        """Write line by line, rotating by size and fsyncing per line as configured."""
        chunk: list[bytes] = []
        chunk_size = 0
        for text in lines:
            line = text + b"\n"
            if (
                self.rotate_bytes is not None
                and self._size + chunk_size
                and self._size + chunk_size + len(line) > self.rotate_bytes
            ):
                self._append(chunk, chunk_size)
                chunk, chunk_size = [], 0
                self._rotate()
            chunk.append(line)
            chunk_size += len(line)
            if self.fsync == "always":
                self._append(chunk, chunk_size)
                os.fsync(self._file.fileno())
                chunk, chunk_size = [], 0
        self._append(chunk, chunk_size)

    def _append(self, chunk: list[bytes], size: int) -> None:
        if chunk:
            self._file.write(b"".join(chunk))
            self._file.flush()
            self._size += size

    def _truncate_to(self, size: int) -> None:
        # Closing drops the buffered bytes that failed to write.
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = open(self.path, "a+b")  # noqa: SIM115
        try:
            self._file.truncate(size)
            self._size = size
        except OSError:
            self._size = self._file.tell()

    def _rotate(self) -> None:
        self._rotations += 1
        if self.fsync != "never":
            os.fsync(self._file.fileno())
        self._file.close()
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%d-%H%M%S")
        number = 0
        while True:
            target = self.path.with_name(f"{self.path.name}.{stamp}-{number}")
            if not target.exists():
                break
            number += 1
        os.rename(self.path, target)
        if self.fsync != "never":
            _fsync_dir(self.path.parent)
        self._open()
        self._day = _utc_day(self._clock())

    def close(self) -> Deferred[None]:
        """Flush, fsync (unless the policy is ``never``) and close the file."""
        try:
            if not self._file.closed:
                self._file.flush()
                if self.fsync != "never":
                    os.fsync(self._file.fileno())
                self._file.close()
        except Exception:
            return defer.fail()
        return defer.succeed(None)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def jsonl_sink_factory(name: str, options: Mapping[str, Any]) -> JsonlSink:
    """Build a JsonlSink from a config table: path, rotate_bytes, rotate_daily, fsync."""
    allowed = {"path", "rotate_bytes", "rotate_daily", "fsync"}
    for key in options:
        if key not in allowed:
            raise SinkConfigError(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    path = options.get("path")
    if not isinstance(path, str | Path) or not str(path):
        raise SinkConfigError("path", "expected a file path")
    rotate_bytes = options.get("rotate_bytes")
    if rotate_bytes is not None and (
        not isinstance(rotate_bytes, int) or isinstance(rotate_bytes, bool) or rotate_bytes < 0
    ):
        raise SinkConfigError("rotate_bytes", "expected a non-negative integer (0: no limit)")
    rotate_daily = options.get("rotate_daily", False)
    if not isinstance(rotate_daily, bool):
        raise SinkConfigError("rotate_daily", "expected true or false")
    fsync = options.get("fsync", "batch")
    if fsync not in FSYNC_POLICIES:
        raise SinkConfigError("fsync", f"expected one of {', '.join(FSYNC_POLICIES)}")
    return JsonlSink(Path(path), rotate_bytes, rotate_daily, fsync, name=name)
