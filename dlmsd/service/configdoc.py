"""Generate docs/configuration.md from the config classes and the validators.

    python -m dlmsd.service.configdoc > docs/configuration.md     (or: make config-docs)
    python -m dlmsd.service.configdoc --check docs/configuration.md

Every option's one-line doc is written where the option is defined:
``metadata=doc("...")`` on its field in `dlmsd.service.config`, or an entry in
the ``OPTION_DOCS`` table of a sink module. Type, range and default are not
written twice: the validators record what they enforce while parsing the
sample config below (`dlmsd.service.optiondoc`). `problems()` lists every
option without a doc (saying where to add it), every doc without an option,
and every option the sample does not reach; ``--check`` and the test
``tests/service/test_configdoc.py`` fail on any of them, and when the
committed file differs from what this module generates.
"""

from __future__ import annotations

import argparse
import copy
import re
import socket
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from dlmsd.service import config as config_module
from dlmsd.service.optiondoc import REQUIRED, OptionSpec, recording

CONFIG_FILE = "dlmsd/service/config.py"

# A config reaching every key of every section; keys read only when present are
# given. Array-of-tables kinds missing here get a table of placeholders.
SAMPLE: dict[str, Any] = {
    "daemon": {},
    "listeners": {
        "udp": [{}],
        "tcp": [{}],
        "hdlc_serial": [
            {"device": "/dev/ttyUSB0", "system_title": "4C475A6700000001"},
            {"device": "/dev/ttyUSB1", "meter": "flat-1"},
        ],
        "hdlc_tcp": [{"system_title": "4C475A6700000001"}, {"port": 4061, "meter": "flat-1"}],
        "mbus_serial": [
            {"device": "/dev/ttyUSB2", "system_title": "4C475A6700000001"},
            {"device": "/dev/ttyUSB3", "meter": "flat-1"},
        ],
        "mbus_tcp": [
            {"port": 4062, "system_title": "4C475A6700000001"},
            {"port": 4063, "meter": "flat-1"},
        ],
    },
    "keys": {"files": ["/etc/dlmsd/keys.toml"]},
    "metrics": {},
    "sinks": [{"type": "jsonl", "path": "/var/lib/dlmsd/readings.jsonl"}],
    "state": {"dsn": "/var/lib/dlmsd/state.sqlite3", "instance": "dlmsd-1"},
    "quarantine": {"dir": "/var/lib/dlmsd/quarantine"},
}


@attrs.frozen(slots=True)
class SinkType:
    """A built-in sink type: its validator, its docs table and samples reaching every key."""

    module: str
    parse: Callable[[Mapping[str, Any]], object]
    docs: Mapping[str, str]
    samples: tuple[Mapping[str, Any], ...]


def builtin_sink_types() -> dict[str, SinkType]:
    from dlmsd.sinks import http, jsonl, mqtt_messages

    return {
        "jsonl": SinkType(
            "dlmsd/sinks/jsonl.py",
            jsonl.parse_jsonl_settings,
            jsonl.OPTION_DOCS,
            ({"path": "/var/lib/dlmsd/readings.jsonl"},),
        ),
        "mqtt": SinkType(
            "dlmsd/sinks/mqtt_messages.py",
            lambda options: mqtt_messages.parse_mqtt_settings("SINK", options),
            mqtt_messages.OPTION_DOCS,
            (
                {"username": "dlmsd", "password_file": "/etc/dlmsd/mqtt-password"},
                {
                    "tls": True,
                    "ca_file": "/ca.pem",
                    "cert_file": "/cert.pem",
                    "key_file": "/key.pem",
                    "key_password_env": "KEY_PASSWORD",
                    "mode": "both",
                    "homeassistant": True,
                    "push_interval": 900,
                    "password_env": "MQTT_PASSWORD",
                    "username": "dlmsd",
                },
            ),
        ),
        "http": SinkType(
            "dlmsd/sinks/http.py",
            http.parse_http_settings,
            http.OPTION_DOCS,
            (
                {
                    "url": "https://collector.example/readings",
                    "dead_letter": "/var/lib/dlmsd/dead-letter.jsonl",
                    "username": "dlmsd",
                    "password_file": "/etc/dlmsd/http-password",
                    "ca_file": "/ca.pem",
                },
                {
                    "url": "https://collector.example/readings",
                    "dead_letter": "/var/lib/dlmsd/dead-letter.jsonl",
                    "bearer_token_env": "TOKEN",
                },
            ),
        ),
    }


@attrs.frozen(slots=True)
class Option:
    """One row of the reference."""

    path: str
    type: str
    range: str
    default: str
    doc: str


@attrs.frozen(slots=True)
class Section:
    """One table of the reference: its heading, what it is, its options."""

    heading: str
    summary: str
    options: tuple[Option, ...]


