"""COSEM interface classes (Blue Book 4.3-4.5): ids, descriptors and typed attribute values.

Each class below names one interface class: its class id and version, its
attribute and method ids (``IntEnum``), and a few ``decode_*`` functions that turn
the A-XDR value of an attribute into a typed Python value. Instances are value
objects bound to one logical name, so reading a register is::

    reg = Register(Obis.parse("7-0:3.0.0*255"))
    conn.get(reg.attribute(RegisterAttribute.SCALER_UNIT))

The decoders raise only :class:`~dlmsd.protocol.errors.DecodeError` on values
of the wrong shape.
"""

from __future__ import annotations

import enum
from typing import ClassVar

import attrs

from dlmsd.protocol.apdus.common import CosemAttributeDescriptor, CosemMethodDescriptor
from dlmsd.protocol.apdus.selective import CaptureObjectDefinition
from dlmsd.protocol.axdr import BitString, Data, DataType
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DecodeError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.units import ScalerUnit

__all__ = [
    "CLOCK",
    "CURRENT_ASSOCIATION",
    "GAS_CONVERTED_VOLUME",
    "GAS_HOURLY_PROFILE",
    "GAS_VALVE",
    "GAS_VOLUME",
    "GAS_VOLUME_CAPTURED",
    "INTERFACE_CLASSES",
    "INVOCATION_COUNTER",
    "LOGICAL_DEVICE_NAME",
    "PROFILE_STATUS",
    "PUSH_SETUP",
    "SECURITY_SETUP",
    "AccessSelectors",
    "AssociationLN",
    "AssociationLNAttribute",
    "AssociationLNMethod",
    "AttributeAccess",
    "AttributeAccessItem",
    "Clock",
    "ClockAttribute",
    "ClockMethod",
    "ControlState",
    "CosemInterface",
    "DataAttribute",
    "DataObject",
    "DemandRegister",
    "DemandRegisterAttribute",
    "DemandRegisterMethod",
    "DisconnectControl",
    "DisconnectControlAttribute",
    "DisconnectControlMethod",
    "ExtendedRegister",
    "ExtendedRegisterAttribute",
    "MethodAccess",
    "MethodAccessItem",
    "ObjectListEntry",
    "ProfileGeneric",
    "ProfileGenericAttribute",
    "ProfileGenericMethod",
    "PushSetup",
    "PushSetupAttribute",
    "PushSetupMethod",
    "Register",
    "RegisterAttribute",
    "RegisterMethod",
    "SecuritySetup",
    "SecuritySetupAttribute",
    "SecuritySetupMethod",
    "SendDestinationAndMethod",
    "decode_capture_objects",
    "decode_date_time",
    "decode_object_list",
    "decode_scaler_unit",
    "decode_send_destination_and_method",
]

# --- well-known logical names ------------------------------------------------------------
CLOCK = Obis(0, 0, 1, 0, 0, 255)
CURRENT_ASSOCIATION = Obis(0, 0, 40, 0, 0, 255)
LOGICAL_DEVICE_NAME = Obis(0, 0, 42, 0, 0, 255)
SECURITY_SETUP = Obis(0, 0, 43, 0, 0, 255)
#: Invocation (frame) counter a public client reads before a ciphered session.
INVOCATION_COUNTER = Obis(0, 0, 43, 1, 0, 255)
PUSH_SETUP = Obis(0, 0, 25, 9, 0, 255)
#: Status word captured with each profile row.
PROFILE_STATUS = Obis(0, 0, 96, 10, 1, 255)
#: Gas: volume at metering conditions, forward, index (Vm), medium A = 7.
GAS_VOLUME = Obis(7, 0, 3, 0, 0, 255)
#: Gas: converted volume at base conditions (Vb).
GAS_CONVERTED_VOLUME = Obis(7, 0, 13, 0, 0, 255)
#: Gas: last captured index with its capture time (Extended Register, as DSMR's 0-1:24.2.1).
GAS_VOLUME_CAPTURED = Obis(0, 1, 24, 2, 1, 255)
#: Gas: hourly load profile.
GAS_HOURLY_PROFILE = Obis(7, 0, 99, 1, 0, 255)
#: Gas valve: a Disconnect control object (class 70).
GAS_VALVE = Obis(0, 0, 96, 3, 10, 255)


