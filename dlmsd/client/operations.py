"""What a client session does, written once for both drivers, as generators.

Each operation is a generator that yields a request (a function of the
:class:`~dlmsd.protocol.client.ClientConnection` returning the APDU to send)
and is sent back the event that answers it; its return value is the result.
The blocking driver runs it in a loop, the Twisted driver with ``await``; the
logic (class-id fallback, scaler/unit, profile columns) lives here only::

    def run(operation):
        request = next(operation)
        while True:
            event = exchange(request)            # send, wait for the answer
            try:
                request = operation.send(event)
            except StopIteration as done:
                return done.value

Failures raise :mod:`dlmsd.client.errors` classes; per-item failures of a
GET-with-list come back as :class:`DataAccessResult` values.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

import attrs

from dlmsd.client.channel import Request
from dlmsd.client.errors import (
    AssociationRefused,
    ClientError,
    ConnectionClosed,
    ProtocolViolation,
    ServiceError,
    WrongKeys,
    WrongPassword,
)
from dlmsd.client.targets import PROFILE_GENERIC_CLASS, Target, as_target
from dlmsd.cosem.objects import ObjectListEntry, decode_object_list
from dlmsd.cosem.profile import (
    Cell,
    ProfileTable,
    ScalerUnitCache,
    column_key,
    parse_buffer,
    parse_capture_objects,
)
from dlmsd.protocol.apdus.common import (
    AttributeWithSelection,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    SelectiveAccess,
)
from dlmsd.protocol.apdus.errors import ActionResult, DataAccessResult
from dlmsd.protocol.apdus.selective import (
    CaptureObjectDefinition,
    EntryDescriptor,
    RangeDescriptor,
)
from dlmsd.protocol.axdr import Data, DataType
from dlmsd.protocol.client import (
    ActionOutcome,
    Associated,
    ExceptionReceived,
    GetListResult,
    GetResult,
    ProtocolFailure,
    Released,
    SetResult,
)
from dlmsd.protocol.client import AssociationRefused as RefusedEvent
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.units import ScalerUnit

T = TypeVar("T")
Operation = Generator[Request, object, T]

CLOCK = Obis(0, 0, 1, 0, 0, 255)
CURRENT_ASSOCIATION = Obis(0, 0, 40, 0, 0, 255)
_WRONG_CLASS = (DataAccessResult.OBJECT_UNDEFINED, DataAccessResult.OBJECT_CLASS_INCONSISTENT)
# Open ends of a time range: before and after any meter's clock.
_EARLIEST = datetime(2000, 1, 1)
_LATEST = datetime(2099, 12, 31, 23, 59, 59)
_REGISTER_CLASSES = (3, 4, 5)


@attrs.frozen(slots=True)
class RegisterReading:
    """A register value with its scaler applied, and its unit."""

    obis: Obis
    value: Decimal | object
    unit: str | None
    scaler_unit: ScalerUnit | None

    def to_json(self) -> dict[str, object]:
        value = self.value
        shown = str(value) if isinstance(value, Decimal) else value
        return {"obis": str(self.obis), "value": shown, "unit": self.unit}


@attrs.frozen(slots=True)
class ProfileRows:
    """Rows read from a profile: register columns scaled, nulls kept as None.

    ``units`` gives each column's scaler/unit (None for unscaled columns);
    ``table`` is the buffer as the meter sent it (unscaled).
    """

    columns: tuple[CaptureObjectDefinition, ...]
    rows: tuple[tuple[Cell, ...], ...]
    units: tuple[ScalerUnit | None, ...]
    table: ProfileTable = attrs.field(repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def headers(self) -> tuple[str, ...]:
        """``OBIS:attribute`` per column (``/data_index`` when there is one)."""
        names = []
        for column in self.columns:
            name = f"{column.logical_name}:{column.attribute_index}"
            if column.data_index:
                name += f"/{column.data_index}"
            names.append(name)
        return tuple(names)

    def as_dicts(self) -> list[dict[tuple[Obis, int, int], Cell]]:
        """The rows as dicts keyed by ``(OBIS, attribute, data_index)``."""
        keys = [column_key(column) for column in self.columns]
        return [dict(zip(keys, row, strict=True)) for row in self.rows]


def fail(event: object, what: str) -> ClientError:
    """The error for an event that does not answer ``what`` with success."""
    if isinstance(event, RefusedEvent):
        return refused(event)
    if isinstance(event, ExceptionReceived):
        return ServiceError(f"{what}: the meter answered with an exception: {event}", event)
    if isinstance(event, ProtocolFailure):
        reason = str(getattr(event, "reason", event))
        if _looks_like_keys(reason):
            return WrongKeys(f"{what}: {reason}")
        return ProtocolViolation(f"{what}: {reason}")
    if isinstance(event, Released):
        return ConnectionClosed(f"{what}: the association was released")
    return ProtocolViolation(f"{what}: unexpected answer {type(event).__name__}")


def _looks_like_keys(reason: str) -> bool:
    text = reason.lower()
    return "wrong key" in text or "authentication tag" in text


def refused(event: RefusedEvent) -> AssociationRefused:
    """The error for a refused association, by its diagnostic."""
    reason = str(getattr(event, "reason", "") or getattr(event, "diagnostic", "") or event)
    if not reason.startswith("association refused"):
        reason = f"association refused: {reason}"
    text = reason.lower()
    if "password" in text:
        return WrongPassword(reason)
    if "key" in text or "hls-gmac reply" in text:
        return WrongKeysRefused(reason)
    return AssociationRefused(reason)


class WrongKeysRefused(AssociationRefused, WrongKeys):
    """HLS-GMAC or ciphering: the meter refused us, or we refused its answer, on the keys."""


def access_error(what: str, result: DataAccessResult | ActionResult) -> ServiceError:
    name = result.name.lower().replace("_", "-")
    return ServiceError(f"{what}: {name}", result)


class Operations:
    """The operations of one session, with its caches (class ids, scaler/units, columns)."""

    def __init__(self) -> None:
        self._class_ids: dict[Obis, int] | None = None
        self._objects: list[ObjectListEntry] | None = None
        #: Scaler/unit per register, read once per session.
        self.scalers = ScalerUnitCache()
        self._columns: dict[Obis, tuple[CaptureObjectDefinition, ...]] = {}

    # -- association ------------------------------------------------------------

    def associate(self) -> Operation[Associated]:
        """AARQ (and the HLS reply the connection sends by itself)."""
        event = yield lambda c: c.associate()
        if isinstance(event, Associated):
            return event
        raise fail(event, "association")

    def release(self) -> Operation[None]:
        """RLRQ; a meter that answers with anything but RLRE is not an error here."""
        yield lambda c: c.release()
        return None

    # -- services ---------------------------------------------------------------

    def get(
        self,
        target: Target | Obis | str,
        attribute: int | None = None,
        access: SelectiveAccess | None = None,
    ) -> Operation[Data]:
        """One attribute's value; a data-access-result other than success raises."""
        wanted = as_target(target, attribute)
        result = yield from self._get_result(wanted, access)
        if isinstance(result, Data):
            return result
        raise access_error(f"GET {wanted}", result)

    def _get_result(
        self, target: Target, access: SelectiveAccess | None
    ) -> Operation[Data | DataAccessResult]:
        descriptor = self._descriptor(target)
        result = yield from self._get_once(descriptor, access, str(target))
        if result in _WRONG_CLASS and target.class_id is None:
            # Our class guess was wrong: ask the object list, then try again.
            class_id = yield from self._lookup_class(target.obis)
            if class_id is not None and class_id != descriptor.class_id:
                result = yield from self._get_once(
                    target.descriptor(class_id), access, str(target)
                )
        return result

    def _get_once(
        self, descriptor: CosemAttributeDescriptor, access: SelectiveAccess | None, what: str
    ) -> Operation[Data | DataAccessResult]:
        event = yield lambda c: c.get(descriptor, access)
        if not isinstance(event, GetResult):
            raise fail(event, f"GET {what}")
        result: Data | DataAccessResult = event.result
        return result

    def _descriptor(self, target: Target) -> CosemAttributeDescriptor:
        """The descriptor to use: a class id given, learned from the object list, or guessed."""
        if target.class_id is None and self._class_ids is not None:
            known = self._class_ids.get(target.obis)
            if known is not None:
                return target.descriptor(known)
        return target.descriptor()

    def _class_of(self, target: Target, guessed: int) -> int:
        """The class an object turned out to have (the object list may have corrected us)."""
        if target.class_id is not None:
            return target.class_id
        if self._class_ids is not None:
            return self._class_ids.get(target.obis, guessed)
        return guessed

    def _lookup_class(self, obis: Obis) -> Operation[int | None]:
        if self._class_ids is None:
            try:
                yield from self.object_list()
            except ServiceError:
                self._class_ids = {}
        assert self._class_ids is not None
        return self._class_ids.get(obis)

    def get_many(
        self, targets: Sequence[Target | Obis | str]
    ) -> Operation[list[Data | DataAccessResult]]:
        """Several attributes in one GET-with-list; each result is a value or a failure."""
        items = []
        for item in targets:
            descriptor = self._descriptor(as_target(item))
            items.append(AttributeWithSelection(descriptor))
        event = yield lambda c: c.get_with_list(items)
        if not isinstance(event, GetListResult):
            raise fail(event, "GET with list")
        return list(event.results)

    def set(
        self,
        target: Target | Obis | str,
        value: Data,
        attribute: int | None = None,
        access: SelectiveAccess | None = None,
    ) -> Operation[None]:
        """Write one attribute; a data-access-result other than success raises."""
        wanted = as_target(target, attribute)
        descriptor = self._descriptor(wanted)
        event = yield lambda c: c.set(descriptor, value, access)
        if not isinstance(event, SetResult):
            raise fail(event, f"SET {wanted}")
        result = event.result
        if isinstance(result, Sequence):
            result = result[0] if result else DataAccessResult.SUCCESS
        if result != DataAccessResult.SUCCESS:
            raise access_error(f"SET {wanted}", DataAccessResult(result))
        return None

    def action(
        self,
        target: Obis | str,
        method: int,
        parameters: Data | None = None,
        class_id: int | None = None,
    ) -> Operation[Data | None]:
        """Invoke a method; returns its return data (None when it has none)."""
        wanted = as_target(target)
        chosen = class_id if class_id is not None else wanted.resolved_class_id
        descriptor = CosemMethodDescriptor(chosen, wanted.obis, method)
        event = yield lambda c: c.action(descriptor, parameters)
        what = f"ACTION {chosen}/{wanted.obis} method {method}"
        if not isinstance(event, ActionOutcome):
            raise fail(event, what)
        if event.result != ActionResult.SUCCESS:
            raise access_error(what, ActionResult(event.result))
        returned = event.return_data
        if isinstance(returned, DataAccessResult):
            raise access_error(what, returned)
        return returned

    # -- COSEM objects ----------------------------------------------------------

    def object_list(self) -> Operation[list[ObjectListEntry]]:
        """The current association's object list (Association LN attribute 2)."""
        if self._objects is None:
            value = yield from self.get(Target(CURRENT_ASSOCIATION, 2, 15))
            try:
                self._objects = list(decode_object_list(value))
            except DlmsError as error:
                raise ProtocolViolation(f"object list: {error}") from None
            self._class_ids = {entry.logical_name: entry.class_id for entry in self._objects}
        return self._objects

    def read_register(self, target: Target | Obis | str) -> Operation[RegisterReading]:
        """A register's value (attribute 2) with its scaler/unit (attribute 3) applied."""
        wanted = as_target(target, 2)
        descriptor = self._descriptor(wanted)
        value = yield from self.get(wanted)
        class_id = self._class_of(wanted, descriptor.class_id)
        scaler_unit = self.scalers.get(class_id, wanted.obis)
        if scaler_unit is None and class_id in _REGISTER_CLASSES:
            attribute = 4 if class_id == 5 else 3
            scale = yield from self._get_once(
                CosemAttributeDescriptor(class_id, wanted.obis, attribute), None, str(wanted)
            )
            if isinstance(scale, Data):
                try:
                    scaler_unit = ScalerUnit.from_data(scale)
                except DlmsError as error:
                    raise ProtocolViolation(f"scaler_unit of {wanted.obis}: {error}") from None
                self.scalers.put(class_id, wanted.obis, scaler_unit)
        plain = value.value
        if scaler_unit is not None and isinstance(plain, int) and not isinstance(plain, bool):
            return RegisterReading(
                wanted.obis, scaler_unit.apply(plain), scaler_unit.symbol, scaler_unit
            )
        return RegisterReading(wanted.obis, value.plain(), None, scaler_unit)

    def read_invocation_counter(self, obis: Obis | str) -> Operation[int]:
        """The value of a frame counter Data object (0-0:43.1.x.255), attribute 2."""
        value = yield from self.get(Target(as_target(obis).obis, 2, 1))
        if not isinstance(value.value, int) or isinstance(value.value, bool):
            raise ProtocolViolation(f"frame counter {obis} is not an integer: {value!r}")
        return value.value

    def read_clock(self) -> Operation[CosemDateTime]:
        """The meter's clock (0-0:1.0.0*255, attribute 2)."""
        value = yield from self.get(Target(CLOCK, 2, 8))
        if isinstance(value.value, CosemDateTime):
            return value.value
        if value.type == DataType.OCTET_STRING and isinstance(value.value, bytes):
            try:
                return CosemDateTime.from_bytes(value.value)
            except DlmsError as error:
                raise ProtocolViolation(f"clock: {error}") from None
        raise ProtocolViolation(f"clock value is not a date-time: {value!r}")

    def profile_columns(self, obis: Obis | str) -> Operation[tuple[CaptureObjectDefinition, ...]]:
        """A profile's capture objects (attribute 3), cached for the session."""
        wanted = as_target(obis).obis
        columns = self._columns.get(wanted)
        if columns is None:
            value = yield from self.get(Target(wanted, 3, PROFILE_GENERIC_CLASS))
            try:
                columns = parse_capture_objects(value)
            except DlmsError as error:
                raise ProtocolViolation(f"capture objects of {wanted}: {error}") from None
            self._columns[wanted] = columns
        return columns

    def read_profile(
        self,
        obis: Obis | str,
        *,
        from_: datetime | None = None,
        to: datetime | None = None,
        entries: tuple[int, int] | None = None,
        columns: Sequence[int] | None = None,
        apply_scalers: bool = True,
    ) -> Operation[ProfileRows]:
        """Rows of a Profile Generic buffer, by time range or by entries.

        ``from_``/``to`` select on the first (clock) column with a
        RangeDescriptor; ``entries=(first, last)`` with an EntryDescriptor
        (1-based, last 0 = to the end); neither reads the whole buffer.
        ``columns`` (1-based capture object indexes) restricts the columns
        (a contiguous run for an entry read). Register columns get their
        scaler applied (scaler/unit read once per session).
        """
        wanted = as_target(obis).obis
        all_columns = yield from self.profile_columns(wanted)
        selected = _selected_columns(all_columns, columns, contiguous=from_ is None and to is None)
        access = _profile_access(all_columns, selected, from_, to, entries)
        buffer = yield from self.get(Target(wanted, 2, PROFILE_GENERIC_CLASS), access=access)
        try:
            table = parse_buffer(buffer, selected)
        except DlmsError as error:
            raise ProtocolViolation(f"buffer of {wanted}: {error}") from None
        if apply_scalers:
            for descriptor in self.scalers.missing(selected):
                result = yield from self._get_once(descriptor, None, str(descriptor.instance))
                if isinstance(result, Data):
                    try:
                        self.scalers.put(descriptor.class_id, descriptor.instance, result)
                    except DlmsError as error:
                        raise ProtocolViolation(
                            f"scaler_unit of {descriptor.instance}: {error}"
                        ) from None
            return ProfileRows(
                table.columns,
                self.scalers.scale(table),
                tuple(self.scalers.column_units(table)),
                table,
            )
        return ProfileRows(table.columns, table.rows, (None,) * len(table.columns), table)


