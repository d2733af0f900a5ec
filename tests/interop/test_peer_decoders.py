"""`dlmsd decode`, the daemon and dlmsd's A-XDR decoder agree with the peers' own decoders.

Every published vector (tests/vectors.py) that carries pushed data or A-XDR values is
decoded by dlmsd and by dlms-cosem's and Gurux's decoders; the value trees are
normalised (lists, ints, text, octet-strings as hex, dates and times as their
fields with None for "not specified") and compared. Where a peer cannot decode a
vector, or decodes it differently, :data:`PEER_GAPS` says so and which side
follows the Green Book; those cases are asserted as they are, strictly, so a peer
fix shows up as a failure to update the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from dlms_cosem import a_xdr as dc_axdr
from dlms_cosem import security as dc_security
from dlms_cosem import time as dc_time
from dlms_cosem.hdlc.frames import UnnumberedInformationFrame as DcUiFrame
from dlms_cosem.protocol.wrappers import WrapperProtocolDataUnit as DcWrapper
from dlms_cosem.protocol.xdlms import DataNotification as DcDataNotification
from dlms_cosem.protocol.xdlms import GeneralGlobalCipher as DcGeneralGlobalCipher
from dlms_cosem.protocol.xdlms.get import GetResponseFactory as DcGetResponseFactory
from gurux_dlms import (
    GXByteBuffer,
    GXDate,
    GXDateTime,
    GXDLMSClient,
    GXDLMSSettings,
    GXReplyData,
    GXTime,
)
from gurux_dlms.enums import Authentication, DataType, DateTimeSkips, InterfaceType, Security
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo
from gurux_dlms.secure import GXDLMSSecureClient

from dlmsd.protocol.axdr import Data, decode_data
from dlmsd.protocol.axdr import DataType as DlmsdType
from dlmsd.protocol.cosem_datetime import CosemDate, CosemDateTime, CosemTime
from tests.faults.support import DaemonProcess, wait_for
from tests.interop.support import dlmsd_json
from tests.vectors import by_kind, vector_id

VECTOR_TITLE = "2F19229199164103"  # the meter of the published UDP pushes
PUSH_KINDS = (
    "udp_wrapper+general_glo_ciphering_datanotification",
    "general_glo_ciphering_apdu",
    "data_notification_apdu",
    "hdlc_ui_frame_data_notification",
)
DATA_KINDS = (
    "axdr_visible_string",
    "axdr_structure_lte_monitoring",
    "axdr_structure_gsm_cell_info",
    "axdr_structure_limit",
    "profile_generic_buffer",
    "axdr_get_data_result_profile",
    "axdr_date_time_types",
)
GET_KINDS = ("get_response_normal", "get_response_with_list", "get_response_with_list_compound")

#: (peer, vector id) -> why the peer's result is not the Green Book's (asserted as is).
PEER_GAPS: dict[tuple[str, str], str] = {}


def _gap(peer: str, kind: str, line: str, why: str) -> None:
    for vector in by_kind(kind):
        if vector["source"].endswith(line):
            PEER_GAPS[(peer, vector_id(vector))] = why


# Bare date/time contents without a Data tag (DateData.from_bytes): not A-XDR Data at all.
for _line in (":L29", ":L57"):
    _gap("all", "axdr_date_time_types", _line, "a tagless date/time body, not a Data value")
_gap(
    "dlms-cosem",
    "axdr_date_time_types",
    ":L25",
    "dlms-cosem 25.1.0 raises TypeError on a date with every field not specified (FF); "
    "the Green Book allows it (0xFFFF year, 0xFF month/day/weekday): dlmsd keeps it",
)
_gap(
    "dlms-cosem",
    "axdr_date_time_types",
    ":L65",
    "same: dlms-cosem 25.1.0 cannot decode the all-FF date",
)
_gap(
    "dlms-cosem",
    "axdr_date_time_types",
    ":L53",
    "dlms-cosem 25.1.0 reads a time with every field FF as 00:00:00; the Green Book says FF "
    "is 'not specified': dlmsd keeps the fields unspecified",
)
_gap(
    "gurux",
    "axdr_date_time_types",
    ":L39",
    "Gurux 1.0.203 reads hundredths 0x17 (= 0.23 s) as 230 microseconds; the Green Book's "
    "time has hundredths of a second: dlmsd and dlms-cosem give 23 hundredths",
)


# --- normalising ---------------------------------------------------------------------------


_TIME_FIELDS = ("hour", "minute", "second", "hundredths")


def from_dlmsd(value: Data) -> Any:
    kind, raw = value.type, value.value
    if kind in (DlmsdType.STRUCTURE, DlmsdType.ARRAY):
        return [from_dlmsd(item) for item in raw]
    if isinstance(raw, CosemDate | CosemTime):
        names = ("year", "month", "day") if isinstance(raw, CosemDate) else _TIME_FIELDS
        fields = raw.fields  # only the specified ones
        return ("date" if isinstance(raw, CosemDate) else "time", *map(fields.get, names))
    if isinstance(raw, bytes):
        return raw.hex()
    return raw


def from_json(node: dict[str, Any]) -> Any:
    """`dlmsd decode`'s {"type", "value"} tree."""
    value = node["value"]
    if node["type"] in ("structure", "array"):
        return [from_json(item) for item in value]
    return value


