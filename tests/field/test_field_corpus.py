"""Every real capture of tests/data/field/ through `dlmsd decode` and through one running
daemon (`twistd dlmsd`), compared with the values its source states.

The daemon runs once for the whole corpus: one serial listener per capture on a
pseudo-terminal (the HAN/P1 port), HDLC-over-TCP for meters behind a serial-to-TCP
bridge, and the M-Bus listeners once they exist. Bare APDUs (captures that carry no
framing) are put into HDLC UI frames with dlmsd's own encoder, the only synthetic
part. A capture that needs a feature still being built on another branch
(`"needs"`) is an expected failure only while that feature is absent here.
The pass counts are printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from dlmsd import cli
from dlmsd.service import simulator
from tests.field.corpus import (
    FEATURES,
    FRAMINGS,
    Capture,
    cipher_header,
    compare,
    feature_present,
    load_captures,
    missing_features,
    without_llc,
)
from tests.twistd import REPO, twistd_command

CAPTURES = load_captures()
IDS = [capture.id for capture in CAPTURES]
RESULTS: dict[str, dict[str, bool]] = {"cli": {}, "daemon": {}}

# --- the corpus itself ------------------------------------------------------------------


def test_corpus_size_and_format() -> None:
    """The issue asks for at least 40 real pushes from at least 8 makes, each cited."""
    assert len(CAPTURES) >= 40
    assert len({capture.make for capture in CAPTURES}) >= 8
    for capture in CAPTURES:
        data = capture.data
        assert "github.com" in data["source"] or data["source"].startswith("https://"), capture.id
        assert data["framing"] in FRAMINGS, capture.id
        assert set(capture.needs) <= set(FEATURES), capture.id
        assert capture.raw, capture.id
        assert data["notes"], capture.id
        for reading in capture.expected["readings"]:
            assert {"obis", "value", "unit"} <= set(reading), capture.id
            assert isinstance(reading["value"], str), capture.id
        if capture.keys is not None:
            assert len(bytes.fromhex(capture.keys["ek"] or "")) == 16, capture.id
            assert len(bytes.fromhex(capture.system_title or "")) == 8, capture.id


# --- key store text for a capture -------------------------------------------------------


def meter_entry(capture: Capture, title: str, name: str) -> str:
    """The key store entry a user of this meter would write."""
    lines = [f"[meters.{title}]", f'name = "{name}"']
    keys = capture.keys
    if keys is None:
        lines.append('security = ["none"]')
    else:
        ek = keys["ek"] or ""
        lines += [
            f'encryption_key = "{ek.upper()}"',
            # Encryption-only meters publish one key; the second is then never used.
            f'authentication_key = "{(keys["ak"] or ek).upper()}"',
            'security = ["auth+enc", "enc"]',
        ]
    if capture.profile is not None and feature_present("profiles"):
        lines.append(f'profile = "{capture.profile}"')
    return "\n".join(lines) + "\n"


def plaintext_title(index: int, transport: int) -> str:
    """A system title naming a plaintext meter on its port ("FLD", index, transport)."""
    return f"464C44{index:06X}{transport:04X}"


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


# --- (a) `dlmsd decode` ------------------------------------------------------------------


def decode_with_cli(
    capture: Capture, index: int, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[list[Any], str]:
    """`dlmsd decode --keys FILE [--system-title T] HEX`, as a user would run it."""
    title = capture.system_title or plaintext_title(index, 0)
    keys = write_private(workdir / "keys.toml", meter_entry(capture, title, capture.id))
    argv = ["decode", "--keys", str(keys)]
    if capture.keys is None:
        argv += ["--system-title", title]
    argv.append(capture.data["hex"])
    capsys.readouterr()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    if code != 0:
        return [], err.strip()
    return [json.loads(line) for line in out.splitlines() if line.strip()], err.strip()


@pytest.mark.parametrize("index", range(len(CAPTURES)), ids=IDS)
def test_dlmsd_decode_gives_the_stated_values(
    index: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = CAPTURES[index]
    records, error = decode_with_cli(capture, index, tmp_path, capsys)
    if capture.envelope_only:
        header = cipher_header(capture.raw)
        assert header is not None
        ok = f"no keys for system title {header[0]}" in error
        problems = [] if ok else [f"expected the envelope of {header[0]} to be read: {error!r}"]
    else:
        problems = compare(capture, records) if records else [error or "no output"]
    RESULTS["cli"][capture.id] = not problems
    settle(capture, problems)


def settle(capture: Capture, problems: list[str]) -> None:
    """Fail with the problems, or mark an expected failure while a feature is absent
    or while a known gap (the capture's ``known_failure``) is open."""
    known = capture.data.get("known_failure")
    if not problems:
        if known:
            pytest.fail(f"{capture.id} passes now: drop its known_failure ({known})", False)
        return
    missing = missing_features(capture)
    summary = "; ".join(problems[:6]) + (
        f" (+{len(problems) - 6} more)" if len(problems) > 6 else ""
    )
    if missing:
        pytest.xfail(f"needs {', '.join(missing)}: {summary}")
    if known:
        pytest.xfail(f"known gap: {known}: {summary}")
    pytest.fail(f"{capture.id} ({capture.data['source']}): {summary}", pytrace=False)


# --- (b) one running daemon for the whole corpus -----------------------------------------


@attrs.define
class Channel:
    """One serial port (a pty) or one TCP connection to a bridge listener."""

    kind: str  # hdlc_serial, hdlc_tcp, mbus_serial or mbus_tcp: the record's "transport"
    name: str  # the listener's name
    stream: bytearray = attrs.Factory(bytearray)
    system_title: str | None = None  # what the port names its plaintext meter
    master: int | None = None  # the pty's sides, for serial channels
    slave: int | None = None
    port: int | None = None  # the listener's TCP port, for bridge channels

    @classmethod
    def serial(cls, kind: str, name: str, system_title: str | None = None) -> Channel:
        master, slave = os.openpty()
        tty.setraw(slave)  # a HAN port: no line discipline between meter and daemon
        return cls(kind, name, system_title=system_title, master=master, slave=slave)

    def listener_table(self) -> str:
        if self.slave is None:
            return ""
        values: dict[str, object] = {"name": self.name, "device": os.ttyname(self.slave)}
        if self.system_title is not None:
            values["system_title"] = self.system_title
        if self.kind == "mbus_serial":
            values.update(baudrate=2400, parity="E")
        return _toml_table(f"listeners.{self.kind}", values)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)


