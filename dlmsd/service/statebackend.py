"""The state backend: replay counters and the sink spool behind one small interface.

Two implementations, chosen by the ``[state] dsn`` of the config:

* ``sqlite:///path`` or a plain path (the default, the SQLite file under the
  state directory): `dlmsd.service.state.StateStore`, embedded, one daemon on
  one host. Its calls finish before they return; the Deferreds it hands out
  have already fired.
* ``postgresql://...``: `dlmsd.service.pgstate.PgStateBackend`, one database
  shared by several daemons on several hosts. The replay check and the
  counter advance are one atomic statement, so a push that reaches two
  daemons is accepted once; its work runs in a thread pool, off the reactor.

The ingest and the sink pumps only see `StateBackend`. The synchronous part
(`last_counter`, `stage`, `spool_has_room`) is a local, in-memory pre-check
that refuses cheap replays before any AES; the authoritative check is the
commit (`commit_staged`), which reports the pushes it refused.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred

from dlmsd.service.state import AcceptedPush, SpoolEntry, SpoolFullPolicy, StateError

if TYPE_CHECKING:
    from dlmsd.service.config import Config


class StateUnavailable(StateError):
    """The state database cannot be reached: pushes are refused, never accepted unchecked.

    The ingest counts these as ``state_unavailable``, other `StateError`s as
    ``internal_error``.
    """


@attrs.frozen(slots=True)
class CommitResult:
    """What one commit did with the staged batch.

    `accepted` pushes now have their counter advanced and their records
    spooled; `refused` holds the batch positions (0-based, in staging order)
    the atomic check found already taken, by another daemon or an earlier
    delivery of the same frame. They are replays and were not spooled.
    """

    accepted: int
    refused: tuple[int, ...] = ()


class StateBackend(Protocol):
    """What the daemon needs from its state store (both backends implement it).

    Counters: `last_counter` (local pre-check), `stage` (into the next commit),
    `commit_staged` (the authoritative atomic check + advance + spool insert).
    Spool: `claim` a sink's oldest records, `acknowledge` the delivered ones.
    Gauges (`depth`, `oldest_age`, `spool_depths`) answer from memory or a
    cache refreshed off the reactor, so a scrape never waits on the database.
    """

    sinks: tuple[str, ...]
    spool_limit: int
    spool_dropped: dict[str, int]
    on_drop: Callable[[str, int], object] | None

    @property
    def backend_name(self) -> str:
        """``"sqlite"`` or ``"postgresql"`` (metrics, logs)."""
        ...

    @property
    def available(self) -> bool:
        """False while the database is unreachable: the ingest refuses pushes then."""
        ...

    @property
    def staged(self) -> int:
        """Pushes staged and not yet handed to a commit."""
        ...

    def start(self, reactor: object) -> None:
        """Begin background work (cache refresh, reconnect probes) on `reactor`."""
        ...

    def last_counter(self, system_title: bytes) -> int | None:
        """The highest counter this daemon knows accepted or staged (a lower bound)."""
        ...

    def accepts_counter(self, system_title: bytes, counter: int) -> bool:
        """The local replay pre-check: False when `counter` was accepted or staged
        already, or is below the replay window (strict: not above `last_counter`)."""
        ...

    def stage(self, item: AcceptedPush) -> None:
        """Add a verified push to the next commit; its counter moves locally at once."""
        ...

    def spool_has_room(self) -> bool:
        """False when ``spool_full = "refuse"`` must refuse the next push."""
        ...

    def spool_depths(self) -> dict[str, int]:
        """Records queued per sink (from memory or the refreshed cache)."""
        ...

    def commit_staged(self) -> Deferred[CommitResult]:
        """Commit what is staged in one transaction.

        Fails with `StateUnavailable` (database unreachable) or `StateError`
        (anything else); then nothing of the batch was accepted by this call
        and its counters are set back locally.
        """
        ...

    def reset_counter(self, system_title: bytes, requested_by: str = "") -> Deferred[int | None]:
        """Forget a meter's replay counter (a legitimate restart); fires with the old one."""
        ...

    def claim(self, sink: str, limit: int) -> Deferred[list[SpoolEntry]]:
        """Up to `limit` of the sink's oldest records, held for this daemon until acked."""
        ...

    def acknowledge(self, sink: str, ids: Sequence[int]) -> Deferred[None]:
        """Delete delivered records from the sink's queue (SQLite: on disk with its next
        transaction; a crash before that delivers them again, never loses them)."""
        ...

    def depth(self, sink: str) -> int:
        """Records queued for a sink."""
        ...

    def oldest_age(self, sink: str, now: float | None = None) -> float:
        """Seconds the sink's oldest queued record has waited (0.0 when empty)."""
        ...

    def shutdown(self) -> Deferred[None]:
        """Commit what is staged, stop background work, close the database."""
        ...


