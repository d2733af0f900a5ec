"""The service tree of ``twistd dlmsd --config PATH``.

`makeService` validates everything it can before the reactor runs (config,
key files and their permissions, state directory and database, sink
options) and refuses to start with a one-line reason and a non-zero exit.

`DaemonService` starts its parts in order (pumps, metrics, listeners) and
stops them in the order that loses nothing: stop listening and close TCP
connections, commit the pending batch, drain the sink pumps, close the
database. twistd runs `stopService` on SIGTERM and waits for it.
SIGHUP reloads the key files; a broken file keeps the old keys and says why.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Callable, Sequence
from functools import partial
from types import FrameType
from typing import Any, TypeVar

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from dlmsd.service import lifecycle
from dlmsd.service.config import (
    Config,
    ConfigError,
    HdlcSerialListenerConfig,
    HdlcTcpListenerConfig,
    MbusSerialListenerConfig,
    MbusTcpListenerConfig,
    TcpListenerConfig,
    load_config,
    sink_error_path,
)
from dlmsd.service.control import ControlServer, socket_path
from dlmsd.service.descriptors import fit_descriptor_limit
from dlmsd.service.hdlc import HdlcSerialService, listen_hdlc_tcp
from dlmsd.service.health import Health, health_resources
from dlmsd.service.ingest import Ingest
from dlmsd.service.keys_reload import take_force_marker
from dlmsd.service.keystore import KeyFileError, KeyStore, ReloadRefused
from dlmsd.service.logging import daemon_observer
from dlmsd.service.mbus import MbusSerialService, listen_mbus_tcp
from dlmsd.service.metrics import Metrics, listen_metrics
from dlmsd.service.quarantine import Quarantine
from dlmsd.service.readback import Readback
from dlmsd.service.readback_marks import MemoryMarks, ReadbackMarks, SqliteMarks
from dlmsd.service.state import StateError
from dlmsd.service.statebackend import (
    StateBackend,
    StateCollector,
    default_instance,
    is_postgresql,
    open_state_backend,
    sqlite_path,
)
from dlmsd.service.tcp import PushStreamFactory, listen_tcp
from dlmsd.service.udp import listen_udp
from dlmsd.sinks import SinkConfigError, create_sink
from dlmsd.sinks.pump import SpoolPump
from dlmsd.sinks.spool import SinkCollector, SpoolDropReporter


class StartupError(Exception):
    """The daemon cannot start; the message is the one line shown to the operator."""


class Options(usage.Options):
    """``twistd dlmsd --config PATH``."""

    optParameters = [["config", "c", None, "the daemon's TOML configuration file (required)"]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config PATH is required")


def makeService(options: Options) -> DaemonService:
    """Build the service tree for twistd; exits with one line on a bad setup."""
    try:
        return build_service(load_config(options["config"]))
    except (ConfigError, StartupError) as error:
        raise SystemExit(f"dlmsd: cannot start: {error}") from None


class PortService(Service):
    """A listening port as a service: listens when started, stops when stopped."""

    log = Logger()

    def __init__(
        self,
        name: str,
        listen: Callable[[], IListeningPort | tuple[IListeningPort, PushStreamFactory]],
    ) -> None:
        self.setName(name)  # type: ignore[no-untyped-call]
        self._listen = listen
        self.port: Any = None
        self.factory: PushStreamFactory | None = None

    def privilegedStartService(self) -> None:
        # twistd calls this before the reactor runs: a port that cannot be bound
        # stops the start-up instead of leaving a daemon without that listener.
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._bind()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.port is None:
            self._bind()

    def _bind(self) -> None:
        result = self._listen()
        if isinstance(result, tuple):
            self.port, self.factory = result
        else:
            self.port = result
        host = self.port.getHost()
        self.log.info(
            "{name} listening on {host}:{port}", name=self.name, host=host.host, port=host.port
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        stopped: Deferred[None] = (
            defer.maybeDeferred(port.stopListening) if port else defer.succeed(None)
        )
        if self.factory is not None:
            self.factory.close_all()
        return stopped

    @property
    def port_number(self) -> int:
        """The bound port (useful when configured as 0)."""
        return int(self.port.getHost().port)


class DaemonService(MultiService):
    """The daemon: key store, state, ingest, pumps, metrics and listeners."""

    log = Logger()

    def __init__(
        self,
        *,
        config: Config,
        keystore: KeyStore,
        state: StateBackend,
        quarantine: Quarantine,
        metrics: Metrics,
        ingest: Ingest,
        pumps: Sequence[SpoolPump],
        metrics_service: PortService | None,
        listeners: Sequence[Service],
        reactor: Any,
        handle_signals: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.keystore = keystore
        self.state = state
        self.quarantine = quarantine
        self.metrics = metrics
        self.ingest = ingest
        self.pumps = tuple(pumps)
        self.metrics_service = metrics_service
        self.listeners = tuple(listeners)
        self._reactor = reactor
        self._handle_signals = handle_signals
        self._previous_hup: Any = None
        # Operator commands (dlmsd state reset-counter, dlmsd quarantine replay).
        self.control = ControlServer(
            socket_path(config.daemon.state_dir), lifecycle.handlers(self), reactor
        )
        self.health: Health | None = None  # /readyz's checks, when metrics are served
        daemon = config.daemon
        self.log_observer = daemon_observer(daemon.log_format, daemon.log_level, daemon.log_levels)
        # Children in start order; `startService` keeps it, `stopService` orders the stop.
        for child in (*self.pumps, *([metrics_service] if metrics_service else []), *listeners):
            child.setServiceParent(self)  # type: ignore[no-untyped-call]

    def setServiceParent(self, parent: Any) -> None:
        # twistd asks the application for an ILogObserver before it starts
        # logging: that is how `log_format = "json"` and the log levels replace its
        # text lines.
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)  # type: ignore[no-untyped-call]
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)  # type: ignore[no-untyped-call]
        for child in self:
            try:
                child.privilegedStartService()
            except CannotListenError as error:
                raise SystemExit(f"dlmsd: cannot start: {child.name}: {error}") from None

    def startService(self) -> None:
        Service.startService(self)  # type: ignore[no-untyped-call]
        self._keystore_loaded()
        self.state.start(self._reactor)
        for child in self:
            child.startService()
        self.control.startService()
        if self._handle_signals:
            # The daemon owns the process (twistd), so process-wide settings are ours.
            self._previous_hup = signal.signal(signal.SIGHUP, self._on_sighup)
            # What start-up built (key store, caches, modules) lives as long as the
            # daemon: keep it out of the sweeps that per-push garbage triggers often.
            gc.collect()
            gc.freeze()
        self.log.info(
            "dlmsd started: {meters} meters, {listeners} listeners, sinks {sinks}",
            meters=len(self.keystore),
            listeners=len(self.listeners),
            sinks=", ".join(pump.sink.name for pump in self.pumps),
        )

    def stopService(self) -> Deferred[None]:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        if self._handle_signals and self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
            gc.unfreeze()
        self.log.info("dlmsd stopping: closing listeners, flushing, draining sinks")
        await defer.maybeDeferred(self.control.stopService)
        # Each step runs even if the one before failed: a listener that will not
        # close must not keep accepted pushes from their commit.
        await _stop_all(self.listeners, "listener")
        await self.ingest.flush()
        await _stop_all(self.pumps, "sink pump")
        if self.metrics_service is not None:
            await _stop_all([self.metrics_service], "metrics endpoint")
        try:
            await self.state.shutdown()
        except StateError as error:
            self.log.error("closing the state database failed: {error}", error=str(error))
        self.quarantine.close()
        self.log.info("dlmsd stopped")

    # --- key store reload -------------------------------------------------------

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        # Signal context: hand the work to the reactor thread.
        self._reactor.callFromThread(self.reload_keys)

    def reload_keys(self, force: bool = False) -> bool:
        """Re-read the key files; on any problem keep the current keys and log why.

        A reload that would drop more than ``keys.reload_max_drop`` of the meters is
        refused unless `force` or ``dlmsd keys reload --force`` asked for it.
        """
        forced = take_force_marker(self.config.daemon.state_dir) or force
        try:
            count = self.keystore.reload(max_drop=self.config.keys.reload_max_drop, force=forced)
        except ReloadRefused as error:
            self.metrics.keystore_reload_failures.inc()
            self.log.warn(
                "key store reload refused, keeping the {count} meters loaded: {error};"
                " if that is intended: dlmsd keys reload --force",
                count=len(self.keystore),
                error=str(error),
            )
            return False
        except KeyFileError as error:
            self.metrics.keystore_reload_failures.inc()
            self.log.error(
                "key store reload refused, keeping the {count} meters loaded: {error}",
                count=len(self.keystore),
                error=str(error),
            )
            return False
        self._keystore_loaded()
        if forced:
            self.log.warn("key store reloaded (forced): {count} meters", count=count)
        else:
            self.log.info("key store reloaded: {count} meters", count=count)
        lifecycle.replay_after_reload(self)  # frames of meters whose keys just arrived
        return True

    def _keystore_loaded(self) -> None:
        self.metrics.keystore_meters.set(len(self.keystore))
        self.metrics.keystore_last_reload.set(time.time())

    def listener(self, name: str) -> Service:
        """A listener service by its configured name."""
        return self.getServiceNamed(name)  # type: ignore[no-any-return, no-untyped-call]


_stop_log = Logger()
_build_log = Logger(namespace="dlmsd.service.maker")


async def _stop_all(services: Sequence[Service], what: str) -> None:
    """Stop services concurrently; log (not raise) the ones that fail."""
    stopping = [defer.maybeDeferred(service.stopService) for service in services]
    for service, result in zip(
        services, await defer.DeferredList(stopping, consumeErrors=True), strict=True
    ):
        succeeded, value = result
        if not succeeded:
            _stop_log.failure("stopping {what} {name} failed", value, what=what, name=service.name)


def build_service(
    config: Config,
    *,
    reactor: Any = None,
    handle_signals: bool = True,
    clock: Callable[[], float] = time.time,
) -> DaemonService:
    """Open everything the config names and assemble the service tree.

    Raises `StartupError` (or `ConfigError` for sink options) with a one-line reason.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        keystore = KeyStore.load(config.keys.files)
    except KeyFileError as error:
        raise StartupError(f"key store: {error}") from None
    state = _open_state(config, clock)
    try:
        return _assemble(config, keystore, state, reactor, handle_signals, clock)
    except BaseException:
        state.shutdown()
        raise


