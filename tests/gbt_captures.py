"""Real GBT-in-HDLC captures (tests/data/field/landis-gyr/, each file citing its source)
and helpers the GBT tests share: frames, framing-stream events, a serial session."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.framing import HdlcFramingStream, StreamEvent
from dlmsd.protocol.hdlc.frames import HdlcFrame
from dlmsd.protocol.hdlc.stream import HdlcStreamDecoder
from dlmsd.protocol.obis import Obis

FIELD = Path(__file__).resolve().parent / "data" / "field" / "landis-gyr"


def field_hex(slug: str) -> bytes:
    return bytes.fromhex("".join(json.loads((FIELD / f"{slug}.json").read_text())["hex"].split()))


# Real capture, L+G E450: blocks 1, 2, 2 (a duplicate), 4, 3 of one push; the source's
# parser refuses it. smartmeter-datacollector tests/testdata/lg_e450.py
# UNENCRYPTED_INVALID_DATA at commit 1507c3fc4d0f519fa6a6f073864cdd0f9af57cf6
# (https://github.com/scs/smartmeter-datacollector).
E450_DUPLICATED_BLOCK = bytes.fromhex(
    "7EA084CEFF0313128BE6E700E04000010000700F0000C9600C07E50706020E0737FF8000000210011002"
    "0412002809060008190900FF0F02120000020412002809060008190900FF0F0112000002041200010906"
    "00002A0000FF0F02120000020412000109060000600101FF0F02120000020412000809060000010000FF"
    "0F0212000035377E7EA07DCEFF0313D045E040000200006C020412000309060100010700FF0F02120000"
    "020412000309060100020700FF0F02120000020412000309060100030700FF0F02120000020412000309"
    "060100040700FF0F02120000020412000309060101010800FF0F02120000020412000309060101020800"
    "FF0F02120000B3987E7EA07DCEFF0313D045E040000200006C020412000309060100010700FF0F021200"
    "00020412000309060100020700FF0F02120000020412000309060100030700FF0F021200000204120003"
    "09060100040700FF0F02120000020412000309060101010800FF0F021200000204120003090601010208"
    "00FF0F02120000B3987E7EA057CEFF0313E969E0C00004000046393132090C07E50706020E0813FF8000"
    "81060000000006000000000600000000060000000006000D88C106000000000600000012060000000106"
    "00000000060004720D1203E8AD297E7EA08BCEFF0313EEE1E040000300007A0204120003090601010508"
    "00FF0F02120000020412000309060101060800FF0F02120000020412000309060101070800FF0F021200"
    "00020412000309060101080800FF0F021200000204120003090601000D0700FF0F021200000906000819"
    "0900FF09104C475A313033303635353933333531320907313933353B2A7E"
)


def frames_of(data: bytes) -> list[HdlcFrame]:
    decoder = HdlcStreamDecoder()
    decoder.receive_data(data)
    frames = []
    while (event := decoder.next_event()) is not NEED_DATA:
        assert isinstance(event, HdlcFrame), event
        frames.append(event)
    return frames


def stream_events(data: bytes, cuts: Sequence[int] = ()) -> list[StreamEvent]:
    """The events of `data` fed to one HDLC framing stream, cut at `cuts`, then finished."""
    stream = HdlcFramingStream()
    events: list[StreamEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        events += stream.feed(data[start:cut])
        start = max(start, cut)
    return events + stream.finish()


# A session as a serial line would carry it: noise, a push cut short by a restart (real),
# a push with a duplicated block (real), another push (real).
SESSION = (
    b"\x13\x37 noise"
    + field_hex("e450-scs-restarted-push")
    + E450_DUPLICATED_BLOCK
    + field_hex("e450-scs-alternative-config")
)


def body_readings(record: dict[str, object]) -> dict[str, object]:
    """The values of an L+G push that carries its own push object list (element 1),
    by OBIS. Pairing them is the profiles' job; here it only shows the values came
    through the reassembly intact."""
    body = record["body"]
    assert isinstance(body, dict)
    values = body["value"]
    listed = values[0]["value"]
    pairs = {}
    for capture, value in zip(listed, values, strict=True):
        obis = str(Obis.from_bytes(bytes.fromhex(capture["value"][1]["value"])))
        pairs[obis.removesuffix("*255")] = value["value"]
    return pairs
