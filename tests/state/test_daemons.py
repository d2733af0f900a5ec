"""Several real daemons (twistd subprocesses) sharing one real PostgreSQL.

Each daemon has its own UDP port, metrics port and JSONL file, and the same
key store, state database and sink name: the spool is one queue that both
drain. A reading's identity is (system title, invocation counter).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

from dlmsd.service import simulator
from dlmsd.service.simulator import SimMeter
from tests.service.test_daemon import DaemonSetup, make_setup
from tests.state.pgserver import PgServer, free_port
from tests.twistd import twistd_command

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@attrs.define
class Daemon:
    """One twistd subprocess with its setup and ports."""

    name: str
    setup: DaemonSetup
    udp_port: int
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        before = len(self.log_bytes())
        log = (self.setup.root / "daemon.log").open("ab")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.process = subprocess.Popen(
            twistd_command(self.setup.config_path),
            cwd=self.setup.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(
            lambda: b"dlmsd started" in self.log_bytes()[before:], 30, f"{self.name} to start"
        )

    def log_bytes(self) -> bytes:
        path = self.setup.root / "daemon.log"
        return path.read_bytes() if path.exists() else b""

    def kill(self) -> None:
        """``kill -9``: no flush, no drain, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def metric(self, name: str, **labels: str) -> float:
        """One sample from the daemon's /metrics (0.0 when absent)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "")
        found = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def accepted(self) -> float:
        return self.metric("dlmsd_pushes_accepted_total")

    def rejected(self, reason: str) -> float:
        return self.metric("dlmsd_pushes_rejected_total", reason=reason)

    def send(self, *datagrams: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", self.udp_port))


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def make_daemon(root: Path, name: str, dsn: str, meters: int, extra: str = "") -> Daemon:
    root.mkdir(parents=True, exist_ok=True)
    ports = {"udp": free_udp_port(), "metrics": free_port()}
    state = f'dsn = "{dsn}"\ninstance = "{name}"\nspool_lease = 5\n{extra}'
    setup = make_setup(root, meters=meters, udp={}, ports=ports, extra=state)
    return Daemon(name, setup, ports["udp"], ports["metrics"])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delivered(*daemons: Daemon) -> list[tuple[str, int]]:
    """Every (system title, counter) written to any daemon's JSONL file, duplicates kept."""
    return [
        (record["system_title"], record["invocation_counter"])
        for daemon in daemons
        for record in daemon.setup.records()
    ]


def frame(meter: SimMeter, counter: int) -> bytes:
    return simulator.wrap(simulator.build_push(meter, counter, datetime.now(UTC)))


