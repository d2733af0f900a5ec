"""The daemon's TOML configuration, validated at start into frozen attrs classes.

Every key is checked: an unknown key (a typo) or a value of the wrong type is
refused with the key's dotted path and the reason, e.g.
``listeners.udp[0].port: expected an integer 0..65535, got 'abc'``.

Relative paths (``daemon.state_dir``, ``keys.files``, ``quarantine.dir``,
and a sink's own path) are resolved against the *current working directory*,
not against the config file's directory: ``make run`` starts the daemon from
the repository root with ``etc/dlmsd.toml`` naming ``var/state`` and
``etc/keys.toml``. Production configs should use absolute paths (the systemd
unit does). The daemon's own paths are made absolute at load time; sink
options go to the sink type's factory as written, which opens its files when
the service is built, before twistd could change directory.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from dlmsd.service.optiondoc import REQUIRED, doc, record

DEFAULT_PORT = 4059
"""IANA port of the DLMS/COSEM wrapper, UDP and TCP."""

DEFAULT_MAX_FRAME_SIZE = 8192
"""Biggest wrapper frame (header included) a listener takes by default.

Pushes are a few hundred bytes; 8 KiB leaves room for profile pushes while
bounding what one TCP connection may buffer. The wrapper allows up to 65,543.
"""

MAX_WRAPPER_FRAME = 8 + 0xFFFF
DEFAULT_STATE_DIR = Path("/var/lib/dlmsd")

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warn", "error")
_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
SYNCHRONOUS_MODES = ("normal", "full")
SPOOL_FULL_POLICIES = ("refuse", "drop_oldest")
SECURITY_FORMS = ("none", "auth", "enc", "auth+enc")
PARITIES = ("N", "E", "O", "M", "S")
MAX_REPLAY_WINDOW = 4096  # dlmsd.service.replaywindow.MAX_WIDTH


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key path and the reason."""


DEFAULT_MAX_PUSH_VALUES = 100_000
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024


@attrs.frozen(slots=True)
class DaemonConfig:
    """``[daemon]``: where state lives and how logs are written.

    `max_push_values` bounds what one push may decode to (values in its body,
    compact-array elements counted by what their description makes), checked
    before they are built; `max_record_bytes` bounds one push's record text.
    A push over either is refused as ``oversize``.
    """

    state_dir: Path = attrs.field(
        default=DEFAULT_STATE_DIR,
        metadata=doc(
            "Directory of the SQLite state, the quarantine and the control socket (created 0700)."
        ),
    )
    log_format: str = attrs.field(
        default="text", metadata=doc("Log line format: text for humans, json for log collectors.")
    )
    # Events below `log_level` are dropped; `log_levels` sets it per logger
    # namespace (``"dlmsd.sinks" = "debug"``; a namespace covers its children).
    log_level: str = attrs.field(
        default="info", metadata=doc("Lowest level logged: debug, info, warn or error.")
    )
    log_levels: Mapping[str, str] = attrs.field(
        factory=dict,
        metadata=doc(
            'Level per logger namespace, e.g. dlmsd.sinks = "debug" (covers its children).',
            kind="table of namespace = level",
        ),
    )
    max_push_values: int = attrs.field(
        default=DEFAULT_MAX_PUSH_VALUES,
        metadata=doc("Values one push may hold at most; a bigger push is refused as malformed."),
    )
    max_record_bytes: int = attrs.field(
        default=DEFAULT_MAX_RECORD_BYTES,
        metadata=doc("Size of one record's JSON at most (bytes); a bigger push is refused."),
    )


DEFAULT_UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_UDP_RECEIVE_BUFFER = 1024 * 1024 * 1024


@attrs.frozen(slots=True)
class UdpListenerConfig:
    """``[[listeners.udp]]``: one datagram carries one wrapper frame."""

    name: str = attrs.field(
        metadata=doc("Listener name in logs, metrics and records (default udp:ADDRESS:PORT).")
    )
    address: str = attrs.field(
        default="0.0.0.0", metadata=doc("Local address to bind (0.0.0.0: all IPv4; :: for IPv6).")
    )
    port: int = attrs.field(
        default=DEFAULT_PORT,
        metadata=doc("UDP port to bind (4059: the IANA DLMS/COSEM port; 0: any free port)."),
    )
    reuse_port: bool = attrs.field(
        default=False, metadata=doc("Set SO_REUSEPORT so several daemons can share the port.")
    )
    max_frame_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE,
        metadata=doc("Biggest wrapper frame accepted, header included (bytes)."),
    )
    # SO_RCVBUF in bytes (0: the kernel default): room for bursts while the reactor
    # is busy, so the kernel does not drop them.
    receive_buffer: int = attrs.field(
        default=DEFAULT_UDP_RECEIVE_BUFFER,
        metadata=doc(
            "SO_RCVBUF in bytes (0: kernel default): absorbs bursts while the reactor is busy."
        ),
    )
    batch_reads: bool = attrs.field(
        default=True,
        metadata=doc(
            "While pushes come slowly, leave the dry socket alone until right before the"
            " next commit and read what came then: one wake-up and warm caches for all of"
            " a commit's pushes, no added latency. false: read each datagram at once."
        ),
    )


