"""The Twisted client against the emulator, both on the real reactor, over real sockets."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred

from dlmsd.client import emulator
from dlmsd.client.emulator import EmulatorConfig, Faults
from dlmsd.client.errors import (
    ConnectionFailed,
    ProtocolViolation,
    TimeoutError,
    WrongKeys,
    WrongPassword,
)
from dlmsd.client.twisted import TwistedSession, connect_serial_async, connect_tcp_async
from dlmsd.protocol.association import Authentication, ClientSettings
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.security import Suite0Cipher
from tests.client.conftest import AK, EK

reactor: Any = _reactor
CIPHER = Suite0Cipher(bytes.fromhex(EK), bytes.fromhex(AK))
GAS_PROFILE = "7-0:99.1.0*255"


def hls(cipher: Suite0Cipher = CIPHER, **options: Any) -> ClientSettings:
    return ClientSettings(
        client_sap=1,
        authentication=Authentication.HLS_GMAC,
        cipher=cipher,
        client_system_title=b"DLMSDTST",
        **options,
    )


async def started(config: EmulatorConfig, **options: Any) -> emulator.RunningEmulator:
    return emulator.start(reactor, config, model=emulator.emulator_model(config.hours), **options)


async def stopped(running: emulator.RunningEmulator) -> None:
    await running.stop()


async def settle() -> None:
    """Let the reactor run the closing handshakes of the test's connections."""
    waiter: Deferred[None] = Deferred()
    reactor.callLater(0.05, waiter.callback, None)
    await waiter


async def session_for(running: emulator.RunningEmulator, **options: Any) -> TwistedSession:
    return await connect_tcp_async(
        reactor, "127.0.0.1", running.port, transport=running.config.transport, **options
    )


@pytest_twisted.ensureDeferred
async def test_wrapper_register_profile_objects() -> None:
    running = await started(EmulatorConfig(hours=72))
    try:
        session = await session_for(running, timeout=2)
        reading = await session.read_register("7-0:3.0.0*255")
        assert reading.unit == "m³" and isinstance(reading.value, Decimal)
        rows = await session.read_profile(GAS_PROFILE, entries=(1, 24))
        assert len(rows) == 24
        objects = await session.object_list()
        assert any(entry.class_id == 70 for entry in objects)
        await session.close()
        assert session.closed
    finally:
        await settle()
        await stopped(running)


@pytest_twisted.ensureDeferred
async def test_hdlc_hls_gmac_set_action_and_gbt_year() -> None:
    config = EmulatorConfig(
        transport="hdlc",
        authentication=Authentication.HLS_GMAC,
        cipher=CIPHER,
        gbt=True,
        gbt_window=8,
        hours=8760,
    )
    running = await started(config)
    try:
        session = await session_for(running, settings=hls(use_gbt=True, gbt_window=8), timeout=2)
        await session.set("0-0:25.9.0*255", Data.unsigned(5), attribute=6)
        assert await session.get("0-0:25.9.0*255", 6) == Data.unsigned(5)
        assert await session.action("0-0:96.3.10*255", 1) is None
        rows = await session.read_profile(GAS_PROFILE)  # a year of hourly rows, by GBT
        assert len(rows) == 8760
        await session.close()
    finally:
        await settle()
        await stopped(running)


@pytest_twisted.ensureDeferred
async def test_gbt_dropped_block_recovered() -> None:
    config = EmulatorConfig(gbt=True, hours=300, faults=Faults(drop_gbt_block=2))
    running = await started(config)
    try:
        settings = ClientSettings(use_gbt=True, gbt_window=3, max_pdu_size=512)
        session = await session_for(running, settings=settings, timeout=0.3)
        assert len(await session.read_profile(GAS_PROFILE)) == 300
        await session.close()
    finally:
        await settle()
        await stopped(running)


@pytest_twisted.ensureDeferred
async def test_wrong_password_and_wrong_keys_are_refused() -> None:
    lls = await started(EmulatorConfig(authentication=Authentication.LLS, password=b"secret"))
    keyed = await started(
        EmulatorConfig(authentication=Authentication.HLS_GMAC, cipher=CIPHER, hours=24)
    )
    try:
        wrong = ClientSettings(client_sap=1, authentication=Authentication.LLS, password=b"x")
        with pytest.raises(WrongPassword):
            await session_for(lls, settings=wrong, timeout=2)
        other = Suite0Cipher(bytes.fromhex(EK), bytes(16))
        with pytest.raises(WrongKeys):
            await session_for(keyed, settings=hls(other), timeout=2)
    finally:
        await settle()
        await stopped(lls)
        await stopped(keyed)


@pytest_twisted.ensureDeferred
async def test_silent_meter_times_out() -> None:
    running = await started(EmulatorConfig(hours=24, faults=Faults(silent=True)))
    try:
        with pytest.raises(TimeoutError, match=r"within 0\.2 s"):
            await session_for(running, timeout=0.2)
        hdlc = await started(
            EmulatorConfig(transport="hdlc", hours=24, faults=Faults(silent=True))
        )
        try:
            with pytest.raises(TimeoutError, match="after 2 retransmissions"):
                await session_for(hdlc, timeout=0.1, retries=2)
        finally:
            await stopped(hdlc)
    finally:
        await settle()
        await stopped(running)


@pytest_twisted.ensureDeferred
async def test_truncated_and_garbage_answers() -> None:
    truncating = await started(EmulatorConfig(hours=24, faults=Faults(truncate_after=1)))
    babbling = await started(EmulatorConfig(hours=24, faults=Faults(garbage_after=1)))
    try:
        session = await session_for(truncating, timeout=1)
        with pytest.raises(ProtocolViolation):
            await session.get("0-0:42.0.0*255")
        assert session.closed
        session = await session_for(babbling, timeout=1)
        with pytest.raises(ProtocolViolation):
            await session.get("0-0:42.0.0*255")
    finally:
        await settle()
        await stopped(truncating)
        await stopped(babbling)


@pytest_twisted.ensureDeferred
async def test_hdlc_lost_frame_recovered() -> None:
    config = EmulatorConfig(transport="hdlc", hours=48, faults=Faults(drop_frame=5))
    running = await started(config)
    try:
        session = await session_for(running, timeout=0.3)
        assert len(await session.read_profile(GAS_PROFILE)) == 48
        await session.close()
    finally:
        await settle()
        await stopped(running)


@pytest_twisted.ensureDeferred
async def test_serial_over_a_pty() -> None:
    running = await started(EmulatorConfig(transport="hdlc", hours=48), port=None, pty=True)
    try:
        session = await connect_serial_async(reactor, running.pty_path, timeout=2)
        reading = await session.read_register("1-0:1.8.0*255")
        assert reading.value == Decimal(12345678) and reading.unit == "Wh"
        assert len(await session.read_profile(GAS_PROFILE, entries=(1, 6))) == 6
        await session.close()
    finally:
        await settle()
        await stopped(running)


@pytest_twisted.ensureDeferred
async def test_connection_refused() -> None:
    running = await started(EmulatorConfig(hours=1))
    port = running.port
    await stopped(running)
    with pytest.raises(ConnectionFailed):
        await connect_tcp_async(reactor, "127.0.0.1", port, timeout=1)
