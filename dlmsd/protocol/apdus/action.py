"""ACTION-Request [195] and ACTION-Response [199] (Green Book, COSEMpdu ASN.1).

::

    C3 01 invoke method(9) (00 | 01 Data)                    action-request-normal
    C3 02 invoke block-number(4)                             next-pblock
    C3 03 invoke count method* count Data*                   with-list
    C3 04 invoke method DataBlock-SA                         with-first-pblock
    C3 05 invoke count method* DataBlock-SA                  with-list-and-first-pblock
    C3 06 invoke DataBlock-SA                                with-pblock
    C7 01 invoke result (00 | 01 Get-Data-Result)            action-response-normal
    C7 02 invoke DataBlock-SA                                with-pblock
    C7 03 invoke count (result (00 | 01 Get-Data-Result))*   with-list
    C7 04 invoke block-number(4)                             next-pblock
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from dlmsd.protocol.apdus.common import (
    BlockNumberApdu,
    CosemMethodDescriptor,
    DataBlockSaApdu,
    FromBytes,
    WithInvoke,
    check_choice,
    check_end,
    decode_choice,
    encode_datablock_sa,
    encode_header,
    encode_sequence_of,
    read_data,
    read_datablock_sa,
    read_enum,
    read_method_descriptor,
    read_method_list,
    read_presence,
    read_sequence_of,
)
from dlmsd.protocol.apdus.errors import ActionResult
from dlmsd.protocol.apdus.get import GetDataResult, encode_get_data_result, read_get_data_result
from dlmsd.protocol.axdr import Data, encode_data

ACTION_REQUEST_TAG = 0xC3
ACTION_RESPONSE_TAG = 0xC7


@attrs.frozen(slots=True)
class ActionOutcome:
    """Action-Response-With-Optional-Data: a result and optional return parameters."""

    result: ActionResult
    return_parameters: GetDataResult | None = None

    def to_bytes(self) -> bytes:
        head = bytes((int(self.result),))
        if self.return_parameters is None:
            return head + b"\x00"
        return head + b"\x01" + encode_get_data_result(self.return_parameters)


def read_action_outcome(buf: bytes, offset: int) -> tuple[ActionOutcome, int]:
    result, offset = read_enum(buf, offset, ActionResult, "action-result")
    present, offset = read_presence(buf, offset, "return-parameters")
    if not present:
        return ActionOutcome(result), offset
    parameters, offset = read_get_data_result(buf, offset)
    return ActionOutcome(result, parameters), offset


def _method_bytes(method: CosemMethodDescriptor) -> bytes:
    return method.to_bytes()


# --- requests ---------------------------------------------------------------


@attrs.frozen(slots=True)
class ActionRequestNormal(WithInvoke):
    """Invoke one method, with optional parameters."""

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 1

    invoke_id_and_priority: int
    method: CosemMethodDescriptor
    parameters: Data | None = None

    def to_bytes(self) -> bytes:
        head = (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + self.method.to_bytes()
        )
        if self.parameters is None:
            return head + b"\x00"
        return head + b"\x01" + encode_data(self.parameters)

    @classmethod
    def from_bytes(cls, buf: bytes) -> ActionRequestNormal:
        check_choice(buf, cls.TAG, cls.CHOICE, "action-request-normal")
        method, offset = read_method_descriptor(buf, 3)
        present, offset = read_presence(buf, offset, "method-invocation-parameters")
        parameters: Data | None = None
        if present:
            parameters, offset = read_data(buf, offset)
        check_end(buf, offset, "action-request-normal")
        return cls(buf[2], method, parameters)


@attrs.frozen(slots=True)
class ActionRequestNextPBlock(BlockNumberApdu):
    """Ask for the next block of a long action response (acks `block_number`)."""

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 2
    NAME: ClassVar[str] = "action-request-next-pblock"

    invoke_id_and_priority: int
    block_number: int


@attrs.frozen(slots=True)
class ActionRequestWithList(WithInvoke):
    """Invoke several methods; one parameter each (null-data when none)."""

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 3

    invoke_id_and_priority: int
    methods: tuple[CosemMethodDescriptor, ...]
    parameters: tuple[Data, ...]

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + encode_sequence_of(self.methods, _method_bytes)
            + encode_sequence_of(self.parameters, encode_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> ActionRequestWithList:
        check_choice(buf, cls.TAG, cls.CHOICE, "action-request-with-list")
        methods, offset = read_method_list(buf, 3)
        parameters, offset = read_sequence_of(
            buf, offset, read_data, "method-invocation-parameters"
        )
        check_end(buf, offset, "action-request-with-list")
        return cls(buf[2], methods, parameters)


@attrs.frozen(slots=True)
class ActionRequestWithFirstPBlock(WithInvoke):
    """Start a long action: the method and the first block of its parameters."""

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 4

    invoke_id_and_priority: int
    method: CosemMethodDescriptor
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + self.method.to_bytes()
            + encode_datablock_sa(self.last_block, self.block_number, self.raw_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> ActionRequestWithFirstPBlock:
        check_choice(buf, cls.TAG, cls.CHOICE, "action-request-with-first-pblock")
        method, offset = read_method_descriptor(buf, 3)
        last_block, block_number, raw_data, offset = read_datablock_sa(buf, offset)
        check_end(buf, offset, "action-request-with-first-pblock")
        return cls(buf[2], method, last_block, block_number, raw_data)


@attrs.frozen(slots=True)
class ActionRequestWithListAndFirstPBlock(WithInvoke):
    """Start a long action on several methods: descriptors and the first block."""

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 5

    invoke_id_and_priority: int
    methods: tuple[CosemMethodDescriptor, ...]
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + encode_sequence_of(self.methods, _method_bytes)
            + encode_datablock_sa(self.last_block, self.block_number, self.raw_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> ActionRequestWithListAndFirstPBlock:
        check_choice(buf, cls.TAG, cls.CHOICE, "action-request-with-list-and-first-pblock")
        methods, offset = read_method_list(buf, 3)
        last_block, block_number, raw_data, offset = read_datablock_sa(buf, offset)
        check_end(buf, offset, "action-request-with-list-and-first-pblock")
        return cls(buf[2], methods, last_block, block_number, raw_data)


@attrs.frozen(slots=True)
class ActionRequestWithPBlock(DataBlockSaApdu):
    """A following block of a long action's parameters."""

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 6
    NAME: ClassVar[str] = "action-request-with-pblock"

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes


ActionRequest = (
    ActionRequestNormal
    | ActionRequestNextPBlock
    | ActionRequestWithList
    | ActionRequestWithFirstPBlock
    | ActionRequestWithListAndFirstPBlock
    | ActionRequestWithPBlock
)

_ACTION_REQUESTS: dict[int, FromBytes[ActionRequest]] = {
    1: ActionRequestNormal,
    2: ActionRequestNextPBlock,
    3: ActionRequestWithList,
    4: ActionRequestWithFirstPBlock,
    5: ActionRequestWithListAndFirstPBlock,
    6: ActionRequestWithPBlock,
}


def decode_action_request(buf: bytes) -> ActionRequest:
    """Decode a complete ACTION-Request APDU (tag 0xC3) of any choice."""
    return decode_choice(buf, ACTION_REQUEST_TAG, _ACTION_REQUESTS, "action-request")


# --- responses --------------------------------------------------------------


@attrs.frozen(slots=True)
class ActionResponseNormal(WithInvoke):
    """The outcome of one method invocation, with optional return parameters."""

    TAG: ClassVar[int] = ACTION_RESPONSE_TAG
    CHOICE: ClassVar[int] = 1

    invoke_id_and_priority: int
    result: ActionResult
    return_parameters: GetDataResult | None = None

    def to_bytes(self) -> bytes:
        return (
            encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority)
            + ActionOutcome(self.result, self.return_parameters).to_bytes()
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> ActionResponseNormal:
        check_choice(buf, cls.TAG, cls.CHOICE, "action-response-normal")
        outcome, offset = read_action_outcome(buf, 3)
        check_end(buf, offset, "action-response-normal")
        return cls(buf[2], outcome.result, outcome.return_parameters)


@attrs.frozen(slots=True)
class ActionResponseWithPBlock(DataBlockSaApdu):
    """One block of a long action response."""

    TAG: ClassVar[int] = ACTION_RESPONSE_TAG
    CHOICE: ClassVar[int] = 2
    NAME: ClassVar[str] = "action-response-with-pblock"

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes


@attrs.frozen(slots=True)
class ActionResponseWithList(WithInvoke):
    """One outcome per method of an action-request-with-list."""

    TAG: ClassVar[int] = ACTION_RESPONSE_TAG
    CHOICE: ClassVar[int] = 3

    invoke_id_and_priority: int
    outcomes: tuple[ActionOutcome, ...]

    def to_bytes(self) -> bytes:
        return encode_header(
            self.TAG, self.CHOICE, self.invoke_id_and_priority
        ) + encode_sequence_of(self.outcomes, ActionOutcome.to_bytes)

    @classmethod
    def from_bytes(cls, buf: bytes) -> ActionResponseWithList:
        check_choice(buf, cls.TAG, cls.CHOICE, "action-response-with-list")
        outcomes, offset = read_sequence_of(buf, 3, read_action_outcome, "list-of-responses", 2)
        check_end(buf, offset, "action-response-with-list")
        return cls(buf[2], outcomes)


@attrs.frozen(slots=True)
class ActionResponseNextPBlock(BlockNumberApdu):
    """Acknowledges block `block_number` of a long action request; send the next."""

    TAG: ClassVar[int] = ACTION_RESPONSE_TAG
    CHOICE: ClassVar[int] = 4
    NAME: ClassVar[str] = "action-response-next-pblock"

    invoke_id_and_priority: int
    block_number: int


ActionResponse = (
    ActionResponseNormal
    | ActionResponseWithPBlock
    | ActionResponseWithList
    | ActionResponseNextPBlock
)

_ACTION_RESPONSES: dict[int, FromBytes[ActionResponse]] = {
    1: ActionResponseNormal,
    2: ActionResponseWithPBlock,
    3: ActionResponseWithList,
    4: ActionResponseNextPBlock,
}


def decode_action_response(buf: bytes) -> ActionResponse:
    """Decode a complete ACTION-Response APDU (tag 0xC7) of any choice."""
    return decode_choice(buf, ACTION_RESPONSE_TAG, _ACTION_RESPONSES, "action-response")
