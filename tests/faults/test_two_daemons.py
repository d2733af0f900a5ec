"""Two daemons on one SQLite state (issue 13, section 2).

Before the lock, a second ``twistd dlmsd`` with the same ``state_dir`` (both with
``reuse_port = true``, as for one daemon per core) started without complaint; each
checked replays against counters in its own memory, and 50 fresh frames sent 4
times were accepted 92 times. Now the second refuses to start with one line that
names the first's pid and points to PostgreSQL; ``dlmsd state migrate`` (a writer)
refuses too, ``dlmsd state check`` (a reader) still works; the lock goes with the
process, however it ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.faults.support import REPO, DaemonProcess, push, record_id, send_udp, wait_for
from tests.twistd import twistd_command


def _run(command: list[str], cwd: Path) -> tuple[int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, timeout=60)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def _state_command(action: str, config: Path, cwd: Path) -> tuple[int, str]:
    return _run([sys.executable, "-m", "dlmsd.cli", "state", action, "--config", str(config)], cwd)


def _pair(tmp_path: Path) -> tuple[DaemonProcess, DaemonProcess]:
    shared = tmp_path / "shared-state"
    first_root, second_root = tmp_path / "first", tmp_path / "second"
    first_root.mkdir()
    second_root.mkdir()
    first = DaemonProcess(first_root, meters=2, state_dir=shared, tcp={"reuse_port": True})
    second = DaemonProcess(second_root, meters=2, state_dir=shared, tcp={"reuse_port": True})
    return first, second


def test_a_second_daemon_on_the_same_sqlite_state_refuses_to_start(tmp_path: Path) -> None:
    first, second = _pair(tmp_path)
    with first:
        code, output = _run(twistd_command(second.config), second.root)
        assert code != 0
        lines = [line for line in output.splitlines() if "cannot start" in line]
        assert len(lines) == 1, output
        line = lines[0]
        assert f"pid {first.pid}" in line and "PostgreSQL" in line, line
        assert "Traceback" not in output
        print(f"second daemon: {line}")

        # A state command that writes respects the lock; one that reads does not need it.
        code, output = _state_command("migrate", second.config, second.root)
        assert code == 2 and f"pid {first.pid}" in output, output
        code, output = _state_command("check", second.config, second.root)
        assert code == 0, output

        # The first daemon keeps serving.
        meter = first.meters[0]
        send_udp(first.udp_port, [push(meter, 1)])
        wait_for(lambda: record_id(meter, 1) in first.record_ids(), 10, "a push")


def test_the_lock_goes_with_the_daemon_even_after_kill_9(tmp_path: Path) -> None:
    first, second = _pair(tmp_path)
    first.start()
    first.kill()  # no cleanup: the lock file stays, the lock does not
    assert (first.state_dir / "state.sqlite3.lock").exists()
    with second:
        code, output = _state_command("migrate", second.config, second.root)
        assert code == 2 and f"pid {second.pid}" in output, output
        meter = second.meters[0]
        send_udp(second.udp_port, [push(meter, 1)])
        wait_for(lambda: record_id(meter, 1) in second.record_ids(), 10, "a push")
    # Stopped cleanly: the state is free for a writer again.
    code, output = _state_command("migrate", second.config, second.root)
    assert code == 0, output