# --- collecting ------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _table_class(hint: Any) -> type | None:
    """The attrs class of an array-of-tables field (``tuple[X, ...]``), if it is one."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if args and attrs.has(args[0]):
            return typing.cast(type, args[0])
    return None


_Table = tuple[str, str, type, list["attrs.Attribute[Any]"]]


def _walk(root: type) -> list[_Table]:
    """(heading, path prefix, class, fields) of every table the config classes define."""
    tables: list[_Table] = []
    for section in attrs.fields(root):
        hint = _hints(root)[section.name]
        if section.name == "sinks":
            common = [f for f in attrs.fields(config_module.SinkConfig) if f.name in _SINK_COMMON]
            tables.append(("[[sinks]]", "sinks[]", config_module.SinkConfig, common))
            continue
        if not attrs.has(hint):
            continue
        plain: list[attrs.Attribute[Any]] = []
        arrays: list[_Table] = []
        for field in attrs.fields(hint):
            kind = _table_class(_hints(hint)[field.name])
            if kind is not None:
                prefix = f"{section.name}.{field.name}"
                arrays.append((f"[[{prefix}]]", f"{prefix}[]", kind, list(attrs.fields(kind))))
            else:
                plain.append(field)
        if plain:
            tables.append((f"[{section.name}]", section.name, hint, plain))
        tables.extend(arrays)
    return tables


_SINK_COMMON = config_module._SINK_COMMON


def _fill_required(sample: dict[str, Any], error: str, specs: Sequence[OptionSpec]) -> bool:
    """Put a placeholder where the parse said ``<path>: required key missing``."""
    match = re.fullmatch(r"(.+): required key missing", error)
    if not match:
        return False
    path = match.group(1)
    spec = next((s for s in reversed(specs) if s.path == re.sub(r"\[\d+\]", "[]", path)), None)
    parts = re.findall(r"(\w+)(?:\[(\d+)\])?", path)
    node: Any = sample
    for name, index in parts[:-1]:
        node = node.setdefault(name, [{}] if index else {})
        if index:
            node = node[int(index)]
    node[parts[-1][0]] = _placeholder(spec.expected if spec else "")
    return True


def _placeholder(expected: str) -> object:
    if expected.startswith("an integer"):
        return int(expected.split()[-1].split("..")[0])
    if expected.startswith("a number"):
        return float(re.findall(r"[\d.]+", expected)[0])
    if expected == "true or false":
        return False
    if expected.startswith("one of"):
        return re.findall(r"'([^']*)'", expected)[0]
    if "system title" in expected:
        return "0000000000000001"
    if expected == "an array of paths":
        return ["/example"]
    return "/example" if "path" in expected else "example"


def _record_config(root_sample: Mapping[str, Any], root: type) -> list[OptionSpec]:
    sample = copy.deepcopy(dict(root_sample))
    for heading, _, _, _ in _walk(root):
        match = re.fullmatch(r"\[\[listeners\.(\w+)\]\]", heading)
        if match:
            sample["listeners"].setdefault(match.group(1), [{}])
    for _ in range(100):
        with recording() as specs:
            try:
                config_module.parse_config(sample)
                return specs
            except config_module.ConfigError as error:
                if not _fill_required(sample, str(error), specs):
                    raise RuntimeError(
                        f"the docs sample config is refused: {error}; fix SAMPLE in"
                        " dlmsd/service/configdoc.py"
                    ) from None
    raise RuntimeError("the docs sample config needs too many placeholders")


def _first(specs: Sequence[OptionSpec]) -> dict[str, OptionSpec]:
    found: dict[str, OptionSpec] = {}
    for spec in specs:
        found.setdefault(spec.path, spec)
    return found


def collect(
    root: type | None = None, sink_types: Mapping[str, SinkType] | None = None
) -> tuple[list[Section], list[str]]:
    """The reference's sections and the problems found (empty when everything is documented)."""
    root = root or config_module.Config
    sink_types = builtin_sink_types() if sink_types is None else sink_types
    specs = _first(_record_config(SAMPLE, root))
    sections, problems = [], []
    for heading, prefix, cls, fields in _walk(root):
        rows = []
        for field in fields:
            path = f"{prefix}.{field.name}"
            text = field.metadata.get("doc")
            if not text:
                problems.append(
                    f'{path}: no one-line doc; add metadata=doc("...") to the field'
                    f" {field.name!r} of class {cls.__name__} in {CONFIG_FILE}"
                )
            spec = specs.get(path)
            if spec is None and not field.metadata.get("kind"):
                problems.append(
                    f"{path}: no typed reader recorded it; give it a value in SAMPLE in"
                    " dlmsd/service/configdoc.py, or (if its validator reads it without a"
                    ' typed _Table reader) describe it: metadata=doc("...", kind="...")'
                    f" on the field {field.name!r} of class {cls.__name__} in {CONFIG_FILE}"
                )
            rows.append(_option(path, spec, field, text or ""))
        sections.append(Section(heading, _summary(cls), tuple(rows)))
    for kind, sink in sink_types.items():
        sink_specs: list[OptionSpec] = []
        for sample in sink.samples:
            with recording() as recorded:
                sink.parse(sample)
            sink_specs.extend(recorded)
        found = _first(sink_specs)
        rows = []
        for key, spec in found.items():
            text = sink.docs.get(key, "")
            if not text:
                problems.append(
                    f"sinks (type {kind}).{key}: no one-line doc; add {key!r} to OPTION_DOCS"
                    f" in {sink.module}"
                )
            rows.append(_option(key, spec, None, text))
        for key in sink.docs:
            if key not in found:
                problems.append(
                    f"sinks (type {kind}).{key}: documented in OPTION_DOCS of {sink.module}"
                    " but not read by its validator (or not reached by its samples in"
                    " dlmsd/service/configdoc.py)"
                )
        sections.append(
            Section(f'[[sinks]] type = "{kind}"', f"Options of the {kind} sink.", tuple(rows))
        )
    return sections, problems