@attrs.define
class Feed:
    """One capture on a channel, and how its record is recognised."""

    capture: Capture
    channel: Channel
    title: str  # the record's system title
    counter: int | None = None  # the record's invocation counter (ciphered pushes)
    records: list[dict[str, Any]] = attrs.Factory(list)
    quarantined: list[dict[str, Any]] = attrs.Factory(list)

    @property
    def transport(self) -> str:
        return self.channel.kind

    def owns(self, record: dict[str, Any]) -> bool:
        if record.get("transport") != self.transport or record.get("system_title") != self.title:
            return False
        return self.counter is None or record.get("invocation_counter") == self.counter


class Ports:
    """Free TCP ports, each held open until `release` so that no two are the same."""

    def __init__(self) -> None:
        self.held: list[socket.socket] = []

    def take(self) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.held.append(sock)
        return int(sock.getsockname()[1])

    def release(self) -> None:
        for sock in self.held:
            sock.close()


def _toml_table(name: str, values: dict[str, object]) -> str:
    body = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    return f"[[{name}]]\n{body}\n"


def _kinds(capture: Capture) -> tuple[str, str] | None:
    """(serial listener, TCP bridge listener) for a capture's framing."""
    if capture.framing in ("hdlc", "apdu"):
        return "hdlc_serial", "hdlc_tcp"
    if capture.framing == "mbus" and feature_present("mbus"):
        return "mbus_serial", "mbus_tcp"
    return None


def _stream(capture: Capture) -> bytes:
    if capture.framing == "apdu":  # none published: HDLC UI frames by dlmsd's own encoder
        return simulator.hdlc_frames(without_llc(capture.raw))
    return capture.raw


def _tcp_takes_system_title(kind: str) -> bool:
    from dlmsd.service import config

    cls = {"hdlc_tcp": "HdlcTcpListenerConfig", "mbus_tcp": "MbusTcpListenerConfig"}[kind]
    return "system_title" in attrs.fields_dict(getattr(config, cls))


@attrs.define
class Plan:
    feeds: list[Feed]
    channels: list[Channel]
    listeners: str
    keys: str


