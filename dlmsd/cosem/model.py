"""An in-memory COSEM object model: what the emulator's server serves.

Objects hold attributes (a getter, an optional setter, the least association
level that may read / write) and methods (a handler and its level). The server
core (:mod:`dlmsd.protocol.server`) calls :meth:`ObjectModel.get`, ``set`` and
``action`` with the level of the current association; the model answers with
A-XDR values or Data-Access-Result / Action-Result codes, never exceptions.

:func:`gas_meter_model` builds a deterministic gas meter: clock, volume
registers, a year of hourly profile rows, a push setup, a gas valve, the
invocation counter object and the association object list.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from dlmsd.cosem import objects as ic
from dlmsd.protocol.apdus.common import (
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    SelectiveAccess,
)
from dlmsd.protocol.apdus.errors import ActionResult, DataAccessResult
from dlmsd.protocol.apdus.selective import (
    CaptureObjectDefinition,
    EntryDescriptor,
    RangeDescriptor,
    parse_selective_access,
)
from dlmsd.protocol.association import Authentication
from dlmsd.protocol.axdr import BitString, Data, DataType
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError, EncodeError
from dlmsd.protocol.obis import Obis

__all__ = [
    "AssociationView",
    "Attribute",
    "CosemObject",
    "Method",
    "ObjectModel",
    "ProfileStore",
    "gas_meter_model",
]

#: A read: the selective access (if any) and the association level -> value or error.
Getter = Callable[[SelectiveAccess | None, Authentication], Data | DataAccessResult]
Setter = Callable[[Data], DataAccessResult]
MethodHandler = Callable[[Data | None], tuple[ActionResult, Data | None]]


@attrs.frozen(slots=True)
class AssociationView:
    """What the current association's Association LN object shows about itself.

    The server core sets it on the model (:attr:`ObjectModel.current`) when an
    association is accepted and before each request it serves, so attributes 3-6
    of 0-0:40.0.0.255 describe the association that reads them.
    """

    client_sap: int = 16
    server_sap: int = 1
    application_context: int = 1  # 1 = LN, 3 = LN with ciphering
    mechanism: int = 0  # 0 none, 1 LLS, 5 HLS-GMAC
    conformance: int = 0
    max_receive_pdu: int = 0xFFFF
    max_send_pdu: int = 0xFFFF


class Attribute:
    """One attribute: how to read and write it and who may (None = nobody)."""

    __slots__ = ("getter", "read", "selectors", "setter", "write")

    def __init__(
        self,
        getter: Getter,
        *,
        setter: Setter | None = None,
        read: Authentication | None = Authentication.NONE,
        write: Authentication | None = None,
        selectors: tuple[int, ...] = (),
    ) -> None:
        self.getter = getter
        self.setter = setter
        self.read = read
        self.write = write if setter is not None else None
        self.selectors = selectors


class Method:
    """One method: its handler and the least association level that may invoke it."""

    __slots__ = ("handler", "level")

    def __init__(self, handler: MethodHandler, level: Authentication | None) -> None:
        self.handler = handler
        self.level = level


class CosemObject:
    """One object: class id, version, logical name, attributes and methods."""

    def __init__(self, class_id: int, logical_name: Obis, version: int = 0) -> None:
        self.class_id = class_id
        self.logical_name = logical_name
        self.version = version
        name = Data.octet_string(logical_name.to_bytes())
        self.attributes: dict[int, Attribute] = {1: Attribute(lambda _a, _l: name)}
        self.methods: dict[int, Method] = {}

    def add_value(
        self,
        attribute_id: int,
        value: Data,
        *,
        read: Authentication | None = Authentication.NONE,
        write: Authentication | None = None,
        on_set: Callable[[Data], DataAccessResult] | None = None,
    ) -> CosemObject:
        """A stored attribute: reads give the value, writes (same type only) replace it."""
        cell = [value]

        def getter(_access: SelectiveAccess | None, _level: Authentication) -> Data:
            return cell[0]

        def setter(new: Data) -> DataAccessResult:
            if new.type != cell[0].type:
                return DataAccessResult.TYPE_UNMATCHED
            result = on_set(new) if on_set is not None else DataAccessResult.SUCCESS
            if result == DataAccessResult.SUCCESS:
                cell[0] = new
            return result

        self.attributes[attribute_id] = Attribute(getter, setter=setter, read=read, write=write)
        return self

    def add_method(
        self, method_id: int, handler: MethodHandler, level: Authentication | None
    ) -> CosemObject:
        """Register a method handler."""
        self.methods[method_id] = Method(handler, level)
        return self

    def value(self, attribute_id: int) -> Data | DataAccessResult:
        """Read an attribute with full rights (for the emulator and tests)."""
        attribute = self.attributes.get(attribute_id)
        if attribute is None:
            return DataAccessResult.OBJECT_UNAVAILABLE
        return attribute.getter(None, Authentication.HLS_GMAC)

    def object_list_entry(self, level: Authentication) -> ic.ObjectListEntry:
        """How this object appears in the object list of an association at `level`."""
        attributes = []
        for attribute_id in sorted(self.attributes):
            attribute = self.attributes[attribute_id]
            readable = attribute.read is not None and level >= attribute.read
            writable = attribute.write is not None and level >= attribute.write
            mode = (
                ic.AttributeAccess.READ_AND_WRITE
                if readable and writable
                else ic.AttributeAccess.READ_ONLY
                if readable
                else ic.AttributeAccess.WRITE_ONLY
                if writable
                else ic.AttributeAccess.NO_ACCESS
            )
            selectors = attribute.selectors or None
            attributes.append(ic.AttributeAccessItem(attribute_id, mode, selectors))
        methods = [
            ic.MethodAccessItem(
                method_id,
                ic.MethodAccess.ACCESS
                if method.level is not None and level >= method.level
                else ic.MethodAccess.NO_ACCESS,
            )
            for method_id, method in sorted(self.methods.items())
        ]
        return ic.ObjectListEntry(
            self.class_id, self.version, self.logical_name, tuple(attributes), tuple(methods)
        )


class ObjectModel:
    """The objects of one logical device, and the security state the server keeps."""

    def __init__(self, objects: Iterable[CosemObject] = ()) -> None:
        self.objects: dict[Obis, CosemObject] = {}
        #: The last IC the server core accepted from a client, per frame counter object.
        self.client_invocation_counters: dict[Obis, int] = {}
        #: The next IC the server uses for its own ciphered APDUs.
        self.server_invocation_counter = 1
        #: Push setups whose push method was invoked (the emulator drains this).
        self.push_requests: list[Obis] = []
        #: The association being served (see :class:`AssociationView`).
        self.current = AssociationView()
        for obj in objects:
            self.add(obj)

    def add(self, obj: CosemObject) -> CosemObject:
        """Add (or replace) an object."""
        self.objects[obj.logical_name] = obj
        return obj

    def find(self, class_id: int, logical_name: Obis) -> CosemObject | None:
        """The object with that logical name, if its class matches."""
        obj = self.objects.get(logical_name)
        return obj if obj is not None and obj.class_id == class_id else None

    def get(
        self,
        attribute: CosemAttributeDescriptor,
        access: SelectiveAccess | None,
        level: Authentication,
    ) -> Data | DataAccessResult:
        """Read one attribute as an association at `level` may."""
        entry = self._attribute(attribute)
        if isinstance(entry, DataAccessResult):
            return entry
        if entry.read is None or level < entry.read:
            return DataAccessResult.READ_WRITE_DENIED
        if access is not None and access.selector not in entry.selectors:
            return DataAccessResult.OTHER_REASON
        return entry.getter(access, level)

    def set(
        self,
        attribute: CosemAttributeDescriptor,
        value: Data,
        access: SelectiveAccess | None,
        level: Authentication,
    ) -> DataAccessResult:
        """Write one attribute as an association at `level` may."""
        entry = self._attribute(attribute)
        if isinstance(entry, DataAccessResult):
            return entry
        if entry.setter is None or entry.write is None or level < entry.write:
            return DataAccessResult.READ_WRITE_DENIED
        if access is not None:
            return DataAccessResult.OTHER_REASON
        return entry.setter(value)

    def _attribute(self, attribute: CosemAttributeDescriptor) -> Attribute | DataAccessResult:
        """The attribute ``attribute`` names, or why there is none (GET and SET answer alike).

        An object or attribute the meter does not have is object-undefined (as meters
        answer, and what Gurux / dlms-cosem users expect); one it has but the
        association may not touch is read-write-denied (see :meth:`get`, :meth:`set`).
        """
        obj = self.objects.get(attribute.instance)
        if obj is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if obj.class_id != attribute.class_id:
            return DataAccessResult.OBJECT_CLASS_INCONSISTENT
        entry = obj.attributes.get(attribute.attribute_id)
        return DataAccessResult.OBJECT_UNDEFINED if entry is None else entry

    def action(
        self, method: CosemMethodDescriptor, parameters: Data | None, level: Authentication
    ) -> tuple[ActionResult, Data | None]:
        """Invoke one method as an association at `level` may."""
        obj = self.objects.get(method.instance)
        if obj is None:
            return ActionResult.OBJECT_UNDEFINED, None
        if obj.class_id != method.class_id:
            return ActionResult.OBJECT_CLASS_INCONSISTENT, None
        entry = obj.methods.get(method.method_id)
        if entry is None:
            return ActionResult.OBJECT_UNAVAILABLE, None
        if entry.level is None or level < entry.level:
            return ActionResult.READ_WRITE_DENIED, None
        return entry.handler(parameters)

    def object_list(self, level: Authentication) -> Data:
        """Association LN attribute 2 for an association at `level`.

        IDIS-style, an association lists only the objects its access rights reach:
        one whose attributes (the logical name aside) and methods it may not touch
        at all is left out, as the public client's list is cut down on IDIS meters.
        """
        entries = (obj.object_list_entry(level) for obj in self.objects.values())
        return Data.array(*(entry.to_data() for entry in entries if _granted(entry)))

    def last_client_invocation_counter(self, counter_object: Obis) -> int:
        """The last IC accepted from the client whose counter object this is (-1: none)."""
        return self.client_invocation_counters.get(counter_object, -1)

    def accept_client_invocation_counter(self, counter_object: Obis, value: int) -> None:
        """Record an accepted IC; the counter object (if in the model) then reads it."""
        self.client_invocation_counters[counter_object] = value


def _granted(entry: ic.ObjectListEntry) -> bool:
    """Whether an object list entry grants anything besides reading the logical name."""
    attributes = any(
        item.attribute_id != 1 and item.access_mode != ic.AttributeAccess.NO_ACCESS
        for item in entry.attribute_access
    )
    methods = any(item.access_mode != ic.MethodAccess.NO_ACCESS for item in entry.method_access)
    return attributes or methods


# --- building blocks ---------------------------------------------------------------------
def data_object(
    logical_name: Obis,
    value: Data,
    *,
    read: Authentication | None = Authentication.NONE,
    write: Authentication | None = None,
) -> CosemObject:
    """A Data (class 1) object holding `value`."""
    obj = CosemObject(ic.DataObject.CLASS_ID, logical_name)
    return obj.add_value(ic.DataAttribute.VALUE, value, read=read, write=write)


def register(
    logical_name: Obis,
    value: Data,
    scaler: int,
    unit: int,
    *,
    read: Authentication | None = Authentication.NONE,
) -> CosemObject:
    """A Register (class 3) with its scaler_unit."""
    obj = CosemObject(ic.Register.CLASS_ID, logical_name)
    obj.add_value(ic.RegisterAttribute.VALUE, value, read=read)
    scaler_unit = Data.structure(Data.integer(scaler), Data.enum(unit))
    return obj.add_value(ic.RegisterAttribute.SCALER_UNIT, scaler_unit, read=read)


def extended_register(
    logical_name: Obis,
    value: Data,
    scaler: int,
    unit: int,
    *,
    status: Data,
    capture_time: CosemDateTime,
    read: Authentication | None = Authentication.NONE,
) -> CosemObject:
    """An Extended Register (class 4): a register with status and capture time."""
    obj = register(logical_name, value, scaler, unit, read=read)
    obj.class_id = ic.ExtendedRegister.CLASS_ID
    obj.add_value(ic.ExtendedRegisterAttribute.STATUS, status, read=read)
    capture = Data.octet_string(capture_time.raw)
    return obj.add_value(ic.ExtendedRegisterAttribute.CAPTURE_TIME, capture, read=read)


def invocation_counter_object(model: ObjectModel, logical_name: Obis) -> CosemObject:
    """The frame counter a public client reads: the last IC the server accepted."""
    obj = CosemObject(ic.DataObject.CLASS_ID, logical_name)

    def getter(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        last = model.last_client_invocation_counter(logical_name)
        return Data.double_long_unsigned(max(last, 0))

    obj.attributes[ic.DataAttribute.VALUE] = Attribute(getter)
    return obj


def _name_of(last: int, kind: int) -> Data:
    """An application context / mechanism name as Association LN attributes 4 and 6
    hold it: {joint-iso-ccitt 2, country 16, country-name 756, identified-organization 5,
    DLMS-UA 8, kind (1 context, 2 mechanism), id} (Blue Book 4.4.3, as Gurux writes it)."""
    return Data.structure(
        Data.unsigned(2),
        Data.unsigned(16),
        Data.long_unsigned(756),
        Data.unsigned(5),
        Data.unsigned(8),
        Data.unsigned(kind),
        Data.unsigned(last),
    )


def association_ln(model: ObjectModel, client_sap: int = 16, server_sap: int = 1) -> CosemObject:
    """Association LN (class 15) at 0-0:40.0.0.255; its object list follows the model.

    Attributes 3-6 describe the association that reads them (:attr:`ObjectModel.current`;
    `client_sap` / `server_sap` are the defaults before any association). The secret
    (7) is never readable nor writable through the model. reply_to_HLS_authentication
    (method 1) is answered by the server core, which holds the challenges; the model
    only lists it.
    """
    obj = CosemObject(ic.AssociationLN.CLASS_ID, ic.CURRENT_ASSOCIATION, ic.AssociationLN.VERSION)
    if model.current == AssociationView():
        model.current = AssociationView(client_sap=client_sap, server_sap=server_sap)
    names = ic.AssociationLNAttribute

    def object_list(_access: SelectiveAccess | None, level: Authentication) -> Data:
        return model.object_list(level)

    def partners(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        current = model.current
        return Data.structure(
            Data.integer(current.client_sap), Data.long_unsigned(current.server_sap)
        )

    def context_name(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        return _name_of(model.current.application_context, 1)

    def context_info(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        current = model.current
        conformance = BitString(24, current.conformance.to_bytes(3, "big"))
        return Data.structure(
            Data.bit_string(conformance),
            Data.long_unsigned(current.max_receive_pdu),
            Data.long_unsigned(current.max_send_pdu),
            Data.unsigned(6),  # DLMS version
            Data.integer(0),  # quality of service
            Data.octet_string(b""),  # cyphering info: none in the xDLMS-initiate sense
        )

    def mechanism_name(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        return _name_of(model.current.mechanism, 2)

    def secret(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        return Data.octet_string(b"")  # never reached: read rights are None

    obj.attributes[names.OBJECT_LIST] = Attribute(object_list)
    obj.attributes[names.ASSOCIATED_PARTNERS_ID] = Attribute(partners)
    obj.attributes[names.APPLICATION_CONTEXT_NAME] = Attribute(context_name)
    obj.attributes[names.XDLMS_CONTEXT_INFO] = Attribute(context_info)
    obj.attributes[names.AUTHENTICATION_MECHANISM_NAME] = Attribute(mechanism_name)
    obj.attributes[names.SECRET] = Attribute(secret, read=None)
    obj.add_value(names.ASSOCIATION_STATUS, Data.enum(2))  # associated
    obj.add_value(names.SECURITY_SETUP_REFERENCE, Data.octet_string(ic.SECURITY_SETUP.to_bytes()))

    def not_here(_parameters: Data | None) -> tuple[ActionResult, Data | None]:
        return ActionResult.TEMPORARY_FAILURE, None

    obj.add_method(
        ic.AssociationLNMethod.REPLY_TO_HLS_AUTHENTICATION, not_here, Authentication.NONE
    )
    return obj


def clock(
    now: Callable[[], dt.datetime],
    *,
    write: Authentication | None = Authentication.HLS_GMAC,
) -> CosemObject:
    """Clock (class 8) reading `now()`; a write sets a fixed offset from it."""
    obj = CosemObject(ic.Clock.CLASS_ID, ic.CLOCK)
    offset = [dt.timedelta(0)]

    def current() -> dt.datetime:
        return now() + offset[0]

    def get_time(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        return Data.octet_string(CosemDateTime.from_datetime(current(), clock_status=0).raw)

    def set_time(value: Data) -> DataAccessResult:
        if not isinstance(value.value, bytes) or len(value.value) != 12:
            return DataAccessResult.TYPE_UNMATCHED
        target = CosemDateTime.from_bytes(value.value).to_datetime()
        if target is None:
            return DataAccessResult.OTHER_REASON
        base = now()
        if (target.tzinfo is None) != (base.tzinfo is None):
            target = target.replace(tzinfo=base.tzinfo)
        offset[0] = target - base
        return DataAccessResult.SUCCESS

    obj.attributes[ic.ClockAttribute.TIME] = Attribute(
        get_time, setter=set_time, read=Authentication.NONE, write=write
    )
    utc_offset = now().utcoffset()
    minutes = 0 if utc_offset is None else -int(utc_offset.total_seconds()) // 60
    obj.add_value(ic.ClockAttribute.TIME_ZONE, Data.long(minutes))
    obj.add_value(ic.ClockAttribute.STATUS, Data.unsigned(0))
    obj.add_value(ic.ClockAttribute.DAYLIGHT_SAVINGS_ENABLED, Data.boolean(False))
    obj.add_value(ic.ClockAttribute.CLOCK_BASE, Data.enum(1))  # internal crystal
    return obj


# --- profiles ------------------------------------------------------------------------------
def _sort_key(value: Data) -> Any:
    """A comparable form of a cell or a range bound: an instant, a number, or the raw value."""
    raw = value.value
    if isinstance(raw, CosemDateTime):
        raw = raw.raw
    if isinstance(raw, bytes) and len(raw) == 12:
        moment = CosemDateTime.from_bytes(raw).to_datetime()
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(dt.UTC).replace(tzinfo=None)
        return moment
    return raw


class ProfileStore:
    """The rows of a Profile Generic buffer and its selective access (Blue Book 4.3.6).

    Rows are kept as tuples of A-XDR cells, oldest first. ``sort_keys`` caches the
    comparable value of the first column, which range reads on it bisect.
    """

    def __init__(
        self,
        columns: Sequence[CaptureObjectDefinition],
        rows: Iterable[tuple[Data, ...]] = (),
        *,
        capture_period: int = 0,
        profile_entries: int = 0,
    ) -> None:
        self.columns = tuple(columns)
        self.rows: list[tuple[Data, ...]] = []
        self.sort_keys: list[Any] = []
        self.capture_period = capture_period
        self.profile_entries = profile_entries
        for row in rows:
            self.append(row)

    def append(self, row: tuple[Data, ...]) -> None:
        """Capture one row (the oldest falls out when the profile is full)."""
        if len(row) != len(self.columns):
            raise EncodeError(f"row of {len(row)} cells for {len(self.columns)} columns")
        self.rows.append(row)
        self.sort_keys.append(_sort_key(row[0]) if row else None)
        if self.profile_entries and len(self.rows) > self.profile_entries:
            del self.rows[0]
            del self.sort_keys[0]

    def select(self, access: SelectiveAccess | None) -> Data | DataAccessResult:
        """The buffer (attribute 2), whole or as the selective access asks."""
        if access is None:
            return self._encode(self.rows, range(len(self.columns)))
        try:
            selection = parse_selective_access(access)
        except DlmsError:
            return DataAccessResult.TYPE_UNMATCHED
        if isinstance(selection, EntryDescriptor):
            return self._by_entry(selection)
        return self._by_range(selection)

    def _by_entry(self, entry: EntryDescriptor) -> Data | DataAccessResult:
        last_row = entry.to_entry or len(self.rows)
        last_column = entry.to_selected_value or len(self.columns)
        if entry.from_entry < 1 or entry.from_selected_value < 1:
            return DataAccessResult.OTHER_REASON
        if last_column > len(self.columns) or entry.from_selected_value > last_column:
            return DataAccessResult.OTHER_REASON
        rows = self.rows[entry.from_entry - 1 : last_row]
        return self._encode(rows, range(entry.from_selected_value - 1, last_column))

    def _by_range(self, selection: RangeDescriptor) -> Data | DataAccessResult:
        try:
            column = self.columns.index(selection.restricting_object)
        except ValueError:
            return DataAccessResult.OBJECT_UNAVAILABLE
        wanted: list[int] = []
        for definition in selection.selected_values:
            if definition not in self.columns:
                return DataAccessResult.OBJECT_UNAVAILABLE
            wanted.append(self.columns.index(definition))
        low, high = _sort_key(selection.from_value), _sort_key(selection.to_value)
        try:
            if column == 0:
                start = bisect.bisect_left(self.sort_keys, low)
                stop = bisect.bisect_right(self.sort_keys, high)
                rows = self.rows[start:stop]
            else:
                rows = [row for row in self.rows if low <= _sort_key(row[column]) <= high]
        except TypeError:  # bounds of another type than the column (or naive vs aware)
            return DataAccessResult.TYPE_UNMATCHED
        return self._encode(rows, wanted or range(len(self.columns)))

    def _encode(self, rows: Sequence[tuple[Data, ...]], columns: Sequence[int]) -> Data:
        structure = DataType.STRUCTURE
        if list(columns) == list(range(len(self.columns))):
            return Data(DataType.ARRAY, tuple(Data(structure, row) for row in rows))
        return Data(
            DataType.ARRAY,
            tuple(Data(structure, tuple(row[i] for i in columns)) for row in rows),
        )


def profile_generic(logical_name: Obis, store: ProfileStore) -> CosemObject:
    """Profile Generic (class 7) over a :class:`ProfileStore`."""
    obj = CosemObject(ic.ProfileGeneric.CLASS_ID, logical_name, ic.ProfileGeneric.VERSION)

    def buffer(access: SelectiveAccess | None, _level: Authentication) -> Data | DataAccessResult:
        return store.select(access)

    def entries_in_use(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        return Data.double_long_unsigned(len(store.rows))

    def reset(_parameters: Data | None) -> tuple[ActionResult, Data | None]:
        store.rows.clear()
        store.sort_keys.clear()
        return ActionResult.SUCCESS, None

    obj.attributes[ic.ProfileGenericAttribute.BUFFER] = Attribute(buffer, selectors=(1, 2))
    obj.add_value(
        ic.ProfileGenericAttribute.CAPTURE_OBJECTS,
        Data.array(*(column.to_data() for column in store.columns)),
    )
    obj.add_value(
        ic.ProfileGenericAttribute.CAPTURE_PERIOD,
        Data.double_long_unsigned(store.capture_period),
    )
    obj.add_value(ic.ProfileGenericAttribute.SORT_METHOD, Data.enum(1))  # fifo
    obj.add_value(
        ic.ProfileGenericAttribute.SORT_OBJECT,
        store.columns[0].to_data() if store.columns else Data.null(),
    )
    obj.attributes[ic.ProfileGenericAttribute.ENTRIES_IN_USE] = Attribute(entries_in_use)
    obj.add_value(
        ic.ProfileGenericAttribute.PROFILE_ENTRIES,
        Data.double_long_unsigned(store.profile_entries or len(store.rows)),
    )
    obj.add_method(ic.ProfileGenericMethod.RESET, reset, Authentication.HLS_GMAC)
    return obj


# --- the gas meter -------------------------------------------------------------------------
_CET = dt.timezone(dt.timedelta(hours=1))
_DEFAULT_START = dt.datetime(2023, 1, 1, 0, 0, tzinfo=_CET)
# Hourly shape of domestic gas use (relative weights, 0..23 h).
_DAY_SHAPE = (3, 2, 2, 2, 2, 4, 9, 12, 9, 6, 5, 5, 6, 5, 4, 4, 6, 10, 12, 11, 9, 7, 5, 4)


@attrs.frozen(slots=True)
class GasMeterRow:
    """One hourly capture of the gas profile (values in litres: scaler -3 on m3)."""

    time: dt.datetime
    status: int
    volume: int
    converted_volume: int


def gas_rows(start: dt.datetime, hours: int, seed: int = 1) -> list[GasMeterRow]:
    """`hours` deterministic hourly rows from `start`: a daily shape, a winter peak, jitter."""
    rows = []
    volume = 1_234_567  # litres already on the index at `start`
    converted = volume * 98 // 100
    state = seed & 0xFFFFFFFF or 1
    for index in range(hours):
        moment = start + dt.timedelta(hours=index)
        state = (state * 1_103_515_245 + 12_345) & 0x7FFFFFFF  # LCG: reproducible jitter
        winter = 3 if moment.month in (11, 12, 1, 2, 3) else 1
        litres = _DAY_SHAPE[moment.hour] * winter * 20 + (state >> 16) % 40
        volume += litres
        converted += litres * 98 // 100
        rows.append(GasMeterRow(moment, 0, volume, converted))
    return rows


def gas_meter_model(
    *,
    start: dt.datetime = _DEFAULT_START,
    hours: int = 8760,
    serial: bytes = b"GAS0000001",
    system_title: bytes = b"DLM\x00\x00\x00\x00\x01",
    now: Callable[[], dt.datetime] | None = None,
    frame_counter: Obis = ic.INVOCATION_COUNTER,
    seed: int = 1,
    null_repeated_clock: bool = False,
) -> ObjectModel:
    """A gas meter with a year (by default) of hourly profile rows.

    Objects: Association LN, clock, logical device name, serial number, the
    invocation counter `frame_counter`, security setup, volume registers Vm
    (7-0:3.0.0) and Vb (7-0:13.0.0), the extended register 0-1:24.2.1, the
    hourly profile 7-0:99.1.0 {clock, status, Vm, Vb}, a push setup and the gas
    valve (Disconnect control). Reads are public except the security setup;
    writes and the valve need HLS. `now` defaults to one hour after the last row.
    ``null_repeated_clock`` sends the clock of every row but the first as
    null-data, as some meters do.
    """
    rows = gas_rows(start, hours, seed)
    end = start + dt.timedelta(hours=hours)

    def default_now() -> dt.datetime:
        return end

    clock_source = now or default_now
    model = ObjectModel()
    model.add(association_ln(model))
    model.add(clock(clock_source))
    model.add(data_object(ic.LOGICAL_DEVICE_NAME, Data.octet_string(b"DLMSD" + serial)))
    model.add(data_object(Obis(0, 0, 96, 1, 0, 255), Data.octet_string(serial)))
    model.add(invocation_counter_object(model, frame_counter))
    model.add(data_object(ic.PROFILE_STATUS, Data.unsigned(0)))

    last = rows[-1] if rows else GasMeterRow(start, 0, 0, 0)
    m3, corrected_m3 = 13, 14  # Blue Book unit codes
    model.add(register(ic.GAS_VOLUME, Data.double_long_unsigned(last.volume), -3, m3))
    model.add(
        register(
            ic.GAS_CONVERTED_VOLUME,
            Data.double_long_unsigned(last.converted_volume),
            -3,
            corrected_m3,
        )
    )
    model.add(
        extended_register(
            ic.GAS_VOLUME_CAPTURED,
            Data.double_long_unsigned(last.converted_volume),
            -3,
            corrected_m3,
            status=Data.unsigned(0),
            capture_time=CosemDateTime.from_datetime(last.time, clock_status=0),
        )
    )

    columns = (
        CaptureObjectDefinition(ic.Clock.CLASS_ID, ic.CLOCK, 2),
        CaptureObjectDefinition(ic.DataObject.CLASS_ID, ic.PROFILE_STATUS, 2),
        CaptureObjectDefinition(ic.Register.CLASS_ID, ic.GAS_VOLUME, 2),
        CaptureObjectDefinition(ic.Register.CLASS_ID, ic.GAS_CONVERTED_VOLUME, 2),
    )
    store = ProfileStore(columns, capture_period=3600, profile_entries=max(hours, 1))
    null = Data.null()
    for index, row in enumerate(rows):
        stamp = Data.octet_string(CosemDateTime.from_datetime(row.time, clock_status=0).raw)
        store.append(
            (
                stamp,
                Data.unsigned(row.status),
                Data.double_long_unsigned(row.volume),
                Data.double_long_unsigned(row.converted_volume),
            )
        )
        if null_repeated_clock and index:
            # keep the sort key (the real time), send null-data on the wire
            store.rows[-1] = (null, *store.rows[-1][1:])
    model.add(profile_generic(ic.GAS_HOURLY_PROFILE, store))

    model.add(_push_setup(model, columns))
    model.add(_security_setup(system_title))
    model.add(_valve())
    return model


def _push_setup(model: ObjectModel, columns: Sequence[CaptureObjectDefinition]) -> CosemObject:
    obj = CosemObject(ic.PushSetup.CLASS_ID, ic.PUSH_SETUP)
    # IDIS: the push setup's own logical name first, to say which push this is
    pushed = (CaptureObjectDefinition(ic.PushSetup.CLASS_ID, ic.PUSH_SETUP, 1), *columns[::2])
    hls = Authentication.HLS_GMAC
    obj.add_value(
        ic.PushSetupAttribute.PUSH_OBJECT_LIST,
        Data.array(*(column.to_data() for column in pushed)),
        write=hls,
    )
    destination = ic.SendDestinationAndMethod(ic.TransportService.TCP, b"127.0.0.1:4059")
    obj.add_value(
        ic.PushSetupAttribute.SEND_DESTINATION_AND_METHOD, destination.to_data(), write=hls
    )
    obj.add_value(ic.PushSetupAttribute.COMMUNICATION_WINDOW, Data.array(), write=hls)
    obj.add_value(ic.PushSetupAttribute.RANDOMISATION_START_INTERVAL, Data.long_unsigned(0))
    obj.add_value(ic.PushSetupAttribute.NUMBER_OF_RETRIES, Data.unsigned(3), write=hls)
    obj.add_value(ic.PushSetupAttribute.REPETITION_DELAY, Data.long_unsigned(60), write=hls)

    def push(_parameters: Data | None) -> tuple[ActionResult, Data | None]:
        model.push_requests.append(ic.PUSH_SETUP)
        return ActionResult.SUCCESS, None

    obj.add_method(ic.PushSetupMethod.PUSH, push, Authentication.LLS)
    return obj


def _security_setup(system_title: bytes) -> CosemObject:
    obj = CosemObject(ic.SecuritySetup.CLASS_ID, ic.SECURITY_SETUP)
    lls = Authentication.LLS
    obj.add_value(ic.SecuritySetupAttribute.SECURITY_POLICY, Data.enum(0), read=lls)
    obj.add_value(ic.SecuritySetupAttribute.SECURITY_SUITE, Data.enum(0), read=lls)
    obj.add_value(ic.SecuritySetupAttribute.CLIENT_SYSTEM_TITLE, Data.octet_string(b""), read=lls)
    obj.add_value(
        ic.SecuritySetupAttribute.SERVER_SYSTEM_TITLE, Data.octet_string(system_title), read=lls
    )
    return obj


def _valve() -> CosemObject:
    obj = CosemObject(ic.DisconnectControl.CLASS_ID, ic.GAS_VALVE)
    state = {"output": True, "control": ic.ControlState.CONNECTED}

    def output(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        return Data.boolean(bool(state["output"]))

    def control(_access: SelectiveAccess | None, _level: Authentication) -> Data:
        return Data.enum(int(state["control"]))

    def disconnect(_parameters: Data | None) -> tuple[ActionResult, Data | None]:
        state.update(output=False, control=ic.ControlState.DISCONNECTED)
        return ActionResult.SUCCESS, None

    def reconnect(_parameters: Data | None) -> tuple[ActionResult, Data | None]:
        # A gas valve is never opened remotely outright: the customer confirms locally.
        state.update(output=False, control=ic.ControlState.READY_FOR_RECONNECTION)
        return ActionResult.SUCCESS, None

    obj.attributes[ic.DisconnectControlAttribute.OUTPUT_STATE] = Attribute(output)
    obj.attributes[ic.DisconnectControlAttribute.CONTROL_STATE] = Attribute(control)
    obj.add_value(ic.DisconnectControlAttribute.CONTROL_MODE, Data.enum(1))
    hls = Authentication.HLS_GMAC
    obj.add_method(ic.DisconnectControlMethod.REMOTE_DISCONNECT, disconnect, hls)
    obj.add_method(ic.DisconnectControlMethod.REMOTE_RECONNECT, reconnect, hls)
    return obj
