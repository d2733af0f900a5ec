"""`dlmsd get`, `dlmsd profile`, `dlmsd objects` against the emulator; exit codes and errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dlmsd.cli import main
from tests.client.conftest import AK, EK, KEYS, EmulatorProcess

Start = Callable[..., EmulatorProcess]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_get_profile_objects(emulator: Start, capsys: pytest.CaptureFixture[str]) -> None:
    meter = emulator("--hours", "48")
    where = ["--host", "127.0.0.1", "--port", str(meter.port), "--timeout", "2"]
    code, out, _ = run(capsys, "get", *where, "7-0:3.0.0*255", "7-0:3.0.0*255:3", "0-0:1.0.0")
    assert code == 0
    values = json.loads(out)
    assert isinstance(values[0]["value"], int)  # plain values; --raw keeps the typed view
    assert values[1] == {"target": "7-0:3.0.0*255:3", "value": [-3, 13]}
    code, out, _ = run(capsys, "get", *where, "--scaled", "7-0:3.0.0")
    assert code == 0 and json.loads(out)[0]["unit"] == "m³"
    code, out, _ = run(capsys, "get", *where, "--table", "1-0:1.8.0", "9-9:9.9.9")
    assert code == 1  # one target failed
    assert "object-undefined" in out and out.splitlines()[0].split() == ["target", "value", "unit"]

    code, out, _ = run(
        capsys,
        "profile",
        "7-0:99.1.0",
        *where,
        "--from",
        "2023-01-01T05:00+00:00",
        "--to",
        "2023-01-01T07:00+00:00",
    )
    assert code == 0
    table = json.loads(out)
    assert len(table["rows"]) == 3 and table["columns"][2]["unit"] == "m³"
    assert table["rows"][0][0] == "2023-01-01T06:00:00+01:00"
    code, out, _ = run(capsys, "profile", "7-0:99.1.0", *where, "--entries", "1:5", "--table")
    assert code == 0 and len(out.splitlines()) == 2 + 5
    code, out, _ = run(
        capsys, "profile", "7-0:99.1.0", *where, "--entries", "1:2", "--columns", "3"
    )
    assert code == 0 and len(json.loads(out)["columns"]) == 1

    code, out, _ = run(capsys, "objects", *where)
    assert code == 0
    assert {"class_id": 7, "obis": "7-0:99.1.0*255"}.items() <= next(
        o for o in json.loads(out) if o["obis"] == "7-0:99.1.0*255"
    ).items()


def test_hls_gmac_with_a_key_file_over_hdlc(
    emulator: Start, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    meter = emulator("--hours", "24", "--transport", "hdlc", "--auth", "hls-gmac", *KEYS)
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[meters.444C4D0000000001]\nencryption_key = "{EK}"\nauthentication_key = "{AK}"\n'
    )
    os.chmod(keys, 0o600)
    where = ["--host", "127.0.0.1", "--port", str(meter.port), "--transport", "hdlc"]
    code, out, err = run(
        capsys, "get", *where, "--auth", "hls-gmac", "--keys", str(keys), "--scaled", "1-0:1.8.0"
    )
    assert (code, err) == (0, "")
    assert json.loads(out)[0] == {"target": "1-0:1.8.0*255:2", "value": 12345678, "unit": "Wh"}
    code, _, err = run(
        capsys, "get", *where, "--auth", "hls-gmac", "--ek", EK, "--ak", EK, "1-0:1.8.0"
    )
    assert code == 1
    assert err.startswith("dlmsd get: association refused") and err.count("\n") == 1


def test_wrong_password_silence_and_refused_connection(
    emulator: Start, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    meter = emulator("--hours", "24", "--auth", "lls", "--password", "right")
    where = ["--host", "127.0.0.1", "--port", str(meter.port), "--timeout", "2"]
    secret = tmp_path / "password"
    secret.write_text("right\n")
    code, _, _ = run(
        capsys, "get", *where, "--auth", "lls", "--password-file", str(secret), "1-0:1.8.0"
    )
    assert code == 0
    code, _, err = run(capsys, "get", *where, "--auth", "lls", "--password", "wrong", "1-0:1.8.0")
    assert code == 1 and err == "dlmsd get: association refused: wrong password\n"

    silent = emulator("--hours", "1", "--fault", "silent")
    quiet = ["--host", "127.0.0.1", "--port", str(silent.port), "--timeout", "0.2"]
    code, _, err = run(capsys, "objects", *quiet)
    assert code == 1 and err == "dlmsd objects: no answer from the meter within 0.2 s\n"

    port = silent.port
    silent.stop()
    code, _, err = run(capsys, "get", "--host", "127.0.0.1", "--port", str(port), "1-0:1.8.0")
    assert code == 1 and err.startswith("dlmsd get: cannot connect to 127.0.0.1")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "--host", "h", "1-0:1.8"], "not an OBIS code"),
        (["get", "--host", "h", "--auth", "lls", "1-0:1.8.0"], "needs --password"),
        (["get", "--host", "h", "--auth", "hls-gmac", "1-0:1.8.0"], "need keys"),
        (["get", "--host", "h", "--ek", "00", "1-0:1.8.0"], "--ek must be 16 bytes"),
        (["get", "--host", "h", "--keys", "k", "--ek", EK, "1-0:1.8.0"], "either --keys"),
        (["profile", "7-0:99.1.0", "--host", "h", "--entries", "x"], "--entries"),
        (["profile", "7-0:99.1.0", "--host", "h", "--from", "yesterday"], "ISO 8601"),
        (
            ["profile", "7-0:99.1.0", "--host", "h", "--from", "2023-01-01", "--entries", "1:2"],
            "not both",
        ),
    ],
)
def test_bad_usage_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1