# --- choosing a backend ---------------------------------------------------------------


def is_postgresql(dsn: str) -> bool:
    """True for ``postgresql://`` / ``postgres://`` URLs."""
    return dsn.startswith(("postgresql://", "postgres://"))


def sqlite_path(dsn: str) -> Path:
    """The file of a ``sqlite:///path`` DSN (``sqlite:////abs`` or ``sqlite:///rel``) or path."""
    if dsn.startswith("sqlite://"):
        rest = dsn[len("sqlite://") :]
        # sqlite:///var/x -> "/var/x"; a host part is not meaningful for a file.
        if not rest.startswith("/"):
            raise ValueError(f"not a sqlite:/// URL: {dsn!r}")
        return Path(rest[1:] if rest.startswith("//") else rest)
    return Path(dsn)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for logs and errors)."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn if "password=" not in dsn else "<dsn with password>"
    credentials, at, host = rest.rpartition("@")
    if ":" in credentials:
        user = credentials.split(":", 1)[0]
        credentials = f"{user}:***"
    return f"{scheme}://{credentials}{at}{host}"


def default_instance() -> str:
    """The instance label when none is configured: the host name, stable across
    restarts (series and spool leases continue; several daemons on one host
    sharing a database need ``state.instance``)."""
    return socket.gethostname()


def open_state_backend(config: Config, clock: Callable[[], float] | None = None) -> StateBackend:
    """The backend the config's ``[state] dsn`` names (default: SQLite in the state dir).

    Raises `StateError` (can't open, schema too new; `StateUnavailable` when
    PostgreSQL is unreachable at start); the caller makes it a start-up error.
    """
    import time

    from dlmsd.service.state import StateStore

    state = config.state
    sinks = [sink.name for sink in config.sinks]
    clock = clock or time.time
    dsn = state.dsn or str(config.state_db)
    spool_full: SpoolFullPolicy = "drop_oldest" if state.spool_full == "drop_oldest" else "refuse"
    if is_postgresql(dsn):
        from dlmsd.service.pgstate import PgStateBackend

        return PgStateBackend.open(
            dsn,
            sinks,
            instance=state.instance or default_instance(),
            clock=clock,
            spool_limit=state.spool_limit,
            spool_full=spool_full,
            lease=state.spool_lease,
            replay_window=state.replay_window,
        )
    return StateStore(
        sqlite_path(dsn),
        sinks,
        synchronous="full" if state.synchronous == "full" else "normal",
        clock=clock,
        spool_limit=state.spool_limit,
        spool_full=spool_full,
        replay_window=state.replay_window,
    )


# --- metrics --------------------------------------------------------------------------


class StateCollector(Collector):
    """``dlmsd_state_info{instance,backend}`` and ``dlmsd_state_available{instance}``,
    plus ``dlmsd_state_commit_refused_total{instance}`` (replays only the shared
    database caught: the same frame accepted by another daemon first)."""

    def __init__(self, backend: StateBackend, instance: str) -> None:
        self._backend = backend
        self._instance = instance

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        info, available, refused = self._families()
        backend = self._backend
        info.add_metric([self._instance, backend.backend_name], 1.0)
        available.add_metric([self._instance], 1.0 if backend.available else 0.0)
        refused.add_metric([self._instance], float(getattr(backend, "commit_refused", 0)))
        yield from (info, available, refused)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                "dlmsd_state_info",
                "This daemon's instance name and state backend (always 1).",
                labels=["instance", "backend"],
            ),
            GaugeMetricFamily(
                "dlmsd_state_available",
                "1 while the state database is reachable; pushes are refused while 0.",
                labels=["instance"],
            ),
            CounterMetricFamily(
                "dlmsd_state_commit_refused",
                "Pushes the atomic counter check refused at commit (taken by another daemon).",
                labels=["instance"],
            ),
        )
