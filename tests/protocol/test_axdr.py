"""A-XDR Data: published vectors, limits, compact arrays, property tests."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmsd.protocol.axdr import (
    MAX_DEPTH,
    BitString,
    CompactArray,
    Data,
    DataType,
    NaNFloat,
    TypeDescription,
    decode_data,
    decode_data_exact,
    decode_length,
    decode_type_description,
    encode_data,
    encode_length,
)
from dlmsd.protocol.cosem_datetime import CosemDate, CosemDateTime, CosemTime
from dlmsd.protocol.errors import (
    DecodeError,
    DlmsError,
    EncodeError,
    LengthError,
    TruncatedError,
    UnknownTagError,
)
from tests.vectors import only_vector, vector_params


def roundtrip(buf: bytes) -> Data:
    value = decode_data_exact(buf)
    assert encode_data(value) == buf
    assert value.to_bytes() == buf
    return value


# -- published vectors ------------------------------------------------------------------
@pytest.mark.parametrize("vector", vector_params("axdr_visible_string"))
def test_visible_string_vectors(vector: dict[str, Any]) -> None:
    # tests/test_dlms_data.py:L17-19 (dlms-cosem): decode + encode_equal
    value = roundtrip(bytes.fromhex(vector["hex"]))
    assert value == Data.visible_string(vector["expected"]["asserted"]["decode"])
    assert value.plain() == vector["expected"]["asserted"]["decode"]


def test_length_long_form_vector() -> None:
    vector = only_vector("axdr_length_long_form")  # tests/test_a_xdr.py:L160
    assert decode_length(bytes.fromhex(vector["hex"]), 0) == (3855, 3)
    assert encode_length(3855) == bytes.fromhex(vector["hex"])


def test_truncated_vector_raises_promptly() -> None:
    # tests/test_a_xdr.py:test_incomplete_struct (PR 83): array of 2 with no elements
    # looped forever in the source library; here it is a TruncatedError.
    vector = only_vector("axdr_truncated_input")
    with pytest.raises(TruncatedError) as info:
        decode_data(bytes.fromhex(vector["hex"]))
    assert info.value.offset is not None


def test_structure_lte_monitoring() -> None:
    vector = only_vector("axdr_structure_lte_monitoring")  # tests/test_a_xdr.py:L132
    value = roundtrip(bytes.fromhex(vector["hex"]))
    assert value.type == DataType.STRUCTURE
    assert len(value.plain()) == vector["expected"]["asserted"]["len"]  # type: ignore[arg-type]
    assert value.plain() == vector["expected"]["derived"]


def test_structure_gsm_cell_info() -> None:
    vector = only_vector("axdr_structure_gsm_cell_info")  # tests/test_a_xdr.py:L150
    value = roundtrip(bytes.fromhex(vector["hex"]))
    plain = value.plain()
    assert isinstance(plain, list)
    assert len(plain) == 7
    assert plain[0] == 0 and plain[1] == 0


def test_structure_limit_stops_after_first_value() -> None:
    # tests/test_a_xdr.py:L112: "parse(limit=1)" = one structure of 7, the rest trails.
    vector = only_vector("axdr_structure_limit")
    buf = bytes.fromhex(vector["hex"])
    value, end = decode_data(buf)
    assert value.type == DataType.STRUCTURE
    assert isinstance(value.value, tuple) and len(value.value) == 7
    assert value.value[0] == Data.double_long_unsigned(26236427)
    assert encode_data(value) == buf[:end]
    with pytest.raises(DecodeError, match="trailing"):
        decode_data_exact(buf)
    # the trailing part is itself valid: null-data then a structure of 5
    rest, rest_end = decode_data(buf, end)
    assert rest == Data.null()
    decode_data_exact(buf[rest_end:])


def test_get_data_result_profile() -> None:
    # tests/test_a_xdr.py:L31: leading 00 = Get-Data-Result choice "data".
    vector = only_vector("axdr_get_data_result_profile")
    buf = bytes.fromhex(vector["hex"])
    assert buf[0] == 0
    value = roundtrip(buf[1:])
    rows = value.plain()
    assert isinstance(rows, list)
    assert len(rows) == vector["expected"]["asserted"]["entries"]
    assert all(len(row) == vector["expected"]["asserted"]["columns"] for row in rows)
    derived = vector["expected"]["derived"]
    for row, want in ((rows[0], derived["first"]), (rows[1], derived["second"])):
        assert [row[0].hex(), row[1], row[2]] == want
    assert [rows[-1][0].hex(), rows[-1][1], rows[-1][2]] == derived["last"]
    stamp = CosemDateTime.from_bytes(rows[0][0])
    assert stamp.to_datetime() is not None
    assert stamp.to_datetime().isoformat() == "2018-02-12T00:00:00"  # type: ignore[union-attr]


def test_profile_generic_buffer() -> None:
    vector = only_vector("profile_generic_buffer")  # tests/test_parsers.py:L6
    value = roundtrip(bytes.fromhex(vector["hex"]))
    rows = value.plain()
    assert isinstance(rows, list) and len(rows) == 4
    expected = vector["expected"]["derived"]
    for row, want in zip(rows, expected, strict=True):
        first = row[0].hex() if isinstance(row[0], bytes) else row[0]
        assert [first, *row[1:]] == want
    first_stamp = CosemDateTime.from_bytes(rows[0][0]).to_datetime()
    assert first_stamp is not None
    assert first_stamp.isoformat() == "2019-12-31T23:00:00+01:00"


@pytest.mark.parametrize("vector", vector_params("axdr_date_time_types"))
def test_date_time_type_vectors(vector: dict[str, Any]) -> None:
    # tests/test_dlms_date_time_data.py (dlms-cosem): in that library an all-0xFF value
    # decodes to None; here it stays a CosemDate/CosemTime whose datetime view is None.
    buf = bytes.fromhex(vector["hex"])
    if buf[0] not in (DataType.DATE, DataType.TIME):
        # bare 5/4-byte bodies (DateData/TimeData.from_bytes)
        if len(buf) == 5:
            assert CosemDate.from_bytes(buf).to_datetime() is None
        else:
            assert CosemTime.from_bytes(buf).to_time() is None
        return
    offset = 0
    while offset < len(buf):
        value, end = decode_data(buf, offset)
        assert encode_data(value) == buf[offset:end]
        offset = end
        if isinstance(value.value, CosemDate):
            date = value.value.to_date()
            if buf[1:6] == b"\xff" * 5:
                assert value.value.to_datetime() is None and date is None
            else:
                assert date is not None and date.isoformat() == "2024-11-21"
                assert CosemDate.from_date(date, with_weekday=False).to_bytes() == buf[1:6]
        else:
            assert isinstance(value.value, CosemTime)
            clock = value.value.to_time()
            if buf[1:5] == b"\xff" * 4:
                assert clock is None
            else:
                assert clock is not None and clock.isoformat() == "08:30:15.230000"
                assert CosemTime.from_time(clock).to_bytes() == buf[1:5]


def test_get_response_payloads() -> None:
    # tests/test_xdlms/test_get.py:L158 get-response-normal: c4 01 c1 00 <Data>
    normal = bytes.fromhex(only_vector("get_response_normal")["hex"])
    assert roundtrip(normal[4:]) == Data.double_long_unsigned(5009)
    # tests/test_xdlms/test_get.py:L392 and L424 get-response-with-list: 00 <Data> per item
    listed = bytes.fromhex(only_vector("get_response_with_list")["hex"])
    results = _with_list_results(listed)
    assert results[0] == Data.octet_string(b"ISK1030777764366")
    assert isinstance(results[1].value, bytes)
    stamp = CosemDateTime.from_bytes(results[1].value).to_datetime()
    assert stamp is not None and stamp.isoformat() == "2021-06-03T14:09:23+01:00"
    compound = only_vector("get_response_with_list_compound")
    plain = [r.plain() for r in _with_list_results(bytes.fromhex(compound["hex"]))]
    assert plain == compound["expected"]["asserted"]["result"]


def _with_list_results(apdu: bytes) -> list[Data]:
    assert apdu[:2] == b"\xc4\x03"
    count, offset = decode_length(apdu, 3)
    results = []
    for _ in range(count):
        assert apdu[offset] == 0  # choice: data
        value, end = decode_data(apdu, offset + 1)
        assert encode_data(value) == apdu[offset + 1 : end]
        results.append(value)
        offset = end
    assert offset == len(apdu)
    return results


def test_selective_access_payloads() -> None:
    # tests/test_xdlms/test_selective_access.py:L20 capture_object_definition
    vector = only_vector("capture_object_definition")
    value = roundtrip(bytes.fromhex(vector["hex"]))
    assert value.plain() == [8, bytes.fromhex("0000010000ff"), 2, 0]
    # tests/test_xdlms/test_selective_access.py:L78 range descriptor: 01 then structure{4}
    encoded = bytes.fromhex(only_vector("range_descriptor_encode")["hex"])
    descriptor = roundtrip(encoded[1:])
    items = descriptor.value
    assert isinstance(items, tuple) and len(items) == 4
    for item, iso in zip(
        items[1:3], ("2020-01-01T00:03:00+02:00", "2020-01-06T00:03:00+01:00"), strict=True
    ):
        assert isinstance(item.value, bytes)
        stamp = CosemDateTime.from_bytes(item.value).to_datetime()
        assert stamp is not None and stamp.isoformat() == iso
    assert items[3] == Data.array()


def test_data_notification_bodies() -> None:
    # tests/test_xdlms/test_data_notification.py:L9: body is one octet-string(34)
    vector = only_vector("data_notification_apdu")
    body = bytes.fromhex(vector["expected"]["asserted"]["body_hex"])
    value = roundtrip(body)
    assert value.type == DataType.OCTET_STRING and len(value.value) == 34  # type: ignore[arg-type]
    # tests/test_hdlc/test_hdlc.py:L247: Norwegian HAN push in an HDLC UI frame.
    # 7E A243 41 0883 13 HCS(2) E6E700 | 0F 40000000 00 <body> | FCS(2) 7E
    han = only_vector("hdlc_ui_frame_data_notification")
    frame = bytes.fromhex(han["hex"])
    apdu = frame[12:-3]
    assert apdu[:6] == bytes.fromhex("0f4000000000")
    body_value = roundtrip(apdu[6:])
    items = body_value.plain()
    assert isinstance(items, list) and len(items) == 27
    first = han["expected"]["derived"]["first_items"]
    assert items[0][0].hex() == first[0][0]
    clock = CosemDateTime.from_bytes(items[0][1])
    assert clock.to_bytes().hex() == first[0][1].split(" ")[0]
    assert clock.to_datetime() is not None
    assert clock.to_datetime().isoformat() == "2019-12-16T07:59:40"  # type: ignore[union-attr]
    by_obis = {item[0].hex(): item[1:] for item in items}
    for obis_hex, raw, scaler_unit in first[1:]:
        assert by_obis[obis_hex] == [raw, scaler_unit]


# -- lengths -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, "00"),
        (0x7F, "7f"),
        (0x80, "8180"),
        (0xFF, "81ff"),
        (0x100, "820100"),
        (0xFFFF, "82ffff"),
        (0x10000, "83010000"),
        (0x1000000, "8401000000"),
        (0xFFFFFFFF, "84ffffffff"),
    ],
)
def test_length_forms(n: int, encoded: str) -> None:
    assert encode_length(n) == bytes.fromhex(encoded)
    assert decode_length(bytes.fromhex(encoded) + b"\xaa", 0) == (n, len(encoded) // 2)


def test_length_non_shortest_forms_accepted() -> None:
    assert decode_length(bytes.fromhex("8105"), 0) == (5, 2)
    assert decode_length(bytes.fromhex("8400000005"), 0) == (5, 5)
    value = decode_data_exact(bytes.fromhex("098200030102 03"))
    assert value == Data.octet_string(b"\x01\x02\x03")


@pytest.mark.parametrize("bad", ["80", "85", "ff0000000000"])
def test_length_unsupported_forms(bad: str) -> None:
    with pytest.raises(LengthError):
        decode_length(bytes.fromhex(bad), 0)


@pytest.mark.parametrize("bad", ["", "81", "8201", "83ffff", "84ffffff"])
def test_length_truncated(bad: str) -> None:
    with pytest.raises(TruncatedError):
        decode_length(bytes.fromhex(bad), 0)


@pytest.mark.parametrize("n", [-1, 1 << 32])
def test_length_encode_out_of_range(n: int) -> None:
    with pytest.raises(EncodeError):
        encode_length(n)


@pytest.mark.parametrize("size", [0x80, 0x100, 0x10000])
def test_long_octet_strings(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) or bytes(size)
    buf = encode_data(Data.octet_string(payload))
    assert buf[1] & 0x80
    assert roundtrip(buf) == Data.octet_string(payload)


def test_huge_announced_lengths_fail_fast() -> None:
    for buf in ("0984ffffffff", "0184ffffffff", "0284ffffffff00", "0a84ffffffff"):
        with pytest.raises(TruncatedError):
            decode_data(bytes.fromhex(buf))


# -- limits and errors ------------------------------------------------------------------
def test_nesting_cap() -> None:
    ok = b"\x02\x01" * MAX_DEPTH + b"\x00"
    assert encode_data(decode_data_exact(ok)) == ok
    with pytest.raises(LengthError):
        decode_data(b"\x02\x01" * (MAX_DEPTH + 1) + b"\x00")
    with pytest.raises(LengthError):
        decode_data(b"\x01\x01" * 5000 + b"\x00")


def test_nesting_cap_on_encode() -> None:
    value = Data.null()
    for _ in range(MAX_DEPTH + 1):
        value = Data.structure(value)
    with pytest.raises(EncodeError):
        encode_data(value)


@pytest.mark.parametrize("tag", [7, 8, 11, 14, 28, 100, 254])
def test_unknown_tags(tag: int) -> None:
    with pytest.raises(UnknownTagError) as info:
        decode_data(bytes((tag, 0, 0, 0, 0, 0, 0, 0, 0)))
    assert info.value.offset == 0


def test_errors_carry_offsets() -> None:
    with pytest.raises(TruncatedError) as info:
        decode_data(bytes.fromhex("020206000000011200"))
    assert info.value.offset == 8  # where the missing body starts
    with pytest.raises(UnknownTagError) as unknown:
        decode_data(bytes.fromhex("0202110107"))
    assert unknown.value.offset == 4


def test_invalid_utf8() -> None:
    with pytest.raises(DecodeError) as info:
        decode_data(bytes.fromhex("0c0341ff42"))
    assert info.value.offset == 3
    assert decode_data_exact(bytes.fromhex("0c03e282ac")) == Data.utf8_string("€")


def test_visible_string_keeps_every_octet() -> None:
    buf = bytes((10, 4, 0x00, 0x7F, 0x80, 0xFF))
    value = roundtrip(buf)
    assert value.value == "\x00\x7f\x80\xff"


def test_empty_and_offset_inputs() -> None:
    with pytest.raises(TruncatedError):
        decode_data(b"")
    with pytest.raises(TruncatedError):
        decode_data(b"\x11\x05", 2)
    assert decode_data(b"\xaa\x11\x05", 1) == (Data.unsigned(5), 3)
    assert decode_data(bytearray(b"\x09\x01\x41")) == (Data.octet_string(b"A"), 3)
    assert decode_data(memoryview(b"\x09\x01\x41"))[0].value == b"A"


# -- scalar types -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hex_", "expected"),
    [
        ("00", Data.null()),
        ("ff", Data.dont_care()),
        ("0300", Data.boolean(False)),
        ("0301", Data.boolean(True)),
        ("05ffffffff", Data.double_long(-1)),
        ("0680000000", Data.double_long_unsigned(0x80000000)),
        ("0d99", Data.bcd(0x99)),
        ("0f80", Data.integer(-128)),
        ("108000", Data.long(-32768)),
        ("11ff", Data.unsigned(255)),
        ("12ffff", Data.long_unsigned(65535)),
        ("148000000000000000", Data.long64(-(1 << 63))),
        ("15ffffffffffffffff", Data.long64_unsigned((1 << 64) - 1)),
        ("1603", Data.enum(3)),
        ("173fc00000", Data.float32(1.5)),
        ("18bff8000000000000", Data.float64(-1.5)),
        ("0403a0", Data.bit_string(BitString(3, b"\xa0"))),
        ("0400", Data.bit_string(BitString(0, b""))),
        ("0a00", Data.visible_string("")),
        ("0900", Data.octet_string(b"")),
        ("0100", Data.array()),
        ("0200", Data.structure()),
    ],
)
def test_scalars(hex_: str, expected: Data) -> None:
    assert roundtrip(bytes.fromhex(hex_)) == expected
    assert encode_data(expected) == bytes.fromhex(hex_)


def test_boolean_keeps_odd_octets() -> None:
    value = roundtrip(bytes.fromhex("03a5"))
    assert value.value == 0xA5
    assert value.plain() is True
    assert value.to_json() == {"type": "boolean", "value": True, "raw": 0xA5}


def test_float_nan_payload_and_negative_zero_roundtrip() -> None:
    for hex_ in ("177fa00001", "17ffc00000", "18fff0000000000001", "1780000000"):
        value = roundtrip(bytes.fromhex(hex_))
        if hex_ != "1780000000":
            assert isinstance(value.value, NaNFloat)
            assert value.value.raw == bytes.fromhex(hex_[2:])
            assert math.isnan(value.value) and math.isnan(float(value.value))
            assert value.to_json() == {"type": value.type.label, "value": "NaN"}
            assert value == decode_data_exact(bytes.fromhex(hex_))
            assert hash(value) == hash(decode_data_exact(bytes.fromhex(hex_)))
    assert NaNFloat(b"\x7f\xc0\x00\x00") != NaNFloat(b"\x7f\xc0\x00\x01")
    assert NaNFloat(b"\x7f\xc0\x00\x00") != math.nan
    assert Data.float32(math.inf).to_json() == {"type": "float32", "value": "Infinity"}


def test_date_types_decode_to_cosem_objects() -> None:
    raw = bytes.fromhex("07e40101ff00030000ff8800")
    value = roundtrip(b"\x19" + raw)
    assert value == Data.date_time(CosemDateTime(raw))
    assert value.to_json() == {
        "type": "date-time",
        "value": "2020-01-01T00:03:00+02:00",
        "hex": raw.hex(),
    }
    partial = roundtrip(bytes.fromhex("19ffffffffff000000ff800000"))
    assert partial.to_json() == {
        "type": "date-time",
        "value": {"hour": 0, "minute": 0, "second": 0, "clock_status": 0},
        "hex": "ffffffffff000000ff800000",
    }


@pytest.mark.parametrize(
    "bad",
    [
        Data(DataType.UNSIGNED, 256),
        Data(DataType.INTEGER, -129),
        Data(DataType.LONG_UNSIGNED, -1),
        Data(DataType.DOUBLE_LONG, 1 << 31),
        Data(DataType.LONG64_UNSIGNED, 1 << 64),
        Data(DataType.ENUM, True),
        Data(DataType.UNSIGNED, "5"),
        Data(DataType.OCTET_STRING, "text"),
        Data(DataType.VISIBLE_STRING, "€"),
        Data(DataType.UTF8_STRING, "\ud800"),
        Data(DataType.STRUCTURE, [Data.null()]),  # type: ignore[arg-type]
        Data(DataType.ARRAY, (5,)),  # type: ignore[arg-type]
        Data(DataType.NULL_DATA, 0),
        Data(DataType.BOOLEAN, 256),
        Data(DataType.FLOAT32, 1e300),
        Data(DataType.FLOAT32, NaNFloat(b"\x7f\xf8\x00\x00\x00\x00\x00\x00")),
        Data(DataType.FLOAT32, b"\x00\x00\x00\x00"),
        Data(DataType.FLOAT64, "1.0"),
        Data(DataType.DATE, CosemTime(b"\x00\x00\x00\x00")),
        Data(DataType.BIT_STRING, BitString(9, b"\x00")),
        Data(DataType.COMPACT_ARRAY, (1, 2)),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_encode_rejects_bad_values(bad: Data) -> None:
    with pytest.raises(EncodeError):
        encode_data(bad)


# -- compact arrays -----------------------------------------------------------------------
# Layout (IEC 62056-6-2 / Blue Book 4.1.5, as quoted in the public COSEMpdu project's
# ASN.1 and in gurux's docs): compact-array [19] SEQUENCE { contents-description
# TypeDescription, array-contents OCTET STRING (length-prefixed) }; TypeDescription is a
# simple tag, or array [1] { number-of-elements Unsigned16, type-description }, or
# structure [2] SEQUENCE OF TypeDescription (A-XDR count). Contents: the element values
# packed back to back without tags; variable-size types keep their length prefix.
LU = TypeDescription(DataType.LONG_UNSIGNED)
U = TypeDescription(DataType.UNSIGNED)
OS = TypeDescription(DataType.OCTET_STRING)


def test_compact_array_of_simple_type() -> None:
    buf = bytes.fromhex("13 12 06 0001 0002 0003")
    value = roundtrip(buf)
    assert value == Data.compact_array(
        LU, Data.long_unsigned(1), Data.long_unsigned(2), Data.long_unsigned(3)
    )
    assert value.plain() == [1, 2, 3]
    assert value.to_json() == {
        "type": "compact-array",
        "description": "long-unsigned",
        "value": [{"type": "long-unsigned", "value": n} for n in (1, 2, 3)],
    }


def test_compact_array_of_structures() -> None:
    # structure{unsigned, octet-string}: the octet-string keeps its length byte
    buf = bytes.fromhex("13 02 02 11 09 07 05 02aabb 06 01cc")
    value = roundtrip(buf)
    description = TypeDescription.structure_of(U, OS)
    assert value == Data.compact_array(
        description,
        Data.structure(Data.unsigned(5), Data.octet_string(b"\xaa\xbb")),
        Data.structure(Data.unsigned(6), Data.octet_string(b"\xcc")),
    )
    assert description.to_bytes() == bytes.fromhex("02021109")
    assert decode_type_description(bytes.fromhex("02021109")) == (description, 4)


def test_compact_array_of_fixed_arrays() -> None:
    # array{2, unsigned}: inner arrays carry no count in the contents
    buf = bytes.fromhex("13 01 0002 11 04 01020304")
    value = roundtrip(buf)
    assert value.plain() == [[1, 2], [3, 4]]
    assert value.to_json()["description"] == {"array": 2, "of": "unsigned"}  # type: ignore[index]


def test_compact_array_empty_and_zero_width() -> None:
    assert roundtrip(bytes.fromhex("130000")).plain() == []
    with pytest.raises(DecodeError):
        decode_data(bytes.fromhex("13000100"))  # null elements with contents
    with pytest.raises(DecodeError):
        # array{65535, null} would repeat zero-width elements: refused, not looped
        decode_data(bytes.fromhex("1301ffff00 01 00"))
    with pytest.raises(EncodeError):
        encode_data(Data.compact_array(TypeDescription(DataType.NULL_DATA), Data.null()))
    null_pair = TypeDescription.array_of(2, TypeDescription(DataType.NULL_DATA))
    with pytest.raises(EncodeError):
        encode_data(
            Data.compact_array(
                TypeDescription.structure_of(U, null_pair),
                Data.structure(Data.unsigned(1), Data.array(Data.null(), Data.null())),
            )
        )


def test_compact_array_errors() -> None:
    for bad in (
        "13 12 03 000100",  # contents end inside the second element
        "13 01 ffff 12 02 0001",  # description wants 65535 elements, 2 bytes present
        "13 13 00",  # compact-array inside a description
        "13 07 00",  # unknown description tag
        "13 02 84ffffffff",  # structure description count beyond the input
        "13 12 05 0001",  # contents length beyond the input
    ):
        with pytest.raises(DecodeError):
            decode_data(bytes.fromhex(bad))
    with pytest.raises(EncodeError):
        encode_data(Data.compact_array(LU, Data.unsigned(1)))
    with pytest.raises(EncodeError):
        encode_data(
            Data.compact_array(TypeDescription.array_of(2, U), Data.array(Data.unsigned(1)))
        )
    with pytest.raises(EncodeError):
        encode_data(Data.compact_array(LU, Data.compact_array(LU)))


def test_description_nesting_cap() -> None:
    deep = b"\x02\x01" * (MAX_DEPTH + 2) + b"\x11"
    with pytest.raises(LengthError):
        decode_data(b"\x13" + deep + b"\x00")


# -- views ---------------------------------------------------------------------------------
def test_to_json_and_plain() -> None:
    value = Data.structure(
        Data.octet_string(bytes.fromhex("0100010800ff")),
        Data.double_long_unsigned(12345),
        Data.array(Data.enum(1), Data.bit_string(BitString(4, b"\xa0"))),
        Data.date(CosemDate.from_fields(2024, 0xFE, 0xFE)),
        Data.null(),
    )
    assert value.to_json() == {
        "type": "structure",
        "value": [
            {"type": "octet-string", "value": "0100010800ff"},
            {"type": "double-long-unsigned", "value": 12345},
            {
                "type": "array",
                "value": [
                    {"type": "enum", "value": 1},
                    {"type": "bit-string", "value": "1010"},
                ],
            },
            {
                "type": "date",
                "value": {"year": 2024, "month": "dst_begin", "day": "last_day"},
                "hex": "07e8fefeff",
            },
            {"type": "null-data", "value": None},
        ],
    }
    json.dumps(value.to_json())
    plain = value.plain()
    assert isinstance(plain, list)
    assert plain[:3] == [bytes.fromhex("0100010800ff"), 12345, [1, BitString(4, b"\xa0")]]
    assert plain[4] is None
    assert repr(Data.unsigned(5)) == "Data(UNSIGNED, 5)"


def test_data_is_frozen_and_hashable() -> None:
    value = decode_data_exact(bytes.fromhex("0202110509021234"))
    with pytest.raises(AttributeError):
        value.value = None  # type: ignore[misc]
    assert hash(value) == hash(Data.structure(Data.unsigned(5), Data.octet_string(b"\x12\x34")))
    assert {value: 1}[Data.structure(Data.unsigned(5), Data.octet_string(b"\x124"))] == 1


def test_bit_string_helpers() -> None:
    bits = BitString.from_bools([True, False, True, True, False, False, False, False, True])
    assert bits == BitString(9, b"\xb0\x80")
    assert bits.to_bools()[:4] == (True, False, True, True)
    assert bits.bit(8) and not bits.bit(9) and not bits.bit(-1)
    assert DataType.UTF8_STRING.label == "utf8-string"


# -- property tests ------------------------------------------------------------------------
def _ints(data_type: DataType, low: int, high: int) -> st.SearchStrategy[Data]:
    return st.integers(low, high).map(lambda v: Data(data_type, v))


def _nan_raw(size: int) -> st.SearchStrategy[bytes]:
    fmt = ">f" if size == 4 else ">d"
    return st.binary(min_size=size, max_size=size).filter(
        lambda raw: math.isnan(struct.unpack(fmt, raw)[0])
    )


def simple_data_of(data_type: DataType) -> st.SearchStrategy[Data]:
    """Values of one non-container type."""
    strategies: dict[DataType, st.SearchStrategy[Data]] = {
        DataType.NULL_DATA: st.just(Data.null()),
        DataType.DONT_CARE: st.just(Data.dont_care()),
        DataType.BOOLEAN: st.one_of(
            st.booleans().map(Data.boolean), _ints(DataType.BOOLEAN, 2, 255)
        ),
        DataType.BIT_STRING: st.integers(0, 40).flatmap(
            lambda bits: st.binary(min_size=(bits + 7) // 8, max_size=(bits + 7) // 8).map(
                lambda raw: Data.bit_string(BitString(bits, raw))
            )
        ),
        DataType.DOUBLE_LONG: _ints(DataType.DOUBLE_LONG, -(1 << 31), (1 << 31) - 1),
        DataType.DOUBLE_LONG_UNSIGNED: _ints(DataType.DOUBLE_LONG_UNSIGNED, 0, (1 << 32) - 1),
        DataType.OCTET_STRING: st.binary(max_size=300).map(Data.octet_string),
        DataType.VISIBLE_STRING: st.text(st.characters(max_codepoint=255), max_size=140).map(
            Data.visible_string
        ),
        DataType.UTF8_STRING: st.text(max_size=50).map(Data.utf8_string),
        DataType.BCD: _ints(DataType.BCD, 0, 255),
        DataType.INTEGER: _ints(DataType.INTEGER, -128, 127),
        DataType.LONG: _ints(DataType.LONG, -(1 << 15), (1 << 15) - 1),
        DataType.UNSIGNED: _ints(DataType.UNSIGNED, 0, 255),
        DataType.LONG_UNSIGNED: _ints(DataType.LONG_UNSIGNED, 0, 0xFFFF),
        DataType.LONG64: _ints(DataType.LONG64, -(1 << 63), (1 << 63) - 1),
        DataType.LONG64_UNSIGNED: _ints(DataType.LONG64_UNSIGNED, 0, (1 << 64) - 1),
        DataType.ENUM: _ints(DataType.ENUM, 0, 255),
        DataType.FLOAT32: st.one_of(
            st.floats(width=32, allow_nan=False).map(Data.float32),
            _nan_raw(4).map(lambda raw: Data.float32(NaNFloat(raw))),
        ),
        DataType.FLOAT64: st.one_of(
            st.floats(allow_nan=False).map(Data.float64),
            _nan_raw(8).map(lambda raw: Data.float64(NaNFloat(raw))),
        ),
        DataType.DATE_TIME: st.binary(min_size=12, max_size=12).map(
            lambda raw: Data.date_time(CosemDateTime(raw))
        ),
        DataType.DATE: st.binary(min_size=5, max_size=5).map(
            lambda raw: Data.date(CosemDate(raw))
        ),
        DataType.TIME: st.binary(min_size=4, max_size=4).map(
            lambda raw: Data.time(CosemTime(raw))
        ),
    }
    return strategies[data_type]


SIMPLE_TYPES = [
    t for t in DataType if t not in (DataType.ARRAY, DataType.STRUCTURE, DataType.COMPACT_ARRAY)
]
simple_data = st.sampled_from(SIMPLE_TYPES).flatmap(simple_data_of)

descriptions: st.SearchStrategy[TypeDescription] = st.recursive(
    st.sampled_from(SIMPLE_TYPES).map(TypeDescription),
    lambda children: st.one_of(
        st.tuples(st.integers(0, 3), children).map(lambda a: TypeDescription.array_of(*a)),
        st.lists(children, min_size=1, max_size=3).map(
            lambda members: TypeDescription.structure_of(*members)
        ),
    ),
    max_leaves=6,
)


def _repeats_zero_width(description: TypeDescription) -> bool:
    """array{n > 0, zero-width element}: refused both ways (see the decoder)."""
    if description.type == DataType.ARRAY and description.count:
        return description.children[0].min_width == 0 or _repeats_zero_width(
            description.children[0]
        )
    return any(_repeats_zero_width(child) for child in description.children)


def data_for(description: TypeDescription) -> st.SearchStrategy[Data]:
    """A value that fits a compact-array description."""
    if description.type == DataType.ARRAY:
        element = data_for(description.children[0])
        return st.lists(element, min_size=description.count, max_size=description.count).map(
            lambda items: Data.array(*items)
        )
    if description.type == DataType.STRUCTURE:
        return st.tuples(*(data_for(child) for child in description.children)).map(
            lambda items: Data.structure(*items)
        )
    return simple_data_of(description.type)


@st.composite
def compact_arrays(draw: st.DrawFn) -> Data:
    description = draw(descriptions.filter(lambda d: not _repeats_zero_width(d)))
    most = 4 if description.min_width > 0 else 0
    elements = draw(st.lists(data_for(description), max_size=most))
    return Data.compact_array(description, *elements)


any_data: st.SearchStrategy[Data] = st.recursive(
    st.one_of(simple_data, compact_arrays()),
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(lambda items: Data.array(*items)),
        st.lists(children, max_size=5).map(lambda items: Data.structure(*items)),
    ),
    max_leaves=25,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(any_data)
def test_encode_decode_roundtrip(value: Data) -> None:
    encoded = encode_data(value)
    decoded, end = decode_data(encoded)
    assert end == len(encoded)
    assert decoded == value
    assert encode_data(decoded) == encoded
    json.dumps(decoded.to_json())


@PROPERTY
@given(any_data, st.data())
def test_every_prefix_is_truncated(value: Data, draw: st.DataObject) -> None:
    encoded = encode_data(value)
    cut = draw.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(TruncatedError):
        decode_data(encoded[:cut])


INTERESTING = st.sampled_from(
    [0x00, 0x01, 0x02, 0x03, 0x04, 0x09, 0x0A, 0x0C, 0x11, 0x12, 0x13, 0x19, 0x80, 0x81,
     0x82, 0x84, 0xFF]
)  # fmt: skip
byte_soup = st.lists(st.one_of(INTERESTING, st.integers(0, 255)), max_size=80).map(bytes)


def _check_arbitrary(buf: bytes) -> None:
    try:
        value, end = decode_data(buf)
    except DlmsError:
        return
    assert 0 < end <= len(buf)
    encoded = encode_data(value)
    # the shortest-form lengths may make it shorter, never different in meaning
    assert len(encoded) <= end
    assert decode_data_exact(encoded) == value


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=80), byte_soup))
def test_arbitrary_bytes_only_raise_dlms_errors(buf: bytes) -> None:
    _check_arbitrary(buf)


@PROPERTY
@given(any_data, st.data())
def test_mutated_encodings_only_raise_dlms_errors(value: Data, draw: st.DataObject) -> None:
    encoded = bytearray(encode_data(value))
    for _ in range(draw.draw(st.integers(1, 4))):
        index = draw.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = draw.draw(st.integers(0, 255))
    _check_arbitrary(bytes(encoded))


def test_compact_array_value_type() -> None:
    value = Data.compact_array(U)
    assert isinstance(value.value, CompactArray)
    assert value.value.elements == ()
