"""The client core against the server core, in memory: every service and auth mode.

No sockets: a tiny pump moves APDUs between :class:`ClientConnection` and
:class:`ServerConnection` until the client has an event.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

import pytest

from dlmsd.cosem import objects as ic
from dlmsd.cosem.model import ObjectModel, gas_meter_model
from dlmsd.cosem.profile import parse_buffer, parse_capture_objects
from dlmsd.protocol.apdus.common import (
    AttributeWithSelection,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
)
from dlmsd.protocol.apdus.errors import ActionResult, DataAccessResult, ExceptionResponse
from dlmsd.protocol.apdus.selective import (
    CaptureObjectDefinition,
    EntryDescriptor,
    RangeDescriptor,
)
from dlmsd.protocol.association import (
    Authentication,
    Ciphering,
    ClientSettings,
    ServerSettings,
    next_invocation_counter,
)
from dlmsd.protocol.axdr import Data, DataType
from dlmsd.protocol.client import (
    ActionOutcome,
    Associated,
    AssociationRefused,
    ClientConnection,
    ClientEvent,
    ClientState,
    ExceptionReceived,
    GetListResult,
    GetResult,
    ProtocolFailure,
    Released,
    SetResult,
)
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.gbt import GeneralBlockTransfer
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.server import ServerConnection, ServerState

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000BC614E")
SERVER_TITLE = bytes.fromhex("4D4D4D0000000001")
PASSWORD = b"12345678"
HOURS = 24 * 40  # enough rows for block transfer, quick to build
START = dt.datetime(2023, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))

VOLUME = CosemAttributeDescriptor(3, ic.GAS_VOLUME, 2)
CLOCK_TIME = CosemAttributeDescriptor(8, ic.CLOCK, 2)
PROFILE = ic.ProfileGeneric(ic.GAS_HOURLY_PROFILE)
VALVE = ic.DisconnectControl(ic.GAS_VALVE)


def counter_source() -> Callable[[int], bytes]:
    """Deterministic 'random' bytes for challenges."""
    counter = itertools.count(1)
    return lambda n: bytes((next(counter) + i) & 0xFF for i in range(n))


class Link:
    """Moves APDUs between a client and a server core, optionally tampering."""

    def __init__(self, client: ClientConnection, server: ServerConnection) -> None:
        self.client = client
        self.server = server
        self.to_client: list[bytes] = []
        self.apdus_to_server = 0
        self.tamper: Callable[[bytes], bytes | None] | None = None

    def _deliver(self, apdus: list[bytes]) -> None:
        for apdu in apdus:
            self.apdus_to_server += 1
            self.to_client.extend(self.server.receive_apdu(apdu))

    def run(self, request: bytes) -> ClientEvent:
        self._deliver([request])
        for _ in range(100_000):
            event = self.client.next_event()
            if event is not NEED_DATA:
                return event
            if not self.to_client:
                # silence: the driver's timer fires
                self.client.on_timeout()
            else:
                apdu = self.to_client.pop(0)
                if self.tamper is not None:
                    tampered = self.tamper(apdu)
                    if tampered is None:
                        continue
                    apdu = tampered
                self.client.receive_apdu(apdu)
            self._deliver(self.client.data_to_send())
        raise AssertionError("no event")


def make(
    client_settings: ClientSettings,
    server_settings: ServerSettings | None = None,
    model: ObjectModel | None = None,
) -> Link:
    model = model or gas_meter_model(start=START, hours=HOURS)
    server_settings = server_settings or ServerSettings(
        server_system_title=SERVER_TITLE,
        password=PASSWORD,
        cipher=Suite0Cipher(EK, AK),
    )
    client = ClientConnection(client_settings, counter_source())
    server = ServerConnection(model, server_settings, counter_source())
    return Link(client, server)


def associate(link: Link) -> Associated:
    event = link.run(link.client.associate())
    assert isinstance(event, Associated), event
    assert link.client.state == ClientState.ASSOCIATED
    return event


def hls_settings(**kwargs: object) -> ClientSettings:
    base: dict[str, object] = {
        "authentication": Authentication.HLS_GMAC,
        "cipher": Suite0Cipher(EK, AK),
        "client_system_title": CLIENT_TITLE,
    }
    base.update(kwargs)
    return ClientSettings(**base)  # type: ignore[arg-type]


AUTH_MODES = {
    "none": ClientSettings(),
    "lls": ClientSettings(authentication=Authentication.LLS, password=PASSWORD),
    "hls": hls_settings(),
    "hls-global": hls_settings(ciphering=Ciphering.GLOBAL),
    "hls-dedicated": hls_settings(ciphering=Ciphering.DEDICATED),
    "lls-global": ClientSettings(
        authentication=Authentication.LLS,
        password=PASSWORD,
        ciphering=Ciphering.GLOBAL,
        cipher=Suite0Cipher(EK, AK),
        client_system_title=CLIENT_TITLE,
    ),
    "none-gbt": ClientSettings(use_gbt=True, gbt_window=4),
    "hls-global-gbt": hls_settings(ciphering=Ciphering.GLOBAL, use_gbt=True, gbt_window=3),
}


# --- association -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(AUTH_MODES))
def test_every_mode_associates_reads_and_releases(mode: str) -> None:
    link = make(AUTH_MODES[mode])
    event = associate(link)
    level = link.server.level
    expected = {"none": 0, "lls": 1}.get(mode.split("-")[0], 5)
    assert int(level) == expected
    assert event.conformance & link.server.conformance == event.conformance
    result = link.run(link.client.get(VOLUME))
    assert isinstance(result, GetResult)
    assert isinstance(result.result, Data) and result.result.type == DataType.DOUBLE_LONG_UNSIGNED
    released = link.run(link.client.release())
    assert isinstance(released, Released)
    assert link.client.state == ClientState.RELEASED
    assert link.server.state == ServerState.RELEASED


def test_hls_uses_the_meter_system_title_and_verifies_ctos() -> None:
    link = make(hls_settings())
    event = associate(link)
    assert event.server_system_title == SERVER_TITLE
    assert event.aare.mechanism is not None


def test_wrong_password_is_refused_clearly() -> None:
    link = make(ClientSettings(authentication=Authentication.LLS, password=b"wrong"))
    event = link.run(link.client.associate())
    assert isinstance(event, AssociationRefused)
    assert "wrong password" in event.reason
    assert link.client.state == ClientState.FAILED


@pytest.mark.parametrize("ciphering", [Ciphering.NONE, Ciphering.GLOBAL])
def test_hls_with_wrong_keys_is_refused(ciphering: Ciphering) -> None:
    wrong = Suite0Cipher(EK, bytes(16)) if ciphering == Ciphering.NONE else Suite0Cipher(AK, EK)
    link = make(hls_settings(cipher=wrong, ciphering=ciphering))
    event = link.run(link.client.associate())
    assert isinstance(event, AssociationRefused)
    assert "wrong keys" in event.reason
    assert link.client.state == ClientState.FAILED


def test_forged_hls_reply_from_the_meter_is_refused() -> None:
    """A meter that does not hold the keys cannot produce f(CtoS)."""
    impostor = ServerSettings(server_system_title=SERVER_TITLE, cipher=Suite0Cipher(EK, bytes(16)))
    link = make(hls_settings(), impostor)
    # the impostor cannot verify our f(StoC) either; make it accept anything
    original = link.server._receive_hls

    def lenient(apdu: bytes) -> list[bytes]:
        link.server._stoc = b""
        return original(apdu)

    link.server._receive_hls = lenient  # type: ignore[method-assign]
    event = link.run(link.client.associate())
    assert isinstance(event, AssociationRefused)
    assert "wrong keys" in event.reason


def test_authentication_required_by_the_meter() -> None:
    settings = ServerSettings(
        server_system_title=SERVER_TITLE,
        authentication=Authentication.HLS_GMAC,
        cipher=Suite0Cipher(EK, AK),
    )
    link = make(ClientSettings(), settings)
    event = link.run(link.client.associate())
    assert isinstance(event, AssociationRefused)
    assert "requires authentication" in event.reason


def test_ciphering_required_by_the_meter() -> None:
    settings = ServerSettings(
        server_system_title=SERVER_TITLE, cipher=Suite0Cipher(EK, AK), ciphering_required=True
    )
    link = make(hls_settings(), settings)
    event = link.run(link.client.associate())
    assert isinstance(event, AssociationRefused)
    assert "application context" in event.reason


def test_ciphered_association_with_wrong_keys_names_the_keys() -> None:
    link = make(
        ClientSettings(
            ciphering=Ciphering.GLOBAL,
            cipher=Suite0Cipher(AK, EK),
            client_system_title=CLIENT_TITLE,
        )
    )
    event = link.run(link.client.associate())
    assert isinstance(event, AssociationRefused)
    assert "wrong keys" in event.reason


# --- invocation counters ---------------------------------------------------------------------
def test_frame_counter_read_publicly_then_ciphered_session() -> None:
    model = gas_meter_model(start=START, hours=24)
    first = make(hls_settings(ciphering=Ciphering.GLOBAL, invocation_counter=100), model=model)
    associate(first)
    first.run(first.client.get(VOLUME))
    used = first.client.invocation_counter - 1
    # a public client reads the frame counter object
    public = make(ClientSettings(), model=model)
    associate(public)
    counter = public.run(public.client.get(CosemAttributeDescriptor(1, ic.INVOCATION_COUNTER, 2)))
    assert isinstance(counter, GetResult) and isinstance(counter.result, Data)
    assert counter.result.value == used
    assert isinstance(counter.result.value, int)
    start = next_invocation_counter(counter.result.value)
    second = make(hls_settings(ciphering=Ciphering.GLOBAL, invocation_counter=start), model=model)
    associate(second)
    assert isinstance(second.run(second.client.get(VOLUME)), GetResult)


def test_replayed_invocation_counter_is_refused_by_the_meter() -> None:
    model = gas_meter_model(start=START, hours=24)
    first = make(hls_settings(ciphering=Ciphering.GLOBAL, invocation_counter=50), model=model)
    associate(first)
    second = make(hls_settings(ciphering=Ciphering.GLOBAL, invocation_counter=10), model=model)
    event = second.run(second.client.associate())
    assert isinstance(event, AssociationRefused)
    assert "wrong keys" in event.reason or "decipher" in event.reason


def test_replayed_response_is_refused_by_the_client() -> None:
    link = make(hls_settings(ciphering=Ciphering.GLOBAL))
    associate(link)
    captured: list[bytes] = []

    def record(apdu: bytes) -> bytes:
        captured.append(apdu)
        return apdu

    link.tamper = record
    link.run(link.client.get(VOLUME))
    link.tamper = lambda apdu: captured[0]  # the meter's earlier answer again
    event = link.run(link.client.get(VOLUME))
    assert isinstance(event, ProtocolFailure)
    assert "replay" in event.reason


# --- GET ---------------------------------------------------------------------------------
def profile_columns(link: Link) -> tuple[CaptureObjectDefinition, ...]:
    event = link.run(link.client.get(PROFILE.attribute(3)))
    assert isinstance(event, GetResult) and isinstance(event.result, Data)
    return parse_capture_objects(event.result)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(ClientSettings(max_pdu_size=256), id="block-transfer"),
        pytest.param(hls_settings(ciphering=Ciphering.GLOBAL, max_pdu_size=300), id="blocks-glo"),
        pytest.param(ClientSettings(max_pdu_size=256, use_gbt=True), id="gbt-window-1"),
        pytest.param(ClientSettings(max_pdu_size=256, use_gbt=True, gbt_window=8), id="gbt-8"),
        pytest.param(
            hls_settings(ciphering=Ciphering.DEDICATED, max_pdu_size=200, use_gbt=True),
            id="gbt-ded",
        ),
    ],
)
def test_long_profile_read_is_reassembled(settings: ClientSettings) -> None:
    link = make(settings)
    associate(link)
    columns = profile_columns(link)
    event = link.run(link.client.get(PROFILE.attribute(2)))
    assert isinstance(event, GetResult) and isinstance(event.result, Data)
    table = parse_buffer(event.result, columns)
    assert len(table.rows) == HOURS
    assert link.apdus_to_server > 10  # it really went in blocks


def test_range_descriptor_selects_rows_and_columns() -> None:
    link = make(ClientSettings())
    associate(link)
    columns = profile_columns(link)
    clock_column = columns[0]
    start = START + dt.timedelta(days=2)
    descriptor = RangeDescriptor(
        clock_column,
        Data.octet_string(CosemDateTime.from_datetime(start, clock_status=0).raw),
        Data.octet_string(
            CosemDateTime.from_datetime(start + dt.timedelta(hours=5), clock_status=0).raw
        ),
        (columns[0], columns[2]),
    )
    event = link.run(link.client.get(PROFILE.attribute(2), descriptor.to_selective_access()))
    assert isinstance(event, GetResult) and isinstance(event.result, Data)
    table = parse_buffer(event.result, (columns[0], columns[2]))
    assert len(table.rows) == 6
    first = table.rows[0][0]
    assert isinstance(first, CosemDateTime) and first.to_datetime() == start


def test_entry_descriptor_selects_rows_and_columns() -> None:
    link = make(ClientSettings())
    associate(link)
    columns = profile_columns(link)
    descriptor = EntryDescriptor(from_entry=3, to_entry=7, from_selected_value=2)
    event = link.run(link.client.get(PROFILE.attribute(2), descriptor.to_selective_access()))
    assert isinstance(event, GetResult) and isinstance(event.result, Data)
    table = parse_buffer(event.result, columns[1:])
    assert len(table.rows) == 5 and len(table.columns) == 3


def test_get_with_list_and_errors_as_results() -> None:
    link = make(ClientSettings())
    associate(link)
    items = [
        AttributeWithSelection(VOLUME),
        AttributeWithSelection(CosemAttributeDescriptor(3, Obis(9, 9, 9, 9, 9, 9), 2)),
        AttributeWithSelection(CosemAttributeDescriptor(64, ic.SECURITY_SETUP, 5)),
    ]
    event = link.run(link.client.get_with_list(items))
    assert isinstance(event, GetListResult)
    assert isinstance(event.results[0], Data)
    assert event.results[1] == DataAccessResult.OBJECT_UNDEFINED
    assert event.results[2] == DataAccessResult.READ_WRITE_DENIED  # needs LLS


def test_get_with_list_in_blocks() -> None:
    link = make(ClientSettings(max_pdu_size=128))
    associate(link)
    items = [AttributeWithSelection(CosemAttributeDescriptor(15, ic.CURRENT_ASSOCIATION, 2))] * 2
    event = link.run(link.client.get_with_list(items))
    assert isinstance(event, GetListResult) and len(event.results) == 2
    entries = ic.decode_object_list(event.results[0])  # type: ignore[arg-type]
    assert any(e.logical_name == ic.GAS_HOURLY_PROFILE for e in entries)


def test_forced_block_transfer_and_object_list() -> None:
    settings = ServerSettings(server_system_title=SERVER_TITLE, force_block_transfer=True)
    link = make(ClientSettings(), settings)
    associate(link)
    event = link.run(link.client.get(CosemAttributeDescriptor(15, ic.CURRENT_ASSOCIATION, 2)))
    assert isinstance(event, GetResult) and isinstance(event.result, Data)
    entries = ic.decode_object_list(event.result)
    classes = {e.class_id for e in entries}
    assert classes >= {1, 3, 4, 7, 8, 15, 40, 70}
    assert 64 not in classes  # the public client's list leaves out the security setup


# --- SET / ACTION --------------------------------------------------------------------------
def test_set_needs_rights_and_then_succeeds() -> None:
    value = Data.long_unsigned(120)
    attribute = ic.PushSetup(ic.PUSH_SETUP).attribute(ic.PushSetupAttribute.REPETITION_DELAY)
    public = make(ClientSettings())
    associate(public)
    event = public.run(public.client.set(attribute, value))
    assert isinstance(event, SetResult) and event.result == DataAccessResult.READ_WRITE_DENIED
    link = make(hls_settings(ciphering=Ciphering.GLOBAL))
    associate(link)
    event = link.run(link.client.set(attribute, value))
    assert isinstance(event, SetResult) and event.result == DataAccessResult.SUCCESS
    check = link.run(link.client.get(attribute))
    assert isinstance(check, GetResult) and check.result == value


def test_set_with_datablocks() -> None:
    link = make(hls_settings(max_pdu_size=64))
    link.server.settings = ServerSettings(
        server_system_title=SERVER_TITLE, cipher=Suite0Cipher(EK, AK), max_pdu_size=64
    )
    associate(link)
    columns = [CaptureObjectDefinition(3, ic.GAS_VOLUME, 2)] * 12
    value = Data.array(*(c.to_data() for c in columns))
    attribute = ic.PushSetup(ic.PUSH_SETUP).attribute(ic.PushSetupAttribute.PUSH_OBJECT_LIST)
    before = link.apdus_to_server
    event = link.run(link.client.set(attribute, value))
    assert isinstance(event, SetResult) and event.result == DataAccessResult.SUCCESS
    assert link.apdus_to_server - before > 3
    check = link.run(link.client.get(attribute))
    assert isinstance(check, GetResult) and check.result == value


def test_set_type_mismatch_is_a_result() -> None:
    link = make(hls_settings())
    associate(link)
    attribute = ic.PushSetup(ic.PUSH_SETUP).attribute(ic.PushSetupAttribute.REPETITION_DELAY)
    event = link.run(link.client.set(attribute, Data.visible_string("soon")))
    assert isinstance(event, SetResult) and event.result == DataAccessResult.TYPE_UNMATCHED


def test_valve_action_and_denied_action() -> None:
    public = make(ClientSettings())
    associate(public)
    event = public.run(public.client.action(VALVE.method(1), Data.integer(0)))
    assert isinstance(event, ActionOutcome) and event.result == ActionResult.READ_WRITE_DENIED
    link = make(hls_settings(ciphering=Ciphering.DEDICATED))
    associate(link)
    event = link.run(link.client.action(VALVE.method(1), Data.integer(0)))
    assert isinstance(event, ActionOutcome) and event.result == ActionResult.SUCCESS
    state = link.run(link.client.get(VALVE.attribute(2)))
    assert isinstance(state, GetResult) and state.result == Data.boolean(False)


def test_action_with_pblocks() -> None:
    model = gas_meter_model(start=START, hours=4)
    echoed = []

    def echo(parameters: Data | None) -> tuple[ActionResult, Data | None]:
        echoed.append(parameters)
        return ActionResult.SUCCESS, parameters

    model.objects[ic.GAS_VALVE].add_method(9, echo, Authentication.NONE)
    link = make(ClientSettings(max_pdu_size=64), model=model)
    link.server.settings = ServerSettings(server_system_title=SERVER_TITLE, max_pdu_size=64)
    associate(link)
    big = Data.octet_string(bytes(range(256)) * 2)
    before = link.apdus_to_server
    event = link.run(link.client.action(CosemMethodDescriptor(70, ic.GAS_VALVE, 9), big))
    assert isinstance(event, ActionOutcome) and event.result == ActionResult.SUCCESS
    assert event.return_data == big and echoed == [big]
    assert link.apdus_to_server - before > 10  # pblocks out and back


def test_push_method_reaches_the_model() -> None:
    link = make(ClientSettings(authentication=Authentication.LLS, password=PASSWORD))
    associate(link)
    event = link.run(link.client.action(ic.PushSetup(ic.PUSH_SETUP).method(1), Data.integer(0)))
    assert isinstance(event, ActionOutcome) and event.result == ActionResult.SUCCESS
    assert link.server.model.push_requests == [ic.PUSH_SETUP]


# --- faults ----------------------------------------------------------------------------------
def test_gbt_recovers_a_lost_block() -> None:
    link = make(ClientSettings(max_pdu_size=256, use_gbt=True, gbt_window=4))
    associate(link)
    link.server.drop_gbt_blocks = {2, 4, 9}
    event = link.run(link.client.get(PROFILE.attribute(2)))
    assert isinstance(event, GetResult) and isinstance(event.result, Data)
    assert isinstance(event.result.value, tuple) and len(event.result.value) == HOURS


def test_gbt_lost_block_with_window_one_recovers_on_timeout() -> None:
    link = make(ClientSettings(max_pdu_size=256, use_gbt=True))
    associate(link)
    link.server.drop_gbt_blocks = {3}
    event = link.run(link.client.get(PROFILE.attribute(2)))
    assert isinstance(event, GetResult)


def test_gbt_block_missing_for_good_fails_clearly() -> None:
    link = make(ClientSettings(max_pdu_size=256, use_gbt=True, gbt_window=2))
    associate(link)

    def lose_block_5(apdu: bytes) -> bytes | None:
        if (
            apdu[0] == GeneralBlockTransfer.TAG
            and GeneralBlockTransfer.from_bytes(apdu).block_number == 5
        ):
            return None
        return apdu

    link.tamper = lose_block_5
    event = link.run(link.client.get(PROFILE.attribute(2)))
    assert isinstance(event, ProtocolFailure)
    assert "5" in event.reason and "missing" in event.reason
    assert link.client.state == ClientState.FAILED


def test_block_out_of_sequence_fails() -> None:
    link = make(ClientSettings(max_pdu_size=256))
    associate(link)
    seen = []

    def duplicate_first(apdu: bytes) -> bytes:
        seen.append(apdu)
        return seen[0]

    link.tamper = duplicate_first
    event = link.run(link.client.get(PROFILE.attribute(2)))
    assert isinstance(event, ProtocolFailure) and "out of sequence" in event.reason


@pytest.mark.parametrize("cut", [1, 3, 7, 12])
def test_truncated_response_is_a_protocol_failure(cut: int) -> None:
    link = make(hls_settings(ciphering=Ciphering.GLOBAL))
    associate(link)
    link.tamper = lambda apdu: apdu[:cut]
    event = link.run(link.client.get(VOLUME))
    assert isinstance(event, ProtocolFailure)
    assert link.client.state == ClientState.FAILED
    # a failed connection ignores further input and refuses requests
    link.client.receive_apdu(b"\xc4\x01\xc1\x00\x00")
    assert link.client.next_event() is NEED_DATA


def test_meter_silence_is_a_timeout_failure() -> None:
    link = make(ClientSettings())
    associate(link)
    link.tamper = lambda apdu: None
    event = link.run(link.client.get(VOLUME))
    assert isinstance(event, ProtocolFailure) and "timeout" in event.reason


def test_exception_response_is_an_event_not_a_crash() -> None:
    link = make(ClientSettings())
    associate(link)
    link.tamper = lambda apdu: ExceptionResponse.from_bytes(bytes.fromhex("d80102")).to_bytes()
    event = link.run(link.client.get(VOLUME))
    assert isinstance(event, ExceptionReceived)
    assert link.client.state == ClientState.ASSOCIATED


def test_server_answers_garbage_with_exceptions() -> None:
    link = make(ClientSettings())
    associate(link)
    for garbage in (b"\xc0", b"\xc0\x01", b"\xff\x00", b"\xe0\x00", b"\x60\x03\xa1\x01"):
        answers = link.server.receive_apdu(garbage)
        assert all(a[0] == ExceptionResponse.TAG for a in answers)
    # and still serves
    assert isinstance(link.run(link.client.get(VOLUME)), GetResult)
