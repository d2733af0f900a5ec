"""Meter lifecycle against a running daemon (real reactor, loopback, real SQLite, real
control socket): `dlmsd state reset-counter` and `dlmsd quarantine replay`.

Frames are synthetic: built by dlmsd's own simulator for simulated meters.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from dlmsd.cli import main
from dlmsd.service import simulator
from dlmsd.service.control import ControlUnavailable, request, socket_path
from dlmsd.service.maker import DaemonService
from tests.service.test_daemon import (
    LogCapture,
    make_setup,
    port_of,
    rejected,
    send_udp,
    start,
    stop,
    wait_until,
)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`dlmsd ...` as the operator types it; stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def cli(*argv: str) -> tuple[int, str, str]:
    # In a thread: the daemon answering the command runs on this reactor.
    result: tuple[int, str, str] = await threads.deferToThread(run_cli, *argv)
    return result


def push(meter: simulator.SimMeter, counter: int, when: datetime | None = None) -> bytes:
    return simulator.wrap(simulator.build_push(meter, counter, when or datetime.now(UTC)))


def counters(records: list[dict[str, Any]]) -> list[int]:
    return [record["invocation_counter"] for record in records]


@pytest.mark.parametrize("window", [0, 8])
@pytest_twisted.ensureDeferred
async def test_reset_counter_reaches_the_running_daemon(tmp_path: Path, window: int) -> None:
    setup = make_setup(tmp_path, udp={}, extra=f"replay_window = {window}\n")
    meter = setup.meters[0]
    title = meter.system_title.hex().upper()
    service = start(setup)
    try:
        port = port_of(service, "udp")
        send_udp(port, push(meter, 1000))
        await wait_until(lambda: counters(setup.records()) == [1000])
        # Firmware update: the meter starts counting at 1 again, and is refused.
        send_udp(port, push(meter, 1))
        await wait_until(lambda: rejected(service, "replay") == 1)
        with LogCapture() as logs:
            code, out, err = await cli(
                "state", "reset-counter", title, "--config", str(setup.config_path)
            )
        assert code == 0, err
        assert "reset by the running daemon (was 1000)" in out
        [event] = [e for e in logs.events if "reset" in str(e.get("log_format", ""))]
        assert event["title"] == title and event["previous"] == 1000
        send_udp(port, push(meter, 2))
        await wait_until(lambda: counters(setup.records()) == [1000, 2])
        send_udp(port, push(meter, 2))  # still replay-protected from the new start
        await wait_until(lambda: rejected(service, "replay") == 2)
    finally:
        await stop(service)
    # The reset is in the database: a restart keeps the new counter.
    restarted = start(setup)
    try:
        send_udp(port_of(restarted, "udp"), push(meter, 2), push(meter, 3))
        await wait_until(lambda: counters(setup.records()) == [1000, 2, 3])
        assert rejected(restarted, "replay") == 1
    finally:
        await stop(restarted)


@pytest_twisted.ensureDeferred
async def test_reset_counter_by_meter_name_and_socket_mode(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    try:
        path = socket_path(tmp_path / "state")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        code, out, _ = await cli(
            "state", "reset-counter", "vector-meter", "--config", str(setup.config_path)
        )
        assert code == 0 and "vector-meter (2F19229199164103)" in out and "was none" in out
        code, _, err = await cli(
            "state", "reset-counter", "no-such-meter", "--config", str(setup.config_path)
        )
        assert code == 2 and "no meter of that name" in err
    finally:
        await stop(service)
    assert not path.exists()  # removed at stop: the next command knows nobody runs


def test_reset_counter_without_a_daemon_changes_the_file(tmp_path: Path) -> None:
    import sqlite3

    setup = make_setup(tmp_path, udp={})
    db = tmp_path / "state" / "state.sqlite3"
    db.parent.mkdir(mode=0o700)
    start_stop = build_and_close(setup)
    assert start_stop
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO counters (system_title, invocation_counter) VALUES (?, 77)",
            (setup.meters[1].system_title,),
        )
    title = setup.meters[1].system_title.hex().upper()
    with pytest.raises(ControlUnavailable):
        request(socket_path(tmp_path / "state"), "ping", timeout=1.0)
    code, out, _ = run_cli("state", "reset-counter", title, "--config", str(setup.config_path))
    assert code == 0 and "was 77" in out and "no daemon answered" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM counters").fetchone()[0] == 0
    # A daemon holding the state's lock without a control socket: refused, not changed.
    import fcntl

    with (tmp_path / "state" / "state.sqlite3.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = run_cli("state", "reset-counter", title, "--dsn", str(db))
        assert code == 2 and "does not answer on its control socket" in err


def build_and_close(setup: Any) -> bool:
    """Create the state database as the daemon would, without running it."""
    from dlmsd.service.config import load_config
    from dlmsd.service.statebackend import open_state_backend

    backend = open_state_backend(load_config(setup.config_path))
    backend.shutdown()
    return True


def add_keys(setup: Any, meter: simulator.SimMeter) -> None:
    """The keys arrive: appended to the key store file as `dlmsd keys add` would."""
    with setup.keys_path.open("a") as keys:
        keys.write("\n" + simulator.key_file_text([meter]).split("\n", 2)[2])


@pytest_twisted.ensureDeferred
async def test_quarantine_replay_feeds_frames_of_meters_whose_keys_came_later(
    tmp_path: Path,
) -> None:
    setup = make_setup(tmp_path, udp={})
    newcomer = simulator.make_meter(1, seed=99)  # installed before its keys arrived
    stranger = simulator.make_meter(2, seed=99)  # still unknown
    first_hours = [datetime(2026, 1, 5, 8, n, tzinfo=UTC) for n in range(3)]
    service = start(setup)
    try:
        port = port_of(service, "udp")
        for counter, when in enumerate(first_hours, 1):
            send_udp(port, push(newcomer, counter, when))
        send_udp(port, push(stranger, 1))
        await wait_until(lambda: rejected(service, "unknown_meter") == 4)
    finally:
        await stop(service)
    quarantined = [json.loads(line) for line in setup.quarantine.read_text().splitlines()]
    assert all(isinstance(item["received_at"], str) for item in quarantined)  # ISO-8601
    add_keys(setup, newcomer)
    service = start(setup)  # a restart knows the keys; the quarantine waits for the command
    try:
        port = port_of(service, "udp")
        code, out, err = await cli("quarantine", "replay", "--config", str(setup.config_path))
        assert code == 0, err
        assert "4 quarantined frames: accepted 3, unknown_meter 1; 1 kept" in out
        await wait_until(lambda: counters(setup.records()) == [1, 2, 3])
        records = setup.records()
        assert {r["system_title"] for r in records} == {newcomer.system_title.hex().upper()}
        # Same checks, counters and sinks as live pushes: a replay of frame 2 is refused.
        send_udp(port, push(newcomer, 2))
        await wait_until(lambda: rejected(service, "replay") == 1)
        send_udp(port, push(newcomer, 4))
        await wait_until(lambda: counters(setup.records()) == [1, 2, 3, 4])
        # Only the stranger's frame is left; a second replay finds nothing new.
        [left] = [json.loads(line) for line in setup.quarantine.read_text().splitlines()]
        assert left["system_title"] == stranger.system_title.hex().upper()
        code, out, _ = await cli("quarantine", "replay", "--config", str(setup.config_path))
        assert code == 0 and "1 quarantined frames: unknown_meter 1; 1 kept" in out
    finally:
        await stop(service)
    # received_at is when each frame arrived, not when it was replayed.
    arrived = [datetime.fromisoformat(q["received_at"]) for q in quarantined[:3]]
    replayed = [datetime.fromisoformat(r["received_at"]) for r in records]
    assert replayed == arrived


@pytest_twisted.ensureDeferred
async def test_key_reload_replays_at_once_before_the_next_live_push(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    newcomer = simulator.make_meter(1, seed=99)
    service = start(setup)
    try:
        port = port_of(service, "udp")
        send_udp(port, push(newcomer, 1), push(newcomer, 2))
        await wait_until(lambda: rejected(service, "unknown_meter") == 2)
        add_keys(setup, newcomer)
        with LogCapture() as logs:
            assert service.reload_keys()  # what SIGHUP runs
            send_udp(port, push(newcomer, 3))  # the meter's next push, right after
            # An operator replaying at the same time waits for the first replay.
            code, out, _ = await cli("quarantine", "replay", "--config", str(setup.config_path))
            assert code == 0 and "0 quarantined frames: none; 0 kept" in out
            await wait_until(lambda: counters(setup.records()) == [1, 2, 3])
        assert rejected(service, "replay") == 0
        assert [e for e in logs.events if "quarantine replay" in str(e.get("log_format"))]
        assert setup.quarantine.read_text() == ""
    finally:
        await stop(service)


def test_quarantine_replay_needs_the_daemon(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    code, _, err = run_cli("quarantine", "replay", "--config", str(setup.config_path))
    assert code == 2 and "no daemon answers" in err and "start the daemon" in err


@pytest_twisted.ensureDeferred
async def test_control_socket_refuses_bad_requests(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service: DaemonService = start(setup)
    path = socket_path(tmp_path / "state")
    try:
        from dlmsd.service.control import ControlError

        for command, fields, message in (
            ("explode", {}, "unknown command 'explode'"),
            ("reset-counter", {"system_title": "xyz"}, "expected 16 hex characters"),
        ):
            with pytest.raises(ControlError, match=message):
                await threads.deferToThread(request, path, command, 5.0, **fields)
        reply = await threads.deferToThread(request, path, "ping", 5.0)
        assert reply["backend"] == "sqlite"
    finally:
        await stop(service)
