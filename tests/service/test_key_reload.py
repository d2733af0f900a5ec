"""A reload that would drop most meters is refused unless forced (issue 13, section 5).

In-process daemon (real reactor, loopback, SQLite); the twistd subprocess version
with SIGHUP and `dlmsd keys reload` is tests/faults/test_keys.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from dlmsd.service.keys_reload import force_marker, take_force_marker
from dlmsd.service.keystore import ReloadRefused, reload_refusal
from tests.service.test_daemon import make_setup, metric, start, stop, write_keys


class LogLines:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def __call__(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def levels_with(self, text: str) -> list[str]:
        from twisted.logger import formatEvent

        return [
            str(getattr(event.get("log_level"), "name", "?"))
            for event in self.events
            if text in formatEvent(event)
        ]


@pytest_twisted.ensureDeferred
async def test_an_empty_key_file_is_refused_and_the_old_keys_stay(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={})
    service = start(setup)
    lines = LogLines()
    globalLogPublisher.addObserver(lines)
    try:
        before = len(service.keystore)
        setup.keys_path.write_text("")  # a deploy tool truncated it before writing
        assert service.reload_keys() is False
        assert len(service.keystore) == before
        assert metric(service, "dlmsd_keystore_reload_failures_total") == 1
        assert metric(service, "dlmsd_keystore_meters") == before
        # Most meters gone: refused too.
        write_keys(setup.keys_path, setup.meters[:1])
        assert service.reload_keys() is False
        assert metric(service, "dlmsd_keystore_reload_failures_total") == 2
        # Forced through `dlmsd keys reload --force` (its marker in the state dir).
        force_marker(setup.root / "state").touch()
        assert service.reload_keys() is True
        assert len(service.keystore) == 2
        assert not force_marker(setup.root / "state").exists()
    finally:
        globalLogPublisher.removeObserver(lines)
        await stop(service)
    assert lines.levels_with("key store reload refused") == ["warn", "warn"]
    assert lines.levels_with("reloaded (forced)") == ["warn"]


@pytest_twisted.ensureDeferred
async def test_reload_max_drop_is_configurable(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, udp={}, extra="")
    text = setup.config_path.read_text().replace("[keys]\n", "[keys]\nreload_max_drop = 1.0\n")
    setup.config_path.write_text(text)
    service = start(setup)
    try:
        setup.keys_path.write_text("")
        assert service.reload_keys() is True  # 1.0: the check is off
        assert len(service.keystore) == 0
    finally:
        await stop(service)


def test_reload_refusal_counts_titles_dropped() -> None:
    current = {bytes([n]) * 8: None for n in range(10)}
    assert reload_refusal(current, current, 0.5) is None
    half = dict(list(current.items())[:5])
    assert reload_refusal(current, half, 0.5) is None  # 5 of 10: not more than half
    four = dict(list(current.items())[:4])
    assert "drop 6 of the 10" in (reload_refusal(current, four, 0.5) or "")
    others = {bytes([n + 100]) * 8: None for n in range(10)}
    assert reload_refusal(current, others, 0.5) is not None  # same count, all replaced
    assert "no meter" in (reload_refusal(current, {}, 0.99) or "")
    assert reload_refusal(current, {}, 1.0) is None
    assert reload_refusal({}, {}, 0.0) is None  # nothing loaded: nothing to drop


def test_a_stale_force_marker_is_ignored(tmp_path: Path) -> None:
    marker = force_marker(tmp_path)
    marker.touch()
    old = time.time() - 600
    os.utime(marker, (old, old))
    assert take_force_marker(tmp_path) is False
    assert not marker.exists()
    marker.touch()
    assert take_force_marker(tmp_path) is True
    assert take_force_marker(tmp_path) is False


def test_reload_refused_is_a_key_file_error() -> None:
    # The daemon's existing handler for broken files still catches it.
    from dlmsd.service.keystore import KeyFileError

    assert issubclass(ReloadRefused, KeyFileError)
    with pytest.raises(KeyFileError):
        raise ReloadRefused(None, "x")
