"""Published test vectors (tests/data/published.json, copied from ../shared/vectors).

Each entry names its `source` (repository and file, or thread); tests cite it
through the ids that `by_kind` gives them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "published.json"


@cache
def published() -> tuple[dict[str, Any], ...]:
    with DATA.open(encoding="utf-8") as handle:
        return tuple(json.load(handle))


def by_kind(*kinds: str) -> list[dict[str, Any]]:
    return [vector for vector in published() if vector["kind"] in kinds]


def vector_id(vector: dict[str, Any]) -> str:
    """A pytest id that cites the vector's published source."""
    return f"{vector['kind']}@{vector['source']}"
