"""What every harness shares: seeds, the error contract, the time cap and the entry point.

A harness module defines ``NAME``, ``test_one_input(data)`` and ``seeds()``,
imports the code under test inside ``with instrumented():`` and ends with
``if __name__ == "__main__": main(test_one_input, seeds)``. The same
``test_one_input`` runs under atheris (``python -m fuzz.fuzz_x``), under the
runner (``python -m fuzz``) and under hypothesis in ``tests/fuzz``.

This module imports nothing of dlmsd: atheris only instruments modules first
imported inside ``instrumented()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VECTORS_PATH = ROOT / "tests" / "data" / "published.json"

INSTRUMENT_ENV = "DLMSD_FUZZ_INSTRUMENT"  # "1": instrument dlmsd for coverage (the runner)
TIME_CAP_ENV = "DLMSD_FUZZ_TIME_CAP"  # seconds one input may take before it counts as a hang
DEFAULT_TIME_CAP = 2.0
# libFuzzer's own watchdog, for inputs that never return at all (the time cap
# only sees inputs that finish).
HARD_TIMEOUT = 30

# What one input may cost, in proportion to its size: a floor plus so much per byte.
# The crash-only contract let a 4 KB input through that took 14 s and 1.19 GB (a
# compact array of null-data members, issue 13). The limits leave room for what the
# decoders' own bounds allow (A-XDR: 8 values per input byte, ~25 us per value through
# a harness), several times over, so a loaded machine does not trip them.
TIME_FLOOR = 0.5  # seconds
TIME_PER_BYTE = 500e-6  # seconds per input byte
MEMORY_FLOOR = 32 << 20  # bytes of peak RSS rise
MEMORY_PER_BYTE = 8 << 10  # bytes of peak RSS rise per input byte
COST_SCALE_ENV = "DLMSD_FUZZ_COST_SCALE"  # multiplies the cost limits; 0 turns them off
# "1": measure memory with tracemalloc (exact per input, slower) instead of the peak RSS.
TRACE_MEMORY_ENV = "DLMSD_FUZZ_TRACE_MEMORY"

TestOneInput = Callable[[bytes], None]


class CostlyInput(Exception):
    """One input cost more time or memory than its size allows: amplification, a
    super-linear path, or a hang in the making."""


class SlowInput(CostlyInput):
    """One input took longer than the time cap (or than its size allows)."""


@cache
def published() -> tuple[dict[str, Any], ...]:
    """The published vectors (tests/data/published.json)."""
    with VECTORS_PATH.open(encoding="utf-8") as handle:
        return tuple(json.load(handle))


def vector_bytes(*prefixes: str) -> list[bytes]:
    """The bytes of every published vector whose kind starts with one of `prefixes`
    (all vectors when none is given)."""
    return [
        bytes.fromhex(vector["hex"])
        for vector in published()
        if vector.get("hex") and (not prefixes or vector["kind"].startswith(prefixes))
    ]


def instrumented() -> contextlib.AbstractContextManager[object]:
    """Instrument dlmsd's bytecode for atheris when the runner asks for it, else nothing."""
    if os.environ.get(INSTRUMENT_ENV) != "1":
        return contextlib.nullcontext()
    try:
        import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return contextlib.nullcontext()
    context: contextlib.AbstractContextManager[object] = atheris.instrument_imports(
        include=["dlmsd"]
    )
    return context


def time_cap() -> float:
    return float(os.environ.get(TIME_CAP_ENV, DEFAULT_TIME_CAP))


def cost_scale() -> float:
    return float(os.environ.get(COST_SCALE_ENV, "1"))


