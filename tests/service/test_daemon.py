"""End to end: the real service tree in-process (real reactor, loopback, real SQLite).

Also holds the helpers the listener tests share (`DaemonSetup`, `start`,
`LogCapture`, ...): they start the whole daemon on ephemeral ports with a
temporary state directory and key file, and send real frames at it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import task, utils
from twisted.logger import globalLogPublisher

from dlmsd.service import simulator
from dlmsd.service.config import ConfigError, load_config
from dlmsd.service.logging import format_event
from dlmsd.service.maker import DaemonService, Options, StartupError, build_service, makeService
from dlmsd.service.simulator import SimMeter, make_meters
from tests.records import validated
from tests.twistd import twistd_command
from tests.vectors import by_kind, vector_id

reactor: Any = _reactor
REPO = Path(__file__).resolve().parents[2]

# tests/data/published.json, kind udp_wrapper+general_glo_ciphering_datanotification:
# four consecutive pushes (IC 485..488) of system title 2F19229199164103, keys
# "MYDUMMYGLOBALKEY" (source: dlms-cosem tests/test_udp_message.py:L6..L9).
UDP_VECTORS = by_kind("udp_wrapper+general_glo_ciphering_datanotification")
VECTOR_TITLE = "2F19229199164103"
VECTOR_KEY = "4D5944554D4D59474C4F42414C4B4559"


def vector_bytes(index: int) -> bytes:
    return bytes.fromhex(UDP_VECTORS[index]["hex"])


# --- helpers shared by the listener tests -------------------------------------------


def vector_meter_toml(security: str = '["auth+enc"]', name: str = "vector-meter") -> str:
    return (
        f"[meters.{VECTOR_TITLE}]\n"
        f'name = "{name}"\n'
        f'encryption_key = "{VECTOR_KEY}"\n'
        f'authentication_key = "{VECTOR_KEY}"\n'
        'labels = { site = "published" }\n'
        f"security = {security}\n"
    )


def write_keys(path: Path, meters: Iterable[SimMeter], extra: str = "") -> Path:
    text = simulator.key_file_text(list(meters)) + "\n" + vector_meter_toml() + extra
    path.write_text(text)
    path.chmod(0o600)
    return path


def _table(name: str, values: dict[str, object]) -> str:
    lines = [f"[[{name}]]"]
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@attrs.define
class DaemonSetup:
    """A config, a key file and a state directory under one temporary directory."""

    root: Path
    config_path: Path
    keys_path: Path
    meters: list[SimMeter]

    @property
    def readings(self) -> Path:
        return self.root / "readings.jsonl"

    @property
    def quarantine(self) -> Path:
        return self.root / "state" / "quarantine" / "quarantine.jsonl"

    def records(self) -> list[dict[str, Any]]:
        if not self.readings.exists():
            return []
        lines = self.readings.read_text().splitlines()
        return validated(json.loads(line) for line in lines if line)


def make_setup(
    root: Path,
    *,
    meters: int = 4,
    udp: dict[str, object] | None = None,
    tcp: dict[str, object] | None = None,
    hdlc_tcp: dict[str, object] | None = None,
    hdlc_serial: dict[str, object] | None = None,
    extra_keys: str = "",
    extra: str = "",
    metrics: bool = True,
    ports: dict[str, int] | None = None,
) -> DaemonSetup:
    """Write a daemon config on ephemeral ports; `None` tables are left out."""
    fleet = make_meters(meters, seed=7)
    keys = write_keys(root / "keys.toml", fleet, extra_keys)
    ports = ports or {}
    text = f'[daemon]\nstate_dir = "{root / "state"}"\n\n'
    for kind, values in (("udp", udp), ("tcp", tcp), ("hdlc_tcp", hdlc_tcp)):
        if values is not None:
            table = {"name": kind, "address": "127.0.0.1", "port": ports.get(kind, 0)}
            table.update(values)
            text += _table(f"listeners.{kind}", table)
    if hdlc_serial is not None:
        text += _table("listeners.hdlc_serial", {"name": "serial", **hdlc_serial})
    text += f'\n[keys]\nfiles = ["{keys}"]\n'
    text += (
        f'\n[metrics]\nenabled = {str(metrics).lower()}\naddress = "127.0.0.1"\n'
        f"port = {ports.get('metrics', 0)}\n"
    )
    text += _table(
        "sinks", {"type": "jsonl", "name": "jsonl", "path": str(root / "readings.jsonl")}
    )
    text += '\n[state]\nsynchronous = "normal"\ncommit_interval = 0.001\n'
    text += extra
    config = root / "dlmsd.toml"
    config.write_text(text)
    return DaemonSetup(root, config, keys, fleet)


def start(setup: DaemonSetup, **kwargs: Any) -> DaemonService:
    """Build and start the daemon in-process (no signal handlers unless asked)."""
    kwargs.setdefault("handle_signals", False)
    service = build_service(load_config(setup.config_path), **kwargs)
    service.startService()
    return service


async def stop(service: DaemonService) -> None:
    await service.stopService()


def port_of(service: DaemonService, name: str) -> int:
    listener: Any = service.listener(name)
    return int(listener.port_number)


def metric(service: DaemonService, name: str, **labels: str) -> float:
    return service.metrics.value(name, labels)


def rejected(service: DaemonService, reason: str) -> float:
    return metric(service, "dlmsd_pushes_rejected_total", reason=reason)


def connect_tcp(port: int) -> socket.socket:
    """A non-blocking client connection to a listener on localhost."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def fail_once(real: Callable[[Any], None], error: Exception) -> Callable[[Any], None]:
    """`real`, except that its first call raises `error` (an injected fault)."""
    calls = 0

    def wrapper(argument: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        real(argument)

    return wrapper


def send_udp(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))


