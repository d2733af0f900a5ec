"""Connection hogs: one source taking every TCP slot; a daemon at its open-file limit.

Against the twistd subprocess on loopback. Several sources are played from
one host by binding client sockets to different 127.0.0.0/8 addresses (all
loopback on Linux). Each test ends with genuine meters being served.
"""

from __future__ import annotations

import resource
import socket
from pathlib import Path

from tests.faults.support import DaemonProcess, push, wait_for

HOG = "127.0.0.2"


def connect_from(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def is_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def meters_push(daemon: DaemonProcess, host: str, first_ic: int) -> list[socket.socket]:
    """Every meter of the daemon's fleet pushes once over its own connection from `host`."""
    socks = []
    for meter in daemon.meters:
        sock = connect_from(host, daemon.tcp_port)
        sock.sendall(push(meter, first_ic))
        socks.append(sock)
    return socks


def test_one_source_with_400_idle_connections_does_not_lock_meters_out(tmp_path: Path) -> None:
    tcp = {"max_connections": 200, "max_connections_per_source": 100}
    daemon = DaemonProcess(tmp_path, tcp=tcp)
    hog: list[socket.socket] = []
    meters: list[socket.socket] = []
    with daemon:
        try:
            hog = [connect_from(HOG, daemon.tcp_port) for _ in range(400)]
            per_source = "dlmsd_tcp_connections_refused_per_source_total"
            wait_for(lambda: daemon.metric(per_source, listener="tcp") == 300, 20, "300 refusals")
            assert daemon.metric("dlmsd_tcp_connections_open") == 100
            meters = meters_push(daemon, "127.0.0.1", 1)
            wait_for(
                lambda: daemon.metric("dlmsd_pushes_accepted_total") == len(daemon.meters),
                20,
                "the meters' pushes",
            )
            # A second hog fills the table: newcomers then displace the busiest
            # source's oldest idle connections instead of being refused.
            hog += [connect_from("127.0.0.3", daemon.tcp_port) for _ in range(100)]
            wait_for(
                lambda: daemon.metric("dlmsd_tcp_connections_open") == 200, 20, "a full table"
            )
            meters += meters_push(daemon, "127.0.0.4", 2)
            wait_for(
                lambda: daemon.metric("dlmsd_pushes_accepted_total") == 2 * len(daemon.meters),
                20,
                "the meters' pushes at a full table",
            )
            evicted = daemon.metric("dlmsd_tcp_connections_evicted_total", listener="tcp")
            # One per newcomer past 200: the second hog's last 8, then the 8 meters.
            assert evicted == 2 * len(daemon.meters)
            assert not any(is_closed(sock) for sock in meters)
            assert daemon.metric("dlmsd_tcp_connections_refused_total", listener="tcp") == 300
            # One line per limit and source, not one per refusal.
            log = daemon.log_since_start()
            assert log.count("refusing its new connections") == 1
            assert log.count("closing the oldest idle connection") == 1
            assert "EMFILE" not in log
        finally:
            for sock in hog + meters:
                sock.close()


def _open_files(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_at_a_low_open_file_limit_metrics_and_meters_keep_working(tmp_path: Path) -> None:
    # 256 descriptors and the default max_connections (10,000): the daemon lowers
    # the limit to fit, so a hog never takes the descriptors /metrics, the state
    # database and the sink need.
    daemon = DaemonProcess(tmp_path, preexec=lambda: _open_files(256, 256))
    hog: list[socket.socket] = []
    meters: list[socket.socket] = []
    with daemon:
        try:
            log = daemon.log_since_start()
            assert "open-file limit (RLIMIT_NOFILE) 256 is below" in log
            limit = int(log.split("lowered max_connections to tcp=")[1].split(";")[0])
            assert 100 <= limit <= 256 - 64
            hog = [connect_from(HOG, daemon.tcp_port) for _ in range(400)]
            wait_for(
                lambda: daemon.metric("dlmsd_tcp_connections_open") == limit,
                20,
                "the hog to fill the table",
            )
            wait_for(
                lambda: (
                    daemon.metric("dlmsd_tcp_connections_evicted_total", listener="tcp")
                    + daemon.metric("dlmsd_tcp_connections_refused_total", listener="tcp")
                    == 400 - limit
                ),
                20,
                "the hog's surplus to be closed",
            )
            # The descriptors left: metrics answers, meters are served and committed.
            meters = meters_push(daemon, "127.0.0.1", 1)
            wait_for(
                lambda: daemon.metric("dlmsd_pushes_accepted_total") == len(daemon.meters),
                20,
                "the meters' pushes",
            )
            wait_for(
                lambda: (
                    daemon.readings.exists()
                    and len(daemon.readings.read_text().splitlines()) == len(daemon.meters)
                ),
                20,
                "the records in the sink",
            )
            assert not any(is_closed(sock) for sock in meters)
            log = daemon.log_since_start()
            assert "EMFILE" not in log
            assert "Too many open files" not in log
        finally:
            for sock in hog + meters:
                sock.close()


def test_the_soft_open_file_limit_is_raised_to_what_the_listeners_need(tmp_path: Path) -> None:
    daemon = DaemonProcess(
        tmp_path, tcp={"max_connections": 2000}, preexec=lambda: _open_files(256, 8192)
    )
    with daemon:
        limits = Path(f"/proc/{daemon.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
        soft, hard = (int(word) for word in line.split()[3:5])
        assert hard == 8192
        assert 2000 < soft < 8192
        log = daemon.log_since_start()
        assert f"raised the open-file limit (RLIMIT_NOFILE) from 256 to {soft}" in log
        assert "is below" not in log
