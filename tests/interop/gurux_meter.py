"""A minimal meter built on Gurux's server classes, served on loopback TCP in a thread.

GXDLMSSecureServer does the protocol; this class only answers its callbacks (which
objects exist, who may read them) and moves bytes between a socket and
``handleRequest``. Objects: Association LN (Gurux's own), a clock, an energy
register (scaler 0, Wh) and an hourly profile {clock, energy} of a few rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from typing import Any

from gurux_dlms import GXDateTime, GXServerReply
from gurux_dlms.enums import (
    AccessMode,
    Authentication,
    InterfaceType,
    MethodAccessMode,
    Security,
    SourceDiagnostic,
)
from gurux_dlms.GXDLMSConnectionEventArgs import GXDLMSConnectionEventArgs
from gurux_dlms.objects import (
    GXDLMSAssociationLogicalName,
    GXDLMSCaptureObject,
    GXDLMSClock,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureServer
from gurux_dlms.ValueEventArgs import ValueEventArgs

CET = dt.timezone(dt.timedelta(hours=1))
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=CET)
ENERGY = 4_242_000
ROWS = [
    (dt.datetime(2024, 5, 1, hour, 0, tzinfo=CET), 4_240_000 + 500 * hour) for hour in range(6)
]
PASSWORD = b"gurux123"
TITLE = bytes.fromhex("4758534552564552")  # "GXSERVER"


class GuruxMeter(GXDLMSSecureServer):  # type: ignore[misc]
    """Gurux's server with the callbacks a meter needs and nothing else."""

    def __init__(self, interface: int, authentication: int = Authentication.NONE) -> None:
        association = GXDLMSAssociationLogicalName()
        association.authenticationMechanismName.mechanismId = authentication
        if authentication == Authentication.LOW:
            association.secret = PASSWORD
        super().__init__(association, interface)
        if authentication == Authentication.HIGH_GMAC:
            ciphering = self.getCiphering()
            ciphering.security = Security.AUTHENTICATION_ENCRYPTION
            ciphering.systemTitle = TITLE
        clock = GXDLMSClock("0.0.1.0.0.255")
        clock.time = GXDateTime(NOW)
        energy = GXDLMSRegister("1.0.1.8.0.255")
        energy.value = ENERGY
        energy.scaler = 1
        energy.unit = 30
        profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
        profile.captureObjects.append((clock, GXDLMSCaptureObject(2, 0)))
        profile.captureObjects.append((energy, GXDLMSCaptureObject(2, 0)))
        profile.capturePeriod = 3600
        profile.profileEntries = len(ROWS)
        profile.buffer = [[GXDateTime(moment), value] for moment, value in ROWS]
        for obj in (association, clock, energy, profile):
            self.items.append(obj)
        # Gurux 1.0.203's initialize() would append the collection itself to an empty
        # object list (TypeError): fill it first
        for obj in self.items:
            association.objectList.append(obj)
        self.initialize()

    # -- what Gurux 1.0.203's own command handler calls but its server lacks -------------
    def notifyRead(self, *_args: Any) -> None:
        pass

    def notifyConnected(self, connectionInfo: Any) -> None:
        self.onConnected(connectionInfo)

    def getTransaction(self) -> Any:
        return self.transaction

    def setTransaction(self, value: Any) -> None:
        self.transaction = value

    # -- callbacks ---------------------------------------------------------------------
    def isTarget(self, serverAddress: int, clientAddress: int) -> bool:
        return True

    def onValidateAuthentication(self, authentication: int, password: Any) -> int:
        if authentication == Authentication.LOW and bytes(password or b"") != PASSWORD:
            return SourceDiagnostic.AUTHENTICATION_FAILURE
        return SourceDiagnostic.NONE

    def onGetAttributeAccess(self, arg: Any) -> int:
        return AccessMode.READ

    def onGetMethodAccess(self, arg: Any) -> int:
        return MethodAccessMode.ACCESS

    def onFindObject(self, objectType: Any, sn: Any, ln: Any) -> None:
        return None

    def onPreRead(self, args: Any = None) -> None:
        pass

    def onPostRead(self, args: Any = None) -> None:
        pass

    def onPreWrite(self, args: Any = None) -> None:
        pass

    def onPostWrite(self, args: Any = None) -> None:
        pass

    def onPreAction(self, args: Any = None) -> None:
        pass

    def onPostAction(self, args: Any = None) -> None:
        pass

    def onPreGet(self, args: Any = None) -> None:
        pass

    def onPostGet(self, args: Any = None) -> None:
        pass

    def onConnected(self, connectionInfo: Any) -> None:
        pass

    def onInvalidConnection(self, connectionInfo: Any) -> None:
        pass

    def onDisconnected(self, connectionInfo: Any) -> None:
        pass


# Gurux 1.0.203's Association LN reads ``e.isSkipMaxPduSize`` and its Profile Generic
# calls ``e.getRowEndIndex()``; its ValueEventArgs has neither, only the plain fields
# (AttributeError on every object-list and buffer read). Added, nothing changed.
if not hasattr(ValueEventArgs, "isSkipMaxPduSize"):
    ValueEventArgs.isSkipMaxPduSize = property(lambda self: bool(self.skipMaxPduSize))
if not hasattr(ValueEventArgs, "getRowEndIndex"):
    ValueEventArgs.getRowEndIndex = lambda self: self.rowEndIndex


class _ServerReply(GXServerReply):  # type: ignore[misc]
    """Gurux 1.0.203's GXDLMSServer.handleRequest calls ``sr.setReply``,
    ``getConnectionInfo``, ``getCount`` and ``setCount``, which its own GXServerReply
    lacks (AttributeError on every request): the accessors it expects."""

    def __init__(self, value: bytearray) -> None:
        super().__init__(value)
        self.connectionInfo = GXDLMSConnectionEventArgs()

    def setReply(self, value: Any) -> None:
        self.reply = value

    def getConnectionInfo(self) -> Any:
        return self.connectionInfo

    def getCount(self) -> int:
        return int(self.count)

    def setCount(self, value: int) -> None:
        self.count = value


class ServedMeter:
    """What :func:`serve` runs: the port, and every reply the Gurux server wrote."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.replies: list[bytes] = []
        self.errors: list[Exception] = []


@contextlib.contextmanager
def serve(
    framing: str = "wrapper", authentication: int = Authentication.NONE
) -> Iterator[ServedMeter]:
    """Serve a :class:`GuruxMeter` on 127.0.0.1 (one fresh server per connection)."""
    interface = InterfaceType.HDLC if framing == "hdlc" else InterfaceType.WRAPPER
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    served = ServedMeter(listener.getsockname()[1])
    stopping = threading.Event()

    def handle(connection: socket.socket) -> None:
        meter = GuruxMeter(interface, authentication)
        connection.settimeout(0.2)
        with connection:
            while not stopping.is_set():
                try:
                    data = connection.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                reply = _ServerReply(bytearray(data))
                try:
                    meter.handleRequest(reply)
                except Exception as error:
                    served.errors.append(error)
                    return
                if reply.reply:
                    served.replies.append(bytes(reply.reply))
                    connection.sendall(bytes(reply.reply))

    def accept() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        stopping.set()
        thread.join(5)
        listener.close()
