"""The daemon as a real twistd subprocess on loopback, for the fault-injection tests.

`DaemonProcess` writes a config (UDP + TCP listeners, JSONL sink, metrics on
ephemeral ports, the simulator's meters plus the published vector meter in
the key file), starts ``twistd -n dlmsd``, waits for "dlmsd started" in its
log, and can be stopped (SIGTERM), killed (SIGKILL) and started again on the
same ports and state. Its log (stdout + stderr) goes to a file the tests grep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dlmsd.service import simulator
from dlmsd.service.simulator import SimMeter
from tests.records import validated
from tests.twistd import twistd_command
from tests.vectors import by_kind

REPO = Path(__file__).resolve().parents[2]

# tests/data/published.json, kind udp_wrapper+general_glo_ciphering_datanotification
# (source: dlms-cosem tests/test_udp_message.py:L6..L9): system title
# 2F19229199164103, EK = AK = "MYDUMMYGLOBALKEY", IC 485..488.
VECTORS = by_kind("udp_wrapper+general_glo_ciphering_datanotification")
VECTOR_TITLE = "2F19229199164103"
VECTOR_KEY = b"MYDUMMYGLOBALKEY"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def vector_meter_toml() -> str:
    key = VECTOR_KEY.hex().upper()
    return (
        f"[meters.{VECTOR_TITLE}]\n"
        'name = "vector-meter"\n'
        f'encryption_key = "{key}"\nauthentication_key = "{key}"\n'
    )


class DaemonProcess:
    """One daemon under test, in `root`."""

    def __init__(
        self,
        root: Path,
        *,
        meters: int = 8,
        seed: int = 7,
        state_dir: Path | None = None,
        sink_path: Path | None = None,
        tcp: Mapping[str, object] | None = None,
        extra: str = "",
        log_format: str = "text",
        preexec: Callable[[], object] | None = None,
    ) -> None:
        self.root = root
        self.preexec = preexec  # run in the child before twistd (resource limits)
        self.meters: list[SimMeter] = simulator.make_meters(meters, seed)
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port()
        self.metrics_port = free_port()
        self.state_dir = state_dir or root / "state"
        self.readings = sink_path or root / "readings.jsonl"
        self.keys = root / "keys.toml"
        self.log_path = root / "daemon.log"
        self.keys.write_text(simulator.key_file_text(self.meters) + "\n" + vector_meter_toml())
        self.keys.chmod(0o600)
        tcp_table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in (tcp or {}).items())
        self.config = root / "dlmsd.toml"
        self.config.write_text(
            f'[daemon]\nstate_dir = "{self.state_dir}"\nlog_format = "{log_format}"\n\n'
            f'[[listeners.udp]]\nname = "udp"\naddress = "127.0.0.1"\nport = {self.udp_port}\n\n'
            f'[[listeners.tcp]]\nname = "tcp"\naddress = "127.0.0.1"\nport = {self.tcp_port}\n'
            f"{tcp_table}\n"
            f'[keys]\nfiles = ["{self.keys}"]\n\n'
            f'[metrics]\nenabled = true\naddress = "127.0.0.1"\nport = {self.metrics_port}\n\n'
            f'[[sinks]]\ntype = "jsonl"\nname = "jsonl"\npath = "{self.readings}"\n'
            f"retry_backoff = 0.2\n\n[state]\ncommit_interval = 0.001\n{extra}"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None
        self._log_offset = 0

    # --- life cycle -------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start twistd and wait until it logs "dlmsd started"."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO)
        self.process = subprocess.Popen(
            twistd_command(self.config),
            cwd=self.root,
            env=env,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        wait_for(
            lambda: "dlmsd started" in self.log_since_start() or self.process.poll() is not None,  # type: ignore[union-attr]
            timeout,
            "the daemon to start",
        )
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited at start:\n{self.log_since_start()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (the daemon drains its sinks first); returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reap()
        return code

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reap()

    def _reap(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()

    # --- observation ------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(self._log_offset)
            return handle.read().decode(errors="replace")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """One series (0 when absent)."""
        label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
        wanted = f"{name}{{{label_text}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def rejected(self, reason: str) -> float:
        return self.metric("dlmsd_pushes_rejected_total", reason=reason)

    def records(self, *, strict: bool = False) -> list[dict[str, Any]]:
        """The JSONL sink's records. While the daemon runs the last line may be
        half written: it is left out unless `strict` (every line must parse)."""
        if not self.readings.exists():
            return []
        text = self.readings.read_text()
        lines = text.split("\n")
        tail = lines.pop()
        if strict and tail:
            raise AssertionError(f"the JSONL file ends in a half line: {tail[:80]!r}")
        return validated(json.loads(line) for line in lines if line.strip())

    def record_ids(self, *, strict: bool = False) -> list[str]:
        records = self.records(strict=strict)
        return [f"{r['system_title']}:{r['invocation_counter']}" for r in records]

    def key_texts(self) -> list[str]:
        """Every key of the key file, as it could leak: hex (either case) and raw ASCII."""
        keys = [VECTOR_KEY.hex(), VECTOR_KEY.decode()]
        for meter in self.meters:
            keys += [meter.encryption_key.hex(), meter.authentication_key.hex()]
        return keys


def push(meter: SimMeter, counter: int) -> bytes:
    """A wrapper frame with a valid push of `meter` at invocation counter `counter`."""
    return simulator.wrap(simulator.build_push(meter, counter, datetime.now(UTC)))


def record_id(meter: SimMeter, counter: int) -> str:
    return f"{meter.system_title.hex().upper()}:{counter}"


def send_udp(port: int, frames: Iterable[bytes], pause_every: int = 0) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index, frame in enumerate(frames):
            sock.sendto(frame, ("127.0.0.1", port))
            if pause_every and index % pause_every == pause_every - 1:
                time.sleep(0.002)


def assert_no_key_material(text: str, keys: Iterable[str]) -> None:
    lowered = text.lower()
    for key in keys:
        assert key.lower() not in lowered, "key material found"


def udp_queue_bytes(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket on 127.0.0.1:`port`."""
    local = f"0100007F:{port:04X}".encode()
    with open("/proc/net/udp", "rb") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 4 and fields[1] == local:
                return int(fields[4].split(b":")[1], 16)
    return 0


def send_udp_unlossy(port: int, frames: list[bytes], burst: int = 64) -> None:
    """Send without overrunning the receiver: wait while its queue is over 64 KiB."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        for start in range(0, len(frames), burst):
            while udp_queue_bytes(port) > 65536:
                time.sleep(0.0005)
            for frame in frames[start : start + burst]:
                sock.send(frame)
