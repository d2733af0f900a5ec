"""``dlmsd keys reload [--force]``: check the key files, then have the daemon reload them.

The daemon reloads its key files on SIGHUP and refuses a reload that would drop
more than ``[keys] reload_max_drop`` of its meters (an empty or truncated file).
This command checks the files as the daemon will read them, finds the daemon
(``--pid``, or the holder of the SQLite state's lock), sends SIGHUP, and tells
from the daemon's metrics whether it reloaded or refused (exit 0 or 2). With
``--force`` it first leaves a marker in the state directory; the daemon takes
the marker on that SIGHUP and reloads whatever the files hold. A marker older
than `FORCE_TTL` is ignored, so a forced reload never happens by surprise later.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlmsd.service.config import Config

FORCE_MARKER = "keys-reload.force"
FORCE_TTL = 60.0  # seconds a --force marker stays valid


def force_marker(state_dir: Path) -> Path:
    return state_dir / FORCE_MARKER


def take_force_marker(state_dir: Path, now: float | None = None) -> bool:
    """Whether ``dlmsd keys reload --force`` asked for this reload; removes the marker."""
    path = force_marker(state_dir)
    try:
        written = path.stat().st_mtime
        path.unlink()
    except OSError:
        return False
    return (time.time() if now is None else now) - written <= FORCE_TTL


def register_reload(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys reload`` to the ``dlmsd keys`` subparsers."""
    reload = sub.add_parser(
        "reload",
        help="check the key files, then make the running daemon reload them (SIGHUP)",
        description="Check the daemon's key files, then send it SIGHUP. A reload that "
        "would drop more than [keys] reload_max_drop of the meters is refused by the "
        "daemon unless --force.",
    )
    reload.add_argument("--config", required=True, type=Path, help="the daemon's config")
    reload.add_argument(
        "--pid", type=int, help="the daemon's pid (default: the holder of the SQLite state)"
    )
    reload.add_argument(
        "--force", action="store_true", help="reload even if it drops many or all meters"
    )
    reload.set_defaults(func=run_reload)


def _fail(message: str) -> int:
    print(f"dlmsd keys reload: {message}", file=sys.stderr)
    return 2


def run_reload(args: argparse.Namespace) -> int:
    from dlmsd.service.config import ConfigError, load_config
    from dlmsd.service.keystore import KeyFileError, load_meters

    try:
        config = load_config(args.config)
    except ConfigError as error:
        return _fail(str(error))
    try:
        meters = load_meters(config.keys.files)
    except KeyFileError as error:
        return _fail(f"{error} (nothing sent: the daemon would refuse it too)")
    pid = args.pid if args.pid is not None else _daemon_pid(config)
    if isinstance(pid, str):
        return _fail(pid)
    before = _reload_metrics(config)
    if args.force:
        marker = force_marker(config.daemon.state_dir)
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
        except OSError as error:
            return _fail(f"cannot write {marker}: {error.strerror or error}")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as error:
        if args.force:
            with contextlib.suppress(OSError):
                force_marker(config.daemon.state_dir).unlink()
        return _fail(f"cannot signal pid {pid}: {error.strerror or error}")
    how = "forced reload" if args.force else "reload"
    sent = f"key files hold {len(meters)} meters; sent SIGHUP ({how}) to dlmsd pid {pid}"
    if before is None:
        print(f"{sent}; its log says what it did")
        return 0
    outcome = _await_outcome(config, before)
    if outcome == "refused":
        return _fail(f"{sent}; the daemon refused the reload (its log says why; --force)")
    if outcome == "reloaded":
        print(f"{sent}; reloaded")
    else:
        print(f"{sent}; no answer on its metrics yet: its log says what it did")
    return 0


_FAILURES = "dlmsd_keystore_reload_failures_total"
_LAST_RELOAD = "dlmsd_keystore_last_reload_timestamp_seconds"


def _reload_metrics(config: Config) -> tuple[float, float] | None:
    """(reload failures, last reload time) from the daemon's /metrics; None if unreadable."""
    import urllib.request

    if not config.metrics.enabled or not config.metrics.port:
        return None
    host = config.metrics.address
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host}:{config.metrics.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (_FAILURES, _LAST_RELOAD):
            try:
                values[name] = float(value)
            except ValueError:
                return None
    if len(values) != 2:
        return None
    return values[_FAILURES], values[_LAST_RELOAD]


def _await_outcome(config: Config, before: tuple[float, float], wait: float = 10.0) -> str:
    """ "reloaded", "refused" or "unknown": what the daemon's metrics say after the SIGHUP."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _reload_metrics(config)
        if now is None:
            continue
        if now[0] > before[0]:
            return "refused"
        if now[1] != before[1]:
            return "reloaded"
    return "unknown"


def _daemon_pid(config: Config) -> int | str:
    """The pid holding the SQLite state's lock, or why there is none."""
    from dlmsd.service.statebackend import is_postgresql, sqlite_path
    from dlmsd.service.statelock import lock_path

    dsn = config.state.dsn or str(config.state_db)
    if is_postgresql(dsn):
        return "the state is in PostgreSQL: give the daemon's --pid (or systemctl reload dlmsd)"
    path = lock_path(sqlite_path(dsn))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return f"no daemon has run on this state ({path} missing): is it running?"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            if text.isdigit():
                return int(text)
            return f"{path} names no pid: give --pid"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return f"no daemon holds {path}: is it running?"
    finally:
        os.close(fd)