def peak_rss() -> int:
    """The process's peak resident set so far, in bytes (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def guarded(check: TestOneInput, allowed: tuple[type[BaseException], ...]) -> TestOneInput:
    """`check` with the contract applied: exceptions of `allowed` are the decoder's
    answer to bad input; anything else escapes (a crash), and so does `CostlyInput`
    when one input costs more than its size allows.

    Cost: wall time (at most the time cap, and at most ``TIME_FLOOR + TIME_PER_BYTE``
    per byte) and the rise of the process's peak RSS while the input ran (at most
    ``MEMORY_FLOOR + MEMORY_PER_BYTE`` per byte). The peak RSS costs one getrusage
    call; it charges an input only for memory beyond every earlier peak (and a
    process starts with its parent's peak: the runner starts each harness from a
    small process), so it catches the input that first takes the process far above
    its usual size. ``DLMSD_FUZZ_TRACE_MEMORY=1`` charges each input the peak of
    its own Python allocations instead (tracemalloc: exact, several times slower).
    """
    cap = time_cap()
    scale = cost_scale()
    trace = os.environ.get(TRACE_MEMORY_ENV) == "1"
    if trace and not tracemalloc.is_tracing():
        tracemalloc.start()

    def memory_mark() -> int:
        if trace:
            tracemalloc.reset_peak()
            return tracemalloc.get_traced_memory()[0]
        return peak_rss()

    def memory_peak() -> int:
        return tracemalloc.get_traced_memory()[1] if trace else peak_rss()

    def test_one_input(data: bytes) -> None:
        size = len(data)
        peak_before = memory_mark()
        started = time.perf_counter()
        with contextlib.suppress(*allowed):
            check(data)
        elapsed = time.perf_counter() - started
        if elapsed > cap:
            raise SlowInput(f"{size}-byte input took {elapsed:.2f}s (cap {cap}s)")
        if not scale:
            return
        most_time = scale * (TIME_FLOOR + TIME_PER_BYTE * size)
        if elapsed > most_time:
            raise SlowInput(
                f"{size}-byte input took {elapsed:.2f}s, more than its size allows"
                f" ({most_time:.2f}s)"
            )
        rise = memory_peak() - peak_before
        most_memory = scale * (MEMORY_FLOOR + MEMORY_PER_BYTE * size)
        if rise > most_memory:
            what = "its allocations peaked at" if trace else "raised the peak RSS by"
            raise CostlyInput(
                f"{size}-byte input {what} {rise >> 20} MiB, more than its size allows"
                f" ({int(most_memory) >> 20} MiB)"
            )

    return test_one_input


def drain(next_event: Callable[[], object], stop: object, bound: int) -> list[object]:
    """Events of a stream decoder until `stop`; more than `bound` of them is a loop."""
    events: list[object] = []
    while True:
        event = next_event()
        if event is stop:
            return events
        events.append(event)
        if len(events) > bound:
            raise AssertionError(f"stream decoder returned more than {bound} events: a loop")


def chunks(data: bytes, size: int, max_pieces: int = 32) -> Iterator[bytes]:
    """`data` in pieces of `size` bytes (the last may be shorter), at most `max_pieces`
    of them: one-byte reads of a long input cost much and find nothing new."""
    size = max(size, 1, -(-len(data) // max_pieces))
    for start in range(0, len(data), size):
        yield data[start : start + size]


def stream_frames(
    decoder: Any, stream: bytes, read_size: int, frame_type: type, notice_type: type
) -> list[Any]:
    """The frames a stream decoder (HDLC or M-Bus) finds in `stream` fed `read_size`
    bytes at a time; every other event must be a notice that skipped something."""
    # The harness imported it already, under instrumentation.
    from dlmsd.protocol.events import NEED_DATA

    frames: list[Any] = []
    for piece in chunks(stream, read_size):
        decoder.receive_data(piece)
        for event in drain(decoder.next_event, NEED_DATA, len(stream) + 2):
            if isinstance(event, frame_type):
                frames.append(event)
            else:
                assert isinstance(event, notice_type), f"unexpected event {event!r}"
                assert event.skipped_bytes > 0, "a FrameError that skipped nothing"
    return frames


# --- running one harness ------------------------------------------------------------------


def write_corpus(directory: Path, seeds: Iterable[bytes]) -> int:
    """Write each seed as a file of `directory`; returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for index, seed in enumerate(seeds):
        (directory / f"seed-{index:04d}").write_bytes(seed)
        count += 1
    return count


def main(test_one_input: TestOneInput, seeds: Callable[[], Sequence[bytes]]) -> None:
    """Fuzz `test_one_input` with atheris, libFuzzer flags from the command line.

    Without a corpus directory among the arguments, a temporary one is seeded
    with `seeds()`. Without atheris, a hypothesis run of ``-runs=N`` examples
    stands in (no coverage guidance) and prints libFuzzer's closing line.
    """
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="dlmsd-fuzz-"))
        write_corpus(corpus, seeds())
        argv.append(str(corpus))
    if not any(arg.startswith("-timeout=") for arg in argv):
        argv.append(f"-timeout={HARD_TIMEOUT}")
    try:
        import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        _hypothesis_fallback(test_one_input, seeds, argv)
        return
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def _flag(argv: Sequence[str], name: str, default: int) -> int:
    for arg in argv:
        if arg.startswith(f"-{name}="):
            return int(arg.split("=", 1)[1])
    return default


def _hypothesis_fallback(
    test_one_input: TestOneInput, seeds: Callable[[], Sequence[bytes]], argv: Sequence[str]
) -> None:
    from hypothesis import HealthCheck, given, settings

    runs = _flag(argv, "runs", 10_000)
    max_len = _flag(argv, "max_len", 4096)
    strategy = fuzz_strategy(seeds(), max_len)
    count = [0]

    @settings(
        max_examples=runs,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(data: bytes) -> None:
        count[0] += 1
        test_one_input(data)

    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started
    print(f"INFO: atheris not installed; hypothesis ran {count[0]} inputs")
    print(f"Done {count[0]} runs in {int(elapsed)} second(s)", flush=True)


def fuzz_strategy(seeds: Sequence[bytes], max_len: int = 4096) -> Any:
    """Hypothesis bytes: arbitrary, plus the seeds with a few bytes overwritten,
    inserted or cut (so examples reach past the first checks)."""
    from hypothesis import strategies as st

    arbitrary = st.binary(max_size=max_len)
    if not seeds:
        return arbitrary

    @st.composite
    def mutated(draw: Any) -> bytes:
        data = bytearray(draw(st.sampled_from(list(seeds))))
        for _ in range(draw(st.integers(0, 4))):
            position = draw(st.integers(0, len(data)))
            action = draw(st.sampled_from(("set", "insert", "cut")))
            if action == "set" and position < len(data):
                data[position] = draw(st.integers(0, 255))
            elif action == "insert":
                data[position:position] = draw(st.binary(min_size=1, max_size=8))
            else:
                del data[position : position + draw(st.integers(1, 8))]
        return bytes(data[:max_len])

    return st.one_of(arbitrary, mutated())
