"""Client sessions on the Twisted reactor: the blocking API, returning Deferreds.

::

    session = await connect_tcp(reactor, "10.0.0.7", 4059, settings)
    try:
        reading = await session.read_register("1-0:1.8.0*255")
        rows = await session.read_profile("7-0:99.1.0*255", from_=since)
    finally:
        await session.close()

Every method returns a Deferred (``await`` it in an ``async def`` run with
``ensureDeferred``). The operations are the same generators the blocking
driver runs (:mod:`dlmsd.client.operations`); this module only moves bytes and
keeps the timers. A :class:`LinkDriver` can also run a session over a
connection someone else owns (a meter that connected to push: see
:func:`session_on_connection`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from dlmsd.client.blocking import Progress, TransportName, make_transport
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
from dlmsd.client.transport import DEFAULT_PHYSICAL_ADDRESS, ClientTransport
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
from dlmsd.protocol.obis import Obis

T = TypeVar("T")
_CLOSE_TIMEOUT = 1.0


class LinkDriver:
    """Moves bytes between one connection and the channel of the current session.

    The owner of the connection calls :meth:`data_received` and
    :meth:`connection_lost`; the driver writes with ``write`` and drops the line
    with ``abort``. One wait (one exchange) at a time, with a silence timer that
    retransmits (HDLC, GBT recovery) and then fails with
    :class:`~dlmsd.client.errors.TimeoutError`.
    """

    def __init__(
        self,
        clock: Any,
        write: Callable[[bytes], object],
        abort: Callable[[], object],
        *,
        timeout: float = 5.0,
        retries: int = 3,
        progress: Progress | None = None,
    ) -> None:
        self.clock = clock
        self._write = write
        self._abort = abort
        self.timeout = timeout
        self.retries = retries
        self.progress = progress
        self.channel: Channel | None = None
        self._waiter: Deferred[Any] | None = None
        self._poll: Callable[[], object | None] | None = None
        self._timer: Any = None  # an IDelayedCall
        self._attempts = 0
        self._received = 0
        self._lost: str | None = None

    # -- from the connection's owner ----------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the meter."""
        channel = self.channel
        if channel is None:
            return
        self._received += len(data)
        if self._waiter is not None and self.progress is not None:
            self.progress(self._received)
        skipped = channel.skipped_frames
        try:
            channel.receive_data(data)
        except (ClientError, DlmsError) as error:
            self._fail(error)
            return
        self._pump()
        if self._waiter is not None and channel.skipped_frames == skipped:
            # The meter is talking sense: the silence count starts again (noise does not).
            self._attempts = 0
            self._arm()

    def connection_lost(self, reason: str = "the meter closed the connection") -> None:
        """The connection is gone."""
        self._lost = reason
        self._fail(ConnectionClosed(reason))

    # -- for the session ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if data:
            self._write(data)

    def abort(self) -> None:
        self._cancel_timer()
        self._abort()

    def wait(self, poll: Callable[[], T | None]) -> Deferred[T]:
        """Fire with ``poll()``'s first non-None value, as bytes arrive."""
        if self._lost is not None:
            return _failed(ConnectionClosed(self._lost))
        assert self._waiter is None, "one exchange at a time"
        waiter: Deferred[T] = Deferred()
        self._waiter = waiter
        self._poll = poll
        self._attempts = 0
        self._received = 0
        self._arm()
        self._pump()
        return waiter

    # -- internals ------------------------------------------------------------------

    def _pump(self) -> None:
        poll, channel = self._poll, self.channel
        if poll is None or channel is None:
            return
        try:
            result = poll()
            self.write(channel.data_to_send())
        except (ClientError, DlmsError) as error:
            self._fail(error)
            return
        if result is not None:
            self._fire(result)

    def _arm(self) -> None:
        self._cancel_timer()
        self._timer = self.clock.callLater(self.timeout, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        channel = self.channel
        if self._waiter is None or channel is None:
            return
        self._attempts += 1
        try:
            retry = self._attempts <= self.retries or channel.in_gbt
            resend = channel.on_timeout() if retry else b""
        except (ClientError, DlmsError) as error:
            self._fail(error)
            return
        if resend:
            self.write(resend)
            self._arm()
            return
        self._pump()  # a GBT transfer that gave up reports which blocks
        if self._waiter is not None:
            self._fail(TimeoutError(self._timeout_message(self._attempts - 1)))

    def _timeout_message(self, retransmissions: int) -> str:
        message = f"no answer from the meter within {self.timeout:g} s"
        if retransmissions:
            message += f" (after {retransmissions} retransmissions)"
        skipped = self.channel.skipped_frames if self.channel is not None else 0
        if skipped:
            message += f"; {skipped} corrupted frame(s) skipped"
        return message

    def _fire(self, result: object) -> None:
        waiter = self._take_waiter()
        if waiter is not None:
            waiter.callback(result)

    def _fail(self, error: Exception) -> None:
        waiter = self._take_waiter()
        if waiter is not None:
            waiter.errback(error)

    def _take_waiter(self) -> Deferred[Any] | None:
        waiter, self._waiter, self._poll = self._waiter, None, None
        self._cancel_timer()
        return waiter


def _failed(error: Exception) -> Deferred[Any]:
    waiter: Deferred[Any] = Deferred()
    waiter.errback(error)
    return waiter


class TwistedSession:
    """One association; the methods of :class:`~dlmsd.client.blocking.Session`, as Deferreds."""

    def __init__(self, driver: LinkDriver, channel: Channel) -> None:
        self._driver = driver
        self._channel = channel
        self._ops = Operations()
        self._closed = False

    @property
    def settings(self) -> ClientSettings:
        return self._channel.connection.settings

    @property
    def connection(self) -> ClientConnection:
        return self._channel.connection

    @property
    def closed(self) -> bool:
        return self._closed

    def get(
        self,
        target: Target | Obis | str,
        attribute: int | None = None,
        access: SelectiveAccess | None = None,
    ) -> Deferred[Data]:
        return self.run(self._ops.get(target, attribute, access))

    def get_many(
        self, targets: Sequence[Target | Obis | str]
    ) -> Deferred[list[Data | DataAccessResult]]:
        return self.run(self._ops.get_many(targets))

    def set(
        self,
        target: Target | Obis | str,
        value: Data,
        attribute: int | None = None,
        access: SelectiveAccess | None = None,
    ) -> Deferred[None]:
        return self.run(self._ops.set(target, value, attribute, access))

    def action(
        self,
        target: Obis | str,
        method: int,
        parameters: Data | None = None,
        *,
        class_id: int | None = None,
    ) -> Deferred[Data | None]:
        return self.run(self._ops.action(target, method, parameters, class_id))

    def object_list(self) -> Deferred[list[ObjectListEntry]]:
        return self.run(self._ops.object_list())

    def read_register(self, target: Target | Obis | str) -> Deferred[RegisterReading]:
        return self.run(self._ops.read_register(target))

    def read_clock(self) -> Deferred[CosemDateTime]:
        return self.run(self._ops.read_clock())

    def read_invocation_counter(self, obis: Obis | str = DEFAULT_FRAME_COUNTER) -> Deferred[int]:
        return self.run(self._ops.read_invocation_counter(obis))

    def read_profile(
        self,
        obis: Obis | str,
        *,
        from_: datetime | None = None,
        to: datetime | None = None,
        entries: tuple[int, int] | None = None,
        columns: Sequence[int] | None = None,
        apply_scalers: bool = True,
    ) -> Deferred[ProfileRows]:
        return self.run(
            self._ops.read_profile(
                obis,
                from_=from_,
                to=to,
                entries=entries,
                columns=columns,
                apply_scalers=apply_scalers,
            )
        )

    def run(self, operation: Operation[T]) -> Deferred[T]:
        """Run any operation of :class:`~dlmsd.client.operations.Operations`."""
        return Deferred.fromCoroutine(self._run(operation))

    def close(self, *, drop_link: bool = True) -> Deferred[None]:
        """Release the association and take the link down; never fails.

        ``drop_link=False`` leaves the TCP connection open (push-then-read: the
        connection belongs to the listener).
        """
        return Deferred.fromCoroutine(self._close(drop_link))

    # -- driving ----------------------------------------------------------------------

    async def _close(self, drop_link: bool) -> None:
        if self._closed:
            return
        self._closed = True
        driver = self._driver
        timeout, retries = driver.timeout, driver.retries
        driver.timeout, driver.retries = min(timeout, _CLOSE_TIMEOUT), 0
        try:
            if self._channel.connection.state is ClientState.ASSOCIATED:
                await self._exchange(lambda connection: connection.release())
            closing = self._channel.close_link()
            if closing:
                driver.write(closing)
                await driver.wait(lambda: True if self._channel.link_closed() else None)
        except (ClientError, DlmsError):
            driver.abort()
            return
        finally:
            driver.timeout, driver.retries = timeout, retries
        if drop_link:
            driver.abort()

    async def _open(self) -> None:
        driver = self._driver
        driver.channel = self._channel
        with session_failures(self._channel, self._break, opening=True):
            opening = self._channel.open_link()
            if opening:
                driver.write(opening)
                await driver.wait(lambda: True if self._channel.link_up() else None)
            await self._run_unchecked(self._ops.associate())

    async def _run(self, operation: Operation[T]) -> T:
        if self._closed:
            raise ClientError("the session is closed")
        with session_failures(self._channel, self._break):
            return await self._run_unchecked(operation)

    async def _run_unchecked(self, operation: Operation[T]) -> T:
        try:
            request = next(operation)
            while True:
                event = await self._exchange(request)
                request = operation.send(event)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _exchange(self, build: Request) -> object:
        try:
            frames = self._channel.request(build)
        except DlmsError as error:
            raise ServiceError(f"cannot send the request: {error.reason}") from None
        self._driver.write(frames)
        return await self._driver.wait(self._poll_event)

    def _poll_event(self) -> object | None:
        event = self._channel.next_event()
        return None if event is NEED_DATA else event

    def _break(self) -> None:
        self._closed = True
        self._driver.abort()


async def open_session(
    driver: LinkDriver,
    transport: ClientTransport,
    settings: ClientSettings,
    *,
    invocation_counter_obis: Obis | str | None = None,
    challenge_source: Callable[[int], bytes] = os.urandom,
) -> TwistedSession:
    """Associate over a connected driver (after a public association for the IC, if asked)."""
    if invocation_counter_obis is not None and settings.ciphering != Ciphering.NONE:
        public = public_association(settings, transport)
        first = TwistedSession(driver, Channel(transport, ClientConnection(public)))
        await first._open()
        try:
            counter = await first.read_invocation_counter(invocation_counter_obis)
        finally:
            await first.close(drop_link=False)
        settings = after_counter_read(settings, transport, counter)
    session = TwistedSession(
        driver, Channel(transport, ClientConnection(settings, challenge_source))
    )
    await session._open()
    return session


class ClientProtocol(Protocol):
    """A connection we opened to a meter; its bytes go to a :class:`LinkDriver`."""

    def __init__(self, clock: Any, timeout: float, retries: int) -> None:
        self.driver = LinkDriver(clock, self._write, self._abort, timeout=timeout, retries=retries)

    def _write(self, data: bytes) -> None:
        transport: Any = self.transport
        transport.write(data)

    def _abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None) or transport.loseConnection
            abort()

    def dataReceived(self, data: bytes) -> None:
        self.driver.data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.driver.connection_lost("the connection to the meter was closed")


