"""Every input a fuzzer crashed on, kept as a test case (newest last).

Each entry: the harness, the input (hex, as the harness takes it: its
control bytes included), what went wrong, and the fix.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import attrs
import pytest

from dlmsd.protocol.axdr import decode_data, encode_data
from dlmsd.service.config import ConfigError, load_config
from dlmsd.service.keystore import KeyFileError, parse_key_text
from fuzz.__main__ import HARNESSES


@attrs.frozen(slots=True)
class Crash:
    harness: str
    input_hex: str
    found: str


CRASHES = [
    Crash(
        "config",
        # The sample etc/dlmsd.toml with a 0xFF byte, reduced to its essence.
        b'[daemon]\nstate_dir = "var\xff"\n'.hex(),
        "UnicodeDecodeError escaped load_config for a file that is not UTF-8 "
        "(tomllib.load decodes the bytes itself); now ConfigError 'not valid UTF-8'",
    ),
    Crash(
        "keystore",
        "000d",
        "parse_key_text accepted a text ending in a lone CR that tomllib refuses (its "
        "line splitter added an LF to the last line); now split as a file is read",
    ),
]


# The A-XDR round-trip check found: a compact array whose type description
# nests 31 arrays around a leaf decodes (the decoder limits only array and
# structure descriptions to depth 32) but did not encode (the encoder counted
# the leaf too). Fixed in axdr._encode_description.
DEEP_DESCRIPTION = b"\x13" + b"\x01\x00\x00" * 31 + b"\x11" + b"\x00"


def test_deep_compact_array_description_that_decodes_also_encodes() -> None:
    value, _ = decode_data(DEEP_DESCRIPTION, 0)
    assert decode_data(encode_data(value), 0)[0] == value


def test_the_axdr_harness_passes_the_deep_description() -> None:
    module = importlib.import_module(HARNESSES["axdr"][0])
    module.test_one_input(b"\x00" + DEEP_DESCRIPTION)


@pytest.mark.parametrize(
    "crash", CRASHES, ids=[f"{c.harness}-{c.input_hex[:16]}" for c in CRASHES]
)
def test_crashing_input_now_passes_its_harness(crash: Crash) -> None:
    module = importlib.import_module(HARNESSES[crash.harness][0])
    module.test_one_input(bytes.fromhex(crash.input_hex))


def test_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "dlmsd.toml"
    path.write_bytes(b'[daemon]\nstate_dir = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path)


def test_key_text_ending_in_a_lone_cr_is_refused_like_tomllib_does() -> None:
    with pytest.raises(KeyFileError, match="not valid TOML"):
        parse_key_text("\r")
    text = '[meters.4B464D1234567890]\nsecurity = ["none"]\r'
    with pytest.raises(KeyFileError, match="not valid TOML"):
        parse_key_text(text)
    assert len(parse_key_text(text[:-1] + "\r\n")) == 1  # CRLF is fine
