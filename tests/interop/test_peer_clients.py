"""Gurux's and dlms-cosem's clients read `dlmsd emulate`, and agree with `dlmsd get`.

One emulator per framing (wrapper, HDLC over TCP), run as a subprocess exactly as a
user starts it; it accepts the public client (16, no security), LLS and HLS-GMAC
with global ciphering (suite 0) on the management client (1). Each peer reads the
clock, a register (value, scaler, unit), the hourly profile by range and by
entries and the object list, then releases; each value is compared with what
`dlmsd get`, `dlmsd profile` and `dlmsd objects` print for the same objects in
the same mode. HLS sessions start their invocation counter above the meter's
frame counter (0-0:43.1.0.255), read first through the public client, as a
head-end does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.interop.peers import (
    AK,
    EK,
    PASSWORD,
    Auth,
    CosemSession,
    Framing,
    GuruxSession,
    client_sap,
    cosem_datetime,
)
from tests.interop.support import dlmsd_json, emulator, meter_args

CET = dt.timezone(dt.timedelta(hours=1))
HOURS = 48
PROFILE = "7-0:99.1.0.255"
REGISTER = "1-0:1.8.0.255"
RANGE = (dt.datetime(2023, 1, 1, 2, tzinfo=CET), dt.datetime(2023, 1, 1, 5, tzinfo=CET))
ENTRIES = (3, 6)
DLMSD_TITLE = "444C4D5344000001"


@pytest.fixture(scope="module", params=["wrapper", "hdlc"])
def meter(request: pytest.FixtureRequest) -> Iterator[tuple[Framing, int]]:
    framing: Framing = request.param
    args = ["--transport", framing, "--hours", str(HOURS), "--auth", "lls"]
    args += ["--password", PASSWORD.decode(), "--ek", EK.hex(), "--ak", AK.hex()]
    with emulator(*args) as started:
        yield framing, int(started["port"])


def security_args(auth: Auth) -> list[str]:
    args = ["--client-sap", str(client_sap(auth))]
    if auth == "lls":
        args += ["--auth", "lls", "--password", PASSWORD.decode()]
    elif auth == "hls":
        args += ["--auth", "hls-gmac", "--ek", EK.hex(), "--ak", AK.hex()]
        args += ["--system-title", DLMSD_TITLE]
    return args


def dlmsd_view(framing: Framing, port: int, auth: Auth) -> dict[str, Any]:
    """What dlmsd's own CLI prints for the objects the peers read, in the same mode."""
    extra = security_args(auth)
    base = meter_args(port, framing, extra)
    clock, value, scaler_unit = dlmsd_json(
        "get", "--raw", *base, "0-0:1.0.0.255", REGISTER, REGISTER + ":3"
    )
    scaled = dlmsd_json("get", "--scaled", *base, REGISTER)[0]
    start, end = (moment.isoformat() for moment in RANGE)
    by_range = dlmsd_json("profile", "--raw", *base, "--from", start, "--to", end, PROFILE)
    first, last = ENTRIES
    by_entries = dlmsd_json("profile", "--raw", *base, "--entries", f"{first}:{last}", PROFILE)
    objects = dlmsd_json("objects", *base)
    return {
        "clock": cosem_datetime(bytes.fromhex(clock["value"]["value"])),
        "register": (
            value["value"]["value"],
            scaler_unit["value"]["value"][0]["value"],
            scaler_unit["value"]["value"][1]["value"],
        ),
        "scaled": (Decimal(str(scaled["value"])), scaled["unit"]),  # a JSON number
        "range": [_dlmsd_row(row) for row in by_range["rows"]],
        "entries": [_dlmsd_row(row) for row in by_entries["rows"]],
        "objects": [(entry["class_id"], _dotted(entry["obis"])) for entry in objects],
    }


def _dlmsd_row(row: list[Any]) -> list[Any]:
    return [dt.datetime.fromisoformat(row[0]), *row[1:]]


def _dotted(obis: str) -> str:
    """dlmsd's 1-0:1.8.0*255 as Gurux's 1.0.1.8.0.255."""
    return obis.replace("-", ".").replace(":", ".").replace("*", ".")


def next_counter(
    session_type: type[GuruxSession] | type[CosemSession], port: int, framing: Framing
) -> int:
    """The meter's frame counter through the public client, plus one."""
    public = session_type(port, framing, "none").open()
    try:
        return public.frame_counter() + 1
    finally:
        public.release()