def _open_state(config: Config, clock: Callable[[], float]) -> StateBackend:
    if is_postgresql(config.state.dsn):
        try:
            return open_state_backend(config, clock)
        except StateError as error:
            # The backend's message names the DSN, password redacted.
            raise StartupError(f"state.dsn: {error}") from None
    state_dir = config.daemon.state_dir
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise StartupError(
            f"daemon.state_dir {state_dir}: cannot create: {error.strerror or error}"
        ) from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise StartupError(f"daemon.state_dir {state_dir}: not writable by this user")
    try:
        return open_state_backend(config, clock)
    except StateError as error:
        raise StartupError(str(error)) from None


def _assemble(
    config: Config,
    keystore: KeyStore,
    state: StateBackend,
    reactor: Any,
    handle_signals: bool,
    clock: Callable[[], float],
) -> DaemonService:
    metrics = Metrics(per_meter=config.metrics.per_meter)
    try:
        quarantine = Quarantine(
            config.quarantine_dir,
            config.quarantine.max_bytes,
            log_interval=config.quarantine.log_interval,
        )
    except OSError as error:
        raise StartupError(
            f"quarantine.dir {config.quarantine_dir}: {error.strerror or error}"
        ) from None
    ingest = Ingest(
        keystore=keystore,
        state=state,
        metrics=metrics,
        quarantine=quarantine,
        reactor=reactor,
        commit_batch=config.state.commit_batch,
        commit_interval=config.state.commit_interval,
        commit_interval_max=config.state.commit_interval_max,
        log_interval=config.quarantine.log_interval,
        clock=clock,
        max_push_values=config.daemon.max_push_values,
        max_record_bytes=config.daemon.max_record_bytes,
    )
    pumps = _pumps(config, state, metrics, reactor)
    for pump in pumps:
        ingest.on_commit.append(pump.notify)
    metrics.watch_spool([pump.sink.name for pump in pumps], state.depth, state.oldest_age)
    metrics.registry.register(SinkCollector(pumps, state))
    metrics.registry.register(StateCollector(state, config.state.instance or default_instance()))
    state.on_drop = SpoolDropReporter()
    metrics_service = None
    health = Health()
    if config.metrics.enabled:
        settings = config.metrics
        metrics_service = PortService(
            "metrics",
            lambda: listen_metrics(
                reactor, metrics, settings.port, settings.address, health_resources(health)
            ),
        )
    health.daemon = service = DaemonService(
        config=config,
        keystore=keystore,
        state=state,
        quarantine=quarantine,
        metrics=metrics,
        ingest=ingest,
        pumps=pumps,
        metrics_service=metrics_service,
        listeners=_listeners(
            config, ingest, metrics, reactor, _readback(config, ingest, metrics, reactor)
        ),
        reactor=reactor,
        handle_signals=handle_signals,
    )
    service.health = health
    return service


