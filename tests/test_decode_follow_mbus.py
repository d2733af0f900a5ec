"""`dlmsd decode --follow` on wired M-Bus streams: the M-Bus framing registered in
`dlmsd.protocol.framing` (via `dlmsd.protocol.mbus_framing`), real captures from
tests/data/field/ (sources cited there), in pieces, from a session and a serial pty."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dlmsd.decode_follow import Follower, Problem, Record
from dlmsd.protocol.security import Suite0Cipher

REPO = Path(__file__).resolve().parents[1]
FIELD = REPO / "tests" / "data" / "field"
DLMSD = [sys.executable, "-c", "import sys; from dlmsd.cli import main; sys.exit(main())"]


def capture(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIELD / path).read_text(encoding="utf-8"))
    return data


NETZ_NOE = capture("kaifa/netz-noe-kundenschnittstelle-example.json")
T210_D_EVN = capture("sagemcom/t210-d-evn-energyagent-test.json")
T210_D = capture("sagemcom/t210-d-netz-noe-domistyle-issue-12.json")
CIPHERS = {
    bytes.fromhex(found["keys"]["system_title"]): Suite0Cipher(
        bytes.fromhex(found["keys"]["ek"]), None, allow_encryption_only=True
    )
    for found in (NETZ_NOE, T210_D_EVN)
}
# Noise, a whole T210-D push, the tail frame of a Kaifa push (joined mid-push), the
# long-length T210-D push whose key is not published, then a whole Kaifa push.
SESSION = (
    b"\x00\xe5noise"
    + bytes.fromhex(T210_D_EVN["hex"])
    + bytes.fromhex(NETZ_NOE["hex"])[256:]
    + bytes.fromhex(T210_D["hex"])
    + bytes.fromhex(NETZ_NOE["hex"])
)
EXPECTED = [
    "bad M-Bus frame: bytes outside any M-Bus frame (7 bytes skipped)",
    199910,
    "note: M-Bus segment 1 without the segments before it",
    "no keys for system title 5341475905EADB83",
    427790,
]


def summary(outputs: list[object]) -> list[object]:
    return [
        output.record["invoke_id"] if isinstance(output, Record) else output.text
        for output in outputs
        if isinstance(output, Record | Problem)
    ]


@pytest.mark.parametrize("size", [1, 13, 100_000])
def test_follower_detects_mbus_and_reads_a_session_in_pieces(size: int) -> None:
    follower = Follower(CIPHERS.get)
    outputs: list[object] = []
    for start in range(0, len(SESSION), size):
        outputs += follower.feed(SESSION[start : start + size])
    outputs += follower.finish()
    assert follower.framing_name == "mbus"
    assert summary(outputs) == EXPECTED


def test_follower_on_hex_text_of_a_session() -> None:
    text = "\n".join(SESSION[i : i + 32].hex() for i in range(0, len(SESSION), 32)).encode()
    follower = Follower(CIPHERS.get)
    outputs = follower.feed(text) + follower.finish()
    assert summary(outputs) == EXPECTED


def test_follow_on_a_serial_customer_interface(tmp_path: Path) -> None:
    # A pty stands in for the M-Bus level converter at 2400 baud 8E1.
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [*DLMSD, "decode", "--follow", "--device", os.ttyname(slave), "--baud", "2400"]
    command += ["--parity", "E", "--ek", NETZ_NOE["keys"]["ek"], "--count", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    data = bytes.fromhex(T210_D["hex"]) + bytes.fromhex(NETZ_NOE["hex"])
    try:
        assert process.stderr is not None
        assert process.stderr.readline().startswith(b"dlmsd decode: following ")
        for start in range(0, len(data), 61):
            os.write(master, data[start : start + 61])
            time.sleep(0.01)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        os.close(slave)
    assert process.returncode == 0, err
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["framing"] == "mbus" and record["invocation_counter"] == 35
    # --ek names no meter: the T210-D push (framed whole from its long-length frame)
    # decrypts with the wrong key to garbage, refused as such; no tag says so sooner.
    assert b"unknown APDU tag" in err and b"M-Bus" not in err
