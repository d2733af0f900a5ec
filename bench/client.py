"""Client read benchmark: a year of hourly gas profile from the emulator, GBT vs GET blocks.

The emulator runs in a subprocess (``dlmsd emulate --port 0 --gbt``, which
prints its port as JSON) so it does not share a core's GIL with the client;
the blocking client reads all 8,760 rows of 7-0:99.1.0 over loopback TCP,
once with general block transfer and once with GET-with-datablock. Each way
is read a few times (bounded by the duration) and the best time is kept.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from typing import Any

from bench.support import ROOT, subprocess_env

HOURS = 8760
PROFILE = "7-0:99.1.0*255"
_START_TIMEOUT = 20.0
_MAX_ROUNDS = 3


def description() -> str:
    return (
        f"read {HOURS:,} hourly gas profile rows from the emulator over loopback TCP "
        "(blocking client): general block transfer vs GET block transfer, seconds"
    )


def _start_emulator() -> tuple[subprocess.Popen[bytes], int]:
    command = [sys.executable, "-m", "dlmsd.cli", "emulate", "--port", "0", "--gbt"]
    command += ["--gbt-window", "8", "--hours", str(HOURS)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=subprocess_env()
    )
    assert process.stdout is not None
    # The emulator prints one line once it listens; never wait for it unbounded.
    ready, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT)
    line = process.stdout.readline() if ready else b""
    if not line:
        process.kill()
        _, error = process.communicate(timeout=5)
        raise RuntimeError(f"emulator did not start: {error.decode(errors='replace')[-300:]}")
    return process, int(json.loads(line)["port"])


def _read_once(port: int, use_gbt: bool) -> tuple[float, int]:
    from dlmsd.client.blocking import TcpClient
    from dlmsd.protocol.association import ClientSettings

    settings = ClientSettings(use_gbt=use_gbt, gbt_window=8)
    client = TcpClient("127.0.0.1", port, settings, timeout=30.0, retries=0)
    started = time.perf_counter()
    with client.session() as session:
        rows = session.read_profile(PROFILE)
    return time.perf_counter() - started, len(rows)


def bench_profile_read(duration: float) -> list[dict[str, Any]]:
    """Rows for the table (fields of ``bench.__main__.Row``)."""
    try:
        process, port = _start_emulator()
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        return [_row(None, None, f"emulator failed: {error}")]
    try:
        best: dict[bool, float] = {}
        counts: dict[bool, int] = {}
        budget = time.perf_counter() + max(duration, 1.0) * 2
        for round_number in range(_MAX_ROUNDS):
            for use_gbt in (True, False):
                seconds, count = _read_once(port, use_gbt)
                best[use_gbt] = min(seconds, best.get(use_gbt, seconds))
                counts[use_gbt] = count
            if round_number and time.perf_counter() > budget:
                break
    except Exception as error:  # a failed read is a row with its reason, not a crash
        return [_row(None, None, f"read failed: {type(error).__name__}: {error}")]
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    wrong = [use for use, count in counts.items() if count != HOURS]
    notes = f"best of up to {_MAX_ROUNDS} reads each; GBT window 8; emulator in a subprocess"
    if wrong:
        notes += f"; WRONG row count: {counts}"
    return [_row(best.get(True), best.get(False), notes)]


def _row(gbt: float | None, blocks: float | None, notes: str) -> dict[str, Any]:
    return {
        "benchmark": "client_profile_read",
        "name": f"{HOURS} rows, GBT (ratio < 1: GBT faster)",
        "figure": gbt,
        "unit": "s",
        "baseline": "GET block transfer",
        "baseline_figure": blocks,
        "notes": notes,
    }
