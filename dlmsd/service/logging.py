"""Log observers for the daemon: twistd's text format, or flat JSON lines; log levels.

The daemon logs through `twisted.logger.Logger` with format strings and
keyword fields. With ``log_format = "json"`` every event becomes one flat JSON
object per line: ``time`` (ISO-8601 UTC), ``level``, ``logger`` (the
namespace), ``message`` (rendered), then the event's own fields, made JSON-safe.
journald, Loki and ELK ingest such lines as they are.

``[daemon] log_level`` and ``[daemon.log_levels]`` (per logger namespace) drop
events below a level before they reach the observer. The service tree hands
twistd the observer (see `DaemonService.setServiceParent`); with the text
format at the default level nothing is handed over, so twistd's own observer
stays and ``--logfile`` and ``--syslog`` keep working.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    textFileLogObserver,
)

# Keys the legacy log bridge (twisted.python.log) adds: plumbing, not fields.
_PLUMBING = frozenset(
    {"message", "system", "isError", "time", "format", "why", "failure", "printed"}
)
_LEVELS = frozenset(LogLevel.iterconstants())
_RESERVED = ("time", "level", "logger", "message")
_MAX_DEPTH = 4


def event_as_json(event: Mapping[str, Any]) -> str:
    """One event as a flat JSON object (no newline)."""
    when = event.get("log_time")
    stamp = datetime.fromtimestamp(when if isinstance(when, int | float) else 0.0, UTC)
    level = event.get("log_level")
    failure = event.get("log_failure")
    message = formatEvent(dict(event))
    if not message and failure is not None:
        message = str(getattr(failure, "getErrorMessage", lambda: "")())
    line: dict[str, Any] = {
        "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level.name if level is not None and level in _LEVELS else "info",
        "logger": str(event.get("log_namespace", "-")),
        "message": message,
    }
    system = event.get("log_system")
    if isinstance(system, str) and system not in ("", "-"):
        line["system"] = system
    legacy = "isError" in event  # from twisted.python.log: its keys are plumbing
    for key, value in event.items():
        if key.startswith("log_") or (legacy and key in _PLUMBING):
            continue
        name = f"{key}_" if key in _RESERVED or key == "system" else key
        line[name] = _json_safe(value, 0)
    if failure is not None:
        line["exception"] = getattr(getattr(failure, "type", None), "__name__", "unknown")
        line["traceback"] = failure.getTraceback() if hasattr(failure, "getTraceback") else ""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json_safe(value: Any, depth: int) -> Any:
    """A value JSON can hold: scalars as they are, bytes as hex, containers walked
    (a few levels deep), anything else as its ``str``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_json_safe(item, depth + 1) for item in value]
    try:
        return str(value)
    except Exception:  # a field's __str__ must never cost the log line
        return f"<unprintable {type(value).__name__}>"


def json_lines_observer(stream: IO[str] | None = None) -> FileLogObserver:
    """One flat JSON object per line (no RFC 7464 record separator)."""
    return FileLogObserver(
        stream if stream is not None else sys.stdout, lambda event: event_as_json(event) + "\n"
    )


def text_observer(stream: IO[str] | None = None) -> FileLogObserver:
    """twistd's classic text lines: timestamp, system and message."""
    return textFileLogObserver(stream if stream is not None else sys.stdout)


def observer_for(log_format: str, stream: IO[str] | None = None) -> FileLogObserver:
    """The observer for a ``daemon.log_format`` value (``text`` or ``json``)."""
    if log_format == "json":
        return json_lines_observer(stream)
    return text_observer(stream)


def level_named(name: str) -> LogLevel:
    """A `LogLevel` from one of `LOG_LEVELS`."""
    level: LogLevel = LogLevel.levelWithName(name)
    return level


def filtered(
    observer: Any, level: str, per_namespace: Mapping[str, str] | None = None
) -> FilteringLogObserver:
    """`observer` behind a level filter: `level` by default, `per_namespace` for
    namespaces and their children (``"dlmsd.sinks" = "debug"`` covers every sink)."""
    # zope interfaces do not type-check: the predicate goes in as Any.
    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=level_named(level))
    for namespace, name in (per_namespace or {}).items():
        predicate.setLogLevelForNamespace(namespace, level_named(name))
    return FilteringLogObserver(observer, [predicate])


def daemon_observer(
    log_format: str,
    level: str = "info",
    per_namespace: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
) -> FilteringLogObserver | None:
    """The observer the daemon hands twistd, or None to keep twistd's own (text at
    the default level: ``--logfile`` and ``--syslog`` then still apply)."""
    if log_format != "json" and level == "info" and not per_namespace:
        return None
    return filtered(observer_for(log_format, stream), level, per_namespace)


def format_event(event: dict[str, object]) -> str:
    """One event as a text line (tests use it to read captured events)."""
    return formatEventAsClassicLogText(event) or ""
