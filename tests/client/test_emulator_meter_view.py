"""The emulator as a meter's tools see it: associations, logical devices, access rights.

* IDIS associations: the public client (16, no security) and the management client
  (1, the configured authentication); other client SAPs are refused unless
  configured (``--association SAP:AUTH``).
* Logical devices: each server SAP (``--logical-device``) has its own objects,
  chosen by the wrapper's destination wPort or HDLC's upper server address.
* Association LN: attributes it does not have are object-undefined, write-protected
  ones read-write-denied, the secret is neither readable nor writable, and
  attributes 3-6 describe the association that reads them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dlmsd.cli import build_parser
from dlmsd.client.blocking import TcpClient
from dlmsd.client.emulator import EmulatedMeter, EmulatorConfig, config_from_args, emulator_model
from dlmsd.client.errors import TimeoutError
from dlmsd.cosem import objects as ic
from dlmsd.protocol.apdus.acse import AARE
from dlmsd.protocol.apdus.common import CosemAttributeDescriptor
from dlmsd.protocol.apdus.errors import DataAccessResult
from dlmsd.protocol.apdus.initiate import Conformance
from dlmsd.protocol.association import Authentication, Ciphering, ClientSettings
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.client import Associated, ClientConnection, GetResult, SetResult
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.hdlc import Control, FrameKind, HdlcAddress, HdlcFrame, HdlcParameters
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.wrapper import WrapperFrame, datagram_apdu
from tests.client.conftest import EmulatorProcess

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000000009")
ASSOCIATION = ic.CURRENT_ASSOCIATION


def attribute(class_id: int, obis: Obis, attribute_id: int) -> CosemAttributeDescriptor:
    return CosemAttributeDescriptor(class_id, obis, attribute_id)


class Session:
    """A dlmsd client core talking to an EmulatedMeter over wrapper bytes, in memory."""

    def __init__(self, meter: EmulatedMeter, settings: ClientSettings, server_sap: int = 1):
        self.meter = meter
        self.client = ClientConnection(settings)
        self.client_sap = settings.client_sap
        self.server_sap = server_sap
        self.answered_from: list[int] = []

    def run(self, request: bytes) -> object:
        pending = [request]
        while True:
            for apdu in pending:
                frame = WrapperFrame(self.client_sap, self.server_sap, apdu).to_bytes()
                for chunk in self.meter.receive_data(frame):
                    self.answered_from.append(int.from_bytes(chunk[2:4], "big"))
                    self.client.receive_apdu(datagram_apdu(chunk))
            event = self.client.next_event()
            if event is not NEED_DATA:
                return event
            pending = self.client.data_to_send()
            if not pending:
                return None  # the meter said nothing

    def get(self, target: CosemAttributeDescriptor) -> object:
        event = self.run(self.client.get(target))
        assert isinstance(event, GetResult), event
        return event.result

    def set(self, target: CosemAttributeDescriptor, value: Data) -> DataAccessResult:
        event = self.run(self.client.set(target, value))
        assert isinstance(event, SetResult), event
        return event.result


def meter(config: EmulatorConfig | None = None) -> EmulatedMeter:
    config = config or EmulatorConfig(
        authentication=Authentication.LLS, password=b"secret12", cipher=Suite0Cipher(EK, AK)
    )
    return EmulatedMeter(emulator_model(hours=2), config, datagram=True)


def public() -> ClientSettings:
    return ClientSettings(client_sap=16)


def management_lls() -> ClientSettings:
    return ClientSettings(client_sap=1, authentication=Authentication.LLS, password=b"secret12")


def associate(session: Session) -> Associated:
    event = session.run(session.client.associate())
    assert isinstance(event, Associated), event
    return event


# --- access rights ---------------------------------------------------------------------


def test_attributes_it_does_not_have_are_object_undefined() -> None:
    session = Session(meter(), public())
    associate(session)
    assert session.get(attribute(8, ic.CLOCK, 99)) == DataAccessResult.OBJECT_UNDEFINED
    assert session.get(attribute(15, ASSOCIATION, 12)) == DataAccessResult.OBJECT_UNDEFINED
    assert session.get(attribute(3, Obis(1, 0, 99, 8, 0, 255), 2)) == (
        DataAccessResult.OBJECT_UNDEFINED
    )
    assert session.set(attribute(8, ic.CLOCK, 99), Data.unsigned(1)) == (
        DataAccessResult.OBJECT_UNDEFINED
    )


def test_write_protected_attributes_are_read_write_denied() -> None:
    session = Session(meter(), management_lls())
    associate(session)
    energy = attribute(3, Obis(1, 0, 1, 8, 0, 255), 2)
    assert session.set(energy, Data.double_long_unsigned(1)) == DataAccessResult.READ_WRITE_DENIED
    clock_time = attribute(8, ic.CLOCK, 2)  # writable at HLS-GMAC only
    current = session.get(clock_time)
    assert isinstance(current, Data)
    assert session.set(clock_time, current) == DataAccessResult.READ_WRITE_DENIED
    secret = attribute(15, ASSOCIATION, ic.AssociationLNAttribute.SECRET)
    assert session.get(secret) == DataAccessResult.READ_WRITE_DENIED
    assert session.set(secret, Data.octet_string(b"x")) == DataAccessResult.READ_WRITE_DENIED


def test_object_list_shows_the_rights_of_the_association_reading_it() -> None:
    def rights(settings: ClientSettings) -> dict[int, int]:
        session = Session(meter(), settings)
        associate(session)
        value = session.get(attribute(15, ASSOCIATION, 2))
        assert isinstance(value, Data)
        for entry in ic.decode_object_list(value):
            if entry.logical_name == ic.CURRENT_ASSOCIATION:
                return {item.attribute_id: item.access_mode for item in entry.attribute_access}
        raise AssertionError("no Association LN in its own object list")

    seen = rights(public())
    assert seen[ic.AssociationLNAttribute.SECRET] == ic.AttributeAccess.NO_ACCESS
    assert seen[ic.AssociationLNAttribute.OBJECT_LIST] == ic.AttributeAccess.READ_ONLY
    assert set(seen) == {1, 2, 3, 4, 5, 6, 7, 8, 9}


def test_public_client_object_list_is_cut_down_to_its_access_rights() -> None:
    def listed(settings: ClientSettings) -> set[Obis]:
        session = Session(meter(), settings)
        associate(session)
        value = session.get(attribute(15, ASSOCIATION, 2))
        assert isinstance(value, Data)
        return {entry.logical_name for entry in ic.decode_object_list(value)}

    public_list, management_list = listed(public()), listed(management_lls())
    assert ic.SECURITY_SETUP in management_list  # read at LLS
    assert management_list - public_list == {ic.SECURITY_SETUP}  # the public client has no right
    assert {ic.CURRENT_ASSOCIATION, ic.CLOCK, ic.LOGICAL_DEVICE_NAME} <= public_list


# --- the association describes itself ------------------------------------------------------


def _name_id(value: object) -> int:
    assert isinstance(value, Data)
    return int(value.value[-1].value)  # type: ignore[index]


def test_association_ln_describes_the_current_association() -> None:
    lls = Session(meter(), management_lls())
    associate(lls)
    partners = lls.get(attribute(15, ASSOCIATION, 3))
    assert partners == Data.structure(Data.integer(1), Data.long_unsigned(1))
    assert _name_id(lls.get(attribute(15, ASSOCIATION, 4))) == 1  # LN, no ciphering
    assert _name_id(lls.get(attribute(15, ASSOCIATION, 6))) == 1  # LLS

    hls = ClientSettings(
        client_sap=1,
        authentication=Authentication.HLS_GMAC,
        ciphering=Ciphering.GLOBAL,
        cipher=Suite0Cipher(EK, AK),
        client_system_title=CLIENT_TITLE,
    )
    session = Session(meter(), hls)
    event = associate(session)
    assert _name_id(session.get(attribute(15, ASSOCIATION, 4))) == 3  # LN with ciphering
    assert _name_id(session.get(attribute(15, ASSOCIATION, 6))) == 5  # HLS-GMAC
    info = session.get(attribute(15, ASSOCIATION, 5))
    assert isinstance(info, Data)
    bits = info.value[0].value  # type: ignore[index]
    granted = Conformance(int.from_bytes(bits.data, "big"))
    assert granted == event.conformance
    assert granted & Conformance.GENERAL_PROTECTION


# --- associations (client SAPs) and logical devices ------------------------------------


def test_idis_public_and_management_clients_only_by_default() -> None:
    refused = Session(meter(), ClientSettings(client_sap=32))
    event = refused.run(refused.client.associate())
    assert not isinstance(event, Associated)
    associate(Session(meter(), public()))
    associate(Session(meter(), management_lls()))
    # the management client must authenticate as configured
    weak = Session(meter(), ClientSettings(client_sap=1))
    assert not isinstance(weak.run(weak.client.associate()), Associated)


def test_associations_are_configurable() -> None:
    config = EmulatorConfig(
        associations=((32, Authentication.NONE), (1, Authentication.LLS)),
        password=b"secret12",
    )
    associate(Session(meter(config), ClientSettings(client_sap=32)))
    refused = Session(meter(config), public())
    assert not isinstance(refused.run(refused.client.associate()), Associated)


def test_each_logical_device_has_its_own_objects() -> None:
    config = EmulatorConfig(more_logical_devices=(2,))
    emulated = EmulatedMeter(
        emulator_model(hours=2),
        config,
        datagram=True,
        more_models={2: emulator_model(hours=2, serial=b"GAS0000002", logical_device=2)},
    )
    names = {}
    for sap in (1, 2):
        session = Session(emulated, public(), server_sap=sap)
        associate(session)
        names[sap] = session.get(attribute(1, ic.LOGICAL_DEVICE_NAME, 2))
        partners = session.get(attribute(15, ASSOCIATION, 3))
        assert partners == Data.structure(Data.integer(16), Data.long_unsigned(sap))
        assert set(session.answered_from) == {sap}
    assert names[1] != names[2]
    stranger = Session(emulated, public(), server_sap=3)
    assert stranger.run(stranger.client.associate()) is None  # not this meter's SAP


def test_hdlc_upper_address_selects_the_logical_device(
    emulator: Callable[..., EmulatorProcess],
) -> None:
    meter = emulator("--transport", "hdlc", "--logical-device", "1", "--logical-device", "17")
    names = {}
    for sap in (1, 17):
        settings = ClientSettings(client_sap=16, server_logical_device=sap)
        client = TcpClient("127.0.0.1", meter.port, settings, transport="hdlc", timeout=2)
        with client.session() as session:
            names[sap] = session.get("0-0:42.0.0*255").value
            partners = session.get("0-0:40.0.0*255", attribute=3)
            assert partners == Data.structure(Data.integer(16), Data.long_unsigned(sap))
    assert names == {1: b"DLMSDGAS0000001", 17: b"DLMSDGAS0000017"}
    stranger = ClientSettings(client_sap=16, server_logical_device=3)
    client = TcpClient("127.0.0.1", meter.port, stranger, transport="hdlc", timeout=0.3, retries=1)
    with pytest.raises(TimeoutError), client.session():
        pass  # no such logical device: the meter stays silent


def test_hdlc_frames_for_a_device_the_link_is_not_with_get_dm() -> None:
    config = EmulatorConfig(transport="hdlc", more_logical_devices=(17,))
    emulated = EmulatedMeter(
        emulator_model(hours=2),
        config,
        more_models={17: emulator_model(hours=2, serial=b"GAS0000017", logical_device=17)},
    )
    client = HdlcAddress.client(16)

    def send(kind: FrameKind, logical: int, information: bytes = b"") -> list[HdlcFrame]:
        server = HdlcAddress.server(logical, config.physical_address)
        frame = HdlcFrame(server, client, Control(kind), information).to_bytes()
        return [HdlcFrame.from_bytes(chunk) for chunk in emulated.receive_data(frame)]

    (ua,) = send(FrameKind.SNRM, 17, HdlcParameters().to_bytes())
    assert (ua.control.kind, ua.source.logical) == (FrameKind.UA, 17)
    (dm,) = send(FrameKind.DISC, 1)  # linked with 17, not 1
    assert (dm.control.kind, dm.source.logical) == (FrameKind.DM, 1)
    assert send(FrameKind.SNRM, 3, HdlcParameters().to_bytes()) == []  # not this meter's
    (ua,) = send(FrameKind.DISC, 17)
    assert (ua.control.kind, ua.source.logical) == (FrameKind.UA, 17)


def test_command_line_builds_the_table() -> None:
    args = build_parser().parse_args(
        [
            "emulate",
            "--password",
            "pw123456",
            "--association",
            "16:none",
            "--association",
            "102:lls",
            "--logical-device",
            "1",
            "--logical-device",
            "17",
        ]
    )
    config = config_from_args(args)
    assert config.association_table() == {16: Authentication.NONE, 102: Authentication.LLS}
    assert (config.logical_device, config.more_logical_devices) == (1, (17,))
    bad = build_parser().parse_args(["emulate", "--association", "16:maybe"])
    with pytest.raises(ValueError, match="CLIENT_SAP"):
        config_from_args(bad)


def test_aare_of_a_refused_sap_is_a_rejection() -> None:
    emulated = meter()
    client = ClientConnection(ClientSettings(client_sap=99))
    frame = WrapperFrame(99, 1, client.associate()).to_bytes()
    (answer,) = emulated.receive_data(frame)
    aare = AARE.from_bytes(datagram_apdu(answer))
    assert not aare.accepted
