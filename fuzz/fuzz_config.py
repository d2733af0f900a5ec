"""Fuzz the daemon's TOML configuration loader, `load_config`.

The input is the file's bytes, written to a temporary file and loaded the way
the daemon loads it. Only `ConfigError` may escape (it carries the key path
and the reason the operator sees); anything else would be a traceback at start.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from fuzz.common import ROOT, guarded, instrumented, main

with instrumented():
    from dlmsd.service.config import ConfigError, load_config

NAME = "config"
DECODERS = "service.config.load_config (TOML)"

_DIRECTORY = Path(tempfile.mkdtemp(prefix="dlmsd-fuzz-config-"))
atexit.register(shutil.rmtree, _DIRECTORY, True)
_PATH = _DIRECTORY / "dlmsd.toml"


def check(data: bytes) -> None:
    _PATH.write_bytes(data)
    config = load_config(_PATH)
    assert config.listeners.names, "a config without listeners was accepted"


test_one_input = guarded(check, (ConfigError,))


_MINIMAL = b"""[daemon]
state_dir = "var"
[[listeners.udp]]
name = "udp"
port = 4059
reuse_port = true
[[listeners.tcp]]
name = "tcp"
idle_timeout = 1.5
[[listeners.hdlc_serial]]
name = "han"
device = "/dev/ttyUSB0"
system_title = "4B464D1234567890"
[keys]
files = ["keys.toml"]
[[sinks]]
type = "jsonl"
name = "jsonl"
path = "r.jsonl"
[state]
spool_full = "drop_oldest"
"""


def seeds() -> list[bytes]:
    return [(ROOT / "etc" / "dlmsd.toml").read_bytes(), _MINIMAL, b"", b"[daemon]\n"]


if __name__ == "__main__":
    main(test_one_input, seeds)
