"""SET-Request [193] and SET-Response [197] (Green Book, COSEMpdu ASN.1).

::

    C1 01 invoke descriptor access-selection Data                   set-request-normal
    C1 02 invoke descriptor access-selection DataBlock-SA           with-first-datablock
    C1 03 invoke DataBlock-SA                                       with-datablock
    C1 04 invoke count (descriptor access)* count Data*             with-list
    C1 05 invoke count (descriptor access)* DataBlock-SA            with-list-and-first-datablock
    C5 01 invoke result                                             set-response-normal
    C5 02 invoke block-number(4)                                    set-response-datablock
    C5 03 invoke result block-number(4)                             last-datablock
    C5 04 invoke count result* block-number(4)                      last-datablock-with-list
    C5 05 invoke count result*                                      set-response-with-list

DataBlock-SA is ``last-block(1) block-number(4) raw-data(length-prefixed)``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from dlmsd.protocol.apdus.common import (
    AttributeWithSelection,
    BlockNumberApdu,
    CosemAttributeDescriptor,
    DataBlockSaApdu,
    FromBytes,
    SelectiveAccess,
    WithInvoke,
    check_choice,
    check_end,
    decode_choice,
    encode_datablock_sa,
    encode_header,
    encode_optional_access,
    encode_sequence_of,
    pack_u32,
    read_attribute_descriptor,
    read_attribute_list,
    read_data,
    read_datablock_sa,
    read_enum,
    read_optional_access,
    read_sequence_of,
    read_u32,
)
from dlmsd.protocol.apdus.errors import DataAccessResult
from dlmsd.protocol.axdr import Data, encode_data

SET_REQUEST_TAG = 0xC1
SET_RESPONSE_TAG = 0xC5


def _encode_result(result: DataAccessResult) -> bytes:
    return bytes((int(result),))


def _read_result(buf: bytes, offset: int) -> tuple[DataAccessResult, int]:
    return read_enum(buf, offset, DataAccessResult, "data-access-result")


# --- requests ---------------------------------------------------------------


@attrs.frozen(slots=True)
class SetRequestNormal(WithInvoke):
    """Write one attribute."""

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 1

    invoke_id_and_priority: int
    attribute: CosemAttributeDescriptor
    access: SelectiveAccess | None
    value: Data

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + encode_optional_access(self.access)
            + encode_data(self.value)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> SetRequestNormal:
        check_choice(buf, cls.TAG, cls.CHOICE, "set-request-normal")
        attribute, offset = read_attribute_descriptor(buf, 3)
        access, offset = read_optional_access(buf, offset)
        value, offset = read_data(buf, offset)
        check_end(buf, offset, "set-request-normal")
        return cls(buf[2], attribute, access, value)


@attrs.frozen(slots=True)
class SetRequestWithFirstDataBlock(WithInvoke):
    """Start a long SET: the attribute and the first block of its encoded value."""

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 2

    invoke_id_and_priority: int
    attribute: CosemAttributeDescriptor
    access: SelectiveAccess | None
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + encode_optional_access(self.access)
            + encode_datablock_sa(self.last_block, self.block_number, self.raw_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> SetRequestWithFirstDataBlock:
        check_choice(buf, cls.TAG, cls.CHOICE, "set-request-with-first-datablock")
        attribute, offset = read_attribute_descriptor(buf, 3)
        access, offset = read_optional_access(buf, offset)
        last_block, block_number, raw_data, offset = read_datablock_sa(buf, offset)
        check_end(buf, offset, "set-request-with-first-datablock")
        return cls(buf[2], attribute, access, last_block, block_number, raw_data)


@attrs.frozen(slots=True)
class SetRequestWithDataBlock(DataBlockSaApdu):
    """A following block of a long SET."""

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 3
    NAME: ClassVar[str] = "set-request-with-datablock"

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes


@attrs.frozen(slots=True)
class SetRequestWithList(WithInvoke):
    """Write several attributes: descriptors, then one value each."""

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 4

    invoke_id_and_priority: int
    items: tuple[AttributeWithSelection, ...]
    values: tuple[Data, ...]

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + encode_sequence_of(self.items, AttributeWithSelection.to_bytes)
            + encode_sequence_of(self.values, encode_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> SetRequestWithList:
        check_choice(buf, cls.TAG, cls.CHOICE, "set-request-with-list")
        items, offset = read_attribute_list(buf, 3)
        values, offset = read_sequence_of(buf, offset, read_data, "value-list")
        check_end(buf, offset, "set-request-with-list")
        return cls(buf[2], items, values)


@attrs.frozen(slots=True)
class SetRequestWithListAndFirstDataBlock(WithInvoke):
    """Start a long SET of several attributes: descriptors and the first block."""

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 5

    invoke_id_and_priority: int
    items: tuple[AttributeWithSelection, ...]
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + encode_sequence_of(self.items, AttributeWithSelection.to_bytes)
            + encode_datablock_sa(self.last_block, self.block_number, self.raw_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> SetRequestWithListAndFirstDataBlock:
        check_choice(buf, cls.TAG, cls.CHOICE, "set-request-with-list-and-first-datablock")
        items, offset = read_attribute_list(buf, 3)
        last_block, block_number, raw_data, offset = read_datablock_sa(buf, offset)
        check_end(buf, offset, "set-request-with-list-and-first-datablock")
        return cls(buf[2], items, last_block, block_number, raw_data)


SetRequest = (
    SetRequestNormal
    | SetRequestWithFirstDataBlock
    | SetRequestWithDataBlock
    | SetRequestWithList
    | SetRequestWithListAndFirstDataBlock
)

_SET_REQUESTS: dict[int, FromBytes[SetRequest]] = {
    1: SetRequestNormal,
    2: SetRequestWithFirstDataBlock,
    3: SetRequestWithDataBlock,
    4: SetRequestWithList,
    5: SetRequestWithListAndFirstDataBlock,
}


def decode_set_request(buf: bytes) -> SetRequest:
    """Decode a complete SET-Request APDU (tag 0xC1) of any choice."""
    return decode_choice(buf, SET_REQUEST_TAG, _SET_REQUESTS, "set-request")


# --- responses --------------------------------------------------------------


@attrs.frozen(slots=True)
class SetResponseNormal(WithInvoke):
    """The outcome of a set-request-normal."""

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 1

    invoke_id_and_priority: int
    result: DataAccessResult

    def to_bytes(self) -> bytes:
        return encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority) + _encode_result(
            self.result
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> SetResponseNormal:
        check_choice(buf, cls.TAG, cls.CHOICE, "set-response-normal")
        result, offset = _read_result(buf, 3)
        check_end(buf, offset, "set-response-normal")
        return cls(buf[2], result)


@attrs.frozen(slots=True)
class SetResponseDataBlock(BlockNumberApdu):
    """Acknowledges block `block_number` of a long SET; send the next one."""

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 2
    NAME: ClassVar[str] = "set-response-datablock"

    invoke_id_and_priority: int
    block_number: int


@attrs.frozen(slots=True)
class SetResponseLastDataBlock(WithInvoke):
    """The outcome of a long SET of one attribute, after its last block."""

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 3

    invoke_id_and_priority: int
    result: DataAccessResult
    block_number: int

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + _encode_result(self.result)
            + pack_u32(self.block_number, "block number")
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> SetResponseLastDataBlock:
        check_choice(buf, cls.TAG, cls.CHOICE, "set-response-last-datablock")
        result, offset = _read_result(buf, 3)
        block_number, offset = read_u32(buf, offset, "block number")
        check_end(buf, offset, "set-response-last-datablock")
        return cls(buf[2], result, block_number)


@attrs.frozen(slots=True)
class SetResponseLastDataBlockWithList(WithInvoke):
    """The outcomes of a long SET of several attributes, after its last block."""

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 4

    invoke_id_and_priority: int
    results: tuple[DataAccessResult, ...]
    block_number: int

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + encode_sequence_of(self.results, _encode_result)
            + pack_u32(self.block_number, "block number")
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> SetResponseLastDataBlockWithList:
        check_choice(buf, cls.TAG, cls.CHOICE, "set-response-last-datablock-with-list")
        results, offset = read_sequence_of(buf, 3, _read_result, "result list")
        block_number, offset = read_u32(buf, offset, "block number")
        check_end(buf, offset, "set-response-last-datablock-with-list")
        return cls(buf[2], results, block_number)


@attrs.frozen(slots=True)
class SetResponseWithList(WithInvoke):
    """One Data-Access-Result per attribute of a set-request-with-list."""

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 5

    invoke_id_and_priority: int
    results: tuple[DataAccessResult, ...]

    def to_bytes(self) -> bytes:
        return encode_header(
            self.TAG, self.CHOICE, self.invoke_id_and_priority
        ) + encode_sequence_of(self.results, _encode_result)

    @classmethod
    def from_bytes(cls, buf: bytes) -> SetResponseWithList:
        check_choice(buf, cls.TAG, cls.CHOICE, "set-response-with-list")
        results, offset = read_sequence_of(buf, 3, _read_result, "result list")
        check_end(buf, offset, "set-response-with-list")
        return cls(buf[2], results)


SetResponse = (
    SetResponseNormal
    | SetResponseDataBlock
    | SetResponseLastDataBlock
    | SetResponseLastDataBlockWithList
    | SetResponseWithList
)

_SET_RESPONSES: dict[int, FromBytes[SetResponse]] = {
    1: SetResponseNormal,
    2: SetResponseDataBlock,
    3: SetResponseLastDataBlock,
    4: SetResponseLastDataBlockWithList,
    5: SetResponseWithList,
}


def decode_set_response(buf: bytes) -> SetResponse:
    """Decode a complete SET-Response APDU (tag 0xC5) of any choice."""
    return decode_choice(buf, SET_RESPONSE_TAG, _SET_RESPONSES, "set-response")
