"""Sink secrets are checked when the daemon starts, like key files: one line, no retry loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlmsd.service.config import ConfigError, load_config
from dlmsd.service.maker import Options, build_service, makeService
from dlmsd.sinks import SinkConfigError, create_sink
from dlmsd.sinks.options import Secret, SecretError

SECRET = "s3cret-value"


def private(path: Path, text: str = SECRET + "\n") -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda p: p, "No such file or directory"),
        (lambda p: private(p).chmod(0o640), "mode is 0640: group or others have access"),
        (lambda p: private(p).chmod(0o604), "mode is 0604"),
        (lambda p: private(p, ""), "is empty"),
        (lambda p: p.mkdir(mode=0o700), "Is a directory"),
    ],
)
def test_secret_file_check(tmp_path: Path, setup: object, reason: str) -> None:
    path = tmp_path / "secret"
    setup(path)  # type: ignore[operator]
    with pytest.raises(SecretError) as caught:
        Secret(file=path).check()
    assert reason in str(caught.value)
    assert SECRET not in str(caught.value)


def test_private_secret_file_and_set_variable_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Secret(file=private(tmp_path / "secret")).check()
    monkeypatch.setenv("DLMSD_TEST_SECRET", SECRET)
    Secret(env="DLMSD_TEST_SECRET").check()
    monkeypatch.delenv("DLMSD_TEST_SECRET")
    with pytest.raises(SecretError, match="DLMSD_TEST_SECRET is not set"):
        Secret(env="DLMSD_TEST_SECRET").check()


@pytest.mark.parametrize(
    ("kind", "options", "key"),
    [
        ("mqtt", {"username": "u", "password_file": "{missing}"}, "password_file"),
        ("mqtt", {"username": "u", "password_env": "DLMSD_TEST_UNSET"}, "password_env"),
        (
            "mqtt",
            {"tls": True, "cert_file": "/c.pem", "key_password_file": "{missing}"},
            "key_password_file",
        ),
        ("http", {"bearer_token_file": "{missing}"}, "bearer_token_file"),
        ("http", {"username": "u", "password_file": "{missing}"}, "password_file"),
    ],
)
def test_factories_refuse_a_missing_secret(
    tmp_path: Path, kind: str, options: dict[str, object], key: str
) -> None:
    missing = str(tmp_path / "missing")
    table = {k: (missing if v == "{missing}" else v) for k, v in options.items()}
    if kind == "http":
        table |= {"url": "https://127.0.0.1/x", "dead_letter": str(tmp_path / "dead.jsonl")}
    with pytest.raises(SinkConfigError) as caught:
        create_sink(kind, kind, table)
    assert caught.value.key == key


def test_daemon_with_a_missing_mqtt_password_file_stops_with_one_line(tmp_path: Path) -> None:
    keys = private(tmp_path / "keys.toml", "")
    config = tmp_path / "dlmsd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        '[[listeners.udp]]\naddress = "127.0.0.1"\nport = 0\n'
        f'[keys]\nfiles = ["{keys}"]\n'
        "[metrics]\nenabled = false\n"
        '[[sinks]]\ntype = "jsonl"\n'
        f'path = "{tmp_path / "out.jsonl"}"\n'
        '[[sinks]]\ntype = "mqtt"\nport = 1\nusername = "dlmsd"\n'
        f'password_file = "{tmp_path / "mqtt-password"}"\n'
    )
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.password_file: cannot read secret file"):
        build_service(load_config(config), handle_signals=False)
    options = Options()
    options.parseOptions(["--config", str(config)])
    with pytest.raises(SystemExit) as exit_info:
        makeService(options)
    message = str(exit_info.value.code)
    assert message.startswith("dlmsd: cannot start: sinks[1].password_file: cannot read secret")
    assert "\n" not in message
