"""systemd/dlmsd.service: systemd itself accepts the unit and rates its hardening.

`systemd-analyze verify` parses the unit as systemd would load it (unknown
keys, bad values, missing binaries); `systemd-analyze security --offline`
scores its sandboxing (0 = locked down, 10 = exposed). The ExecStart binary is
pointed at this venv's dlmsd, since /opt/dlmsd does not exist here (the
installed unit is verified in test_install.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "dlmsd.service"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def local_unit(directory: Path, text: str | None = None) -> Path:
    command = Path(sys.executable).with_name("dlmsd")
    unit = directory / "dlmsd.service"
    unit.write_text((text or UNIT.read_text()).replace("/opt/dlmsd/.venv/bin/dlmsd", str(command)))
    return unit


def analyze(*arguments: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def test_systemd_loads_the_unit_without_complaint(tmp_path: Path) -> None:
    result = analyze("verify", str(local_unit(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "dlmsd.service" not in result.stderr, result.stderr


def test_a_broken_unit_is_caught(tmp_path: Path) -> None:
    # systemd ignores a bad setting with a warning (exit status 0), so the check above
    # looks at the warnings: a misspelt value must show up there.
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strickt")
    result = analyze("verify", str(local_unit(tmp_path, broken)))
    assert "dlmsd.service:" in result.stderr and "strickt" in result.stderr


def test_the_unit_is_sandboxed(tmp_path: Path) -> None:
    result = analyze("security", "--offline=true", str(local_unit(tmp_path)))
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for dlmsd\.service: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout[-500:]
    assert float(found.group(1)) <= 2.0


def test_the_command_line_is_one_dlmsd_run_accepts() -> None:
    exec_start = next(
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    arguments = exec_start.split()[1:]
    assert arguments == ["run", "--config", "/etc/dlmsd/dlmsd.toml"]
    result = subprocess.run(
        [sys.executable, "-m", "dlmsd.cli", *arguments[:1], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