async def connect_tcp_async(
    reactor: Any,
    host: str,
    port: int,
    settings: ClientSettings | None = None,
    *,
    transport: TransportName = "wrapper",
    physical_address: int | None = DEFAULT_PHYSICAL_ADDRESS,
    timeout: float = 5.0,
    retries: int = 3,
    invocation_counter_obis: Obis | str | None = None,
    challenge_source: Callable[[int], bytes] = os.urandom,
) -> TwistedSession:
    """:func:`connect_tcp` as a coroutine."""
    chosen = settings if settings is not None else ClientSettings()
    framing = make_transport(transport, chosen, physical_address=physical_address)
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=max(1, int(timeout)))
    factory: Any = Factory.forProtocol(lambda: ClientProtocol(reactor, timeout, retries))
    try:
        protocol = await endpoint.connect(factory)
    except Exception as error:  # ConnectError and friends
        raise ConnectionFailed(f"cannot connect to {host}:{port}: {_reason(error)}") from None
    assert isinstance(protocol, ClientProtocol)
    return await open_session(
        protocol.driver,
        framing,
        chosen,
        invocation_counter_obis=invocation_counter_obis,
        challenge_source=challenge_source,
    )


def connect_tcp(
    reactor: Any, host: str, port: int, *args: Any, **kwargs: Any
) -> Deferred[TwistedSession]:
    """Connect to a meter on TCP (wrapper or HDLC) and associate; fires with the session."""
    coroutine: Coroutine[Any, Any, TwistedSession] = connect_tcp_async(
        reactor, host, port, *args, **kwargs
    )
    return Deferred.fromCoroutine(coroutine)