def plan_feeds(ports: Ports) -> Plan:
    """Channels, feeds, listener tables and the key store for the corpus.

    A plaintext push goes over its own serial port and again over a TCP bridge
    listener that names its meter (when that listener can). The ciphered pushes of
    one meter share one channel, in counter order (replay protection accepts each
    once, in order); meters alternate between a serial port and the shared bridge.
    """
    feeds: list[Feed] = []
    channels: list[Channel] = []
    listeners = ""
    entries: dict[str, str] = {}
    bridges: dict[str, int] = {}
    by_title: dict[str, Channel] = {}
    ciphered: list[tuple[str, int, int, Capture]] = []
    for index, capture in enumerate(CAPTURES):
        kinds = _kinds(capture)
        if kinds is None:
            continue
        serial_kind, tcp_kind = kinds
        header = cipher_header(capture.raw)
        if header is not None and (capture.keys is not None or capture.envelope_only):
            title = capture.system_title or header[0]
            ciphered.append((title, header[1], index, capture))
            if capture.keys is not None:
                entries.setdefault(title, meter_entry(capture, title, capture.make))
            continue
        title = plaintext_title(index, 1)
        entries[title] = meter_entry(capture, title, f"{capture.id}@serial")
        channel = Channel.serial(serial_kind, f"serial-{index}", title)
        channel.stream += _stream(capture)
        channels.append(channel)
        feeds.append(Feed(capture, channel, title))
        if _tcp_takes_system_title(tcp_kind):
            title = plaintext_title(index, 2)
            entries[title] = meter_entry(capture, title, f"{capture.id}@bridge")
            port = ports.take()
            name = f"bridge-{index}"
            listeners += _toml_table(
                f"listeners.{tcp_kind}",
                {"name": name, "address": "127.0.0.1", "port": port, "system_title": title},
            )
            channel = Channel(tcp_kind, name, port=port)
            channel.stream += _stream(capture)
            channels.append(channel)
            feeds.append(Feed(capture, channel, title))
    for title, counter, index, capture in sorted(ciphered, key=lambda item: item[:2]):
        channel = by_title.get(title)
        if channel is None:
            serial_kind, tcp_kind = _kinds(capture) or ("", "")
            if len(by_title) % 2:
                if tcp_kind not in bridges:
                    bridges[tcp_kind] = ports.take()
                    listeners += _toml_table(
                        f"listeners.{tcp_kind}",
                        {"name": tcp_kind, "address": "127.0.0.1", "port": bridges[tcp_kind]},
                    )
                channel = Channel(tcp_kind, tcp_kind, port=bridges[tcp_kind])
            else:
                channel = Channel.serial(serial_kind, f"serial-{index}")
            by_title[title] = channel
            channels.append(channel)
        channel.stream += _stream(capture)
        feeds.append(Feed(capture, channel, title, counter))
    listeners += "".join(channel.listener_table() for channel in channels)
    return Plan(feeds, channels, listeners, "\n".join(entries.values()))


def _send(channels: list[Channel]) -> list[socket.socket]:
    """Write every channel's bytes: a pty as a meter would, a TCP bridge connection."""
    connections = []
    for channel in channels:
        if channel.master is not None:
            view = memoryview(bytes(channel.stream))
            while view:
                view = view[os.write(channel.master, view) :]
        else:
            assert channel.port is not None
            connection = socket.create_connection(("127.0.0.1", channel.port))
            connection.sendall(channel.stream)
            connections.append(connection)  # left open: a bridge keeps its connection
    return connections


def _wait_for_start(process: subprocess.Popen[bytes], deadline: float) -> str:
    assert process.stdout is not None
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.decode(errors="replace"))
        if "dlmsd started" in lines[-1]:
            return "".join(lines)
    raise AssertionError("the daemon did not start:\n" + "".join(lines))


@pytest.fixture(scope="module")
def daemon_feeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Feed]]]:
    root = tmp_path_factory.mktemp("field-daemon")
    ports = Ports()
    plan = plan_feeds(ports)
    ports.release()
    keys_path = write_private(root / "keys.toml", plan.keys)
    config = root / "dlmsd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{root / "state"}"\n\n{plan.listeners}'
        f'[keys]\nfiles = ["{keys_path}"]\n\n[metrics]\nenabled = false\n\n'
        + _toml_table(
            "sinks", {"type": "jsonl", "name": "jsonl", "path": str(root / "readings.jsonl")}
        )
        + '[state]\nsynchronous = "normal"\ncommit_interval = 0.01\n'
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        twistd_command(config), cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    connections: list[socket.socket] = []
    try:
        _wait_for_start(process, time.monotonic() + 30)
        time.sleep(0.3)  # serial ports open as the service starts; let them settle
        connections = _send(plan.channels)
        expected = sum(1 for feed in plan.feeds if not missing_features(feed.capture))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _collect(plan.feeds, root)
            if sum(1 for feed in plan.feeds if _done(feed)) >= expected:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # anything a slow capture still brings
        _collect(plan.feeds, root)
    finally:
        for connection in connections:
            connection.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        for channel in plan.channels:
            channel.close()
    by_capture: dict[str, list[Feed]] = {}
    for feed in plan.feeds:
        by_capture.setdefault(feed.capture.id, []).append(feed)
    yield by_capture


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _collect(feeds: list[Feed], root: Path) -> None:
    records = _json_lines(root / "readings.jsonl")
    quarantined = _json_lines(root / "state" / "quarantine" / "quarantine.jsonl")
    for feed in feeds:
        feed.records = [record for record in records if feed.owns(record)]
        feed.quarantined = [q for q in quarantined if q.get("system_title") == feed.title]


def _done(feed: Feed) -> bool:
    return bool(feed.quarantined if feed.capture.envelope_only else feed.records)


@pytest.mark.parametrize("index", range(len(CAPTURES)), ids=IDS)
def test_daemon_records_the_stated_values(index: int, daemon_feeds: dict[str, list[Feed]]) -> None:
    capture = CAPTURES[index]
    feeds = daemon_feeds.get(capture.id, [])
    problems = [] if feeds else [f"no {capture.framing} listener in this tree"]
    for feed in feeds:
        if capture.envelope_only:
            if not feed.quarantined:
                problems.append(f"{feed.transport}: not quarantined under {feed.title}")
            continue
        problems += [f"{feed.transport}: {problem}" for problem in compare(capture, feed.records)]
    RESULTS["daemon"][capture.id] = not problems
    settle(capture, problems)
