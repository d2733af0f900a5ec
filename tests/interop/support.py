"""Shared plumbing of the interop tests: `dlmsd emulate` as a subprocess, the dlmsd
CLI run in-process with its JSON output parsed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dlmsd.cli import main as dlmsd_main

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[dict[str, Any]]:
    """``dlmsd emulate --port 0 ARGS`` on loopback; yields its start line (port, ...)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "dlmsd.cli", "emulate", "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"dlmsd emulate did not start (exit {process.wait()})")
        yield json.loads(line)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def dlmsd_json(*argv: str) -> Any:
    """Run the dlmsd CLI in this process; its stdout parsed as JSON (exit 0 required)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = dlmsd_main(list(argv))
    assert code == 0, (argv, out.getvalue())
    return json.loads(out.getvalue())


def meter_args(port: int, framing: str, extra: Sequence[str] = ()) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--transport", framing, *extra]