# --- shape helpers -----------------------------------------------------------------------
def _members(value: Data, count: int | None, what: str) -> tuple[Data, ...]:
    items = value.value
    if value.type != DataType.STRUCTURE or not isinstance(items, tuple):
        raise DecodeError(f"{what} must be a structure, got {value.type.label}")
    if count is not None and len(items) != count:
        raise DecodeError(f"{what} must have {count} members, got {len(items)}")
    return items


def _elements(value: Data, what: str) -> tuple[Data, ...]:
    items = value.value
    if value.type != DataType.ARRAY or not isinstance(items, tuple):
        raise DecodeError(f"{what} must be an array, got {value.type.label}")
    return items


def _int(value: Data, what: str) -> int:
    if not isinstance(value.value, int) or isinstance(value.value, bool):
        raise DecodeError(f"{what} must be an integer type, got {value.type.label}")
    return value.value


def _octets(value: Data, what: str) -> bytes:
    if value.type != DataType.OCTET_STRING or not isinstance(value.value, bytes):
        raise DecodeError(f"{what} must be an octet-string, got {value.type.label}")
    return value.value


def decode_scaler_unit(value: Data) -> ScalerUnit:
    """Register-like attribute 3: ``structure{integer scaler, enum unit}``."""
    return ScalerUnit.from_data(value)


def decode_date_time(value: Data) -> CosemDateTime | None:
    """A date-time sent as octet-string(12) or as tag 25; null-data gives None."""
    if value.type == DataType.NULL_DATA:
        return None
    if isinstance(value.value, CosemDateTime):
        return value.value
    raw = _octets(value, "date-time")
    if len(raw) != 12:
        raise DecodeError(f"a date-time octet-string is 12 bytes, got {len(raw)}")
    return CosemDateTime.from_bytes(raw)


def decode_capture_objects(value: Data) -> tuple[CaptureObjectDefinition, ...]:
    """Profile Generic attribute 3 / Push Setup attribute 2: an array of column definitions."""
    return tuple(
        CaptureObjectDefinition.from_data(item) for item in _elements(value, "capture_objects")
    )


# --- the interface classes ---------------------------------------------------------------
@attrs.frozen(slots=True)
class CosemInterface:
    """An object of some interface class at one logical name."""

    CLASS_ID: ClassVar[int] = 0
    VERSION: ClassVar[int] = 0

    logical_name: Obis

    def attribute(self, attribute_id: int) -> CosemAttributeDescriptor:
        """The descriptor of one of its attributes (for GET/SET)."""
        return CosemAttributeDescriptor(self.CLASS_ID, self.logical_name, int(attribute_id))

    def method(self, method_id: int) -> CosemMethodDescriptor:
        """The descriptor of one of its methods (for ACTION)."""
        return CosemMethodDescriptor(self.CLASS_ID, self.logical_name, int(method_id))


class DataAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    VALUE = 2


@attrs.frozen(slots=True)
class DataObject(CosemInterface):
    """Data (class 1): one value of any type."""

    CLASS_ID: ClassVar[int] = 1


class RegisterAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    VALUE = 2
    SCALER_UNIT = 3


class RegisterMethod(enum.IntEnum):
    RESET = 1


@attrs.frozen(slots=True)
class Register(CosemInterface):
    """Register (class 3): a value with scaler and unit (attribute 3)."""

    CLASS_ID: ClassVar[int] = 3


class ExtendedRegisterAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    VALUE = 2
    SCALER_UNIT = 3
    STATUS = 4
    CAPTURE_TIME = 5


