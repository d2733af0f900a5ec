"""Sinks: where accepted readings go (JSONL file built in; MQTT/HTTP plug in).

Importing this package registers the built-in sink types.
"""

from __future__ import annotations

from typing import Any

from dlmsd.sinks.base import (
    Sink,
    SinkConfigError,
    SinkFactory,
    create_sink,
    register_sink,
    sink_types,
)
from dlmsd.sinks.jsonl import JsonlSink, jsonl_sink_factory


def _mqtt_sink(name: str, options: Any) -> Sink:
    # Imported on use: a daemon without an MQTT sink never loads paho.
    from dlmsd.sinks.mqtt import mqtt_sink_factory

    return mqtt_sink_factory(name, options)


def _http_sink(name: str, options: Any) -> Sink:
    # Imported on use: treq pulls in twisted.web's client.
    from dlmsd.sinks.http import http_sink_factory

    return http_sink_factory(name, options)


register_sink("jsonl", jsonl_sink_factory, replace=True)
register_sink("mqtt", _mqtt_sink, replace=True)
register_sink("http", _http_sink, replace=True)

__all__ = [
    "JsonlSink",
    "Sink",
    "SinkConfigError",
    "SinkFactory",
    "create_sink",
    "register_sink",
    "sink_types",
]
