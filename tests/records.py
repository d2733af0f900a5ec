"""The record contract in tests: every record a test reads is checked against
docs/record.schema.json (push records, profile records, quarantine entries).

Tests that read records (the JSONL sink's file, the quarantine file) go through
`validated`; a field added to a record without its schema entry fails them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "record.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
_VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def schema_errors(record: object) -> list[str]:
    """Every violation of the schema, as ``path: message`` lines."""
    errors = sorted(_VALIDATOR.iter_errors(record), key=lambda error: list(error.path))
    return [f"{'/'.join(map(str, error.path)) or '(record)'}: {error.message}" for error in errors]


def validate_record(record: object) -> None:
    """Raise AssertionError naming what is wrong when `record` breaks the schema."""
    errors = schema_errors(record)
    if errors:
        kind = record.get("kind") if isinstance(record, dict) else None
        # oneOf reports every branch: the branch of the record's own kind says most.
        if isinstance(kind, str) and kind in SCHEMA["$defs"]:
            branch = jsonschema.Draft202012Validator(
                {"$ref": f"#/$defs/{kind}", "$defs": SCHEMA["$defs"]}
            )
            errors = [
                f"{'/'.join(map(str, e.path)) or '(record)'}: {e.message}"
                for e in branch.iter_errors(record)
            ] or errors
        raise AssertionError(f"record breaks docs/record.schema.json: {errors}\n{record}")


def validated(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records, each checked against the schema."""
    out = list(records)
    for record in out:
        validate_record(record)
    return out