def spool_rows(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM dlmsd_spool").fetchone()[0])


@pytest.fixture
def daemons(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[Daemon, Daemon]]:
    first = make_daemon(tmp_path / "a", "a", pg_dsn, meters=6)
    second = make_daemon(tmp_path / "b", "b", pg_dsn, meters=6)
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_the_same_pushes_sent_to_two_daemons_are_accepted_once(
    daemons: tuple[Daemon, Daemon], pg_dsn: str
) -> None:
    first, second = daemons
    fleet = first.setup.meters
    frames = [frame(meter, counter) for counter in range(1, 11) for meter in fleet]
    for start in range(0, len(frames), 12):
        chunk = frames[start : start + 12]
        first.send(*chunk)
        second.send(*chunk)
        time.sleep(0.01)
    total = len(frames)
    wait_for(lambda: first.accepted() + second.accepted() == total, 20, "all accepted")
    wait_for(lambda: first.rejected("replay") + second.rejected("replay") == total, 10, "replays")
    wait_for(lambda: len(delivered(first, second)) >= total, 20, "delivery")
    readings = delivered(first, second)
    assert len(set(readings)) == total == first.accepted() + second.accepted()
    assert len(readings) == total  # one live delivery each: no lease ran out
    # Replay across daemons: accepted by one, the other refuses it.
    fresh = frame(fleet[0], 11)
    first.send(fresh)
    wait_for(lambda: first.accepted() + second.accepted() == total + 1, 10, "the new push")
    replays = second.rejected("replay")
    second.send(fresh)
    wait_for(lambda: second.rejected("replay") == replays + 1, 10, "the replay refused")
    assert first.accepted() + second.accepted() == total + 1
    wait_for(lambda: spool_rows(pg_dsn) == 0, 10, "the spool drained")


def test_a_daemon_killed_during_load_loses_nothing(
    daemons: tuple[Daemon, Daemon], pg_dsn: str
) -> None:
    first, second = daemons
    fleet = first.setup.meters
    sent_to_second = 0
    accepted_by_first = 0.0
    for counter in range(1, 41):
        for index, meter in enumerate(fleet):
            target = first if (counter + index) % 2 else second
            if counter > 20:
                target = second  # the first is dead from here on
            target.send(frame(meter, counter))
            sent_to_second += target is second and counter > 20
        if counter == 20:
            wait_for(lambda: first.accepted() > 0, 10, "the first daemon at work")
            accepted_by_first = first.accepted()
            first.kill()
        time.sleep(0.01)
    # The survivor goes on: every push sent to it after the kill is accepted.
    wait_for(lambda: second.accepted() >= sent_to_second, 20, "the survivor accepting")
    first.start()  # same instance name: takes back its leased rows at once
    wait_for(lambda: spool_rows(pg_dsn) == 0, 30, "the spool drained")
    readings = set(delivered(first, second))
    accepted = accepted_by_first + second.accepted() + first.accepted()
    # Pushes the first daemon committed between the last scrape and the kill
    # count in `readings` but not in `accepted`: never fewer readings than acks.
    assert len(readings) >= accepted
    after_kill = {(m.system_title.hex().upper(), c) for m in fleet for c in range(21, 41)}
    assert after_kill <= readings


def test_postgresql_outage_refuses_counts_and_loses_nothing(
    tmp_path: Path, pg_dsn: str, pg_server: PgServer
) -> None:
    daemon = make_daemon(tmp_path / "solo", "solo", pg_dsn, meters=4)
    daemon.start()
    try:
        fleet = daemon.setup.meters
        counter = 0

        def burst(rounds: int) -> None:
            nonlocal counter
            for _ in range(rounds):
                counter += 1
                daemon.send(*[frame(meter, counter) for meter in fleet])
                # A replay of the previous round: must never be accepted.
                if counter > 1:
                    daemon.send(frame(fleet[0], counter - 1))
                time.sleep(0.02)

        burst(10)
        pg_server.stop()  # while the last pushes may still be committing
        burst(10)
        wait_for(lambda: daemon.rejected("state_unavailable") > 0, 10, "refusals counted")
        assert daemon.metric("dlmsd_state_available", instance="solo") == 0.0
        pg_server.start()
        wait_for(
            lambda: daemon.metric("dlmsd_state_available", instance="solo") == 1.0,
            20,
            "recovery",
        )
        burst(10)
        # The last pushes wait up to commit_interval_max (50 ms) for their commit; an
        # empty spool before that commit says nothing about them.
        time.sleep(0.3)
        wait_for(lambda: spool_rows(pg_dsn) == 0, 20, "the spool drained")
        accepted = daemon.accepted()
        wait_for(lambda: len(set(delivered(daemon))) >= accepted, 10, "delivery")
        readings = delivered(daemon)
        assert accepted == len(set(readings))  # every acknowledged push arrived, once
        refused = daemon.rejected("state_unavailable")
        assert refused > 0
        replays = counter - 1
        assert accepted + refused <= counter * len(fleet) + replays
        assert accepted >= 10 * len(fleet)  # at least everything after the outage
        assert b"state database unreachable" in daemon.log_bytes()
    finally:
        daemon.stop()
        pg_server.start()


def test_two_daemons_share_one_udp_port_with_reuse_port(tmp_path: Path, pg_dsn: str) -> None:
    port = free_udp_port()
    pair = []
    for name in ("r1", "r2"):
        daemon = make_daemon(tmp_path / name, name, pg_dsn, meters=8)
        text = daemon.setup.config_path.read_text()
        text = re.sub(r"(\[\[listeners\.udp\]\]\n(?:.*\n)*?)port = \d+", rf"\1port = {port}", text)
        text = text.replace("[[listeners.udp]]\n", "[[listeners.udp]]\nreuse_port = true\n")
        daemon.setup.config_path.write_text(text)
        daemon.udp_port = port
        pair.append(daemon)
    try:
        for daemon in pair:
            daemon.start()
        fleet = pair[0].setup.meters
        frames = [frame(meter, counter) for counter in range(1, 6) for meter in fleet]
        # Each meter from its own source port: the kernel spreads them by hash.
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in fleet]
        try:
            for counter in range(5):
                for index, sock in enumerate(sockets):
                    sock.sendto(frames[counter * len(fleet) + index], ("127.0.0.1", port))
                time.sleep(0.01)
        finally:
            for sock in sockets:
                sock.close()
        total = len(frames)
        wait_for(lambda: sum(d.accepted() for d in pair) == total, 20, "all accepted")
        wait_for(lambda: len(set(delivered(*pair))) == total, 20, "all delivered")
    finally:
        for daemon in pair:
            daemon.stop()


def test_tcp_listeners_share_a_port_with_reuse_port() -> None:
    import tomllib

    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from dlmsd.service.config import parse_config
    from dlmsd.service.tcp import listen_reuse_port

    config = parse_config(
        tomllib.loads(
            '[[listeners.tcp]]\nport = 0\nreuse_port = true\n[keys]\nfiles = ["k"]\n'
            '[[sinks]]\ntype = "jsonl"\npath = "x"\n'
        )
    )
    assert config.listeners.tcp[0].reuse_port is True
    factory = Factory.forProtocol(Protocol)
    first = listen_reuse_port(reactor, factory, "127.0.0.1", 0)
    port = first.getHost().port  # type: ignore[attr-defined]
    second = listen_reuse_port(reactor, factory, "127.0.0.1", port)
    try:
        assert second.getHost().port == port  # type: ignore[attr-defined]
    finally:
        first.stopListening()
        second.stopListening()


def test_daemon_with_unreachable_postgresql_refuses_to_start(tmp_path: Path) -> None:
    from dlmsd.service.config import load_config
    from dlmsd.service.maker import StartupError, build_service

    dsn = f"postgresql://dlmsd:hunter2@127.0.0.1:{free_port()}/none"
    setup = make_setup(tmp_path, udp={}, extra=f'dsn = "{dsn}"\n')
    with pytest.raises(StartupError) as raised:
        build_service(load_config(setup.config_path), handle_signals=False)
    message = str(raised.value)
    assert message.startswith("state.dsn: ") and "cannot connect" in message
    assert "hunter2" not in message and "\n" not in message
