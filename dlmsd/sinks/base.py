"""The sink interface and the registry of sink types.

A sink takes batches of records (JSON-able mappings) and says, through a
Deferred, when they are safely stored. The spool pump deletes records from the
durable spool only after that Deferred fired, so delivery is at-least-once;
records carry ``system_title`` and ``invocation_counter`` (and spooled ones a
``record_id``) for consumers to drop duplicates. Spooled records are
`dlmsd.service.state.SpoolRecord`s: a sink that sends the JSON as it is takes
their ``utf8`` (the stored bytes) or ``json``, and never parses a field.

Sink types register a factory under a type name (``register_sink("jsonl",
factory)``); the daemon builds each configured ``[[sinks]]`` table with
``create_sink(type, name, options)``. Third-party packages add types without
touching dlmsd through the ``dlmsd.sinks`` entry point group, e.g. in their
setup.cfg ``dlmsd.sinks = kafka = mypkg.sink:kafka_sink_factory``; an entry
point is loaded only when a config names its type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, cast, runtime_checkable

from twisted.internet.defer import Deferred


@runtime_checkable
class Sink(Protocol):
    """Where accepted readings go.

    `deliver` must not be called again before its previous Deferred fired (the
    pump guarantees it). A failed Deferred means nothing of the batch may be
    counted as stored; the pump retries the whole batch later.
    """

    name: str

    def deliver(self, records: Sequence[Mapping[str, object]]) -> Deferred[None]:
        """Store a batch; fire when it is durable as the sink's policy defines."""
        ...

    def close(self) -> Deferred[None]:
        """Flush and release resources; fire when done."""
        ...


SinkFactory = Callable[[str, Mapping[str, Any]], Sink]
"""Builds a sink from its name and the type's own options (a config table)."""


class SinkConfigError(Exception):
    """A sink option that is missing, unknown or of the wrong type.

    `key` is relative to the sink's table; the daemon prefixes it with the
    table's path.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


_FACTORIES: dict[str, SinkFactory] = {}


def register_sink(type_name: str, factory: SinkFactory, *, replace: bool = False) -> None:
    """Make a sink type available to the configuration under `type_name`."""
    if type_name in _FACTORIES and not replace:
        raise ValueError(f"sink type {type_name!r} is already registered")
    _FACTORIES[type_name] = factory


def sink_types() -> tuple[str, ...]:
    """The registered sink type names, sorted."""
    return tuple(sorted(_FACTORIES))


def create_sink(type_name: str, name: str, options: Mapping[str, Any]) -> Sink:
    """Build a sink of a registered type; raises SinkConfigError."""
    factory = _FACTORIES.get(type_name) or _entry_point_factory(type_name)
    if factory is None:
        known = ", ".join(sink_types()) or "none"
        raise SinkConfigError("type", f"unknown sink type {type_name!r} (known: {known})")
    return factory(name, options)


ENTRY_POINT_GROUP = "dlmsd.sinks"


def _entry_point_factory(type_name: str) -> SinkFactory | None:
    """The factory a ``dlmsd.sinks`` entry point named `type_name` provides, if any."""
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=type_name):
        try:
            factory = entry.load()
        except Exception as error:
            raise SinkConfigError(
                "type", f"sink type {type_name!r} from {entry.value} cannot be loaded: {error}"
            ) from None
        if not callable(factory):
            raise SinkConfigError("type", f"entry point {entry.value} is not a sink factory")
        register_sink(type_name, factory)
        return cast(SinkFactory, factory)
    return None
