"""What the HDLC and M-Bus listeners over TCP share (a serial-to-TCP bridge in front
of one meter): each connection gets its own push receiver, so its own reassembly
state; they differ only in the receiver type and the transport name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IListeningPort

from dlmsd.service.ingest import Ingest
from dlmsd.service.metrics import Metrics
from dlmsd.service.serial_push import LineReceiver
from dlmsd.service.tcp import PushStreamFactory, PushStreamProtocol


class LineTcpSettings(TypingProtocol):
    """The options every line-over-TCP listener's config has."""

    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_connections_per_source(self) -> int: ...
    @property
    def max_apdu_size(self) -> int: ...
    @property
    def system_title(self) -> bytes | None: ...


class LineTcpFactory(PushStreamFactory):
    """One `receiver_type` per connection; subclasses name it and `transport_name`."""

    receiver_type: ClassVar[Callable[..., LineReceiver]]

    def __init__(self, ingest: Ingest, metrics: Metrics, config: LineTcpSettings) -> None:
        super().__init__(
            ingest,
            metrics,
            name=config.name,
            idle_timeout=config.idle_timeout,
            max_connections=config.max_connections,
            max_connections_per_source=config.max_connections_per_source,
        )
        self.max_apdu_size = config.max_apdu_size
        self.system_title = config.system_title
        self.dropped = metrics.partial_pushes_dropped.labels(config.name).inc

    def make_protocol(self) -> PushStreamProtocol:
        return LineTcpProtocol()


class LineTcpProtocol(PushStreamProtocol):
    """One TCP connection carrying one meter's line."""

    _receiver: LineReceiver

    def connectionMade(self) -> None:
        super().connectionMade()
        factory = self.factory
        assert isinstance(factory, LineTcpFactory)
        self._receiver = factory.receiver_type(
            factory.ingest,
            transport=factory.transport_name,
            source=self.source,
            on_frame=self.frame_received,
            max_apdu_size=factory.max_apdu_size,
            system_title=factory.system_title,
            on_dropped=factory.dropped,
        )

    def dataReceived(self, data: bytes) -> None:
        self._receiver.data_received(data)


def listen_line_tcp(
    reactor: Any, factory: LineTcpFactory, config: LineTcpSettings
) -> IListeningPort:
    """Start listening with `factory` on the config's address and port."""
    port: IListeningPort = reactor.listenTCP(
        config.port, factory, backlog=1024, interface=config.address
    )
    return port
