"""The emulator's Push Setup (class 40) at work: real pushes to a head-end.

``dlmsd emulate --push-to HOST:PORT --push-every S`` reads the push setup object
of the emulated meter every S seconds (its push_object_list, attribute 2), takes
the current value of each listed attribute, and sends a DataNotification to the
head-end over the TCP or UDP wrapper: in general-glo-ciphering with the meter's
keys and system title when it has keys (suite 0, authenticated and encrypted),
plain otherwise. A client invoking the push method (ACTION 1) adds one push to
the next tick.

The body is the self-describing layout many meters use (e.g. the Norwegian HAN
lists): an array with one ``structure {logical name, value[, scaler_unit]}`` per
push object, registers with their scaler_unit, so a head-end needs no push object
list of its own to name and scale the values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

import attrs

from dlmsd.cosem import objects as ic
from dlmsd.cosem.model import ObjectModel
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.apdus.selective import CaptureObjectDefinition
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.ciphered import GeneralGloCiphering
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError, EncodeError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.wrapper import WrapperFrame

__all__ = ["PushSender", "PushTarget", "build_push", "parse_push_target", "push_objects"]

PushProtocol = Literal["tcp", "udp"]
_SECURITY_CONTROL = 0x30  # authenticated and encrypted, suite 0
_SCALED_CLASSES = (ic.Register.CLASS_ID, ic.ExtendedRegister.CLASS_ID)
#: wPort of the head-end's push listener (the client SAP pushes go to, IDIS: 1... any)
_HEAD_END_WPORT = 1


@attrs.frozen(slots=True)
class PushTarget:
    """Where the pushes go: ``HOST:PORT`` over TCP or UDP."""

    host: str
    port: int
    protocol: PushProtocol = "tcp"

    @property
    def destination(self) -> bytes:
        """send_destination of Push Setup attribute 3."""
        return f"{self.host}:{self.port}".encode()


def parse_push_target(text: str, protocol: PushProtocol = "tcp") -> PushTarget:
    """``HOST:PORT`` (``[v6]:PORT`` too); raises ValueError with a message for the user."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--push-to must be HOST:PORT, got {text!r}")
    return PushTarget(host, int(port), protocol)


def push_objects(model: ObjectModel) -> tuple[CaptureObjectDefinition, ...]:
    """The push object list (Push Setup attribute 2) as the meter holds it now."""
    push_setup = model.find(ic.PushSetup.CLASS_ID, ic.PUSH_SETUP)
    if push_setup is None:
        return ()
    value = push_setup.value(ic.PushSetupAttribute.PUSH_OBJECT_LIST)
    if not isinstance(value, Data):
        return ()
    return ic.decode_capture_objects(value)


def _entry(model: ObjectModel, column: CaptureObjectDefinition) -> Data | None:
    obj = model.objects.get(column.logical_name)
    if obj is None or obj.class_id != column.class_id:
        return None
    value = obj.value(column.attribute_index)
    if not isinstance(value, Data):
        return None
    fields = [Data.octet_string(column.logical_name.to_bytes()), value]
    if column.class_id in _SCALED_CLASSES and column.attribute_index == 2:
        scaler_unit = obj.value(ic.RegisterAttribute.SCALER_UNIT)
        if isinstance(scaler_unit, Data):
            fields.append(scaler_unit)
    return Data.structure(*fields)


def build_push(
    model: ObjectModel,
    system_title: bytes,
    cipher: Suite0Cipher | None,
    moment: dt.datetime,
    logical_device: int = 1,
) -> bytes:
    """One push as a wrapper frame; takes the next server invocation counter when
    ciphering (the counter the meter's sessions use too, so it never repeats)."""
    entries = [_entry(model, column) for column in push_objects(model)]
    body = Data.array(*(entry for entry in entries if entry is not None))
    counter = model.server_invocation_counter
    stamp = CosemDateTime.from_datetime(moment, clock_status=0)
    apdu = DataNotification(
        long_invoke_id_and_priority=counter & 0x00FFFFFF, date_time=stamp, body=body
    ).to_bytes()
    if cipher is not None:
        model.server_invocation_counter = counter + 1
        payload = cipher.encrypt(system_title, _SECURITY_CONTROL, counter, apdu)
        apdu = GeneralGloCiphering(system_title, _SECURITY_CONTROL, counter, payload).to_bytes()
    return WrapperFrame(logical_device, _HEAD_END_WPORT, apdu).to_bytes()