def sleep(seconds: float) -> Any:
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Let the reactor run until `predicate()` is true (fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await sleep(0.005)


class LogCapture:
    """Collects every log event while active; `text` has them formatted."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    @property
    def text(self) -> str:
        return "\n".join(format_event(event) for event in self.events)

    def having(self, **fields: object) -> list[dict[str, Any]]:
        return [
            event
            for event in self.events
            if all(event.get(key) == value for key, value in fields.items())
        ]


def assert_no_key_material(text: str, meters: Iterable[SimMeter]) -> None:
    """No encryption or authentication key, in either case of hex, in `text`."""
    keys = [VECTOR_KEY, "MYDUMMYGLOBALKEY"]
    for meter in meters:
        keys += [meter.encryption_key.hex(), meter.authentication_key.hex()]
    lowered = text.lower()
    for key in keys:
        assert key.lower() not in lowered


def now() -> datetime:
    return datetime.now(UTC)


# --- the accept path with the published vectors -------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("index", range(len(UDP_VECTORS)), ids=[vector_id(v) for v in UDP_VECTORS])
async def test_published_udp_vector_is_accepted_end_to_end(tmp_path: Path, index: int) -> None:
    vector = UDP_VECTORS[index]
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    try:
        send_udp(port_of(service, "udp"), bytes.fromhex(vector["hex"]))
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)
    record = setup.records()[0]
    keys = vector["keys"]
    assert record["system_title"] == keys["system_title"].upper()
    assert record["invocation_counter"] == keys["invocation_counter"]
    assert record["security"] == "auth+enc"
    plaintext = bytes.fromhex(vector["expected"]["derived"]["plaintext_hex"])
    # 0F | long-invoke-id(4) | 00 (no date-time) | body: an octet-string of 34 bytes
    assert record["invoke_id"] == int.from_bytes(plaintext[1:5], "big") & 0xFFFFFF
    assert record["datetime"] is None
    assert record["body"]["type"] == "octet-string"
    assert record["body"]["value"] == plaintext[8:].hex()
    assert record["transport"] == "udp"
    assert record["source"].startswith("127.0.0.1:")
    assert record["meter"] == "vector-meter"
    assert record["labels"] == {"site": "published"}
    assert "received_at" in record


@pytest_twisted.ensureDeferred
async def test_simulated_pushes_over_udp_tcp_and_hdlc_reach_the_jsonl_file(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, meters=6, udp={}, tcp={}, hdlc_tcp={})
    service = start(setup)
    try:
        runs = [
            ("udp", "udp", 1),
            ("tcp", "tcp", 100),
            ("hdlc-tcp", "hdlc_tcp", 200),
        ]
        for transport, listener, first_ic in runs:
            run = simulator.Simulation(
                setup.meters,
                transport=transport,
                port=port_of(service, listener),
                rate=0,
                count=12,
                start_ic=first_ic,
                connections=3,
            )
            await run.run(reactor)
        await wait_until(lambda: len(setup.records()) == 36)
        assert metric(service, "dlmsd_pushes_accepted_total") == 36
        assert metric(service, "dlmsd_readings_written_total", sink="jsonl") == 36
    finally:
        await stop(service)
    records = setup.records()
    assert sorted({r["transport"] for r in records}) == ["hdlc_tcp", "tcp", "udp"]
    assert len({(r["system_title"], r["invocation_counter"]) for r in records}) == 36
    gas = next(r for r in records if r["meter"] == "sim-gas-0")
    assert gas["labels"] == {"kind": "gas", "source": "simulator"}
    volume = next(x for x in gas["readings"] if x["obis"] == "7-0:3.0.0*255")
    assert volume["unit"] == "m³" and volume["scaler"] == -3


# --- rejections --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_forged_tag_is_counted_and_logged_and_the_next_frame_still_accepted(
    tmp_path: Path,
) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    forged = vector_bytes(0)[:-1] + bytes((vector_bytes(0)[-1] ^ 0x80,))
    try:
        with LogCapture() as logs:
            send_udp(port_of(service, "udp"), forged)
            await wait_until(lambda: rejected(service, "auth_failed") == 1)
            send_udp(port_of(service, "udp"), vector_bytes(0))
            await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)
    [event] = logs.having(reason="auth_failed")
    assert event["meter"] == VECTOR_TITLE
    assert "auth_failed" in format_event(event)
    # The forged frame used IC 485 but never advanced the counter.
    assert setup.records()[0]["invocation_counter"] == 485
    assert_no_key_material(logs.text, setup.meters)


@pytest_twisted.ensureDeferred
async def test_replay_is_refused_also_across_a_restart(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    try:
        send_udp(port_of(service, "udp"), vector_bytes(0), vector_bytes(1), vector_bytes(0))
        await wait_until(lambda: rejected(service, "replay") == 1 and len(setup.records()) == 2)
    finally:
        await stop(service)
    restarted = start(setup)
    try:
        port = port_of(restarted, "udp")
        send_udp(port, vector_bytes(1))  # IC 486 again, after the restart
        await wait_until(lambda: rejected(restarted, "replay") == 1)
        send_udp(port, vector_bytes(2))  # IC 487: new
        await wait_until(lambda: len(setup.records()) == 3)
    finally:
        await stop(restarted)
    assert [r["invocation_counter"] for r in setup.records()] == [485, 486, 487]


@pytest_twisted.ensureDeferred
async def test_unknown_meter_goes_to_quarantine_and_is_counted(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    stranger = simulator.make_meter(1, seed=99)
    apdu = simulator.build_push(stranger, 5, now())
    service = start(setup)
    try:
        with LogCapture() as logs:
            send_udp(port_of(service, "udp"), simulator.wrap(apdu))
            await wait_until(lambda: rejected(service, "unknown_meter") == 1)
    finally:
        await stop(service)
    [line] = setup.quarantine.read_text().splitlines()
    [kept] = validated([json.loads(line)])
    assert kept["frame_hex"] == apdu.hex().upper()
    assert kept["system_title"] == stranger.system_title.hex().upper()
    assert kept["transport"] == "udp"
    assert logs.having(reason="unknown_meter")
    assert setup.records() == []


@pytest_twisted.ensureDeferred
async def test_plaintext_against_policy_is_refused(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    meter = setup.meters[0]
    service = start(setup)
    try:
        port = port_of(service, "udp")
        # Authenticated-only (SC 0x10) is not in the default policy (auth+enc only).
        send_udp(port, simulator.wrap(simulator.build_push(meter, 3, now(), 0x10)))
        # A plaintext DataNotification names no meter, so no policy can allow it.
        send_udp(port, simulator.wrap(simulator.build_notification(meter, 4, now())))
        await wait_until(lambda: rejected(service, "policy") == 2)
        send_udp(port, simulator.wrap(simulator.build_push(meter, 5, now())))
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_meter_whose_policy_allows_authentication_only_is_accepted(tmp_path: Path) -> None:
    stranger = simulator.make_meter(3, seed=5)
    extra = "\n" + simulator.key_file_text([stranger]).split("\n", 2)[2]
    extra = extra.replace('source = "simulator" }', 'source = "simulator" }\nsecurity = ["auth"]')
    setup = make_setup(tmp_path, udp={}, extra_keys=extra)
    service = start(setup)
    try:
        send_udp(
            port_of(service, "udp"),
            simulator.wrap(simulator.build_push(stranger, 9, now(), 0x10)),
            simulator.wrap(simulator.build_push(stranger, 10, now())),  # auth+enc: refused
        )
        await wait_until(lambda: rejected(service, "policy") == 1 and setup.records())
    finally:
        await stop(service)
    assert setup.records()[0]["security"] == "auth"


# --- start-up refusals -------------------------------------------------------------


def test_key_file_readable_by_others_is_refused_at_start(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    setup.keys_path.chmod(0o644)
    with pytest.raises(StartupError, match=r"0644.*chmod 600"):
        build_service(load_config(setup.config_path), handle_signals=False)
    options = Options()
    options.parseOptions(["--config", str(setup.config_path)])
    with pytest.raises(SystemExit) as exit_info:
        makeService(options)
    message = str(exit_info.value.code)
    assert message.startswith("dlmsd: cannot start: key store:") and "\n" not in message


def test_config_with_a_typo_is_refused_with_the_key_path(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={"prot": 4059})
    options = Options()
    options.parseOptions(["--config", str(setup.config_path)])
    with pytest.raises(SystemExit, match=r"listeners\.udp\[0\]\.prot: unknown key"):
        makeService(options)


def test_bad_sink_option_is_refused_with_its_path(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={}, extra="")
    text = setup.config_path.read_text().replace(
        'type = "jsonl"', 'type = "jsonl"\nfsync = "sometimes"'
    )
    setup.config_path.write_text(text)
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.fsync: expected one of"):
        build_service(load_config(setup.config_path), handle_signals=False)


def test_unusable_state_dir_is_refused(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    (tmp_path / "state").write_text("a file where the state directory should be")
    with pytest.raises(StartupError, match=r"daemon\.state_dir"):
        build_service(load_config(setup.config_path), handle_signals=False)


def test_options_require_config() -> None:
    from twisted.python import usage

    with pytest.raises(usage.UsageError, match="--config"):
        Options().parseOptions([])


# --- key reload ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reload_with_a_broken_file_keeps_the_old_keys(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    try:
        with LogCapture() as logs:
            setup.keys_path.write_text("[meters.ZZ]\nname = 1\n")
            assert service.reload_keys() is False
            assert metric(service, "dlmsd_keystore_reload_failures_total") == 1
            send_udp(port_of(service, "udp"), vector_bytes(0))
            await wait_until(lambda: len(setup.records()) == 1)
            # A good file is taken: the vector meter is gone, a new one arrives (every
            # meter replaced: more than reload_max_drop, so forced).
            newcomer = simulator.make_meter(11, seed=3)
            setup.keys_path.write_text(simulator.key_file_text([newcomer]))
            assert service.reload_keys(force=True) is True
            assert metric(service, "dlmsd_keystore_meters") == 1
            port = port_of(service, "udp")
            send_udp(
                port, vector_bytes(1), simulator.wrap(simulator.build_push(newcomer, 1, now()))
            )
            await wait_until(lambda: len(setup.records()) == 2)
            await wait_until(lambda: rejected(service, "unknown_meter") == 1)
    finally:
        await stop(service)
    assert "key store reload refused" in logs.text
    assert_no_key_material(logs.text, setup.meters)


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_the_key_files(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup, handle_signals=True)
    try:
        before = len(service.keystore)
        write_keys(setup.keys_path, setup.meters[:3])
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: len(service.keystore) != before)
        assert len(service.keystore) == 4  # three simulated meters + the vector meter
    finally:
        await stop(service)


# --- keys never leak ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_keys_never_appear_in_logs_records_metrics_or_reprs(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={}, tcp={})
    service = start(setup)
    meter = setup.meters[1]
    try:
        with LogCapture() as logs:
            port = port_of(service, "udp")
            push = simulator.build_push(meter, 1, now())
            send_udp(port, simulator.wrap(push), simulator.wrap(simulator.forge(push)))
            send_udp(port, simulator.wrap(push), b"\x00\x01garbage", vector_bytes(3))
            await wait_until(lambda: len(setup.records()) == 2)
            await wait_until(lambda: rejected(service, "replay") >= 1)
            scrape = service.metrics.render().decode()
            entry = service.keystore.lookup(meter.system_title)
            reprs = (
                repr(entry)
                + repr(service.keystore)
                + repr(meter)
                + repr(entry.cipher if entry else None)
            )
            service.reload_keys()
    finally:
        await stop(service)
    everything = "\n".join(
        [
            logs.text,
            setup.readings.read_text(),
            scrape,
            reprs,
            json.dumps(logs.events, default=repr),
        ]
    )
    assert_no_key_material(everything, setup.meters)


# --- twistd as a real subprocess -------------------------------------------------------


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _twistd_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)  # so twistd finds twisted/plugins/dlmsd_plugin.py
    return env


def test_twistd_subprocess_receives_a_push_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    ports = {"udp": _free_port(socket.SOCK_DGRAM), "metrics": _free_port(socket.SOCK_STREAM)}
    setup = make_setup(tmp_path, udp={}, ports=ports, extra="")
    text = setup.config_path.read_text().replace("[daemon]\n", '[daemon]\nlog_format = "json"\n')
    setup.config_path.write_text(text)
    process = subprocess.Popen(
        twistd_command(setup.config_path),
        cwd=tmp_path,
        env=_twistd_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        started = False
        lines: list[bytes] = []
        assert process.stdout is not None
        while not started and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            started = b"dlmsd started" in line
        assert started, b"".join(lines).decode()
        send_udp(ports["udp"], vector_bytes(0))
        while time.monotonic() < deadline and not setup.records():
            time.sleep(0.02)
        assert setup.records()[0]["invocation_counter"] == 485
        process.send_signal(signal.SIGHUP)  # key reload through the real signal path
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # twistd re-raises the signal it stopped on (systemd counts that as a clean stop).
    assert process.returncode in (0, -signal.SIGTERM)
    text_out = b"".join(lines).decode() + output.decode()
    # log_format = "json": every line twistd printed after start is one JSON object.
    events = [json.loads(line) for line in text_out.splitlines() if line.startswith("{")]
    assert any("dlmsd stopped" in e["message"] for e in events)
    assert any("key store reloaded" in e["message"] for e in events)
    assert_no_key_material(text_out, setup.meters)


def test_twistd_subprocess_refuses_a_bad_config_with_one_line(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={"max_frame_size": "big"})
    result = subprocess.run(
        twistd_command(setup.config_path),
        cwd=tmp_path,
        env=_twistd_env(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert (
        b"dlmsd: cannot start: listeners.udp[0].max_frame_size: expected an integer"
        in result.stderr
    )
    assert b"Traceback" not in result.stderr


def test_twistd_subprocess_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        setup = make_setup(tmp_path, udp={}, ports={"udp": taken.getsockname()[1]})
        result = subprocess.run(
            twistd_command(setup.config_path),
            cwd=tmp_path,
            env=_twistd_env(),
            capture_output=True,
            timeout=30,
        )
    assert result.returncode != 0
    # Logging has started by then, so the line arrives through the log (stdout).
    output = result.stdout + result.stderr
    assert b"dlmsd: cannot start: udp: Couldn't listen on 127.0.0.1" in output
    assert b"Traceback" not in output


@pytest_twisted.ensureDeferred
async def test_simulate_command_line_against_the_daemon(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    keys = tmp_path / "sim-keys.toml"
    # The simulator writes a key file for its own fleet; the daemon is given it.
    code, out, err = await _run_cli(
        ["simulate", "--meters", "3", "--seed", "7", "--count", "0", "--keys-out", str(keys)]
    )
    assert code == 0, err
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    service = start(setup)
    try:
        code, out, err = await _run_cli(
            [
                "simulate",
                "--meters",
                "3",
                "--seed",
                "7",
                "--count",
                "9",
                "--rate",
                "0",
                "--port",
                str(port_of(service, "udp")),
                "--start-ic",
                "50",
            ]
        )
        assert code == 0, err
        assert "sent 9 pushes" in out
        await wait_until(lambda: len(setup.records()) == 9)
    finally:
        await stop(service)


async def _run_cli(arguments: list[str]) -> tuple[int, str, str]:
    out, err, code = await utils.getProcessOutputAndValue(
        sys.executable, ["-m", "dlmsd.cli", *arguments], env=_twistd_env(), path=str(REPO)
    )
    return int(code), out.decode(), err.decode()


# --- faults inside the daemon ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_bug_in_the_pipeline_is_logged_counted_and_serving_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    failing_once = fail_once(service.state.stage, RuntimeError("injected fault"))
    monkeypatch.setattr(service.state, "stage", failing_once)
    try:
        with LogCapture() as logs:
            send_udp(port_of(service, "udp"), vector_bytes(0))
            await wait_until(lambda: rejected(service, "internal_error") == 1)
            send_udp(port_of(service, "udp"), vector_bytes(1))
            await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)
    assert "injected fault" in logs.text  # with its traceback
    assert setup.records()[0]["invocation_counter"] == 486


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_accepts_nothing_and_the_push_can_come_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlmsd.service.state import StateError

    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    failing_once = fail_once(service.state._write, StateError("disk full (injected)"))
    monkeypatch.setattr(service.state, "_write", failing_once)
    try:
        port = port_of(service, "udp")
        send_udp(port, vector_bytes(0))
        await wait_until(lambda: rejected(service, "internal_error") == 1)
        assert metric(service, "dlmsd_pushes_accepted_total") == 0
        send_udp(port, vector_bytes(0))  # not a replay: the first was never accepted
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)
