"""`dlmsd decode` on published captures: JSON out, exit 2 and one line on bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dlmsd.cli import main
from tests.records import validated
from tests.vectors import by_kind, vector_id

UDP_PUSHES = by_kind("udp_wrapper+general_glo_ciphering_datanotification")
# Keys of the UDP pushes: EK = AK = ascii "MYDUMMYGLOBALKEY" (pwitab/dlms-cosem
# tests/test_general_global_cipher.py).
DUMMY_KEY = b"MYDUMMYGLOBALKEY".hex()


def _decode(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("vector", UDP_PUSHES, ids=vector_id)
def test_udp_push_decodes_to_its_record(
    vector: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _decode(capsys, str(vector["hex"]), "--ek", DUMMY_KEY, "--ak", DUMMY_KEY)
    assert code == 0, err
    [record] = validated([json.loads(out)])
    keys = vector["keys"]
    assert isinstance(keys, dict)
    assert record["system_title"] == "2F19229199164103"
    assert record["invocation_counter"] == keys["invocation_counter"]
    assert record["security"] == "auth+enc"
    assert record["framing"] == "wrapper"
    assert record["datetime"] is None
    assert record["body"]["type"] == "octet-string"
    assert record["readings"] == []


def test_hdlc_push_gives_readings(capsys: pytest.CaptureFixture[str]) -> None:
    # Source: pwitab/dlms-cosem tests/test_hdlc/test_hdlc.py (Norwegian HAN UI frame).
    (vector,) = by_kind("hdlc_ui_frame_data_notification")
    code, out, err = _decode(capsys, vector["hex"])
    assert code == 0, err
    [record] = validated([json.loads(out)])
    assert record["security"] == "none"
    assert record["framing"] == "hdlc"
    readings = {r["obis"]: r for r in record["readings"]}
    assert readings["1-0:32.7.0*255"]["value"] == 230.7
    assert readings["1-0:32.7.0*255"]["unit"] == "V"


def test_fact_sheet_general_glo_vector(capsys: pytest.CaptureFixture[str]) -> None:
    # ../shared/docs/dlms-reference.md section 4, vector 3 (UDP wrapper form).
    frame = (
        "0001000100010031"
        "DB084D4D4D0000BC614E263001234567"
        "8E1212FF9A5A45556E273B55851798F90F624704884948FC3E15574307AF2732AE"
    )
    code, out, err = _decode(
        capsys,
        frame,
        "--ek",
        "000102030405060708090A0B0C0D0E0F",
        "--ak",
        "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF",
    )
    assert code == 0, err
    [record] = validated([json.loads(out)])
    assert record["invoke_id"] == 1
    assert record["body"]["value"][0] == {"type": "double-long-unsigned", "value": 12345}


def test_stdin_and_pretty(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    (vector,) = by_kind("data_notification_apdu")
    monkeypatch.setattr("sys.stdin", io.StringIO(vector["hex"] + "\n"))
    code, out, _ = _decode(capsys, "-", "--pretty")
    assert code == 0
    assert json.loads(out)["invoke_id"] == 475
    assert "\n  " in out


def test_bare_get_response_is_decoded_generically(capsys: pytest.CaptureFixture[str]) -> None:
    # Source: pwitab/dlms-cosem tests/test_xdlms/test_get.py (get_response_normal).
    code, out, err = _decode(capsys, "c401c1000600001391")
    assert code == 0, err
    assert "5009" in out


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("zz", "not hex"),
        ("", "no input"),
        ("0001000100010046db08", "truncated"),
        ("0f000001", "truncated"),
    ],
)
def test_bad_input_exit_2_one_line(
    frame: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _decode(capsys, frame)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("dlmsd decode: ")


def test_forged_push_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    frame = bytearray.fromhex(UDP_PUSHES[0]["hex"])
    frame[-1] ^= 0x01  # last byte of the GCM tag
    code, out, err = _decode(capsys, frame.hex(), "--ek", DUMMY_KEY, "--ak", DUMMY_KEY)
    assert code == 2
    assert out == ""
    assert "authentication" in err.lower()
    assert DUMMY_KEY not in err.lower()


def test_missing_keys_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _decode(capsys, UDP_PUSHES[0]["hex"])
    assert code == 2
    assert "2F19229199164103" in err


def test_quarantine_file_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        json.dumps({"system_title": "2F19229199164103", "frame_hex": vector["hex"]})
        for vector in UDP_PUSHES
    ]
    quarantine = tmp_path / "quarantine.jsonl"
    quarantine.write_text("\n".join(lines) + "\n")
    code, out, err = _decode(
        capsys, "--quarantine", str(quarantine), "--ek", DUMMY_KEY, "--ak", DUMMY_KEY
    )
    assert code == 0, err
    counters = [json.loads(line)["invocation_counter"] for line in out.splitlines()]
    assert counters == [485, 486, 487, 488]


def test_keys_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        "[meters.2F19229199164103]\n"
        'name = "dummy"\n'
        f'encryption_key = "{DUMMY_KEY}"\n'
        f'authentication_key = "{DUMMY_KEY}"\n'
    )
    os.chmod(keys, 0o600)
    code, out, err = _decode(capsys, UDP_PUSHES[1]["hex"], "--keys", str(keys))
    assert code == 0, err
    assert json.loads(out)["invocation_counter"] == 486


def test_segmented_hdlc_push(capsys: pytest.CaptureFixture[str]) -> None:
    # An encrypted electricity push split over three UI frames, S bit on all but the last.
    from datetime import UTC, datetime

    from dlmsd.service.simulator import build_push, hdlc_frames, make_meters

    meter = make_meters(2)[1]
    apdu = build_push(meter, 7, datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    frames = hdlc_frames(apdu, max_information=48)
    assert frames.count(b"\x7e\xa8") >= 2  # segmented format field
    code, out, err = _decode(
        capsys,
        frames.hex(),
        "--ek",
        meter.encryption_key.hex(),
        "--ak",
        meter.authentication_key.hex(),
    )
    assert code == 0, err
    [record] = validated([json.loads(out)])
    assert record["framing"] == "hdlc"
    assert record["invocation_counter"] == 7
    assert record["security"] == "auth+enc"
    assert any(r["unit"] == "Wh" for r in record["readings"])


def test_wrapper_stream_of_several_frames(capsys: pytest.CaptureFixture[str]) -> None:
    # Four published pushes back to back, as one TCP read would carry them.
    frames = "".join(str(vector["hex"]) for vector in UDP_PUSHES)
    code, out, err = _decode(capsys, frames, "--ek", DUMMY_KEY, "--ak", DUMMY_KEY)
    assert code == 0, err
    assert [json.loads(line)["invocation_counter"] for line in out.splitlines()] == [
        485,
        486,
        487,
        488,
    ]


def test_missing_authentication_key_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    # ../shared/docs/dlms-reference.md section 4, vector 3: auth+enc, EK != AK.
    frame = (
        "0001000100010031"
        "DB084D4D4D0000BC614E263001234567"
        "8E1212FF9A5A45556E273B55851798F90F624704884948FC3E15574307AF2732AE"
    )
    code, out, err = _decode(capsys, frame, "--ek", "000102030405060708090A0B0C0D0E0F")
    assert (code, out) == (2, "")
    assert "authentication key is missing" in err and "--ak" in err
    assert "forged" not in err
    # a wrong --ak given explicitly is still a tag that does not verify
    code, _, err = _decode(
        capsys, frame, "--ek", "000102030405060708090A0B0C0D0E0F", "--ak", "00" * 16
    )
    assert code == 2 and "forged frame or wrong key" in err


def test_help_says_what_each_key_defaults_to(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["decode", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: the --ek value" in text  # --ak
    assert "default: none, so ciphered frames are refused" in text  # --ek
    assert "default: the frame's own" in text  # --system-title
