"""What one push may cost the daemon: values decoded and bytes of record (issue 13).

Pushes here are synthetic, built with dlmsd's encoders and the simulator's keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from twisted.internet.task import Clock

from dlmsd.protocol.axdr import Data, DataType, TypeDescription, encode_length
from dlmsd.protocol.ciphered import GeneralGloCiphering
from dlmsd.service import simulator
from dlmsd.service.ingest import ACCEPTED, Ingest, RejectReason
from dlmsd.service.keystore import KeyStore
from dlmsd.service.metrics import Metrics
from dlmsd.service.quarantine import Quarantine
from dlmsd.service.state import StateStore
from tests.service.test_config import MINIMAL, parse, refused


def _ingest(tmp_path: Path, meter: simulator.SimMeter, **limits: int) -> tuple[Ingest, StateStore]:
    simulator.write_key_file(tmp_path / "keys", [meter])
    keystore = KeyStore.load([tmp_path / "keys"], check_permissions=False)
    state = StateStore(tmp_path / "state.db", ["jsonl"], synchronous="off")
    ingest = Ingest(
        keystore=keystore,
        state=state,
        metrics=Metrics(),
        quarantine=Quarantine(tmp_path / "q"),
        reactor=Clock(),
        **limits,  # type: ignore[arg-type]
    )
    return ingest, state


def _push(meter: simulator.SimMeter, counter: int, body: bytes) -> bytes:
    plaintext = b"\x0f" + counter.to_bytes(4, "big") + b"\x00" + body
    payload = meter.cipher.encrypt(meter.system_title, 0x30, counter, plaintext)
    return GeneralGloCiphering(meter.system_title, 0x30, counter, payload).to_bytes()


def _null_members(members: int, elements: int) -> bytes:
    description = TypeDescription.structure_of(
        *([TypeDescription(DataType.NULL_DATA)] * members), TypeDescription(DataType.UNSIGNED)
    )
    return b"\x13" + description.to_bytes() + encode_length(elements) + bytes(elements)


def test_the_amplifier_is_refused_as_oversize_and_the_counter_stays(tmp_path: Path) -> None:
    meter = simulator.make_meters(1)[0]
    ingest, state = _ingest(tmp_path, meter)
    outcome = ingest.handle_apdu(_push(meter, 5, _null_members(2000, 2000)), "src", "udp")
    assert outcome.reason is RejectReason.OVERSIZE
    assert state.last_counter(meter.system_title) is None
    # The meter's next honest push is accepted.
    honest = _push(meter, 5, Data.array(*[Data.unsigned(1)] * 10).to_bytes())
    assert ingest.handle_apdu(honest, "src", "udp") is ACCEPTED
    state.close()


def test_max_push_values_is_what_the_daemon_passes_down(tmp_path: Path) -> None:
    meter = simulator.make_meters(1)[0]
    ingest, state = _ingest(tmp_path, meter, max_push_values=100)
    body = Data.array(*[Data.unsigned(1)] * 150).to_bytes()
    assert ingest.handle_apdu(_push(meter, 1, body), "s", "udp").reason is RejectReason.OVERSIZE
    small = Data.array(*[Data.unsigned(1)] * 50).to_bytes()
    assert ingest.handle_apdu(_push(meter, 2, small), "s", "udp") is ACCEPTED
    state.close()


def test_a_record_over_max_record_bytes_is_refused(tmp_path: Path) -> None:
    meter = simulator.make_meters(1)[0]
    ingest, state = _ingest(tmp_path, meter, max_record_bytes=4096)
    # 2,500 octets: 5,000 hex characters in the record, over 4,096 bytes.
    big = Data.octet_string(b"\xab" * 2500).to_bytes()
    outcome = ingest.handle_apdu(_push(meter, 1, big), "s", "udp")
    assert outcome.reason is RejectReason.OVERSIZE
    assert state.last_counter(meter.system_title) is None
    small = Data.octet_string(b"\xab" * 500).to_bytes()
    assert ingest.handle_apdu(_push(meter, 2, small), "s", "udp") is ACCEPTED
    state.close()


def test_the_limits_in_the_config() -> None:
    config = parse(MINIMAL)
    assert config.daemon.max_push_values == 100_000
    assert config.daemon.max_record_bytes == 4 * 1024 * 1024
    changed = MINIMAL.replace(
        "[daemon]", "[daemon]\nmax_push_values = 500\nmax_record_bytes = 8192"
    )
    config = parse(changed)
    assert (config.daemon.max_push_values, config.daemon.max_record_bytes) == (500, 8192)
    bad = MINIMAL.replace("[daemon]", "[daemon]\nmax_push_values = 0")
    assert "daemon.max_push_values: expected an integer" in refused(bad)
    bad = MINIMAL.replace("[daemon]", "[daemon]\nmax_record_bytes = 10")
    assert "daemon.max_record_bytes: expected an integer" in refused(bad)


def test_the_other_issue_13_options_in_the_config() -> None:
    config = parse(MINIMAL)
    assert config.keys.reload_max_drop == 0.5
    assert config.sinks[0].retry_backoff_max == 10.0
    changed = MINIMAL.replace('files = ["', 'reload_max_drop = 1.0\nfiles = ["').replace(
        'type = "jsonl"', 'type = "jsonl"\nretry_backoff = 0.5\nretry_backoff_max = 2'
    )
    config = parse(changed)
    assert config.keys.reload_max_drop == 1.0
    assert (config.sinks[0].retry_backoff, config.sinks[0].retry_backoff_max) == (0.5, 2.0)
    assert "retry_backoff_max" not in config.sinks[0].options
    bad = MINIMAL.replace('files = ["', 'reload_max_drop = 2\nfiles = ["')
    assert "keys.reload_max_drop: expected a number 0.0..1.0" in refused(bad)
    bad = MINIMAL.replace(
        'type = "jsonl"', 'type = "jsonl"\nretry_backoff = 5\nretry_backoff_max = 1'
    )
    assert "sinks[0].retry_backoff_max: expected a number >= 5.0" in refused(bad)


def test_no_shape_is_learnt_from_a_refused_layout(tmp_path: Path) -> None:
    # The fast path (dlmsd.cosem.shapes) compiles a layout on its second miss; a layout
    # over the budget never decodes, so no shape of it exists to bypass the bound.
    meter = simulator.make_meters(1)[0]
    ingest, state = _ingest(tmp_path, meter, max_push_values=100)
    body = Data.array(*[Data.unsigned(1)] * 150).to_bytes()
    for counter in range(1, 6):
        outcome = ingest.handle_apdu(_push(meter, counter, body), "s", "udp")
        assert outcome.reason is RejectReason.OVERSIZE
    assert ingest._shapes.compiled == 0
    # A layout within the budget is compiled and its later pushes take the fast path.
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for counter in range(6, 12):
        push = simulator.build_push(meter, counter, stamp)
        assert ingest.handle_apdu(push, "s", "udp") is ACCEPTED
    assert ingest._shapes.compiled >= 1
    state.close()