DEFAULT_MAX_CONNECTIONS_PER_SOURCE = 1_000
"""TCP connections one source address may hold on a listener.

Generous: many meters may share one address behind a carrier NAT. It stops a
single client from taking every slot of ``max_connections``.
"""


@attrs.frozen(slots=True)
class TcpListenerConfig:
    """``[[listeners.tcp]]``: a stream of wrapper frames per connection."""

    name: str = attrs.field(
        metadata=doc("Listener name in logs, metrics and records (default tcp:ADDRESS:PORT).")
    )
    address: str = attrs.field(
        default="0.0.0.0", metadata=doc("Local address to bind (0.0.0.0: all IPv4; :: for IPv6).")
    )
    port: int = attrs.field(
        default=DEFAULT_PORT,
        metadata=doc("TCP port to listen on (4059: the IANA DLMS/COSEM port; 0: any free port)."),
    )
    idle_timeout: float = attrs.field(
        default=300.0, metadata=doc("Seconds without a byte before a connection is closed.")
    )
    max_connections: int = attrs.field(
        default=10_000, metadata=doc("Open connections at most; further ones are closed at once.")
    )
    max_frame_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE,
        metadata=doc("Biggest wrapper frame accepted, header included (bytes)."),
    )
    reuse_port: bool = attrs.field(
        default=False, metadata=doc("Set SO_REUSEPORT so several daemons can share the port.")
    )
    max_connections_per_source: int = attrs.field(
        default=DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        metadata=doc("Open connections one source address may hold (docs/connection-limits.md)."),
    )


@attrs.frozen(slots=True)
class HdlcSerialListenerConfig:
    """``[[listeners.hdlc_serial]]``: HDLC pushes on a serial line (HAN/P1 port).

    A serial port serves one meter: `system_title` (16 hex characters in the
    file) names it for pushes that carry no system title (plaintext HAN pushes),
    so its key store entry and policy apply. `meter` names it by its key store
    name instead (resolved when the daemon starts).
    """

    name: str = attrs.field(
        metadata=doc("Listener name in logs, metrics and records (default hdlc_serial:DEVICE).")
    )
    device: str = attrs.field(
        metadata=doc("Serial device of the meter's HAN/P1 port, e.g. /dev/ttyUSB0.")
    )
    baudrate: int = attrs.field(default=115_200, metadata=doc("Serial speed in baud."))
    bytesize: int = attrs.field(default=8, metadata=doc("Data bits per character."))
    parity: str = attrs.field(
        default="N", metadata=doc("Parity: N(one), E(ven), O(dd), M(ark), S(pace).")
    )
    stopbits: int = attrs.field(default=1, metadata=doc("Stop bits per character."))
    max_apdu_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE, metadata=doc("Biggest reassembled APDU accepted (bytes).")
    )
    reopen_delay: float = attrs.field(
        default=5.0, metadata=doc("Seconds between attempts to reopen a failed or missing device.")
    )
    system_title: bytes | None = attrs.field(
        default=None,
        metadata=doc(
            "System title (16 hex) of the meter on this port, for pushes that carry none."
        ),
    )
    meter: str | None = attrs.field(
        default=None,
        metadata=doc("Key store name of the meter on this port (instead of system_title)."),
    )


@attrs.frozen(slots=True)
class HdlcTcpListenerConfig:
    """``[[listeners.hdlc_tcp]]``: HDLC pushes over TCP (meters behind terminal servers).

    Behind a serial-to-TCP bridge (ser2net, ESP-Link) the port serves one HAN
    meter: `system_title` or `meter` name it, as for ``hdlc_serial``.
    """

    name: str = attrs.field(
        metadata=doc("Listener name in logs, metrics and records (default hdlc_tcp:ADDRESS:PORT).")
    )
    address: str = attrs.field(
        default="0.0.0.0", metadata=doc("Local address to bind (0.0.0.0: all IPv4; :: for IPv6).")
    )
    port: int = attrs.field(
        default=4060,
        metadata=doc("TCP port to listen on for HDLC streams (serial-to-TCP bridges)."),
    )
    idle_timeout: float = attrs.field(
        default=300.0, metadata=doc("Seconds without a byte before a connection is closed.")
    )
    max_connections: int = attrs.field(
        default=10_000, metadata=doc("Open connections at most; further ones are closed at once.")
    )
    max_apdu_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE, metadata=doc("Biggest reassembled APDU accepted (bytes).")
    )
    system_title: bytes | None = attrs.field(
        default=None,
        metadata=doc(
            "System title (16 hex) of the meter behind this port, for pushes that carry none."
        ),
    )
    meter: str | None = attrs.field(
        default=None,
        metadata=doc("Key store name of the meter behind this port (instead of system_title)."),
    )
    max_connections_per_source: int = attrs.field(
        default=DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        metadata=doc("Open connections one source address may hold (docs/connection-limits.md)."),
    )


