"""`python -m fuzz`: run every harness for a bounded number of executions, print a table.

Each harness runs in its own subprocess (atheris + libFuzzer, dlmsd's
bytecode instrumented for coverage), seeded from tests/data/published.json,
until it has done ``--execs`` executions or spent ``--budget`` seconds. A
crash (an exception other than the decoder's documented error, a failed
check, an input slower than the time cap, or a libFuzzer timeout) stops that
harness; the input is saved under ``fuzz/artifacts/`` and its hex printed.
Results also go to ``fuzz/results/latest.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import attrs

from fuzz.common import HARD_TIMEOUT, INSTRUMENT_ENV, ROOT, TIME_CAP_ENV, write_corpus

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
RESULTS = HERE / "results" / "latest.json"

# name -> (module, max input length)
HARNESSES: dict[str, tuple[str, int]] = {
    "wrapper": ("fuzz.fuzz_wrapper", 2048),
    "hdlc": ("fuzz.fuzz_hdlc", 1024),
    "gbt_hdlc": ("fuzz.fuzz_gbt_hdlc", 2048),
    "mbus": ("fuzz.fuzz_mbus", 1024),
    "axdr": ("fuzz.fuzz_axdr", 1024),
    "apdu": ("fuzz.fuzz_apdu", 1024),
    "ciphered": ("fuzz.fuzz_ciphered", 1024),
    "config": ("fuzz.fuzz_config", 4096),
    "keystore": ("fuzz.fuzz_keystore", 2048),
}

_EXECUTED = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(rb"Done (\d+) runs in")
_ARTIFACT = re.compile(rb"Test unit written to (\S+)")


@attrs.frozen(slots=True)
class HarnessResult:
    """What one harness run did."""

    name: str
    decoders: str
    executions: int
    seconds: float
    crashes: int
    result: str  # "ok", "crash: ...", "timeout", "error (exit N)"
    artifact: str | None = None
    input_hex: str | None = None

    @property
    def rate(self) -> float:
        return self.executions / self.seconds if self.seconds > 0 else 0.0


def run_harness(
    name: str,
    execs: int,
    budget: float,
    corpus_root: Path,
    time_cap: float,
    artifacts: Path = ARTIFACTS,
) -> HarnessResult:
    """Run one harness in a subprocess until `execs` executions or `budget` seconds."""
    module, max_len = HARNESSES[name]
    corpus = corpus_root / name
    seeds = cast(Callable[[], Sequence[bytes]], _load_module_attr(module, "seeds"))
    if not corpus.exists() or not any(corpus.iterdir()):
        write_corpus(corpus, seeds())
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env[INSTRUMENT_ENV] = "1"
    env[TIME_CAP_ENV] = str(time_cap)
    command = [
        sys.executable,
        "-m",
        module,
        f"-runs={execs}",
        f"-max_total_time={max(int(budget), 1)}",
        f"-max_len={max_len}",
        f"-timeout={HARD_TIMEOUT}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/{name}-",
        str(corpus),
    ]
    started = time.monotonic()
    completed = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=budget + HARD_TIMEOUT + 120,
        check=False,
    )
    seconds = time.monotonic() - started
    output = completed.stdout
    log = artifacts / f"{name}.log"
    log.write_bytes(output)
    executions = _last_int(_EXECUTED, output) or _last_int(_DONE, output) or 0
    decoders = str(_load_module_attr(module, "DECODERS"))
    if completed.returncode == 0:
        return HarnessResult(name, decoders, executions, seconds, 0, "ok")
    artifact_match = _ARTIFACT.search(output)
    artifact = artifact_match.group(1).decode() if artifact_match else None
    input_hex = Path(artifact).read_bytes().hex() if artifact and Path(artifact).exists() else None
    return HarnessResult(
        name,
        decoders,
        executions,
        seconds,
        1,
        _failure_kind(output, completed.returncode) + f" (log {log})",
        artifact,
        input_hex,
    )


def _load_module_attr(module: str, attribute: str) -> object:
    # The harness modules import dlmsd; loading them here (uninstrumented) only
    # reads their seeds and description, the fuzzing happens in the subprocess.
    import importlib

    return getattr(importlib.import_module(module), attribute)


def _last_int(pattern: re.Pattern[bytes], output: bytes) -> int | None:
    found = pattern.findall(output)
    return int(found[-1]) if found else None


def _failure_kind(output: bytes, returncode: int) -> str:
    if b"libFuzzer: timeout" in output:
        return "timeout (hang)"
    if b"out-of-memory" in output:
        return "out of memory"
    match = re.search(rb"=== Uncaught Python exception: ===\n([^\n]*)", output)
    if match:
        return "crash: " + match.group(1).decode(errors="replace")[:100]
    return f"error (exit {returncode})"


def render(results: Sequence[HarnessResult]) -> str:
    """The table: harness, executions, rate, time, crashes, result."""
    header = ("harness", "executions", "exec/s", "seconds", "crashes", "result")
    rows = [
        (
            r.name,
            f"{r.executions:,}",
            f"{r.rate:,.0f}",
            f"{r.seconds:.0f}",
            str(r.crashes),
            r.result,
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    out = [line(header), line(["-" * width for width in widths])]
    for result, row in zip(results, rows, strict=True):
        out.append(line(row))
        out.append(f"    {result.decoders}")
        if result.input_hex is not None:
            out.append(f"    crashing input ({result.artifact}): {result.input_hex[:200]}")
    return "\n".join(out)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--execs", type=int, default=1_000_000, help="executions per harness (1,000,000)"
    )
    parser.add_argument(
        "--budget", type=float, default=900.0, help="seconds per harness at most (900)"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="harnesses run at once (CPUs)"
    )
    parser.add_argument("--only", action="append", choices=sorted(HARNESSES), metavar="NAME")
    parser.add_argument(
        "--corpus", type=Path, help="keep the corpora here (default: a temporary directory)"
    )
    parser.add_argument(
        "--time-cap", type=float, default=2.0, help="seconds one input may take (2.0)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results path")
    parser.add_argument(
        "--artifacts", type=Path, default=ARTIFACTS, help="crashing inputs and logs go here"
    )
    parser.add_argument("--list", action="store_true", help="list the harnesses and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected harnesses; exit status 1 when any of them crashed."""
    arguments = parse_arguments(argv)
    names = arguments.only or list(HARNESSES)
    if arguments.list:
        for name in names:
            print(f"{name}: {_load_module_attr(HARNESSES[name][0], 'DECODERS')}")
        return 0
    with tempfile.TemporaryDirectory(prefix="dlmsd-fuzz-corpus-") as scratch:
        corpus_root = arguments.corpus or Path(scratch)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(arguments.jobs, 1)) as pool:
            futures = [
                pool.submit(
                    run_harness,
                    name,
                    arguments.execs,
                    arguments.budget,
                    corpus_root,
                    arguments.time_cap,
                    arguments.artifacts,
                )
                for name in names
            ]
            results = []
            for name, future in zip(names, futures, strict=True):
                print(f"fuzzing {name} ...", file=sys.stderr, flush=True)
                results.append(future.result())
        elapsed = time.monotonic() - started
    print(render(results), flush=True)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "elapsed_seconds": round(elapsed, 1),
        "execs_target": arguments.execs,
        "budget_seconds": arguments.budget,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "harnesses": [{**attrs.asdict(r), "rate": round(r.rate, 1)} for r in results],
    }
    arguments.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {arguments.output} ({elapsed:.0f} s)", file=sys.stderr)
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
