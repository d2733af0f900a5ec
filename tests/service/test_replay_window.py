"""The anti-replay window (RFC 4303 §3.4.3 style), against a model that keeps every counter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dlmsd.service import replaywindow


def run(counters: list[int], width: int) -> list[int]:
    """The counters the window accepts, in arrival order."""
    highest: int | None = None
    seen = 0
    accepted = []
    for counter in counters:
        if replaywindow.accepts(highest, seen, counter, width):
            highest, seen = replaywindow.advance(highest, seen, counter, width)
            accepted.append(counter)
    return accepted


def model(counters: list[int], width: int) -> list[int]:
    """What RFC 4303 says: fresh (never accepted) and above highest - width - 1."""
    accepted: list[int] = []
    for counter in counters:
        highest = max(accepted, default=None)
        fresh = counter not in accepted
        if fresh and (highest is None or counter > highest or counter >= highest - width):
            accepted.append(counter)
    return accepted


@given(st.lists(st.integers(0, 200), max_size=150), st.integers(0, 70))
def test_the_window_accepts_what_the_model_does_and_never_a_duplicate(
    counters: list[int], width: int
) -> None:
    accepted = run(counters, width)
    assert accepted == model(counters, width)
    assert len(accepted) == len(set(accepted))


@given(st.lists(st.integers(0, 10_000), max_size=100))
def test_width_zero_is_the_strict_check(counters: list[int]) -> None:
    accepted = run(counters, 0)
    assert accepted == sorted(set(accepted))


def test_a_reordered_push_inside_the_window_is_accepted_once() -> None:
    assert run([1, 2, 4, 3, 3, 5, 2], 8) == [1, 2, 4, 3, 5]
    assert run([1, 2, 4, 3, 3, 5, 2], 0) == [1, 2, 4, 5]
    assert run([100, 10, 91, 90], 10) == [100, 91, 90]  # 90 = 100 - 10: the window's edge
    assert run([100, 89], 10) == [100]  # below the window


@given(
    seen=st.integers(0, (1 << 64) - 1),
    stored_width=st.integers(0, 64),
    width=st.integers(0, 128),
)
def test_stored_state_of_another_width_never_forgets_a_counter(
    seen: int, stored_width: int, width: int
) -> None:
    seen &= (1 << stored_width) - 1
    loaded = replaywindow.decode(replaywindow.encode(seen, stored_width), width)
    for bit in range(width):
        if bit >= stored_width or (seen >> bit) & 1:
            assert (loaded >> bit) & 1  # untracked or seen: refused
        else:
            assert not (loaded >> bit) & 1
    assert replaywindow.decode(None, width) == (1 << width) - 1  # from a strict daemon