@attrs.frozen(slots=True)
class ListenersConfig:
    """``[listeners]``: any number of each kind."""

    udp: tuple[UdpListenerConfig, ...] = ()
    tcp: tuple[TcpListenerConfig, ...] = ()
    hdlc_serial: tuple[HdlcSerialListenerConfig, ...] = ()
    hdlc_tcp: tuple[HdlcTcpListenerConfig, ...] = ()
    mbus_serial: tuple[MbusSerialListenerConfig, ...] = ()
    mbus_tcp: tuple[MbusTcpListenerConfig, ...] = ()

    @property
    def names(self) -> list[str]:
        groups: tuple[tuple[Any, ...], ...] = (
            self.udp,
            self.tcp,
            self.hdlc_serial,
            self.hdlc_tcp,
            self.mbus_serial,
            self.mbus_tcp,
        )
        return [listener.name for group in groups for listener in group]


@attrs.frozen(slots=True)
class MbusSerialListenerConfig:
    """``[[listeners.mbus_serial]]``: wired M-Bus pushes (EN 13757-2 long frames carrying
    DLMS) on a serial line: the customer interface of Austrian meters, 2400 baud 8E1.

    One port serves one meter: `system_title` (16 hex characters) or `meter` (its key
    store name) attributes pushes that carry no system title.
    """

    name: str = attrs.field(
        metadata=doc("Listener name in logs, metrics and records (default mbus_serial:DEVICE).")
    )
    device: str = attrs.field(
        metadata=doc("Serial device of the M-Bus master or level converter, e.g. /dev/ttyUSB0.")
    )
    baudrate: int = attrs.field(default=2400, metadata=doc("Serial speed in baud."))
    bytesize: int = attrs.field(default=8, metadata=doc("Data bits per character."))
    parity: str = attrs.field(
        default="E", metadata=doc("Parity: N(one), E(ven), O(dd), M(ark), S(pace).")
    )
    stopbits: int = attrs.field(default=1, metadata=doc("Stop bits per character."))
    max_apdu_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE, metadata=doc("Biggest reassembled APDU accepted (bytes).")
    )
    reopen_delay: float = attrs.field(
        default=5.0, metadata=doc("Seconds between attempts to reopen a failed or missing device.")
    )
    system_title: bytes | None = attrs.field(
        default=None,
        metadata=doc(
            "System title (16 hex) of the meter on this line, for pushes that carry none."
        ),
    )
    meter: str | None = attrs.field(
        default=None,
        metadata=doc("Key store name of the meter on this line (instead of system_title)."),
    )


@attrs.frozen(slots=True)
class MbusTcpListenerConfig:
    """``[[listeners.mbus_tcp]]``: wired M-Bus pushes over TCP (a serial-to-TCP bridge in
    front of one meter's customer interface connects to this port)."""

    name: str = attrs.field(
        metadata=doc("Listener name in logs, metrics and records (default mbus_tcp:ADDRESS:PORT).")
    )
    address: str = attrs.field(
        default="0.0.0.0", metadata=doc("Local address to bind (0.0.0.0: all IPv4; :: for IPv6).")
    )
    port: int = attrs.field(
        default=4061,
        metadata=doc("TCP port to listen on for M-Bus streams (serial-to-TCP bridges)."),
    )
    idle_timeout: float = attrs.field(
        default=300.0, metadata=doc("Seconds without a byte before a connection is closed.")
    )
    max_connections: int = attrs.field(
        default=10_000, metadata=doc("Open connections at most; further ones are closed at once.")
    )
    max_apdu_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE, metadata=doc("Biggest reassembled APDU accepted (bytes).")
    )
    system_title: bytes | None = attrs.field(
        default=None,
        metadata=doc(
            "System title (16 hex) of the meter behind this port, for pushes that carry none."
        ),
    )
    meter: str | None = attrs.field(
        default=None,
        metadata=doc("Key store name of the meter behind this port (instead of system_title)."),
    )
    max_connections_per_source: int = attrs.field(
        default=DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        metadata=doc("Open connections one source address may hold (docs/connection-limits.md)."),
    )


