"""Writing key files: TOML text for keys and strings, and the atomic replace.

Shared by ``dlmsd keys add`` (`keys_cli`) and ``dlmsd keys set|remove``
(`keys_edit`). A key file is replaced through a temp file created 0600 in the
same directory (the keys are never readable by others, not even briefly),
fsynced, renamed over the file; then the directory is fsynced.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(text: str) -> str:
    """A TOML basic string (escapes what TOML requires)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def toml_key(key: str) -> str:
    """A TOML key: bare when it may be, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def write_atomically(path: Path, text: str, prepare: Callable[[int], None]) -> None:
    """Replace (or create) `path` with `text` atomically; `prepare(fd)` sets the temp
    file's mode and owner after it is written and fsynced, before the rename."""
    directory = path.parent
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            prepare(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
