"""The daemon's pipeline and `dlmsd decode --keys` read bare push bodies the same way.

The meter's layout comes from the key store (push object list or profile); a
self-describing body always wins over it, and a layout that does not fit the body
is a logged, counted mismatch, never values under the wrong OBIS codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from dlmsd.cli import main
from dlmsd.service.ingest import ACCEPTED, Ingest
from dlmsd.service.keystore import KeyStore
from dlmsd.service.metrics import Metrics
from dlmsd.service.quarantine import Quarantine
from dlmsd.service.state import StateStore

FIELD = Path(__file__).parent.parent / "data" / "field"
TITLE = "4B464D1234567890"

# Source: toreamun/amshan tests/test_aidon.py no_list_1 (LLC header dropped): a plaintext
# DataNotification whose body is one self-describing register {OBIS, value, {scaler, unit}}.
AIDON_PUSH = "0f40000000000101020309060100010700ff060000011802020f00161b"


def field_apdu(path: str) -> str:
    hex_text: str = json.loads((FIELD / path).read_text(encoding="utf-8"))["hex"]
    return hex_text[6:] if hex_text.lower().startswith("e6e700") else hex_text


def key_file(tmp_path: Path, layout_line: str) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(f'[meters.{TITLE}]\nsecurity = ["none"]\n{layout_line}\n')
    path.chmod(0o600)
    return path


def ingest_record(tmp_path: Path, keys: Path, apdu_hex: str) -> tuple[dict[str, object], Ingest]:
    state = StateStore(tmp_path / "state.db", ["jsonl"], synchronous="off")
    ingest = Ingest(
        keystore=KeyStore.load([keys]),
        state=state,
        metrics=Metrics(),
        quarantine=Quarantine(tmp_path / "q"),
        reactor=Clock(),
    )
    outcome = ingest.handle(
        bytes.fromhex(apdu_hex), "/dev/ttyUSB0", "hdlc_serial", bytes.fromhex(TITLE)
    )
    assert outcome is ACCEPTED
    record: dict[str, object] = json.loads(state._staged[-1].record_json)
    state.close()
    return record, ingest


def decode_record(
    capsys: pytest.CaptureFixture[str], keys: Path, apdu_hex: str
) -> dict[str, object]:
    code = main(["decode", apdu_hex, "--keys", str(keys), "--system-title", TITLE])
    out, err = capsys.readouterr()
    assert code == 0, err
    record: dict[str, object] = json.loads(out)
    return record


def test_self_describing_push_beats_a_configured_list_of_the_same_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Regression: this push was written as 0-0:1.0.0 with "value": null and accepted.
    keys = key_file(tmp_path, 'push_object_list = ["0-0:1.0.0*255:2"]')
    record, ingest = ingest_record(tmp_path, keys, AIDON_PUSH)
    assert record["readings"] == [
        {"obis": "1-0:1.7.0*255", "attribute": 2, "value": 280, "unit": "W", "scaler": 0}
    ]
    assert ingest.metrics.value("dlmsd_layout_mismatches_total") == 0
    assert decode_record(capsys, keys, AIDON_PUSH)["readings"] == record["readings"]


def test_a_list_that_does_not_fit_is_a_counted_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = key_file(tmp_path, 'push_object_list = ["1-0:1.8.0*255:2"]')
    apdu = field_apdu("kaifa/amshan-no-list2.json")
    record, ingest = ingest_record(tmp_path, keys, apdu)
    assert record["readings"] == []  # kept (its body is in the record), no guessed OBIS
    assert ingest.metrics.value("dlmsd_layout_mismatches_total") == 1
    decoded = decode_record(capsys, keys, apdu)
    assert decoded["readings"] == []
    assert decoded["layout_mismatch"] == "push object list has 1 entries, the body 13 elements"


@pytest.mark.parametrize(
    ("path", "layout_line"),
    [
        ("kaifa/amshan-no-list1.json", 'profile = "kaifa-ma304-list1"'),
        ("kaifa/amshan-no-list3.json", 'profile = "kaifa-ma304-list3-3p"'),
        ("kaifa/amshan-no-list3.json", ""),  # detected from the shape
        ("iskraemeco/pocki80-am550-kaernten-netz-plaintext.json", ""),
        ("kamstrup/amshan-no-list2-single-phase-real-sample.json", ""),
        ("kaifa/amshan-se-list.json", 'push_object_list = ["1-0:1.8.0"]'),
    ],
)
def test_decode_with_keys_and_the_daemon_give_the_same_readings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, layout_line: str
) -> None:
    keys = key_file(tmp_path, layout_line)
    apdu = field_apdu(path)
    record, ingest = ingest_record(tmp_path, keys, apdu)
    assert record["readings"]
    decoded = decode_record(capsys, keys, apdu)
    assert decoded["readings"] == record["readings"]
    assert decoded["body"] == record["body"] and decoded["datetime"] == record["datetime"]
    assert ingest.metrics.value("dlmsd_layout_mismatches_total") == 0


def test_decode_profile_option(capsys: pytest.CaptureFixture[str]) -> None:
    apdu = field_apdu("kaifa/amshan-no-list1.json")
    assert main(["decode", apdu, "--system-title", TITLE]) == 0
    assert json.loads(capsys.readouterr().out)["readings"] == []  # too generic to detect
    assert main(["decode", apdu, "--system-title", TITLE, "--profile", "kaifa-ma304-list1"]) == 0
    (power,) = json.loads(capsys.readouterr().out)["readings"]
    assert (power["obis"], power["value"], power["unit"]) == ("1-0:1.7.0*255", 5852, "W")
    assert main(["decode", apdu, "--profile", "kaifa-ma999"]) == 2
    assert "unknown profile 'kaifa-ma999'" in capsys.readouterr().err
