"""The default sink: one JSON object per line in a local file.

Rotation renames the current file to ``<path>.YYYYMMDD-HHMMSS-N`` (UTC time of
the rotation, N making the name unique) when the next line would take it past
`rotate_bytes`, or when the UTC day changed since the file was started.
Retention, checked at start and after each rotation: `keep_files` keeps the
newest N rotated files, `keep_days` deletes rotated files last written more
than N days ago (0: keep, the default for both). The current file is never
deleted.

fsync policy: ``always`` after every line, ``batch`` once per delivered batch
(the default: the pump deletes a batch from the spool only after this), ``never``
leaves it to the OS (a power cut can lose lines the spool already dropped).

Writes are blocking and happen on the reactor thread: a batch is one write and
at most a few fsyncs, shorter than a thread hand-off's latency for this size.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dlmsd.service.state import SpoolRecord, encode_record
from dlmsd.sinks.options import OptionReader

FsyncPolicy = Literal["always", "batch", "never"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "batch", "never")


_ROTATED = re.compile(r"(\d{8}-\d{6})-(\d+)")
_log = Logger(namespace="dlmsd.sinks.jsonl")

OPTION_DOCS = {
    "path": "File the records are appended to, one JSON object per line.",
    "rotate_bytes": "Rotate when the next line would pass this size (bytes; 0: no size limit).",
    "rotate_daily": "Rotate when the UTC day changes.",
    "fsync": "always: after every line; batch: per delivered batch; never: left to the OS.",
    "keep_files": "Rotated files to keep, newest first (0: keep all).",
    "keep_days": "Delete rotated files last written more than this many days ago (0: keep).",
}
"""One line of doc per option, for docs/configuration.md (`dlmsd.service.configdoc`)."""


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
        keep_files: int = 0,
        keep_days: float = 0,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.name = name
        self.path = path
        self.rotate_bytes = rotate_bytes or None
        self.rotate_daily = rotate_daily
        self.fsync = fsync
        self.keep_files = keep_files
        self.keep_days = keep_days
        self.written = 0
        self._rotations = 0  # tells a failed batch whether it may truncate the file
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        self.prune()

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
        self.prune()

    def rotated_files(self) -> list[Path]:
        """The rotated files of this sink, oldest first."""
        found = []
        for candidate in self.path.parent.glob(f"{self.path.name}.*"):
            match = _ROTATED.fullmatch(candidate.name[len(self.path.name) + 1 :])
            if match:
                found.append(((match.group(1), int(match.group(2))), candidate))
        return [candidate for _, candidate in sorted(found)]

    def prune(self) -> list[Path]:
        """Delete rotated files beyond `keep_files` or older than `keep_days`; returns them."""
        rotated = self.rotated_files()
        doomed: list[Path] = []
        if self.keep_files:
            doomed.extend(rotated[: max(0, len(rotated) - self.keep_files)])
        if self.keep_days:
            cutoff = self._clock() - self.keep_days * 86400
            for candidate in rotated:
                with contextlib.suppress(OSError):
                    if candidate not in doomed and candidate.stat().st_mtime < cutoff:
                        doomed.append(candidate)
        removed = []
        for candidate in doomed:
            try:
                candidate.unlink()
            except FileNotFoundError:
                continue
            except OSError as error:
                _log.warn(
                    "jsonl sink {name}: cannot delete {file}: {error}",
                    name=self.name,
                    file=str(candidate),
                    error=error.strerror or str(error),
                )
                continue
            removed.append(candidate)
        if removed:
            _log.info(
                "jsonl sink {name}: deleted {count} rotated file(s) past retention",
                name=self.name,
                count=len(removed),
            )
        return removed

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


def parse_jsonl_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a ``[[sinks]]`` table of type ``jsonl``: `JsonlSink` keyword arguments."""
    read = OptionReader(options)
    settings = {
        "path": Path(read.string("path")),
        "rotate_bytes": read.integer("rotate_bytes", 0, 0, 1 << 50),
        "rotate_daily": read.boolean("rotate_daily", False),
        "fsync": read.choice("fsync", FSYNC_POLICIES, "batch"),
        "keep_files": read.integer("keep_files", 0, 0, 1_000_000),
        "keep_days": read.number("keep_days", 0, 0, 100_000),
    }
    read.finish()
    return settings


def jsonl_sink_factory(name: str, options: Mapping[str, Any]) -> JsonlSink:
    """Build a JsonlSink from its config table (keys: `OPTION_DOCS`)."""
    return JsonlSink(name=name, **parse_jsonl_settings(options))
