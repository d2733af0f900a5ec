"""The open-file budget: TCP connection limits against RLIMIT_NOFILE (pure planning)."""

from __future__ import annotations

import resource

from hypothesis import given
from hypothesis import strategies as st

from dlmsd.service.descriptors import DESCRIPTOR_RESERVE, plan
from dlmsd.service.tcp import EVICTION_BACKLOG


def test_a_soft_limit_too_low_is_raised_to_what_is_needed_within_the_hard_limit() -> None:
    wanted, soft, limits = plan([1000, 500], in_use=20, soft=1024, hard=65536)
    assert wanted == 20 + DESCRIPTOR_RESERVE + 2 * EVICTION_BACKLOG + 1500
    assert soft == wanted
    assert limits == (1000, 500)


def test_a_high_soft_limit_is_left_alone() -> None:
    assert plan([100], in_use=10, soft=65536, hard=65536)[1:] == (65536, (100,))


def test_an_infinite_hard_limit_stops_at_the_kernel_ceiling() -> None:
    _, soft, limits = plan(
        [10_000_000], in_use=10, soft=1024, hard=resource.RLIM_INFINITY, ceiling=1 << 20
    )
    assert soft == 1 << 20
    assert sum(limits) == (1 << 20) - 10 - DESCRIPTOR_RESERVE - EVICTION_BACKLOG


def test_a_hard_limit_too_low_shares_what_is_left_in_proportion() -> None:
    _, soft, limits = plan([10_000, 10_000, 5_000], in_use=20, soft=256, hard=1024)
    assert soft == 1024
    budget = 1024 - 20 - DESCRIPTOR_RESERVE - 3 * EVICTION_BACKLOG
    assert sum(limits) <= budget
    assert limits[0] == limits[1]
    assert abs(limits[0] - 2 * limits[2]) <= 1  # rounded down each


@given(
    configured=st.lists(st.integers(1, 1_000_000), min_size=1, max_size=4),
    in_use=st.integers(0, 500),
    soft=st.integers(16, 1 << 20),
    extra=st.integers(0, 1 << 20),
)
def test_connections_never_take_the_reserve(
    configured: list[int], in_use: int, soft: int, extra: int
) -> None:
    hard = soft + extra
    _, new_soft, limits = plan(configured, in_use, soft, hard, ceiling=1 << 21)
    assert soft <= new_soft <= hard
    assert all(1 <= limit <= wanted for limit, wanted in zip(limits, configured, strict=True))
    overhead = in_use + DESCRIPTOR_RESERVE + EVICTION_BACKLOG * len(configured)
    # Each listener keeps at least one connection: at most one each past the budget.
    assert sum(limits) + overhead <= max(new_soft, overhead) + len(configured)
