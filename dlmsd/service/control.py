"""The daemon's control socket: operator commands that must reach the running daemon.

The SQLite state belongs to the daemon while it runs (it caches the counters
in memory and holds the database), so `dlmsd state reset-counter` and
`dlmsd quarantine replay` ask the daemon to do the work instead of opening its
files. The socket is ``<state_dir>/control.sock``, a Unix stream socket of
mode 0600 in the 0700 state directory: only the daemon's user (and root) can
connect, the same people who can read its key files.

Protocol: the client sends one JSON object on one line
(``{"command": "reset-counter", "system_title": "4B46..."}``) and reads one
JSON object back (``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``);
then the connection closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

CONTROL_SOCKET = "control.sock"
# sun_path holds 108 bytes on Linux, NUL included.
_MAX_SOCKET_PATH = 107

Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """A command the daemon refused or could not run; the message says why."""


class ControlUnavailable(ControlError):
    """No daemon answers on the socket (not running, or running without a control socket)."""


def socket_path(state_dir: Path) -> Path:
    """Where the daemon with this state directory listens."""
    return state_dir / CONTROL_SOCKET


class _ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65_536

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = handlers
        self._busy = False

    def lineReceived(self, line: bytes) -> None:
        if self._busy:
            return
        self._busy = True
        defer.ensureDeferred(self._answer(line))

    async def _answer(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ControlError("expected a JSON object")
            handler = self._handlers.get(str(request.get("command")))
            if handler is None:
                known = ", ".join(sorted(self._handlers))
                raise ControlError(f"unknown command {request.get('command')!r} (known: {known})")
            reply: dict[str, Any] = {"ok": True, **(await handler(request))}
        except (ControlError, ValueError) as error:
            reply = {"ok": False, "error": str(error)}
        except Exception as error:  # the daemon goes on serving whatever a command did
            ControlServer.log.failure("control command failed")
            reply = {"ok": False, "error": f"internal error: {type(error).__name__}"}
        self.sendLine(json.dumps(reply).encode())  # type: ignore[no-untyped-call]
        self._close()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._close()

    def _close(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()


class ControlServer(Service):
    """Listens on the control socket while the daemon runs."""

    log = Logger()

    def __init__(self, path: Path, handlers: Mapping[str, Handler], reactor: Any) -> None:
        self.path = path
        self.handlers = handlers
        self._reactor = reactor
        self._port: Any = None

    def startService(self) -> None:
        Service.startService(self)  # type: ignore[no-untyped-call]
        if len(os.fsencode(self.path)) > _MAX_SOCKET_PATH:
            self.log.warn(
                "no control socket: path {path} too long for a Unix socket;"
                " `dlmsd state reset-counter` and `dlmsd quarantine replay` cannot reach"
                " this daemon",
                path=str(self.path),
            )
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # A socket left by a daemon that died: nobody listens on it any more.
            with contextlib.suppress(FileNotFoundError):
                if _answers(self.path):
                    raise OSError(f"another daemon answers on {self.path}")
                self.path.unlink()
            factory = Factory.forProtocol(lambda: _ControlProtocol(self.handlers))
            factory.noisy = False
            old_umask = os.umask(0o177)  # created 0600, never briefly wider
            try:
                self._port = self._reactor.listenUNIX(str(self.path), factory, mode=0o600)
            finally:
                os.umask(old_umask)
        except Exception as error:
            self.log.error(
                "no control socket at {path}: {error}", path=str(self.path), error=str(error)
            )

    def stopService(self) -> Any:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        port, self._port = self._port, None
        if port is None:
            return None
        stopped = defer.maybeDeferred(port.stopListening)

        def remove(result: object) -> object:
            with contextlib.suppress(OSError):
                self.path.unlink()
            return result

        return stopped.addBoth(remove)


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def request(path: Path, command: str, timeout: float = 600.0, **fields: Any) -> dict[str, Any]:
    """Send one command to the daemon and return its answer (blocking; for the CLI).

    Raises `ControlUnavailable` when nobody listens at `path`, `ControlError`
    when the daemon refused the command.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise ControlUnavailable(
                f"no daemon answers on {path} ({error.strerror or error})"
            ) from None
        except OSError as error:
            raise ControlError(f"{path}: {error.strerror or error}") from None
        sock.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65_536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"{path}: no answer within {timeout:g} s") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: the daemon closed the connection without an answer") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: unexpected answer")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply
