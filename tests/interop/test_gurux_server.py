"""`dlmsd get`, `profile` and `objects` read a meter built on Gurux's server classes.

The meter (tests/interop/gurux_meter.py) serves a clock, an energy register and an
hourly profile over the wrapper on loopback. Gurux 1.0.203's server needs a few
accessors its own classes call but lack (listed there); beyond those, its bugs
block some cases: each such case is ``xfail(strict=True)`` quoting the bytes Gurux
sends, so it turns red the day the peer is fixed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from gurux_dlms.enums import Authentication

from tests.interop import gurux_meter
from tests.interop.gurux_meter import ENERGY, NOW, PASSWORD, ROWS, serve
from tests.interop.peers import cosem_datetime
from tests.interop.support import dlmsd_json, meter_args

PROFILE = "1-0:99.1.0.255"
FAST = ["--timeout", "2", "--retries", "0"]

UA_BUG = (
    "Gurux 1.0.203 answers dlmsd's SNRM with 7ea01521022330d1fbe6e700 818000 050001c101 "
    "f66e7e: control 0x30 (an I-frame) where a UA (0x73) belongs, and a parameter group "
    "81 80 00 of length 0 followed by stray bytes; no UA, so no HDLC session"
)
AARE_BUG = (
    "Gurux 1.0.203's AARE for HLS-GMAC: ...88020780 8907608574050802 05 aa10 8010 <16 bytes> "
    "be10...: responding-authentication-value [10] says 0x10 bytes around an 0x12-byte "
    "content, and no responding-AP-title (A4) though HLS-GMAC needs the server's system "
    "title; result a203020101 (rejected-permanent)"
)
RANGE_BUG = (
    "Gurux 1.0.203's Profile Generic compares the range's datetime bounds with an int "
    "(TypeError in __getProfileGenericData) and answers c401c10101: hardware-fault, "
    "carrying the previous request's invoke-id"
)
ENTRIES_BUG = (
    "Gurux 1.0.203 answers an entry descriptor with to_selected_value 0 (all columns, "
    "Blue Book 4.3.6) with c401c200 0103 0201 0201 0201: an array of 3 one-element "
    "structures that hold nothing, for 2 rows of 2 columns"
)


def security(auth: str) -> list[str]:
    if auth == "lls":
        return ["--client-sap", "1", "--auth", "lls", "--password", PASSWORD.decode()]
    if auth == "hls":
        return [
            "--client-sap",
            "1",
            "--auth",
            "hls-gmac",
            "--ek",
            "000102030405060708090A0B0C0D0E0F",
            "--ak",
            "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF",
            "--system-title",
            "4D4D4D0000000001",
            "--invocation-counter",
            "1",
        ]
    return []


GURUX_AUTH = {"none": Authentication.NONE, "lls": Authentication.LOW}
GURUX_AUTH["hls"] = Authentication.HIGH_GMAC


def read_basics(framing: str, auth: str) -> list[Any]:
    with serve(framing, GURUX_AUTH[auth]) as meter:
        args = meter_args(meter.port, framing, [*security(auth), *FAST])
        targets = ["0-0:1.0.0.255", "1-0:1.8.0.255", "1-0:1.8.0.255:3"]
        return list(dlmsd_json("get", "--raw", *args, *targets))  # the typed view


@pytest.mark.parametrize(
    ("framing", "auth"),
    [
        ("wrapper", "none"),
        ("wrapper", "lls"),
        pytest.param("hdlc", "none", marks=pytest.mark.xfail(strict=True, reason=UA_BUG)),
        pytest.param("wrapper", "hls", marks=pytest.mark.xfail(strict=True, reason=AARE_BUG)),
    ],
)
def test_dlmsd_get_reads_the_gurux_meter(framing: str, auth: str) -> None:
    clock, energy, scaler_unit = read_basics(framing, auth)
    assert cosem_datetime(bytes.fromhex(clock["value"]["value"])) == NOW
    assert energy["value"]["value"] == ENERGY
    assert [field["value"] for field in scaler_unit["value"]["value"]] == [0, 30]


def test_dlmsd_objects_lists_the_gurux_meter() -> None:
    with serve() as meter:
        objects = dlmsd_json("objects", *meter_args(meter.port, "wrapper", FAST))
    listed = [(entry["class_id"], entry["obis"]) for entry in objects]
    assert listed == [
        (15, "0-0:40.0.0*255"),
        (8, "0-0:1.0.0*255"),
        (3, "1-0:1.8.0*255"),
        (7, "1-0:99.1.0*255"),
    ]


def _profile(*selection: str) -> list[list[Any]]:
    with serve() as meter:
        args = meter_args(meter.port, "wrapper", FAST)
        rows = dlmsd_json("profile", "--raw", *args, *selection, PROFILE)["rows"]
    return [[dt.datetime.fromisoformat(row[0]), row[1]] for row in rows]


def test_dlmsd_profile_reads_the_whole_gurux_buffer() -> None:
    assert _profile() == [[moment, value] for moment, value in ROWS]


@pytest.mark.xfail(strict=True, reason=RANGE_BUG)
def test_dlmsd_profile_by_range_on_the_gurux_meter() -> None:
    start, end = ROWS[1][0], ROWS[3][0]
    rows = _profile("--from", start.isoformat(), "--to", end.isoformat())
    assert rows == [[moment, value] for moment, value in ROWS[1:4]]


@pytest.mark.xfail(strict=True, reason=ENTRIES_BUG)
def test_dlmsd_profile_by_entries_on_the_gurux_meter() -> None:
    assert _profile("--entries", "2:3") == [[moment, value] for moment, value in ROWS[1:3]]


def test_the_gurux_meter_is_gurux() -> None:
    """The meter under test is Gurux's server class, not a stand-in."""
    from gurux_dlms.secure import GXDLMSSecureServer

    assert issubclass(gurux_meter.GuruxMeter, GXDLMSSecureServer)
