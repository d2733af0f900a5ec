"""docs/configuration.md: every option documented where it is defined, and the file current."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from dlmsd.service import config as config_module
from dlmsd.service import configdoc
from dlmsd.service.optiondoc import doc

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"


def test_every_option_has_a_doc_and_a_range() -> None:
    _, problems = configdoc.collect()
    assert problems == [], "\n".join(problems)


def test_committed_reference_is_current() -> None:
    sections, _ = configdoc.collect()
    assert REFERENCE.read_text(encoding="utf-8") == configdoc.render(sections), (
        "docs/configuration.md is out of date: run `make config-docs`"
        " (python -m dlmsd.service.configdoc > docs/configuration.md)"
    )


def test_reference_names_the_options_the_issue_found_undocumented() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for key in (
        "qos", "protocol", "obis_topic", "client_id", "clean_session", "session_expiry",
        "keepalive", "connect_timeout", "ack_timeout", "reconnect_min", "reconnect_max",
        "discovery_prefix", "username", "timeout", "attempts", "retry_min", "retry_max",
        "spool_lease", "receive_buffer", "dsn", "instance", "keep_files", "keep_days",
    ):  # fmt: skip
        assert f"| `{key}` |" in text, key
    # Type, range and default come from the validator itself.
    assert "| `port` | integer | 0 .. 65535 | 4059 |" in text
    assert "| `qos` | integer | 1 .. 2 | 1 |" in text


# An undocumented option: the message says exactly where the doc goes.


@attrs.frozen(slots=True)
class _Daemon:
    state_dir: Path = attrs.field(default=Path("/x"), metadata=doc("documented"))
    colour: str = "blue"  # an option another branch added without its doc
    log_levels: dict[str, str] = attrs.field(
        factory=dict, metadata=doc("Level per logger namespace.", kind="table of name = level")
    )


@attrs.frozen(slots=True)
class _Root:
    daemon: _Daemon


def test_option_without_doc_names_class_field_and_file() -> None:
    sections, problems = configdoc.collect(_Root, sink_types={})
    messages = [p for p in problems if p.startswith("daemon.colour:")]
    assert messages, problems
    assert "metadata=doc(" in messages[0]
    assert "'colour' of class _Daemon in dlmsd/service/config.py" in messages[0]
    # Not read by a typed reader either: the message says how to describe it.
    assert any(p.startswith("daemon.colour:") and 'kind="...")' in p for p in problems), problems
    # state_dir is documented and read by the validator; log_levels describes itself.
    assert not [p for p in problems if p.startswith(("daemon.state_dir", "daemon.log_levels"))]
    [daemon] = [s for s in sections if s.heading == "[daemon]"]
    [levels] = [o for o in daemon.options if o.path == "log_levels"]
    assert (levels.type, levels.default) == ("table of name = level", "(empty)")


def test_sink_option_without_doc_names_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    types = configdoc.builtin_sink_types()
    jsonl = types["jsonl"]
    docs = dict(jsonl.docs)
    del docs["keep_days"]
    docs["colour"] = "stale"
    types = {"jsonl": attrs.evolve(jsonl, docs=docs)}
    _, problems = configdoc.collect(sink_types=types)
    assert any(
        p.startswith("sinks (type jsonl).keep_days: no one-line doc")
        and "OPTION_DOCS in dlmsd/sinks/jsonl.py" in p
        for p in problems
    ), problems
    assert any(p.startswith("sinks (type jsonl).colour: documented") for p in problems)


def test_check_mode_fails_on_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n")
    assert configdoc.main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert configdoc.main(["--check", str(REFERENCE)]) == 0


def test_config_classes_all_reach_the_reference() -> None:
    sections, _ = configdoc.collect()
    headings = {section.heading for section in sections}
    for field in attrs.fields(config_module.ListenersConfig):
        assert f"[[listeners.{field.name}]]" in headings
