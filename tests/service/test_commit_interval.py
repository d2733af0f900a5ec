"""The commit interval adapts: it grows while commits are small (few pushes come), up
to `commit_interval_max`, and shrinks again when commits are big.

Real SQLite state; the reactor's clock is Twisted's deterministic `Clock`, so the
waits are exact.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from dlmsd.service.config import ConfigError, parse_config
from dlmsd.service.ingest import ACCEPTED, Ingest
from dlmsd.service.keystore import KeyStore
from dlmsd.service.metrics import Metrics
from dlmsd.service.quarantine import Quarantine
from dlmsd.service.state import StateStore

TITLE = "4B464D1234567890"
# Source: toreamun/amshan tests/test_aidon.py no_list_1 (LLC header dropped): a plaintext
# DataNotification, one register {OBIS, value, {scaler, unit}}.
PUSH = bytes.fromhex("0f40000000000101020309060100010700ff060000011802020f00161b")


def make_ingest(tmp_path: Path, clock: Clock, maximum: float | None) -> Ingest:
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[meters.{TITLE}]\nsecurity = ["none"]\n')
    keys.chmod(0o600)
    return Ingest(
        keystore=KeyStore.load([keys]),
        state=StateStore(tmp_path / "state.db", ["jsonl"], synchronous="off"),
        metrics=Metrics(),
        quarantine=Quarantine(tmp_path / "q"),
        reactor=clock,
        commit_interval=0.002,
        commit_interval_max=maximum,
    )


def push(ingest: Ingest) -> None:
    outcome = ingest.handle(PUSH, "/dev/ttyUSB0", "hdlc_serial", bytes.fromhex(TITLE))
    assert outcome is ACCEPTED


def wait_for_commit(ingest: Ingest, clock: Clock) -> float:
    """How long the staged pushes wait for their commit (then let it run)."""
    (call,) = clock.getDelayedCalls()
    wait = call.getTime() - clock.seconds()
    clock.advance(wait)
    assert ingest.staged == 0
    return round(wait, 6)


def test_a_slow_meter_gets_longer_intervals_up_to_the_maximum(tmp_path: Path) -> None:
    clock = Clock()
    ingest = make_ingest(tmp_path, clock, 0.05)
    waits = []
    for _ in range(8):
        push(ingest)
        waits.append(wait_for_commit(ingest, clock))
    # One push per commit: each commit doubles the next wait, never past 50 ms.
    assert waits == [0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05, 0.05]
    assert ingest.metrics.value("dlmsd_pushes_accepted_total") == 8


def test_big_commits_bring_the_interval_back_down(tmp_path: Path) -> None:
    clock = Clock()
    ingest = make_ingest(tmp_path, clock, 0.05)
    for _ in range(6):
        push(ingest)
        wait_for_commit(ingest, clock)
    assert ingest.commit_interval == 0.05
    waits = []
    for _ in range(6):
        for _ in range(100):  # a burst: more than 64 pushes per commit
            push(ingest)
        waits.append(wait_for_commit(ingest, clock))
    assert waits == [0.05, 0.025, 0.0125, 0.00625, 0.003125, 0.002]
    assert ingest.commit_interval == 0.002  # never below commit_interval


def test_without_a_maximum_the_interval_stays(tmp_path: Path) -> None:
    clock = Clock()
    ingest = make_ingest(tmp_path, clock, None)
    for _ in range(4):
        push(ingest)
        assert wait_for_commit(ingest, clock) == 0.002


def config(state: str) -> Any:
    text = (
        '[[listeners.udp]]\nport = 4059\n[keys]\nfiles = ["/etc/dlmsd/keys.toml"]\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "x.jsonl"\n[state]\n{state}\n'
    )
    return parse_config(tomllib.loads(text))


def test_the_option_is_validated() -> None:
    assert config("commit_interval = 0.004").state.commit_interval_max == 0.05
    # The default never undercuts the base interval.
    assert config("commit_interval = 0.2").state.commit_interval_max == 0.2
    with pytest.raises(ConfigError, match=r"state\.commit_interval_max: must be at least"):
        config("commit_interval = 0.01\ncommit_interval_max = 0.005")
    with pytest.raises(ConfigError, match=r"state\.commit_interval_max"):
        config("commit_interval_max = -1")
