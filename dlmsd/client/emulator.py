"""A meter emulator: a DLMS server on the same core, for tests, demos and benchmarks.

It serves :func:`~dlmsd.cosem.model.gas_meter_model` (plus a few electricity
objects, so the usual examples run) through
:class:`~dlmsd.protocol.server.ServerConnection`, over the TCP wrapper, HDLC
over TCP, the UDP wrapper and HDLC on a pseudo-terminal (the slave path is what
a :class:`~dlmsd.client.blocking.SerialClient` opens). :class:`Faults` makes it
misbehave on purpose: silence, garbage, truncated answers, lost or corrupted
HDLC frames, a lost GBT block.

:func:`push_then_serve` plays a meter that connects out to a head-end, pushes
a DataNotification and then answers the association the head-end opens on
that same connection (push-then-read).

``dlmsd emulate --port 0`` prints one JSON line with the port (and pty path)
it listens on, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import tty
from collections.abc import Callable
from typing import Any, Literal

import attrs
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from dlmsd.client.transport import (
    DEFAULT_LOGICAL_DEVICE,
    DEFAULT_PHYSICAL_ADDRESS,
    MANAGEMENT_CLIENT,
    PUBLIC_CLIENT,
    HdlcServerTransport,
    WrapperServerTransport,
)
from dlmsd.cosem import objects as ic
from dlmsd.cosem.model import (
    ObjectModel,
    ProfileStore,
    data_object,
    gas_meter_model,
    profile_generic,
)
from dlmsd.cosem.model import register as register_object
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.apdus.selective import CaptureObjectDefinition
from dlmsd.protocol.association import Authentication, ServerSettings
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.ciphered import GeneralGloCiphering
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.gbt import GeneralBlockTransfer
from dlmsd.protocol.hdlc import HdlcAddress, HdlcParameters
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.server import ServerConnection
from dlmsd.protocol.wrapper import WrapperFrame

TransportName = Literal["wrapper", "hdlc"]

#: Electricity objects added to the gas meter, so the usual examples have something to read.
ACTIVE_ENERGY_IMPORT = Obis(1, 0, 1, 8, 0, 255)
ACTIVE_ENERGY_EXPORT = Obis(1, 0, 2, 8, 0, 255)
BILLING_PROFILE = Obis(1, 0, 99, 1, 0, 255)
CUSTOMER_MESSAGE = Obis(0, 0, 96, 13, 0, 255)
DEFAULT_SYSTEM_TITLE = b"DLM\x00\x00\x00\x00\x01"
_WATT_HOUR = 30
_BILLING_MONTHS = 24


@attrs.frozen(slots=True)
class Faults:
    """Ways the emulator misbehaves on purpose (all off by default).

    Frame counts are per connection and count what the emulator writes (wrapper
    frames or HDLC frames), from 1.
    """

    #: Never answer anything (the connection stays open).
    silent: bool = False
    #: After answering this many APDUs, answer the next ones with bytes that frame nothing.
    garbage_after: int | None = None
    #: After answering this many APDUs, answer the next one with its APDU cut in half.
    truncate_after: int | None = None
    #: Drop this outgoing frame once (HDLC retransmission recovers it).
    drop_frame: int | None = None
    #: Corrupt (one byte flipped) this outgoing frame once.
    corrupt_frame: int | None = None
    #: Corrupt every outgoing frame from this one on (retransmission cannot help).
    corrupt_from_frame: int | None = None
    #: Drop the first transmission of GBT blocks with this block number (recovery resends).
    drop_gbt_block: int | None = None
    #: Drop every transmission of that GBT block (recovery fails).
    drop_gbt_block_always: bool = False

    @classmethod
    def parse(cls, specs: list[str]) -> Faults:
        """``silent``, ``garbage-after=N``, ``drop-frame=N``, ``drop-gbt-block=N`` ..."""
        values: dict[str, Any] = {}
        names = {field.name for field in attrs.fields(cls)}
        for spec in specs:
            name, _, raw = spec.partition("=")
            key = name.strip().replace("-", "_")
            if key not in names:
                raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(names))})")
            values[key] = True if not raw else int(raw)
        return cls(**values)


@attrs.frozen(slots=True, kw_only=True)
class EmulatorConfig:
    """What the emulated meter accepts and how it answers."""

    transport: TransportName = "wrapper"
    authentication: Authentication = Authentication.NONE
    password: bytes | None = attrs.field(default=None, repr=False)
    cipher: Suite0Cipher | None = attrs.field(default=None, repr=False)
    ciphering_required: bool = False
    system_title: bytes = DEFAULT_SYSTEM_TITLE
    gbt: bool = False
    gbt_window: int = 1
    block_size: int | None = None
    gbt_block_size: int | None = None
    force_block_transfer: bool = False
    logical_device: int = DEFAULT_LOGICAL_DEVICE
    physical_address: int | None = DEFAULT_PHYSICAL_ADDRESS
    hdlc_max_info: int = 512
    hdlc_window: int = 1
    hours: int = 8760
    faults: Faults = Faults()
    #: (client SAP, least authentication) of each association the meter has; empty:
    #: IDIS's public client (16, no security) and management client (1, `authentication`).
    associations: tuple[tuple[int, Authentication], ...] = ()
    #: More logical devices (server SAPs) besides `logical_device`, each with its own
    #: objects (the wrapper's destination wPort or HDLC's upper address selects one).
    more_logical_devices: tuple[int, ...] = ()

    def association_table(self) -> dict[int, Authentication]:
        """Client SAP -> the least authentication its association accepts."""
        if self.associations:
            return dict(self.associations)
        return {PUBLIC_CLIENT: Authentication.NONE, MANAGEMENT_CLIENT: self.authentication}

    def server_settings(self, client_sap: int, server_sap: int | None = None) -> ServerSettings:
        """The settings for associations of ``client_sap``; a SAP the meter has no
        association for is refused."""
        table = self.association_table()
        least = table.get(client_sap)
        public = least == Authentication.NONE
        return ServerSettings(
            server_system_title=self.system_title,
            client_sap=client_sap,
            server_sap=self.logical_device if server_sap is None else server_sap,
            refuse_associations=least is None,
            authentication=Authentication.NONE if least is None else least,
            password=self.password,
            cipher=self.cipher,
            ciphering_required=self.ciphering_required and not public,
            supports_gbt=self.gbt,
            gbt_window=self.gbt_window,
            block_size=self.block_size,
            gbt_block_size=self.gbt_block_size,
            force_block_transfer=self.force_block_transfer,
        )


def emulator_model(
    hours: int = 8760,
    system_title: bytes = DEFAULT_SYSTEM_TITLE,
    serial: bytes = b"GAS0000001",
    logical_device: int = DEFAULT_LOGICAL_DEVICE,
) -> ObjectModel:
    """The gas meter model plus energy registers, a monthly billing profile and a message.

    `logical_device` is the server SAP whose Association LN this model holds."""
    model = gas_meter_model(hours=hours, system_title=system_title, serial=serial)
    model.current = attrs.evolve(model.current, server_sap=logical_device)
    model.add(
        register_object(ACTIVE_ENERGY_IMPORT, Data.double_long_unsigned(12_345_678), 0, _WATT_HOUR)
    )
    model.add(
        register_object(ACTIVE_ENERGY_EXPORT, Data.double_long_unsigned(1_234), 0, _WATT_HOUR)
    )
    model.add(
        data_object(
            CUSTOMER_MESSAGE,
            Data.octet_string(b""),
            write=Authentication.LLS,
        )
    )
    columns = (
        CaptureObjectDefinition(ic.Clock.CLASS_ID, ic.CLOCK, 2),
        CaptureObjectDefinition(ic.Register.CLASS_ID, ACTIVE_ENERGY_IMPORT, 2),
        CaptureObjectDefinition(ic.Register.CLASS_ID, ACTIVE_ENERGY_EXPORT, 2),
    )
    store = ProfileStore(columns, capture_period=0, profile_entries=_BILLING_MONTHS)
    utc = dt.UTC
    for month in range(_BILLING_MONTHS):
        moment = dt.datetime(2022 + month // 12, month % 12 + 1, 1, tzinfo=utc)
        stamp = CosemDateTime.from_datetime(moment, clock_status=0)
        store.append(
            (
                Data.octet_string(stamp.raw),
                Data.double_long_unsigned(10_000_000 + month * 350_000),
                Data.double_long_unsigned(month * 50),
            )
        )
    model.add(profile_generic(BILLING_PROFILE, store))
    return model


class EmulatedMeter:
    """The meter end of one connection, sans-io: bytes in, bytes to write out.

    Keeps one :class:`ServerConnection` per client SAP (a new AARQ starts a new
    one) and applies the :class:`Faults`.
    """

    def __init__(
        self,
        model: ObjectModel,
        config: EmulatorConfig,
        *,
        datagram: bool = False,
        challenge_source: Callable[[int], bytes] = os.urandom,
        more_models: dict[int, ObjectModel] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        #: The objects of each logical device (server SAP).
        self.models = {config.logical_device: model, **(more_models or {})}
        self._challenge_source = challenge_source
        self.transport: WrapperServerTransport | HdlcServerTransport
        if config.transport == "hdlc":
            capabilities = HdlcParameters(
                max_info_tx=config.hdlc_max_info,
                max_info_rx=config.hdlc_max_info,
                window_tx=config.hdlc_window,
                window_rx=config.hdlc_window,
            )
            address = HdlcAddress.server(config.logical_device, config.physical_address)
            self.transport = HdlcServerTransport(
                address,
                parameters=capabilities,
                more_logical_devices=tuple(self.models),
            )
        else:
            self.transport = WrapperServerTransport(
                config.logical_device,
                datagram=datagram,
                more_wports=tuple(sap for sap in self.models if sap != config.logical_device),
            )
        self._associations: dict[tuple[int, int], ServerConnection] = {}
        self.apdus_answered = 0
        self.frames_written = 0
        self._dropped_frame = False
        self._corrupted_frame = False
        self._dropped_blocks: set[int] = set()
        self.broken = False  # the stream cannot be decoded any more

    def receive_data(self, data: bytes) -> list[bytes]:
        """Feed bytes from the client; returns the chunks to write back."""
        if self.broken:
            return []
        out: list[bytes] = []
        transport = self.transport
        try:
            transport.receive_data(data)
            while True:
                apdu = transport.next_apdu()
                out.extend(self._frames(transport.data_to_send()))
                if apdu is NEED_DATA:
                    break
                out.extend(self._frames(self._answer(apdu)))
        except DlmsError:
            self.broken = True  # a wrapper stream with a bad header: nothing more to read
        if self.config.faults.silent:
            return []
        return out

    def _answer(self, apdu: bytes) -> list[bytes]:
        faults = self.config.faults
        client = self.transport.client_address
        transport = self.transport
        server = (
            transport.server_address
            if isinstance(transport, WrapperServerTransport)
            else transport.server_address.logical  # the device the link is with
        )
        key = (server, client)
        if apdu[:1] == b"\x60" or key not in self._associations:
            self._associations[key] = ServerConnection(
                self.models.get(server, self.model),
                self.config.server_settings(client, server),
                self._challenge_source,
            )
        responses = self._associations[key].receive_apdu(apdu)
        frames: list[bytes] = []
        for response in responses:
            if self._drop_gbt(response):
                continue
            answered = self.apdus_answered
            self.apdus_answered += 1
            if faults.garbage_after is not None and answered >= faults.garbage_after:
                frames.append(b"\xff\xfe garbage that frames nothing \x00\x01" * 2)
                continue
            if faults.truncate_after is not None and answered == faults.truncate_after:
                response = response[: max(1, len(response) // 2)]
            frames.extend(self.transport.frame(response))
        return frames

    def _drop_gbt(self, response: bytes) -> bool:
        wanted = self.config.faults.drop_gbt_block
        if wanted is None or response[:1] != bytes((GeneralBlockTransfer.TAG,)):
            return False
        try:
            block = GeneralBlockTransfer.from_bytes(response)
        except DlmsError:
            return False
        if block.block_number != wanted or not block.block_data:
            return False
        if wanted in self._dropped_blocks and not self.config.faults.drop_gbt_block_always:
            return False
        self._dropped_blocks.add(wanted)
        return True

    def _frames(self, frames: list[bytes]) -> list[bytes]:
        faults = self.config.faults
        out = []
        for frame in frames:
            self.frames_written += 1
            number = self.frames_written
            if faults.drop_frame == number and not self._dropped_frame:
                self._dropped_frame = True
                continue
            corrupt = faults.corrupt_from_frame is not None and number >= faults.corrupt_from_frame
            if faults.corrupt_frame == number and not self._corrupted_frame:
                self._corrupted_frame = corrupt = True
            if corrupt and len(frame) > 4:
                middle = len(frame) // 2
                frame = frame[:middle] + bytes((frame[middle] ^ 0x5A,)) + frame[middle + 1 :]
            out.append(frame)
        return out


# -- Twisted ---------------------------------------------------------------------------


class EmulatorProtocol(Protocol):
    """One client connection to the emulator (TCP or a pty)."""

    def __init__(self, meter: EmulatedMeter) -> None:
        self.meter = meter

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        for chunk in self.meter.receive_data(data):
            transport.write(chunk)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pass


class PushThenServeProtocol(EmulatorProtocol):
    """A meter that connected out: writes its push first, then serves like any connection."""

    def __init__(self, meter: EmulatedMeter, push: bytes) -> None:
        super().__init__(meter)
        self.push = push
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(self.push)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.closed.called:
            self.closed.callback(None)


def gas_push_apdu(
    config: EmulatorConfig, invocation_counter: int, moment: dt.datetime, litres: int
) -> bytes:
    """A DataNotification {clock, gas volume (m3, scaler -3)}, in general-glo-ciphering
    with the config's keys (plaintext when it has none)."""
    stamp = CosemDateTime.from_datetime(moment, clock_status=0)
    body = Data.array(
        Data.structure(Data.octet_string(ic.CLOCK.to_bytes()), Data.octet_string(stamp.raw)),
        Data.structure(
            Data.octet_string(ic.GAS_VOLUME.to_bytes()),
            Data.double_long_unsigned(litres),
            Data.structure(Data.integer(-3), Data.enum(13)),
        ),
    )
    plaintext = DataNotification(
        long_invoke_id_and_priority=invocation_counter & 0x00FFFFFF, date_time=stamp, body=body
    ).to_bytes()
    if config.cipher is None:
        return plaintext
    security_control = 0x30  # authenticated and encrypted, suite 0
    payload = config.cipher.encrypt(
        config.system_title, security_control, invocation_counter, plaintext
    )
    return GeneralGloCiphering(
        config.system_title, security_control, invocation_counter, payload
    ).to_bytes()


