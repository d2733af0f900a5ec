"""DataNotification and EVENT-NOTIFICATION-Request: published vectors and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlmsd.protocol.apdus.common import CosemAttributeDescriptor, LongInvokeIdAndPriority
from dlmsd.protocol.apdus.notification import (
    DataNotification,
    EventNotificationRequest,
    decode_data_notification,
    decode_event_notification_request,
    well_formed_date_time,
)
from dlmsd.protocol.axdr import Data, DataType
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DecodeError, DlmsError, TruncatedError, UnknownTagError
from dlmsd.protocol.obis import Obis
from tests.protocol.test_get import (
    FAST,
    assert_only_dlms_errors,
    attribute_descriptors,
    data_values,
    u32,
)
from tests.vectors import vector_params

DATE_TIME = CosemDateTime.from_bytes(bytes.fromhex("07e30c1001073b28ff8000ff"))


@pytest.mark.parametrize("vector", vector_params("data_notification_apdu"))
def test_data_notification_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    asserted = vector["expected"]["asserted"]
    notification = DataNotification.from_bytes(raw)
    assert notification.invoke_id == vector["expected"]["derived"]["long_invoke_id"] == 475
    assert notification.invoke == LongInvokeIdAndPriority(475)
    assert not notification.invoke.confirmed and not notification.invoke.high_priority
    assert notification.date_time is asserted["date_time"] is None
    assert notification.body.type == DataType.OCTET_STRING
    assert notification.body.to_bytes() == bytes.fromhex(asserted["body_hex"])
    assert notification.to_bytes() == raw


@pytest.mark.parametrize(
    "vector", vector_params("udp_wrapper+general_glo_ciphering_datanotification")
)
def test_decrypted_push_plaintexts(vector: dict[str, Any]) -> None:
    # The plaintexts of the four encrypted UDP pushes (derived in published.json).
    raw = bytes.fromhex(vector["expected"]["derived"]["plaintext_hex"])
    notification = decode_data_notification(raw)
    assert notification.invoke_id == int.from_bytes(raw[1:5], "big")
    assert notification.date_time is None
    assert notification.to_bytes() == raw


def test_fact_sheet_vector_3_plaintext() -> None:
    # dlms-reference.md section 4, vector 3: invoke id 1, no date-time,
    # structure{ double-long-unsigned 12345, octet-string 1-0:1.8.0*255 }.
    raw = bytes.fromhex("0F00000001000202060000303909060100010800FF")
    notification = DataNotification.from_bytes(raw)
    assert notification == DataNotification(
        1,
        None,
        Data.structure(
            Data.double_long_unsigned(12345),
            Data.octet_string(Obis.parse("1-0:1.8.0*255").to_bytes()),
        ),
    )
    assert notification.to_bytes() == raw


@pytest.mark.parametrize("vector", vector_params("hdlc_ui_frame_data_notification"))
def test_norwegian_han_push_in_hdlc_frame(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["hex"])
    llc = frame.index(bytes.fromhex("e6e700"))
    apdu = frame[llc + 3 : -3]  # drop LLC header, FCS and the closing flag
    notification = DataNotification.from_bytes(apdu)
    invoke = notification.invoke
    assert invoke.invoke_id == 0 and invoke.confirmed and not invoke.high_priority
    assert notification.date_time is None
    assert notification.body.type == DataType.ARRAY
    assert isinstance(notification.body.value, tuple)
    first = notification.body.value[0].plain()
    assert first == [bytes.fromhex("0000010000ff"), bytes.fromhex("07e30c1001073b28ff8000ff")]
    assert notification.to_bytes() == apdu


def test_date_time_forms_re_encode_exactly() -> None:
    body = Data.double_long_unsigned(7)
    plain = bytes.fromhex("0f400000000c07e30c1001073b28ff8000ff0600000007")
    tagged = bytes.fromhex("0f40000000090c07e30c1001073b28ff8000ff0600000007")
    for raw, is_tagged in ((plain, False), (tagged, True)):
        notification = DataNotification.from_bytes(raw)
        assert notification.date_time == DATE_TIME
        assert notification.date_time_tagged is is_tagged
        assert notification.body == body
        assert notification.to_bytes() == raw
    # 2019-12-16 07:59:40, deviation not specified: a naive datetime.
    stamp = DataNotification.from_bytes(plain).timestamp
    assert stamp is not None and stamp.isoformat() == "2019-12-16T07:59:40"
    assert DataNotification.from_bytes(plain).date_time_value == "2019-12-16T07:59:40"


@pytest.mark.parametrize(
    ("hex_bytes", "error"),
    [
        ("", TruncatedError),
        ("0f000000", TruncatedError),
        ("0e00000001001101", UnknownTagError),
        ("0f0000000100", TruncatedError),  # no body
        ("0f000000010c07e30c10010700", TruncatedError),  # date-time cut
        ("0f000000010c07e30c1001073b28ff8000ff", TruncatedError),  # no body after it
        ("0f000000010501020304051101", DecodeError),  # date-time of 5 bytes
        ("0f0000000109111101", DecodeError),  # 09 not followed by 0C
        ("0f0000000100110100", DecodeError),  # trailing byte
        ("0f000000010002031101", TruncatedError),  # body structure cut
    ],
)
def test_malformed_data_notification(hex_bytes: str, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        DataNotification.from_bytes(bytes.fromhex(hex_bytes))


def test_event_notification_request_layout() -> None:
    # C2 | time OPTIONAL (01 0C + 12) | class 8 0-0:1.0.0*255 attr 2 | value
    attribute = CosemAttributeDescriptor(8, Obis.parse("0-0:1.0.0*255"), 2)
    value = Data.octet_string(DATE_TIME.to_bytes())
    with_time = EventNotificationRequest(DATE_TIME, attribute, value)
    raw = bytes.fromhex(
        "c2010c07e30c1001073b28ff8000ff00080000010000ff02090c07e30c1001073b28ff8000ff"
    )
    assert with_time.to_bytes() == raw
    assert decode_event_notification_request(raw) == with_time
    without_time = EventNotificationRequest(None, attribute, Data.unsigned(3))
    assert without_time.to_bytes() == bytes.fromhex("c20000080000010000ff021103")
    assert EventNotificationRequest.from_bytes(without_time.to_bytes()) == without_time


def test_event_notification_tagged_time_form() -> None:
    # Some devices (e.g. OSGP's simulated SSLD) write 09 0C + 12 bytes for the optional time.
    raw = bytes.fromhex("c2090c07e30c1001073b28ff8000ff00010000600a01ff021101")
    request = EventNotificationRequest.from_bytes(raw)
    assert request.time == DATE_TIME and request.time_tagged
    assert request.attribute == CosemAttributeDescriptor(1, Obis.parse("0.0.96.10.1.255"), 2)
    assert request.to_bytes() == raw


@pytest.mark.parametrize(
    "hex_bytes",
    [
        "",
        "c2",
        "c202",
        "c209",
        "c2090b" + "00" * 20,
        "c201",
        "c2010b" + "00" * 11,
        "c200000800",
        "c30000",
    ],
)
def test_malformed_event_notification(hex_bytes: str) -> None:
    with pytest.raises(DlmsError):
        EventNotificationRequest.from_bytes(bytes.fromhex(hex_bytes))


date_times = st.binary(min_size=12, max_size=12).map(CosemDateTime.from_bytes)
# The dlms-cosem writer form (01 + 12 bytes) is read only for well-formed date-times.
well_formed_date_times = st.tuples(
    st.binary(min_size=2, max_size=2),
    st.integers(1, 12),
    st.integers(1, 31),
    st.integers(1, 7) | st.just(0xFF),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 99) | st.just(0xFF),
    st.sampled_from([-180, -120, -60, 0, 60, -0x8000]),
    st.integers(0, 255),
).map(lambda f: f[0] + bytes(f[1:8]) + f[8].to_bytes(2, "big", signed=True) + bytes((f[9],)))
notifications = st.one_of(
    st.builds(DataNotification, u32, st.none(), data_values),
    st.builds(DataNotification, u32, date_times, data_values, st.booleans()),
    st.builds(
        DataNotification,
        u32,
        well_formed_date_times.filter(well_formed_date_time).map(CosemDateTime.from_bytes),
        data_values,
        st.just(False),
        st.just(True),
    ),
)
event_notifications = st.one_of(
    st.builds(EventNotificationRequest, st.none(), attribute_descriptors, data_values),
    st.builds(
        EventNotificationRequest, date_times, attribute_descriptors, data_values, st.booleans()
    ),
)


@FAST
@given(notifications)
def test_data_notification_round_trip(notification: DataNotification) -> None:
    encoded = notification.to_bytes()
    decoded = decode_data_notification(encoded)
    assert decoded == notification
    assert decoded.to_bytes() == encoded


@FAST
@given(event_notifications)
def test_event_notification_round_trip(request: EventNotificationRequest) -> None:
    encoded = request.to_bytes()
    decoded = decode_event_notification_request(encoded)
    assert decoded == request
    assert decoded.to_bytes() == encoded


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_into_notification_decoders(data: bytes) -> None:
    for decode in (decode_data_notification, decode_event_notification_request):
        assert_only_dlms_errors(decode, data)
    assert_only_dlms_errors(decode_data_notification, b"\x0f" + data)
    assert_only_dlms_errors(decode_event_notification_request, b"\xc2" + data)


@FAST
@given(notifications, st.data())
def test_truncated_notification_raises(
    notification: DataNotification, data: st.DataObject
) -> None:
    encoded = notification.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DlmsError):
        decode_data_notification(encoded[:cut])