@attrs.frozen(slots=True)
class ExtendedRegister(CosemInterface):
    """Extended Register (class 4): a register with status and capture time."""

    CLASS_ID: ClassVar[int] = 4


class DemandRegisterAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    CURRENT_AVERAGE_VALUE = 2
    LAST_AVERAGE_VALUE = 3
    SCALER_UNIT = 4
    STATUS = 5
    CAPTURE_TIME = 6
    START_TIME_CURRENT = 7
    PERIOD = 8
    NUMBER_OF_PERIODS = 9


class DemandRegisterMethod(enum.IntEnum):
    RESET = 1
    NEXT_PERIOD = 2


@attrs.frozen(slots=True)
class DemandRegister(CosemInterface):
    """Demand Register (class 5): sliding average values; scaler_unit is attribute 4."""

    CLASS_ID: ClassVar[int] = 5


class ClockAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    TIME = 2
    TIME_ZONE = 3
    STATUS = 4
    DAYLIGHT_SAVINGS_BEGIN = 5
    DAYLIGHT_SAVINGS_END = 6
    DAYLIGHT_SAVINGS_DEVIATION = 7
    DAYLIGHT_SAVINGS_ENABLED = 8
    CLOCK_BASE = 9


class ClockMethod(enum.IntEnum):
    ADJUST_TO_QUARTER = 1
    ADJUST_TO_MEASURING_PERIOD = 2
    ADJUST_TO_MINUTE = 3
    ADJUST_TO_PRESET_TIME = 4
    PRESET_ADJUSTING_TIME = 5
    SHIFT_TIME = 6


@attrs.frozen(slots=True)
class Clock(CosemInterface):
    """Clock (class 8)."""

    CLASS_ID: ClassVar[int] = 8


class ProfileGenericAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    BUFFER = 2
    CAPTURE_OBJECTS = 3
    CAPTURE_PERIOD = 4
    SORT_METHOD = 5
    SORT_OBJECT = 6
    ENTRIES_IN_USE = 7
    PROFILE_ENTRIES = 8


class ProfileGenericMethod(enum.IntEnum):
    RESET = 1
    CAPTURE = 2


@attrs.frozen(slots=True)
class ProfileGeneric(CosemInterface):
    """Profile Generic (class 7); buffer parsing lives in :mod:`dlmsd.cosem.profile`."""

    CLASS_ID: ClassVar[int] = 7
    VERSION: ClassVar[int] = 1


class AssociationLNAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    OBJECT_LIST = 2
    ASSOCIATED_PARTNERS_ID = 3
    APPLICATION_CONTEXT_NAME = 4
    XDLMS_CONTEXT_INFO = 5
    AUTHENTICATION_MECHANISM_NAME = 6
    SECRET = 7
    ASSOCIATION_STATUS = 8
    SECURITY_SETUP_REFERENCE = 9
    USER_LIST = 10
    CURRENT_USER = 11


class AssociationLNMethod(enum.IntEnum):
    REPLY_TO_HLS_AUTHENTICATION = 1
    CHANGE_HLS_SECRET = 2
    ADD_OBJECT = 3
    REMOVE_OBJECT = 4
    ADD_USER = 5
    REMOVE_USER = 6


@attrs.frozen(slots=True)
class AssociationLN(CosemInterface):
    """Association LN (class 15): the object list and the HLS methods."""

    CLASS_ID: ClassVar[int] = 15
    VERSION: ClassVar[int] = 1


class PushSetupAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    PUSH_OBJECT_LIST = 2
    SEND_DESTINATION_AND_METHOD = 3
    COMMUNICATION_WINDOW = 4
    RANDOMISATION_START_INTERVAL = 5
    NUMBER_OF_RETRIES = 6
    REPETITION_DELAY = 7


class PushSetupMethod(enum.IntEnum):
    PUSH = 1


@attrs.frozen(slots=True)
class PushSetup(CosemInterface):
    """Push Setup (class 40)."""

    CLASS_ID: ClassVar[int] = 40


class SecuritySetupAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    SECURITY_POLICY = 2
    SECURITY_SUITE = 3
    CLIENT_SYSTEM_TITLE = 4
    SERVER_SYSTEM_TITLE = 5
    CERTIFICATES = 6


class SecuritySetupMethod(enum.IntEnum):
    SECURITY_ACTIVATE = 1
    KEY_TRANSFER = 2
    KEY_AGREEMENT = 3
    GENERATE_KEY_PAIR = 4
    GENERATE_CERTIFICATE_REQUEST = 5
    IMPORT_CERTIFICATE = 6
    EXPORT_CERTIFICATE = 7
    REMOVE_CERTIFICATE = 8


@attrs.frozen(slots=True)
class SecuritySetup(CosemInterface):
    """Security Setup (class 64)."""

    CLASS_ID: ClassVar[int] = 64


class DisconnectControlAttribute(enum.IntEnum):
    LOGICAL_NAME = 1
    OUTPUT_STATE = 2
    CONTROL_STATE = 3
    CONTROL_MODE = 4


class DisconnectControlMethod(enum.IntEnum):
    REMOTE_DISCONNECT = 1
    REMOTE_RECONNECT = 2


class ControlState(enum.IntEnum):
    """Disconnect control attribute 3."""

    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


@attrs.frozen(slots=True)
class DisconnectControl(CosemInterface):
    """Disconnect Control (class 70): a breaker, or a gas valve (:data:`GAS_VALVE`)."""

    CLASS_ID: ClassVar[int] = 70


#: class id -> (name, attribute ids, method ids or None)
INTERFACE_CLASSES: dict[int, tuple[str, type[enum.IntEnum], type[enum.IntEnum] | None]] = {
    1: ("Data", DataAttribute, None),
    3: ("Register", RegisterAttribute, RegisterMethod),
    4: ("Extended register", ExtendedRegisterAttribute, RegisterMethod),
    5: ("Demand register", DemandRegisterAttribute, DemandRegisterMethod),
    7: ("Profile generic", ProfileGenericAttribute, ProfileGenericMethod),
    8: ("Clock", ClockAttribute, ClockMethod),
    15: ("Association LN", AssociationLNAttribute, AssociationLNMethod),
    40: ("Push setup", PushSetupAttribute, PushSetupMethod),
    64: ("Security setup", SecuritySetupAttribute, SecuritySetupMethod),
    70: ("Disconnect control", DisconnectControlAttribute, DisconnectControlMethod),
}


# --- Association LN object_list ----------------------------------------------------------
class AttributeAccess(enum.IntEnum):
    """attribute_access_mode (Blue Book 4.4.3)."""

    NO_ACCESS = 0
    READ_ONLY = 1
    WRITE_ONLY = 2
    READ_AND_WRITE = 3
    AUTHENTICATED_READ_ONLY = 4
    AUTHENTICATED_WRITE_ONLY = 5
    AUTHENTICATED_READ_AND_WRITE = 6


class MethodAccess(enum.IntEnum):
    """method_access_mode (version 1+; version 0 sends a boolean)."""

    NO_ACCESS = 0
    ACCESS = 1
    AUTHENTICATED_ACCESS = 2


AccessSelectors = tuple[int, ...] | None


@attrs.frozen(slots=True)
class AttributeAccessItem:
    """One attribute's access mode and the selective-access selectors it supports."""

    attribute_id: int
    access_mode: int
    access_selectors: AccessSelectors = None

    def to_data(self) -> Data:
        selectors = (
            Data.null()
            if self.access_selectors is None
            else Data.array(*(Data.integer(s) for s in self.access_selectors))
        )
        return Data.structure(
            Data.integer(self.attribute_id), Data.enum(self.access_mode), selectors
        )


@attrs.frozen(slots=True)
class MethodAccessItem:
    """One method's access mode (a bool in version 0 lists is read as 0/1)."""

    method_id: int
    access_mode: int

    def to_data(self) -> Data:
        return Data.structure(Data.integer(self.method_id), Data.enum(self.access_mode))


