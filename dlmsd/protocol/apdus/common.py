"""Building blocks shared by the xDLMS service APDUs (Green Book, COSEMpdu ASN.1).

Invoke-id bytes stay raw ints inside the APDUs so that re-encoding is byte-exact
(reserved bits included); :class:`InvokeIdAndPriority` and
:class:`LongInvokeIdAndPriority` are read-only views over them.

The ``read_*`` helpers check every length against the bytes present and raise
only :class:`~dlmsd.protocol.errors.DlmsError` subclasses; they are shared by the
GET/SET/ACTION/notification codecs of this package.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, Self, TypeVar

import attrs

from dlmsd.protocol.axdr import Data, decode_data, decode_length, encode_data, encode_length
from dlmsd.protocol.errors import DecodeError, EncodeError, TruncatedError, UnknownTagError
from dlmsd.protocol.obis import Obis

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

_U16_OBIS_I8 = struct.Struct(">H6Bb")
_U32 = struct.Struct(">I")

# Invoke-Id-And-Priority (1 byte) bit layout.
_INVOKE_ID_MASK = 0x0F
_SERVICE_CLASS_CONFIRMED = 0x40
_PRIORITY_HIGH = 0x80

# Long-Invoke-Id-And-Priority (4 bytes) bit layout.
_LONG_INVOKE_ID_MASK = 0x00FFFFFF
_LONG_SELF_DESCRIPTIVE = 1 << 28
_LONG_PROCESSING_OPTION = 1 << 29
_LONG_SERVICE_CLASS = 1 << 30
_LONG_PRIORITY = 1 << 31


@attrs.frozen(slots=True)
class InvokeIdAndPriority:
    """View of the one-byte Invoke-Id-And-Priority.

    Bits 0-3 invoke id, 4-5 reserved, 6 service class (1 = confirmed),
    7 priority (1 = high).
    """

    raw: int

    @classmethod
    def make(
        cls, invoke_id: int = 1, *, confirmed: bool = True, high_priority: bool = True
    ) -> InvokeIdAndPriority:
        """Compose the byte from its parts (invoke id 0..15)."""
        if not 0 <= invoke_id <= 15:
            raise EncodeError(f"invoke id must be 0..15, got {invoke_id}")
        raw = invoke_id
        if confirmed:
            raw |= _SERVICE_CLASS_CONFIRMED
        if high_priority:
            raw |= _PRIORITY_HIGH
        return cls(raw)

    @property
    def invoke_id(self) -> int:
        return self.raw & _INVOKE_ID_MASK

    @property
    def confirmed(self) -> bool:
        return bool(self.raw & _SERVICE_CLASS_CONFIRMED)

    @property
    def high_priority(self) -> bool:
        return bool(self.raw & _PRIORITY_HIGH)


@attrs.frozen(slots=True)
class LongInvokeIdAndPriority:
    """View of the four-byte Long-Invoke-Id-And-Priority (DataNotification, ...).

    Bits 0-23 invoke id, 28 self-descriptive, 29 processing option (1 = break on
    error), 30 service class (1 = confirmed), 31 priority (1 = high).
    """

    raw: int

    @classmethod
    def make(
        cls,
        invoke_id: int,
        *,
        self_descriptive: bool = False,
        break_on_error: bool = False,
        confirmed: bool = False,
        high_priority: bool = False,
    ) -> LongInvokeIdAndPriority:
        """Compose the value from its parts (invoke id 0..2**24-1)."""
        if not 0 <= invoke_id <= _LONG_INVOKE_ID_MASK:
            raise EncodeError(f"long invoke id must be 0..{_LONG_INVOKE_ID_MASK}, got {invoke_id}")
        raw = invoke_id
        if self_descriptive:
            raw |= _LONG_SELF_DESCRIPTIVE
        if break_on_error:
            raw |= _LONG_PROCESSING_OPTION
        if confirmed:
            raw |= _LONG_SERVICE_CLASS
        if high_priority:
            raw |= _LONG_PRIORITY
        return cls(raw)

    @property
    def invoke_id(self) -> int:
        return self.raw & _LONG_INVOKE_ID_MASK

    @property
    def self_descriptive(self) -> bool:
        return bool(self.raw & _LONG_SELF_DESCRIPTIVE)

    @property
    def break_on_error(self) -> bool:
        return bool(self.raw & _LONG_PROCESSING_OPTION)

    @property
    def confirmed(self) -> bool:
        return bool(self.raw & _LONG_SERVICE_CLASS)

    @property
    def high_priority(self) -> bool:
        return bool(self.raw & _LONG_PRIORITY)


class WithInvoke:
    """Mixin of the service APDUs: the `invoke` view over the raw invoke-id byte."""

    __slots__ = ()
    invoke_id_and_priority: int

    @property
    def invoke(self) -> InvokeIdAndPriority:
        return InvokeIdAndPriority(self.invoke_id_and_priority)


class BlockNumberApdu(WithInvoke):
    """Mixin of the APDUs whose body is only a block number (GET next, SET/ACTION acks).

    Subclasses declare the fields ``invoke_id_and_priority`` and ``block_number``
    and the class variables TAG, CHOICE and NAME (used in error messages).
    """

    __slots__ = ()
    TAG: ClassVar[int]
    CHOICE: ClassVar[int]
    NAME: ClassVar[str]
    block_number: int

    if TYPE_CHECKING:  # attrs writes the subclasses' __init__

        def __init__(self, invoke_id_and_priority: int, block_number: int) -> None: ...

    def to_bytes(self) -> bytes:
        return encode_header(self.TAG, self.CHOICE, self.invoke_id_and_priority) + pack_u32(
            self.block_number, "block number"
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_choice(buf, cls.TAG, cls.CHOICE, cls.NAME)
        block_number, offset = read_u32(buf, 3, "block number")
        check_end(buf, offset, cls.NAME)
        return cls(buf[2], block_number)


class DataBlockSaApdu(WithInvoke):
    """Mixin of the APDUs whose body is only a DataBlock-SA (SET/ACTION following blocks).

    Subclasses declare the fields ``invoke_id_and_priority``, ``last_block``,
    ``block_number`` and ``raw_data`` and the class variables TAG, CHOICE and NAME.
    """

    __slots__ = ()
    TAG: ClassVar[int]
    CHOICE: ClassVar[int]
    NAME: ClassVar[str]
    last_block: bool
    block_number: int
    raw_data: bytes

    if TYPE_CHECKING:  # attrs writes the subclasses' __init__

        def __init__(
            self,
            invoke_id_and_priority: int,
            last_block: bool,
            block_number: int,
            raw_data: bytes,
        ) -> None: ...

    def to_bytes(self) -> bytes:
        return encode_header(
            self.TAG, self.CHOICE, self.invoke_id_and_priority
        ) + encode_datablock_sa(self.last_block, self.block_number, self.raw_data)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_choice(buf, cls.TAG, cls.CHOICE, cls.NAME)
        last_block, block_number, raw_data, offset = read_datablock_sa(buf, 3)
        check_end(buf, offset, cls.NAME)
        return cls(buf[2], last_block, block_number, raw_data)


@attrs.frozen(slots=True)
class CosemAttributeDescriptor:
    """class-id (Unsigned16), instance-id (OBIS), attribute-id (Integer8).

    Negative attribute ids are manufacturer specific (Blue Book).
    """

    class_id: int
    instance: Obis
    attribute_id: int

    def to_bytes(self) -> bytes:
        return _pack_descriptor(self.class_id, self.instance, self.attribute_id, "attribute")


@attrs.frozen(slots=True)
class CosemMethodDescriptor:
    """class-id (Unsigned16), instance-id (OBIS), method-id (Integer8)."""

    class_id: int
    instance: Obis
    method_id: int

    def to_bytes(self) -> bytes:
        return _pack_descriptor(self.class_id, self.instance, self.method_id, "method")


@attrs.frozen(slots=True)
class SelectiveAccess:
    """Selective-Access-Descriptor: an access selector and its parameters."""

    selector: int
    parameters: Data

    def to_bytes(self) -> bytes:
        return bytes((check_u8(self.selector, "access selector"),)) + encode_data(self.parameters)


@attrs.frozen(slots=True)
class AttributeWithSelection:
    """Cosem-Attribute-Descriptor-With-Selection (one item of the *-with-list requests)."""

    attribute: CosemAttributeDescriptor
    access: SelectiveAccess | None = None

    def to_bytes(self) -> bytes:
        return self.attribute.to_bytes() + encode_optional_access(self.access)


# --- encoding helpers -------------------------------------------------------


def check_u8(value: int, what: str) -> int:
    """`value` if it fits an Unsigned8, else EncodeError naming `what`."""
    if not 0 <= value <= 0xFF:
        raise EncodeError(f"{what} must be 0..255, got {value}")
    return value


def pack_u32(value: int, what: str) -> bytes:
    """Unsigned32, big-endian (block numbers, counters)."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise EncodeError(f"{what} must be 0..2**32-1, got {value}")
    return _U32.pack(value)