MODES: list[Auth] = ["none", "lls", "hls"]


@pytest.mark.parametrize("auth", MODES)
def test_gurux_client_reads_the_emulator(meter: tuple[Framing, int], auth: Auth) -> None:
    framing, port = meter
    counter = next_counter(GuruxSession, port, framing) if auth == "hls" else 1
    session = GuruxSession(port, framing, auth, counter).open()
    try:
        clock = session.clock()
        register = session.register(_dotted(REGISTER))
        by_range = session.profile_by_range(_dotted(PROFILE), *RANGE)
        first, last = ENTRIES
        by_entries = session.profile_by_entries(_dotted(PROFILE), first, last - first + 1)
        objects = session.object_list()
    finally:
        session.release()
    expected = dlmsd_view(framing, port, auth)
    assert clock == expected["clock"]
    assert register == expected["register"] == (12_345_678, 0, 30)
    assert Decimal(register[0]).scaleb(register[1]) == expected["scaled"][0]
    assert expected["scaled"][1] == "Wh"
    assert by_range == expected["range"] and len(by_range) == 4
    assert by_entries == expected["entries"] and len(by_entries) == 4
    assert objects == expected["objects"]
    if auth == "hls":
        # Gurux sends its xDLMS APDUs in general-glo (0xDB) once granted (AARQ, then the
        # HLS reply and every request): dlmsd's emulator grants general-protection
        assert any(apdu_tag(framing, sent) == 0xDB for sent in session.sent)


@pytest.mark.parametrize("auth", MODES)
def test_dlms_cosem_client_reads_the_emulator(meter: tuple[Framing, int], auth: Auth) -> None:
    framing, port = meter
    counter = next_counter(CosemSession, port, framing) if auth == "hls" else 1
    session = CosemSession(port, framing, auth, counter).open()
    try:
        clock = session.clock()
        register = session.register((1, 0, 1, 8, 0, 255))
        by_range = session.profile_by_range((7, 0, 99, 1, 0, 255), *RANGE)
        by_entries = session.profile_by_entries((7, 0, 99, 1, 0, 255), *ENTRIES)
        objects = session.object_list()
    finally:
        session.release()
    expected = dlmsd_view(framing, port, auth)
    assert clock == expected["clock"]
    assert register == expected["register"] == (12_345_678, 0, 30)
    assert by_range == expected["range"] and len(by_range) == 4
    assert by_entries == expected["entries"] and len(by_entries) == 4
    assert objects == expected["objects"]


def apdu_tag(framing: Framing, frame: bytes) -> int | None:
    """The first APDU byte of a frame a peer sent (None for HDLC frames without one)."""
    if framing == "wrapper":
        return frame[8] if len(frame) > 8 else None
    # HDLC: flag, format(2), dest(1..4), src(1), control, HCS(2), LLC(3), APDU...
    body = frame[3:]
    dest_len = next(i for i, b in enumerate(body) if b & 1) + 1
    start = 3 + dest_len + 1 + 1 + 2 + 3
    return frame[start] if len(frame) > start + 3 else None


def test_peers_see_object_undefined_and_read_write_denied(meter: tuple[Framing, int]) -> None:
    """What the emulator's access rights look like from the peers' side."""
    from dlms_cosem import cosem as dc_cosem
    from dlms_cosem import dlms_data as dc_data
    from dlms_cosem import enumerations as dc_enum
    from dlms_cosem.client import DataResultError
    from gurux_dlms.objects import GXDLMSClock

    framing, port = meter
    gurux = GuruxSession(port, framing, "none").open()
    try:
        with pytest.raises(RuntimeError, match="error 4"):  # object-undefined
            gurux.read(GXDLMSClock("0.0.1.0.0.255"), 99)
    finally:
        gurux.release()
    cosem = CosemSession(port, framing, "lls").open()
    try:
        with pytest.raises(DataResultError, match="OBJECT_UNDEFINED"):
            cosem.get(8, (0, 0, 1, 0, 0, 255), 99)
        target = dc_cosem.CosemAttribute(
            interface=dc_enum.CosemInterface.REGISTER,
            instance=dc_cosem.Obis(1, 0, 1, 8, 0, 255),
            attribute=2,
        )
        answer = cosem.client.set(target, dc_data.DoubleLongUnsignedData(1).to_bytes())
        assert answer.result == dc_enum.DataAccessResult.READ_WRITE_DENIED
    finally:
        cosem.release()
