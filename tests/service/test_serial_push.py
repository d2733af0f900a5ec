"""The serial-line service the HDLC and M-Bus listeners share: retries a device that
cannot be opened every `reopen_delay` while running, and stops retrying at stop."""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from dlmsd.service.serial_push import SerialLineProtocol, SerialPushService


@attrs.frozen
class Line:
    name: str
    device: str
    baudrate: int = 2400
    bytesize: int = 8
    parity: str = "E"
    stopbits: float = 1
    reopen_delay: float = 5.0


class Receiver:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.resets = 0

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def reset(self) -> None:
        self.resets += 1


def test_a_missing_device_is_retried_until_stop(tmp_path: Path) -> None:
    clock = Clock()
    receiver = Receiver()
    service = SerialPushService(clock, Line("han", str(tmp_path / "ttyUSB9")), receiver)
    service.startService()
    assert service.port is None
    assert receiver.resets == 1  # each open starts from a clean reassembly state
    assert [call.getTime() for call in clock.getDelayedCalls()] == [5.0]
    clock.advance(5.0)
    assert receiver.resets == 2
    assert len(clock.getDelayedCalls()) == 1  # one retry pending, never more
    service.stopService()
    assert clock.getDelayedCalls() == []


def test_the_line_protocol_feeds_the_receiver_and_reports_a_lost_line() -> None:
    receiver = Receiver()
    lost: list[Failure] = []
    protocol = SerialLineProtocol(receiver, lost.append)
    protocol.dataReceived(b"\x7e\xa0")
    protocol.connectionLost(Failure(ConnectionError("unplugged")))
    assert receiver.data == [b"\x7e\xa0"]
    assert len(lost) == 1