def _pack_descriptor(class_id: int, instance: Obis, member_id: int, what: str) -> bytes:
    if not 0 <= class_id <= 0xFFFF:
        raise EncodeError(f"class id must be 0..65535, got {class_id}")
    if not -128 <= member_id <= 127:
        raise EncodeError(f"{what} id must be -128..127, got {member_id}")
    return struct.pack(">H", class_id) + obis_bytes(instance) + struct.pack(">b", member_id)


def obis_bytes(instance: Obis) -> bytes:
    """The six OBIS bytes; out-of-range value groups are an EncodeError."""
    try:
        return instance.to_bytes()
    except (ValueError, TypeError):
        raise EncodeError(f"OBIS value groups must be 0..255: {instance!r}") from None


def encode_octet_string(value: bytes) -> bytes:
    """A-XDR OCTET STRING: length then bytes (no Data tag)."""
    return encode_length(len(value)) + value


def encode_bool(value: bool) -> bytes:
    """A-XDR BOOLEAN as written by us: 01 true, 00 false."""
    return b"\x01" if value else b"\x00"


def encode_optional_access(access: SelectiveAccess | None) -> bytes:
    """access-selection OPTIONAL: ``00`` or ``01 selector parameters``."""
    return b"\x00" if access is None else b"\x01" + access.to_bytes()


