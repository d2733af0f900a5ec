"""``dlmsd state migrate|check|export``: the state database, for operators.

Works on both backends. The DSN comes from ``--dsn`` or from the daemon's
``--config`` (its ``[state] dsn``, or the SQLite file in its state directory).

* ``migrate``: create or upgrade the schema (the daemon does this at start
  too; run it first when several daemons start at once, or to see the result).
* ``check``: reachable? schema current? meters with a counter, records queued
  per sink, rows held per daemon instance. Exit 0 when usable, 1 when the
  schema is missing, too old or too new, 2 when the database cannot be read.
* ``export``: counters and queued records as JSON lines on stdout (backups,
  moving from SQLite to PostgreSQL, looking into a stuck spool).
* ``reset-counter``: forget a meter's replay counter after a legitimate
  restart, also while the daemon runs (`dlmsd.service.lifecycle_cli`).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from dlmsd.service.state import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from dlmsd.service.state import StateError
from dlmsd.service.statebackend import is_postgresql, redact_dsn, sqlite_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlmsd state ...`` to the command line."""
    state = sub.add_parser(
        "state",
        help="migrate, check or export the state database (SQLite or PostgreSQL)",
        description="Operate on the daemon's state database: replay counters and the spool.",
    )
    actions = state.add_subparsers(dest="state_command", metavar="ACTION")
    actions.required = True
    for name, text in (
        ("migrate", "create or upgrade the schema"),
        ("check", "report reachability, schema version, counters and queues"),
        ("export", "write counters and queued records as JSON lines to stdout"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        where = action.add_mutually_exclusive_group(required=True)
        where.add_argument("--dsn", help="sqlite:///PATH, a path, or postgresql://...")
        where.add_argument("--config", metavar="PATH", help="take the DSN from a daemon config")
        if name == "export":
            action.add_argument(
                "--what",
                choices=("all", "counters", "spool"),
                default="all",
                help="what to export (default: all)",
            )
        action.set_defaults(func=run_state)
    from dlmsd.service.lifecycle_cli import add_reset_counter

    add_reset_counter(actions)


def resolve_dsn(args: argparse.Namespace) -> str:
    """The DSN given, or the one the config's ``[state]`` section means."""
    if args.dsn:
        return str(args.dsn)
    from dlmsd.service.config import load_config

    config = load_config(args.config)
    return config.state.dsn or str(config.state_db)


def run_state(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one ``dlmsd state`` action; returns the exit status."""
    out = out or sys.stdout
    from dlmsd.service.config import ConfigError

    try:
        dsn = resolve_dsn(args)
    except ConfigError as error:
        print(f"dlmsd state: {error}", file=sys.stderr)
        return 2
    action = args.state_command
    try:
        with _open(dsn, create=action == "migrate") as db:
            if action == "migrate":
                before, after = db.migrate()
                print(f"{db.label}: schema version {before} -> {after}", file=out)
                return 0
            if action == "check":
                return db.check(out)
            for line in db.export(args.what):
                out.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
            return 0
    except StateError as error:
        print(f"dlmsd state: {error}", file=sys.stderr)
        return 2


class _Database:
    """The three actions over one backend's tables."""

    label: str
    supported: int

    def version(self) -> int:
        raise NotImplementedError

    def migrate(self) -> tuple[int, int]:
        raise NotImplementedError

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    tables: dict[str, str]

    def check(self, out: TextIO) -> int:
        version = self.version()
        print(f"{self.label}: reachable", file=out)
        print(f"schema version {version} (this dlmsd: {self.supported})", file=out)
        if version != self.supported:
            hint = "run `dlmsd state migrate`" if version < self.supported else "upgrade dlmsd"
            print(f"schema not current: {hint}", file=out)
            return 1
        counters, spool = self.tables["counters"], self.tables["spool"]
        meters = self.query(f"SELECT count(*) FROM {counters}")[0][0]
        print(f"meters with a counter: {meters}", file=out)
        for sink, depth in self.query(
            f"SELECT sink, count(*) FROM {spool} GROUP BY sink ORDER BY sink"
        ):
            print(f"queued for sink {sink}: {depth}", file=out)
        for instance, held in self.held():
            print(f"rows held by instance {instance}: {held}", file=out)
        return 0

    def held(self) -> list[tuple[Any, ...]]:
        return []

    def export(self, what: str) -> Iterator[dict[str, object]]:
        if what in ("all", "counters"):
            for title, counter in self.query(
                f"SELECT system_title, invocation_counter FROM {self.tables['counters']}"
                " ORDER BY system_title"
            ):
                yield {
                    "type": "counter",
                    "system_title": bytes(title).hex().upper(),
                    "invocation_counter": int(counter),
                }
        if what in ("all", "spool"):
            for row_id, sink, record_id, record, created_at in self.query(
                "SELECT id, sink, record_id, record, created_at"
                f" FROM {self.tables['spool']} ORDER BY id"
            ):
                yield {
                    "type": "spool",
                    "id": int(row_id),
                    "sink": sink,
                    "record_id": record_id,
                    "created_at": float(created_at),
                    "record": json.loads(record),
                }

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Sqlite(_Database):
    tables = {"counters": "counters", "spool": "spool"}
    supported = SQLITE_SCHEMA_VERSION

    def __init__(self, dsn: str, create: bool) -> None:
        self.path = sqlite_path(dsn)
        self.label = f"sqlite {self.path}"
        if not create and not self.path.exists():
            raise StateError(f"{self.path}: no such state database")
        try:
            self._db = sqlite3.connect(str(self.path))
        except sqlite3.Error as error:
            raise StateError(f"{self.path}: {error}") from None

    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> tuple[int, int]:
        from dlmsd.service.state import StateStore

        before = self.version()
        StateStore(self.path, []).close()  # the store migrates when it opens
        return before, self.version()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.Error as error:
            raise StateError(f"{self.path}: {error}") from None

    def close(self) -> None:
        self._db.close()


class _Postgres(_Database):
    tables = {"counters": "dlmsd_counters", "spool": "dlmsd_spool"}

    def __init__(self, dsn: str) -> None:
        from dlmsd.service import pgstate

        self._pg = pgstate
        self.supported = pgstate.SCHEMA_VERSION
        self.label = f"postgresql {redact_dsn(dsn)}"
        self._conn = pgstate.connect(dsn)

    def version(self) -> int:
        return self._pg.schema_version(self._conn)

    def migrate(self) -> tuple[int, int]:
        return self._pg.migrate(self._conn)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            return list(self._conn.execute(sql).fetchall())
        except psycopg.Error as error:
            raise StateError(f"{self.label}: {str(error).strip()}") from None

    def held(self) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT claimed_by, count(*) FROM dlmsd_spool"
            " WHERE claimed_by IS NOT NULL AND lease_until > now()"
            " GROUP BY claimed_by ORDER BY claimed_by"
        )

    def close(self) -> None:
        self._conn.close()


def _open(dsn: str, create: bool) -> _Database:
    return _Postgres(dsn) if is_postgresql(dsn) else _Sqlite(dsn, create)
