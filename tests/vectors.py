"""Published test vectors (tests/data/published.json, copied from ../shared/vectors).

Each entry names its `source` (repository and file, or thread); tests cite it
through the ids that `vector_id` and `vector_params` give them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from dlmsd.protocol.security import Suite0Cipher

DATA = Path(__file__).parent / "data" / "published.json"


@cache
def published() -> tuple[dict[str, Any], ...]:
    with DATA.open(encoding="utf-8") as handle:
        return tuple(json.load(handle))


def by_kind(*kinds: str) -> list[dict[str, Any]]:
    return [vector for vector in published() if vector["kind"] in kinds]


def only_vector(kind: str) -> dict[str, Any]:
    """The one published vector of ``kind`` (fails if there are none or several)."""
    (found,) = by_kind(kind)
    return found


def vector_id(vector: dict[str, Any]) -> str:
    """A pytest id that cites the vector's published source."""
    return f"{vector['kind']}@{vector['source']}"


def vector_params(*kinds: str) -> list[Any]:
    """One pytest param per published vector of these kinds, id'd by its source."""
    return [pytest.param(vector, id=vector_id(vector)) for vector in by_kind(*kinds)]


def cipher_for(keys: dict[str, Any], **kwargs: bool) -> Suite0Cipher:
    """The suite 0 cipher for a vector's ``keys`` (encryption and authentication key)."""
    return Suite0Cipher(
        bytes.fromhex(keys["encryption_key"]), bytes.fromhex(keys["authentication_key"]), **kwargs
    )
