"""``dlmsd state reset-counter`` and ``dlmsd quarantine replay``: meter lifecycle commands.

Both work on a running daemon (see `dlmsd.service.lifecycle`):

* SQLite state belongs to the daemon that runs on it, so the command asks
  that daemon over its control socket (``<state_dir>/control.sock``). When no
  daemon answers there, `reset-counter` changes the SQLite file itself.
* PostgreSQL state is shared: `reset-counter` deletes the counter and records
  the reset in ``dlmsd_counter_resets`` in one transaction; every daemon on
  the database applies it within about a second (`refresh_interval`).

`quarantine replay` always runs inside the daemon: it needs the daemon's key
store, ingest and sinks.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any, TextIO

from dlmsd.service import control
from dlmsd.service.config import Config, ConfigError, load_config
from dlmsd.service.lifecycle import requester
from dlmsd.service.state import StateError
from dlmsd.service.statebackend import is_postgresql, redact_dsn, sqlite_path

_TITLE = re.compile(r"[0-9A-Fa-f]{16}")


def add_reset_counter(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``dlmsd state reset-counter TITLE (--config FILE | --dsn DSN)``."""
    text = "forget a meter's replay counter after a legitimate restart (firmware, new keys)"
    action = actions.add_parser(
        "reset-counter",
        help=text,
        description=text + ". Works while the daemon runs; the daemon logs it.",
    )
    action.add_argument(
        "meter", metavar="TITLE", help="system title (16 hex), or the meter's key store name"
    )
    where = action.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="PATH", help="the daemon's config (preferred)")
    where.add_argument("--dsn", help="sqlite:///PATH, a path, or postgresql://...")
    action.set_defaults(func=run_reset_counter)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlmsd quarantine ...`` to the command line."""
    quarantine = sub.add_parser(
        "quarantine",
        help="replay quarantined frames once their meters' keys are known",
        description="Frames of meters the key store did not know are kept in the quarantine.",
    )
    actions = quarantine.add_subparsers(dest="quarantine_command", metavar="ACTION")
    actions.required = True
    text = (
        "feed quarantined frames of meters now in the key store through the running daemon"
        " (same checks, counters and sinks as live pushes)"
    )
    replay = actions.add_parser("replay", help=text, description=text)
    replay.add_argument("--config", metavar="PATH", required=True, help="the daemon's config")
    replay.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the daemon (600)"
    )
    replay.set_defaults(func=run_replay)


def _fail(command: str, message: object) -> int:
    print(f"dlmsd {command}: {message}", file=sys.stderr)
    return 2


def run_replay(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        config = load_config(args.config)
        reply = control.request(
            control.socket_path(config.daemon.state_dir),
            "quarantine-replay",
            timeout=args.timeout,
        )
    except ConfigError as error:
        return _fail("quarantine replay", error)
    except control.ControlUnavailable as error:
        return _fail("quarantine replay", f"{error}: start the daemon; the replay runs in it")
    except control.ControlError as error:
        return _fail("quarantine replay", error)
    outcomes = ", ".join(f"{key} {value}" for key, value in sorted(reply["outcomes"].items()))
    print(
        f"{reply['frames']} quarantined frames: {outcomes or 'none'};"
        f" {reply['kept']} kept in the quarantine",
        file=out,
    )
    return 0


def run_reset_counter(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        config = load_config(args.config) if args.config else None
        title = _resolve_title(args.meter, config)
        dsn = args.dsn or (config.state.dsn or str(config.state_db) if config else "")
        if is_postgresql(dsn):
            return _reset_postgresql(dsn, title, out)
        state_dir = config.daemon.state_dir if config else sqlite_path(dsn).parent
        return _reset_sqlite(dsn, state_dir, title, out)
    except (ConfigError, StateError, control.ControlError) as error:
        return _fail("state reset-counter", error)


def _resolve_title(meter: str, config: Config | None) -> bytes:
    if _TITLE.fullmatch(meter):
        return bytes.fromhex(meter)
    if config is None:
        raise ConfigError(f"{meter!r}: give a system title (16 hex), or --config to use names")
    from dlmsd.service.keystore import KeyFileError, KeyStore

    try:
        store = KeyStore.load(config.keys.files)
    except KeyFileError as error:
        raise ConfigError(f"key store: {error}") from None
    for entry in store:
        if entry.name == meter:
            return entry.system_title
    raise ConfigError(f"{meter!r}: no meter of that name in the key store")


def _previous(value: Any) -> str:
    return "none" if value is None else str(value)


def _reset_postgresql(dsn: str, title: bytes, out: TextIO) -> int:
    from dlmsd.service import pgstate

    conn = pgstate.connect(dsn)
    try:
        if pgstate.schema_version(conn) < pgstate.SCHEMA_VERSION:
            raise StateError(f"{redact_dsn(dsn)}: schema not current: run `dlmsd state migrate`")
        try:
            reset_id, previous = pgstate.reset_counter(conn, title, requester())
        except Exception as error:  # psycopg.Error; psycopg is imported by pgstate only
            raise StateError(f"{redact_dsn(dsn)}: {str(error).strip()}") from None
    finally:
        conn.close()
    print(
        f"{title.hex().upper()}: counter reset (was {_previous(previous)}; reset #{reset_id});"
        " every daemon on this database applies it within about a second",
        file=out,
    )
    return 0


def _reset_sqlite(dsn: str, state_dir: Path, title: bytes, out: TextIO) -> int:
    hex_title = title.hex().upper()
    path = control.socket_path(state_dir)
    try:
        reply = control.request(
            path, "reset-counter", timeout=60.0, system_title=hex_title, requested_by=requester()
        )
    except control.ControlUnavailable:
        pass
    else:
        print(
            f"{reply['meter']} ({hex_title}): counter reset by the running daemon"
            f" (was {_previous(reply['previous'])})",
            file=out,
        )
        return 0
    # No daemon on this state directory: the file is ours to change.
    db_path = sqlite_path(dsn)
    if not db_path.exists():
        raise StateError(f"{db_path}: no such state database")
    previous = _forget_in_file(db_path, title)
    print(
        f"{hex_title}: counter reset in {db_path} (was {_previous(previous)});"
        f" no daemon answered on {path}",
        file=out,
    )
    return 0


def _forget_in_file(db_path: Path, title: bytes) -> int | None:
    # The lock a daemon holds on its SQLite state (``<database>.lock``, flock): a
    # daemon running without a control socket must not have its file changed
    # under its in-memory counters.
    lock = os.open(db_path.with_name(db_path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(
                f"{db_path}: in use by a daemon that does not answer on its control socket;"
                " stop it, reset, start it again"
            ) from None
        return _delete_counter(db_path, title)
    finally:
        os.close(lock)


def _delete_counter(db_path: Path, title: bytes) -> int | None:
    try:
        db = sqlite3.connect(str(db_path), isolation_level=None, timeout=10.0)
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT invocation_counter FROM counters WHERE system_title = ?", (title,)
            ).fetchone()
            db.execute("DELETE FROM counters WHERE system_title = ?", (title,))
            db.execute("COMMIT")
        finally:
            db.close()
    except sqlite3.Error as error:
        raise StateError(f"{db_path}: {error}") from None
    return int(row[0]) if row else None
