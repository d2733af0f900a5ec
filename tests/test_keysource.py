"""Keys off the command line: --keys FILE, DLMSD_EK/DLMSD_AK, or stdin (issue 13, section 5).

The frames are the published UDP pushes (tests/data/published.json, source cited by
`vector_id`; keys EK = AK = "MYDUMMYGLOBALKEY" from pwitab/dlms-cosem
tests/test_general_global_cipher.py).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import pytest

from dlmsd.cli import build_parser, main
from dlmsd.client.cli import load_cipher
from dlmsd.keysource import PS_WARNING, KeySourceError, resolve_keys
from dlmsd.service import keys_cli
from dlmsd.service.keystore import KeyStore
from tests.vectors import by_kind

UDP_PUSHES = by_kind("udp_wrapper+general_glo_ciphering_datanotification")
KEY = b"MYDUMMYGLOBALKEY".hex().upper()
OTHER = "000102030405060708090A0B0C0D0E0F"
TITLE = "2F19229199164103"


def _decode(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _key_file(path: Path, mode: int = 0o600) -> Path:
    path.write_text(f'[meters.{TITLE}]\nencryption_key = "{KEY}"\nauthentication_key = "{KEY}"\n')
    os.chmod(path, mode)
    return path


# --- the module ------------------------------------------------------------------------


def test_environment_gives_keys_when_no_option_does() -> None:
    keys = resolve_keys(None, None, None, environ={"DLMSD_EK": KEY, "DLMSD_AK": OTHER})
    assert keys.loose is not None
    assert (keys.loose.ek, keys.loose.ak) == (bytes.fromhex(KEY), bytes.fromhex(OTHER))
    assert keys.loose.source == "environment"
    # An option given wins over the environment.
    keys = resolve_keys(None, OTHER, None, environ={"DLMSD_EK": KEY})
    assert keys.loose is not None and keys.loose.ek == bytes.fromhex(OTHER)
    assert not resolve_keys(None, None, None, environ={}).given


def test_stdin_gives_the_keys_marked_dash_in_order() -> None:
    keys = resolve_keys(None, "-", "-", stdin=io.StringIO(f"{KEY}\n{OTHER}\n"), environ={})
    assert keys.loose is not None
    assert (keys.loose.ek, keys.loose.ak) == (bytes.fromhex(KEY), bytes.fromhex(OTHER))
    keys = resolve_keys(None, OTHER, "-", stdin=io.StringIO(f"  {KEY}  "), environ={})
    assert keys.loose is not None and keys.loose.ak == bytes.fromhex(KEY)
    with pytest.raises(KeySourceError, match="expected 2 key"):
        resolve_keys(None, "-", "-", stdin=io.StringIO(KEY), environ={})
    with pytest.raises(KeySourceError, match="stdin carries the frame"):
        resolve_keys(None, "-", None, stdin=io.StringIO(KEY), environ={}, stdin_in_use=True)


def test_bad_keys_are_named_by_source_never_echoed() -> None:
    typo = KEY[:-1] + "X"
    for call in (
        lambda: resolve_keys(None, typo, None, environ={}),
        lambda: resolve_keys(None, None, None, environ={"DLMSD_EK": typo}),
        lambda: resolve_keys(None, "-", None, stdin=io.StringIO(typo), environ={}),
    ):
        with pytest.raises(KeySourceError) as caught:
            call()
        assert typo.lower() not in str(caught.value).lower()
        assert "16 bytes" in str(caught.value)


def test_key_file_problems_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match="cannot read key file"):
        resolve_keys(tmp_path / "missing.toml", None, None, environ={})
    loose = _key_file(tmp_path / "keys.toml", 0o644)
    with pytest.raises(KeySourceError, match="mode is 0644"):
        resolve_keys(loose, None, None, environ={})
    with pytest.raises(KeySourceError, match="either --keys"):
        resolve_keys(loose, KEY, None, environ={})


def test_every_command_warns_about_hex_keys_in_its_help() -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("decode", "get", "profile", "objects"):
        assert PS_WARNING in " ".join(subcommands[name].format_help().split()), name
    keys = subcommands["keys"]._subparsers._group_actions[0].choices
    assert PS_WARNING in " ".join(keys["add"].format_help().split())


# --- dlmsd decode ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [None, 0o644])
def test_decode_with_a_missing_or_open_key_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int | None
) -> None:
    path = tmp_path / "keys.toml"
    if mode is not None:
        _key_file(path, mode)
    code, out, err = _decode(capsys, UDP_PUSHES[0]["hex"], "--keys", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("dlmsd decode: ")
    assert KEY.lower() not in err.lower()


def test_decode_takes_keys_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DLMSD_EK", KEY)
    monkeypatch.setenv("DLMSD_AK", KEY)
    code, out, err = _decode(capsys, UDP_PUSHES[0]["hex"])
    assert code == 0, err
    assert json.loads(out)["invocation_counter"] == 485


def test_decode_takes_keys_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DLMSD_EK", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{KEY}\n{KEY}\n"))
    code, out, err = _decode(capsys, UDP_PUSHES[1]["hex"], "--ek", "-", "--ak", "-")
    assert code == 0, err
    assert json.loads(out)["invocation_counter"] == 486
    # Frame and keys cannot both come from stdin.
    monkeypatch.setattr("sys.stdin", io.StringIO(UDP_PUSHES[1]["hex"]))
    code, _, err = _decode(capsys, "-", "--ek", "-")
    assert code == 2 and "stdin carries the frame" in err


# --- dlmsd get / profile / objects (their shared key loading) ------------------------------


def test_client_commands_take_keys_from_env_and_stdin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DLMSD_EK", OTHER)
    monkeypatch.delenv("DLMSD_AK", raising=False)
    cipher = load_cipher(None, None, None, None)
    assert cipher is not None
    monkeypatch.delenv("DLMSD_EK")
    assert load_cipher(None, None, None, None) is None
    monkeypatch.setattr("sys.stdin", io.StringIO(OTHER))
    assert load_cipher(None, "-", None, None) is not None
    assert load_cipher(str(_key_file(tmp_path / "k.toml")), None, None, None) is not None


# --- dlmsd keys add ------------------------------------------------------------------------


def _keys_add(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dlmsd")
    keys_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", "add", *argv])
    code: int = args.func(args)
    return code


def test_keys_add_from_stdin_env_and_another_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "fleet.toml"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{KEY} {OTHER}"))
    assert _keys_add("4B464D0000000001", "--ek", "-", "--ak", "-", "--file", str(target)) == 0
    monkeypatch.setenv("DLMSD_EK", OTHER)
    monkeypatch.setenv("DLMSD_AK", KEY)
    assert _keys_add("4B464D0000000002", "--file", str(target)) == 0
    monkeypatch.delenv("DLMSD_EK")
    monkeypatch.delenv("DLMSD_AK")
    source = _key_file(tmp_path / "vendor.toml")
    assert _keys_add(TITLE, "--keys", str(source), "--file", str(target)) == 0
    store = KeyStore.load([target])
    first = store.lookup(bytes.fromhex("4B464D0000000001"))
    second = store.lookup(bytes.fromhex("4B464D0000000002"))
    copied = store.lookup(bytes.fromhex(TITLE))
    assert first is not None and second is not None and copied is not None
    assert (first.encryption_key, first.authentication_key) == (
        bytes.fromhex(KEY),
        bytes.fromhex(OTHER),
    )
    assert second.encryption_key == bytes.fromhex(OTHER)
    assert copied.encryption_key == bytes.fromhex(KEY)
    out = capsys.readouterr().out
    assert KEY.lower() not in out.lower() and OTHER.lower() not in out.lower()


def test_keys_add_refuses_what_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DLMSD_EK", raising=False)
    monkeypatch.delenv("DLMSD_AK", raising=False)
    target = tmp_path / "fleet.toml"
    assert _keys_add("4B464D0000000001", "--file", str(target)) == 2
    assert "no keys" in capsys.readouterr().err
    assert _keys_add("4B464D0000000001", "--generate", "--ek", KEY, "--file", str(target)) == 2
    monkeypatch.setenv("DLMSD_EK", KEY)
    assert _keys_add("4B464D0000000001", "--file", str(target)) == 2
    assert "both keys" in capsys.readouterr().err
    source = _key_file(tmp_path / "vendor.toml")
    assert _keys_add("4B464D0000000009", "--keys", str(source), "--file", str(target)) == 2
    assert not target.exists()


def test_decode_file_leaves_stdin_to_the_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = tmp_path / "capture.hex"
    capture.write_text(UDP_PUSHES[2]["hex"])
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{KEY}\n"))
    code, out, err = _decode(capsys, "--file", str(capture), "--ek", "-")
    assert code == 0, err
    assert json.loads(out)["invocation_counter"] == 487
