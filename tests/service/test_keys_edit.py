"""`dlmsd keys remove|set`: one meter changed in place, atomically, mode and owner kept,
keys never taken from or shown on the command line."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

import pytest

from dlmsd.cli import main
from dlmsd.service.keystore import load_key_file

A, B, C = "4B464D0000000001", "4B464D0000000002", "4B464D0000000003"
EK, AK = "00112233445566778899AABBCCDDEEFF", "FFEEDDCCBBAA99887766554433221100"
NEW_EK, NEW_AK = "0F0E0D0C0B0A09080706050403020100", "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"

STORE = f"""\
# The flats on Main Street.

[meters.{A}]
name = "gas-1"
encryption_key = "{EK}"
authentication_key = "{AK}"

# Electricity, staircase B.
[meters.{B}]
name = "power-2"
encryption_key = "{EK}"
authentication_key = "{AK}"
security = ["auth+enc", "auth"]

[meters.{B}.labels]
site = "north"
floor = "2"

[meters.{C}]
encryption_key = "{EK}"
authentication_key = "{AK}"
"""


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(STORE)
    path.chmod(0o600)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> tuple[int, str, str]:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main(["keys", *argv])
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


def entries(path: Path) -> dict[str, object]:
    return {e.system_title.hex().upper(): e for e in load_key_file(path)}


def test_remove_keeps_everything_else(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "remove", B, "--file", str(store))
    assert code == 0 and "2 meters left" in out
    assert set(entries(store)) == {A, C}
    text = store.read_text()
    assert "# The flats on Main Street." in text and 'name = "gas-1"' in text
    assert "site" not in text and B not in text and "Electricity" not in text
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    code, _, err = run(capsys, "remove", B, "--file", str(store))
    assert code == 2 and f"meters.{B}: no such meter" in err


def test_set_rotates_keys_from_stdin_and_never_prints_them(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store.read_text()
    code, out, err = run(
        capsys,
        "set",
        A,
        "--file",
        str(store),
        "--ek",
        "-",
        "--ak",
        "-",
        stdin=f"{NEW_EK}\n{NEW_AK}\n",
    )
    assert code == 0, err
    entry = entries(store)[A]
    assert entry.encryption_key == bytes.fromhex(NEW_EK)  # type: ignore[attr-defined]
    assert entry.authentication_key == bytes.fromhex(NEW_AK)  # type: ignore[attr-defined]
    assert entry.name == "gas-1"  # type: ignore[attr-defined]
    assert NEW_EK not in out + err and NEW_AK not in out + err
    assert "dlmsd state reset-counter" in out
    # The other meters' text is untouched.
    after = store.read_text()
    assert after[after.index("# Electricity") :] == before[before.index("# Electricity") :]


def test_set_takes_keys_from_the_environment_or_another_key_file(
    store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DLMSD_EK", NEW_EK)
    monkeypatch.setenv("DLMSD_AK", NEW_AK)
    code, _, err = run(capsys, "set", C, "--file", str(store), "--ek", "env", "--ak", "env")
    assert code == 0, err
    assert entries(store)[C].encryption_key == bytes.fromhex(NEW_EK)  # type: ignore[attr-defined]
    source = tmp_path / "delivery.toml"
    source.write_text(
        f'[meters.{A}]\nencryption_key = "{NEW_AK}"\nauthentication_key = "{NEW_EK}"\n'
    )
    source.chmod(0o600)
    code, _, err = run(capsys, "set", A, "--file", str(store), "--keys", str(source))
    assert code == 0, err
    assert entries(store)[A].encryption_key == bytes.fromhex(NEW_AK)  # type: ignore[attr-defined]


def test_keys_on_the_command_line_are_refused(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, "set", A, "--file", str(store), "--ek", NEW_EK, "--ak", NEW_AK)
    assert exit_info.value.code == 2
    assert store.read_text() == STORE


def test_set_labels_security_name_and_layout(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "set", B, "--file", str(store),
        "--label", "floor=3", "--unlabel", "site", "--label", "meter room=cellar",
        "--security", "auth+enc", "--name", "power-2b",
        "--push-object-list", "0-0:1.0.0*255:2, 1-0:1.8.0*255:2",
    )  # fmt: skip
    assert code == 0, err
    assert "changed name, labels, security, push object list" in out
    entry = entries(store)[B]
    assert entry.name == "power-2b"  # type: ignore[attr-defined]
    assert dict(entry.labels) == {"floor": "3", "meter room": "cellar"}  # type: ignore[attr-defined]
    assert entry.allowed_security == frozenset({"auth+enc"})  # type: ignore[attr-defined]
    assert len(entry.push_object_list) == 2  # type: ignore[attr-defined]
    assert set(entries(store)) == {A, B, C}
    # A built-in profile replaces the push object list (the key store takes one of them).
    code, out, err = run(capsys, "set", B, "--file", str(store), "--profile", "kaifa-ma304-list1")
    assert code == 0, err
    entry = entries(store)[B]
    assert entry.profile is not None and entry.push_object_list is None  # type: ignore[attr-defined]
    code, _, err = run(capsys, "set", B, "--file", str(store), "--profile", "no-such-layout")
    assert code == 2 and "unknown profile" in err


def test_a_bad_change_leaves_the_file_as_it_was(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "set", A, "--file", str(store), "--push-object-list", "garbage")
    assert code == 2 and "push_object_list" in err
    code, _, err = run(
        capsys, "set", A, "--file", str(store), "--ek", "-", "--ak", "-", stdin="00"
    )
    assert code == 2 and "no key of 32 hex characters" in err and "00" not in err.split(":")[-1]
    assert store.read_text() == STORE
    assert sorted(p.name for p in store.parent.iterdir()) == ["keys.toml"]  # no temp file left


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_mode_and_owner_are_kept(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.chown(store, 4242, 4343)
    store.chmod(0o400)
    code, _, err = run(capsys, "set", C, "--file", str(store), "--name", "water-3")
    assert code == 0, err
    info = store.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (4242, 4343, 0o400)
    code, _, err = run(capsys, "remove", C, "--file", str(store))
    assert code == 0, err
    info = store.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (4242, 4343, 0o400)
