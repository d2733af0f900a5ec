"""The meter emulator as a subprocess (`dlmsd emulate --port 0`), for the blocking clients.

The blocking clients block the thread they run in, so the emulator cannot share
the test's reactor: it runs in its own process and prints the port (and pty
path) it serves on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent.parent
EK = "000102030405060708090A0B0C0D0E0F"
AK = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
KEYS = ["--ek", EK, "--ak", AK]


class EmulatorProcess:
    """A running `dlmsd emulate` and what it printed about itself."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dlmsd.cli", "emulate", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            _, error = self.process.communicate(timeout=5)
            raise RuntimeError(f"emulator did not start: {error.decode()}")
        self.info: dict[str, Any] = json.loads(line)

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def pty(self) -> str:
        return str(self.info["pty"])

    @property
    def udp_port(self) -> int:
        return int(self.info["udp_port"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def emulator() -> Iterator[Callable[..., EmulatorProcess]]:
    """Start emulators with the given command-line options; all stopped after the test."""
    started: list[EmulatorProcess] = []

    def start(*args: str) -> EmulatorProcess:
        process = EmulatorProcess(list(args))
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
