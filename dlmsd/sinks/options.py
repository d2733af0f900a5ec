"""What the network sinks share: typed option reading, secrets, backoff.

`OptionReader` checks a sink's config table key by key and raises
`SinkConfigError` naming the key, like the daemon's own config does.

A secret is read when it is used (each connect or request), so a rotated file
is picked up at the next connect. The sink factories also `check` each secret
once when the daemon starts, like key files: a file that is missing,
unreadable, empty, not regular or open to group/others (or an unset variable)
stops the start with one line, instead of a sink that retries forever. The
value never appears in a repr, a log line or an error message: errors name the
file or the variable only.
"""

from __future__ import annotations

import math
import os
import random
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import attrs

from dlmsd.service.optiondoc import REQUIRED, record
from dlmsd.sinks.base import SinkConfigError


class SecretError(Exception):
    """A secret cannot be read; the message names its source, never its value."""


@attrs.frozen(slots=True)
class Secret:
    """Where a secret comes from: a file (first line, without the newline) or a variable."""

    file: Path | None = None
    env: str | None = None

    def read(self) -> str:
        """The secret's value now; raises SecretError naming the source."""
        if self.file is not None:
            try:
                text = self.file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) else "not UTF-8"
                raise SecretError(f"cannot read secret file {self.file}: {reason}") from None
            value = text.splitlines()[0] if text else ""
            if not value:
                raise SecretError(f"secret file {self.file} is empty")
            return value
        if self.env is not None:
            value = os.environ.get(self.env, "")
            if not value:
                raise SecretError(f"environment variable {self.env} is not set or empty")
            return value
        raise SecretError("no secret source configured")

    def check(self) -> None:
        """At start: the file is regular, private (no group/other access) and readable, or
        the variable is set. Raises SecretError naming the source, never the value."""
        if self.file is not None:
            try:
                with open(self.file, "rb") as handle:
                    info = os.fstat(handle.fileno())
                    if not stat.S_ISREG(info.st_mode):
                        raise SecretError(f"secret file {self.file} is not a regular file")
                    mode = stat.S_IMODE(info.st_mode)
                    if mode & 0o077:
                        raise SecretError(
                            f"secret file {self.file} mode is {mode:04o}: group or others"
                            f" have access; run chmod 600 {self.file}"
                        )
            except OSError as error:
                reason = error.strerror or str(error)
                raise SecretError(f"cannot read secret file {self.file}: {reason}") from None
        self.read()

    @property
    def source(self) -> str:
        """Where the secret is read from, for messages."""
        return f"file {self.file}" if self.file is not None else f"variable {self.env}"


def secret_option(options: Mapping[str, Any], prefix: str) -> Secret | None:
    """`<prefix>_file` or `<prefix>_env` from a sink table (at most one of them).

    A literal secret in the config is refused: config files get copied, diffed
    and logged.
    """
    if prefix in options:
        raise SinkConfigError(
            prefix, f"secrets are not written in the config: use {prefix}_file or {prefix}_env"
        )
    record(f"{prefix}_file", "a path (file mode 0600 or tighter)", None)
    record(f"{prefix}_env", "an environment variable name", None)
    file = options.get(f"{prefix}_file")
    env = options.get(f"{prefix}_env")
    if file is not None and env is not None:
        raise SinkConfigError(f"{prefix}_file", f"give {prefix}_file or {prefix}_env, not both")
    if file is not None:
        if not isinstance(file, str) or not file:
            raise SinkConfigError(f"{prefix}_file", "expected a file path")
        return Secret(file=Path(file))
    if env is not None:
        if not isinstance(env, str) or not env:
            raise SinkConfigError(f"{prefix}_env", "expected an environment variable name")
        return Secret(env=env)
    return None


def check_secrets(secrets: Mapping[str, Secret | None]) -> None:
    """`Secret.check` each configured secret (keyed by option prefix, e.g. ``password``);
    raises SinkConfigError naming ``<prefix>_file`` or ``<prefix>_env``."""
    for prefix, secret in secrets.items():
        if secret is None:
            continue
        key = f"{prefix}_file" if secret.file is not None else f"{prefix}_env"
        try:
            secret.check()
        except SecretError as error:
            raise SinkConfigError(key, str(error)) from None


class Backoff:
    """Exponential backoff with jitter: `initial`, doubled per failure, capped at `maximum`.

    Jitter (up to +`jitter` of the delay) keeps many daemons from reconnecting
    to a restarted broker in the same instant.
    """

    def __init__(self, initial: float, maximum: float, jitter: float = 0.1) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.jitter = jitter
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; counts one failure."""
        delay: float = min(self.maximum, self.initial * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return delay * (1.0 + random.random() * self.jitter)

    def reset(self) -> None:
        """A success: the next failure waits `initial` again."""
        self.failures = 0


_MISSING: Any = object()


class OptionReader:
    """Typed reads from one sink table; `finish()` refuses keys nobody read (typos)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = options
        self._read: set[str] = set()

    def _get(self, key: str, default: Any, expected: str) -> Any:
        record(key, expected, REQUIRED if default is _MISSING else default)
        self._read.add(key)
        if key in self._options:
            return self._options[key]
        if default is _MISSING:
            raise SinkConfigError(key, "required key missing")
        return default

    def mark(self, *keys: str) -> None:
        """Count keys as known that are read elsewhere (e.g. by `secret_option`)."""
        self._read.update(keys)

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default, "a non-empty string")
        if not isinstance(value, str) or not value:
            raise SinkConfigError(key, "expected a non-empty string")
        return value

    def optional_string(self, key: str) -> str | None:
        if self._get(key, None, "a non-empty string") is None:
            return None
        return self.string(key)

    def choice(self, key: str, choices: Collection[str], default: Any = _MISSING) -> str:
        value = self._get(key, default, "one of " + ", ".join(map(repr, choices)))
        if value not in choices:
            raise SinkConfigError(key, "expected one of " + ", ".join(map(repr, choices)))
        return str(value)

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default, "true or false")
        if not isinstance(value, bool):
            raise SinkConfigError(key, "expected true or false")
        return bool(value)

    def integer(self, key: str, default: Any, minimum: int, maximum: int) -> int:
        value = self._get(key, default, f"an integer {minimum}..{maximum}")
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not minimum <= value <= maximum
        ):
            raise SinkConfigError(key, f"expected an integer {minimum}..{maximum}")
        return value

    def number(self, key: str, default: Any, minimum: float, maximum: float = math.inf) -> float:
        value = self._get(key, default, f"a number {minimum}..{maximum}")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or math.isnan(value)
            or not minimum <= value <= maximum
        ):
            raise SinkConfigError(key, f"expected a number {minimum}..{maximum}")
        return float(value)

    def path(self, key: str) -> Path | None:
        value = self._get(key, None, "a path")
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise SinkConfigError(key, "expected a file path")
        return Path(value)

    def finish(self) -> None:
        """Refuse any key that was not read."""
        for key in self._options:
            if key not in self._read:
                known = ", ".join(sorted(self._read))
                raise SinkConfigError(key, f"unknown key (known: {known})")
