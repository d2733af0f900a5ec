"""Open-file budget: TCP connection limits checked against RLIMIT_NOFILE at start.

Every TCP connection is a descriptor. If the listeners' ``max_connections``
(summed) plus what the daemon itself needs exceed the process's open-file
limit, the limit is hit before ``max_connections``: accept() fails with
EMFILE, the metrics endpoint can take no scrape, a sink cannot reconnect and
SQLite cannot open its journal. So at start the daemon raises its soft limit
to what the configuration needs (up to the hard limit); when even the hard
limit is too low it warns once and lowers each listener's ``max_connections``
in proportion, so the connections always leave `DESCRIPTOR_RESERVE`
descriptors (plus those already open at the check, plus each listener's
`EVICTION_BACKLOG`) for everything else.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence

import attrs

from dlmsd.service.tcp import EVICTION_BACKLOG

DESCRIPTOR_RESERVE = 64
"""Descriptors kept free of TCP connections for the daemon's own needs after start:
metrics scrapes, sink and database connections (the PostgreSQL pool), SQLite's
journal, quarantine files, key files on reload."""


@attrs.frozen(slots=True)
class DescriptorPlan:
    """What the start-up check decided.

    `wanted` is the descriptors the configuration needs, `soft` the soft limit
    after the check (`soft_before` before it), `limits` each listener's
    ``max_connections`` as it will be enforced (lower than configured when
    `clamped`).
    """

    wanted: int
    soft_before: int
    soft: int
    hard: int
    limits: tuple[int, ...]
    clamped: bool

    @property
    def raised(self) -> bool:
        return self.soft > self.soft_before


def descriptors_in_use() -> int:
    """Descriptors this process has open now (0 when /proc is not there)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return 0


def _finite(limit: int, ceiling: int) -> int:
    return ceiling if limit == resource.RLIM_INFINITY or limit > ceiling else limit


def plan(
    configured: Sequence[int], in_use: int, soft: int, hard: int, ceiling: int = 1 << 20
) -> tuple[int, int, tuple[int, ...]]:
    """``(wanted, new soft limit, per-listener limits)`` for connection limits `configured`.

    Pure: the soft limit is raised as far as needed within `hard` (and the
    kernel's `ceiling`, ``fs.nr_open``); when that is not enough the
    connections get what is left after the reserve, shared in proportion
    (at least one per listener).
    """
    overhead = in_use + DESCRIPTOR_RESERVE + EVICTION_BACKLOG * len(configured)
    wanted = overhead + sum(configured)
    hard = _finite(hard, ceiling)
    soft = _finite(soft, ceiling)
    new_soft = max(soft, min(wanted, hard))
    budget = new_soft - overhead
    total = sum(configured)
    if total <= budget:
        return wanted, new_soft, tuple(configured)
    limits = tuple(max(1, limit * max(budget, 0) // total) for limit in configured)
    return wanted, new_soft, limits


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 1 << 20


def fit_descriptor_limit(configured: Sequence[int]) -> DescriptorPlan:
    """Check the connection limits against RLIMIT_NOFILE and raise the soft limit
    as needed; returns the plan (the caller logs it and applies `limits`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted, new_soft, limits = plan(configured, descriptors_in_use(), soft, hard, _nr_open())
    if new_soft != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        except (OSError, ValueError):
            # Not allowed after all: plan again within the limit we have.
            wanted, new_soft, limits = plan(configured, descriptors_in_use(), soft, soft)
    return DescriptorPlan(
        wanted=wanted,
        soft_before=soft,
        soft=new_soft,
        hard=hard,
        limits=limits,
        clamped=tuple(limits) != tuple(configured),
    )
