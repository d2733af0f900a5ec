"""The UDP listener's receive buffer: configurable, 4 MiB by default, 0 = kernel default."""

from __future__ import annotations

import socket
import tomllib

import pytest

from dlmsd.service.config import DEFAULT_UDP_RECEIVE_BUFFER, ConfigError, parse_config
from dlmsd.service.udp import set_receive_buffer
from tests.service.test_config import MINIMAL


def test_default_and_configured_receive_buffer() -> None:
    [udp] = parse_config(tomllib.loads(MINIMAL)).listeners.udp
    assert udp.receive_buffer == DEFAULT_UDP_RECEIVE_BUFFER == 4 * 1024 * 1024
    text = MINIMAL.replace("[[listeners.udp]]", "[[listeners.udp]]\nreceive_buffer = 0")
    [udp] = parse_config(tomllib.loads(text)).listeners.udp
    assert udp.receive_buffer == 0


@pytest.mark.parametrize("bad", ["-1", '"big"', str(2**31)])
def test_bad_receive_buffer_is_refused(bad: str) -> None:
    text = MINIMAL.replace("[[listeners.udp]]", f"[[listeners.udp]]\nreceive_buffer = {bad}")
    with pytest.raises(ConfigError):
        parse_config(tomllib.loads(text))


class _Port:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def test_set_receive_buffer_grows_the_socket_buffer() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        granted = set_receive_buffer(_Port(sock), 1024 * 1024)  # type: ignore[arg-type]
        assert granted == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert granted >= min(before, 1024 * 1024)
        assert set_receive_buffer(_Port(sock), 0) == granted  # type: ignore[arg-type]


def test_set_receive_buffer_without_a_socket_is_a_no_op() -> None:
    assert set_receive_buffer(object(), 1024) == 0  # type: ignore[arg-type]
