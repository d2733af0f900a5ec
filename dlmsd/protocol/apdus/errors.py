"""Result codes and the two error APDUs of xDLMS.

* ``Data-Access-Result`` and ``Action-Result`` (the result enums of GET/SET/ACTION),
* ``EXCEPTION-Response`` [216]: state-error + service-error, where the
  service-error choice ``invocation-counter-error`` [6] carries an Unsigned32
  (the counter value the server expects; Green Book 8.x),
* ``ConfirmedServiceError`` [14]: which service failed + a ``ServiceError``
  CHOICE whose alternatives each carry a one-byte ENUMERATED reason.

Layouts from the Green Book COSEMpdu ASN.1 (also in jDLMS's ``cosem.asn``).
"""

from __future__ import annotations

import enum
from typing import ClassVar

import attrs

from dlmsd.protocol.apdus.common import check_end, check_u8, pack_u32, read_enum, read_u32
from dlmsd.protocol.errors import EncodeError, TruncatedError, UnknownTagError


class DataAccessResult(enum.IntEnum):
    """Data-Access-Result: the outcome of one GET or SET of one attribute."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class ActionResult(enum.IntEnum):
    """Action-Result: the outcome of one method invocation."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


# --- EXCEPTION-Response -----------------------------------------------------


class StateError(enum.IntEnum):
    """EXCEPTION-Response state-error."""

    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ExceptionServiceError(enum.IntEnum):
    """EXCEPTION-Response service-error choice."""

    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


@attrs.frozen(slots=True)
class ExceptionResponse:
    """EXCEPTION-Response [216]: ``D8 state-error service-error [invocation-counter(4)]``.

    `invocation_counter` is present exactly when the service error is
    INVOCATION_COUNTER_ERROR: it is the counter value the server will accept.
    """

    TAG: ClassVar[int] = 0xD8

    state_error: StateError
    service_error: ExceptionServiceError
    invocation_counter: int | None = None

    def to_bytes(self) -> bytes:
        head = bytes((self.TAG, int(self.state_error), int(self.service_error)))
        is_counter_error = self.service_error == ExceptionServiceError.INVOCATION_COUNTER_ERROR
        if is_counter_error != (self.invocation_counter is not None):
            raise EncodeError(
                "invocation_counter goes with INVOCATION_COUNTER_ERROR and nothing else"
            )
        if self.invocation_counter is None:
            return head
        return head + pack_u32(self.invocation_counter, "invocation counter")

    @classmethod
    def from_bytes(cls, buf: bytes) -> ExceptionResponse:
        if len(buf) < 3:
            raise TruncatedError(f"exception-response needs 3 bytes, got {len(buf)}", len(buf))
        if buf[0] != cls.TAG:
            raise UnknownTagError(f"exception-response tag must be 0xD8, got 0x{buf[0]:02X}", 0)
        state, offset = read_enum(buf, 1, StateError, "exception state-error")
        service, offset = read_enum(buf, offset, ExceptionServiceError, "exception service-error")
        counter: int | None = None
        if service == ExceptionServiceError.INVOCATION_COUNTER_ERROR:
            counter, offset = read_u32(buf, offset, "invocation-counter-error value")
        check_end(buf, offset, "exception-response")
        return cls(state, service, counter)


# --- ConfirmedServiceError --------------------------------------------------


class ConfirmedServiceErrorChoice(enum.IntEnum):
    """Which confirmed service failed (ConfirmedServiceError CHOICE)."""

    INITIATE_ERROR = 1
    GET_STATUS = 2
    GET_NAME_LIST = 3
    GET_VARIABLE_ATTRIBUTE = 4
    READ = 5
    WRITE = 6
    GET_DATA_SET_ATTRIBUTE = 7
    GET_TI_ATTRIBUTE = 8
    CHANGE_SCOPE = 9
    START = 10
    STOP = 11
    RESUME = 12
    MAKE_USABLE = 13
    INITIATE_LOAD = 14
    LOAD_SEGMENT = 15
    TERMINATE_LOAD = 16
    INITIATE_UPLOAD = 17
    UPLOAD_SEGMENT = 18
    TERMINATE_UPLOAD = 19


class ServiceErrorKind(enum.IntEnum):
    """The ServiceError CHOICE: the family of the reason (8 change-scope is reserved)."""

    APPLICATION_REFERENCE = 0
    HARDWARE_RESOURCE = 1
    VDE_STATE_ERROR = 2
    SERVICE = 3
    DEFINITION = 4
    ACCESS = 5
    INITIATE = 6
    LOAD_DATA_SET = 7
    TASK = 9


class ApplicationReferenceError(enum.IntEnum):
    OTHER = 0
    TIME_ELAPSED = 1
    APPLICATION_UNREACHABLE = 2
    APPLICATION_REFERENCE_INVALID = 3
    APPLICATION_CONTEXT_UNSUPPORTED = 4
    PROVIDER_COMMUNICATION_ERROR = 5
    DECIPHERING_ERROR = 6


class HardwareResourceError(enum.IntEnum):
    OTHER = 0
    MEMORY_UNAVAILABLE = 1
    PROCESSOR_RESOURCE_UNAVAILABLE = 2
    MASS_STORAGE_UNAVAILABLE = 3
    OTHER_RESOURCE_UNAVAILABLE = 4


class VdeStateError(enum.IntEnum):
    OTHER = 0
    NO_DLMS_CONTEXT = 1
    LOADING_DATA_SET = 2
    STATUS_NOCHANGE = 3
    STATUS_INOPERABLE = 4


