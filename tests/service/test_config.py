"""Config validation: every unknown key and wrong type refused with its path."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.service.config import (
    ConfigError,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[daemon]
state_dir = "/var/lib/dlmsd"
[[listeners.udp]]
[keys]
files = ["/etc/dlmsd/keys.toml"]
[[sinks]]
type = "jsonl"
path = "/var/lib/dlmsd/readings.jsonl"
"""


def parse(text: str) -> Any:
    return parse_config(tomllib.loads(text))


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as error:
        parse(text)
    return str(error.value)


def test_sample_config_loads_as_make_run_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("etc/dlmsd.toml")
    assert [u.port for u in config.listeners.udp] == [4059]
    assert [t.port for t in config.listeners.tcp] == [4059]
    assert config.metrics.port == 9464
    assert config.keys.files == (REPO / "etc" / "keys.toml", REPO / "etc" / "sim-keys.toml")
    assert config.daemon.state_dir == REPO / "var" / "state"
    assert config.sinks[0].type == "jsonl"
    assert config.sinks[0].options["path"] == "var/readings.jsonl"


def test_minimal_config_gets_the_defaults() -> None:
    config = parse(MINIMAL)
    [udp] = config.listeners.udp
    assert (udp.address, udp.port, udp.reuse_port, udp.name) == (
        "0.0.0.0",
        4059,
        False,
        "udp:0.0.0.0:4059",
    )
    assert config.daemon.log_format == "text"
    assert (config.daemon.log_level, dict(config.daemon.log_levels)) == ("info", {})
    assert config.metrics.per_meter is False
    assert config.state.synchronous == "full"
    assert config.sinks[0].name == "jsonl"
    assert config.quarantine_dir == Path("/var/lib/dlmsd/quarantine")
    assert config.state_db == Path("/var/lib/dlmsd/state.sqlite3")


def test_relative_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse(
        MINIMAL.replace('"/var/lib/dlmsd"', '"var/state"').replace(
            '"/etc/dlmsd/keys.toml"', '"etc/keys.toml"'
        )
    )
    assert config.daemon.state_dir == tmp_path / "var" / "state"
    assert config.keys.files == (tmp_path / "etc" / "keys.toml",)


def test_wrong_type_names_the_key_path() -> None:
    message = refused(MINIMAL.replace("[[listeners.udp]]", '[[listeners.udp]]\nport = "abc"'))
    assert message == "listeners.udp[0].port: expected an integer 0..65535, got 'abc'"