def from_cosem(value: Any) -> Any:
    if isinstance(value, list):
        return [from_cosem(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, dt.time):
        return ("time", value.hour, value.minute, value.second, value.microsecond // 10_000)
    if isinstance(value, dt.date):
        return ("date", value.year, value.month, value.day)
    return value


def _unless(skip: int, flag: int, value: int) -> int | None:
    return None if skip & flag else value


def from_gurux(value: Any) -> Any:
    if isinstance(value, list):  # GXStructure, GXArray
        return [from_gurux(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, GXDate):
        moment, skip = value.value, int(value.skip)
        return (
            "date",
            _unless(skip, DateTimeSkips.YEAR, moment.year),
            _unless(skip, DateTimeSkips.MONTH, moment.month),
            _unless(skip, DateTimeSkips.DAY, moment.day),
        )
    if isinstance(value, GXTime):
        moment, skip = value.value, int(value.skip)
        return (
            "time",
            _unless(skip, DateTimeSkips.HOUR, moment.hour),
            _unless(skip, DateTimeSkips.MINUTE, moment.minute),
            _unless(skip, DateTimeSkips.SECOND, moment.second),
            _unless(skip, DateTimeSkips.MILLISECOND, moment.microsecond // 10_000),
        )
    return value


def _all_items(raw: bytes) -> Iterator[Data]:
    offset = 0
    while offset < len(raw):
        item, offset = decode_data(raw, offset)
        yield item


def dlmsd_items(raw: bytes) -> list[Any]:
    return [from_dlmsd(item) for item in _all_items(raw)]


def cosem_items(raw: bytes) -> list[Any]:
    decoder = dc_axdr.AXdrDecoder(
        encoding_conf=dc_axdr.EncodingConf(attributes=[dc_axdr.Sequence(attribute_name="data")])
    )
    decoded = decoder.decode(raw)["data"]
    items = decoded if _several_items(raw) else [decoded]
    return [from_cosem(item) for item in items]


def _several_items(raw: bytes) -> bool:
    return len(list(_all_items(raw))) > 1


def gurux_items(raw: bytes) -> list[Any]:
    buffer = GXByteBuffer(raw)
    items = []
    while buffer.position < buffer.size:
        info = _GXDataInfo()
        items.append(from_gurux(_GXCommon.getData(GXDLMSSettings(False, None), buffer, info)))
        if not info.complete:
            raise ValueError("Gurux: incomplete data")
    return items


# --- A-XDR values --------------------------------------------------------------------------


def _data_bytes(vector: dict[str, Any]) -> bytes:
    raw = bytes.fromhex(vector["hex"])
    if vector["kind"] == "axdr_get_data_result_profile":
        return raw[1:]  # Get-Data-Result: 00 = the data choice, then the Data
    return raw


DECODERS = {"dlms-cosem": cosem_items, "gurux": gurux_items}


@pytest.mark.parametrize("peer", list(DECODERS))
@pytest.mark.parametrize(
    "vector", [pytest.param(v, id=vector_id(v)) for v in by_kind(*DATA_KINDS)]
)
def test_axdr_values_agree(vector: dict[str, Any], peer: str) -> None:
    raw = _data_bytes(vector)
    gap = PEER_GAPS.get(("all", vector_id(vector))) or PEER_GAPS.get((peer, vector_id(vector)))
    if PEER_GAPS.get(("all", vector_id(vector))):
        pytest.skip(gap)
    ours = dlmsd_items(raw)
    try:
        theirs = DECODERS[peer](raw)
    except Exception as error:
        assert gap, f"{peer} cannot decode {vector_id(vector)}: {error!r}"
        return
    if gap:
        assert theirs != ours, f"{peer} now agrees with dlmsd: drop PEER_GAPS entry ({gap})"
    else:
        assert theirs == ours


def test_published_values_are_what_the_sources_assert() -> None:
    """A few values the vectors' sources state, so agreement is not agreement on nonsense."""
    (limit,) = [v for v in by_kind("axdr_structure_limit")]
    assert dlmsd_items(bytes.fromhex(limit["hex"]))[0][0] == 26_236_427
    (time_vector,) = [v for v in by_kind("axdr_date_time_types") if v["hex"] == "1b081e0f17"]
    assert dlmsd_items(bytes.fromhex(time_vector["hex"])) == [("time", 8, 30, 15, 23)]


# --- GET responses -----------------------------------------------------------------------


def _cosem_get(raw: bytes) -> list[Any]:
    response = DcGetResponseFactory.from_bytes(raw)
    if hasattr(response, "response_data"):
        items = []
        for item in response.response_data:
            items.append(from_cosem(dc_axdr_value(item)))
        return items
    return cosem_items(bytes(response.data))


def dc_axdr_value(item: Any) -> Any:
    return item.to_python() if hasattr(item, "to_python") else item


def _gurux_get(raw: bytes) -> list[Any]:
    client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.PDU)
    reply = GXReplyData()
    client.getData(GXByteBuffer(raw), reply, None)
    value = reply.value
    return [from_gurux(item) for item in value] if raw[1] == 3 else [from_gurux(value)]


def _dlmsd_get(raw: bytes) -> list[Any]:
    apdu = dlmsd_json("decode", raw.hex())["apdu"]
    if "results" in apdu:
        return [from_json(result) for result in apdu["results"]]
    return [from_json(apdu["result"])]


@pytest.mark.parametrize("peer", ["dlms-cosem", "gurux"])
@pytest.mark.parametrize("vector", [pytest.param(v, id=vector_id(v)) for v in by_kind(*GET_KINDS)])
def test_get_responses_agree(vector: dict[str, Any], peer: str) -> None:
    raw = bytes.fromhex(vector["hex"])
    ours = _dlmsd_get(raw)
    theirs = (_cosem_get if peer == "dlms-cosem" else _gurux_get)(raw)
    assert theirs == ours


# --- COSEM date-time ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector", [pytest.param(v, id=vector_id(v)) for v in by_kind("cosem_date_time_12_bytes")]
)
def test_date_time_agrees(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    ours = CosemDateTime.from_bytes(raw).to_datetime()
    cosem, _status = dc_time.datetime_from_bytes(raw)
    gurux = GXDLMSClient.changeType(bytearray(raw), DataType.DATETIME)
    assert isinstance(gurux, GXDateTime)
    assert ours == cosem == gurux.value
    assert ours is not None
    assert (ours.utcoffset(), cosem.utcoffset()) == (gurux.value.utcoffset(),) * 2
    asserted = vector["expected"]["asserted"]["decode"].split(" ")[0]
    assert ours.isoformat() == asserted


# --- pushes: `dlmsd decode`, the daemon and the peers --------------------------------------


def _keys(vector: dict[str, Any]) -> tuple[bytes, bytes] | None:
    keys = vector["keys"]
    if not keys:
        return None
    return bytes.fromhex(keys["encryption_key"]), bytes.fromhex(keys["authentication_key"])


def dlmsd_push(vector: dict[str, Any]) -> dict[str, Any]:
    keys = _keys(vector)
    args = ["decode", vector["hex"]]
    if keys:
        args[1:1] = ["--ek", keys[0].hex(), "--ak", keys[1].hex()]
    decoded = dlmsd_json(*args)
    return {
        "system_title": decoded["system_title"],
        "invocation_counter": decoded["invocation_counter"],
        "invoke_id": decoded["invoke_id"],
        "datetime": decoded["datetime"],
        "body": from_json(decoded["body"]),
    }


def cosem_push(vector: dict[str, Any]) -> dict[str, Any]:
    raw = bytes.fromhex(vector["hex"])
    if vector["kind"].startswith("udp_wrapper"):
        raw = bytes(DcWrapper.from_bytes(raw).data)
    elif vector["kind"].startswith("hdlc"):
        raw = bytes(DcUiFrame.from_bytes(raw).payload)[3:]  # after the LLC
    title = counter = None
    if raw[0] == DcGeneralGlobalCipher.TAG:
        envelope = DcGeneralGlobalCipher.from_bytes(raw)
        keys = _keys(vector)
        assert keys is not None
        title, counter = envelope.system_title.hex().upper(), envelope.invocation_counter
        raw = dc_security.decrypt(
            envelope.security_control,
            envelope.system_title,
            envelope.invocation_counter,
            keys[0],
            envelope.ciphered_text,
            keys[1],
        )
    notification = DcDataNotification.from_bytes(raw)
    moment = notification.date_time
    return {
        "system_title": title,
        "invocation_counter": counter,
        "invoke_id": notification.long_invoke_id_and_priority.long_invoke_id,
        "datetime": moment.isoformat() if moment else None,
        "body": cosem_items(bytes(notification.body))[0],
    }


def gurux_push(vector: dict[str, Any]) -> dict[str, Any]:
    kind = vector["kind"]
    hdlc = kind.startswith("hdlc")
    interface = (
        InterfaceType.HDLC
        if hdlc
        else InterfaceType.WRAPPER
        if kind.startswith("udp")
        else InterfaceType.PDU
    )
    # the HDLC vector is addressed to client 0x41 >> 1 = 32
    client = GXDLMSSecureClient(True, 32 if hdlc else 1, 1, Authentication.NONE, None, interface)
    keys = _keys(vector)
    if keys:
        client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        client.ciphering.blockCipherKey, client.ciphering.authenticationKey = keys
    reply, notify = GXReplyData(), GXReplyData()
    client.getData(GXByteBuffer(bytes.fromhex(vector["hex"])), reply, notify)
    return {
        # Gurux 1.0.203 keeps the long-invoke-id in `reply` for wrapper/PDU input, in
        # `notify` for HDLC input
        "invoke_id": (notify.invokeId or reply.invokeId) & 0xFFFFFF,
        "datetime": notify.time.value.isoformat() if notify.time else None,
        "body": from_gurux(notify.value),
    }


PUSH_VECTORS = [pytest.param(v, id=vector_id(v)) for v in by_kind(*PUSH_KINDS)]


@pytest.mark.parametrize("vector", PUSH_VECTORS)
def test_pushes_decode_alike(vector: dict[str, Any]) -> None:
    ours = dlmsd_push(vector)
    cosem = cosem_push(vector)
    assert cosem == ours
    gurux = gurux_push(vector)
    assert gurux == {key: ours[key] for key in gurux}


def test_the_daemon_stores_what_the_peers_decode(daemon: DaemonProcess) -> None:
    """The four published UDP pushes through a running daemon: each record's body and
    header are what dlms-cosem and Gurux decode from the same bytes."""
    vectors = by_kind(PUSH_KINDS[0])
    for vector in vectors:
        _send_udp(daemon.udp_port, bytes.fromhex(vector["hex"]))

    def stored() -> dict[int, dict[str, Any]]:
        return {
            record["invocation_counter"]: record
            for record in daemon.records()
            if record["system_title"] == VECTOR_TITLE
        }

    wait_for(lambda: len(stored()) == len(vectors), 15, "the four records")
    records = stored()
    for vector in vectors:
        cosem = cosem_push(vector)
        record = records[cosem["invocation_counter"]]
        assert record["system_title"] == cosem["system_title"]
        assert record["invoke_id"] == cosem["invoke_id"] == gurux_push(vector)["invoke_id"]
        assert record["datetime"] == cosem["datetime"]
        assert from_json(record["body"]) == cosem["body"] == gurux_push(vector)["body"]


def _send_udp(port: int, frame: bytes) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(frame, ("127.0.0.1", port))
