"""The spool's disk fills up, then space comes back.

The state directory (SQLite counters + spool) and the JSONL sink live on a
4 MiB tmpfs mounted for the test (needs root, as the test machines and CI
run; the test is skipped where mounting is not allowed). A filler file takes
the last free byte while meters keep pushing.

What must hold: the daemon does not crash; it says why in its log (one warning
per episode, reason ``disk_full``, one line when space returns); pushes
it cannot commit are refused, not half-accepted: their counters do not
advance, so the meters' retransmissions are accepted once space returns
(the backpressure a push protocol has); nothing accepted is lost; the sink
catches up.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import DaemonProcess, push, record_id, send_udp_unlossy, wait_for

SIZE = "4m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system of `directory`."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_spool_disk_full_refuses_cleanly_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    daemon = DaemonProcess(
        tmp_path,
        meters=10,
        state_dir=small_disk / "state",
        sink_path=small_disk / "readings.jsonl",
    )
    meters = daemon.meters
    first = [(m, 1) for m in meters] * 1
    during = [(meter, ic) for ic in range(2, 22) for meter in meters]  # 200 pushes
    last = [(m, 100) for m in meters]
    with daemon:
        send_udp_unlossy(daemon.udp_port, [push(m, ic) for m, ic in first])
        wait_for(lambda: len(daemon.records()) == len(first), 15, "the first pushes")

        filler = fill(small_disk)
        # In two waves, so that several commits fail in one episode.
        half = len(during) // 2
        for wave, total in ((during[:half], half), (during[half:], len(during))):
            send_udp_unlossy(daemon.udp_port, [push(m, ic) for m, ic in wave])
            wait_for(
                lambda total=total: daemon.rejected("disk_full") >= total,  # type: ignore[misc]
                15,
                "the pushes sent while the disk is full",
            )
        refused = daemon.rejected("disk_full")
        assert daemon.rejected("internal_error") == 0
        assert daemon.process is not None and daemon.process.poll() is None, "daemon died"

        filler.unlink()  # space returns; the meters retransmit what was refused
        send_udp_unlossy(daemon.udp_port, [push(m, ic) for m, ic in during])
        send_udp_unlossy(daemon.udp_port, [push(m, ic) for m, ic in last])
        expected = {record_id(m, ic) for m, ic in first + during + last}
        wait_for(lambda: expected <= set(daemon.record_ids()), 30, "the sink to catch up")
    log = daemon.log()
    print(f"disk full: {refused:.0f} of {len(during)} pushes refused while full")
    assert refused == len(during), "every push sent while the disk was full is refused"
    # One warning for the episode (reason disk_full, with the cause), one line when space
    # returns, no traceback.
    warnings = [line for line in log.splitlines() if "the state disk is full" in line]
    assert len(warnings) == 1, warnings
    assert "disk_full" in warnings[0] and "disk is full" in warnings[0]
    assert log.count("state disk has room again") == 1
    assert "Traceback" not in log
    assert set(daemon.record_ids(strict=True)) == expected