def encode_sequence_of(items: Sequence[T], encode: Callable[[T], bytes]) -> bytes:
    """A-XDR SEQUENCE OF: element count (length encoding) then the elements."""
    return encode_length(len(items)) + b"".join(encode(item) for item in items)


def encode_datablock_sa(last_block: bool, block_number: int, raw_data: bytes) -> bytes:
    """DataBlock-SA (SET requests, ACTION pblocks): last-block, block-number, raw-data."""
    return (
        encode_bool(last_block)
        + pack_u32(block_number, "block number")
        + encode_octet_string(raw_data)
    )


def encode_header(tag: int, choice: int, invoke_id_and_priority: int) -> bytes:
    """The three bytes every service APDU starts with."""
    return bytes((tag, choice, check_u8(invoke_id_and_priority, "invoke-id-and-priority")))


# --- decoding helpers -------------------------------------------------------


def need(buf: bytes, offset: int, size: int, what: str) -> None:
    """Raise TruncatedError unless `size` bytes of `what` are present at `offset`."""
    if offset + size > len(buf):
        raise TruncatedError(f"{what} needs {size} bytes, {len(buf) - offset} left", offset)


def read_u8(buf: bytes, offset: int, what: str) -> tuple[int, int]:
    """One byte, or TruncatedError naming `what`."""
    if offset >= len(buf):
        raise TruncatedError(f"{what} missing", offset)
    return buf[offset], offset + 1


