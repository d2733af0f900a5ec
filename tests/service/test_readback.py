"""Push-then-read end to end: real reactor, loopback, the emulator as the meter.

The emulated meter connects to the daemon's TCP wrapper listener, pushes an
encrypted DataNotification and then serves the association the daemon opens
on that same connection; the profile rows land in the JSONL sink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from dlmsd.client.emulator import (
    EmulatorConfig,
    PushThenServeProtocol,
    emulator_model,
    gas_push_apdu,
    push_then_serve,
)
from dlmsd.protocol.association import Authentication, Ciphering
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.service.keystore import KeyFileError, parse_key_text
from dlmsd.service.maker import DaemonService
from dlmsd.service.simulator import SimMeter, make_meters
from tests.service.test_daemon import (
    DaemonSetup,
    LogCapture,
    make_setup,
    metric,
    now,
    port_of,
    reactor,
    start,
    stop,
    wait_until,
)

PROFILE = "7-0:99.1.0*255"
PASSWORD = b"gas-secret"


def readback_keys(
    meter: SimMeter, password_file: Path, *, max_rows: int = 24, extra: str = ""
) -> str:
    return (
        f"\n[meters.{meter.system_title.hex().upper()}.read_after_push]\n"
        f'profile = "{PROFILE}"\n'
        "client_sap = 1\n"
        'authentication = "lls"\n'
        f'password_file = "{password_file}"\n'
        f"max_rows = {max_rows}\n"
        "timeout = 2.0\n"
        f"{extra}"
    )


def setup_with_readback(tmp_path: Path, password: bytes, **options: Any) -> DaemonSetup:
    secret = tmp_path / "meter.pw"
    secret.write_bytes(password + b"\n")
    secret.chmod(0o600)
    # make_setup's fleet: seed 7.
    extra = readback_keys(make_meters(2, seed=7)[0], secret, **options)
    return make_setup(tmp_path, meters=2, tcp={}, extra_keys=extra)


def emulator_config(meter: SimMeter, **changes: Any) -> EmulatorConfig:
    return EmulatorConfig(
        authentication=Authentication.LLS,
        password=PASSWORD,
        cipher=Suite0Cipher(meter.encryption_key, meter.authentication_key),
        system_title=meter.system_title,
        hours=48,
        **changes,
    )


async def push(
    service: DaemonService, config: EmulatorConfig, counter: int, hours: int
) -> PushThenServeProtocol:
    apdu = gas_push_apdu(config, counter, now(), 1234 + counter)
    model = emulator_model(hours, config.system_title)
    connected: PushThenServeProtocol = await push_then_serve(
        reactor, "127.0.0.1", port_of(service, "tcp"), config, apdu, model=model
    )
    return connected


def of_kind(setup: DaemonSetup, kind: str | None) -> list[dict[str, Any]]:
    return [record for record in setup.records() if record.get("kind") == kind]


def readbacks(service: DaemonService, result: str) -> float:
    return metric(service, "dlmsd_readback_total", result=result)


@pytest_twisted.ensureDeferred
async def test_push_then_read_delivers_new_profile_rows_each_time(tmp_path: Path) -> None:
    setup = setup_with_readback(tmp_path, PASSWORD)
    meter = setup.meters[0]
    service = start(setup)
    config = emulator_config(meter)
    try:
        first = await push(service, config, 1, hours=48)
        await wait_until(lambda: len(of_kind(setup, "profile")) == 24 and readbacks(service, "ok"))
        # The session released; the connection stays the meter's, back with the ingest.
        assert not first.closed.called
        hang_up(first)
        await first.closed
        # Two more hourly entries since: the second push reads only those.
        second = await push(service, config, 2, hours=50)
        await wait_until(lambda: len(of_kind(setup, "profile")) == 26)
        await wait_until(lambda: readbacks(service, "ok") == 2)
        hang_up(second)
        await second.closed
    finally:
        await stop(service)
    pushes = of_kind(setup, "push")
    assert [p["invocation_counter"] for p in pushes] == [1, 2]
    rows = of_kind(setup, "profile")
    times = [row["entry_time"] for row in rows]
    assert times == sorted(times) and len(set(times)) == 26
    row = rows[0]
    title = meter.system_title.hex().upper()
    assert row["system_title"] == title and row["obis"] == PROFILE
    assert row["record_id"] == f"{title}:{PROFILE}:{row['entry_time']}"
    assert row["meter"] == "sim-gas-0" and row["transport"] == "tcp"
    assert row["columns"][0] == "0-0:1.0.0*255:2" and len(row["values"]) == len(row["columns"])
    assert row["units"][2] == "m³"
    assert row["values"][0] == row["entry_time"]
    assert metric(service, "dlmsd_pushes_rejected_total", reason="malformed") == 0


@pytest_twisted.ensureDeferred
async def test_wrong_password_closes_the_connection_but_keeps_the_push(tmp_path: Path) -> None:
    setup = setup_with_readback(tmp_path, b"not-the-password")
    service = start(setup)
    config = emulator_config(setup.meters[0])
    try:
        with LogCapture() as logs:
            meter = await push(service, config, 7, hours=48)
            await wait_until(lambda: readbacks(service, "refused") == 1)
            await meter.closed  # the daemon closed it
            await wait_until(lambda: len(of_kind(setup, "push")) == 1)
    finally:
        await stop(service)
    assert of_kind(setup, "profile") == []
    assert of_kind(setup, "push")[0]["invocation_counter"] == 7
    [event] = logs.having(result="refused")
    assert "readback" in event["log_format"] and event["meter"] == "sim-gas-0"
    assert "not-the-password" not in logs.text


@pytest_twisted.ensureDeferred
async def test_silent_meter_times_out_and_other_connections_go_on(tmp_path: Path) -> None:
    setup = setup_with_readback(tmp_path, PASSWORD)
    service = start(setup)
    silent = emulator_config(setup.meters[0])
    try:
        # A silent meter: the push is written, the association never answered.
        meter = await push(service, silent, 1, hours=48)
        meter.meter.config = emulator_config(setup.meters[0], faults=_silent())
        other = setup.meters[1]
        from dlmsd.service import simulator

        frame = simulator.wrap(simulator.build_push(other, 5, now()))
        await wait_until(lambda: len(of_kind(setup, "push")) == 1)
        # Meanwhile another meter pushes on its own connection and is accepted.
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        client = Protocol()
        await connectProtocol(  # type: ignore[no-untyped-call]
            TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(service, "tcp")), client
        )
        link: Any = client.transport
        link.write(frame)
        await wait_until(lambda: len(of_kind(setup, "push")) == 2)
        assert readbacks(service, "timeout") == 0  # still waiting for the silent one
        await wait_until(lambda: readbacks(service, "timeout") == 1, timeout=5.0)
        await meter.closed
        hang_up(client)
    finally:
        await stop(service)


def hang_up(protocol: Any) -> None:
    transport: Any = protocol.transport
    transport.loseConnection()


def _silent() -> Any:
    from dlmsd.client.emulator import Faults

    return Faults(silent=True)


def test_read_after_push_table_is_validated(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("secret\n")
    base = (
        "[meters.4B464D1234567890]\n"
        'encryption_key = "000102030405060708090A0B0C0D0E0F"\n'
        'authentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"\n'
        "[meters.4B464D1234567890.read_after_push]\n"
    )
    [entry] = parse_key_text(
        base + f'profile = "{PROFILE}"\nauthentication = "lls"\npassword_file = "{secret}"\n'
        'ciphering = "global"\nmax_rows = 5\n'
    )
    settings = entry.read_after_push
    assert settings is not None
    assert str(settings.profile) == PROFILE and settings.password == b"secret"
    assert settings.ciphering == Ciphering.GLOBAL and settings.max_rows == 5
    assert "secret" not in repr(entry) and "secret" not in repr(settings)
    for body, message in [
        ('profile = "nonsense"\n', "read_after_push.profile"),
        (f'profile = "{PROFILE}"\nauthentication = "lls"\n', "password_file"),
        (f'profile = "{PROFILE}"\nmax_rows = 0\n', "max_rows"),
        (f'profile = "{PROFILE}"\ncolour = "red"\n', "unknown key"),
        (f'profile = "{PROFILE}"\npassword_file = "/nonexistent/pw"\n', "cannot read"),
    ]:
        with pytest.raises(KeyFileError, match=message):
            parse_key_text(base + body)
