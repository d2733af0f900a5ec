"""GET-Request [192] and GET-Response [196] (Green Book, COSEMpdu ASN.1).

::

    C0 01 invoke descriptor(9) access-selection        get-request-normal
    C0 02 invoke block-number(4)                       get-request-next
    C0 03 invoke count (descriptor access-selection)*  get-request-with-list
    C4 01 invoke Get-Data-Result                       get-response-normal
    C4 02 invoke last(1) block-number(4) 00 raw-data | 01 result   get-response-with-datablock
    C4 03 invoke count Get-Data-Result*                get-response-with-list

Get-Data-Result is ``00 Data`` or ``01 Data-Access-Result``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from dlmsd.protocol.apdus.common import (
    AttributeWithSelection,
    BlockNumberApdu,
    CosemAttributeDescriptor,
    FromBytes,
    SelectiveAccess,
    WithInvoke,
    check_choice,
    check_end,
    decode_choice,
    encode_bool,
    encode_header,
    encode_octet_string,
    encode_optional_access,
    encode_sequence_of,
    pack_u32,
    read_attribute_descriptor,
    read_attribute_list,
    read_bool,
    read_data,
    read_enum,
    read_octet_string,
    read_optional_access,
    read_sequence_of,
    read_u8,
    read_u32,
)
from dlmsd.protocol.apdus.errors import DataAccessResult
from dlmsd.protocol.axdr import Data, encode_data
from dlmsd.protocol.errors import UnknownTagError

GET_REQUEST_TAG = 0xC0
GET_RESPONSE_TAG = 0xC4

#: Get-Data-Result: the value, or why there is none.
GetDataResult = Data | DataAccessResult


def encode_get_data_result(result: GetDataResult) -> bytes:
    """``00 Data`` or ``01 Data-Access-Result``."""
    if isinstance(result, DataAccessResult):
        return bytes((1, int(result)))
    return b"\x00" + encode_data(result)


def read_get_data_result(buf: bytes, offset: int) -> tuple[GetDataResult, int]:
    choice, offset = read_u8(buf, offset, "Get-Data-Result choice")
    if choice == 0:
        return read_data(buf, offset)
    if choice == 1:
        return read_enum(buf, offset, DataAccessResult, "data-access-result")
    raise UnknownTagError(f"Get-Data-Result choice must be 0 or 1, got {choice}", offset - 1)


# --- requests ---------------------------------------------------------------


@attrs.frozen(slots=True)
class GetRequestNormal(WithInvoke):
    """Read one attribute, optionally with selective access."""

    TAG: ClassVar[int] = GET_REQUEST_TAG
    CHOICE: ClassVar[int] = 1

    invoke_id_and_priority: int
    attribute: CosemAttributeDescriptor
    access: SelectiveAccess | None = None

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + encode_optional_access(self.access)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> GetRequestNormal:
        check_choice(buf, cls.TAG, cls.CHOICE, "get-request-normal")
        attribute, offset = read_attribute_descriptor(buf, 3)
        access, offset = read_optional_access(buf, offset)
        check_end(buf, offset, "get-request-normal")
        return cls(buf[2], attribute, access)


@attrs.frozen(slots=True)
class GetRequestNext(BlockNumberApdu):
    """Ask for the block after `block_number` of a long GET."""

    TAG: ClassVar[int] = GET_REQUEST_TAG
    CHOICE: ClassVar[int] = 2
    NAME: ClassVar[str] = "get-request-next"

    invoke_id_and_priority: int
    block_number: int


@attrs.frozen(slots=True)
class GetRequestWithList(WithInvoke):
    """Read several attributes in one request."""

    TAG: ClassVar[int] = GET_REQUEST_TAG
    CHOICE: ClassVar[int] = 3

    invoke_id_and_priority: int
    items: tuple[AttributeWithSelection, ...]

    def to_bytes(self) -> bytes:
        return encode_header(
            self.TAG, self.CHOICE, self.invoke_id_and_priority
        ) + encode_sequence_of(self.items, AttributeWithSelection.to_bytes)

    @classmethod
    def from_bytes(cls, buf: bytes) -> GetRequestWithList:
        check_choice(buf, cls.TAG, cls.CHOICE, "get-request-with-list")
        items, offset = read_attribute_list(buf, 3)
        check_end(buf, offset, "get-request-with-list")
        return cls(buf[2], items)


GetRequest = GetRequestNormal | GetRequestNext | GetRequestWithList

_GET_REQUESTS: dict[int, FromBytes[GetRequest]] = {
    1: GetRequestNormal,
    2: GetRequestNext,
    3: GetRequestWithList,
}


def decode_get_request(buf: bytes) -> GetRequest:
    """Decode a complete GET-Request APDU (tag 0xC0) of any choice."""
    return decode_choice(buf, GET_REQUEST_TAG, _GET_REQUESTS, "get-request")


# --- responses --------------------------------------------------------------


@attrs.frozen(slots=True)
class GetResponseNormal(WithInvoke):
    """The value of one attribute, or the reason it could not be read."""

    TAG: ClassVar[int] = GET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 1

    invoke_id_and_priority: int
    result: GetDataResult

    def to_bytes(self) -> bytes:
        return encode_header(
            self.TAG, self.CHOICE, self.invoke_id_and_priority
        ) + encode_get_data_result(self.result)

    @classmethod
    def from_bytes(cls, buf: bytes) -> GetResponseNormal:
        check_choice(buf, cls.TAG, cls.CHOICE, "get-response-normal")
        result, offset = read_get_data_result(buf, 3)
        check_end(buf, offset, "get-response-normal")
        return cls(buf[2], result)


@attrs.frozen(slots=True)
class GetResponseWithDataBlock(WithInvoke):
    """One block of a long GET (DataBlock-G).

    `result` is the block's raw bytes (a slice of the encoded Data, cut
    anywhere) or the Data-Access-Result that ends the transfer.
    """

    TAG: ClassVar[int] = GET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 2

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    result: bytes | DataAccessResult

    def to_bytes(self) -> bytes:
        head = (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + encode_bool(self.last_block)
            + pack_u32(self.block_number, "block number")
        )
        if isinstance(self.result, DataAccessResult):
            return head + bytes((1, int(self.result)))
        return head + b"\x00" + encode_octet_string(self.result)

    @classmethod
    def from_bytes(cls, buf: bytes) -> GetResponseWithDataBlock:
        check_choice(buf, cls.TAG, cls.CHOICE, "get-response-with-datablock")
        last_block, offset = read_bool(buf, 3, "last-block")
        block_number, offset = read_u32(buf, offset, "block number")
        choice, offset = read_u8(buf, offset, "DataBlock-G result choice")
        result: bytes | DataAccessResult
        if choice == 0:
            result, offset = read_octet_string(buf, offset, "raw-data")
        elif choice == 1:
            result, offset = read_enum(buf, offset, DataAccessResult, "data-access-result")
        else:
            raise UnknownTagError(
                f"DataBlock-G result choice must be 0 or 1, got {choice}", offset - 1
            )
        check_end(buf, offset, "get-response-with-datablock")
        return cls(buf[2], last_block, block_number, result)


@attrs.frozen(slots=True)
class GetResponseWithList(WithInvoke):
    """One Get-Data-Result per attribute of a get-request-with-list."""

    TAG: ClassVar[int] = GET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 3

    invoke_id_and_priority: int
    results: tuple[GetDataResult, ...]

    def to_bytes(self) -> bytes:
        return encode_header(
            self.TAG, self.CHOICE, self.invoke_id_and_priority
        ) + encode_sequence_of(self.results, encode_get_data_result)

    @classmethod
    def from_bytes(cls, buf: bytes) -> GetResponseWithList:
        check_choice(buf, cls.TAG, cls.CHOICE, "get-response-with-list")
        results, offset = read_sequence_of(buf, 3, read_get_data_result, "result list", 2)
        check_end(buf, offset, "get-response-with-list")
        return cls(buf[2], results)


GetResponse = GetResponseNormal | GetResponseWithDataBlock | GetResponseWithList

_GET_RESPONSES: dict[int, FromBytes[GetResponse]] = {
    1: GetResponseNormal,
    2: GetResponseWithDataBlock,
    3: GetResponseWithList,
}


def decode_get_response(buf: bytes) -> GetResponse:
    """Decode a complete GET-Response APDU (tag 0xC4) of any choice."""
    return decode_choice(buf, GET_RESPONSE_TAG, _GET_RESPONSES, "get-response")