@attrs.frozen(slots=True)
class ObjectListEntry:
    """One element of Association LN attribute 2 (object_list)."""

    class_id: int
    version: int
    logical_name: Obis
    attribute_access: tuple[AttributeAccessItem, ...] = ()
    method_access: tuple[MethodAccessItem, ...] = ()

    @property
    def class_name(self) -> str | None:
        """The interface class name, when it is one this module knows."""
        known = INTERFACE_CLASSES.get(self.class_id)
        return None if known is None else known[0]

    def to_data(self) -> Data:
        return Data.structure(
            Data.long_unsigned(self.class_id),
            Data.unsigned(self.version),
            Data.octet_string(self.logical_name.to_bytes()),
            Data.structure(
                Data.array(*(item.to_data() for item in self.attribute_access)),
                Data.array(*(item.to_data() for item in self.method_access)),
            ),
        )


def _attribute_access(value: Data) -> AttributeAccessItem:
    attribute_id, mode, selectors = _members(value, 3, "attribute_access_item")
    chosen: AccessSelectors = None
    if selectors.type != DataType.NULL_DATA:
        chosen = tuple(_int(s, "access selector") for s in _elements(selectors, "selectors"))
    return AttributeAccessItem(_int(attribute_id, "attribute_id"), _int(mode, "mode"), chosen)


def _method_access(value: Data) -> MethodAccessItem:
    method_id, mode = _members(value, 2, "method_access_item")
    return MethodAccessItem(_int(method_id, "method_id"), int(_int(mode, "method access")))


def decode_object_list(value: Data) -> tuple[ObjectListEntry, ...]:
    """Association LN attribute 2: the objects this association may see."""
    entries = []
    for item in _elements(value, "object_list"):
        class_id, version, name, rights = _members(item, 4, "object_list_element")
        attribute_items, method_items = _members(rights, 2, "access_rights")
        entries.append(
            ObjectListEntry(
                _int(class_id, "class_id"),
                _int(version, "version"),
                Obis.from_bytes(_octets(name, "logical_name")),
                tuple(_attribute_access(a) for a in _elements(attribute_items, "attributes")),
                tuple(_method_access(m) for m in _elements(method_items, "methods")),
            )
        )
    return tuple(entries)


# --- Push Setup ----------------------------------------------------------------------------
class TransportService(enum.IntEnum):
    """send_destination_and_method transport_service."""

    TCP = 0
    UDP = 1
    FTP = 2
    SMTP = 3
    SMS = 4
    HDLC = 5
    M_BUS = 6
    ZIGBEE = 7


@attrs.frozen(slots=True)
class SendDestinationAndMethod:
    """Push Setup attribute 3: where and how the meter pushes."""

    transport_service: int
    destination: bytes
    message: int = 0  # 0 = A-XDR encoded xDLMS APDU

    def to_data(self) -> Data:
        return Data.structure(
            Data.enum(self.transport_service),
            Data.octet_string(self.destination),
            Data.enum(self.message),
        )


def decode_send_destination_and_method(value: Data) -> SendDestinationAndMethod:
    """Decode Push Setup attribute 3."""
    service, destination, message = _members(value, 3, "send_destination_and_method")
    return SendDestinationAndMethod(
        _int(service, "transport_service"),
        _octets(destination, "destination"),
        _int(message, "message"),
    )


def decode_output_state(value: Data) -> bool:
    """Disconnect control attribute 2 (True = connected / valve open)."""
    if value.type != DataType.BOOLEAN:
        raise DecodeError(f"output_state must be a boolean, got {value.type.label}")
    return bool(value.value)


def decode_bit_string(value: Data) -> BitString:
    """Any bit-string attribute (e.g. security_policy in version 1)."""
    if not isinstance(value.value, BitString):
        raise DecodeError(f"expected a bit-string, got {value.type.label}")
    return value.value
