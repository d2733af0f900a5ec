"""Key files and key material: permissions are enforced, keys never reach a log.

Runs the real twistd subprocess: what an operator would see on the console or
in the journal is exactly what is checked.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.support import (
    REPO,
    VECTORS,
    DaemonProcess,
    assert_no_key_material,
    push,
    record_id,
    send_udp,
    wait_for,
)
from tests.twistd import twistd_command


def _twistd(config: Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        twistd_command(config),
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_daemon_refuses_a_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    daemon = DaemonProcess(tmp_path)
    daemon.keys.chmod(mode)
    result = _twistd(daemon.config, tmp_path)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode != 0
    assert f"key file mode is {mode:04o}" in output and "chmod 600" in output, output
    assert "Traceback" not in output
    assert_no_key_material(output, daemon.key_texts())


def test_reload_of_a_key_file_made_readable_keeps_the_old_keys(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    with daemon:
        meter = daemon.meters[0]
        daemon.keys.chmod(0o644)
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "key store reload refused" in daemon.log(), 10, "the refusal")
        send_udp(daemon.udp_port, [push(meter, 1)])
        wait_for(lambda: record_id(meter, 1) in daemon.record_ids(), 10, "a push")
    assert_no_key_material(daemon.log(), daemon.key_texts())


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_keys_are_absent_from_every_log_of_a_full_run(tmp_path: Path, log_format: str) -> None:
    daemon = DaemonProcess(tmp_path, log_format=log_format, tcp={"idle_timeout": 1.0})
    with daemon:
        meter = daemon.meters[3]
        good = push(meter, 5)
        forged = good[:-1] + bytes((good[-1] ^ 1,))
        # Published vector (tests/data/published.json): source cited in VECTORS[0]["source"].
        vector = bytes.fromhex(VECTORS[0]["hex"])
        send_udp(
            daemon.udp_port,
            [good, forged, good, vector, vector, b"\x00\x01garbage", good[:20] + b"\xff" * 30],
        )
        stranger = push(daemon.meters[0], 1)
        send_udp(daemon.udp_port, [stranger[:10] + b"UNKNOWN!" + stranger[18:]])
        with socket.create_connection(("127.0.0.1", daemon.tcp_port)) as sock:
            sock.sendall(b"\x00\x02garbage-on-tcp")
            time.sleep(0.2)
        wait_for(lambda: daemon.rejected("replay") >= 2, 10, "replays")
        # A reload that fails on a bad key value, then one that works.
        good_keys = daemon.keys.read_text()
        daemon.keys.write_text(good_keys.replace('encryption_key = "', 'encryption_key = "ZZ', 1))
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.log(), 10, "the refused reload")
        daemon.keys.write_text(good_keys)
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "key store reloaded" in daemon.log(), 10, "the reload")
        metrics = daemon.metrics()
    everything = "\n".join(
        [
            daemon.log(),
            metrics,
            daemon.readings.read_text(),
            *(p.read_text() for p in (daemon.state_dir / "quarantine").glob("*")),
        ]
    )
    assert "auth_failed" in everything and "unknown_meter" in everything
    assert_no_key_material(everything, daemon.key_texts())


def _keys_reload(daemon: DaemonProcess, *extra: str) -> tuple[int, str]:
    command = [sys.executable, "-m", "dlmsd.cli", "keys", "reload"]
    result = subprocess.run(
        [*command, "--config", str(daemon.config), *extra],
        cwd=daemon.root,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).decode()


def test_an_empty_or_truncated_key_file_does_not_empty_the_key_store(tmp_path: Path) -> None:
    # A deploy tool that writes the key file in place: SIGHUP lands on an empty, then a
    # truncated file. Both reloads are refused (one warning each, counted); the meters
    # keep being served until an operator forces the reload.
    daemon = DaemonProcess(tmp_path)
    with daemon:
        meter = daemon.meters[0]
        good = daemon.keys.read_text()
        assert daemon.process is not None
        daemon.keys.write_text("")
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.log().count("key store reload refused") == 1, 10, "a refusal")
        truncated = good[: good.index("[meters.", good.index("[meters.") + 1)]
        daemon.keys.write_text(truncated)  # the first meter only
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.log().count("key store reload refused") == 2, 10, "a refusal")
        assert daemon.metric("dlmsd_keystore_reload_failures_total") == 2
        assert daemon.metric("dlmsd_keystore_meters") == len(daemon.meters) + 1
        send_udp(daemon.udp_port, [push(meter, 1), push(daemon.meters[5], 1)])
        wait_for(lambda: record_id(meter, 1) in daemon.record_ids(), 10, "a push")
        wait_for(lambda: record_id(daemon.meters[5], 1) in daemon.record_ids(), 10, "a push")

        # `dlmsd keys reload` tells the operator what the daemon did: refused again...
        code, output = _keys_reload(daemon)
        assert code == 2 and "refused the reload" in output, output
        # ...until the operator means it: `--force` takes the truncated file.
        code, output = _keys_reload(daemon, "--force")
        assert code == 0 and f"pid {daemon.pid}" in output and "reloaded" in output, output
        wait_for(lambda: "key store reloaded (forced): 1 meters" in daemon.log(), 10, "reload")
        assert daemon.metric("dlmsd_keystore_meters") == 1
        send_udp(daemon.udp_port, [push(daemon.meters[5], 2)])
        wait_for(lambda: daemon.rejected("unknown_meter") >= 1, 10, "the dropped meter")

        # A broken file is not even sent: the command says why, in one line.
        daemon.keys.write_text("[meters.ZZ]\n")
        code, output = _keys_reload(daemon)
        assert code == 2 and output.count("\n") == 1 and "nothing sent" in output, output
    log = daemon.log()
    refusals = [line for line in log.splitlines() if "key store reload refused" in line]
    assert len(refusals) == 3 and all("--force" in line for line in refusals), refusals
    assert "Traceback" not in log
    assert_no_key_material(log, daemon.key_texts())
