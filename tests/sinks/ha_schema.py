"""The schema Home Assistant documents for MQTT sensor discovery payloads, as a JSON
Schema (schemas/ha-mqtt-sensor.schema.json cites the pages it was written from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).parent / "schemas" / "ha-mqtt-sensor.schema.json"
SENSOR_SCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def check_discovery(config: dict[str, Any]) -> None:
    """Raise with every schema violation of one discovery payload."""
    errors = sorted(SENSOR_SCHEMA.iter_errors(config), key=lambda error: list(error.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
