"""The ingest writes each record's JSON directly; it must equal the dict path's text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from twisted.internet.task import Clock

from dlmsd.protocol.push import decode_push
from dlmsd.service import simulator
from dlmsd.service.ingest import ACCEPTED, Ingest
from dlmsd.service.keystore import KeyStore
from dlmsd.service.metrics import Metrics
from dlmsd.service.quarantine import Quarantine
from dlmsd.service.state import StateStore, encode_record


def _ingest(tmp_path: Path, meters: list[simulator.SimMeter]) -> tuple[Ingest, StateStore]:
    simulator.write_key_file(tmp_path / "keys", meters)
    keystore = KeyStore.load([tmp_path / "keys"], check_permissions=False)
    state = StateStore(tmp_path / "state.db", ["jsonl"], synchronous="off")
    ingest = Ingest(
        keystore=keystore,
        state=state,
        metrics=Metrics(),
        quarantine=Quarantine(tmp_path / "q"),
        reactor=Clock(),
        clock=lambda: 1_700_000_000.1234,
    )
    return ingest, state


def test_staged_record_text_equals_encode_record_of_the_dict(tmp_path: Path) -> None:
    meters = simulator.make_meters(2)
    ingest, state = _ingest(tmp_path, meters)
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for meter in meters:
        apdu = simulator.build_push(meter, 7, stamp)
        assert ingest.handle_apdu(apdu, "10.0.0.1:4059", "udp") is ACCEPTED
        entry = ingest.keystore.lookup(meter.system_title)
        assert entry is not None
        record = decode_push(apdu, lambda _title, m=meter: m.cipher).to_record()  # type: ignore[misc]
        record.update(
            received_at="2023-11-14T22:13:20.123+00:00",
            source="10.0.0.1:4059",
            transport="udp",
            meter=entry.name,
            meter_id=entry.display_id,
            labels=dict(entry.labels),
            record_id=f"{meter.system_title.hex().upper()}:7",
        )
        staged = state._staged[-1]
        assert staged.record_json == encode_record(record)
        assert staged.record_id == record["record_id"]
        assert staged.invocation_counter == 7
        assert json.loads(staged.record_json)["readings"]
    state.close()


def test_records_carry_the_meter_fields_of_the_current_key_store(tmp_path: Path) -> None:
    # The meter's JSON members are cached on its key store entry: a reload that
    # renames and relabels the meter must show in the next record.
    meter = simulator.make_meters(1)[0]
    ingest, state = _ingest(tmp_path, [meter])
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert ingest.handle_apdu(simulator.build_push(meter, 7, stamp), "src", "udp") is ACCEPTED
    first = json.loads(state._staged[-1].record_json)
    assert (first["meter"], first["labels"]) == (
        meter.name,
        {"kind": "gas", "source": "simulator"},
    )
    keys = tmp_path / "keys"
    keys.write_text(
        keys.read_text()
        .replace(f'name = "{meter.name}"', 'name = "renamed"')
        .replace('source = "simulator"', 'source = "reloaded"')
    )
    assert ingest.keystore.reload() == 1
    assert ingest.handle_apdu(simulator.build_push(meter, 8, stamp), "src", "udp") is ACCEPTED
    second = json.loads(state._staged[-1].record_json)
    assert (second["meter"], second["labels"]) == (
        "renamed",
        {"kind": "gas", "source": "reloaded"},
    )
    assert second["meter_id"] == first["meter_id"]
    state.close()