def set_destination(model: ObjectModel, target: PushTarget) -> None:
    """Write the target into Push Setup attribute 3 (send_destination_and_method)."""
    push_setup = model.find(ic.PushSetup.CLASS_ID, ic.PUSH_SETUP)
    if push_setup is None:
        return
    service = ic.TransportService.TCP if target.protocol == "tcp" else ic.TransportService.UDP
    value = ic.SendDestinationAndMethod(service, target.destination).to_data()
    attribute = push_setup.attributes[ic.PushSetupAttribute.SEND_DESTINATION_AND_METHOD]
    if attribute.setter is not None:
        attribute.setter(value)


def set_push_objects(model: ObjectModel, specs: list[str]) -> None:
    """Replace the push object list with ``OBIS[:attribute]`` items (class from the model).

    Raises ValueError naming the item when the model has no such object.
    """
    columns = [CaptureObjectDefinition(ic.PushSetup.CLASS_ID, ic.PUSH_SETUP, 1)]
    for spec in specs:
        head, sep, tail = spec.rpartition(":")
        try:
            if sep and tail.isdigit() and "-" in head and ":" in head:
                obis, attribute = Obis.parse(head), int(tail)
            else:
                obis, attribute = Obis.parse(spec), 2
        except DlmsError:
            raise ValueError(f"--push-object {spec!r}: not OBIS[:attribute]") from None
        obj = model.objects.get(obis)
        if obj is None or attribute not in obj.attributes:
            raise ValueError(f"--push-object {spec!r}: the meter has no such attribute")
        columns.append(CaptureObjectDefinition(obj.class_id, obis, attribute))
    push_setup = model.find(ic.PushSetup.CLASS_ID, ic.PUSH_SETUP)
    if push_setup is None:
        raise ValueError("the meter has no push setup")
    setter = push_setup.attributes[ic.PushSetupAttribute.PUSH_OBJECT_LIST].setter
    if setter is None:
        raise EncodeError("push object list is not writable")
    setter(Data.array(*(column.to_data() for column in columns)))


class PushSender:
    """Sends a push every `every` seconds (and when a client invokes the push method)."""

    def __init__(
        self,
        reactor: Any,
        model: ObjectModel,
        target: PushTarget,
        every: float,
        *,
        system_title: bytes,
        cipher: Suite0Cipher | None,
        logical_device: int = 1,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.reactor = reactor
        self.model = model
        self.target = target
        self.every = every
        self.system_title = system_title
        self.cipher = cipher
        self.logical_device = logical_device
        self._now = now
        self.sent = 0
        self.failed = 0
        self._loop: Any = None
        self._udp: Any = None
        set_destination(model, target)

    def _moment(self) -> dt.datetime:
        if self._now is not None:
            return self._now()
        clock = self.model.find(ic.Clock.CLASS_ID, ic.CLOCK)
        value = clock.value(ic.ClockAttribute.TIME) if clock is not None else None
        if isinstance(value, Data) and isinstance(value.value, bytes):
            moment = CosemDateTime.from_bytes(value.value).to_datetime()
            if moment is not None:
                return moment
        return dt.datetime.now(dt.UTC)

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        if self.target.protocol == "udp":
            import socket

            from twisted.internet.protocol import DatagramProtocol

            # UDP writes take an address, not a name: resolve once, at start
            address = socket.gethostbyname(self.target.host)
            self.target = attrs.evolve(self.target, host=address)
            self._udp = self.reactor.listenUDP(0, DatagramProtocol(), interface="")
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(self.every, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._udp is not None:
            self._udp.stopListening()
            self._udp = None

    def tick(self) -> None:
        """One scheduled push, plus one per push method invocation since the last tick."""
        requested = len(self.model.push_requests)
        self.model.push_requests.clear()
        for _ in range(1 + requested):
            self.push_now()

    def push_now(self) -> None:
        frame = build_push(
            self.model, self.system_title, self.cipher, self._moment(), self.logical_device
        )
        if self.target.protocol == "udp":
            self._udp.write(frame, (self.target.host, self.target.port))
            self.sent += 1
            return
        self._send_tcp(frame)

    def _send_tcp(self, frame: bytes) -> None:
        from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        class _OneShot(Protocol):
            def connectionMade(self) -> None:
                transport: Any = self.transport
                transport.write(frame)
                transport.loseConnection()  # after the write is flushed

        endpoint = HostnameEndpoint(self.reactor, self.target.host, self.target.port, timeout=10)
        connected = connectProtocol(endpoint, _OneShot())  # type: ignore[no-untyped-call]

        def done(_result: object) -> None:
            self.sent += 1

        def failed(_failure: object) -> None:
            self.failed += 1  # the head-end is down: the next tick tries again

        connected.addCallbacks(done, failed)