def _pumps(config: Config, state: StateBackend, metrics: Metrics, reactor: Any) -> list[SpoolPump]:
    pumps = []
    for settings in config.sinks:
        try:
            sink = create_sink(settings.type, settings.name, settings.options)
        except SinkConfigError as error:
            raise ConfigError(f"{sink_error_path(settings, error.key)}: {error.reason}") from None
        except OSError as error:
            raise StartupError(f"{settings.path}: cannot open sink: {error}") from None
        pumps.append(
            SpoolPump(
                state,
                sink,
                settings.batch_size,
                settings.retry_backoff,
                max_backoff=settings.retry_backoff_max,
                reactor=reactor,
                on_delivered=metrics.delivered,
            )
        )
    return pumps


def _readback(config: Config, ingest: Ingest, metrics: Metrics, reactor: Any) -> Readback:
    """Push-then-read on the TCP wrapper listeners; marks beside the SQLite state."""
    dsn = config.state.dsn or str(config.state_db)
    marks: ReadbackMarks = MemoryMarks() if is_postgresql(dsn) else SqliteMarks(sqlite_path(dsn))
    return Readback(ingest=ingest, marks=marks, metrics=metrics, reactor=reactor)


def fit_connection_limits(config: Config) -> Config:
    """The config with each TCP listener's ``max_connections`` within RLIMIT_NOFILE.

    Raises the soft limit as far as the listeners need (up to the hard limit),
    else warns once and lowers their limits (`dlmsd.service.descriptors`).
    """
    listeners = config.listeners
    streams: tuple[TcpListenerConfig | HdlcTcpListenerConfig | MbusTcpListenerConfig, ...] = (
        *listeners.tcp,
        *listeners.hdlc_tcp,
        *listeners.mbus_tcp,
    )
    if not streams:
        return config
    fitted = fit_descriptor_limit([stream.max_connections for stream in streams])
    if fitted.raised:
        _build_log.info(
            "raised the open-file limit (RLIMIT_NOFILE) from {before} to {after} for"
            " {connections} TCP connections",
            before=fitted.soft_before,
            after=fitted.soft,
            connections=sum(stream.max_connections for stream in streams),
        )
    if not fitted.clamped:
        return config
    _build_log.warn(
        "open-file limit (RLIMIT_NOFILE) {soft} is below the {wanted} descriptors the TCP"
        " listeners' max_connections need (hard limit {hard}): lowered max_connections to"
        " {limits}; raise LimitNOFILE (systemd) or ulimit -n",
        soft=fitted.soft,
        wanted=fitted.wanted,
        hard=fitted.hard,
        limits=", ".join(
            f"{stream.name}={limit}" for stream, limit in zip(streams, fitted.limits, strict=True)
        ),
    )
    limits = iter(fitted.limits)
    return attrs.evolve(
        config,
        listeners=attrs.evolve(
            listeners,
            tcp=tuple(attrs.evolve(tcp, max_connections=next(limits)) for tcp in listeners.tcp),
            hdlc_tcp=tuple(
                attrs.evolve(hdlc, max_connections=next(limits)) for hdlc in listeners.hdlc_tcp
            ),
            mbus_tcp=tuple(
                attrs.evolve(mbus, max_connections=next(limits)) for mbus in listeners.mbus_tcp
            ),
        ),
    )


