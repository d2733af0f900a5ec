"""`dlmsd get` plain values and output shapes; `dlmsd set` and `dlmsd action` against
the emulator, with the same connection and key options as `get`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dlmsd.cli import main
from tests.client.conftest import AK, EK, KEYS, EmulatorProcess

Start = Callable[..., EmulatorProcess]
HLS = ["--auth", "hls-gmac", *KEYS]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _where(meter: EmulatorProcess) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(meter.port), "--timeout", "2"]


def test_get_prints_plain_json_values(emulator: Start, capsys: pytest.CaptureFixture[str]) -> None:
    where = _where(emulator("--hours", "24"))
    code, out, err = run(capsys, "get", *where, "0-0:1.0.0", "0-0:96.1.0", "7-0:3.0.0")
    assert (code, err) == (0, "")
    clock, serial, volume = json.loads(out)
    assert clock["value"] == "2023-01-02T00:00:00+01:00"  # the clock as ISO date-time
    assert serial["value"] == "GAS0000001"  # a printable octet-string as text, not hex
    assert volume["value"] == 1243669  # a number, not text
    code, out, _ = run(capsys, "get", *where, "--scaled", "7-0:3.0.0")
    assert json.loads(out) == [{"target": "7-0:3.0.0*255:2", "value": 1243.669, "unit": "m³"}]
    code, out, _ = run(capsys, "get", *where, "--raw", "0-0:96.1.0")
    assert json.loads(out)[0]["value"] == {"type": "octet-string", "value": "47415330303030303031"}


def test_pretty_is_indented_json_and_table_is_a_table(
    emulator: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    where = _where(emulator("--hours", "24"))
    for command in (["get", "0-0:96.1.0"], ["profile", "7-0:99.1.0", "--entries", "1:2"]):
        code, out, _ = run(capsys, *command, *where, "--pretty")
        assert code == 0 and out.startswith(("[\n  ", "{\n  "))
        assert json.loads(out)
    code, out, _ = run(capsys, "objects", *where, "--pretty")
    assert code == 0 and out.startswith("[\n  {\n") and json.loads(out)
    code, out, _ = run(capsys, "get", *where, "--table", "0-0:96.1.0")
    assert out.splitlines()[0].split() == ["target", "value", "unit"]
    assert out.splitlines()[2].split() == ["0-0:96.1.0*255:2", "GAS0000001"]
    code, out, _ = run(capsys, "objects", *where, "--table")
    assert code == 0 and out.split()[:3] == ["class", "version", "obis"]
    code, out, _ = run(capsys, "profile", "7-0:99.1.0", *where, "--entries", "1:1")
    row = json.loads(out)["rows"][0]
    assert isinstance(row[2], float) and row[2] > 0  # scaled volume as a number
    with pytest.raises(SystemExit):
        main(["get", *where, "--pretty", "--table", "0-0:96.1.0"])
    capsys.readouterr()


def test_set_clock_and_push_setup(emulator: Start, capsys: pytest.CaptureFixture[str]) -> None:
    where = _where(emulator("--hours", "24", *KEYS))
    code, out, err = run(capsys, "set", *where, *HLS, "0-0:1.0.0", "2030-01-02T03:04:05+01:00")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"target": "0-0:1.0.0*255:2", "result": "success"}
    code, out, _ = run(capsys, "get", *where, "0-0:1.0.0")
    assert json.loads(out)[0]["value"].startswith("2030-01-02T03:04:")
    # TYPE:TEXT, and the typed JSON `get --raw` prints
    code, out, err = run(capsys, "set", *where, *HLS, "0-0:25.9.0:6", "unsigned:7")
    assert (code, err) == (0, "")
    code, out, _ = run(capsys, "get", *where, "--raw", "0-0:25.9.0:6")
    typed = json.loads(out)[0]["value"]
    assert typed == {"type": "unsigned", "value": 7}
    code, out, err = run(
        capsys, "set", *where, *HLS, "0-0:25.9.0:6", json.dumps({**typed, "value": 2})
    )
    assert (code, err) == (0, "")
    code, out, _ = run(capsys, "get", *where, "0-0:25.9.0:6")
    assert json.loads(out)[0]["value"] == 2


def test_set_errors(emulator: Start, capsys: pytest.CaptureFixture[str]) -> None:
    where = _where(emulator("--hours", "24", *KEYS))
    code, _, err = run(capsys, "set", *where, *HLS, "0-0:25.9.0:6", "5")
    assert code == 2 and "TYPE:TEXT" in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "set", *where, *HLS, "0-0:25.9.0:6", "unsigned:300")
    assert code == 2 and "out of range" in err
    code, _, err = run(capsys, "set", *where, *HLS, "0-0:25.9.0:6", "{not json")
    assert code == 2 and "not JSON" in err
    code, _, err = run(capsys, "set", *where, *HLS, "--table", "0-0:25.9.0:6", "unsigned:1")
    assert code == 2 and "--pretty" in err
    # the public client may not write: the meter's answer, exit 1
    code, _, err = run(capsys, "set", *where, "0-0:25.9.0:6", "unsigned:1")
    assert code == 1 and "read-write-denied" in err


def test_action_disconnect_and_push(emulator: Start, capsys: pytest.CaptureFixture[str]) -> None:
    where = _where(emulator("--hours", "24", *KEYS))
    code, out, _ = run(capsys, "get", *where, "0-0:96.3.10:2")
    assert json.loads(out)[0]["value"] is True  # valve open
    code, out, err = run(capsys, "action", *where, *HLS, "0-0:96.3.10", "1", "integer:0")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"target": "70/0-0:96.3.10*255", "method": 1, "return": None}
    code, out, _ = run(capsys, "get", *where, "0-0:96.3.10:2", "0-0:96.3.10:3")
    assert [item["value"] for item in json.loads(out)] == [False, 0]  # closed, disconnected
    code, out, err = run(capsys, "action", *where, *HLS, "0-0:25.9.0", "1", "integer:0")
    assert (code, err) == (0, "")
    assert json.loads(out)["target"] == "40/0-0:25.9.0*255"
    code, _, err = run(capsys, "action", *where, "0-0:96.3.10", "2")
    assert code == 1 and "read-write-denied" in err
    code, _, err = run(capsys, "action", *where, "0-0:96.3.10", "0")
    assert code == 2 and "out of range" in err


def test_set_and_action_take_keys_like_get(
    emulator: Start, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    meter = emulator("--hours", "24", "--transport", "hdlc", *HLS)
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[meters.444C4D0000000001]\nencryption_key = "{EK}"\nauthentication_key = "{AK}"\n'
    )
    os.chmod(keys, 0o600)
    where = [*_where(meter), "--transport", "hdlc", "--auth", "hls-gmac", "--keys", str(keys)]
    code, _, err = run(capsys, "set", *where, "0-0:1.0.0", "now")
    assert (code, err) == (0, "")
    code, _, err = run(capsys, "action", *where, "0-0:96.3.10", "1", "integer:0")
    assert (code, err) == (0, "")
    code, _, err = run(capsys, "set", *where, "--ek", EK, "0-0:1.0.0", "now")
    assert code == 2 and "either --keys or --ek/--ak" in err
