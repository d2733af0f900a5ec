"""``ingest_cpu``: the daemon's CPU per accepted push at a given paced rate, next to a bare
counting ``DatagramProtocol`` fed by the same paced sender.

The closed-loop rows of ``ingest_udp`` say what one core of the daemon can take; this
one says what a push costs at the rates meters really send: 12,000 pushes/s (a big
head-end) and 1,000 pushes/s (where every batch is small and fixed costs per commit,
per fsync and per reactor wake-up are shared by few pushes). The daemon runs its
defaults: SQLite ``synchronous = full``, the JSONL sink with ``fsync = batch``.

Per receiver: wait until it is idle, sample its CPU time and tally, send
RATE x SECONDS frames paced over SECONDS (bursts every ~1 ms), wait until it has
handled them all (and, for the daemon, committed them), sample again. CPU per push
= CPU seconds / pushes taken. Idle work between (timers) is in the figure, as it is
in production.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import attrs

from bench.ingest import (
    UDP_METERS,
    Daemon,
    Helper,
    Report,
    Tally,
    baseline_tally,
    cpu_seconds,
    sender,
    wait_idle,
)
from bench.loadgen import UdpQueueWatch
from bench.support import RowData

HIGH_RATE = 12_000.0
LOW_RATE = 1_000.0
HIGH_TARGET = 10.0  # daemon CPU per push <= 10x the bare counter's, at HIGH_RATE
LOW_TARGET = 1.5  # daemon CPU per push at LOW_RATE <= 1.5x its own at HIGH_RATE
SETTLE_TIMEOUT = 5.0

Sampler = Callable[[], Tally]


@attrs.frozen(slots=True)
class Cost:
    """What one paced step cost a receiver."""

    rate: float  # asked for, pushes/s
    sent_rate: float  # what the sender managed
    taken: float  # pushes accepted (daemon) or counted (bare)
    cpu_seconds: float

    @property
    def us_per_push(self) -> float:
        return self.cpu_seconds / self.taken * 1e6 if self.taken else 0.0


def _wait(tally: Sampler, watch: UdpQueueWatch, at_least: float = float("inf")) -> Tally:
    # A scrape costs the daemon CPU: few of them, far apart.
    return wait_idle(tally, watch, at_least=at_least, poll=0.1, timeout=SETTLE_TIMEOUT)


def paced_cost(
    helper: Helper, tally: Sampler, pid: int, port: int, rate: float, seconds: float
) -> Cost:
    """Send one paced step through `helper` (a ``--mode steps`` sender); the receiver's
    CPU and tally around it."""
    watch = UdpQueueWatch(port)
    before = _wait(tally, watch)
    cpu_before = cpu_seconds(pid)
    helper.say(f"step {rate:.0f} {seconds}")
    words = helper.hear()
    sent, elapsed = int(words[1]), float(words[2])
    # Everything sent taken (the daemon: committed, up to commit_interval_max later).
    after = _wait(tally, watch, before.taken + sent)
    cpu = cpu_seconds(pid) - cpu_before
    return Cost(rate, sent / elapsed if elapsed else 0.0, after.taken - before.taken, cpu)


def _measure(
    tally: Sampler, pid: int, port: int, steps: list[tuple[float, float]], cycle: bool
) -> list[Cost]:
    frames = int(sum(rate * seconds for rate, seconds in steps)) + 1000
    extra = ("--mode", "steps", "--cycle") if cycle else ("--mode", "steps")
    helper = sender("udp", port, UDP_METERS, frames, *extra)
    helper.say("go")
    try:
        return [paced_cost(helper, tally, pid, port, r, s) for r, s in steps]
    finally:
        helper.say("end")
        helper.process.wait(30)


ROUNDS = 3


def _median_cost(costs: list[Cost]) -> Cost:
    """The round with the median CPU per push (rounds alternate the rates, so a noisy
    moment on the shared machine hits one round, not the figure)."""
    ordered = sorted(costs, key=lambda cost: cost.us_per_push)
    return ordered[len(ordered) // 2]


def _per_rate(costs: list[Cost]) -> tuple[Cost, Cost]:
    high = [cost for cost in costs if cost.rate == HIGH_RATE]
    low = [cost for cost in costs if cost.rate == LOW_RATE]
    return _median_cost(high), _median_cost(low)


def _daemon_costs(steps: list[tuple[float, float]], udp_options: str = "") -> list[Cost]:
    with (
        tempfile.TemporaryDirectory(prefix="dlmsd-bench-") as scratch,
        Daemon(Path(scratch), UDP_METERS, udp_options=udp_options) as daemon,
    ):
        assert daemon.process is not None
        # Untimed: the first push of each meter builds its cipher and record fields.
        warm = (HIGH_RATE, UDP_METERS / HIGH_RATE + 0.2)
        return _measure(daemon.tally, daemon.process.pid, daemon.udp_port, [warm, *steps], False)[
            1:
        ]


def run_cpu(duration: float) -> Report:
    """Daemon and bare counter: ROUNDS rounds of HIGH_RATE then LOW_RATE, same paced
    sender; per rate the median round. Then the daemon with ``batch_reads = false``
    at LOW_RATE: what reading the slow pushes in bursts saves."""
    high = max(duration * 0.75, 1.5)
    low = max(duration * 1.5, 3.0)  # fewer pushes: a longer step for the same precision
    steps = [(HIGH_RATE, high), (LOW_RATE, low)] * ROUNDS
    ours = _daemon_costs(steps)
    unbatched = _daemon_costs([(LOW_RATE, low)] * ROUNDS, "batch_reads = false")
    receiver = Helper("udp-counter")
    try:
        port = int(receiver.hear()[1])
        bare = _measure(baseline_tally(receiver), receiver.process.pid, port, steps, True)
    finally:
        receiver.close()
    return Report(
        _rows(_per_rate(ours), _per_rate(bare), _median_cost(unbatched)),
        {
            "dlmsd": [attrs.asdict(c) for c in ours],
            "dlmsd_unbatched": [attrs.asdict(c) for c in unbatched],
            "bare": [attrs.asdict(c) for c in bare],
        },
    )


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _step_text(cost: Cost) -> str:
    return (
        f"{cost.us_per_push:.1f} us/push at {cost.rate:,.0f}/s "
        f"(sent {cost.sent_rate:,.0f}/s, {cost.taken:,.0f} taken, {cost.cpu_seconds:.2f} CPU s)"
    )


def _rows(ours: tuple[Cost, Cost], bare: tuple[Cost, Cost], unbatched: Cost) -> list[RowData]:
    (ours_high, ours_low), (bare_high, bare_low) = ours, bare
    defaults = (
        "SQLite synchronous=full, JSONL fsync=batch, 1,000 meters, SC 0x30 pushes; median of "
        f"{ROUNDS} rounds alternating the rates"
    )
    return [
        RowData(
            "ingest_cpu",
            f"daemon CPU per push at {HIGH_RATE:,.0f}/s",
            ours_high.us_per_push,
            "us/push",
            "bare counting DatagramProtocol, same paced sender",
            bare_high.us_per_push,
            f"{defaults}; dlmsd {_step_text(ours_high)}; bare {_step_text(bare_high)}",
        ),
        RowData(
            "ingest_cpu",
            f"daemon / bare CPU per push at {HIGH_RATE:,.0f}/s vs target",
            _ratio(ours_high.us_per_push, bare_high.us_per_push),
            "x",
            "target (at most)",
            HIGH_TARGET,
            "lower is better",
        ),
        RowData(
            "ingest_cpu",
            f"daemon CPU per push at {LOW_RATE:,.0f}/s",
            ours_low.us_per_push,
            "us/push",
            f"the daemon's own at {HIGH_RATE:,.0f}/s",
            ours_high.us_per_push,
            f"dlmsd {_step_text(ours_low)}; bare {_step_text(bare_low)} (a bare counter's "
            "cost at low rates swings between runs: not the yardstick here)",
        ),
        RowData(
            "ingest_cpu",
            f"daemon CPU per push {LOW_RATE:,.0f}/s / {HIGH_RATE:,.0f}/s vs target",
            _ratio(ours_low.us_per_push, ours_high.us_per_push),
            "x",
            "target (at most)",
            LOW_TARGET,
            "lower is better",
        ),
        RowData(
            "ingest_cpu",
            f"daemon CPU per push at {LOW_RATE:,.0f}/s: batch reads",
            ours_low.us_per_push,
            "us/push",
            "the same daemon with [listeners.udp] batch_reads = false",
            unbatched.us_per_push,
            f"without: {_step_text(unbatched)} (each push read and handled as it comes; "
            "with: read right before the commit that carries them); lower is better",
        ),
    ]
