"""`sink_throughput`: readings/s from a sender through the daemon into each sink, one run.

For each path a fresh daemon (``twistd -n dlmsd``, a subprocess) gets the
same pre-built encrypted pushes over TCP (4 connections, as fast as it takes
them) and one sink:

* ``jsonl``: the JSONL file (fsync per batch); counted by reading the file.
* ``mqtt``: a local mosquitto (started here, defaults: Nagle on, no
  persistence), QoS 1, one JSON message per push; counted by a QoS 1
  subscriber in its own process (`count_messages`: raw socket, a PUBACK per
  message, ~11 µs of CPU per message, mostly the kernel's), so the consumer
  is not what is measured. The earlier consumer, a paho client in a thread of
  this process (~40 µs per message, sharing the GIL with the counting loop),
  topped out near 10,000 messages/s, below the sink; paho in its own process
  takes ~26 µs. ``DLMSD_BENCH_MQTT_SUBSCRIBER=paho`` (own process) or
  ``paho-thread`` runs those instead, for comparison.
* ``http``: a local HTTP endpoint (stdlib ``http.server`` in a thread of
  this process, Nagle off: its two-write responses otherwise waited 40 ms
  for the daemon's delayed ACK, every POST) taking JSON arrays of up to 500
  records; counted per record.

The figure is readings / seconds from the first byte sent to the last
reading counted at the consumer, so it includes the ingest (decrypt, decode,
commit) that all paths share; the ratio to the JSONL path is the sink's
cost. Target: MQTT >= 0.5x JSONL. Everything shares this machine's cores
(sender, daemon, broker, subscriber).

    python -m bench --only sink_throughput --duration 2
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs

from bench.support import RowData, free_port, stop_process, subprocess_env, twistd_command

METERS = 200
PUSHES_PER_SECOND_GUESS = 25_000  # sizes the run: about `duration` seconds per path
MQTT_TARGET_RATIO = 0.5
START_TIMEOUT = 60.0


SinkRow = RowData  # this module's public name for its rows


@attrs.frozen(slots=True)
class PathResult:
    """One path's run: pushes sent, readings counted, seconds, readings/s (None: failed)."""

    sink: str
    sent: int
    counted: int
    seconds: float
    rate: float | None
    error: str = ""


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --- the pushes -----------------------------------------------------------------------------