def test_typo_names_the_key_and_suggests_the_right_one() -> None:
    message = refused(MINIMAL.replace("[[listeners.udp]]", "[[listeners.udp]]\nprot = 4059"))
    assert message.startswith("listeners.udp[0].prot: unknown key (did you mean 'port'?)")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("[[listeners.udp]]", "[[listeners.udp]]\nport = 70000"), "listeners.udp[0].port"),
        (("[[listeners.udp]]", "[[listeners.udp]]\nport = true"), "got true"),
        (("[[listeners.udp]]", "[[listeners.udp]]\nreuse_port = 1"), "true or false"),
        (("[[listeners.udp]]", "[[listeners.udp]]\nmax_frame_size = 4"), "max_frame_size"),
        (("[[listeners.udp]]", "[[listeners.tcp]]\nidle_timeout = -1"), "idle_timeout"),
        (("[[listeners.udp]]", "[[listeners.tcp]]\nmax_connections = 0"), "max_connections"),
        (
            ("[[listeners.udp]]", "[[listeners.tcp]]\nmax_connections_per_source = 0"),
            "listeners.tcp[0].max_connections_per_source: expected an integer 1..",
        ),
        (
            ("[[listeners.udp]]", "[[listeners.hdlc_tcp]]\nmax_connections_per_source = 0"),
            "listeners.hdlc_tcp[0].max_connections_per_source",
        ),
        (
            ("[[sinks]]", "[state]\nreplay_window = -1\n[[sinks]]"),
            "state.replay_window: expected an integer 0..4096",
        ),
        (("[[sinks]]", "[state]\nreplay_window = 5000\n[[sinks]]"), "state.replay_window"),
        (("[[listeners.udp]]", "[[listeners.hdlc_serial]]\nbaudrate = 9600"), "device"),
        (
            ("[[listeners.udp]]", '[[listeners.hdlc_serial]]\ndevice = "/dev/x"\nparity = "X"'),
            "parity",
        ),
        (
            ("[[listeners.udp]]", '[[listeners.hdlc_serial]]\ndevice = "x"\nsystem_title = "12"'),
            "listeners.hdlc_serial[0].system_title: expected a system title",
        ),
        (("[daemon]", '[daemon]\nlog_format = "xml"'), "daemon.log_format: expected one of"),
        (("[daemon]", '[daemon]\nlog_level = "trace"'), "daemon.log_level: expected one of"),
        (("[daemon]", "[daemon]\nlog_levels = 3"), "daemon.log_levels: expected a table"),
        (
            ("[daemon]", '[daemon]\nlog_levels = { "dlmsd.sinks" = "loud" }'),
            "daemon.log_levels.dlmsd.sinks: expected one of",
        ),
        (
            ("[daemon]", '[daemon]\nlog_levels = { "a b" = "info" }'),
            "daemon.log_levels.a b: expected a logger namespace",
        ),
        (('state_dir = "/var/lib/dlmsd"', "state_dir = 3"), "daemon.state_dir: expected a path"),
        (('files = ["/etc/dlmsd/keys.toml"]', "files = []"), "keys.files: at least one"),
        (('files = ["/etc/dlmsd/keys.toml"]', 'files = "/etc/keys"'), "keys.files: expected"),
        (("[[sinks]]", "[metrics]\nport = -1\n[[sinks]]"), "metrics.port"),
        (("[[sinks]]", '[state]\nsynchronous = "off"\n[[sinks]]'), "state.synchronous"),
        (("[[sinks]]", "[state]\ncommit_batch = 0\n[[sinks]]"), "state.commit_batch"),
        (("[[sinks]]", "[quarantine]\nmax_bytes = 0\n[[sinks]]"), "quarantine.max_bytes"),
        (("[[sinks]]", "[quarantine]\nlog_intervall = 1\n[[sinks]]"), "did you mean"),
        (('type = "jsonl"', "type = 5"), "sinks[0].type"),
        (('type = "jsonl"', 'type = "jsonl"\nbatch_size = 0'), "sinks[0].batch_size"),
        (("[daemon]", "[deamon]\n[daemon]"), "deamon: unknown key (did you mean 'daemon'?)"),
        (("[[listeners.udp]]", "[[listeners.upd]]"), "listeners.upd: unknown key"),
        (("[[listeners.udp]]", "[listeners]\nudp = 3"), "listeners.udp: expected an array"),
    ],
)
def test_bad_values_are_refused_with_their_path(change: tuple[str, str], expected: str) -> None:
    assert expected in refused(MINIMAL.replace(*change, 1))


def test_listeners_and_sinks_are_required_and_names_unique() -> None:
    assert "no listener" in refused(MINIMAL.replace("[[listeners.udp]]", ""))
    no_sinks = MINIMAL.split("[[sinks]]")[0]
    assert "sinks: at least one" in refused(no_sinks)
    twice = MINIMAL + '[[sinks]]\ntype = "jsonl"\npath = "/x"\n'
    assert "duplicate sink name 'jsonl'" in refused(twice)
    two_udp = MINIMAL.replace("[[listeners.udp]]", "[[listeners.udp]]\n[[listeners.udp]]")
    assert "duplicate listener name" in refused(two_udp)


def test_sink_options_pass_to_the_sink_type() -> None:
    config = parse(MINIMAL.replace('type = "jsonl"', 'type = "jsonl"\nfsync = "always"'))
    assert config.sinks[0].options == {"path": "/var/lib/dlmsd/readings.jsonl", "fsync": "always"}
    assert config.sinks[0].path == "sinks[0]"


def test_files_that_cannot_be_read_or_parsed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[daemon\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=8),
)
_keys = st.sampled_from(
    [
        "daemon",
        "listeners",
        "keys",
        "metrics",
        "sinks",
        "state",
        "quarantine",
        "udp",
        "tcp",
        "hdlc_serial",
        "hdlc_tcp",
        "port",
        "address",
        "files",
        "type",
        "name",
        "path",
        "device",
        "idle_timeout",
        "state_dir",
        "log_format",
        "x",
    ]
)
_documents = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_keys, children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _documents, max_size=6))
def test_arbitrary_documents_only_raise_config_error(document: dict[str, Any]) -> None:
    try:
        parse_config(document)
    except ConfigError as error:
        assert str(error)


def test_mqtt_sinks_batch_a_full_in_flight_window_by_default() -> None:
    config = parse(
        MINIMAL
        + '\n[[sinks]]\ntype = "mqtt"\nname = "broker"\nhost = "localhost"\n'
        + '\n[[sinks]]\ntype = "mqtt"\nname = "small"\nhost = "localhost"\nbatch_size = 50\n'
    )
    sizes = {sink.name: sink.batch_size for sink in config.sinks}
    assert sizes["broker"] == 1000 and sizes["small"] == 50
    assert all(size == 500 for name, size in sizes.items() if name not in ("broker", "small"))
