"""The daemon's log lines as an operator reads them: flat JSON, levels, unknown meters.

Each test runs the real daemon (twistd subprocess, `DaemonProcess`) and reads what
it printed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dlmsd.service.logging import event_as_json
from tests.faults.support import DaemonProcess, push, record_id, send_udp, wait_for

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# A system title with a FLAG-like head ("SIM"): logged as 16 hex, not as SIM0999...
STRANGER_TITLE = b"SIM\x09\x99\x00\x00\x42"


def stranger_push(daemon: DaemonProcess) -> bytes:
    """A valid push of a known meter with its system title replaced (synthetic)."""
    frame = push(daemon.meters[0], 1)
    return frame[:10] + STRANGER_TITLE + frame[18:]


def set_daemon_keys(daemon: DaemonProcess, text: str) -> None:
    daemon.config.write_text(daemon.config.read_text().replace("[daemon]\n", f"[daemon]\n{text}"))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_are_flat_objects_with_rendered_messages(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, log_format="json")
    with daemon:
        meter = daemon.meters[1]
        send_udp(daemon.udp_port, [push(meter, 7), stranger_push(daemon)])
        wait_for(lambda: record_id(meter, 7) in daemon.record_ids(), 10, "the push")
        wait_for(lambda: daemon.rejected("unknown_meter") == 1, 10, "the stranger")
    # Every line the daemon printed is one JSON object (nothing from Twisted's raw dicts).
    lines = json_lines(daemon.log())
    assert len(lines) >= 5
    for line in lines:
        assert list(line)[:4] == ["time", "level", "logger", "message"], line
        assert ISO_UTC.fullmatch(line["time"]), line["time"]
        assert line["level"] in ("debug", "info", "warn", "error", "critical")
        assert not any(key.startswith("log_") for key in line), line
        assert "unpersistable" not in json.dumps(line)
    [started] = [line for line in lines if line["message"].startswith("dlmsd started")]
    assert started["level"] == "info"
    assert started["logger"] == "dlmsd.service.maker.DaemonService"
    assert started["meters"] == len(daemon.meters) + 1  # the fields follow, as values
    assert f"{started['meters']} meters" in started["message"]
    [unknown] = [line for line in lines if line.get("reason") == "unknown_meter"]
    assert unknown["level"] == "warn"
    assert unknown["system_title"] == STRANGER_TITLE.hex().upper()
    assert STRANGER_TITLE.hex().upper() in unknown["message"]
    assert any(line["message"] == "dlmsd stopped" for line in lines)


def test_text_lines_name_unknown_meters_by_their_system_title(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    with daemon:
        send_udp(daemon.udp_port, [stranger_push(daemon)])
        wait_for(lambda: "unknown_meter" in daemon.log(), 10, "the stranger")
    line = next(line for line in daemon.log().splitlines() if "unknown_meter" in line)
    # `dlmsd keys add` takes the 16-hex title; the FLAG form follows for people.
    assert f"system title {STRANGER_TITLE.hex().upper()} (SIM" in line


def test_log_level_drops_lower_events_and_namespaces_override_it(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    set_daemon_keys(
        daemon,
        'log_level = "warn"\nlog_levels = { "dlmsd.service.maker" = "info" }\n',
    )
    with daemon:
        send_udp(daemon.udp_port, [stranger_push(daemon)])
        wait_for(lambda: "unknown_meter" in daemon.log(), 10, "the stranger")
    log = daemon.log()
    assert "dlmsd started" in log  # info, but its namespace is set to info
    assert "udp listening on" in log  # dlmsd.service.maker.PortService: a child namespace
    assert "push rejected: unknown_meter" in log  # warn passes the default
    assert "starting up" not in log  # twistd's own info line is dropped
    assert "Main loop terminated" not in log


def test_json_fields_that_json_cannot_hold_are_made_safe() -> None:
    event = {
        "log_format": "{title!r} {count}",
        "log_level": None,
        "log_namespace": "x",
        "log_time": 0.0,
        "title": b"\x01\x02",
        "count": float("nan"),
        "message": "a field with a reserved name",
        "nested": {"set": {1}, "obj": object()},
    }
    line = json.loads(event_as_json(event))
    assert line["time"] == "1970-01-01T00:00:00.000Z"
    assert line["message"] == "b'\\x01\\x02' nan"
    assert line["title"] == "0102" and line["count"] is None
    assert line["message_"] == "a field with a reserved name"
    assert line["nested"]["set"] == [1] and line["nested"]["obj"].startswith("<object")