def read_u32(buf: bytes, offset: int, what: str) -> tuple[int, int]:
    """Unsigned32, big-endian."""
    need(buf, offset, 4, what)
    return _U32.unpack_from(buf, offset)[0], offset + 4


def read_bool(buf: bytes, offset: int, what: str) -> tuple[bool, int]:
    """A-XDR BOOLEAN: one byte, zero is false; encoders here write 0x01 for true."""
    if offset >= len(buf):
        raise TruncatedError(f"{what} missing", offset)
    return buf[offset] != 0, offset + 1


def read_octet_string(buf: bytes, offset: int, what: str) -> tuple[bytes, int]:
    """A-XDR OCTET STRING (length-prefixed, untagged)."""
    size, start = decode_length(buf, offset)
    end = start + size
    if end > len(buf):
        raise TruncatedError(f"{what} announces {size} bytes, {len(buf) - start} left", offset)
    return bytes(buf[start:end]), end


def read_data(buf: bytes, offset: int) -> tuple[Data, int]:
    """One A-XDR Data value (delegates to the axdr codec)."""
    if offset >= len(buf):
        raise TruncatedError("Data value missing", offset)
    return decode_data(buf, offset)


def read_presence(buf: bytes, offset: int, what: str) -> tuple[bool, int]:
    """The OPTIONAL marker of A-XDR: 00 absent, 01 present; anything else is malformed."""
    if offset >= len(buf):
        raise TruncatedError(f"{what} presence flag missing", offset)
    flag = buf[offset]
    if flag > 1:
        raise DecodeError(f"{what} presence flag must be 00 or 01, got {flag:02X}", offset)
    return flag == 1, offset + 1


def read_datablock_sa(buf: bytes, offset: int) -> tuple[bool, int, bytes, int]:
    """DataBlock-SA: returns (last_block, block_number, raw_data, new_offset)."""
    last_block, offset = read_bool(buf, offset, "last-block")
    block_number, offset = read_u32(buf, offset, "block number")
    raw_data, offset = read_octet_string(buf, offset, "raw-data")
    return last_block, block_number, raw_data, offset


def read_attribute_descriptor(buf: bytes, offset: int) -> tuple[CosemAttributeDescriptor, int]:
    """Cosem-Attribute-Descriptor: class-id(2) instance-id(6) attribute-id(1, signed)."""
    need(buf, offset, 9, "cosem-attribute-descriptor")
    class_id, a, b, c, d, e, f, attribute_id = _U16_OBIS_I8.unpack_from(buf, offset)
    return CosemAttributeDescriptor(class_id, Obis(a, b, c, d, e, f), attribute_id), offset + 9


def read_method_descriptor(buf: bytes, offset: int) -> tuple[CosemMethodDescriptor, int]:
    """Cosem-Method-Descriptor: class-id(2) instance-id(6) method-id(1, signed)."""
    need(buf, offset, 9, "cosem-method-descriptor")
    class_id, a, b, c, d, e, f, method_id = _U16_OBIS_I8.unpack_from(buf, offset)
    return CosemMethodDescriptor(class_id, Obis(a, b, c, d, e, f), method_id), offset + 9


def read_optional_access(buf: bytes, offset: int) -> tuple[SelectiveAccess | None, int]:
    """access-selection OPTIONAL: ``00`` or ``01 selector(1) parameters(Data)``."""
    present, offset = read_presence(buf, offset, "access-selection")
    if not present:
        return None, offset
    selector, offset = read_u8(buf, offset, "access selector")
    parameters, offset = read_data(buf, offset)
    return SelectiveAccess(selector, parameters), offset