async def connect_serial_async(
    reactor: Any,
    device: str,
    settings: ClientSettings | None = None,
    *,
    baudrate: int = 9600,
    physical_address: int | None = DEFAULT_PHYSICAL_ADDRESS,
    timeout: float = 5.0,
    retries: int = 3,
    challenge_source: Callable[[int], bytes] = os.urandom,
) -> TwistedSession:
    """Open a serial port (HDLC) and associate."""
    from twisted.internet import serialport

    serial_port: Any = serialport.SerialPort

    chosen = settings if settings is not None else ClientSettings()
    protocol = ClientProtocol(reactor, timeout, retries)
    try:
        serial_port(protocol, device, reactor, baudrate=baudrate)
    except Exception as error:  # serial.SerialException, OSError
        raise ConnectionFailed(f"cannot open {device}: {_reason(error)}") from None
    framing = make_transport("hdlc", chosen, physical_address=physical_address)
    return await open_session(protocol.driver, framing, chosen, challenge_source=challenge_source)


def session_on_connection(
    clock: Any,
    write: Callable[[bytes], object],
    abort: Callable[[], object],
    transport: ClientTransport,
    settings: ClientSettings,
    *,
    timeout: float = 5.0,
    retries: int = 3,
    invocation_counter_obis: Obis | str | None = None,
) -> tuple[LinkDriver, Deferred[TwistedSession]]:
    """A session over a connection owned elsewhere (e.g. a meter that connected to push).

    Feed the connection's bytes to the returned driver's ``data_received`` and
    its loss to ``connection_lost``; the Deferred fires once associated.
    """
    driver = LinkDriver(clock, write, abort, timeout=timeout, retries=retries)
    opened = Deferred.fromCoroutine(
        open_session(driver, transport, settings, invocation_counter_obis=invocation_counter_obis)
    )
    return driver, opened


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
