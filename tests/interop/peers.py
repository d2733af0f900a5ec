"""Blocking sessions of the peer clients (Gurux, dlms-cosem) over loopback TCP.

Each session reads what the interop tests compare: the clock, a register's value
and scaler/unit, a profile by range and by entries, the object list, and a
release. Values come back in plain Python (datetimes, ints, tuples) so a test
compares them with what ``dlmsd get`` / ``dlmsd profile`` print.

Only tests import this (and the peers); ``dlmsd/`` never does.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any, Literal

from dlms_cosem import cosem as dc_cosem
from dlms_cosem import dlms_data as dc_data
from dlms_cosem import enumerations as dc_enum
from dlms_cosem.client import DlmsClient
from dlms_cosem.cosem.capture_object import CaptureObject as DcCaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor as DcRangeDescriptor
from dlms_cosem.io import BlockingTcpIO, HdlcTransport, TcpTransport
from dlms_cosem.security import (
    HighLevelSecurityGmacAuthentication,
    LowLevelSecurityAuthentication,
    NoSecurityAuthentication,
)
from dlms_cosem.utils import parse_as_dlms_data
from gurux_dlms import GXByteBuffer, GXDateTime, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, ObjectType, Security
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureClient

Auth = Literal["none", "lls", "hls"]
Framing = Literal["wrapper", "hdlc"]

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
PASSWORD = b"interop1"
GURUX_TITLE = bytes.fromhex("4758580000000001")  # "GXX" + 1: Gurux's client
COSEM_TITLE = bytes.fromhex("4443530000000001")  # "DCS" + 1: dlms-cosem's client
PHYSICAL_ADDRESS = 17  # the emulator's default HDLC lower address
#: The system titles the peers push with (tests/interop/test_peer_pushes.py)
GURUX_PUSH_TITLE = bytes.fromhex("4758580000000042")
COSEM_PUSH_TITLE = bytes.fromhex("4443530000000042")
#: The push object list of Gurux's pushes: its notify API sends bare values
GURUX_PUSH_OBJECTS = ("0-0:25.9.0*255:2", "0-0:1.0.0*255:2", "1-0:1.8.0*255:2")
FRAME_COUNTER = (0, 0, 43, 1, 0, 255)


def client_sap(auth: Auth) -> int:
    """The public client (16) reads without authentication; the management client (1)
    authenticates."""
    return 16 if auth == "none" else 1


def cosem_datetime(raw: bytes) -> dt.datetime:
    """A 12-byte COSEM date-time as an aware datetime (deviation: minutes local -> UTC)."""
    year = int.from_bytes(raw[0:2], "big")
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    offset = dt.timezone(-dt.timedelta(minutes=deviation))
    return dt.datetime(year, raw[2], raw[3], raw[5], raw[6], raw[7], tzinfo=offset)


# --- Gurux --------------------------------------------------------------------------------


class GuruxSession:
    """Gurux's GXDLMSSecureClient driven over a socket, as Gurux's own sample reader does."""

    def __init__(
        self, port: int, framing: Framing, auth: Auth, invocation_counter: int = 1
    ) -> None:
        interface = InterfaceType.HDLC if framing == "hdlc" else InterfaceType.WRAPPER
        server = (
            GXDLMSSecureClient.getServerAddress(1, PHYSICAL_ADDRESS) if framing == "hdlc" else 1
        )
        mechanism = {
            "none": Authentication.NONE,
            "lls": Authentication.LOW,
            "hls": Authentication.HIGH_GMAC,
        }[auth]
        password = PASSWORD if auth == "lls" else None
        self.client = GXDLMSSecureClient(
            True, client_sap(auth), server, mechanism, password, interface
        )
        if auth == "hls":
            ciphering = self.client.ciphering
            ciphering.security = Security.AUTHENTICATION_ENCRYPTION
            ciphering.systemTitle = GURUX_TITLE
            ciphering.blockCipherKey = EK
            ciphering.authenticationKey = AK
            ciphering.invocationCounter = invocation_counter
        self.framing = framing
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sent: list[bytes] = []

    # -- transport -------------------------------------------------------------------------
    def _packet(self, data: bytes | bytearray | None, reply: GXReplyData) -> None:
        if data:
            self.sent.append(bytes(data))
            self.sock.sendall(bytes(data))
        buffer = GXByteBuffer()
        notify = GXReplyData()
        while not self.client.getData(buffer, reply, notify):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the meter closed the connection")
            buffer.set(chunk)
        if reply.error:
            raise RuntimeError(f"Gurux: error {reply.error}")

    def _block(self, data: Any, reply: GXReplyData) -> None:
        if isinstance(data, list):
            for item in data:
                reply.clear()
                self._block(item, reply)
            return
        self._packet(data, reply)
        while reply.isMoreData():
            follow = None if reply.isStreaming() else self.client.receiverReady(reply)
            self._packet(follow, reply)

    # -- association -----------------------------------------------------------------------
    def open(self) -> GuruxSession:
        reply = GXReplyData()
        if self.framing == "hdlc":
            self._packet(self.client.snrmRequest(), reply)
            self.client.parseUAResponse(reply.data)
            reply.clear()
        self._block(self.client.aarqRequest(), reply)
        self.client.parseAareResponse(reply.data)
        reply.clear()
        if self.client.getIsAuthenticationRequired():
            for request in self.client.getApplicationAssociationRequest():
                self._packet(request, reply)
            self.client.parseApplicationAssociationResponse(reply.data)
        return self

    def release(self) -> None:
        reply = GXReplyData()
        try:
            self._block(self.client.releaseRequest(), reply)
            if self.framing == "hdlc":
                reply.clear()
                self._packet(self.client.disconnectRequest(), reply)
        finally:
            self.sock.close()

    # -- reads -----------------------------------------------------------------------------
    def read(self, obj: Any, attribute: int) -> Any:
        reply = GXReplyData()
        self._block(self.client.read(obj, attribute), reply)
        return self.client.updateValue(obj, attribute, reply.value)

    def clock(self) -> dt.datetime:
        clock = GXDLMSClock("0.0.1.0.0.255")
        value = self.read(clock, 2)
        assert isinstance(value, GXDateTime), value
        return _gx_datetime(value)

    def frame_counter(self) -> int:
        value = self.read(GXDLMSData(".".join(map(str, FRAME_COUNTER))), 2)
        return int(value)

    def register(self, obis: str) -> tuple[int, int, int]:
        """(raw value, scaler exponent, unit code)."""
        register = GXDLMSRegister(obis)
        self.read(register, 3)
        self.read(register, 2)  # Gurux applies the scaler once it knows it
        unit = int(register.unit)
        # Gurux keeps the scaler as a factor (10 ** exponent); compare raw values
        exponent = round(_log10(register.scaler))
        raw = round(register.value / register.scaler)
        return raw, exponent, unit

    def _profile(self, obis: str) -> GXDLMSProfileGeneric:
        profile = GXDLMSProfileGeneric(obis)
        self.read(profile, 3)  # capture objects, so the rows can be read
        return profile

    def profile_by_entries(self, obis: str, first: int, count: int) -> list[list[Any]]:
        profile = self._profile(obis)
        reply = GXReplyData()
        self._block(self.client.readRowsByEntry(profile, first, count), reply)
        self.client.updateValue(profile, 2, reply.value)
        return [_gx_row(row) for row in profile.buffer]

    def profile_by_range(self, obis: str, start: dt.datetime, end: dt.datetime) -> list[list[Any]]:
        profile = self._profile(obis)
        reply = GXReplyData()
        self._block(self.client.readRowsByRange(profile, start, end), reply)
        self.client.updateValue(profile, 2, reply.value)
        return [_gx_row(row) for row in profile.buffer]

    def object_list(self) -> list[tuple[int, str]]:
        reply = GXReplyData()
        self._block(self.client.getObjectsRequest(), reply)
        objects = self.client.parseObjects(reply.data, False, False)
        return [(int(obj.objectType), obj.logicalName) for obj in objects]


def _log10(value: float) -> float:
    import math

    return math.log10(value)


def _gx_datetime(value: GXDateTime) -> dt.datetime:
    moment = value.value
    assert isinstance(moment, dt.datetime)
    return moment


def _gx_row(row: list[Any]) -> list[Any]:
    return [_gx_datetime(cell) if isinstance(cell, GXDateTime) else cell for cell in row]


def gurux_object_type(class_id: int) -> Any:
    return ObjectType(class_id)


# --- dlms-cosem ---------------------------------------------------------------------------


class CosemSession:
    """dlms-cosem's DlmsClient over its own BlockingTcpIO (wrapper or HDLC)."""

    def __init__(
        self, port: int, framing: Framing, auth: Auth, invocation_counter: int = 1
    ) -> None:
        io = BlockingTcpIO("127.0.0.1", port, timeout=10)
        sap = client_sap(auth)
        transport: Any
        if framing == "hdlc":
            transport = HdlcTransport(
                client_logical_address=sap,
                server_logical_address=1,
                server_physical_address=PHYSICAL_ADDRESS,
                io=io,
            )
        else:
            transport = TcpTransport(client_logical_address=sap, server_logical_address=1, io=io)
        authentication: Any = {
            "none": NoSecurityAuthentication(),
            "lls": LowLevelSecurityAuthentication(secret=PASSWORD),
            "hls": HighLevelSecurityGmacAuthentication(challenge_length=16),
        }[auth]
        keys: dict[str, Any] = {}
        if auth == "hls":
            keys = {
                "encryption_key": EK,
                "authentication_key": AK,
                "client_system_title": COSEM_TITLE,
                "client_initial_invocation_counter": invocation_counter,
            }
        self.client = DlmsClient(transport=transport, authentication=authentication, **keys)

    def open(self) -> CosemSession:
        self.client.connect()
        self.client.associate()
        return self

    def release(self) -> None:
        try:
            self.client.release_association()
        finally:
            self.client.disconnect()

    def get(
        self, interface: int, obis: tuple[int, ...], attribute: int, access: Any = None
    ) -> Any:
        target = dc_cosem.CosemAttribute(
            interface=dc_enum.CosemInterface(interface),
            instance=dc_cosem.Obis(*obis),
            attribute=attribute,
        )
        raw = self.client.get(target, access_descriptor=access)
        return parse_as_dlms_data(raw)

    def clock(self) -> dt.datetime:
        raw = self.get(8, (0, 0, 1, 0, 0, 255), 2)
        return cosem_datetime(bytes(raw))

    def frame_counter(self) -> int:
        return int(self.get(1, FRAME_COUNTER, 2))

    def register(self, obis: tuple[int, ...]) -> tuple[int, int, int]:
        value = self.get(3, obis, 2)
        scaler, unit = self.get(3, obis, 3)
        return int(value), int(scaler), int(unit)

    def profile_by_range(
        self, obis: tuple[int, ...], start: dt.datetime, end: dt.datetime
    ) -> list[list[Any]]:
        clock = DcCaptureObject(
            cosem_attribute=dc_cosem.CosemAttribute(
                interface=dc_enum.CosemInterface.CLOCK,
                instance=dc_cosem.Obis(0, 0, 1, 0, 0, 255),
                attribute=2,
            ),
            data_index=0,
        )
        access = DcRangeDescriptor(restricting_object=clock, from_value=start, to_value=end)
        return self._rows(self.get(7, obis, 2, access))

    def profile_by_entries(self, obis: tuple[int, ...], first: int, last: int) -> list[list[Any]]:
        """dlms-cosem has no entry descriptor of its own: selector 2 built from its data
        types (its GET carries any selective access that serialises to bytes)."""
        access = _EntryDescriptor(first, last)
        return self._rows(self.get(7, obis, 2, access))

    @staticmethod
    def _rows(rows: Any) -> list[list[Any]]:
        out = []
        for row in rows:
            out.append(
                [
                    cosem_datetime(bytes(cell))
                    if isinstance(cell, bytes | bytearray) and len(cell) == 12
                    else cell
                    for cell in row
                ]
            )
        return out

    def object_list(self) -> list[tuple[int, str]]:
        entries = self.get(15, (0, 0, 40, 0, 0, 255), 2)
        return [(int(entry[0]), ".".join(str(b) for b in bytes(entry[2]))) for entry in entries]


class _EntryDescriptor:
    """Selective access by entry (Blue Book 4.3.6, selector 2), in dlms-cosem's shape: its
    GetRequestNormal calls ``to_bytes()`` on whatever access descriptor it is given."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last

    def to_bytes(self) -> bytes:
        body = dc_data.DataStructure(
            [
                dc_data.DoubleLongUnsignedData(self.first),
                dc_data.DoubleLongUnsignedData(self.last),
                dc_data.UnsignedLongData(1),
                dc_data.UnsignedLongData(0),
            ]
        )
        return b"\x02" + body.to_bytes()
