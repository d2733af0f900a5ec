"""The simulator: realistic pushes that the protocol core decodes, keys that load."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import DatagramProtocol

from dlmsd.cli import main as cli_main
from dlmsd.protocol.errors import AuthenticationFailed
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.hdlc.reassembly import SegmentReassembler
from dlmsd.protocol.hdlc.stream import HdlcStreamDecoder
from dlmsd.protocol.push import decode_push
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.wrapper import decode_datagram
from dlmsd.service import simulator
from dlmsd.service.keystore import KeyStore
from dlmsd.service.udp import set_receive_buffer
from tests.service.test_daemon import wait_until

reactor: Any = _reactor
MOMENT = datetime(2024, 3, 5, 12, 30, 15, tzinfo=UTC)


def cipher_of(meter: simulator.SimMeter) -> Any:
    return lambda title: meter.cipher if title == meter.system_title else None


def readings(meter: simulator.SimMeter, counter: int) -> dict[str, Any]:
    push = decode_push(simulator.build_push(meter, counter, MOMENT), cipher_of(meter))
    assert push.invocation_counter == counter
    assert push.system_title == meter.system_title
    assert push.envelope.security == "auth+enc"
    return {str(r.obis): r for r in push.readings}


def test_gas_push_carries_clock_volume_and_status() -> None:
    gas = simulator.make_meter(4)
    found = readings(gas, 10)
    assert found["0-0:1.0.0*255"].value == "2024-03-05T12:30:15+00:00"
    volume = found["7-0:3.0.0*255"]
    assert volume.value == Decimal("4000.070")  # 4,000,000 + 10 * 7 litres
    assert (volume.unit, volume.scaler) == ("m³", -3)
    assert found["0-0:96.5.0*255"].value == 0


def test_electricity_push_carries_energy_registers_and_power() -> None:
    meter = simulator.make_meter(3)
    found = readings(meter, 2)
    assert found["1-0:1.8.0*255"].value == 30_000_500
    assert found["1-0:1.8.0*255"].unit == "Wh"
    assert found["1-0:2.8.0*255"].value == 20
    assert found["1-0:1.7.0*255"].unit == "W"


def test_values_rise_with_the_invocation_counter() -> None:
    meter = simulator.make_meter(1)
    first = readings(meter, 1)["1-0:1.8.0*255"].value
    later = readings(meter, 50)["1-0:1.8.0*255"].value
    assert later > first


def test_meters_are_distinct_and_repeatable() -> None:
    fleet = simulator.make_meters(50, seed=1)
    assert len({m.system_title for m in fleet}) == 50
    assert len({m.encryption_key for m in fleet}) == 50
    assert fleet[7] == simulator.make_meter(7, seed=1)
    other = simulator.make_meter(7, seed=2)
    assert other.system_title != fleet[7].system_title
    assert other.encryption_key != fleet[7].encryption_key
    assert fleet[0].system_title.startswith(b"SIM")
    assert "encryption_key" not in repr(fleet[0]) and fleet[0].encryption_key.hex() not in repr(
        fleet[0]
    )


def test_forged_push_fails_authentication() -> None:
    meter = simulator.make_meter(0)
    with pytest.raises(AuthenticationFailed):
        decode_push(simulator.forge(simulator.build_push(meter, 1, MOMENT)), cipher_of(meter))


def test_wrapped_push_is_one_wrapper_frame() -> None:
    apdu = simulator.build_push(simulator.make_meter(0), 1, MOMENT)
    frame = decode_datagram(simulator.wrap(apdu))
    assert (frame.source_wport, frame.destination_wport, frame.apdu) == (1, 1, apdu)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**20), st.integers(1, 2**32 - 1), st.integers(8, 200))
def test_hdlc_frames_reassemble_to_the_apdu(index: int, counter: int, size: int) -> None:
    apdu = simulator.build_push(simulator.make_meter(index), counter, MOMENT)
    decoder, reassembler = HdlcStreamDecoder(), SegmentReassembler()
    decoder.receive_data(simulator.hdlc_frames(apdu, size))
    found = []
    while (event := decoder.next_event()) is not NEED_DATA:
        found.extend(reassembler.feed(event))  # type: ignore[arg-type]
    assert [item.apdu for item in found] == [apdu]  # type: ignore[union-attr]


def test_key_file_is_private_and_loads(tmp_path: Path) -> None:
    fleet = simulator.make_meters(5, seed=3)
    path = tmp_path / "keys.toml"
    simulator.write_key_file(path, fleet)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = KeyStore.load([path])
    assert len(store) == 5
    for meter in fleet:
        entry = store.lookup(meter.system_title)
        assert entry is not None and entry.name == meter.name
        assert entry.labels == {"kind": meter.kind, "source": "simulator"}
        push = decode_push(
            simulator.build_push(meter, 3, MOMENT),
            lambda title: store.lookup(title).cipher,  # type: ignore[union-attr]
        )
        assert push.invocation_counter == 3


def test_key_file_replaces_an_existing_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text("old")
    path.chmod(0o644)
    simulator.write_key_file(path, simulator.make_meters(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_cli_writes_keys_without_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "k.toml"
    code = cli_main(["simulate", "--meters", "2", "--count", "0", "--keys-out", str(keys)])
    assert code == 0
    assert "wrote keys of 2 meters" in capsys.readouterr().out
    assert len(KeyStore.load([keys])) == 2


class _Counter(DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.datagrams.append(datagram)


@pytest_twisted.ensureDeferred
async def test_paced_run_sends_rising_counters_per_meter() -> None:
    receiver = _Counter()
    port = reactor.listenUDP(0, receiver, interface="127.0.0.1")
    fleet = simulator.make_meters(3)
    try:
        run = simulator.Simulation(
            fleet,
            port=port.getHost().port,
            rate=400,
            count=20,
            start_ic=10,
            forge_every=5,
            plaintext_every=7,
        )
        stats = await run.run(reactor)
        await wait_until(lambda: len(receiver.datagrams) == 20)
    finally:
        await port.stopListening()
    assert (stats.sent, stats.forged, stats.plaintext) == (20, 4, 2)
    assert stats.elapsed >= 19 / 400 * 0.8  # paced, not a burst
    counters: dict[bytes, list[int]] = {}
    for datagram in receiver.datagrams:
        apdu = decode_datagram(datagram).apdu
        if apdu[0] == 0x0F:
            continue  # the plaintext ones
        meter = next(m for m in fleet if m.system_title in apdu[:12])
        try:
            push = decode_push(apdu, cipher_of(meter))
        except AuthenticationFailed:
            continue
        counters.setdefault(meter.system_title, []).append(push.invocation_counter or 0)
    for values in counters.values():
        assert values == sorted(values) and values[0] >= 10
    assert stats.last_counters[fleet[0].system_title] == 10 + 7 - 1


@pytest_twisted.ensureDeferred
async def test_duration_bounds_a_run() -> None:
    receiver = _Counter()
    port = reactor.listenUDP(0, receiver, interface="127.0.0.1")
    try:
        run = simulator.Simulation(
            simulator.make_meters(2), port=port.getHost().port, rate=200, duration=0.1
        )
        stats = await run.run(reactor)
    finally:
        await port.stopListening()
    assert 5 <= stats.sent <= 40


def test_suite0_cipher_is_what_the_meter_uses() -> None:
    meter = simulator.make_meter(9)
    again = Suite0Cipher(meter.encryption_key, meter.authentication_key)
    plaintext = simulator.build_notification(meter, 1, MOMENT)
    sealed = again.encrypt(meter.system_title, 0x30, 1, plaintext)
    assert simulator.build_push(meter, 1, MOMENT).endswith(sealed)


# --- one connection per meter, pre-built frames ------------------------------------


class _FakeClient:
    def __init__(self) -> None:
        from twisted.internet.testing import StringTransport

        self.transport = StringTransport()


def _pushes_on(data: bytes) -> list[tuple[bytes, int]]:
    """(system title, invocation counter) of each wrapper frame of a simulator stream."""
    from dlmsd.protocol.push import peel
    from dlmsd.protocol.wrapper import WrapperStreamDecoder

    decoder = WrapperStreamDecoder(65535)
    decoder.receive_data(data)
    pushes = []
    while (event := decoder.next_event()) is not NEED_DATA:
        envelope = peel(event.apdu)
        assert envelope.system_title is not None and envelope.invocation_counter is not None
        pushes.append((envelope.system_title, envelope.invocation_counter))
    return pushes


def test_over_tcp_each_meter_stays_on_one_connection_in_counter_order() -> None:
    fleet = simulator.make_meters(10)
    run = simulator.Simulation(
        fleet, transport="tcp", count=95, connections=4, clock=lambda: MOMENT
    )
    positions, frames = run.build_all()
    clients = [_FakeClient() for _ in range(4)]
    sender = simulator._TcpSender(clients)  # type: ignore[arg-type]
    for start in range(0, 95, 7):  # in chunks, as the paced loop sends
        sender.send(positions[start : start + 7], frames[start : start + 7])
    seen: dict[bytes, int] = {}
    for index, client in enumerate(clients):
        for title, counter in _pushes_on(client.transport.value()):
            meter = next(m for m in fleet if m.system_title == title)
            assert meter.index % 4 == index  # connection i serves meters i, i+4, ...
            assert counter == seen.get(title, 0) + 1  # in order, none missing
            seen[title] = counter
    assert sum(seen.values()) == 95


@pytest_twisted.ensureDeferred
async def test_prebuilt_run_sends_the_same_pushes_as_one_built_while_sending() -> None:
    received: list[list[bytes]] = []
    for prebuild in (True, False):
        receiver = _Counter()
        port = reactor.listenUDP(0, receiver, interface="127.0.0.1")
        set_receive_buffer(port, 4 << 20)  # an unpaced burst of 300
        try:
            run = simulator.Simulation(
                simulator.make_meters(5),
                port=port.getHost().port,
                rate=0,
                count=300,
                forge_every=9,
                plaintext_every=13,
                prebuild=prebuild,
                clock=lambda: MOMENT,
            )
            stats = await run.run(reactor)
            await wait_until(lambda: len(receiver.datagrams) == 300)  # noqa: B023
        finally:
            await port.stopListening()
        assert (stats.sent, stats.forged, stats.plaintext) == (300, 31, 23)
        assert (stats.build_seconds > 0) is prebuild
        received.append(receiver.datagrams)
    assert sorted(received[0]) == sorted(received[1])


def test_a_count_run_prebuilds_by_default_and_a_duration_run_does_not() -> None:
    fleet = simulator.make_meters(1)
    assert simulator.Simulation(fleet, count=5).prebuilds
    assert not simulator.Simulation(fleet, duration=1.0).prebuilds
    assert not simulator.Simulation(fleet, count=5, prebuild=False).prebuilds


@pytest_twisted.ensureDeferred
async def test_an_unpaced_tcp_run_over_8_connections_loses_nothing_to_reordering(
    tmp_path: Path,
) -> None:
    from tests.service.test_daemon import make_setup, metric, port_of, rejected, start, stop

    setup = make_setup(tmp_path, meters=20, tcp={})
    service = start(setup)
    try:
        run = simulator.Simulation(
            setup.meters, transport="tcp", port=port_of(service, "tcp"), rate=0, count=2000
        )
        await run.run(reactor)
        await wait_until(lambda: metric(service, "dlmsd_pushes_accepted_total") == 2000, 20)
        assert rejected(service, "replay") == 0
    finally:
        await stop(service)


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, (1 << 24) - 1),
    counter=st.integers(0, (1 << 32) - 1),
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
    ),
)
def test_notification_from_the_template_is_the_encoded_tree(
    index: int, counter: int, moment: datetime
) -> None:
    from dlmsd.protocol.apdus.notification import DataNotification
    from dlmsd.protocol.cosem_datetime import CosemDateTime

    meter = simulator.make_meter(index)
    stamp = CosemDateTime.from_datetime(moment)
    expected = DataNotification(
        long_invoke_id_and_priority=counter & 0x00FFFFFF,
        date_time=stamp,
        body=simulator.push_body(meter, counter, stamp),
    ).to_bytes()
    assert simulator.build_notification(meter, counter, moment) == expected
