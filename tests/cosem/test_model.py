"""The in-memory object model and the deterministic gas meter."""

from __future__ import annotations

import datetime as dt

from dlmsd.cosem import objects as ic
from dlmsd.cosem.model import ObjectModel, gas_meter_model, gas_rows
from dlmsd.cosem.profile import fill_missing_clock, parse_buffer, parse_capture_objects
from dlmsd.protocol.apdus.common import CosemAttributeDescriptor, SelectiveAccess
from dlmsd.protocol.apdus.errors import ActionResult, DataAccessResult
from dlmsd.protocol.apdus.selective import EntryDescriptor, RangeDescriptor
from dlmsd.protocol.association import Authentication
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.obis import Obis

NONE, LLS, HLS = Authentication.NONE, Authentication.LLS, Authentication.HLS_GMAC
START = dt.datetime(2023, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
PROFILE = ic.ProfileGeneric(ic.GAS_HOURLY_PROFILE)


def read(
    model: ObjectModel,
    attribute: CosemAttributeDescriptor,
    level: Authentication = NONE,
    access: SelectiveAccess | None = None,
) -> Data:
    value = model.get(attribute, access, level)
    assert isinstance(value, Data), value
    return value


def test_a_year_of_hourly_rows_is_deterministic() -> None:
    model = gas_meter_model()
    columns = parse_capture_objects(read(model, PROFILE.attribute(3)))
    table = parse_buffer(read(model, PROFILE.attribute(2)), columns)
    assert len(table.rows) == 8760
    assert read(model, PROFILE.attribute(7)) == Data.double_long_unsigned(8760)
    assert read(model, PROFILE.attribute(4)) == Data.double_long_unsigned(3600)
    volumes = table.column(ic.GAS_VOLUME)
    assert volumes == sorted(volumes)  # an index only grows
    assert gas_rows(START, 48) == gas_rows(START, 48)
    last = table.rows[-1]
    assert read(model, ic.Register(ic.GAS_VOLUME).attribute(2)).value == last[2]
    assert read(model, ic.Register(ic.GAS_VOLUME).attribute(3)) == Data.structure(
        Data.integer(-3), Data.enum(13)
    )


def test_access_rights_per_level() -> None:
    model = gas_meter_model(hours=2)
    security = ic.SecuritySetup(ic.SECURITY_SETUP).attribute(5)
    assert model.get(security, None, NONE) == DataAccessResult.READ_WRITE_DENIED
    assert isinstance(model.get(security, None, LLS), Data)
    clock = ic.Clock(ic.CLOCK).attribute(2)
    value = read(model, clock)
    assert model.set(clock, value, None, LLS) == DataAccessResult.READ_WRITE_DENIED
    assert model.set(clock, value, None, HLS) == DataAccessResult.SUCCESS
    valve = ic.DisconnectControl(ic.GAS_VALVE)
    assert model.action(valve.method(1), Data.integer(0), LLS)[0] == ActionResult.READ_WRITE_DENIED
    assert model.action(valve.method(1), Data.integer(0), HLS) == (ActionResult.SUCCESS, None)
    assert read(model, valve.attribute(3)) == Data.enum(ic.ControlState.DISCONNECTED)
    assert model.get(CosemAttributeDescriptor(3, ic.CLOCK, 2), None, HLS) == (
        DataAccessResult.OBJECT_CLASS_INCONSISTENT
    )
    assert model.get(CosemAttributeDescriptor(3, Obis(1, 2, 3, 4, 5, 6), 2), None, HLS) == (
        DataAccessResult.OBJECT_UNDEFINED
    )


def test_object_list_follows_the_level() -> None:
    model = gas_meter_model(hours=2)
    public = {e.logical_name: e for e in ic.decode_object_list(model.object_list(NONE))}
    hls = {e.logical_name: e for e in ic.decode_object_list(model.object_list(HLS))}
    assert set(hls) == set(model.objects)
    # IDIS-style: the public client does not see the security setup it may not read.
    assert set(model.objects) - set(public) == {ic.SECURITY_SETUP}
    mode = {a.attribute_id: a.access_mode for a in public[ic.CLOCK].attribute_access}
    assert mode[2] == ic.AttributeAccess.READ_ONLY
    mode = {a.attribute_id: a.access_mode for a in hls[ic.CLOCK].attribute_access}
    assert mode[2] == ic.AttributeAccess.READ_AND_WRITE
    buffer = {a.attribute_id: a for a in hls[ic.GAS_HOURLY_PROFILE].attribute_access}[2]
    assert buffer.access_selectors == (1, 2)


def test_selective_access_on_the_profile() -> None:
    model = gas_meter_model(start=START, hours=100)
    columns = parse_capture_objects(read(model, PROFILE.attribute(3)))
    entries = EntryDescriptor(98, 0, 3, 4).to_selective_access()
    table = parse_buffer(read(model, PROFILE.attribute(2), access=entries), columns[2:])
    assert len(table.rows) == 3
    at = START + dt.timedelta(hours=10)
    bounds = [
        Data.octet_string(CosemDateTime.from_datetime(at + dt.timedelta(hours=h)).raw)
        for h in (0, 2)
    ]
    ranged = RangeDescriptor(columns[0], bounds[0], bounds[1]).to_selective_access()
    table = parse_buffer(read(model, PROFILE.attribute(2), access=ranged), columns)
    assert [row[0].to_datetime() for row in table.rows] == [
        at + dt.timedelta(hours=h) for h in range(3)
    ]
    wrong = RangeDescriptor(columns[0], Data.unsigned(1), Data.unsigned(2)).to_selective_access()
    assert model.get(PROFILE.attribute(2), wrong, NONE) == DataAccessResult.TYPE_UNMATCHED
    assert model.get(PROFILE.attribute(3), entries, NONE) == DataAccessResult.OTHER_REASON


def test_null_repeated_clock_and_fill() -> None:
    model = gas_meter_model(start=START, hours=5, null_repeated_clock=True)
    columns = parse_capture_objects(read(model, PROFILE.attribute(3)))
    table = parse_buffer(read(model, PROFILE.attribute(2)), columns)
    assert [row[0] is None for row in table.rows] == [False, True, True, True, True]
    filled = fill_missing_clock(table, 3600)
    assert [row[0].to_datetime() for row in filled.rows] == [
        START + dt.timedelta(hours=h) for h in range(5)
    ]


def test_frame_counter_and_push() -> None:
    model = gas_meter_model(hours=1)
    counter = ic.DataObject(ic.INVOCATION_COUNTER).attribute(2)
    assert read(model, counter) == Data.double_long_unsigned(0)
    model.accept_client_invocation_counter(ic.INVOCATION_COUNTER, 41)
    assert read(model, counter) == Data.double_long_unsigned(41)
    push = ic.PushSetup(ic.PUSH_SETUP)
    assert model.action(push.method(1), Data.integer(0), LLS)[0] == ActionResult.SUCCESS
    assert model.push_requests == [ic.PUSH_SETUP]
    objects = ic.decode_capture_objects(read(model, push.attribute(2)))
    assert objects[0].logical_name == ic.PUSH_SETUP
