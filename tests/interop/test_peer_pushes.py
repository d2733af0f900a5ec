"""Encrypted pushes built by the peers' own encoders reach a running `twistd dlmsd`.

Gurux's notify API (GXDLMSSecureNotify.generatePushSetupMessages: a push setup's
object list, general-glo-ciphering, suite 0) and dlms-cosem's encoder
(DataNotification + security.encrypt + GeneralGlobalCipher) each build pushes
that go to one daemon subprocess over UDP and over TCP (wrapper). The records in
the JSONL sink carry the values and date-time the peer put in; a copy with a
corrupted GCM tag is refused as ``auth_failed`` and a resent push as ``replay``,
both counted in /metrics.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

import pytest
from dlms_cosem import dlms_data as dc_data
from dlms_cosem import security as dc_security
from dlms_cosem.protocol.xdlms import DataNotification as DcDataNotification
from dlms_cosem.protocol.xdlms import GeneralGlobalCipher as DcGeneralGlobalCipher
from dlms_cosem.protocol.xdlms.data_notification import (
    LongInvokeIdAndPriority as DcLongInvokeId,
)
from gurux_dlms import GXDateTime
from gurux_dlms.enums import InterfaceType, Security
from gurux_dlms.objects import (
    GXDLMSCaptureObject,
    GXDLMSClock,
    GXDLMSPushSetup,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureNotify

from dlmsd.protocol.wrapper import WrapperFrame
from tests.faults.support import DaemonProcess, wait_for
from tests.interop.peers import AK, COSEM_PUSH_TITLE, EK, GURUX_PUSH_TITLE

GURUX_TITLE, COSEM_TITLE = GURUX_PUSH_TITLE, COSEM_PUSH_TITLE
CET = dt.timezone(dt.timedelta(hours=1))
MOMENT = dt.datetime(2024, 3, 1, 12, 15, tzinfo=CET)
CLOCK, ENERGY, VOLUME = "0-0:1.0.0*255", "1-0:1.8.0*255", "7-0:3.0.0*255"
PUSH_SETUP = "0-0:25.9.0*255"

Peer = Literal["gurux", "dlms-cosem"]
Carrier = Literal["udp", "tcp"]


def gurux_push(counter: int) -> bytes:
    """A push setup {push object list, clock, energy register} the Gurux way: its
    notify API encodes the values of the objects in the list, then ciphers."""
    notify = GXDLMSSecureNotify(True, 1, 1, InterfaceType.WRAPPER)
    ciphering = notify.ciphering
    ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    ciphering.systemTitle = GURUX_TITLE
    ciphering.blockCipherKey = EK
    ciphering.authenticationKey = AK
    ciphering.invocationCounter = counter
    push = GXDLMSPushSetup("0.0.25.9.0.255")
    clock = GXDLMSClock("0.0.1.0.0.255")
    clock.time = GXDateTime(MOMENT)
    energy = GXDLMSRegister("1.0.1.8.0.255")
    energy.value = 12_345 + counter
    for obj in (push, clock, energy):
        push.pushObjectList.append((obj, GXDLMSCaptureObject(2, 0)))
    (frame,) = notify.generatePushSetupMessages(MOMENT, push)
    return bytes(frame)


def cosem_push(counter: int, with_date_time: bool = False) -> bytes:
    """{clock, gas volume with scaler/unit} with dlms-cosem's data classes and cipher.

    dlms-cosem writes the DataNotification date-time as ``01`` + 12 bytes (issue 14
    §2): by default the push carries its time only in the clock entry of the body,
    which dlms-cosem encodes as an octet-string; `with_date_time` adds the header's."""
    stamp = dc_data.OctetStringData(_dc_datetime(MOMENT))
    body = dc_data.DataArray(
        [
            dc_data.DataStructure([dc_data.OctetStringData(bytes((0, 0, 1, 0, 0, 255))), stamp]),
            dc_data.DataStructure(
                [
                    dc_data.OctetStringData(bytes((7, 0, 3, 0, 0, 255))),
                    dc_data.DoubleLongUnsignedData(1_234_567 + counter),
                    dc_data.DataStructure([dc_data.IntegerData(-3), dc_data.EnumData(13)]),
                ]
            ),
        ]
    )
    notification = DcDataNotification(
        long_invoke_id_and_priority=DcLongInvokeId(long_invoke_id=counter & 0xFFFFFF),
        date_time=MOMENT if with_date_time else None,
        body=body.to_bytes(),
    )
    control = dc_security.SecurityControlField(
        security_suite=0, authenticated=True, encrypted=True
    )
    ciphered = dc_security.encrypt(control, COSEM_TITLE, counter, EK, notification.to_bytes(), AK)
    envelope = DcGeneralGlobalCipher(
        system_title=COSEM_TITLE,
        security_control=control,
        invocation_counter=counter,
        ciphered_text=ciphered,
    )
    return WrapperFrame(1, 1, envelope.to_bytes()).to_bytes()


