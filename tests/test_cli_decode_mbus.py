"""`dlmsd decode` on real wired M-Bus captures (tests/data/field/, each file cites its source).

The bodies of these pushes are not fully self-describing: Netz NÖ ends with a bare
meter number (left without an OBIS code), TINETZ mixes a flat pair with structures.
Both the readings and the decrypted body are checked against what the sources state.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from dlmsd.cli import main

FIELD = Path(__file__).resolve().parent / "data" / "field"


def capture(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIELD / path).read_text(encoding="utf-8"))
    return data


NETZ_NOE = capture("kaifa/netz-noe-kundenschnittstelle-example.json")
TINETZ = capture("kaifa/tinetz-kundenschnittstelle-example.json")
T210_D = capture("sagemcom/t210-d-netz-noe-domistyle-issue-12.json")
ELSTER = capture("elster/kmswest-single-frame.json")


def decode(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def values(body: dict[str, Any]) -> list[Any]:
    """The leaf values of a body's JSON, depth first."""
    if body["type"] in ("structure", "array"):
        return [leaf for child in body["value"] for leaf in values(child)]
    return [body["value"]]


def test_netz_noe_example_decodes_to_the_stated_values(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = decode(capsys, NETZ_NOE["hex"], "--ek", NETZ_NOE["keys"]["ek"])
    assert code == 0, err
    record = json.loads(out)
    assert record["framing"] == "mbus"
    assert record["security"] == "enc"
    assert record["system_title"] == NETZ_NOE["keys"]["system_title"]
    assert record["invocation_counter"] == 35
    assert record["datetime"] == NETZ_NOE["expected"]["datetime"]
    leaves = values(record["body"])
    # OBIS, raw value, scaler, unit as the source's decode states them (its scaled
    # values: 12937 Wh, 233.7 V = 2337 * 10^-1, power factor 1 = 1000 * 10^-3).
    assert leaves[1:5] == ["0100010800ff", 12937, 0, 30]
    assert leaves[17:21] == ["0100200700ff", 2337, -1, 35]
    assert leaves[41:45] == ["01000d0700ff", 1000, -3, 255]
    assert bytes.fromhex(leaves[-1]).decode("ascii") == "181220000009"
    readings = {r["obis"]: (r["value"], r["unit"]) for r in record["readings"]}
    assert readings["1-0:1.8.0*255"] == (12937, "Wh")
    assert readings["1-0:32.7.0*255"] == (233.7, "V")
    assert readings["1-0:13.7.0*255"][0] == 1
    assert len(readings) == 11  # the bare meter number gets no guessed OBIS code


def test_tinetz_example_decrypts_to_the_published_plaintext(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = decode(capsys, TINETZ["hex"], "--ek", TINETZ["keys"]["ek"])
    assert code == 0, err
    record = json.loads(out)
    assert record["security"] == "enc"  # SC 0x21: suite 1, encryption only
    assert record["invocation_counter"] == 2710426
    assert record["datetime"] == TINETZ["expected"]["datetime"]
    leaves = values(record["body"])
    # Stated in the source's screenshot: the meter number.
    assert "314b464d30313030303030303335" in leaves  # "1KFM0100000035"
    # The published plaintext (doc/EXAMPLE.md) holds 1-0:1.8.0 = 0x2394 Wh.
    assert leaves[leaves.index("0100010800ff") + 1] == 0x2394
    readings = {r["obis"]: (r["value"], r["unit"]) for r in record["readings"]}
    assert readings["0-0:96.1.0*255"] == ("1KFM0100000035", None)
    assert readings["1-0:1.8.0*255"] == (9108, "Wh")
    assert len(readings) == 11  # a flat clock pair, then ten structures


def test_tinetz_plaintext_is_the_published_one() -> None:
    from dlmsd.protocol.mbus import MbusPushStream
    from dlmsd.protocol.push import peel
    from dlmsd.protocol.security import Suite0Cipher

    published = (
        "0f0029b2dc0c07e50713010f2e2300ff8880020c09060000010000ff090c07e5"
        "0713010f2e2300ff8880020209060000600100ff090e314b464d303130303030"
        "303033350202090600002a0000ff09104b464d31313030313030303030303335"
        "020309060100200700ff12090402020fff16230203090601001f0700ff120000"
        "02020ffe1621020309060100010700ff060000000002020f00161b0203090601"
        "00020700ff060000000002020f00161b020309060100010800ff060000239402"
        "020f00161e020309060100020800ff060000000002020f00161e020309060100"
        "030800ff060000006002020f001620020309060100040800ff06000000090202"
        "0f001620"
    )
    [apdu] = [
        e.apdu for e in MbusPushStream().feed(bytes.fromhex(TINETZ["hex"])) if hasattr(e, "apdu")
    ]
    envelope = peel(apdu)
    key = bytes.fromhex(TINETZ["keys"]["ek"])
    assert envelope.open(Suite0Cipher(key, None, allow_encryption_only=True)) == bytes.fromhex(
        published
    )


@pytest.mark.parametrize("found", [T210_D, ELSTER], ids=["t210-d", "elster"])
def test_unkeyed_captures_are_framed_and_peeled(
    found: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # No key published: the frames must still reassemble into a ciphered push, and
    # decode says which meter's keys it lacks.
    code, _, err = decode(capsys, found["hex"])
    assert code == 2
    assert "no keys for system title" in err


def test_keys_file_policy_applies_to_encryption_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.toml"
    title = NETZ_NOE["keys"]["system_title"]
    ek = NETZ_NOE["keys"]["ek"]
    keys.write_text(f'[meters.{title}]\nencryption_key = "{ek}"\nsecurity = ["enc"]\n')
    os.chmod(keys, 0o600)
    code, out, err = decode(capsys, NETZ_NOE["hex"], "--keys", str(keys))
    assert code == 0, err
    assert json.loads(out)["invocation_counter"] == 35
    # The default policy (auth+enc) keeps the cipher from decrypting a tagless push.
    keys.write_text(f'[meters.{title}]\nencryption_key = "{ek}"\nauthentication_key = "{ek}"\n')
    code, out, err = decode(capsys, NETZ_NOE["hex"], "--keys", str(keys))
    assert code == 2
    assert "encryption-only" in err


def test_capture_of_only_a_tail_segment_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    tail = NETZ_NOE["hex"][512:]  # the second frame alone
    code, out, err = decode(capsys, tail, "--ek", NETZ_NOE["keys"]["ek"])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no complete message: M-Bus segment 1 without" in err


def test_truncated_capture_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = decode(capsys, NETZ_NOE["hex"][:-10], "--ek", NETZ_NOE["keys"]["ek"])
    assert code == 2 and out == ""
    assert "input ends inside an M-Bus frame" in err


def test_multi_line_hex_on_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the TINETZ example is printed (doc/EXAMPLE.md): 32 hex digits a line.
    text = "\n".join("    " + TINETZ["hex"][i : i + 32] for i in range(0, len(TINETZ["hex"]), 32))
    monkeypatch.setattr("sys.stdin", io.StringIO(text + "\n"))
    code, out, err = decode(capsys, "-", "--ek", TINETZ["keys"]["ek"])
    assert code == 0, err
    assert json.loads(out)["framing"] == "mbus"


T210_D_EVN = capture("sagemcom/t210-d-evn-energyagent-test.json")


def test_t210_d_evn_push_decodes_to_the_stated_values(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = decode(capsys, T210_D_EVN["hex"], "--ek", T210_D_EVN["keys"]["ek"])
    assert code == 0, err
    record = json.loads(out)
    assert record["system_title"] == T210_D_EVN["keys"]["system_title"]
    assert record["security"] == "enc"
    leaves = values(record["body"])
    for stated in T210_D_EVN["expected"]["readings"]:
        # OBIS as the body carries it, then the value as sent (the source states raw values).
        obis = stated["obis"].replace("-", ".").replace(":", ".").split(".")
        code_hex = bytes([*map(int, obis), 255]).hex()
        assert leaves[leaves.index(code_hex) + 1] == int(stated["value"]), stated