def _listeners(
    config: Config, ingest: Ingest, metrics: Metrics, reactor: Any, readback: Readback
) -> list[Service]:
    config = fit_connection_limits(config)
    listeners: list[Service] = []
    for udp in config.listeners.udp:
        listeners.append(PortService(udp.name, partial(listen_udp, reactor, ingest, metrics, udp)))
    for tcp in config.listeners.tcp:
        listen_wrapper = partial(
            listen_tcp, reactor, ingest, metrics, tcp, after_push=readback.after_push
        )
        listeners.append(PortService(tcp.name, listen_wrapper))
    for index, hdlc in enumerate(config.listeners.hdlc_tcp):
        hdlc = _with_meter(hdlc, ingest.keystore, f"listeners.hdlc_tcp[{index}]")
        listen = partial(listen_hdlc_tcp, reactor, ingest, metrics, hdlc)
        listeners.append(PortService(hdlc.name, listen))
    for index, serial in enumerate(config.listeners.hdlc_serial):
        serial = _with_meter(serial, ingest.keystore, f"listeners.hdlc_serial[{index}]")
        listeners.append(HdlcSerialService(reactor, ingest, metrics, serial))
    for index, mbus_tcp in enumerate(config.listeners.mbus_tcp):
        mbus_tcp = _with_meter(mbus_tcp, ingest.keystore, f"listeners.mbus_tcp[{index}]")
        listen_mbus = partial(listen_mbus_tcp, reactor, ingest, metrics, mbus_tcp)
        listeners.append(PortService(mbus_tcp.name, listen_mbus))
    for index, mbus_serial in enumerate(config.listeners.mbus_serial):
        mbus_serial = _with_meter(mbus_serial, ingest.keystore, f"listeners.mbus_serial[{index}]")
        listeners.append(MbusSerialService(reactor, ingest, metrics, mbus_serial))
    return listeners


_Named = TypeVar(
    "_Named",
    HdlcSerialListenerConfig,
    HdlcTcpListenerConfig,
    MbusSerialListenerConfig,
    MbusTcpListenerConfig,
)


def _with_meter(config: _Named, keystore: KeyStore, path: str) -> _Named:
    """A listener's `meter` (a key store name) resolved to its system title, at start."""
    if config.meter is None:
        return config
    titles = [entry.system_title for entry in keystore if entry.name == config.meter]
    if len(titles) != 1:
        found = "no meter" if not titles else f"{len(titles)} meters"
        raise StartupError(f"{path}.meter: {found} named {config.meter!r} in the key store")
    return attrs.evolve(config, system_title=titles[0])
