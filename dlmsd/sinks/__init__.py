"""Sinks: where accepted readings go (JSONL file built in; MQTT/HTTP plug in).

Importing this package registers the built-in sink types.
"""

from __future__ import annotations

from dlmsd.sinks.base import (
    Sink,
    SinkConfigError,
    SinkFactory,
    create_sink,
    register_sink,
    sink_types,
)
from dlmsd.sinks.jsonl import JsonlSink, jsonl_sink_factory

register_sink("jsonl", jsonl_sink_factory, replace=True)

__all__ = [
    "JsonlSink",
    "Sink",
    "SinkConfigError",
    "SinkFactory",
    "create_sink",
    "register_sink",
    "sink_types",
]
