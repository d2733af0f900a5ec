"""Log observers for the daemon: twistd's text format, or JSON lines.

The daemon logs through `twisted.logger.Logger` with format strings and
keyword fields, so a JSON observer gets every field for free. With
``log_format = "json"`` the service tree hands twistd a JSON-lines observer
(see `DaemonService.setServiceParent`); with ``"text"`` twistd's own observer
stays, so ``--logfile`` and ``--syslog`` keep working.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FileLogObserver,
    formatEventAsClassicLogText,
    jsonFileLogObserver,
    textFileLogObserver,
)


def json_lines_observer(stream: IO[str] | None = None) -> FileLogObserver:
    """One JSON object per line (no RFC 7464 record separator), for journald and shippers."""
    return jsonFileLogObserver(stream if stream is not None else sys.stdout, recordSeparator="")


def text_observer(stream: IO[str] | None = None) -> FileLogObserver:
    """twistd's classic text lines: timestamp, system and message."""
    return textFileLogObserver(stream if stream is not None else sys.stdout)


def observer_for(log_format: str, stream: IO[str] | None = None) -> FileLogObserver:
    """The observer for a ``daemon.log_format`` value (``text`` or ``json``)."""
    if log_format == "json":
        return json_lines_observer(stream)
    return text_observer(stream)


def format_event(event: dict[str, object]) -> str:
    """One event as a text line (tests use it to read captured events)."""
    return formatEventAsClassicLogText(event) or ""
