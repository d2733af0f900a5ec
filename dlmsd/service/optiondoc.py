"""What the configuration reference is made of: one-line docs and what the validators read.

Docs sit next to the options they describe: ``metadata=doc("...")`` on each
field of the config classes in `dlmsd.service.config`, and an ``OPTION_DOCS``
table in each sink module. The validators (`config._Table`,
`sinks.options.OptionReader`) call `record` for every key they read, with the
type and range they enforce and the default they apply; `recording` collects
those calls, so the reference (`dlmsd.service.configdoc`) shows exactly what
the validation does and cannot drift from it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import attrs

REQUIRED: Any = object()
"""The default of a key that must be given."""


def doc(text: str, kind: str | None = None) -> dict[str, str]:
    """Field metadata holding an option's one-line doc (for ``attrs.field(metadata=...)``).

    `kind` describes the value for an option its validator reads without a typed
    reader (so nothing is recorded), e.g. ``"table of namespace = level"``.
    """
    return {"doc": text} if kind is None else {"doc": text, "kind": kind}


@attrs.frozen(slots=True)
class OptionSpec:
    """One key as a validator reads it: dotted path (array indexes as ``[]``), rule, default."""

    path: str
    expected: str
    default: object


_recorder: list[OptionSpec] | None = None
_INDEX = re.compile(r"\[\d+\]")


def record(path: str, expected: str, default: object) -> None:
    """Called by the validators for every key they read; a no-op unless recording."""
    if _recorder is not None:
        _recorder.append(OptionSpec(_INDEX.sub("[]", path), expected, default))


@contextlib.contextmanager
def recording() -> Iterator[list[OptionSpec]]:
    """Collect the `record` calls made inside the block (not thread-safe: docs only)."""
    global _recorder
    previous, _recorder = _recorder, []
    try:
        yield _recorder
    finally:
        _recorder = previous
