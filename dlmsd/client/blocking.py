"""Blocking client sessions, for scripts and the command line.

::

    settings = ClientSettings(client_sap=1, authentication=Authentication.LLS,
                              password=b"12345678")
    with TcpClient("10.0.0.7", 4059, settings).session() as meter:
        print(meter.read_register("1-0:1.8.0*255"))
        rows = meter.read_profile("1-0:99.1.0*255", from_=start, to=end)

The same :class:`Session` runs over TCP (wrapper or HDLC), UDP (wrapper) and a
serial line (HDLC, pyserial). Every failure is a
:class:`~dlmsd.client.errors.ClientError` with a one-line message; the
connection is closed whatever happens (released and disconnected when the
session is still sound, dropped when it is not).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from dlmsd.client.channel import (
    Channel,
    Request,
    after_counter_read,
    public_association,
    session_failures,
)
from dlmsd.client.errors import (
    ClientError,
    ConnectionClosed,
    ConnectionFailed,
    ServiceError,
    TimeoutError,
)
from dlmsd.client.operations import Operation, Operations, ProfileRows, RegisterReading
from dlmsd.client.targets import Target
from dlmsd.client.transport import (
    DEFAULT_PHYSICAL_ADDRESS,
    ClientTransport,
    HdlcTransport,
    WrapperTransport,
)
from dlmsd.cosem.objects import ObjectListEntry
from dlmsd.protocol.apdus.common import SelectiveAccess
from dlmsd.protocol.apdus.errors import DataAccessResult
from dlmsd.protocol.association import (
    DEFAULT_FRAME_COUNTER,
    Ciphering,
    ClientSettings,
)
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.client import ClientConnection, ClientState
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.hdlc import HdlcAddress
from dlmsd.protocol.obis import Obis

T = TypeVar("T")
TransportName = Literal["wrapper", "hdlc"]
Progress = Callable[[int], object]

DEFAULT_TCP_PORT = 4059
_READ_SIZE = 65536
# Releasing a session that is done anyway should not hold the caller for long.
_CLOSE_TIMEOUT = 1.0


class Link(Protocol):
    """A byte pipe to the meter: what a session reads and writes."""

    def write(self, data: bytes) -> None: ...

    def read(self, timeout: float) -> bytes | None:
        """Bytes, or None when nothing came within ``timeout`` seconds."""

    def close(self) -> None: ...


class SocketLink:
    """A connected TCP (stream) or UDP (datagram) socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes) -> None:
        if not data:
            return
        try:
            self._sock.sendall(data)
        except OSError as error:
            raise ConnectionClosed(
                f"cannot send to the meter: {error.strerror or error}"
            ) from None

    def read(self, timeout: float) -> bytes | None:
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(_READ_SIZE)
        except TimeoutError_:
            return None
        except OSError as error:
            raise ConnectionClosed(f"connection lost: {error.strerror or error}") from None
        if not data and self._sock.type == socket.SOCK_STREAM:
            raise ConnectionClosed("the meter closed the connection")
        return data

    def close(self) -> None:
        self._sock.close()


TimeoutError_ = socket.timeout


