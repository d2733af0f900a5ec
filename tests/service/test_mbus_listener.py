"""Wired M-Bus push listeners: over TCP (a serial-to-TCP bridge) and on a serial line
(a pseudo-terminal stands in for the customer interface: `SerialPort` opens its slave
side like any tty). Real captures come from tests/data/field/ (sources cited there);
pushes built with the simulator are synthetic."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.decoding import decode_capture
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.service import simulator
from dlmsd.service.config import ConfigError, parse_config
from dlmsd.service.maker import DaemonService, StartupError
from dlmsd.service.mbus import MbusPushReceiver
from tests.service.test_daemon import (
    connect_tcp as connect,
)
from tests.service.test_daemon import (
    make_setup,
    metric,
    now,
    port_of,
    rejected,
    sleep,
    start,
    stop,
    wait_until,
)

FIELD = Path(__file__).resolve().parents[1] / "data" / "field"
NETZ_NOE: dict[str, Any] = json.loads(
    (FIELD / "kaifa" / "netz-noe-kundenschnittstelle-example.json").read_text()
)
T210_D: dict[str, Any] = json.loads(
    (FIELD / "sagemcom" / "t210-d-netz-noe-domistyle-issue-12.json").read_text()
)
ENC_ONLY = simulator.make_meter(11, seed=3)  # a synthetic meter allowed only "enc"


def enc_meter_keys() -> str:
    title = ENC_ONLY.system_title.hex().upper()
    return (
        f'\n[meters.{title}]\nname = "mbus-meter"\n'
        f'encryption_key = "{ENC_ONLY.encryption_key.hex().upper()}"\nsecurity = ["enc"]\n'
    )


def netz_noe_keys() -> str:
    keys = NETZ_NOE["keys"]
    return (
        f'\n[meters.{keys["system_title"]}]\nname = "netz-noe-example"\n'
        f'encryption_key = "{keys["ek"]}"\nsecurity = ["enc"]\n'
    )


def listener(kind: str, **values: object) -> str:
    table = {"name": kind, **values}
    if kind == "mbus_tcp":
        table = {"address": "127.0.0.1", "port": 0, **table}
    lines = [f"\n[[listeners.{kind}]]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- over TCP ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_segmented_encryption_only_pushes_over_a_bridge(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, extra_keys=enc_meter_keys(), extra=listener("mbus_tcp"))
    service = start(setup)
    sock = connect(port_of(service, "mbus_tcp"))
    try:
        stream = b"\xe5\x00\x68noise"  # line noise first
        for counter in (1, 2, 3):
            apdu = simulator.build_push(ENC_ONLY, counter, now(), security_control=0x20)
            stream += simulator.mbus_frames(apdu, 40)
        for start_at in range(0, len(stream), 29):  # odd-sized pieces, as a bridge sends
            sock.sendall(stream[start_at : start_at + 29])
            await sleep(0)
        await wait_until(lambda: len(setup.records()) == 3)
        frames = metric(service, "dlmsd_frames_received_total", listener="mbus_tcp")
        assert frames > 3  # several frames per push
        # The noise: the bytes before a false start, and the false start itself.
        assert 1 <= rejected(service, "malformed") <= 2
    finally:
        sock.close()
        await stop(service)
    records = setup.records()
    assert {r["transport"] for r in records} == {"mbus_tcp"}
    assert {r["security"] for r in records} == {"enc"}
    assert [r["invocation_counter"] for r in records] == [1, 2, 3]
    assert records[0]["meter"] == "mbus-meter"


@pytest_twisted.ensureDeferred
async def test_encryption_only_is_refused_unless_the_meter_allows_it(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, extra=listener("mbus_tcp"))
    service = start(setup)
    sock = connect(port_of(service, "mbus_tcp"))
    meter = setup.meters[1]  # default policy: ["auth+enc"]
    try:
        sock.sendall(simulator.mbus_frames(simulator.build_push(meter, 1, now(), 0x20)))
        await wait_until(lambda: rejected(service, "policy") == 1)
        # The same meter's authenticated push over the same bridge is taken.
        sock.sendall(simulator.mbus_frames(simulator.build_push(meter, 2, now())))
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        sock.close()
        await stop(service)
    assert setup.records()[0]["security"] == "auth+enc"


@pytest_twisted.ensureDeferred
async def test_bridge_names_the_meter_of_plaintext_pushes(tmp_path: Path) -> None:
    meter = simulator.make_meter(12, seed=3)
    title = meter.system_title.hex().upper()
    keys = f'\n[meters.{title}]\nname = "plain"\nsecurity = ["none"]\n'
    setup = make_setup(tmp_path, extra_keys=keys, extra=listener("mbus_tcp", system_title=title))
    service = start(setup)
    sock = connect(port_of(service, "mbus_tcp"))
    try:
        sock.sendall(simulator.mbus_frames(simulator.build_notification(meter, 1, now())))
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        sock.close()
        await stop(service)
    record = setup.records()[0]
    assert record["system_title"] == title and record["meter"] == "plain"


@pytest_twisted.ensureDeferred
async def test_tail_segment_first_is_skipped_not_rejected(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, extra_keys=enc_meter_keys(), extra=listener("mbus_tcp"))
    service = start(setup)
    sock = connect(port_of(service, "mbus_tcp"))
    try:
        earlier = simulator.mbus_frames(simulator.build_push(ENC_ONLY, 1, now(), 0x20), 40)
        whole = simulator.mbus_frames(simulator.build_push(ENC_ONLY, 2, now(), 0x20), 40)
        sock.sendall(earlier[51:] + whole)  # joined after the first of its frames
        await wait_until(lambda: len(setup.records()) == 1)
        assert rejected(service, "malformed") == 0
        dropped = metric(service, "dlmsd_partial_pushes_dropped_total", listener="mbus_tcp")
        assert dropped == 1
    finally:
        sock.close()
        await stop(service)
    assert setup.records()[0]["invocation_counter"] == 2


@pytest_twisted.ensureDeferred
async def test_arbitrary_mbus_bytes_never_raise(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, extra_keys=enc_meter_keys(), extra=listener("mbus_tcp"))
    service = start(setup)
    try:
        _fuzz_receiver(service)
        assert rejected(service, "internal_error") == 0
    finally:
        await stop(service)


def _fuzz_receiver(service: DaemonService) -> None:
    push = simulator.mbus_frames(simulator.build_push(ENC_ONLY, 1, now(), 0x20), 30)
    t210 = bytes.fromhex(T210_D["hex"])

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=200),
                st.just(t210),
                st.builds(lambda cut: push[:cut], st.integers(0, len(push))),
                st.builds(lambda cut: push[cut:], st.integers(0, len(push))),
            ),
            max_size=6,
        )
    )
    def feed(chunks: list[bytes]) -> None:
        receiver = MbusPushReceiver(
            service.ingest,
            transport="mbus_tcp",
            source="fuzz",
            on_frame=lambda: None,
            max_apdu_size=512,
        )
        for chunk in chunks:
            receiver.data_received(chunk)

    feed()


# --- on a serial line (pty) ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_serial_port_receives_the_published_netz_noe_push(tmp_path: Path) -> None:
    master, slave = os.openpty()
    setup = make_setup(
        tmp_path,
        extra_keys=netz_noe_keys(),
        extra=listener("mbus_serial", device=os.ttyname(slave)),
    )
    service = start(setup)
    data = bytes.fromhex(NETZ_NOE["hex"])
    try:
        os.write(master, data[:100])  # a 2400 baud line delivers in pieces
        await sleep(0.02)
        os.write(master, data[100:])
        await wait_until(lambda: len(setup.records()) == 1)
        assert metric(service, "dlmsd_frames_received_total", listener="mbus_serial") == 2
    finally:
        await stop(service)
        os.close(master)
        os.close(slave)
    record = setup.records()[0]
    assert record["transport"] == "mbus_serial"
    assert record["system_title"] == NETZ_NOE["keys"]["system_title"]
    assert record["security"] == "enc"
    assert record["invocation_counter"] == 35
    assert record["datetime"] == NETZ_NOE["expected"]["datetime"]
    assert record["body"]["value"][2] == {"type": "double-long-unsigned", "value": 12937}
    # One code path: `dlmsd decode` gives the same push.
    [decoded] = decode_capture(data, lambda _title: _netz_noe_cipher())
    for key in ("system_title", "invocation_counter", "security", "datetime", "body", "readings"):
        assert record[key] == decoded[key]


def _netz_noe_cipher() -> Suite0Cipher:
    return Suite0Cipher(bytes.fromhex(NETZ_NOE["keys"]["ek"]), None, allow_encryption_only=True)


@pytest_twisted.ensureDeferred
async def test_serial_t210_d_long_frame_reaches_the_ingest(tmp_path: Path) -> None:
    # The real T210-D push (68 01 01 68, 257 bytes of user data): no key is published,
    # so it ends in quarantine as an unknown meter, which proves it was framed whole.
    master, slave = os.openpty()
    setup = make_setup(tmp_path, extra=listener("mbus_serial", device=os.ttyname(slave)))
    service = start(setup)
    try:
        os.write(master, bytes.fromhex(T210_D["hex"]))
        await wait_until(lambda: rejected(service, "unknown_meter") == 1)
        assert rejected(service, "malformed") == 0
    finally:
        await stop(service)
        os.close(master)
        os.close(slave)
    [line] = (setup.root / "state" / "quarantine").glob("*")
    assert "5341475905EADB83" in line.read_text().upper()


@pytest_twisted.ensureDeferred
async def test_serial_listener_names_its_meter_by_key_store_name(tmp_path: Path) -> None:
    master, slave = os.openpty()
    meter = simulator.make_meter(13, seed=3)
    title = meter.system_title.hex().upper()
    keys = f'\n[meters.{title}]\nname = "kitchen"\nsecurity = ["none"]\n'
    setup = make_setup(
        tmp_path,
        extra_keys=keys,
        extra=listener("mbus_serial", device=os.ttyname(slave), meter="kitchen"),
    )
    service = start(setup)
    try:
        os.write(master, simulator.mbus_frames(simulator.build_notification(meter, 1, now())))
        await wait_until(lambda: len(setup.records()) == 1)
    finally:
        await stop(service)
        os.close(master)
        os.close(slave)
    assert setup.records()[0]["system_title"] == title


def test_unknown_meter_name_stops_the_start(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, extra=listener("mbus_serial", device="/dev/null", meter="x"))
    with pytest.raises(StartupError, match=r"listeners.mbus_serial\[0\].meter: no meter"):
        start(setup)


# --- configuration -------------------------------------------------------------------

BASE = {"keys": {"files": ["k.toml"]}, "sinks": [{"type": "jsonl", "path": "x"}]}


def test_defaults_are_the_customer_interface_line_settings() -> None:
    config = parse_config(
        {**BASE, "listeners": {"mbus_serial": [{"device": "/dev/ttyUSB0"}], "mbus_tcp": [{}]}}
    )
    [serial] = config.listeners.mbus_serial
    assert (serial.baudrate, serial.bytesize, serial.parity, serial.stopbits) == (2400, 8, "E", 1)
    assert serial.name == "mbus_serial:/dev/ttyUSB0"
    [tcp] = config.listeners.mbus_tcp
    assert (tcp.port, tcp.system_title, tcp.meter) == (4061, None, None)
    per_source = parse_config(
        {**BASE, "listeners": {"mbus_tcp": [{"max_connections_per_source": 3}]}}
    )
    assert per_source.listeners.mbus_tcp[0].max_connections_per_source == 3


@pytest.mark.parametrize(
    ("table", "kind", "message"),
    [
        ({"baudrate": 9600}, "mbus_serial", "listeners.mbus_serial[0].device: required"),
        ({"device": "x", "parity": "X"}, "mbus_serial", "listeners.mbus_serial[0].parity"),
        ({"system_title": "12"}, "mbus_tcp", "listeners.mbus_tcp[0].system_title: expected"),
        (
            {"meter": "a", "system_title": "4B464D1234567890"},
            "mbus_tcp",
            "listeners.mbus_tcp[0].meter: give either meter or system_title",
        ),
        ({"prot": 1}, "mbus_tcp", "listeners.mbus_tcp[0].prot: unknown key"),
    ],
)
def test_bad_listener_tables_name_the_key(
    table: dict[str, object], kind: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config({**BASE, "listeners": {kind: [table]}})