class ServiceServiceError(enum.IntEnum):
    OTHER = 0
    PDU_SIZE = 1
    SERVICE_UNSUPPORTED = 2


class DefinitionError(enum.IntEnum):
    OTHER = 0
    OBJECT_UNDEFINED = 1
    OBJECT_CLASS_INCONSISTENT = 2
    OBJECT_ATTRIBUTE_INCONSISTENT = 3


class AccessError(enum.IntEnum):
    OTHER = 0
    SCOPE_OF_ACCESS_VIOLATED = 1
    OBJECT_ACCESS_VIOLATED = 2
    HARDWARE_FAULT = 3
    OBJECT_UNAVAILABLE = 4


class InitiateError(enum.IntEnum):
    OTHER = 0
    DLMS_VERSION_TOO_LOW = 1
    INCOMPATIBLE_CONFORMANCE = 2
    PDU_SIZE_TOO_SHORT = 3
    REFUSED_BY_THE_VDE_HANDLER = 4


class LoadDataSetError(enum.IntEnum):
    OTHER = 0
    PRIMITIVE_OUT_OF_SEQUENCE = 1
    NOT_LOADABLE = 2
    DATASET_SIZE_TOO_LARGE = 3
    NOT_AWAITED_SEGMENT = 4
    INTERPRETATION_FAILURE = 5
    STORAGE_FAILURE = 6
    DATA_SET_NOT_READY = 7


class TaskError(enum.IntEnum):
    OTHER = 0
    NO_REMOTE_CONTROL = 1
    TI_STOPPED = 2
    TI_RUNNING = 3
    TI_UNUSABLE = 4


ServiceErrorReason = (
    ApplicationReferenceError
    | HardwareResourceError
    | VdeStateError
    | ServiceServiceError
    | DefinitionError
    | AccessError
    | InitiateError
    | LoadDataSetError
    | TaskError
)

#: The reason enum of each ServiceError alternative.
SERVICE_ERROR_REASONS: dict[ServiceErrorKind, type[ServiceErrorReason]] = {
    ServiceErrorKind.APPLICATION_REFERENCE: ApplicationReferenceError,
    ServiceErrorKind.HARDWARE_RESOURCE: HardwareResourceError,
    ServiceErrorKind.VDE_STATE_ERROR: VdeStateError,
    ServiceErrorKind.SERVICE: ServiceServiceError,
    ServiceErrorKind.DEFINITION: DefinitionError,
    ServiceErrorKind.ACCESS: AccessError,
    ServiceErrorKind.INITIATE: InitiateError,
    ServiceErrorKind.LOAD_DATA_SET: LoadDataSetError,
    ServiceErrorKind.TASK: TaskError,
}


@attrs.frozen(slots=True)
class ServiceError:
    """One ServiceError value: the alternative and its reason (kept as an int).

    `reason_name` resolves it through :data:`SERVICE_ERROR_REASONS`.
    """

    kind: ServiceErrorKind
    reason: int

    @property
    def reason_enum(self) -> ServiceErrorReason:
        return SERVICE_ERROR_REASONS[self.kind](self.reason)

    @property
    def reason_name(self) -> str:
        return self.reason_enum.name


@attrs.frozen(slots=True)
class ConfirmedServiceError:
    """ConfirmedServiceError [14]: ``0E service(1) service-error-kind(1) reason(1)``.

    Example: ``0E 01 06 02`` = initiateError, initiate, incompatible-conformance.
    """

    TAG: ClassVar[int] = 0x0E

    service: ConfirmedServiceErrorChoice
    error: ServiceError

    def to_bytes(self) -> bytes:
        reason = check_u8(self.error.reason, "service error reason")
        return bytes((self.TAG, int(self.service), int(self.error.kind), reason))

    @classmethod
    def from_bytes(cls, buf: bytes) -> ConfirmedServiceError:
        if len(buf) < 4:
            raise TruncatedError(
                f"confirmed-service-error needs 4 bytes, got {len(buf)}", len(buf)
            )
        if buf[0] != cls.TAG:
            raise UnknownTagError(
                f"confirmed-service-error tag must be 0x0E, got 0x{buf[0]:02X}", 0
            )
        service, offset = read_enum(buf, 1, ConfirmedServiceErrorChoice, "confirmed service")
        kind, offset = read_enum(buf, offset, ServiceErrorKind, "service-error choice")
        reason_type = SERVICE_ERROR_REASONS[kind]
        reason, offset = read_enum(buf, offset, reason_type, f"{kind.name.lower()} reason")
        check_end(buf, offset, "confirmed-service-error")
        return cls(service, ServiceError(kind, int(reason)))


def decode_exception_response(buf: bytes) -> ExceptionResponse:
    """Decode a complete EXCEPTION-Response APDU."""
    return ExceptionResponse.from_bytes(buf)


def decode_confirmed_service_error(buf: bytes) -> ConfirmedServiceError:
    """Decode a complete ConfirmedServiceError APDU."""
    return ConfirmedServiceError.from_bytes(buf)


__all__ = [
    "SERVICE_ERROR_REASONS",
    "AccessError",
    "ActionResult",
    "ApplicationReferenceError",
    "ConfirmedServiceError",
    "ConfirmedServiceErrorChoice",
    "DataAccessResult",
    "DefinitionError",
    "ExceptionResponse",
    "ExceptionServiceError",
    "HardwareResourceError",
    "InitiateError",
    "LoadDataSetError",
    "ServiceError",
    "ServiceErrorKind",
    "ServiceErrorReason",
    "ServiceServiceError",
    "StateError",
    "TaskError",
    "VdeStateError",
]
