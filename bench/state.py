"""`state_ingest`: pushes/s through the ingest with each state backend, 1 and 2 daemons.

Each "daemon" is a worker process running the real pipeline (key store,
peel, policy, replay pre-check, AES-GCM verify + decrypt, DataNotification
decode, record JSON, staging, batched commits) on pre-built encrypted pushes
of its own simulated meters, fed straight into `Ingest.handle_apdu` (no
sockets: a load generator would take a core of this 2-core machine). A run
ends when the last push is committed. Workers build their pushes first, then
start together; the rate is all pushes / the slowest worker's time.

Backends, durability alike: SQLite (``synchronous = full``), PostgreSQL
(``fsync``, ``synchronous_commit`` on) started by `tests.state.pgserver` in a
temporary directory, sharing the machine's two cores with the workers.

    python -m bench --only state_ingest
    python -m bench.state worker --dsn DSN --first 0 --meters 50 --count 40000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.support import ROOT

METERS_PER_WORKER = 50


# --- the worker (one daemon's ingest) -----------------------------------------------------


def run_worker(dsn: str, first: int, meters: int, count: int, instance: str) -> dict[str, Any]:
    """Build `count` pushes, wait for "go" on stdin, ingest them; returns the timing."""
    from twisted.internet import defer, task
    from twisted.internet import reactor as default_reactor

    from dlmsd.service.ingest import Ingest
    from dlmsd.service.keystore import KeyStore
    from dlmsd.service.metrics import Metrics
    from dlmsd.service.quarantine import Quarantine
    from dlmsd.service.simulator import build_push, make_meter, write_key_file
    from dlmsd.service.statebackend import is_postgresql, sqlite_path

    reactor: Any = default_reactor
    work = Path(tempfile.mkdtemp(prefix="dlmsd-bench-"))
    fleet = [make_meter(first + index, seed=11) for index in range(meters)]
    write_key_file(work / "keys.toml", fleet)
    keystore = KeyStore.load([work / "keys.toml"])
    now = datetime.now(UTC)
    apdus = [
        build_push(meter, counter, now)
        for counter in range(1, count // meters + 1)
        for meter in fleet
    ]
    if is_postgresql(dsn):
        from dlmsd.service.pgstate import PgStateBackend

        state: Any = PgStateBackend.open(dsn, ["bench"], instance=instance)
    else:
        from dlmsd.service.state import StateStore

        state = StateStore(sqlite_path(dsn), ["bench"], synchronous="full")
    state.start(reactor)
    metrics = Metrics()
    ingest = Ingest(
        keystore=keystore,
        state=state,
        metrics=metrics,
        quarantine=Quarantine(work / "quarantine", 1 << 20),
        reactor=reactor,
    )
    print("ready", flush=True)
    sys.stdin.readline()
    result: dict[str, Any] = {}

    async def feed() -> None:
        started = time.perf_counter()
        for start in range(0, len(apdus), 1000):
            for apdu in apdus[start : start + 1000]:
                ingest.handle_apdu(apdu, "bench:1", "udp")
            # Let commits finish and start between chunks, as the reactor would.
            await task.deferLater(reactor, 0, lambda: None)
        while ingest.staged or metrics.value("dlmsd_pushes_accepted_total") < len(apdus):
            await ingest.flush()
            if metrics.value("dlmsd_pushes_accepted_total") < len(apdus):
                await task.deferLater(reactor, 0.001, lambda: None)
            if time.perf_counter() - started > 120:
                break
        elapsed = time.perf_counter() - started
        result.update(
            pushes=len(apdus),
            accepted=metrics.value("dlmsd_pushes_accepted_total"),
            seconds=elapsed,
            rate=len(apdus) / elapsed,
        )
        await state.shutdown()

    def done(outcome: object) -> None:
        if not result:
            result["error"] = str(outcome)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(feed()).addBoth(done))
    reactor.run()
    shutil.rmtree(work, ignore_errors=True)
    return result


# --- the benchmark ------------------------------------------------------------------------


def _harness() -> Any:
    """The running harness (``python -m bench`` runs bench/__main__.py as ``__main__``)."""
    running = sys.modules.get("__main__")
    if running is not None and hasattr(running, "BENCHMARKS"):
        return running
    import bench.__main__ as harness

    return harness


def measure(dsn: str, workers: int, count: int) -> Any:
    """`workers` processes on one state store, started together; all pushes / slowest time."""
    Outcome = _harness().Outcome
    name = f"{'postgresql' if dsn.startswith('postgresql') else 'sqlite'}, {workers} daemon(s)"
    processes = []
    for index in range(workers):
        command = [sys.executable, "-m", "bench.state", "worker", "--dsn", dsn]
        command += ["--first", str(index * METERS_PER_WORKER), "--meters", str(METERS_PER_WORKER)]
        command += ["--count", str(count), "--instance", f"bench-{index}"]
        processes.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                return Outcome(name, "", "failed: worker did not start")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            out, _ = process.communicate(timeout=300)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    if any("error" in r or r["accepted"] != r["pushes"] for r in results):
        return Outcome(name, "", f"failed: {results}")
    total = sum(r["pushes"] for r in results)
    slowest = max(r["seconds"] for r in results)
    return Outcome(name, "", "ok", rate=total / slowest, samples=(total / slowest,))


def state_ingest(settings: Any) -> Any:
    """The `state_ingest` rows: PostgreSQL 1 and 2 daemons next to SQLite, same run."""
    harness = _harness()
    Outcome, Row, BenchmarkResult = harness.Outcome, harness.Row, harness.BenchmarkResult
    count = max(5_000, int(15_000 * settings.duration))
    sqlite_dir = Path(tempfile.mkdtemp(prefix="dlmsd-bench-sqlite-"))
    sqlite = measure(f"sqlite://{sqlite_dir}/state.sqlite3", 1, count)
    shutil.rmtree(sqlite_dir, ignore_errors=True)
    try:
        from tests.state.pgserver import PgServer

        server = PgServer(fsync=True)
        server.start()
    except Exception as error:
        missing = Outcome("postgresql", "", f"n/a (no PostgreSQL: {error})")
        return BenchmarkResult(
            [Row("state_ingest", "postgresql vs sqlite", None, "pushes/s", "sqlite", sqlite.rate)],
            [sqlite, missing],
        )
    try:
        one = measure(server.create_database(), 1, count)
        two = measure(server.create_database(), 2, count)
    finally:
        server.destroy()
    scaling = two.rate / one.rate if one.rate and two.rate else None
    name = "state_ingest"
    rows = [
        Row(name, "postgresql 1 daemon vs sqlite", one.rate, "pushes/s", "sqlite 1", sqlite.rate),
        Row(
            name,
            "postgresql 2 daemons vs 1 (scaling)",
            two.rate,
            "pushes/s",
            "postgresql 1",
            one.rate,
        ),
        Row(name, "postgresql 2 daemons vs sqlite", two.rate, "pushes/s", "sqlite 1", sqlite.rate),
    ]
    return BenchmarkResult(
        rows,
        [sqlite, one, two],
        {
            "pushes_per_daemon": count,
            "meters_per_daemon": METERS_PER_WORKER,
            "scaling_2_over_1": None if scaling is None else round(scaling, 3),
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="one daemon's ingest (used by the benchmark)")
    worker.add_argument("--dsn", required=True)
    worker.add_argument("--first", type=int, default=0)
    worker.add_argument("--meters", type=int, default=METERS_PER_WORKER)
    worker.add_argument("--count", type=int, default=20_000)
    worker.add_argument("--instance", default="bench")
    args = parser.parse_args(argv)
    result = run_worker(args.dsn, args.first, args.meters, args.count, args.instance)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
