"""What the subprocess benchmarks share: the repository root, the daemon's command line,
free loopback ports, stopping a child process, and the plain table row.

Used by bench/ingest.py, bench/sinks.py, bench/state.py and bench/client.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen(slots=True)
class RowData:
    """One table row, as bench/__main__.py's `Row` takes it."""

    benchmark: str
    name: str
    figure: float | None
    unit: str
    baseline: str
    baseline_figure: float | None
    notes: str = ""


def subprocess_env() -> dict[str, str]:
    """This environment with the repository on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)  # twistd finds twisted/plugins/dlmsd_plugin.py
    return env


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def twistd_command(config: Path) -> list[str]:
    """``twistd -n dlmsd --config CONFIG`` with this interpreter, no pid file."""
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "dlmsd",
        "--config",
        str(config),
    ]


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM a running child, and kill it if it has not exited after ``timeout`` s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