class SerialLink:
    """A serial port (pyserial), or anything ``serial.serial_for_url`` opens."""

    def __init__(self, port: object) -> None:
        self._port = port

    def write(self, data: bytes) -> None:
        if not data:
            return
        try:
            self._port.write(data)  # type: ignore[attr-defined]
            self._port.flush()  # type: ignore[attr-defined]
        except Exception as error:  # pyserial raises SerialException (an OSError) or others
            raise ConnectionClosed(f"cannot write to the serial port: {error}") from None

    def read(self, timeout: float) -> bytes | None:
        port = self._port
        try:
            port.timeout = timeout  # type: ignore[attr-defined]
            first: bytes = port.read(1)  # type: ignore[attr-defined]
            if not first:
                return None
            waiting: int = port.in_waiting  # type: ignore[attr-defined]
            return first + (port.read(waiting) if waiting else b"")  # type: ignore[attr-defined]
        except Exception as error:
            raise ConnectionClosed(f"serial port failed: {error}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a port that is already gone
            self._port.close()  # type: ignore[attr-defined]


class Session:
    """One association with a meter; every method blocks until the meter answered.

    Get one from a client's :meth:`Client.session`. Values are
    :class:`~dlmsd.protocol.axdr.Data`; results that fail raise
    :class:`~dlmsd.client.errors.ServiceError` (with the typed ``result``), except
    in :meth:`get_many`, which returns them.
    """

    def __init__(
        self,
        link: Link,
        channel: Channel,
        *,
        timeout: float,
        retries: int,
        progress: Progress | None = None,
    ) -> None:
        self._link = link
        self._channel = channel
        self.timeout = timeout
        self.retries = retries
        #: Called with the bytes received so far during each exchange (long reads).
        self.progress = progress
        self._ops = Operations()
        self._closed = False

    @property
    def settings(self) -> ClientSettings:
        return self._channel.connection.settings

    @property
    def connection(self) -> ClientConnection:
        """The sans-io association core (negotiated conformance, invocation counter)."""
        return self._channel.connection

    # -- operations -------------------------------------------------------------

    def get(
        self,
        target: Target | Obis | str,
        attribute: int | None = None,
        access: SelectiveAccess | None = None,
    ) -> Data:
        """One attribute (default 2) of an object named by OBIS (``[class/]OBIS[:attr]``)."""
        return self._run(self._ops.get(target, attribute, access))

    def get_many(self, targets: Sequence[Target | Obis | str]) -> list[Data | DataAccessResult]:
        """Several attributes in one request; failed items come back as DataAccessResult."""
        return self._run(self._ops.get_many(targets))

    def set(
        self,
        target: Target | Obis | str,
        value: Data,
        attribute: int | None = None,
        access: SelectiveAccess | None = None,
    ) -> None:
        """Write one attribute (SET with blocks when the value is large)."""
        self._run(self._ops.set(target, value, attribute, access))

    def action(
        self,
        target: Obis | str,
        method: int,
        parameters: Data | None = None,
        *,
        class_id: int | None = None,
    ) -> Data | None:
        """Invoke a method; returns its return data, if any."""
        return self._run(self._ops.action(target, method, parameters, class_id))

    def object_list(self) -> list[ObjectListEntry]:
        """The objects this association can see (Association LN attribute 2)."""
        return self._run(self._ops.object_list())

    def read_register(self, target: Target | Obis | str) -> RegisterReading:
        """A register's value with scaler and unit applied (scaler/unit cached)."""
        return self._run(self._ops.read_register(target))

    def read_clock(self) -> CosemDateTime:
        """The meter's clock."""
        return self._run(self._ops.read_clock())

    def read_invocation_counter(self, obis: Obis | str = DEFAULT_FRAME_COUNTER) -> int:
        """A frame counter object's value (read it through a public association)."""
        return self._run(self._ops.read_invocation_counter(obis))

    def read_profile(
        self,
        obis: Obis | str,
        *,
        from_: datetime | None = None,
        to: datetime | None = None,
        entries: tuple[int, int] | None = None,
        columns: Sequence[int] | None = None,
        apply_scalers: bool = True,
    ) -> ProfileRows:
        """Profile Generic rows by time range (``from_``/``to``) or ``entries=(a, b)``."""
        return self._run(
            self._ops.read_profile(
                obis,
                from_=from_,
                to=to,
                entries=entries,
                columns=columns,
                apply_scalers=apply_scalers,
            )
        )

    def run(self, operation: Operation[T]) -> T:
        """Run any operation of :class:`~dlmsd.client.operations.Operations`."""
        return self._run(operation)

    def close(self) -> None:
        """Release the association and take the link down; never raises."""
        if self._closed:
            return
        self._closed = True
        timeout, self.timeout = self.timeout, min(self.timeout, _CLOSE_TIMEOUT)
        retries, self.retries = self.retries, 0
        try:
            if self._channel.connection.state is ClientState.ASSOCIATED:
                self._exchange(lambda connection: connection.release())
            closing = self._channel.close_link()
            if closing:
                self._link.write(closing)
                self._wait(lambda: True if self._channel.link_closed() else None)
        except (ClientError, DlmsError):
            self._link.close()  # could not close politely: drop it
        finally:
            self.timeout, self.retries = timeout, retries

    @property
    def closed(self) -> bool:
        return self._closed

    # -- driving ------------------------------------------------------------------

    def _open(self) -> None:
        """Bring the link up and associate."""
        with session_failures(self._channel, self._break, opening=True):
            opening = self._channel.open_link()
            if opening:
                self._link.write(opening)
                self._wait(lambda: True if self._channel.link_up() else None)
            self._run_unchecked(self._ops.associate())

    def _run(self, operation: Operation[T]) -> T:
        if self._closed:
            raise ClientError("the session is closed")
        with session_failures(self._channel, self._break):
            return self._run_unchecked(operation)

    def _run_unchecked(self, operation: Operation[T]) -> T:
        try:
            request = next(operation)
            while True:
                event = self._exchange(request)
                request = operation.send(event)
        except StopIteration as done:
            result: T = done.value
            return result

    def _exchange(self, build: Request) -> object:
        try:
            frames = self._channel.request(build)
        except DlmsError as error:
            # Nothing was sent: the session is still sound (e.g. a value too large).
            raise ServiceError(f"cannot send the request: {error.reason}") from None
        self._link.write(frames)
        return self._wait(self._poll_event)

    def _poll_event(self) -> object | None:
        event = self._channel.next_event()
        return None if event is NEED_DATA else event

    def _wait(self, poll: Callable[[], T | None]) -> T:
        """Read until ``poll`` returns a value; retransmit on silence, then give up.

        Silence is counted in timeouts; bytes that are only noise (corrupted
        frames) do not reset the count, so a babbling line still ends.
        """
        channel, link = self._channel, self._link
        attempts = 0
        received = 0
        while True:
            result = poll()
            outgoing = channel.data_to_send()
            if outgoing:
                link.write(outgoing)
            if result is not None:
                return result
            data = link.read(self.timeout)
            if data is None:
                attempts += 1
                retry = attempts <= self.retries or channel.in_gbt
                resend = channel.on_timeout() if retry else b""
                if resend:
                    link.write(resend)
                    continue
                late = poll()  # a GBT transfer that gave up reports which blocks
                if late is not None:
                    return late
                raise TimeoutError(self._timeout_message(attempts - 1))
            received += len(data)
            if self.progress is not None:
                self.progress(received)
            skipped = channel.skipped_frames
            channel.receive_data(data)
            result = poll()
            if channel.skipped_frames == skipped:
                attempts = 0
            outgoing = channel.data_to_send()
            if outgoing:
                link.write(outgoing)
            if result is not None:
                return result

    def _timeout_message(self, retransmissions: int) -> str:
        message = f"no answer from the meter within {self.timeout:g} s"
        if retransmissions:
            message += f" (after {retransmissions} retransmissions)"
        skipped = self._channel.skipped_frames
        if skipped:
            message += f"; {skipped} corrupted frame(s) skipped"
        return message

    def _break(self) -> None:
        """The session cannot go on: drop the line without ceremony."""
        self._closed = True
        self._link.close()


class Client:
    """Opens sessions to one meter. Subclasses say how to reach it.

    ``invocation_counter_obis``: for ciphered sessions, read this frame counter
    object through a public association (client SAP 16) on the same connection
    first, and start the outgoing invocation counter above it.
    """

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        invocation_counter_obis: Obis | str | None = None,
        challenge_source: Callable[[int], bytes] = os.urandom,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings if settings is not None else ClientSettings()
        self.timeout = timeout
        self.retries = retries
        self.invocation_counter_obis = (
            Obis.parse(invocation_counter_obis)
            if isinstance(invocation_counter_obis, str)
            else invocation_counter_obis
        )
        self.challenge_source = challenge_source
        self.progress = progress

    def _open_link(self) -> Link:
        raise NotImplementedError

    def _make_transport(self, settings: ClientSettings) -> ClientTransport:
        raise NotImplementedError

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Connect, associate, yield the session; release and close on the way out."""
        link = self._open_link()
        try:
            settings = self.settings
            transport = self._make_transport(settings)
            if self.invocation_counter_obis is not None and settings.ciphering != Ciphering.NONE:
                counter = self._read_counter(link, transport, self.invocation_counter_obis)
                settings = after_counter_read(settings, transport, counter)
            session = self._start(link, transport, settings)
            try:
                yield session
            finally:
                session.close()
        finally:
            link.close()

    def read_invocation_counter(self, obis: Obis | str = DEFAULT_FRAME_COUNTER) -> int:
        """Open a public association, read a frame counter object, close."""
        link = self._open_link()
        try:
            transport = self._make_transport(self.settings)
            return self._read_counter(link, transport, obis)
        finally:
            link.close()

    def _read_counter(self, link: Link, transport: ClientTransport, obis: Obis | str) -> int:
        session = self._start(link, transport, public_association(self.settings, transport))
        try:
            return session.read_invocation_counter(obis)
        finally:
            session.close()

    def _start(self, link: Link, transport: ClientTransport, settings: ClientSettings) -> Session:
        connection = ClientConnection(settings, self.challenge_source)
        session = Session(
            link,
            Channel(transport, connection),
            timeout=self.timeout,
            retries=self.retries,
            progress=self.progress,
        )
        session._open()
        return session


def make_transport(
    kind: TransportName,
    settings: ClientSettings,
    *,
    physical_address: int | None = DEFAULT_PHYSICAL_ADDRESS,
    datagram: bool = False,
) -> ClientTransport:
    """The transport for ``kind`` addressed from ``settings`` (SAPs / HDLC addresses)."""
    if kind == "wrapper":
        return WrapperTransport(
            settings.client_sap, settings.server_logical_device, datagram=datagram
        )
    if kind == "hdlc":
        server = HdlcAddress.server(settings.server_logical_device, physical_address)
        return HdlcTransport(settings.client_sap, server)
    raise ValueError(f"unknown transport {kind!r} (wrapper or hdlc)")


class TcpClient(Client):
    """A meter on TCP: the wrapper (port 4059) or HDLC through a terminal server."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_TCP_PORT,
        settings: ClientSettings | None = None,
        *,
        transport: TransportName = "wrapper",
        physical_address: int | None = DEFAULT_PHYSICAL_ADDRESS,
        connect_timeout: float | None = None,
        **options: object,
    ) -> None:
        super().__init__(settings, **options)  # type: ignore[arg-type]
        self.host = host
        self.port = port
        self.transport = transport
        self.physical_address = physical_address
        self.connect_timeout = connect_timeout if connect_timeout is not None else self.timeout
        make_transport(transport, self.settings)  # reject an unknown transport now

    def _open_link(self) -> Link:
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except TimeoutError_:
            raise ConnectionFailed(
                f"cannot connect to {self.host}:{self.port}: timed out"
            ) from None
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConnectionFailed(
                f"cannot connect to {self.host}:{self.port}: {reason}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return SocketLink(sock)

    def _make_transport(self, settings: ClientSettings) -> ClientTransport:
        return make_transport(self.transport, settings, physical_address=self.physical_address)


class UdpClient(Client):
    """A meter on UDP (wrapper, one APDU per datagram)."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_TCP_PORT,
        settings: ClientSettings | None = None,
        **options: object,
    ) -> None:
        super().__init__(settings, **options)  # type: ignore[arg-type]
        self.host = host
        self.port = port

    def _open_link(self) -> Link:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect((self.host, self.port))
        except OSError as error:
            raise ConnectionFailed(
                f"cannot reach {self.host}:{self.port}: {error.strerror or error}"
            ) from None
        return SocketLink(sock)

    def _make_transport(self, settings: ClientSettings) -> ClientTransport:
        return make_transport("wrapper", settings, datagram=True)


class SerialClient(Client):
    """A meter on a serial line (optical probe, RS-485), HDLC at ``baudrate``.

    ``device`` is a port name (``/dev/ttyUSB0``) or any pyserial URL
    (``socket://host:port``, ``rfc2217://...``).
    """

    def __init__(
        self,
        device: str,
        settings: ClientSettings | None = None,
        *,
        baudrate: int = 9600,
        physical_address: int | None = DEFAULT_PHYSICAL_ADDRESS,
        **options: object,
    ) -> None:
        super().__init__(settings, **options)  # type: ignore[arg-type]
        self.device = device
        self.baudrate = baudrate
        self.physical_address = physical_address

    def _open_link(self) -> Link:
        import serial

        try:
            port = serial.serial_for_url(
                self.device,
                baudrate=self.baudrate,
                timeout=self.timeout,
                write_timeout=self.timeout,
            )
        except (serial.SerialException, ValueError, OSError) as error:
            raise ConnectionFailed(f"cannot open {self.device}: {error}") from None
        return SerialLink(port)

    def _make_transport(self, settings: ClientSettings) -> ClientTransport:
        return make_transport("hdlc", settings, physical_address=self.physical_address)