def build_stream(count: int) -> tuple[list[bytes], Path]:
    """`count` wrapped pushes from `METERS` meters (rising counters) and their key file."""
    from dlmsd.service.simulator import build_push, make_meters, wrap, write_key_file

    fleet = make_meters(METERS, seed=21)
    keys = Path(tempfile.mkdtemp(prefix="dlmsd-bench-keys-")) / "keys.toml"
    write_key_file(keys, fleet)
    now = datetime.now(UTC)
    frames = [
        wrap(build_push(fleet[number % METERS], 1 + number // METERS, now))
        for number in range(count)
    ]
    return frames, keys


def send_tcp(frames: Sequence[bytes], port: int, connections: int = 4) -> None:
    """Stream the frames over `connections` connections in batches (blocking).

    Frame i comes from meter i % METERS, and each meter stays on one connection
    (METERS is a multiple of `connections`), so its counters arrive in order.
    """
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
    streams = [frames[index::connections] for index in range(connections)]
    batch = 64
    for start in range(0, max(map(len, streams)), batch):
        for sock, stream in zip(socks, streams, strict=True):
            if start < len(stream):
                sock.sendall(b"".join(stream[start : start + batch]))
    for sock in socks:
        sock.close()


# --- the consumers ----------------------------------------------------------------------------


@contextmanager
def mosquitto(root: Path) -> Iterator[int]:
    """A local mosquitto with its defaults on a free port; yields the port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    config = root / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
        "max_queued_messages 0\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait(lambda: _accepts(port), 10, "mosquitto")
        yield port
    finally:
        process.terminate()
        process.wait(10)


class LineCounter:
    """Counts newline-terminated lines appended to a file (a JSONL file, a subscriber's output)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.count = 0

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return self.count
        end = data.rfind(b"\n") + 1
        self.count += data.count(b"\n", 0, end)
        self._offset += end
        return self.count


SUBSCRIBED = b"subscribed\n"  # a subscriber process prints it once its SUBACK came


def _mqtt_packet(kind: int, body: bytes) -> bytes:
    length, header = len(body), bytearray((kind,))
    while True:
        length, digit = length >> 7, length & 0x7F
        header.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(header) + body


def _read_packets(buffer: bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """The whole packets at the front of `buffer` as (first byte, body start, body end),
    and where the rest starts (indices only: message bodies are never copied)."""
    packets, position, end = [], 0, len(buffer)
    while position + 2 <= end:
        length, shift, cursor = 0, 0, position + 1
        while cursor < end:
            digit = buffer[cursor]
            cursor += 1
            length |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        else:
            break
        if cursor + length > end:
            break
        packets.append((buffer[position], cursor, cursor + length))
        position = cursor + length
    return packets, position


def count_messages(port: int, output: Path, topic: str = "dlmsd/#") -> None:
    """A QoS 1 MQTT 3.1.1 subscriber on a raw socket (blocking, run in its own process).

    It PUBACKs every PUBLISH (one send per read) and appends one newline per
    message to `output` (one write per read), for `LineCounter`.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_id = f"bench-counter-{os.getpid()}".encode()
    # CONNECT: "MQTT" level 4, clean session, keep-alive 0 (off: runs are short).
    connect = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(_mqtt_packet(0x10, connect))
    name = topic.encode()
    sock.sendall(_mqtt_packet(0x82, b"\x00\x01" + len(name).to_bytes(2, "big") + name + b"\x01"))
    buffer = bytearray()
    with open(output, "ab", buffering=0) as counted:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return
            buffer += data
            packets, used = _read_packets(buffer)
            acks, messages = bytearray(), 0
            for first, body, stop in packets:
                kind = first & 0xF0
                if kind == 0x30:
                    messages += 1
                    if first & 0x06:  # QoS 1: the packet id follows the topic
                        at = body + 2 + (buffer[body] << 8 | buffer[body + 1])
                        acks += b"\x40\x02"
                        acks += buffer[at : at + 2]
                elif kind == 0x20 and buffer[body + 1] != 0:
                    raise SystemExit(f"CONNACK refused: {buffer[body:stop].hex()}")
                elif kind == 0x90:
                    if buffer[body + 2] != 1:
                        raise SystemExit(f"SUBACK without QoS 1: {buffer[body:stop].hex()}")
                    sys.stdout.buffer.write(SUBSCRIBED)
                    sys.stdout.buffer.flush()
            del buffer[:used]
            if acks:
                sock.sendall(acks)
            if messages:
                counted.write(b"\n" * messages)


def _paho_count_messages(port: int, output: Path) -> None:
    """The same as `count_messages` with paho (``loop_forever``), for comparison."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    counted = open(output, "ab", buffering=0)  # noqa: SIM115

    def on_subscribe(client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
        sys.stdout.buffer.write(SUBSCRIBED)
        sys.stdout.buffer.flush()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{os.getpid()}")
    client.on_connect = lambda c, u, f, r, p: c.subscribe("dlmsd/#", qos=1)
    client.on_subscribe = on_subscribe

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        counted.write(b"\n")

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()


@contextmanager
def mqtt_subscriber(port: int, output: Path) -> Iterator[Callable[[], int]]:
    """A QoS 1 subscriber to ``dlmsd/#`` in its own process; yields a counter of messages
    received (see the module docstring for DLMSD_BENCH_MQTT_SUBSCRIBER)."""
    kind = os.environ.get("DLMSD_BENCH_MQTT_SUBSCRIBER", "counter")
    if kind == "paho-thread":
        with _paho_subscriber(port) as counter:
            yield counter
        return
    command = "subscribe-paho" if kind == "paho" else "subscribe"
    output.touch()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sinks", command, str(port), str(output)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline() != SUBSCRIBED:  # subscribed before the daemon publishes
            raise RuntimeError("the MQTT subscriber did not subscribe")
        yield LineCounter(output)
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def _paho_subscriber(port: int) -> Iterator[Callable[[], int]]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    counted = [0]
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        counted[0] += 1  # one writer thread; readers only look

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
    client.on_connect = lambda c, u, f, r, p: c.subscribe("dlmsd/#", qos=1)
    client.on_subscribe = lambda c, u, m, r, p: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("subscriber got no SUBACK")
        yield lambda: counted[0]
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def http_endpoint() -> Iterator[tuple[int, Callable[[], int]]]:
    """A local endpoint counting the records of every POSTed JSON array."""
    counted = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The response goes out as two writes (headers, body): with Nagle on, the body
        # waits for the client's delayed ACK, 40 ms per POST. Real servers do not stall so.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            records = body.count(b'"system_title"')
            with lock:
                counted[0] += records
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), lambda: counted[0]
    finally:
        server.shutdown()
        server.server_close()


# --- one path -----------------------------------------------------------------------------------


def _sink_table(sink: str, root: Path, target: int) -> str:
    if sink == "jsonl":
        return f'type = "jsonl"\nname = "jsonl"\npath = "{root / "readings.jsonl"}"\n'
    if sink == "mqtt":
        return f'type = "mqtt"\nname = "mqtt"\nhost = "127.0.0.1"\nport = {target}\n'
    return (
        f'type = "http"\nname = "http"\nurl = "http://127.0.0.1:{target}/readings"\n'
        f'dead_letter = "{root / "dead-letter.jsonl"}"\nlinger = 0.0\n'
    )


def run_path(
    sink: str, frames: Sequence[bytes], keys: Path, target: int, count: Callable[[], int]
) -> PathResult:
    """Start a daemon with one sink, stream the frames, wait until all are counted."""
    root = Path(tempfile.mkdtemp(prefix=f"dlmsd-bench-{sink}-"))
    tcp_port = free_port()
    config = root / "dlmsd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{root / "state"}"\n\n'
        f'[[listeners.tcp]]\nname = "tcp"\naddress = "127.0.0.1"\nport = {tcp_port}\n\n'
        f'[keys]\nfiles = ["{keys}"]\n\n[metrics]\nenabled = false\n\n'
        f"[[sinks]]\n{_sink_table(sink, root, target)}\n"
        '[state]\nsynchronous = "normal"\n'
    )
    log = open(root / "daemon.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        twistd_command(config),
        cwd=root,
        env=subprocess_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    if sink == "jsonl":
        count = LineCounter(root / "readings.jsonl")
    try:
        _wait(
            lambda: (process.poll() is None and _accepts(tcp_port)) or process.poll() is not None,
            START_TIMEOUT,
            "the daemon",
        )
        if process.poll() is not None:
            raise RuntimeError((root / "daemon.log").read_text()[-1000:])
        time.sleep(0.5)  # the sink connects
        started = time.monotonic()
        send_tcp(frames, tcp_port)
        total = len(frames)
        last, last_change = -1, time.monotonic()
        while True:
            now = count()
            if now >= total:
                break
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > 20:
                raise RuntimeError(f"stalled at {now} of {total} readings")
            time.sleep(0.002)
        seconds = time.monotonic() - started
        return PathResult(sink, total, count(), seconds, total / seconds)
    except Exception as error:
        return PathResult(sink, len(frames), count(), 0.0, None, str(error)[:300])
    finally:
        stop_process(process)
        log.close()
        if os.environ.get("DLMSD_BENCH_KEEP"):
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def measure(duration_s: float) -> list[PathResult]:
    """Run the JSONL, MQTT and HTTP paths with the same pushes; JSONL first."""
    frames, keys = build_stream(max(2_000, int(duration_s * PUSHES_PER_SECOND_GUESS)))
    results = [run_path("jsonl", frames, keys, 0, lambda: 0)]
    work = Path(tempfile.mkdtemp(prefix="dlmsd-bench-broker-"))
    try:
        with mosquitto(work) as port, mqtt_subscriber(port, work / "sub.out") as counted:
            results.append(run_path("mqtt", frames, keys, port, counted))
    except Exception as error:
        results.append(PathResult("mqtt", len(frames), 0, 0.0, None, str(error)[:300]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with http_endpoint() as (port, counted_http):
        results.append(run_path("http", frames, keys, port, counted_http))
    shutil.rmtree(keys.parent, ignore_errors=True)
    return results


def bench_mqtt_vs_jsonl(duration_s: float) -> list[SinkRow]:
    """Rows: MQTT and HTTP sink paths next to the JSONL path of the same run."""
    results = {result.sink: result for result in measure(duration_s)}
    jsonl = results["jsonl"]
    rows = []
    for sink, label in (("mqtt", "MQTT sink (mosquitto, QoS 1)"), ("http", "HTTP sink (local)")):
        result = results[sink]
        notes = [f"{result.sent:,} pushes from {METERS} meters over TCP"]
        if sink == "mqtt":
            notes.append(f"target >= {MQTT_TARGET_RATIO}x the JSONL path")
        for failed in (result, jsonl):
            if failed.rate is None:
                notes.append(f"{failed.sink} failed: {failed.error}")
        rows.append(
            SinkRow(
                "sink_throughput",
                f"{label} vs JSONL file",
                result.rate,
                "readings/s",
                "JSONL sink, same run",
                jsonl.rate,
                "; ".join(notes),
            )
        )
    return rows


def description() -> str:
    return (
        "readings/s from a TCP sender through the daemon (twistd subprocess) into local "
        "mosquitto and a local HTTP endpoint, next to the JSONL file path (bench/sinks.py)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["subscribe"]:
        count_messages(int(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["subscribe-paho"]:
        _paho_count_messages(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        for row in bench_mqtt_vs_jsonl(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0):
            print(json.dumps(attrs.asdict(row)))
