"""Runs the README's "HAN port / customer interface" walk-through as written.

Every ``$ `` command of the section runs, in order, in a scratch directory that
holds the files its ``toml`` blocks name. Pseudo-terminals stand in for the
serial adapters (``/dev/ttyUSB0``), a local TCP server for the ESP-Link bridge,
and a free port for 4061; this test plays the meter by writing the push the
section decodes into those ports. Output shown under a command must appear in
what it prints (``...`` skips text).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.twistd import REPO

README = REPO / "README.md"
TITLE = "## HAN port / customer interface"


@attrs.frozen
class Command:
    line: str
    output: str


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(TITLE)
    end = text.find("\n## ", start + len(TITLE))
    return text[start : end if end >= 0 else len(text)]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), flags=re.DOTALL)


def files() -> dict[str, str]:
    """The toml blocks, by the file name on their first line (``# han.toml``)."""
    named = {}
    for block in blocks("toml"):
        first, _, rest = block.partition("\n")
        assert first.startswith("# "), f"toml block without a file name: {first!r}"
        named[first[2:].strip()] = rest
    return named


def commands() -> list[Command]:
    found = []
    for block in blocks("sh"):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            line, _, output = chunk.partition("\n")
            found.append(Command(line.strip(), output.strip()))
    return found


def shows(output: str, printed: str) -> bool:
    """Whether `printed` has the fragments of `output` between its ``...``, in order."""
    at = 0
    for fragment in output.split("..."):
        found = printed.find(fragment, at)
        if found < 0:
            return False
        at = found + len(fragment)
    return True


def test_the_walkthrough_shows_what_its_test_runs() -> None:
    lines = [command.line.split()[0] for command in commands()]
    assert lines == [
        ".venv/bin/dlmsd",
        ".venv/bin/dlmsd",
        "chmod",
        ".venv/bin/twistd",
        "tail",
        "socat",
        "socat",
    ]
    assert set(files()) == {"han-keys.toml", "han.toml"}


@attrs.define
class Port:
    """A pseudo-terminal standing in for a USB serial adapter."""

    master: int
    slave: int

    @classmethod
    def open(cls) -> Port:
        master, slave = os.openpty()
        tty.setraw(slave)
        return cls(master, slave)

    @property
    def device(self) -> str:
        return os.ttyname(self.slave)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_shot_server(payload: bytes) -> tuple[int, threading.Thread]:
    """A bridge that accepts one connection and sends what the meter sent (ESP-Link)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])

    def serve() -> None:
        with server:
            server.settimeout(20)
            connection, _ = server.accept()
            with connection:
                connection.sendall(payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def _records(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait(predicate: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_han_walkthrough_runs_as_written(scratch: Path) -> None:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (make test-deps installs it)")
    from dlmsd.service.config import HdlcTcpListenerConfig

    if "system_title" not in attrs.fields_dict(HdlcTcpListenerConfig):
        pytest.xfail("needs gbt-hdlc: [[listeners.hdlc_tcp]] system_title")
    serial, bridge_serial = Port.open(), Port.open()
    bridge_port = _free_port()
    background: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def adapt(text: str, device: str) -> str:
        return text.replace("/dev/ttyUSB0", device).replace("4061", str(bridge_port))

    for name, text in files().items():
        (scratch / name).write_text(adapt(text, serial.device))
    push = b""
    readings = scratch / "var" / "han-readings.jsonl"
    socat_runs = 0
    try:
        for command in commands():
            argv = shlex.split(command.line)
            if argv[0] == ".venv/bin/dlmsd" and "--follow" in argv:
                line = shlex.split(adapt(command.line, serial.device))
                process = subprocess.Popen(
                    [sys.executable, "-m", "dlmsd.cli", *line[1:]],
                    cwd=scratch,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                assert process.stderr is not None
                said = process.stderr.readline()  # "following DEVICE at ...": it is open
                assert "following" in said, said
                os.write(serial.master, push)  # the meter pushes on its HAN port
                out, err = process.communicate(timeout=60)
                assert process.returncode == 0, err
                assert shows(command.output, out), out
            elif argv[0] == ".venv/bin/dlmsd":
                push = bytes.fromhex(argv[-1])
                result = subprocess.run(
                    [sys.executable, "-m", "dlmsd.cli", *argv[1:]],
                    cwd=scratch,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert result.returncode == 0, result.stderr
                assert shows(command.output, result.stdout), result.stdout
            elif argv[0] == ".venv/bin/twistd":
                twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
                process = subprocess.Popen(
                    twistd + argv[1:],
                    cwd=scratch,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                background.append(process)
                _wait_started(process)
                time.sleep(0.2)
                os.write(serial.master, push)  # the meter pushes on its HAN port
            elif argv[0] == "tail":
                _wait(lambda: _records(readings), "a record")
                result = subprocess.run(
                    argv, cwd=scratch, capture_output=True, text=True, timeout=30
                )
                assert result.returncode == 0, result.stderr
                assert shows(command.output, result.stdout), result.stdout
            elif argv[0] == "socat":
                socat_runs += 1
                line = adapt(command.line, bridge_serial.device)
                if "esp-link.local:23" in line:
                    port, _ = _one_shot_server(push)
                    line = line.replace("esp-link.local:23", f"127.0.0.1:{port}")
                process = subprocess.Popen(shlex.split(line), cwd=scratch)
                background.append(process)
                if "/dev/" in line:
                    time.sleep(0.3)
                    os.write(bridge_serial.master, push)
                before = socat_runs

                def bridged(count: int = before) -> bool:
                    return (
                        sum('"meter":"han-aidon-garage"' in r for r in _records(readings)) >= count
                    )

                _wait(bridged, f"the bridged push #{before}")
            else:
                result = subprocess.run(argv, cwd=scratch, capture_output=True, timeout=30)
                assert result.returncode == 0, result.stderr
    finally:
        for process in reversed(background):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        serial.close()
        bridge_serial.close()
    records = _records(readings)
    assert sum('"meter":"han-aidon"' in record for record in records) == 1
    assert sum('"transport":"hdlc_tcp"' in record for record in records) == 2


def _wait_started(process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.decode(errors="replace"))
        if "dlmsd started" in lines[-1]:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep draining
            return
    raise AssertionError("the daemon did not start:\n" + "".join(lines))
