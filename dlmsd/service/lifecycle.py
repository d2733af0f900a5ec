"""Meter lifecycle work the running daemon does for the operator (over the control socket).

* ``reset-counter``: a meter whose invocation counter restarted legitimately
  (firmware update, new keys) has its replay counter forgotten, in the
  database and in the daemon's memory; its next push is accepted whatever its
  counter. Logged by the daemon (and, with PostgreSQL, kept in
  ``dlmsd_counter_resets``).
* ``quarantine-replay`` (and at once after a key reload that makes a meter
  quarantined since start known, before its next live push can move the
  counter past its quarantined frames): frames quarantined because their
  meter was unknown go through the ingest now that the key store knows it: the same checks
  (policy, replay counter, GCM tag), counters and sinks as a live push; the
  record's ``received_at`` is when the frame arrived. Frames that went
  through (accepted, or refused for good: replayed or malformed) leave the
  quarantine; the others stay for a later replay (meter still unknown, tag
  failed with the key given, policy, spool full, state unavailable).
"""

from __future__ import annotations

import collections
import getpass
import re
import weakref
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from dlmsd.service.control import ControlError, Handler
from dlmsd.service.ingest import RejectReason
from dlmsd.service.keystore import display_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dlmsd.service.maker import DaemonService

log = Logger(namespace="dlmsd.lifecycle")
_TITLE = re.compile(r"[0-9A-Fa-f]{16}")
# Refusals a later replay cannot change: the frame leaves the quarantine.
_FINAL = frozenset({RejectReason.REPLAY, RejectReason.MALFORMED})


def handlers(daemon: DaemonService) -> dict[str, Handler]:
    """The control commands of a running daemon."""

    async def reset(request: Mapping[str, Any]) -> dict[str, Any]:
        title = _title(request.get("system_title"))
        by = str(request.get("requested_by") or "")[:200]
        entry = daemon.keystore.lookup(title)
        meter = entry.name or entry.display_id if entry else display_id(title)
        previous = await daemon.state.reset_counter(title, by)
        log.info(
            "invocation counter of {meter} ({title}) reset by {by} (was {previous}):"
            " its next push is accepted whatever its counter",
            meter=meter,
            title=title.hex().upper(),
            by=by or "an operator",
            previous=previous,
        )
        return {"system_title": title.hex().upper(), "previous": previous, "meter": meter}

    async def replay(request: Mapping[str, Any]) -> dict[str, Any]:
        return await replay_quarantine(daemon)

    async def ping(request: Mapping[str, Any]) -> dict[str, Any]:
        return {"backend": daemon.state.backend_name, "meters": len(daemon.keystore)}

    return {"reset-counter": reset, "quarantine-replay": replay, "ping": ping}


def replay_after_reload(daemon: DaemonService) -> None:
    """After a key reload: replay the quarantine if a meter quarantined since start is
    known now. Called in the reload's reactor turn, so the replayed frames go through
    before any live push of the meter can move its counter past them."""
    quarantine, keystore = daemon.quarantine, daemon.keystore
    if quarantine.titles_overflow or any(title in keystore for title in quarantine.titles):
        defer.ensureDeferred(replay_quarantine(daemon)).addErrback(
            lambda failure: log.failure("quarantine replay after key reload failed", failure)
        )


def _title(value: object) -> bytes:
    if not isinstance(value, str) or not _TITLE.fullmatch(value):
        raise ControlError("system_title: expected 16 hex characters")
    return bytes.fromhex(value)


async def replay_quarantine(daemon: DaemonService) -> dict[str, Any]:
    """Feed the quarantined frames of meters now known through the ingest; commit them.

    Runs on the reactor thread in one go, so no live push of the same meter
    slips between two replayed frames (their counters stay in order). One
    replay at a time per daemon: the next waits until the quarantine file
    holds what the previous one kept.
    """
    lock = _replay_locks.setdefault(daemon, DeferredLock())
    await lock.acquire()
    try:
        return await _replay(daemon)
    finally:
        lock.release()


_replay_locks: weakref.WeakKeyDictionary[DaemonService, DeferredLock] = weakref.WeakKeyDictionary()


async def _replay(daemon: DaemonService) -> dict[str, Any]:
    ingest, quarantine, keystore = daemon.ingest, daemon.quarantine, daemon.keystore
    outcomes: collections.Counter[str] = collections.Counter()
    keep = []
    accepted = []
    frames = quarantine.frames()
    for frame in frames:
        title = frame.system_title
        if title is None or keystore.lookup(title) is None:
            outcomes["unknown_meter"] += 1
            keep.append(frame)
            continue
        outcome = ingest.handle(
            frame.frame, frame.source, frame.transport, title, frame.received_at
        )
        if outcome.accepted:
            outcomes["accepted"] += 1
            accepted.append(frame)
            continue
        reason = outcome.reason
        outcomes[reason.value if reason else "rejected"] += 1
        if reason not in _FINAL:
            keep.append(frame)
    committed = await ingest.flush()
    if committed < len(accepted):
        # A commit failed (or refused some): keep them all. Replayed again later, the
        # ones that did commit are refused as replays and leave then.
        keep.extend(accepted)
        keep.sort(key=lambda item: item.received_at)
    quarantine.replace(keep)
    log.info(
        "quarantine replay: {total} frames, {accepted} accepted, {kept} kept ({outcomes})",
        total=len(frames),
        accepted=outcomes["accepted"],
        kept=len(keep),
        outcomes=", ".join(f"{key} {value}" for key, value in sorted(outcomes.items())),
    )
    return {
        "frames": len(frames),
        "outcomes": dict(outcomes),
        "kept": len(keep),
        "committed": committed,
    }


def requester() -> str:
    """Who asks, for the daemon's log and the reset audit rows (``user@host``)."""
    import socket

    try:
        user = getpass.getuser()
    except Exception:
        user = "?"
    return f"{user}@{socket.gethostname()}"