def _dc_datetime(moment: dt.datetime) -> bytes:
    from dlms_cosem.time import datetime_to_bytes

    return bytes(datetime_to_bytes(moment))


BUILDERS: dict[Peer, tuple[bytes, Callable[[int], bytes]]] = {
    "gurux": (GURUX_TITLE, gurux_push),
    "dlms-cosem": (COSEM_TITLE, cosem_push),
}


def send(daemon: DaemonProcess, carrier: Carrier, frame: bytes) -> None:
    if carrier == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(frame, ("127.0.0.1", daemon.udp_port))
        return
    with socket.create_connection(("127.0.0.1", daemon.tcp_port), timeout=5) as sock:
        sock.sendall(frame)


def record_of(daemon: DaemonProcess, title: bytes, counter: int) -> dict[str, Any]:
    wanted = f"{title.hex().upper()}:{counter}"
    wait_for(lambda: wanted in daemon.record_ids(), 15, f"record {wanted}")
    return next(
        r for r in daemon.records() if f"{r['system_title']}:{r['invocation_counter']}" == wanted
    )


def readings(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {reading["obis"]: reading for reading in record["readings"]}


def corrupt_tag(frame: bytes) -> bytes:
    """The same frame with the last byte of its GCM tag flipped."""
    return frame[:-1] + bytes((frame[-1] ^ 0x01,))


COUNTERS = {("gurux", "udp"): 100, ("gurux", "tcp"): 200}
COUNTERS |= {("dlms-cosem", "udp"): 300, ("dlms-cosem", "tcp"): 400}


@pytest.mark.parametrize("carrier", ["udp", "tcp"])
@pytest.mark.parametrize("peer", ["gurux", "dlms-cosem"])
def test_peer_push_is_accepted_then_forgery_and_replay_refused(
    daemon: DaemonProcess, peer: Peer, carrier: Carrier
) -> None:
    title, build = BUILDERS[peer]
    counter = COUNTERS[(peer, carrier)]
    push = build(counter)
    assert push[8] == 0xDB  # general-glo-ciphering, as the peer wrote it
    send(daemon, carrier, push)
    record = record_of(daemon, title, counter)
    values = readings(record)
    if peer == "gurux":
        assert dt.datetime.fromisoformat(record["datetime"]) == MOMENT
        assert values[ENERGY]["value"] == 12_345 + counter
        assert dt.datetime.fromisoformat(values[CLOCK]["value"]) == MOMENT
    else:
        assert record["datetime"] is None  # see cosem_push: no date-time in the header
        volume = Decimal(str(values[VOLUME]["value"]))
        assert volume == Decimal(1_234_567 + counter).scaleb(-3)
        assert values[VOLUME]["scaler"] == -3
        assert values[VOLUME]["unit"] == "m³"
        assert dt.datetime.fromisoformat(values[CLOCK]["value"]) == MOMENT

    auth_failed = daemon.rejected("auth_failed")
    send(daemon, carrier, corrupt_tag(build(counter + 1)))
    wait_for(lambda: daemon.rejected("auth_failed") == auth_failed + 1, 15, "auth_failed")
    replay = daemon.rejected("replay")
    send(daemon, carrier, push)
    wait_for(lambda: daemon.rejected("replay") == replay + 1, 15, "replay")
    # the forged frame did not advance the counter: the genuine one with its IC still counts
    send(daemon, carrier, build(counter + 1))
    record_of(daemon, title, counter + 1)


def _header_quirk_accepted() -> bool:
    """Whether dlmsd reads dlms-cosem's ``01`` + 12-byte DataNotification date-time
    (issue 14 §2, another branch): probed on dlmsd's own decoder."""
    from dlmsd.protocol.apdus.notification import DataNotification
    from dlmsd.protocol.errors import DlmsError

    plain = DcDataNotification(
        long_invoke_id_and_priority=DcLongInvokeId(long_invoke_id=1),
        date_time=MOMENT,
        body=b"\x00",  # null-data
    ).to_bytes()
    try:
        DataNotification.from_bytes(plain)
    except DlmsError:
        return False
    return True


@pytest.mark.xfail(
    not _header_quirk_accepted(),
    strict=True,
    reason="dlms-cosem 25.1.0 writes the DataNotification date-time as 01 + 12 bytes; "
    "dlmsd accepts it once issue 14 §2 is merged (then this runs as a plain test)",
)
def test_dlms_cosem_push_with_its_header_date_time(daemon: DaemonProcess) -> None:
    assert _header_quirk_accepted()  # fails fast (xfail) until dlmsd reads the quirk
    counter = 500
    send(daemon, "udp", cosem_push(counter, with_date_time=True))
    record = record_of(daemon, COSEM_TITLE, counter)
    assert dt.datetime.fromisoformat(record["datetime"]) == MOMENT
