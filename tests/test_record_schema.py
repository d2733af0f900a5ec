"""docs/record.schema.json: the record contract (push, profile, quarantine).

Every record the daemon stages, from the full decode path and from compiled
shapes alike, carries ``schema_version`` and ``kind`` and validates; the schema
refuses what a consumer could not rely on; docs/record.md documents every field.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dlmsd.protocol.push import RECORD_SCHEMA_VERSION, decode_push
from dlmsd.service import simulator
from dlmsd.service.quarantine import QUARANTINE_FILE, Quarantine
from tests.records import SCHEMA, SCHEMA_PATH, schema_errors, validate_record, validated
from tests.service.test_ingest_record import _ingest

DOC = SCHEMA_PATH.parent / "record.md"


def test_the_schema_is_valid_json_schema_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$defs"]["schema_version"]["const"] == RECORD_SCHEMA_VERSION


def test_staged_push_records_validate_from_both_paths(tmp_path: Path) -> None:
    meters = simulator.make_meters(2)
    ingest, state = _ingest(tmp_path, meters)
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for counter in range(1, 6):
        for meter in meters:
            apdu = simulator.build_push(meter, counter, stamp)
            ingest.handle_apdu(apdu, "10.0.0.1:4059", "udp")
    shapes = ingest._shapes
    # The first pushes of a layout take the full path, later ones its compiled shape.
    assert shapes.misses >= 2 and shapes.compiled >= 1
    texts = [item.record_json for item in state._staged]
    assert len(texts) == 10
    records = validated(json.loads(text) for text in texts)
    for record in records:
        assert (record["schema_version"], record["kind"]) == (1, "push")
        assert list(record)[:2] == ["schema_version", "kind"]
    state.close()


def test_decoded_push_record_validates() -> None:
    meter = simulator.make_meters(1)[0]
    apdu = simulator.build_push(meter, 9, datetime(2026, 1, 2, tzinfo=UTC))
    record = decode_push(apdu, lambda _title: meter.cipher).to_record()
    assert record["kind"] == "push"
    # Through JSON, as consumers get it (Decimal values become numbers).
    validate_record(json.loads(json.dumps(record, default=float)))


def test_quarantine_entries_validate_with_unix_or_iso_received_at(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path)
    quarantine.add(bytes.fromhex("4B464D1234567890"), b"\x0f\x01", "127.0.0.1:1", 1.5, "udp")
    quarantine.close()
    [entry] = validated(
        json.loads(line) for line in (tmp_path / QUARANTINE_FILE).read_text().splitlines()
    )
    assert entry["kind"] == "quarantine"
    validate_record(entry | {"received_at": "2026-01-02T03:04:05.123+00:00"})
    validate_record(entry | {"received_at": "2026-01-02T03:04:05.123Z"})


PROFILE = {
    "schema_version": 1,
    "kind": "profile",
    "received_at": "2026-01-02T03:04:05.123+00:00",
    "source": "127.0.0.1:4059",
    "transport": "tcp",
    "meter": "gas-1",
    "meter_id": "SIM0100000001",
    "labels": {},
    "system_title": "53494D0100000001",
    "obis": "1-0:99.1.0*255",
    "entry_time": "2026-01-02T03:00:00+00:00",
    "columns": ["0-0:1.0.0*255:2", "1-0:1.8.0*255:2"],
    "units": [None, "Wh"],
    "values": ["2026-01-02T03:00:00+00:00", 1234],
    "record_id": "53494D0100000001:1-0:99.1.0*255:2026-01-02T03:00:00+00:00",
}


def test_a_profile_record_validates() -> None:
    validate_record(PROFILE)


def _push() -> dict[str, Any]:
    meter = simulator.make_meters(1)[0]
    apdu = simulator.build_push(meter, 9, datetime(2026, 1, 2, tzinfo=UTC))
    record = decode_push(apdu, lambda _title: meter.cipher).to_record()
    return dict(json.loads(json.dumps(record, default=float)))


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": 2},
        {"kind": "pushes"},
        {"system_title": "53494d0100000001"},
        {"security": "gcm"},
        {"invocation_counter": -1},
        {"readings": [{"obis": "1-0:1.8.0", "attribute": 2, "value": 1}]},
        {"unknown_field": 1},
        {"received_at": "yesterday"},
    ],
)
def test_the_schema_refuses_broken_push_records(change: dict[str, object]) -> None:
    assert schema_errors(_push() | change)


@pytest.mark.parametrize("missing", ["schema_version", "kind", "readings", "system_title"])
def test_required_push_fields(missing: str) -> None:
    record = _push()
    del record[missing]
    assert schema_errors(record)


def test_the_schema_refuses_a_profile_record_without_kind() -> None:
    record = dict(PROFILE)
    del record["kind"]
    assert schema_errors(record)


def test_every_field_is_documented() -> None:
    """docs/record.md has a row for every property of every kind of record."""
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    for kind in ("push", "reading", "profile", "quarantine"):
        for name in SCHEMA["$defs"][kind]["properties"]:
            assert name in documented, f"{kind}.{name} is not in docs/record.md"
    readme = (SCHEMA_PATH.parent.parent / "README.md").read_text(encoding="utf-8")
    assert "docs/record.md" in readme
