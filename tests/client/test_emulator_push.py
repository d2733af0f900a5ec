"""The emulator's push setup sends real pushes: `dlmsd emulate --push-to HOST:PORT`.

Unit: :func:`build_push` puts the push object list's current values in a
general-glo-ciphered DataNotification that dlmsd's own push pipeline opens.
End to end: `dlmsd emulate --push-to` (a subprocess) pushes to a running
`twistd dlmsd` over TCP and UDP; the records carry the meter's values, with
the same numbers `dlmsd get` reads from the emulator.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from dlmsd.client.emulator import emulator_model
from dlmsd.client.emulator_push import (
    build_push,
    parse_push_target,
    push_objects,
    set_push_objects,
)
from dlmsd.cosem import objects as ic
from dlmsd.protocol.push import decode_push
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.wrapper import datagram_apdu
from tests.faults.support import DaemonProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = bytes.fromhex("454D550000000007")  # "EMU" + 7
CET = dt.timezone(dt.timedelta(hours=1))


def test_build_push_sends_the_push_object_list_values_ciphered() -> None:
    model = emulator_model(hours=24, system_title=TITLE)
    cipher = Suite0Cipher(EK, AK)
    moment = dt.datetime(2023, 1, 2, 0, 0, tzinfo=CET)
    before = model.server_invocation_counter
    frame = build_push(model, TITLE, cipher, moment)
    assert model.server_invocation_counter == before + 1
    apdu = datagram_apdu(frame)
    assert apdu[0] == 0xDB  # general-glo-ciphering
    record = decode_push(apdu, lambda _title: cipher).to_record()
    assert record["invocation_counter"] == before
    readings = {reading["obis"]: reading for reading in record["readings"]}
    volume = model.objects[ic.GAS_VOLUME].value(2)
    assert readings["7-0:3.0.0*255"]["scaler"] == -3
    assert Decimal(str(readings["7-0:3.0.0*255"]["value"])) == Decimal(volume.value).scaleb(-3)
    assert readings["0-0:25.9.0*255"]["value"] == "0000190900ff"  # which push this is
    assert dt.datetime.fromisoformat(str(record["datetime"])) == moment


def test_push_objects_are_configurable_and_checked() -> None:
    model = emulator_model(hours=2)
    set_push_objects(model, ["1-0:1.8.0.255", "0-0:1.0.0.255:2"])
    listed = [(c.class_id, str(c.logical_name), c.attribute_index) for c in push_objects(model)]
    assert listed == [
        (40, "0-0:25.9.0*255", 1),
        (3, "1-0:1.8.0*255", 2),
        (8, "0-0:1.0.0*255", 2),
    ]
    frame = build_push(model, TITLE, None, dt.datetime(2023, 1, 1, tzinfo=CET))
    record = decode_push(datagram_apdu(frame), lambda _title: None).to_record()
    assert record["security"] == "none"
    energy = next(r for r in record["readings"] if r["obis"] == "1-0:1.8.0*255")
    assert (energy["value"], energy["unit"]) == (12_345_678, "Wh")
    with pytest.raises(ValueError, match="no such attribute"):
        set_push_objects(model, ["1-0:99.99.0.255"])
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_push_target("nohost")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("emulator-push")
    process = DaemonProcess(root, meters=1)
    process.keys.write_text(
        process.keys.read_text() + f'\n[meters.{TITLE.hex().upper()}]\nname = "emulator"\n'
        f'encryption_key = "{EK.hex()}"\nauthentication_key = "{AK.hex()}"\n'
    )
    with process:
        yield process


def run_emulator(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "dlmsd.cli", "emulate", "--port", "0", "--hours", "24"]
    process = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, env=env, text=True)
    assert process.stdout is not None
    started = json.loads(process.stdout.readline())
    assert started["push_to"].startswith(("tcp://", "udp://"))
    return process


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_emulate_push_to_reaches_a_running_daemon(daemon: DaemonProcess, protocol: str) -> None:
    port = daemon.tcp_port if protocol == "tcp" else daemon.udp_port
    title = TITLE.hex().upper()
    before = {r["invocation_counter"] for r in daemon.records() if r["system_title"] == title}
    emulator = run_emulator(
        "--system-title",
        TITLE.hex(),
        "--ek",
        EK.hex(),
        "--ak",
        AK.hex(),
        "--push-to",
        f"127.0.0.1:{port}",
        "--push-protocol",
        protocol,
        "--push-every",
        "0.2",
        "--invocation-counter",
        str({"tcp": 1_000, "udp": 2_000}[protocol]),
    )
    try:

        def new_records() -> list[dict[str, object]]:
            return [
                r
                for r in daemon.records()
                if r["system_title"] == title and r["invocation_counter"] not in before
            ]

        wait_for(lambda: len(new_records()) >= 2, 15, f"two pushes over {protocol}")
    finally:
        emulator.terminate()
        emulator.wait(10)
    record = new_records()[0]
    assert record["security"] == "auth+enc" and record["transport"] == protocol
    readings = {reading["obis"]: reading for reading in record["readings"]}  # type: ignore[attr-defined]
    model = emulator_model(hours=24)
    volume = model.objects[ic.GAS_VOLUME].value(2)
    assert Decimal(str(readings["7-0:3.0.0*255"]["value"])) == Decimal(volume.value).scaleb(-3)
    assert readings["7-0:3.0.0*255"]["unit"] == "m³"
    assert record["invocation_counter"] == {"tcp": 1_000, "udp": 2_000}[protocol]
    assert daemon.rejected("replay") == 0
