"""A real PostgreSQL for the tests and the benchmark: initdb + pg_ctl in a temporary directory.

The Debian package's binaries (``/usr/lib/postgresql/*/bin``, or on PATH) run
the server on a free loopback port, with its socket in the same directory.
initdb refuses to run as root, so as root the server runs as the ``postgres``
system user (created by the Debian package; created here if missing) in a
directory it owns. Authentication is ``trust`` for the superuser ``dlmsd``:
the server only listens on 127.0.0.1 and lives for one test session.

`stop()` / `start()` keep the data directory and port (outage tests);
`create_database()` gives each test a database of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "dlmsd"


def find_bin(name: str) -> str | None:
    """A PostgreSQL server binary: the newest /usr/lib/postgresql/*/bin, else PATH."""
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if versions:
        return versions[-1]
    return shutil.which(name)


def available() -> bool:
    """Are initdb and pg_ctl installed (``make test-deps`` installs them)?"""
    return find_bin("initdb") is not None and find_bin("pg_ctl") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_root() -> bool:
    return os.geteuid() == 0


def _ensure_postgres_user() -> None:
    try:
        subprocess.run(["id", "-u", "postgres"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "postgres"],
            check=True,
            capture_output=True,
        )


class PgServer:
    """One PostgreSQL server in its own temporary directory."""

    def __init__(self, *, fsync: bool = False) -> None:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self._initdb, self._pg_ctl = initdb, pg_ctl
        self.fsync = fsync
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="dlmsd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._databases = 0
        if _as_root():
            _ensure_postgres_user()
            shutil.chown(self.root, "postgres")
        self._run(
            [
                self._initdb,
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                USER,
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )

    def _run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
        if _as_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, timeout=60)

    @property
    def dsn(self) -> str:
        """The maintenance database (``postgres``)."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def running(self) -> bool:
        status = self._run([self._pg_ctl, "-D", str(self.data), "status"], check=False)
        return status.returncode == 0

    def start(self) -> None:
        """Start (or restart) the server on the same port and data directory."""
        if self.running():
            return
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            f" -c max_connections=200 -c fsync={'on' if self.fsync else 'off'}"
            f" -c synchronous_commit={'on' if self.fsync else 'off'}"
            " -c full_page_writes=off"
        )
        result = self._run(
            [
                self._pg_ctl,
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.log),
                "-w",
                "-t",
                "30",
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.decode()}\n{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` closes connections; ``immediate`` is a crash)."""
        self._run([self._pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}_{int(time.monotonic() * 1000) % 100000}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