@attrs.frozen(slots=True)
class KeysConfig:
    """``[keys]``: the key store files, merged in order.

    `reload_max_drop`: the share of loaded meters a SIGHUP reload may drop (0..1);
    a reload that drops more, or all of them, is refused (old keys kept) unless
    forced with ``dlmsd keys reload --force``; 1.0 turns the check off.
    """

    files: tuple[Path, ...] = attrs.field(
        metadata=doc("Key store files (TOML), merged in order; each must be mode 0600 or tighter.")
    )
    reload_max_drop: float = attrs.field(
        default=0.5,
        metadata=doc(
            "Share of meters a SIGHUP reload may drop (0..1; more is refused unless forced)."
        ),
    )


@attrs.frozen(slots=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint; per-meter series only on request."""

    enabled: bool = attrs.field(default=True, metadata=doc("Serve Prometheus metrics over HTTP."))
    address: str = attrs.field(
        default="127.0.0.1", metadata=doc("Address the metrics endpoint binds.")
    )
    port: int = attrs.field(default=9464, metadata=doc("Port of the metrics endpoint."))
    per_meter: bool = attrs.field(
        default=False,
        metadata=doc("Add per-meter series (one per system title: mind the cardinality)."),
    )


@attrs.frozen(slots=True)
class SinkConfig:
    """``[[sinks]]``: one output with its own spool queue.

    `options` holds the type's own keys (for ``jsonl``: path, rotate_bytes,
    rotate_daily, fsync); the type's factory validates them. `path` is where
    the table sits in the file (``sinks[1]``), for those errors.
    """

    type: str = attrs.field(
        metadata=doc("Sink type: jsonl, mqtt, http, or one a dlmsd.sinks entry point provides.")
    )
    name: str = attrs.field(
        metadata=doc("Sink name: its spool queue and its metrics label (default: the type).")
    )
    batch_size: int = attrs.field(
        default=500,
        metadata=doc("Records claimed from the spool per delivery (default 1000 for mqtt)."),
    )
    retry_backoff: float = attrs.field(
        default=1.0,
        metadata=doc("Seconds before the first retry of a failed delivery (doubles per failure)."),
    )
    retry_backoff_max: float = attrs.field(
        default=10.0, metadata=doc("Longest wait between retries of a failing sink (seconds).")
    )
    options: Mapping[str, Any] = attrs.field(factory=dict)
    path: str = "sinks[0]"


@attrs.frozen(slots=True)
class StateConfig:
    """``[state]``: the counter/spool database and commit batching.

    `spool_limit` bounds each sink's queue (records; 0 = unbounded); when a
    queue is full, `spool_full` says what gives: ``"refuse"`` new pushes, or
    ``"drop_oldest"`` queued records (counted and logged loudly either way).

    `dsn` picks the backend: empty (default) = ``state.sqlite3`` in the state
    directory; ``sqlite:///path`` or a path = that SQLite file (one daemon);
    ``postgresql://user@host/db`` = a database several daemons share.
    `instance` names this daemon in metrics and spool leases (default: host
    name and pid); daemons sharing a database need distinct names.
    `spool_lease` is how long a claimed batch stays with this daemon before
    another may deliver it (PostgreSQL only).
    `replay_window` (0 = strict) accepts a meter's push up to that many
    counters below its highest if that counter was never accepted
    (`dlmsd.service.replaywindow`, docs/replay-window.md).
    `commit_interval` is how long an accepted push waits for its commit while
    pushes come fast; while few come, the wait doubles per small commit up to
    `commit_interval_max` (the latency budget), so each fsync carries more pushes.
    """

    synchronous: str = attrs.field(
        default="full",
        metadata=doc("SQLite synchronous mode: full survives power loss, normal only crashes."),
    )
    commit_batch: int = attrs.field(
        default=500, metadata=doc("Accepted pushes per state commit at most.")
    )
    commit_interval: float = attrs.field(
        default=0.002, metadata=doc("Seconds an accepted push may wait for its batch's commit.")
    )
    commit_interval_max: float = attrs.field(
        default=0.05,
        metadata=doc(
            "Seconds the commit wait may grow to while few pushes come (the latency budget)."
        ),
    )
    spool_limit: int = attrs.field(
        default=0, metadata=doc("Records each sink's queue may hold (0: unbounded).")
    )
    spool_full: str = attrs.field(
        default="refuse",
        metadata=doc("When a queue is full: refuse new pushes, or drop_oldest queued records."),
    )
    dsn: str = attrs.field(
        default="",
        metadata=doc(
            "State database: empty = state.sqlite3 in state_dir; sqlite:///PATH, a path, or postgresql://..."
        ),
    )
    instance: str = attrs.field(
        default="",
        metadata=doc("This daemon's name in metrics and spool leases (default: the host name)."),
    )
    spool_lease: float = attrs.field(
        default=60.0,
        metadata=doc(
            "Seconds a claimed batch stays with this daemon before another takes it (PostgreSQL)."
        ),
    )
    replay_window: int = attrs.field(
        default=0,
        metadata=doc("Accept a never-seen counter this far below the highest (0: strict)."),
    )


@attrs.frozen(slots=True)
class QuarantineConfig:
    """``[quarantine]``: raw frames from unknown meters, kept for later decoding."""

    dir: Path | None = attrs.field(
        default=None,
        metadata=doc("Directory of frames from unknown meters (default: STATE_DIR/quarantine)."),
    )
    max_bytes: int = attrs.field(
        default=64 * 1024 * 1024,
        metadata=doc(
            "Quarantine file size at most (bytes); then it moves to .1 (twice this on disk)."
        ),
    )
    log_interval: float = attrs.field(
        default=300.0, metadata=doc("Seconds between log lines about the same unknown meter.")
    )


@attrs.frozen(slots=True)
class Config:
    """The whole validated configuration."""

    daemon: DaemonConfig
    listeners: ListenersConfig
    keys: KeysConfig
    metrics: MetricsConfig
    sinks: tuple[SinkConfig, ...]
    state: StateConfig
    quarantine: QuarantineConfig

    @property
    def state_db(self) -> Path:
        return self.daemon.state_dir / "state.sqlite3"

    @property
    def quarantine_dir(self) -> Path:
        return self.quarantine.dir or self.daemon.state_dir / "quarantine"


def load_config(path: Path | str) -> Config:
    """Read and validate a TOML config file. Raises `ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib.load decodes the bytes itself (found by fuzzing)
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    return parse_config(raw)


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Validate an already parsed TOML document. Raises `ConfigError`."""
    root = _Table(raw, "", _field_names(Config))
    config = Config(
        daemon=_daemon(root.table("daemon")),
        listeners=_listeners(root.table("listeners")),
        keys=_keys(root.table("keys")),
        metrics=_metrics(root.table("metrics")),
        sinks=_sinks(root),
        state=_state(root.table("state")),
        quarantine=_quarantine(root.table("quarantine")),
    )
    if not config.listeners.names:
        raise ConfigError("listeners: no listener configured (add a [[listeners.udp]] table)")
    return config


# -- sections ---------------------------------------------------------------


def _daemon(table: _Table) -> DaemonConfig:
    return DaemonConfig(
        state_dir=table.path("state_dir", DEFAULT_STATE_DIR),
        log_format=table.choice("log_format", LOG_FORMATS, "text"),
        log_level=table.choice("log_level", LOG_LEVELS, "info"),
        log_levels=_log_levels(table),
        max_push_values=table.integer(
            "max_push_values", DEFAULT_MAX_PUSH_VALUES, 100, 100_000_000
        ),
        max_record_bytes=table.integer(
            "max_record_bytes", DEFAULT_MAX_RECORD_BYTES, 4096, 1 << 30
        ),
    )


def _log_levels(daemon: _Table) -> dict[str, str]:
    """``[daemon.log_levels]``: logger namespace = level."""
    levels = _Table(daemon.raw("log_levels", {}), daemon.key("log_levels"), None)
    for namespace, _ in levels.items():
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigError(
                f"{levels.key(namespace)}: expected a logger namespace (dotted names), "
                f"got {namespace!r}"
            )
    return {namespace: levels.choice(namespace, LOG_LEVELS) for namespace, _ in levels.items()}


def _listeners(table: _Table) -> ListenersConfig:
    listeners = ListenersConfig(
        udp=tuple(_udp(item) for item in table.tables("udp", UdpListenerConfig)),
        tcp=tuple(_tcp(item) for item in table.tables("tcp", TcpListenerConfig)),
        hdlc_serial=tuple(
            _hdlc_serial(item) for item in table.tables("hdlc_serial", HdlcSerialListenerConfig)
        ),
        hdlc_tcp=tuple(
            _hdlc_tcp(item) for item in table.tables("hdlc_tcp", HdlcTcpListenerConfig)
        ),
        mbus_serial=tuple(
            _mbus_serial(item) for item in table.tables("mbus_serial", MbusSerialListenerConfig)
        ),
        mbus_tcp=tuple(
            _mbus_tcp(item) for item in table.tables("mbus_tcp", MbusTcpListenerConfig)
        ),
    )
    _unique(listeners.names, "listeners", "listener name")
    return listeners


def _udp(table: _Table) -> UdpListenerConfig:
    address = table.string("address", "0.0.0.0")
    port = table.port("port", DEFAULT_PORT)
    return UdpListenerConfig(
        name=table.string("name", f"udp:{address}:{port}"),
        address=address,
        port=port,
        reuse_port=table.boolean("reuse_port", False),
        batch_reads=table.boolean("batch_reads", True),
        max_frame_size=table.integer(
            "max_frame_size", DEFAULT_MAX_FRAME_SIZE, 9, MAX_WRAPPER_FRAME
        ),
        receive_buffer=table.integer(
            "receive_buffer", DEFAULT_UDP_RECEIVE_BUFFER, 0, MAX_UDP_RECEIVE_BUFFER
        ),
    )


def _tcp(table: _Table) -> TcpListenerConfig:
    address = table.string("address", "0.0.0.0")
    port = table.port("port", DEFAULT_PORT)
    return TcpListenerConfig(
        name=table.string("name", f"tcp:{address}:{port}"),
        address=address,
        port=port,
        idle_timeout=table.number("idle_timeout", 300.0, minimum=0.001),
        max_connections=table.integer("max_connections", 10_000, 1, 1_000_000),
        max_frame_size=table.integer(
            "max_frame_size", DEFAULT_MAX_FRAME_SIZE, 9, MAX_WRAPPER_FRAME
        ),
        reuse_port=table.boolean("reuse_port", False),
        max_connections_per_source=_per_source(table),
    )


def _per_source(table: _Table) -> int:
    return table.integer(
        "max_connections_per_source", DEFAULT_MAX_CONNECTIONS_PER_SOURCE, 1, 1_000_000
    )


def _hdlc_serial(table: _Table) -> HdlcSerialListenerConfig:
    return _serial_line(table, "hdlc_serial", HdlcSerialListenerConfig, 115_200, "N")


def _mbus_serial(table: _Table) -> MbusSerialListenerConfig:
    return _serial_line(table, "mbus_serial", MbusSerialListenerConfig, 2400, "E")


def _hdlc_tcp(table: _Table) -> HdlcTcpListenerConfig:
    return _line_tcp(table, "hdlc_tcp", HdlcTcpListenerConfig, 4060)


def _mbus_tcp(table: _Table) -> MbusTcpListenerConfig:
    return _line_tcp(table, "mbus_tcp", MbusTcpListenerConfig, 4061)


_Line = TypeVar("_Line")


def _serial_line(
    table: _Table, kind: str, make: Callable[..., _Line], baudrate: int, parity: str
) -> _Line:
    """A serial-line listener (HDLC or M-Bus): the same keys, their own defaults."""
    device = table.string("device")
    return make(
        name=table.string("name", f"{kind}:{device}"),
        device=device,
        baudrate=table.integer("baudrate", baudrate, 50, 10_000_000),
        bytesize=table.integer("bytesize", 8, 5, 8),
        parity=table.choice("parity", PARITIES, parity),
        stopbits=table.integer("stopbits", 1, 1, 2),
        max_apdu_size=table.integer("max_apdu_size", DEFAULT_MAX_FRAME_SIZE, 16, 1 << 20),
        reopen_delay=table.number("reopen_delay", 5.0, minimum=0.01),
        system_title=table.system_title("system_title"),
        meter=_meter_name(table),
    )


def _line_tcp(table: _Table, kind: str, make: Callable[..., _Line], port: int) -> _Line:
    """A line-over-TCP listener (HDLC or M-Bus bridge): the same keys, its own port."""
    address = table.string("address", "0.0.0.0")
    number = table.port("port", port)
    return make(
        name=table.string("name", f"{kind}:{address}:{number}"),
        address=address,
        port=number,
        idle_timeout=table.number("idle_timeout", 300.0, minimum=0.001),
        max_connections=table.integer("max_connections", 10_000, 1, 1_000_000),
        max_apdu_size=table.integer("max_apdu_size", DEFAULT_MAX_FRAME_SIZE, 16, 1 << 20),
        system_title=table.system_title("system_title"),
        meter=_meter_name(table),
        max_connections_per_source=_per_source(table),
    )


def _meter_name(table: _Table) -> str | None:
    """`meter`: a key store name standing for `system_title` (one or the other)."""
    if not table.has("meter"):
        return None
    name = table.string("meter")
    if table.has("system_title"):
        raise ConfigError(f"{table.key('meter')}: give either meter or system_title, not both")
    return name


def _keys(table: _Table) -> KeysConfig:
    files = table.paths("files")
    if not files:
        raise ConfigError(f"{table.key('files')}: at least one key file is required")
    return KeysConfig(
        files=files,
        reload_max_drop=table.number("reload_max_drop", 0.5, minimum=0.0, maximum=1.0),
    )


def _metrics(table: _Table) -> MetricsConfig:
    return MetricsConfig(
        enabled=table.boolean("enabled", True),
        address=table.string("address", "127.0.0.1"),
        port=table.port("port", 9464),
        per_meter=table.boolean("per_meter", False),
    )


_SINK_COMMON = frozenset({"type", "name", "batch_size", "retry_backoff", "retry_backoff_max"})


def _sinks(root: _Table) -> tuple[SinkConfig, ...]:
    sinks = tuple(_sink(item) for item in root.tables("sinks", None))
    if not sinks:
        raise ConfigError("sinks: at least one [[sinks]] table is required")
    _unique([sink.name for sink in sinks], "sinks", "sink name")
    return sinks


# MQTT fills its in-flight window (max_inflight, 1000) from one batch: a smaller
# batch leaves the connection idle while the pump acknowledges and claims the next.
_BATCH_DEFAULTS = {"mqtt": 1000}


def _sink(table: _Table) -> SinkConfig:
    kind = table.string("type")
    retry_backoff = table.number("retry_backoff", 1.0, minimum=0.001)
    return SinkConfig(
        type=kind,
        name=table.string("name", kind),
        batch_size=table.integer("batch_size", _BATCH_DEFAULTS.get(kind, 500), 1, 1_000_000),
        retry_backoff=retry_backoff,
        retry_backoff_max=table.number(
            "retry_backoff_max", max(10.0, retry_backoff), minimum=retry_backoff
        ),
        # The sink type's factory validates its own keys (`sink_error_path` names them).
        options={key: value for key, value in table.items() if key not in _SINK_COMMON},
        path=table.path_text,
    )


def sink_error_path(sink: SinkConfig, key: str) -> str:
    """The config path of a sink option, for errors its factory reports."""
    return f"{sink.path}.{key}"


def _state(table: _Table) -> StateConfig:
    commit_interval = table.number("commit_interval", 0.002, minimum=0.0, maximum=10.0)
    # The commit interval grows while few pushes come, up to this latency budget.
    commit_interval_max = table.number(
        "commit_interval_max", max(0.05, commit_interval), minimum=0.0, maximum=10.0
    )
    if commit_interval_max < commit_interval:
        raise ConfigError(
            f"{table.path_text}.commit_interval_max: must be at least commit_interval"
            f" ({commit_interval}), got {commit_interval_max}"
        )
    return StateConfig(
        synchronous=table.choice("synchronous", SYNCHRONOUS_MODES, "full"),
        commit_batch=table.integer("commit_batch", 500, 1, 100_000),
        commit_interval=commit_interval,
        commit_interval_max=commit_interval_max,
        spool_limit=table.integer("spool_limit", 0, 0, 1 << 40),
        spool_full=table.choice("spool_full", SPOOL_FULL_POLICIES, "refuse"),
        dsn=_state_dsn(table),
        instance=table.string("instance") if _has(table, "instance") else "",
        spool_lease=table.number("spool_lease", 60.0, minimum=1.0, maximum=86_400.0),
        replay_window=table.integer("replay_window", 0, 0, MAX_REPLAY_WINDOW),
    )


def _has(table: _Table, key: str) -> bool:
    return any(name == key for name, _ in table.items())


def _state_dsn(table: _Table) -> str:
    if not _has(table, "dsn"):
        return ""
    dsn = table.string("dsn")
    if dsn.startswith(("postgresql://", "postgres://")):
        return dsn
    if dsn.startswith("sqlite:///"):
        return dsn
    if "://" in dsn:
        raise ConfigError(
            f"{table.key('dsn')}: expected sqlite:///PATH, a path or postgresql://...,"
            f" got a {dsn.split('://', 1)[0]!r} URL"
        )
    # A plain path: made absolute like the other paths (against the working directory).
    return str(Path(dsn).absolute())


def _quarantine(table: _Table) -> QuarantineConfig:
    return QuarantineConfig(
        dir=table.optional_path("dir"),
        max_bytes=table.integer("max_bytes", 64 * 1024 * 1024, 1, 1 << 50),
        log_interval=table.number("log_interval", 300.0, minimum=0.0),
    )


def _unique(names: Iterable[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{path}: duplicate {what} {name!r}")
        seen.add(name)


# -- typed access with key paths ---------------------------------------------

_REQUIRED: Any = object()
_TITLE_HEX = re.compile(r"[0-9A-Fa-f]{16}")


def _field_names(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in attrs.fields(cls))


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class _Table:
    """One TOML table with its dotted path; every read is type-checked."""

    def __init__(self, raw: object, path: str, allowed: frozenset[str] | None) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a table, got {_show(raw)}")
        self._raw: dict[str, Any] = raw
        self._path = path
        self.allow(allowed)

    def allow(self, allowed: frozenset[str] | None) -> None:
        """Refuse keys outside `allowed` (None: any key), suggesting the closest one."""
        if allowed is None:
            return
        for key in self._raw:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = ", ".join(sorted(allowed))
                raise ConfigError(f"{self.key(key)}: unknown key{hint}; known keys: {known}")

    @property
    def path_text(self) -> str:
        return self._path

    def key(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def items(self) -> Iterable[tuple[str, Any]]:
        return self._raw.items()

    def has(self, key: str) -> bool:
        return key in self._raw

    def raw(self, key: str, default: Any) -> Any:
        """A value as written (for sub-tables a section reads itself)."""
        return self._value(key, default)

    def _value(self, key: str, default: Any) -> Any:
        if key in self._raw:
            return self._raw[key]
        if default is _REQUIRED:
            raise ConfigError(f"{self.key(key)}: required key missing")
        return default

    def _read(self, key: str, default: Any, expected: str) -> Any:
        """The value of `key` (or `default`), recorded for the configuration reference."""
        record(self.key(key), expected, REQUIRED if default is _REQUIRED else default)
        return self._value(key, default)

    def _wrong(self, key: str, expected: str, value: object) -> ConfigError:
        return ConfigError(f"{self.key(key)}: expected {expected}, got {_show(value)}")

    def table(self, key: str) -> _Table:
        cls = _SECTION_CLASSES[key]
        return _Table(self._value(key, {}), self.key(key), _field_names(cls))

    def tables(self, key: str, cls: type | None) -> list[_Table]:
        """An array of tables (``[[key]]``); `cls` gives the allowed keys."""
        value = self._value(key, [])
        if not isinstance(value, list):
            raise self._wrong(key, "an array of tables", value)
        allowed = _field_names(cls) if cls is not None else None
        return [
            _Table(item, f"{self.key(key)}[{index}]", allowed) for index, item in enumerate(value)
        ]

    def string(self, key: str, default: Any = _REQUIRED) -> str:
        value = self._read(key, default, "a non-empty string")
        if not isinstance(value, str) or not value:
            raise self._wrong(key, "a non-empty string", value)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _REQUIRED) -> str:
        expected = "one of " + ", ".join(repr(c) for c in choices)
        value = self._read(key, default, expected)
        if value not in choices:
            raise self._wrong(key, expected, value)
        assert isinstance(value, str)
        return value

    def integer(self, key: str, default: Any, minimum: int, maximum: int) -> int:
        value = self._read(key, default, f"an integer {minimum}..{maximum}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, f"an integer {minimum}..{maximum}", value)
        if not minimum <= value <= maximum:
            raise self._wrong(key, f"an integer {minimum}..{maximum}", value)
        return value

    def port(self, key: str, default: Any = _REQUIRED) -> int:
        return self.integer(key, default, 0, 65535)

    def number(
        self, key: str, default: Any, minimum: float = 0.0, maximum: float = math.inf
    ) -> float:
        expected = (
            f"a number >= {minimum}" if maximum == math.inf else f"a number {minimum}..{maximum}"
        )
        value = self._read(key, default, expected)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(key, expected, value)
        if math.isnan(value) or not minimum <= value <= maximum:
            raise self._wrong(key, expected, value)
        return float(value)

    def boolean(self, key: str, default: Any = _REQUIRED) -> bool:
        value = self._read(key, default, "true or false")
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def path(self, key: str, default: Any = _REQUIRED) -> Path:
        value = self._read(key, default, "a path")
        if isinstance(value, Path):  # a default
            return value.absolute()
        if not isinstance(value, str) or not value:
            raise self._wrong(key, "a path (non-empty string)", value)
        return Path(value).absolute()

    def optional_path(self, key: str) -> Path | None:
        return self.path(key) if key in self._raw else None

    def system_title(self, key: str) -> bytes | None:
        value = self._read(key, None, "a system title of 16 hex characters")
        if value is None:
            return None
        if not isinstance(value, str) or not _TITLE_HEX.fullmatch(value):
            raise self._wrong(key, "a system title of 16 hex characters", value)
        return bytes.fromhex(value)

    def paths(self, key: str) -> tuple[Path, ...]:
        value = self._read(key, _REQUIRED, "an array of paths")
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._wrong(key, "an array of paths (strings)", value)
        return tuple(Path(item).absolute() for item in value)


_SECTION_CLASSES: dict[str, type] = {
    "daemon": DaemonConfig,
    "listeners": ListenersConfig,
    "keys": KeysConfig,
    "metrics": MetricsConfig,
    "state": StateConfig,
    "quarantine": QuarantineConfig,
}
