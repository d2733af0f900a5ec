"""COSEM interface classes: descriptors and typed attribute decoding (vectors cited)."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.cosem import objects as ic
from dlmsd.protocol.apdus.common import CosemAttributeDescriptor, CosemMethodDescriptor
from dlmsd.protocol.apdus.selective import CaptureObjectDefinition
from dlmsd.protocol.axdr import Data, decode_data, decode_data_exact
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DecodeError, DlmsError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.units import ScalerUnit
from tests.vectors import only_vector


def test_published_object_list() -> None:
    """get_response_with_datablock_object_list@jDLMS kamsprupDataBlockGObjectListGet.txt:
    123 entries, class ids {3:66, 1:42, 4:6, 7:6, 8:2, 15:1}."""
    v = only_vector("get_response_with_datablock_object_list")
    derived = v["expected"]["derived"]
    entries = ic.decode_object_list(decode_data_exact(bytes.fromhex(v["hex"])))
    assert len(entries) == derived["entries"]
    assert dict(Counter(str(e.class_id) for e in entries)) == derived["class_id_counts"]
    first, last = entries[0], entries[-1]
    assert str(first.logical_name.dotted) == derived["first_entry"]["logical_name"]
    assert [
        [a.attribute_id, a.access_mode, a.access_selectors] for a in first.attribute_access
    ] == derived["first_entry"]["attribute_access"]
    assert first.method_access == ()
    assert (last.class_id, last.logical_name.dotted) == (15, derived["last_entry"]["logical_name"])
    assert last.class_name == "Association LN"
    # every entry re-encodes to the bytes it came from
    raw = bytes.fromhex(v["hex"])
    value = decode_data_exact(raw)
    assert isinstance(value.value, tuple)
    assert [e.to_data() for e in entries] == list(value.value)


def test_descriptors() -> None:
    register = ic.Register(ic.GAS_VOLUME)
    assert register.attribute(ic.RegisterAttribute.SCALER_UNIT) == CosemAttributeDescriptor(
        3, Obis(7, 0, 3, 0, 0, 255), 3
    )
    assert ic.DisconnectControl(ic.GAS_VALVE).method(
        ic.DisconnectControlMethod.REMOTE_DISCONNECT
    ) == CosemMethodDescriptor(70, ic.GAS_VALVE, 1)
    assert ic.AssociationLN(ic.CURRENT_ASSOCIATION).method(1).method_id == 1
    assert int(ic.DemandRegisterAttribute.SCALER_UNIT) == 4
    for class_id, (name, attributes, _methods) in ic.INTERFACE_CLASSES.items():
        assert attributes(1).name == "LOGICAL_NAME", (class_id, name)


def test_typed_decoders() -> None:
    assert ic.decode_scaler_unit(Data.structure(Data.integer(-3), Data.enum(13))) == ScalerUnit(
        -3, 13
    )
    stamp = CosemDateTime.from_fields(2024, 5, 6, 1, 7, 8, 9, 0, -60, 0)
    assert ic.decode_date_time(Data.octet_string(stamp.raw)) == stamp
    assert ic.decode_date_time(Data.date_time(stamp)) == stamp
    assert ic.decode_date_time(Data.null()) is None
    with pytest.raises(DecodeError):
        ic.decode_date_time(Data.octet_string(b"short"))
    columns = (
        CaptureObjectDefinition(8, ic.CLOCK, 2),
        CaptureObjectDefinition(3, ic.GAS_VOLUME, 2),
    )
    assert ic.decode_capture_objects(Data.array(*(c.to_data() for c in columns))) == columns
    destination = ic.SendDestinationAndMethod(ic.TransportService.UDP, b"10.0.0.1:4059")
    assert ic.decode_send_destination_and_method(destination.to_data()) == destination
    assert ic.decode_output_state(Data.boolean(True)) is True
    with pytest.raises(DecodeError):
        ic.decode_output_state(Data.unsigned(1))


def test_object_list_entry_round_trip() -> None:
    entry = ic.ObjectListEntry(
        7,
        1,
        ic.GAS_HOURLY_PROFILE,
        (ic.AttributeAccessItem(1, 1), ic.AttributeAccessItem(2, 1, (1, 2))),
        (ic.MethodAccessItem(1, 0),),
    )
    assert ic.decode_object_list(Data.array(entry.to_data())) == (entry,)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_values_only_raise_decode_errors(raw: bytes) -> None:
    try:
        value, _ = decode_data(raw)
    except DlmsError:
        return
    for decoder in (
        ic.decode_object_list,
        ic.decode_capture_objects,
        ic.decode_date_time,
        ic.decode_scaler_unit,
        ic.decode_send_destination_and_method,
    ):
        with contextlib.suppress(DlmsError):
            decoder(value)