def _summary(cls: type) -> str:
    text = (cls.__doc__ or "").strip().split("\n\n")[0]
    text = " ".join(text.split())
    text = re.sub(r"^``[^`]+``: ", "", text)
    return text[:1].upper() + text[1:]


_HOST = socket.gethostname()


def _option(
    path: str, spec: OptionSpec | None, field: attrs.Attribute[Any] | None, text: str
) -> Option:
    if spec is None:
        default: object = REQUIRED
        if field is not None and isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            default = ""
        elif field is not None and field.default is not attrs.NOTHING:
            default = field.default
        kind = str(field.metadata.get("kind") or field.type) if field is not None else "?"
        limits = ""
    else:
        default = spec.default
        kind, limits = _type_and_range(spec.expected)
        if default is REQUIRED and field is not None and field.default is not attrs.NOTHING:
            default = field.default  # read only when present (e.g. state.dsn)
    return Option(path.rsplit(".", 1)[-1], kind, limits, _show(default), text)


def _type_and_range(expected: str) -> tuple[str, str]:
    match = re.fullmatch(r"an integer (-?\d+)\.\.(-?\d+)", expected)
    if match:
        return "integer", f"{match.group(1)} .. {match.group(2)}"
    match = re.fullmatch(r"a number (\S+)\.\.(\S+)", expected)
    if match:
        low, high = match.groups()
        return "number", f">= {low:g}" if high == "inf" else f"{_num(low)} .. {_num(high)}"
    match = re.fullmatch(r"a number >= (\S+)", expected)
    if match:
        return "number", f">= {_num(match.group(1))}"
    if expected.startswith("one of "):
        return "string", expected[len("one of ") :]
    if expected == "true or false":
        return "boolean", ""
    if "system title" in expected:
        return "string", "16 hex characters"
    if expected.startswith("a path"):
        return "path", expected[len("a path") :].strip(" ()")
    if expected == "an array of paths":
        return "array of paths", "at least one"
    if expected == "a non-empty string":
        return "string", "non-empty"
    if expected == "an environment variable name":
        return "string", "variable name"
    return expected, ""


def _num(text: str) -> str:
    return f"{float(text):g}"


def _show(value: object) -> str:
    if value is REQUIRED:
        return "required"
    if value is None:
        return "(none)"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str | Path):
        text = str(value).replace(_HOST, "HOST")
        return f'"{text}"'
    return str(value)


# --- rendering -------------------------------------------------------------------------

HEADER = """\
# Configuration reference

<!-- Generated by `python -m dlmsd.service.configdoc` (`make config-docs`); do not edit.
     Each option's doc lives next to its definition: metadata=doc(...) in
     dlmsd/service/config.py, OPTION_DOCS in the sink modules. -->

The daemon reads one TOML file (`twistd dlmsd --config FILE`). Every key is
checked at start: an unknown key or a value out of range stops the daemon
with one line naming the key's path, e.g.
`listeners.udp[0].port: expected an integer 0..65535, got 'abc'`.
Relative paths are taken against the working directory; production configs
should use absolute paths. `etc/dlmsd.toml` is a working example.

Secrets (MQTT/HTTP passwords, tokens, TLS key passwords) are never written in
the config: `*_file` names a file (first line; mode 0600 or tighter, checked
at start like key files), `*_env` an environment variable (checked at start).
"""


def render(sections: Sequence[Section]) -> str:
    out = [HEADER]
    for section in sections:
        out.append(f"\n## `{section.heading}`\n\n{section.summary}\n\n")
        out.append("| key | type | range | default | description |\n")
        out.append("|---|---|---|---|---|\n")
        for option in section.options:
            cells = [f"`{option.path}`", option.type, option.range, option.default, option.doc]
            out.append("| " + " | ".join(_cell(cell) for cell in cells) + " |\n")
    return "".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlmsd.service.configdoc", description="Write docs/configuration.md."
    )
    parser.add_argument("--check", metavar="FILE", help="fail if FILE is not up to date")
    args = parser.parse_args(argv)
    sections, problems = collect()
    for problem in problems:
        print(f"configdoc: {problem}", file=sys.stderr)
    text = render(sections)
    if args.check:
        current = Path(args.check).read_text(encoding="utf-8")
        if current != text:
            print(
                f"configdoc: {args.check} is out of date: run `make config-docs`", file=sys.stderr
            )
            return 1
        return 1 if problems else 0
    sys.stdout.write(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
