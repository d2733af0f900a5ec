"""The fuzz harnesses on a short budget, so `make test` exercises every one of them.

Each harness's `test_one_input` runs on its seeds (the published vectors of
tests/data/published.json that fit it, cited by source in the harness) and on
a few hundred hypothesis inputs (arbitrary bytes and mutated seeds). Where
atheris is installed (the `fuzz` extra), every harness also runs under
libFuzzer for a few thousand coverage-guided executions through the runner.
`make fuzz` runs the full budget (1,000,000 executions each).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.__main__ import HARNESSES
from fuzz.common import fuzz_strategy, published

REPO = Path(__file__).resolve().parents[2]
NAMES = sorted(HARNESSES)


def harness(name: str) -> ModuleType:
    return importlib.import_module(HARNESSES[name][0])


@pytest.mark.parametrize("name", NAMES)
def test_seeds_pass_the_harness(name: str) -> None:
    module = harness(name)
    seeds = module.seeds()
    assert seeds, f"{name} has no seeds"
    for seed in seeds:
        module.test_one_input(seed)


def test_seeds_come_from_the_published_vectors() -> None:
    # Every published vector with bytes seeds at least one harness (wrapper,
    # HDLC, A-XDR, APDU or ciphered), so the fuzzers start from real frames.
    seeded = b"".join(seed for name in NAMES for seed in harness(name).seeds())
    missing = [
        vector["source"]
        for vector in published()
        if vector["kind"].startswith(("udp_wrapper", "hdlc_frame", "get_", "aarq"))
        and bytes.fromhex(vector["hex"]) not in seeded
    ]
    assert not missing, missing


@pytest.mark.parametrize("name", NAMES)
def test_hypothesis_inputs_raise_only_the_documented_errors(name: str) -> None:
    module = harness(name)
    max_len = HARNESSES[name][1]

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(fuzz_strategy(module.seeds(), max_len))
    def run(data: bytes) -> None:
        module.test_one_input(data)

    run()


@given(st.binary(max_size=64))
@settings(max_examples=200, deadline=None, database=None)
def test_short_arbitrary_bytes_in_every_harness(data: bytes) -> None:
    for name in NAMES:
        harness(name).test_one_input(data)


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris not installed (pip install -e '.[fuzz]'); the hypothesis tests stand in",
)
def test_every_harness_survives_a_short_atheris_run(tmp_path: Path) -> None:
    output = tmp_path / "fuzz.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            "--execs",
            "3000",
            "--budget",
            "30",
            "--jobs",
            "2",
            "--corpus",
            str(tmp_path / "corpus"),
            "--output",
            str(output),
            "--artifacts",
            str(tmp_path / "artifacts"),
        ],
        cwd=REPO,
        capture_output=True,
        timeout=300,
        check=False,
    )
    report = completed.stdout.decode() + completed.stderr.decode()
    assert completed.returncode == 0, report
    results = json.loads(output.read_text())["harnesses"]
    assert sorted(r["name"] for r in results) == NAMES
    for result in results:
        assert result["result"] == "ok", report
        assert result["executions"] >= 3000 or result["seconds"] >= 30, report
