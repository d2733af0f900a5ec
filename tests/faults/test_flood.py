"""Floods: 100,000 unknown system titles over UDP; idle, slow and garbage TCP peers.

Each runs against the twistd subprocess on loopback, bounded in time, and
ends by checking that a legitimate meter is still served.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

from tests.faults.support import (
    VECTORS,
    DaemonProcess,
    push,
    record_id,
    send_udp,
    send_udp_unlossy,
    wait_for,
)

UNKNOWN_TITLES = 100_000
QUARANTINE_MAX_BYTES = 1_000_000


def unknown_frames(count: int, template: bytes) -> list[bytes]:
    """`template` (a wrapper frame with a general-glo-ciphering push) from `count`
    distinct unknown system titles: bytes 10..17 hold the title."""
    return [
        template[:10] + b"UNK" + index.to_bytes(5, "big") + template[18:] for index in range(count)
    ]


def test_udp_flood_from_100k_unknown_titles_keeps_memory_flat_and_logs_rate_limited(
    tmp_path: Path,
) -> None:
    extra = f"\n[quarantine]\nmax_bytes = {QUARANTINE_MAX_BYTES}\nlog_interval = 300.0\n"
    daemon = DaemonProcess(tmp_path, extra=extra)
    with daemon:
        meter = daemon.meters[0]
        frames = unknown_frames(UNKNOWN_TITLES, push(meter, 1))
        # Warm up (first quarantine write, first log lines), then measure.
        send_udp_unlossy(daemon.udp_port, frames[:2000])
        wait_for(lambda: daemon.rejected("unknown_meter") >= 1990, 30, "warm-up frames")
        before = daemon.rss_mb()
        received_before = daemon.metric("dlmsd_frames_received_total", listener="udp")
        started = time.monotonic()
        # Paced on the daemon's receive queue, so the datagrams are not dropped.
        send_udp_unlossy(daemon.udp_port, frames[2000:])
        wait_for(
            lambda: (
                daemon.metric("dlmsd_frames_received_total", listener="udp")
                == daemon.rejected("unknown_meter")
            ),
            60,
            "the flood to be processed",
        )
        seconds = time.monotonic() - started
        received = daemon.metric("dlmsd_frames_received_total", listener="udp") - received_before
        after = daemon.rss_mb()
        # A legitimate meter is still served.
        send_udp(daemon.udp_port, [push(meter, 2)])
        wait_for(lambda: record_id(meter, 2) in daemon.record_ids(), 10, "the legit push")
    log = daemon.log()
    unknown_lines = len(re.findall(r"push rejected: unknown_meter", log))
    quarantine = daemon.state_dir / "quarantine"
    disk = sum(path.stat().st_size for path in quarantine.iterdir())
    print(
        f"flood: {received:,.0f} unknown-title datagrams in {seconds:.1f}s, RSS {before:.1f} -> "
        f"{after:.1f} MB, {unknown_lines} log lines, quarantine {disk:,} bytes"
    )
    assert received >= 0.95 * (UNKNOWN_TITLES - 2000), "the flood did not reach the daemon"
    assert after - before < 20, f"RSS grew {after - before:.1f} MB during the flood"
    # At most 100 lines per log interval over all titles (LogRateLimiter), plus the warm-up.
    assert unknown_lines <= 100, unknown_lines
    assert disk <= 2 * QUARANTINE_MAX_BYTES + 4096, disk  # quarantine.jsonl + .1


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the daemon closes `sock` within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_beyond_the_limit_are_closed_and_timed_out(tmp_path: Path) -> None:
    limit, opened = 200, 1000  # the 1,000 idle connections against a limit of 200
    tcp = {"max_connections": limit, "idle_timeout": 2.0}
    daemon = DaemonProcess(tmp_path, tcp=tcp)
    with daemon:
        meter = daemon.meters[1]
        socks = []
        for _ in range(opened):
            socks.append(_connect(daemon.tcp_port))
        # Beyond the limit each newcomer displaces the oldest idle connection of the
        # busiest source (all of them here), or is refused during a burst.
        wait_for(
            lambda: (
                daemon.metric("dlmsd_tcp_connections_refused_total", listener="tcp")
                + daemon.metric("dlmsd_tcp_connections_evicted_total", listener="tcp")
                >= opened - limit
            ),
            20,
            "refusals and evictions beyond max_connections",
        )
        assert daemon.metric("dlmsd_tcp_connections_open") <= limit
        # UDP meters are served while TCP is at its limit.
        send_udp(daemon.udp_port, [push(meter, 1)])
        wait_for(lambda: record_id(meter, 1) in daemon.record_ids(), 10, "a UDP push")
        # Idle connections are closed after idle_timeout; then TCP serves again.
        wait_for(lambda: daemon.metric("dlmsd_tcp_connections_open") == 0, 15, "idle timeouts")
        with _connect(daemon.tcp_port) as sock:
            sock.sendall(push(meter, 2))
            wait_for(lambda: record_id(meter, 2) in daemon.record_ids(), 10, "a TCP push")
        for sock in socks:
            sock.close()


def test_slowloris_is_cut_at_the_idle_timeout_and_a_garbage_stream_is_dropped(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path, tcp={"idle_timeout": 1.0, "max_frame_size": 4096})
    with daemon:
        meter = daemon.meters[2]
        # Slowloris: a valid frame, one byte every 0.1 s: bytes flow but no frame completes.
        frame = push(meter, 1)
        slow = _connect(daemon.tcp_port)
        started = time.monotonic()
        closed = False
        for byte in frame:
            try:
                slow.sendall(bytes((byte,)))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 3:
                break
        closed = closed or _closed_by_peer(slow, 2.0)
        cut_after = time.monotonic() - started
        slow.close()
        assert closed and cut_after < 3.5, f"slowloris connection open after {cut_after:.1f}s"

        # 10 MB of garbage on one connection while a legit meter pushes on another.
        legit = _connect(daemon.tcp_port)
        garbage = _connect(daemon.tcp_port)
        chunk = os.urandom(64 * 1024)
        sent = 0
        dropped = False
        try:
            while sent < 10 * 1024 * 1024:
                garbage.sendall(chunk)
                sent += len(chunk)
        except OSError:
            dropped = True  # reset by the daemon: what we want
        dropped = dropped or _closed_by_peer(garbage, 5.0)
        garbage.close()
        legit.sendall(push(meter, 2))
        wait_for(lambda: record_id(meter, 2) in daemon.record_ids(), 10, "the legit TCP push")
        legit.close()
        malformed = daemon.rejected("malformed") + daemon.rejected("oversize")
        rss = daemon.rss_mb()
    assert dropped, "the garbage stream was not dropped"
    assert malformed >= 1
    assert rss < 200, f"RSS {rss:.0f} MB after the garbage stream"
    print(f"garbage: dropped after {sent / 1e6:.1f} MB; slowloris cut after {cut_after:.1f}s")


def test_an_oversize_length_drops_the_connection_at_once(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, tcp={"max_frame_size": 1024})
    with daemon:
        sock = _connect(daemon.tcp_port)
        # A wrapper header announcing 60,000 APDU bytes: refused before any are buffered.
        sock.sendall(b"\x00\x01\x00\x01\x00\x01\xea\x60" + b"\x00" * 100)
        assert _closed_by_peer(sock, 5.0)
        sock.close()
        wait_for(lambda: daemon.rejected("oversize") >= 1, 10, "the oversize count")
        # The published vector frame still goes through (cited: VECTORS[0]["source"]).
        send_udp(daemon.udp_port, [bytes.fromhex(VECTORS[0]["hex"])])
        wait_for(lambda: len(daemon.records()) == 1, 10, f"vector {VECTORS[0]['source']}")
