"""dlmsd: a DLMS/COSEM head-end daemon and library.

The few things library users need are exported here; everything else lives
in `dlmsd.protocol` (the sans-io core), `dlmsd.cosem`, `dlmsd.service` and
`dlmsd.client`.

* Decoding captures: `decode_capture` (one JSON-able record per APDU),
  `Suite0Cipher` (the meter's keys), `Obis`, `Data` (an A-XDR value).
* Reading meters, blocking: `TcpClient`, `UdpClient`, `SerialClient` (their
  `session()` gives a `Session` with get/set/action/read_profile), configured by
  `ClientSettings` with `Authentication` and `Ciphering`.
* Reading meters on the Twisted reactor: `connect_tcp` (a Deferred),
  `connect_tcp_async`, `connect_serial_async`,
  `session_on_connection`, `TwistedSession`.
* Profile buffers: `parse_buffer`, `parse_capture_objects`, `fill_missing_clock`,
  `ProfileTable`.
* Errors: every decoder raises a `DlmsError` (`DecodeError`, `SecurityError`,
  `AuthenticationFailed`, `ReplayError`, ...), each with ``reason`` and
  ``offset``; every client session raises a `ClientError` (`ConnectionFailed`,
  `ConnectionClosed`, `AssociationRefused`, `WrongKeys`, `ServiceError`, ...).
  A client timeout is `dlmsd.client.errors.TimeoutError`, also caught by the
  built-in ``TimeoutError``.

Each name is imported on first use, so ``import dlmsd`` alone is cheap and
does not import Twisted or install a reactor.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlmsd.client.blocking import Client, SerialClient, Session, TcpClient, UdpClient
    from dlmsd.client.errors import (
        AssociationRefused,
        ClientError,
        ConnectionClosed,
        ConnectionFailed,
        LinkRefused,
        ProtocolViolation,
        ServiceError,
        WrongKeys,
        WrongPassword,
    )
    from dlmsd.client.operations import ProfileRows, RegisterReading
    from dlmsd.client.twisted import (
        TwistedSession,
        connect_serial_async,
        connect_tcp,
        connect_tcp_async,
        session_on_connection,
    )
    from dlmsd.cosem.profile import (
        ProfileTable,
        fill_missing_clock,
        parse_buffer,
        parse_capture_objects,
    )
    from dlmsd.decoding import decode_capture, split_capture
    from dlmsd.protocol.association import Authentication, Ciphering, ClientSettings
    from dlmsd.protocol.axdr import Data, DataType
    from dlmsd.protocol.cosem_datetime import CosemDateTime
    from dlmsd.protocol.errors import (
        AuthenticationFailed,
        DecodeError,
        DlmsError,
        EncodeError,
        ProtocolError,
        ReplayError,
        SecurityError,
        UnsupportedSecurity,
    )
    from dlmsd.protocol.obis import Obis
    from dlmsd.protocol.security import Suite0Cipher

# Each exported name and the module it comes from, imported on first access
# (PEP 562): ``import dlmsd`` stays cheap for the daemon and the sans-io core,
# and does not import Twisted (the Twisted client is one of these modules).
_SOURCES = {
    "dlmsd.client.blocking": ("Client", "SerialClient", "Session", "TcpClient", "UdpClient"),
    "dlmsd.client.errors": (
        "AssociationRefused",
        "ClientError",
        "ConnectionClosed",
        "ConnectionFailed",
        "LinkRefused",
        "ProtocolViolation",
        "ServiceError",
        "WrongKeys",
        "WrongPassword",
    ),
    "dlmsd.client.operations": ("ProfileRows", "RegisterReading"),
    "dlmsd.client.twisted": (
        "TwistedSession",
        "connect_serial_async",
        "connect_tcp",
        "connect_tcp_async",
        "session_on_connection",
    ),
    "dlmsd.cosem.profile": (
        "ProfileTable",
        "fill_missing_clock",
        "parse_buffer",
        "parse_capture_objects",
    ),
    "dlmsd.decoding": ("decode_capture", "split_capture"),
    "dlmsd.protocol.association": ("Authentication", "Ciphering", "ClientSettings"),
    "dlmsd.protocol.axdr": ("Data", "DataType"),
    "dlmsd.protocol.cosem_datetime": ("CosemDateTime",),
    "dlmsd.protocol.errors": (
        "AuthenticationFailed",
        "DecodeError",
        "DlmsError",
        "EncodeError",
        "ProtocolError",
        "ReplayError",
        "SecurityError",
        "UnsupportedSecurity",
    ),
    "dlmsd.protocol.obis": ("Obis",),
    "dlmsd.protocol.security": ("Suite0Cipher",),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'dlmsd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # next time without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})


__all__ = [
    "AssociationRefused",
    "Authentication",
    "AuthenticationFailed",
    "Ciphering",
    "Client",
    "ClientError",
    "ClientSettings",
    "ConnectionClosed",
    "ConnectionFailed",
    "CosemDateTime",
    "Data",
    "DataType",
    "DecodeError",
    "DlmsError",
    "EncodeError",
    "LinkRefused",
    "Obis",
    "ProfileRows",
    "ProfileTable",
    "ProtocolError",
    "ProtocolViolation",
    "RegisterReading",
    "ReplayError",
    "SecurityError",
    "SerialClient",
    "ServiceError",
    "Session",
    "Suite0Cipher",
    "TcpClient",
    "TwistedSession",
    "UdpClient",
    "UnsupportedSecurity",
    "WrongKeys",
    "WrongPassword",
    "__version__",
    "connect_serial_async",
    "connect_tcp",
    "connect_tcp_async",
    "decode_capture",
    "fill_missing_clock",
    "parse_buffer",
    "parse_capture_objects",
    "session_on_connection",
    "split_capture",
]