def _selected_columns(
    columns: tuple[CaptureObjectDefinition, ...],
    selected: Sequence[int] | None,
    *,
    contiguous: bool,
) -> tuple[CaptureObjectDefinition, ...]:
    if not selected:
        return columns
    for index in selected:
        if not 1 <= index <= len(columns):
            raise ClientError(f"column {index} out of range 1..{len(columns)}")
    if contiguous:
        low, high = min(selected), max(selected)
        if sorted(selected) != list(range(low, high + 1)):
            raise ClientError("an entry read selects a contiguous run of columns (e.g. 1-3)")
        return columns[low - 1 : high]
    return tuple(columns[index - 1] for index in selected)


def _profile_access(
    columns: tuple[CaptureObjectDefinition, ...],
    selected: tuple[CaptureObjectDefinition, ...],
    from_: datetime | None,
    to: datetime | None,
    entries: tuple[int, int] | None,
) -> SelectiveAccess | None:
    if from_ is None and to is None:
        if entries is None and selected == columns:
            return None
        first, last = entries if entries is not None else (1, 0)
        if selected == columns:
            low, high = 1, 0
        else:
            low = columns.index(selected[0]) + 1
            high = low + len(selected) - 1
        return EntryDescriptor(first, last, low, high).to_selective_access()
    if entries is not None:
        raise ClientError("select rows by time range or by entries, not both")
    if not columns:
        raise ProtocolViolation("a range read needs the profile's capture objects")
    start = from_ if from_ is not None else _EARLIEST
    end = to if to is not None else _LATEST
    return RangeDescriptor(
        columns[0],
        Data.octet_string(CosemDateTime.from_datetime(start).to_bytes()),
        Data.octet_string(CosemDateTime.from_datetime(end).to_bytes()),
        () if selected == columns else selected,
    ).to_selective_access()