def push_then_serve(
    reactor: Any,
    host: str,
    port: int,
    config: EmulatorConfig,
    push_apdu: bytes,
    *,
    model: ObjectModel | None = None,
) -> Deferred[PushThenServeProtocol]:
    """Connect to a head-end, push `push_apdu` (wrapper, wPort 1 -> 1), then serve
    associations on that connection; fires with the protocol once connected."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    chosen = model if model is not None else emulator_model(config.hours, config.system_title)
    meter = EmulatedMeter(chosen, attrs.evolve(config, transport="wrapper"))
    frame = WrapperFrame(config.logical_device, 1, push_apdu).to_bytes()
    protocol = PushThenServeProtocol(meter, frame)
    connected: Deferred[PushThenServeProtocol] = connectProtocol(  # type: ignore[no-untyped-call]
        TCP4ClientEndpoint(reactor, host, port), protocol
    )
    return connected


class EmulatorFactory(Factory):
    """A fresh :class:`EmulatedMeter` per connection, all on one object model."""

    noisy = False

    def __init__(
        self,
        model: ObjectModel,
        config: EmulatorConfig,
        more_models: dict[int, ObjectModel] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.more_models = more_models
        self.meters: list[EmulatedMeter] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        meter = EmulatedMeter(self.model, self.config, more_models=self.more_models)
        self.meters.append(meter)
        protocol = EmulatorProtocol(meter)
        protocol.factory = self
        return protocol


class UdpEmulator(DatagramProtocol):
    """The wrapper over UDP: one :class:`EmulatedMeter` per client address."""

    noisy = False

    def __init__(
        self,
        model: ObjectModel,
        config: EmulatorConfig,
        more_models: dict[int, ObjectModel] | None = None,
    ) -> None:
        self.model = model
        self.config = attrs.evolve(config, transport="wrapper")
        self.more_models = more_models
        self.meters: dict[Any, EmulatedMeter] = {}

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        meter = self.meters.get(addr)
        if meter is None:
            meter = self.meters[addr] = EmulatedMeter(
                self.model, self.config, datagram=True, more_models=self.more_models
            )
        transport: Any = self.transport
        for chunk in meter.receive_data(datagram):
            transport.write(chunk, addr)


class _PtyMaster(FileDescriptor):
    """The master side of a pty on the reactor: read and write one fd.

    (``StandardIO`` will not do: its writer also reads the fd to notice a closed
    pipe, and would steal the client's bytes.)
    """

    def __init__(self, reactor: Any, fd: int, protocol: Protocol) -> None:
        super().__init__(reactor)
        self._fd = fd
        self.protocol = protocol
        self.connected = 1  # FileDescriptor.write() drops data until this is set
        protocol.makeConnection(self)  # type: ignore[no-untyped-call]
        self._start_reading()

    def _start_reading(self) -> None:
        self.startReading()  # type: ignore[no-untyped-call]

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> Any:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return None
        except OSError:
            return None  # EIO while no client has the slave open: wait for one
        if data:
            self.protocol.dataReceived(data)
        return None

    def writeSomeData(self, data: bytes) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        with contextlib.suppress(OSError):
            os.close(self._fd)


class PtyEndpoint:
    """HDLC on a pseudo-terminal: the emulator holds the master, clients open ``path``."""

    def __init__(
        self,
        reactor: Any,
        model: ObjectModel,
        config: EmulatorConfig,
        more_models: dict[int, ObjectModel] | None = None,
    ) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no line discipline: HDLC bytes pass untouched
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        hdlc = attrs.evolve(config, transport="hdlc")
        self.meter = EmulatedMeter(model, hdlc, more_models=more_models)
        self.protocol = EmulatorProtocol(self.meter)
        self._io = _PtyMaster(reactor, self.master, self.protocol)

    def close(self) -> None:
        self._io.stopReading()  # type: ignore[no-untyped-call]
        self._io.stopWriting()  # type: ignore[no-untyped-call]
        with contextlib.suppress(OSError):
            os.close(self.master)
        # Held open until now so the pty does not hang up between clients.
        with contextlib.suppress(OSError):
            os.close(self.slave)


@attrs.define
class RunningEmulator:
    """What :func:`start` opened: the TCP port number, the pty path, the model."""

    model: ObjectModel
    config: EmulatorConfig
    tcp: Any = None  # IListeningPort
    udp: Any = None
    pty: PtyEndpoint | None = None
    factory: EmulatorFactory | None = None
    more_models: dict[int, ObjectModel] = attrs.field(factory=dict)

    @property
    def port(self) -> int:
        assert self.tcp is not None
        port: int = self.tcp.getHost().port
        return port

    @property
    def udp_port(self) -> int:
        assert self.udp is not None
        port: int = self.udp.getHost().port
        return port

    @property
    def pty_path(self) -> str:
        assert self.pty is not None
        return self.pty.path

    def stop(self) -> Any:
        """Stop listening; returns a Deferred that fires when the ports are closed."""
        from twisted.internet.defer import gatherResults, maybeDeferred

        if self.pty is not None:
            self.pty.close()
        waits = [maybeDeferred(port.stopListening) for port in (self.tcp, self.udp) if port]
        if self.factory is not None:
            for meter in self.factory.meters:
                meter.broken = True
        return gatherResults(waits)


def start(
    reactor: Any,
    config: EmulatorConfig,
    *,
    port: int | None = 0,
    udp_port: int | None = None,
    pty: bool = False,
    interface: str = "127.0.0.1",
    model: ObjectModel | None = None,
) -> RunningEmulator:
    """Start the emulator on the reactor: TCP (``port``; None for none), UDP, a pty."""
    chosen = model if model is not None else emulator_model(config.hours, config.system_title)
    running = RunningEmulator(chosen, config)
    more = {
        sap: emulator_model(
            config.hours, config.system_title, f"GAS{sap:07d}".encode(), logical_device=sap
        )
        for sap in config.more_logical_devices
        if sap != config.logical_device
    }
    running.more_models = more
    if port is not None:
        running.factory = EmulatorFactory(chosen, config, more)
        running.tcp = reactor.listenTCP(port, running.factory, interface=interface)
    if udp_port is not None:
        udp = UdpEmulator(chosen, config, more)
        running.udp = reactor.listenUDP(udp_port, udp, interface=interface)
    if pty:
        running.pty = PtyEndpoint(reactor, chosen, config, more)
    return running


# -- command line -----------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlmsd emulate``."""
    parser = sub.add_parser(
        "emulate",
        help="run a meter emulator (TCP wrapper / HDLC, pty) for tests and demos",
        description="Serve an emulated gas meter (a year of hourly profile rows, registers, "
        "clock, push setup, valve) over TCP and optionally UDP and a pseudo-terminal. "
        "Prints one JSON line with the port and pty path, then serves until interrupted.",
    )
    parser.add_argument("--port", type=int, default=4059, help="TCP port (0: any free port)")
    parser.add_argument("--address", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--transport", choices=("wrapper", "hdlc"), default="wrapper")
    parser.add_argument("--udp", action="store_true", help="also serve the wrapper on UDP")
    parser.add_argument("--pty", action="store_true", help="also serve HDLC on a pseudo-terminal")
    parser.add_argument("--auth", choices=("none", "lls", "hls-gmac"), default="none")
    parser.add_argument("--password", help="LLS password (text)")
    from dlmsd.keysource import add_key_options

    add_key_options(
        parser,
        keys_help="key file (TOML); its entry for the emulator's system title, or its only one",
    )
    parser.add_argument("--system-title", help="the meter's system title (16 hex characters)")
    parser.add_argument("--ciphering", action="store_true", help="refuse unciphered contexts")
    parser.add_argument(
        "--gbt", action="store_true", help="offer general block transfer (default: off)"
    )
    parser.add_argument("--gbt-window", type=int, default=1)
    parser.add_argument("--block-size", type=int, help="force GET response blocks of this size")
    parser.add_argument("--hours", type=int, default=8760, help="rows of the hourly gas profile")
    parser.add_argument(
        "--logical-device",
        type=int,
        action="append",
        default=[],
        metavar="SAP",
        help="server SAP of a logical device (repeatable; default 1; each has its own "
        "objects, chosen by the wrapper's wPort or HDLC's upper address)",
    )
    parser.add_argument(
        "--association",
        action="append",
        default=[],
        metavar="CLIENT_SAP:AUTH",
        help="an association the meter has: client SAP and least authentication "
        "(none, lls, hls-gmac); repeatable; default IDIS: 16:none and 1:<--auth>",
    )
    parser.add_argument(
        "--push-to",
        metavar="HOST:PORT",
        help="push setup: send a DataNotification of the push object list to this head-end",
    )
    parser.add_argument(
        "--push-every", type=float, default=60.0, metavar="S", help="seconds between pushes"
    )
    parser.add_argument("--push-protocol", choices=("tcp", "udp"), default="tcp")
    parser.add_argument(
        "--invocation-counter",
        type=int,
        metavar="N",
        help="the meter's first own invocation counter (default 1; with --push-to, the "
        "seconds since 2020, so a restarted emulator's pushes are not replays)",
    )
    parser.add_argument(
        "--push-object",
        action="append",
        default=[],
        metavar="OBIS[:attr]",
        help="push this attribute (repeatable; default: clock and gas volume)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="misbehave: silent, garbage-after=N, truncate-after=N, drop-frame=N, "
        "corrupt-frame=N, corrupt-from-frame=N, drop-gbt-block=N, drop-gbt-block-always",
    )
    parser.set_defaults(func=run_emulate)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Build the configuration; raises ValueError with a message for the user."""
    from dlmsd.client.cli import load_cipher

    title = bytes.fromhex(args.system_title) if args.system_title else DEFAULT_SYSTEM_TITLE
    if len(title) != 8:
        raise ValueError("--system-title must be 16 hex characters")
    cipher = load_cipher(args.keys, args.ek, args.ak, title)
    authentication = {
        "none": Authentication.NONE,
        "lls": Authentication.LLS,
        "hls-gmac": Authentication.HLS_GMAC,
    }[args.auth]
    if authentication == Authentication.LLS and not args.password:
        raise ValueError("--auth lls needs --password")
    if (authentication == Authentication.HLS_GMAC or args.ciphering) and cipher is None:
        raise ValueError("HLS-GMAC and ciphering need keys (--keys or --ek/--ak)")
    associations = tuple(_association(spec, args) for spec in args.association)
    devices = tuple(args.logical_device) or (DEFAULT_LOGICAL_DEVICE,)
    for sap in devices:
        if not 1 <= sap <= 0x3FFF:
            raise ValueError(f"--logical-device {sap}: server SAPs are 1..16383")
    return EmulatorConfig(
        associations=associations,
        logical_device=devices[0],
        more_logical_devices=devices[1:],
        transport=args.transport,
        authentication=authentication,
        password=args.password.encode() if args.password else None,
        cipher=cipher,
        ciphering_required=args.ciphering,
        system_title=title,
        gbt=args.gbt,
        gbt_window=args.gbt_window,
        block_size=args.block_size,
        force_block_transfer=args.block_size is not None,
        hours=args.hours,
        faults=Faults.parse(args.fault),
    )


def start_pushes(reactor: Any, running: RunningEmulator, args: argparse.Namespace) -> Any:
    """``--push-to``: configure the push setup and start sending (ValueError for the user)."""
    from dlmsd.client.emulator_push import PushSender, parse_push_target, set_push_objects

    if not args.push_every > 0:
        raise ValueError("--push-every must be positive")
    target = parse_push_target(args.push_to, args.push_protocol)
    if args.push_object:
        set_push_objects(running.model, args.push_object)
    if args.invocation_counter is None:
        # a head-end remembers the last counter: start above any earlier run's
        epoch = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        running.model.server_invocation_counter = int(
            (dt.datetime.now(dt.UTC) - epoch).total_seconds()
        )
    config = running.config
    sender = PushSender(
        reactor,
        running.model,
        target,
        args.push_every,
        system_title=config.system_title,
        cipher=config.cipher,
        logical_device=config.logical_device,
    )
    sender.start()
    return sender


_LEVELS = {
    "none": Authentication.NONE,
    "lls": Authentication.LLS,
    "hls-gmac": Authentication.HLS_GMAC,
}


def _association(spec: str, args: argparse.Namespace) -> tuple[int, Authentication]:
    sap, _, level = spec.partition(":")
    if not sap.isdigit() or not 1 <= int(sap) <= 0x7F or level not in _LEVELS:
        raise ValueError(f"--association {spec!r}: expected CLIENT_SAP:none|lls|hls-gmac")
    if level == "lls" and not args.password:
        raise ValueError(f"--association {spec!r} needs --password")
    return int(sap), _LEVELS[level]


def run_emulate(args: argparse.Namespace) -> int:
    """``dlmsd emulate``: serve until interrupted."""
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    try:
        config = config_from_args(args)
    except (ValueError, DlmsError) as error:
        print(f"dlmsd emulate: {error}", file=sys.stderr)
        return 2
    try:
        running = start(
            reactor,
            config,
            port=args.port,
            udp_port=args.port if args.udp else None,
            pty=args.pty,
            interface=args.address,
        )
    except Exception as error:  # CannotListenError, OSError
        print(f"dlmsd emulate: {error}", file=sys.stderr)
        return 1
    if args.invocation_counter is not None:
        if not 0 <= args.invocation_counter <= 0xFFFFFFFF:
            print("dlmsd emulate: --invocation-counter must be 0..4294967295", file=sys.stderr)
            return 2
        running.model.server_invocation_counter = args.invocation_counter
    info: dict[str, object] = {"port": running.port, "transport": config.transport}
    if args.push_to:
        try:
            sender = start_pushes(reactor, running, args)
        except (ValueError, OSError) as error:  # OSError: the push host does not resolve
            print(f"dlmsd emulate: {error}", file=sys.stderr)
            return 2
        info["push_to"] = f"{sender.target.protocol}://{sender.target.host}:{sender.target.port}"
        info["system_title"] = config.system_title.hex().upper()
    if running.pty is not None:
        info["pty"] = running.pty_path
    if running.udp is not None:
        info["udp_port"] = running.udp_port
    print(json.dumps(info), flush=True)
    reactor.run()
    return 0