def read_attribute_with_selection(buf: bytes, offset: int) -> tuple[AttributeWithSelection, int]:
    """Cosem-Attribute-Descriptor-With-Selection."""
    attribute, offset = read_attribute_descriptor(buf, offset)
    access, offset = read_optional_access(buf, offset)
    return AttributeWithSelection(attribute, access), offset


def read_attribute_list(buf: bytes, offset: int) -> tuple[tuple[AttributeWithSelection, ...], int]:
    """SEQUENCE OF Cosem-Attribute-Descriptor-With-Selection (the *-with-list requests)."""
    # 9 descriptor bytes + the access-selection presence byte per item
    return read_sequence_of(
        buf, offset, read_attribute_with_selection, "attribute-descriptor-list", 10
    )


def read_method_list(buf: bytes, offset: int) -> tuple[tuple[CosemMethodDescriptor, ...], int]:
    """SEQUENCE OF Cosem-Method-Descriptor (the ACTION *-with-list requests)."""
    return read_sequence_of(buf, offset, read_method_descriptor, "cosem-method-descriptor-list", 9)


def read_sequence_of(
    buf: bytes,
    offset: int,
    read_item: Callable[[bytes, int], tuple[T, int]],
    what: str,
    min_item_size: int = 1,
) -> tuple[tuple[T, ...], int]:
    """A-XDR SEQUENCE OF: the count is checked against the bytes left before looping."""
    start = offset
    count, offset = decode_length(buf, offset)
    if count * min_item_size > len(buf) - offset:
        raise TruncatedError(
            f"{what} announces {count} items, only {len(buf) - offset} bytes left", start
        )
    items = []
    for _ in range(count):
        item, offset = read_item(buf, offset)
        items.append(item)
    return tuple(items), offset


def read_enum(buf: bytes, offset: int, enum_type: Callable[[int], T], what: str) -> tuple[T, int]:
    """One byte read as `enum_type`; an undefined value is an UnknownTagError."""
    if offset >= len(buf):
        raise TruncatedError(f"{what} missing", offset)
    value = buf[offset]
    try:
        return enum_type(value), offset + 1
    except ValueError:
        raise UnknownTagError(f"undefined {what} {value}", offset) from None


def check_header(buf: bytes, tag: int, what: str) -> None:
    """The APDU starts with `tag`, a choice byte and the invoke-id byte."""
    if not buf:
        raise TruncatedError(f"empty {what}", 0)
    if buf[0] != tag:
        raise UnknownTagError(f"{what} tag must be 0x{tag:02X}, got 0x{buf[0]:02X}", 0)
    if len(buf) < 3:
        raise TruncatedError(f"{what} needs at least 3 bytes, got {len(buf)}", len(buf))


def check_choice(buf: bytes, tag: int, choice: int, what: str) -> None:
    """The APDU has `tag` and the sub-type `choice` (and room for the invoke byte)."""
    check_header(buf, tag, what)
    if buf[1] != choice:
        raise UnknownTagError(f"{what} choice must be {choice}, got {buf[1]}", 1)


def check_end(buf: bytes, offset: int, what: str) -> None:
    """Complete APDUs end where their last field does."""
    if offset != len(buf):
        raise DecodeError(f"{len(buf) - offset} trailing bytes after {what}", offset)


class FromBytes(Protocol[T_co]):
    """Anything with ``from_bytes(buf)``: the APDU classes of a choice table."""

    def from_bytes(self, buf: bytes, /) -> T_co: ...


def decode_choice(buf: bytes, tag: int, choices: Mapping[int, FromBytes[T]], what: str) -> T:
    """Decode a complete APDU of `tag` with the class its choice byte selects."""
    check_header(buf, tag, what)
    cls = choices.get(buf[1])
    if cls is None:
        raise UnknownTagError(f"undefined {what} choice {buf[1]}", 1)
    return cls.from_bytes(buf)
