"""`dlmsd decode` on GBT-in-HDLC captures (whole and --file) and `--follow` on streams
(stdin, a session file, a serial device behind a pty), with real Landis+Gyr captures."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from dlmsd.cli import main
from dlmsd.decode_follow import Follower, HexText, Problem, Record, follow
from dlmsd.protocol.framing import StreamApdu
from tests.gbt_captures import (
    E450_DUPLICATED_BLOCK,
    FIELD,
    SESSION,
    body_readings,
    field_hex,
    stream_events,
)
from tests.records import validated

REPO = Path(__file__).resolve().parents[1]
DLMSD = [sys.executable, "-c", "import sys; from dlmsd.cli import main; sys.exit(main())"]
E570_KEY = "101112131415161718191A1B1C1D1E1F"


def _decode(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# The source's scale for currents (smartmeter_datacollector/smartmeter/cosem.py: 0.01 for
# 1-0:31/51/71.7.0); the push itself carries none.
SOURCE_SCALE = {"1-0:31.7.0": Decimal("0.01"), "1-0:51.7.0": Decimal("0.01")}
SOURCE_SCALE["1-0:71.7.0"] = Decimal("0.01")


def stated(value: object, obis: str) -> str:
    if isinstance(value, str):  # octet-strings: the id as text, the clock as date-time
        raw = bytes.fromhex(value)
        if len(raw) == 12:
            year = int.from_bytes(raw[:2], "big")
            return f"{year:04}-{raw[2]:02}-{raw[3]:02}T{raw[5]:02}:{raw[6]:02}:{raw[7]:02}"
        return raw.decode("ascii")
    assert isinstance(value, int)
    scale = SOURCE_SCALE.get(obis)
    return str(value * scale) if scale is not None else str(value)


# The scs captures this module was written for; the whole corpus runs in tests/field.
FIELD_FILES = sorted(FIELD.glob("*-scs-*.json"))


@pytest.mark.parametrize("path", FIELD_FILES, ids=lambda path: path.stem)
def test_field_capture_decodes_to_the_values_its_source_states(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = json.loads(path.read_text())
    assert capture["source"].startswith("https://github.com/scs/smartmeter-datacollector/")
    argv = [capture["hex"]]
    if capture["keys"]:
        keys = tmp_path / "keys.toml"
        # The source publishes no authentication key; SC 0x20 (encryption only) uses none.
        keys.write_text(
            "[meters.4C475A6774206295]\n"
            f'encryption_key = "{capture["keys"]["ek"]}"\n'
            f'authentication_key = "{capture["keys"]["ek"]}"\n'
            'security = ["enc"]\n'
        )
        os.chmod(keys, 0o600)
        argv += ["--keys", str(keys)]
    code, out, err = _decode(capsys, *argv)
    assert code == 0, err
    [line] = out.splitlines()
    [record] = validated([json.loads(line)])
    assert record["framing"] == "hdlc"
    expected = capture["expected"]
    if expected["datetime"] is not None:
        assert record["datetime"] == expected["datetime"]
    values = body_readings(record)
    for reading in expected["readings"]:
        got = stated(values[reading["obis"]], reading["obis"])
        if isinstance(values[reading["obis"]], int):
            assert Decimal(got) == Decimal(reading["value"]), reading
        else:
            assert got == reading["value"], reading


def test_encryption_only_push_is_refused_without_enc_in_the_key_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[meters.4C475A6774206295]\nencryption_key = "{E570_KEY}"\n'
        f'authentication_key = "{E570_KEY}"\n'
    )
    os.chmod(keys, 0o600)
    code, _, err = _decode(capsys, field_hex("e570-scs-encrypted").hex(), "--keys", str(keys))
    assert code == 2
    assert "encryption-only" in err


def test_real_e570_push_uses_the_82_length_form() -> None:
    # general-glo-ciphering whose length is 82 01 FF (511 bytes follow): it decodes
    # (test_field_capture_decodes_to_the_values_its_source_states[e570-scs-encrypted]).
    [found] = stream_events(field_hex("e570-scs-encrypted"))
    apdu = found.apdu  # type: ignore[union-attr]
    assert apdu[:10] == bytes.fromhex("DB084C475A6774206295")
    assert apdu[10:13] == b"\x82\x01\xff" and len(apdu) == 13 + 0x1FF


def test_duplicated_block_capture_exits_2_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _decode(capsys, E450_DUPLICATED_BLOCK.hex())
    assert (code, out) == (2, "")
    assert err == "dlmsd decode: GBT block 2 after 2 (a duplicate)\n"


def test_apdu_with_its_llc_header_decodes_like_without(
    capsys: pytest.CaptureFixture[str],
) -> None:
    [found] = stream_events(field_hex("e450-scs-vse-2026"))
    apdu = found.apdu  # type: ignore[union-attr]
    code, plain, err = _decode(capsys, apdu.hex())
    assert code == 0, err
    for llc in ("E6E700", "E6E600"):
        code, out, err = _decode(capsys, llc + apdu.hex())
        assert code == 0, err
        assert json.loads(out) == json.loads(plain)
    assert json.loads(plain)["framing"] == "apdu"


def test_file_of_hex_or_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = json.loads((FIELD / "e450-scs-vse-2026.json").read_text())
    text = tmp_path / "capture.txt"
    text.write_text(capture["hex"].replace(" ", "\n", 3))
    raw = tmp_path / "capture.bin"
    raw.write_bytes(field_hex("e450-scs-vse-2026"))
    outputs = []
    for path in (text, raw):
        code, out, err = _decode(capsys, "--file", str(path))
        assert code == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1] and json.loads(outputs[0])["invoke_id"] == 0xD7DD82


# --- the follow loop ----------------------------------------------------------------


def run_follower(chunks: list[bytes], **options: object) -> list[object]:
    follower = Follower(lambda _title: None, **options)  # type: ignore[arg-type]
    outputs: list[object] = []
    for chunk in chunks:
        outputs += follower.feed(chunk)
    return outputs + follower.finish()


def summary(outputs: list[object]) -> list[object]:
    return [
        output.record["invoke_id"] if isinstance(output, Record) else output.text
        for output in outputs
        if isinstance(output, Record | Problem)
    ]


EXPECTED_SESSION = [
    "bad HDLC frame: bytes outside any HDLC frame (8 bytes skipped)",
    "note: GBT message restarted at block 1 after block 2",
    0xCBC6,
    "GBT block 2 after 2 (a duplicate)",
    0x03B533,
]


@pytest.mark.parametrize("size", [1, 5, 64, 100_000])
def test_follower_on_a_binary_session_in_pieces(size: int) -> None:
    chunks = [SESSION[i : i + size] for i in range(0, len(SESSION), size)]
    assert summary(run_follower(chunks)) == EXPECTED_SESSION


@pytest.mark.parametrize("size", [1, 7, 100_000])
def test_follower_on_a_hex_session_in_pieces(size: int) -> None:
    text = b"\n".join(SESSION[i : i + 40].hex().encode() for i in range(0, len(SESSION), 40))
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    assert summary(run_follower(chunks)) == EXPECTED_SESSION


def test_follower_reports_a_session_that_ends_mid_push() -> None:
    data = field_hex("e450-scs-vse-2026")
    assert summary(run_follower([data[:-40]])) == [
        "input ends inside an HDLC frame (62 bytes)",
        "GBT message ends before its last block (block 4)",
    ]


def test_follower_with_a_named_framing_and_undetectable_input() -> None:
    assert summary(run_follower([b"\x01\x02\x03"])) == ["cannot tell the framing of 3 bytes"]
    assert summary(run_follower([b"\x7e\x00" * 3000])) == [
        "cannot tell the framing from 6000 bytes; give --framing"
    ]
    outputs = run_follower([SESSION], framing_name="hdlc", input_kind="binary")
    assert summary(outputs) == EXPECTED_SESSION


def test_hex_text_keeps_an_odd_digit_for_the_next_piece() -> None:
    text = HexText()
    assert text.feed(b"7e a") == b"\x7e"
    assert text.feed(b"0:8\n4") == b"\xa0\x84"
    with pytest.raises(ValueError):
        text.feed(b"[16:58:09.395]")


def test_follow_stops_after_count_records() -> None:
    pieces = iter([SESSION, b""])
    out, err = io.StringIO(), io.StringIO()
    code = follow(lambda: next(pieces), run_follower_instance(), count=1, out=out, err=err)
    assert code == 0
    assert [json.loads(line)["invoke_id"] for line in out.getvalue().splitlines()] == [0xCBC6]
    assert err.getvalue().count("\n") == 2


def run_follower_instance() -> Follower:
    return Follower(lambda _title: None)


def test_follow_on_stdin_in_a_process() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [*DLMSD, "decode", "--follow"], input=SESSION, capture_output=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    records = validated(json.loads(line) for line in done.stdout.splitlines())
    assert [record["invoke_id"] for record in records] == [0xCBC6, 0x03B533]
    assert done.stderr.decode().splitlines() == [
        f"dlmsd decode: {line}" for line in EXPECTED_SESSION if isinstance(line, str)
    ]


def test_follow_on_a_serial_device(tmp_path: Path) -> None:
    # A pty stands in for the HAN port; the pushes arrive a piece at a time.
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [*DLMSD, "decode", "--follow", "--device", os.ttyname(slave)]
    command += ["--baud", "2400", "--parity", "E", "--count", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        # pyserial empties the input buffer when it opens the device: wait for that.
        assert process.stderr is not None
        assert process.stderr.readline().startswith(b"dlmsd decode: following ")
        for start in range(0, len(SESSION), 97):
            os.write(master, SESSION[start : start + 97])
            time.sleep(0.01)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        os.close(slave)
    assert process.returncode == 0, err
    assert [json.loads(line)["invoke_id"] for line in out.splitlines()] == [0xCBC6, 0x03B533]
    assert b"GBT block 2 after 2 (a duplicate)" in err


def test_a_registered_framing_plugs_into_decode_and_follow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What another framing (wired M-Bus) does: register a stream and a sniff function.
    # A toy framing here: b"TOY" + length (2 bytes) + APDU.
    from dlmsd.protocol import framing

    class ToyStream:
        def __init__(self, _max: int) -> None:
            self._held = b""

        def feed(self, data: bytes) -> list[framing.StreamEvent]:
            self._held += data
            events: list[framing.StreamEvent] = []
            while len(self._held) >= 5:
                size = int.from_bytes(self._held[3:5], "big")
                if len(self._held) < 5 + size:
                    break
                events.append(framing.StreamApdu("toy", self._held[5 : 5 + size]))
                self._held = self._held[5 + size :]
            return events

        def finish(self) -> list[framing.StreamEvent]:
            return []

    def sniff(prefix: bytes) -> int | None:
        return 0 if prefix.startswith(b"TOY") else None

    framing.register(framing.Framing("toy", ToyStream, sniff))
    try:
        plain = field_hex("e450-scs-alternative-config")
        [found] = stream_events_of("e450-scs-alternative-config")
        toy = b"TOY" + len(found.apdu).to_bytes(2, "big") + found.apdu
        code, out, err = _decode(capsys, toy.hex())
        assert code == 0, err
        assert json.loads(out)["framing"] == "toy"
        assert summary(run_follower([toy, toy[:10], toy[10:]])) == [0x03B533, 0x03B533]
        # The built-in framings still take their own captures.
        code, out, err = _decode(capsys, plain.hex())
        assert json.loads(out)["framing"] == "hdlc"
    finally:
        del framing.FRAMINGS["toy"]


def stream_events_of(slug: str) -> list[StreamApdu]:
    events = stream_events(field_hex(slug))
    assert all(isinstance(event, StreamApdu) for event in events)
    return events  # type: ignore[return-value]
