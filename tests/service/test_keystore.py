"""Key store: loading, validation, permissions, reload, the fast path, `dlmsd keys`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.errors import UnsupportedSecurity
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.push import peel
from dlmsd.protocol.wrapper import decode_datagram
from dlmsd.service import keys_cli
from dlmsd.service.keystore import (
    DEFAULT_SECURITY,
    KeyFileError,
    KeyStore,
    _fast_meters,
    _NotCanonical,
    display_id,
    load_key_file,
    parse_key_text,
)
from dlmsd.service.state import encode_record
from tests.vectors import published

REPO = Path(__file__).parent.parent.parent
SAMPLE = REPO / "etc" / "keys.toml"
PUBLISHED = published()
UDP_PUSHES = [v for v in PUBLISHED if v["kind"].startswith("udp_wrapper+general_glo_ciphering")]

EK = "000102030405060708090A0B0C0D0E0F"
AK = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
ALL_KEY_HEX = [EK, AK, "4D5944554D4D59474C4F42414C4B4559", "00112233445566778899AABBCCDDEEFF"]


def write_keys(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def meter(title: str = "4B464D1234567890", **extra: str) -> str:
    lines = [f"[meters.{title}]", f'encryption_key = "{EK}"', f'authentication_key = "{AK}"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def assert_no_key_material(text: str) -> None:
    for key in ALL_KEY_HEX:
        assert key.upper() not in text.upper()


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    target = tmp_path / "keys.toml"
    shutil.copy(SAMPLE, target)
    os.chmod(target, 0o600)
    return target


# --- the sample file and the published vectors ---------------------------------


def test_sample_key_file_loads(sample: Path) -> None:
    store = KeyStore.load([sample])
    assert len(store) == 3
    demo = store.lookup(bytes.fromhex("2F19229199164103"))
    assert demo is not None
    assert demo.name == "published-udp-demo"
    assert demo.allowed_security == DEFAULT_SECURITY
    assert demo.display_id == "2F19229199164103"  # 2F 19 22 is not a FLAG id
    green = store.lookup(bytes.fromhex("4D4D4D0000BC614E"))
    assert green is not None
    assert green.display_id == "MMM0000BC614E"
    assert green.allowed_security == {"auth+enc", "auth"}
    assert dict(green.labels) == {"site": "lab", "kind": "electricity"}
    gas = store.lookup(bytes.fromhex("4B464D0000000001"))
    assert gas is not None and gas.push_object_list is not None
    assert [(p.obis, p.attribute) for p in gas.push_object_list] == [
        (Obis(0, 0, 1, 0, 0, 255), 2),
        (Obis(7, 0, 3, 0, 0, 255), 2),
        (Obis(0, 0, 96, 5, 0, 255), 2),
    ]
    assert store.lookup(bytes(8)) is None


@pytest.mark.parametrize("vector", UDP_PUSHES, ids=[v["source"] for v in UDP_PUSHES])
def test_sample_keys_open_published_udp_pushes(sample: Path, vector: dict[str, object]) -> None:
    # Source: the vector's `source` (dlms-cosem tests/test_udp_message.py, keys MYDUMMYGLOBALKEY).
    store = KeyStore.load([sample])
    frame = decode_datagram(bytes.fromhex(str(vector["hex"])))
    envelope = peel(frame.apdu)
    assert envelope.system_title is not None
    entry = store.lookup(envelope.system_title)
    assert entry is not None
    assert entry.allows(envelope.security)
    plaintext = envelope.open(entry.cipher)
    derived = vector["expected"]["derived"]  # type: ignore[index]
    assert plaintext.hex() == derived["plaintext_hex"]
    assert envelope.invocation_counter == derived["invocation_counter"]


def test_display_id() -> None:
    assert display_id(bytes.fromhex("4B464D1234567890")) == "KFM1234567890"
    assert display_id(bytes.fromhex("6B666D1234567890")) == "6B666D1234567890"  # lower case
    assert display_id(bytes.fromhex("4B46")) == "4B46"


# --- key material stays out of reprs and errors ------------------------------------


def test_reprs_hide_keys(sample: Path) -> None:
    store = KeyStore.load([sample])
    for entry in store:
        assert_no_key_material(repr(entry))
        assert_no_key_material(repr(entry.cipher))
        assert_no_key_material(str(entry))
    assert_no_key_material(repr(store))


def test_cipher_is_built_once_and_lazily(sample: Path) -> None:
    entry = KeyStore.load([sample]).lookup(bytes.fromhex("2F19229199164103"))
    assert entry is not None
    assert entry.cipher is entry.cipher


def test_record_fields_are_the_meters_json_members_built_once() -> None:
    # Non-ASCII stays as is; NEL and LINE SEPARATOR are escaped as encode_record does.
    text = meter(name='"g\u00e4s\u2028\u0085 \\"42\\""', labels='{ site = "n\u00f6rth" }')
    entry = parse_key_text(text)[0]
    expected = encode_record(
        {"meter": entry.name, "meter_id": "KFM1234567890", "labels": {"site": "n\u00f6rth"}}
    )
    assert entry.record_fields == "," + expected[1:-1]
    assert json.loads("{" + entry.record_fields[1:] + "}") == {
        "meter": 'g\u00e4s\u2028\u0085 "42"',
        "meter_id": "KFM1234567890",
        "labels": {"site": "n\u00f6rth"},
    }
    assert entry.record_fields is entry.record_fields
    unnamed = parse_key_text(meter())[0]
    assert unnamed.record_fields == ',"meter":null,"meter_id":"KFM1234567890","labels":{}'


def test_lazy_slots_leave_entries_equal_hashable_and_small() -> None:
    used, fresh = parse_key_text(meter(name='"a"'))[0], parse_key_text(meter(name='"a"'))[0]
    assert used.record_fields and used.cipher is not None
    assert used == fresh and hash(used) == hash(fresh)
    assert "record_fields" not in repr(used)
    # 100k entries are held from start: the lazily built slots must not push an entry
    # into a larger allocation (it was 112 bytes before they existed).
    assert sys.getsizeof(used) <= 112


def test_plaintext_only_meter_needs_no_keys(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.toml", '[meters.4B464D1234567890]\nsecurity = ["none"]\n')
    entry = KeyStore.load([path]).lookup(bytes.fromhex("4B464D1234567890"))
    assert entry is not None
    assert entry.cipher is None
    assert entry.allows("none") and not entry.allows("auth+enc")


# --- permissions ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_refuses_key_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = write_keys(tmp_path / "k.toml", meter(), mode)
    with pytest.raises(KeyFileError) as caught:
        KeyStore.load([path])
    message = str(caught.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert "chmod 600" in message
    assert_no_key_material(message)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_accepts_private_key_file(tmp_path: Path, mode: int) -> None:
    path = write_keys(tmp_path / "k.toml", meter(), mode)
    assert len(KeyStore.load([path])) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_refuses_key_file_owned_by_another_user(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.toml", meter())
    os.chown(path, 4242, -1)
    with pytest.raises(KeyFileError, match="owned by uid 4242"):
        KeyStore.load([path])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        KeyStore.load([tmp_path / "absent.toml"])


def test_permission_check_can_be_skipped(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.toml", meter(), 0o644)
    assert len(KeyStore.load([path], check_permissions=False)) == 1


# --- validation ------------------------------------------------------------------

T = "4B464D1234567890"

BAD_FILES = [
    (
        meter(T).replace(EK, EK[:30]),
        f"meters.{T}.encryption_key: expected 32 hex characters, got 30",
    ),
    (meter(T).replace(AK, "Z" + AK[1:]), f"meters.{T}.authentication_key: expected 32 hex"),
    (
        meter(T).replace(f'authentication_key = "{AK}"\n', ""),
        f"meters.{T}.authentication_key: missing",
    ),
    (meter(T, colour='"red"'), f"meters.{T}.colour: unknown key"),
    (meter(T, name="42"), f"meters.{T}.name: expected a string"),
    (meter(T, security='["auth+enc", "plain"]'), f"meters.{T}.security[1]: expected one of"),
    (meter(T, security="[]"), f"meters.{T}.security: expected a non-empty list"),
    (meter(T, security='"auth+enc"'), f"meters.{T}.security: expected a non-empty list"),
    (meter(T, labels="{ site = 3 }"), f"meters.{T}.labels.site: expected a string"),
    (meter(T, labels='"north"'), f"meters.{T}.labels: expected a table"),
    (
        meter(T, push_object_list='["1-0:1.8.0*255:2", "1-0:1.8"]'),
        f"meters.{T}.push_object_list[1]",
    ),
    (meter(T, push_object_list='"1-0:1.8.0"'), f"meters.{T}.push_object_list: expected a list"),
    (meter(T, push_object_list="[3]"), f"meters.{T}.push_object_list[0]: expected a string"),
    (meter(T, profile='"kaifa-ma999"'), f"meters.{T}.profile: unknown profile 'kaifa-ma999'"),
    (meter(T, profile="3"), f"meters.{T}.profile: expected the name of a built-in profile"),
    (
        meter(T, profile='"kaifa-ma304-list1"', push_object_list='["1-0:1.7.0"]'),
        f"meters.{T}.profile: give either profile or push_object_list",
    ),
    (
        meter(T, encryption_key_x='"00"').replace("encryption_key_x", "ek"),
        f"meters.{T}.ek: unknown",
    ),
    (meter("4B464D12345678"), "meters.4B464D12345678: a system title is 16 hex characters"),
    (meter("4B464D123456789G"), "meters.4B464D123456789G: a system title is 16 hex"),
    (meter(T) + "\n" + meter(T.lower()), f"meters.{T}: defined twice"),
    ("version = 2\n" + meter(T), "version: unknown key (allowed: meters)"),
    ("meters = 3\n", "meters: expected a table of meters"),
    ("[meters]\nx = 1\n", "meters.x: a system title is 16 hex characters"),
    (f"[meters.{T}]\nencryption_key = {EK}\n", "not valid TOML"),
    (meter(T) + meter(T), "not valid TOML"),
    (f'[meters.{T}]\nencryption_key = "{EK}"\nencryption_key = "{EK}"\n', "not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES, ids=[e for _, e in BAD_FILES])
def test_refuses_bad_values_with_key_path(tmp_path: Path, text: str, expected: str) -> None:
    path = write_keys(tmp_path / "k.toml", text)
    with pytest.raises(KeyFileError) as caught:
        KeyStore.load([path])
    assert expected in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")
    assert_no_key_material(str(caught.value))


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_bytes(meter().encode() + b'name = "\xff"\n')
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="not valid UTF-8"):
        KeyStore.load([path])


def test_empty_file_is_an_empty_store(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.toml", "# nothing yet\n")
    assert len(KeyStore.load([path])) == 0


def test_several_files_merge(tmp_path: Path) -> None:
    one = write_keys(tmp_path / "one.toml", meter("4B464D0000000001"))
    two = write_keys(tmp_path / "two.toml", meter("4B464D0000000002"))
    store = KeyStore.load([one, two])
    assert len(store) == 2
    assert bytes.fromhex("4B464D0000000002") in store


def test_duplicate_title_across_files_is_an_error(tmp_path: Path) -> None:
    one = write_keys(tmp_path / "one.toml", meter("4B464D0000000001"))
    two = write_keys(tmp_path / "two.toml", meter("4b464d0000000001"))
    with pytest.raises(KeyFileError) as caught:
        KeyStore.load([one, two])
    assert str(two) in str(caught.value)
    assert f"already defined in {one}" in str(caught.value)


# --- reload ------------------------------------------------------------------------


def test_reload_swaps_in_new_keys(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.toml", meter("4B464D0000000001"))
    store = KeyStore.load([path])
    write_keys(path, meter("4B464D0000000001") + meter("4B464D0000000002"))
    assert store.reload() == 2
    assert store.lookup(bytes.fromhex("4B464D0000000002")) is not None


@pytest.mark.parametrize(
    ("broken", "mode"),
    [
        ("[meters.4B464D0000000001\n", 0o600),
        (meter("4B464D0000000001").replace(EK, EK[:31]), 0o600),
        (meter("4B464D0000000001") + meter("4B464D0000000002"), 0o644),
    ],
    ids=["bad-toml", "bad-key-length", "mode-0644"],
)
def test_broken_reload_keeps_old_keys(tmp_path: Path, broken: str, mode: int) -> None:
    path = write_keys(tmp_path / "k.toml", meter("4B464D0000000001"))
    store = KeyStore.load([path])
    old = store.lookup(bytes.fromhex("4B464D0000000001"))
    write_keys(path, broken, mode)
    with pytest.raises(KeyFileError) as caught:
        store.reload()
    assert_no_key_material(str(caught.value))
    assert len(store) == 1
    assert store.lookup(bytes.fromhex("4B464D0000000001")) is old
    assert store.lookup(bytes.fromhex("4B464D0000000002")) is None


# --- the fast path reads what tomllib reads ------------------------------------------


def fast(text: str) -> dict[str, object]:
    return dict(_fast_meters(line + "\n" for line in text.split("\n")))


NOT_CANONICAL = [
    f"[meters.{T}]\nname = 'literal'\n",
    f'[meters.{T}]\nname = "esc\\"aped"\n',
    f'[meters.{T}]\nsecurity = [\n  "auth",\n]\n',
    f'[meters.{T}]\nlabels.site = "north"\n',
    f'[meters.{T}.labels]\nsite = "north"\n',
    f'[ meters . {T} ]\nname = "x"\n',
    f'[meters.{T}]\nname = """multi"""\n',
    f'[meters.{T}]\nname = "x"\rname2 = "y"\n',
    f"[meters.{T}]\n# bell \x07 in a comment\n",
    f"[meters.{T}]\npush_object_list = [1]\n",
    'name = "top level"\n',
    f'[meters.{T}]\n"quoted" = "x"\n',
]


@pytest.mark.parametrize("text", NOT_CANONICAL)
def test_fast_path_defers_to_tomllib_outside_its_subset(text: str) -> None:
    with pytest.raises(_NotCanonical):
        fast(text)


def test_fast_path_and_tomllib_agree_on_the_sample() -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    assert fast(text) == tomllib.loads(text)["meters"]


def test_non_canonical_file_loads_through_tomllib(tmp_path: Path) -> None:
    text = (
        f"[meters.{T}]\n"
        f"encryption_key = '{EK}'\n"
        f'authentication_key = "{AK}"\n'
        'labels.site = "n\\u00f6rth"\n'
        "security = [\n  'auth+enc', # both\n  'auth',\n]\n"
    )
    entry = KeyStore.load([write_keys(tmp_path / "k.toml", text)]).lookup(bytes.fromhex(T))
    assert entry is not None
    assert dict(entry.labels) == {"site": "nörth"}
    assert entry.allowed_security == {"auth", "auth+enc"}


_plain_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters='"\\'), max_size=12
)
_bare_key = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)
_ws = st.sampled_from(["", " ", "  ", "\t"])
_comment = st.sampled_from(["", " # note", "#", " # ü # x"])


@st.composite
def key_files(draw: st.DrawFn) -> str:
    """Key file texts mixing the canonical subset with things outside it."""
    parts = [draw(st.sampled_from(["", "# header\n", "\n\n"]))]
    titles = draw(st.lists(st.from_regex(r"[0-9A-F]{16}", fullmatch=True), max_size=3))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    for title in titles:
        parts.append(f"{draw(_ws)}[{draw(_ws)}meters.{title}{draw(_ws)}]{draw(_comment)}{newline}")
        keys = draw(st.lists(_bare_key, max_size=4, unique=True))
        for key in keys:
            kind = draw(st.integers(0, 3))
            if kind == 0:
                value = '"' + draw(_plain_text) + '"'
            elif kind == 1:
                items = draw(st.lists(_plain_text, max_size=3))
                trailing = draw(st.sampled_from(["", ","])) if items else ""
                value = "[" + ", ".join(f'"{i}"' for i in items) + trailing + "]"
            elif kind == 2:
                pairs = draw(st.dictionaries(_bare_key, _plain_text, max_size=3))
                value = "{ " + ", ".join(f'{k} = "{v}"' for k, v in pairs.items()) + " }"
            else:
                value = draw(st.sampled_from(["1", "true", "'lit'", '"a\\tb"', "[1, 2]"]))
            ws = draw(_ws)
            parts.append(f"{ws}{key}{ws}={draw(_ws)}{value}{draw(_comment)}{newline}")
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(key_files())
def test_fast_path_matches_tomllib(text: str) -> None:
    try:
        expected: object = tomllib.loads(text).get("meters", {})
    except tomllib.TOMLDecodeError:
        expected = None
    try:
        got: object = fast(text)
    except _NotCanonical:
        return  # tomllib decides
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_entries_or_key_file_error(text: str) -> None:
    with contextlib.suppress(KeyFileError):
        parse_key_text(text)


# --- dlmsd keys add|list|check -----------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dlmsd")
    keys_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_keys_add_creates_private_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sub" / "keys.toml"
    code = run_cli(
        "keys", "add", T, "--name", 'gas "42"', "--ek", EK, "--ak", AK,
        "--label", "site=nörth", "--label", "odd key=a\\b", "--file", str(path),
    )  # fmt: skip
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = KeyStore.load([path]).lookup(bytes.fromhex(T))
    assert entry is not None
    assert entry.name == 'gas "42"'
    assert dict(entry.labels) == {"site": "nörth", "odd key": "a\\b"}
    assert entry.encryption_key == bytes.fromhex(EK)
    assert entry.allowed_security == DEFAULT_SECURITY
    assert_no_key_material(capsys.readouterr().out)


def test_keys_add_appends_keeping_comments(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.toml", "# my fleet\n" + meter("4B464D0000000001"), 0o644)
    code = run_cli(
        "keys", "add", "4B464D0000000002", "--generate", "--security", "auth+enc",
        "--security", "auth", "--file", str(path),
    )  # fmt: skip
    assert code == 0
    text = path.read_text()
    assert text.startswith("# my fleet\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened by the rewrite
    store = KeyStore.load([path])
    added = store.lookup(bytes.fromhex("4B464D0000000002"))
    assert added is not None
    assert added.allowed_security == {"auth", "auth+enc"}
    assert added.encryption_key is not None and len(added.encryption_key) == 16
    assert added.encryption_key != added.authentication_key
    with open(path, newline="\n") as handle:
        assert list(_fast_meters(handle))  # written in the fast subset


def test_keys_add_refuses_duplicate_and_keeps_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_keys(tmp_path / "k.toml", meter(T))
    before = path.read_bytes()
    assert run_cli("keys", "add", T.lower(), "--generate", "--file", str(path)) == 2
    err = capsys.readouterr().err
    assert "is already defined" in err
    assert err.count("\n") == 1
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "argv",
    [
        ["--ek", EK[:30], "--ak", AK],
        ["--ek", EK],
        ["--generate", "--ak", AK],
        ["--generate", "--label", "novalue"],
    ],
)
def test_keys_add_refuses_bad_arguments(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.toml"
    assert run_cli("keys", "add", T, *argv, "--file", str(path)) == 2
    assert not path.exists()
    assert_no_key_material(capsys.readouterr().err)


def test_keys_list_never_prints_keys(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("keys", "list", "--file", str(sample)) == 0
    out = capsys.readouterr().out
    assert_no_key_material(out)
    lines = out.splitlines()
    assert lines[0].split("\t") == ["system_title", "id", "name", "labels", "security"]
    assert (
        "4D4D4D0000BC614E\tMMM0000BC614E\tgreen-book-demo\tsite=lab,kind=electricity\tauth,auth+enc"
        in lines
    )
    assert len(lines) == 4


def test_keys_check(sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("keys", "check", "--file", str(sample)) == 0
    assert capsys.readouterr().out == f"{sample}: ok, 3 meters\n"
    os.chmod(sample, 0o644)
    assert run_cli("keys", "check", "--file", str(sample)) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "mode is 0644" in captured.err
    bad = write_keys(tmp_path / "bad.toml", meter(T).replace(EK, EK[:10]))
    assert run_cli("keys", "check", "--file", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"meters.{T}.encryption_key: expected 32 hex characters, got 10" in err
    assert_no_key_material(err)


def test_load_key_file_returns_entries_in_file_order(sample: Path) -> None:
    titles = [entry.system_title.hex().upper() for entry in load_key_file(sample)]
    assert titles == ["2F19229199164103", "4D4D4D0000BC614E", "4B464D0000000001"]


def test_keys_add_keeps_crlf_line_endings(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.toml", meter("4B464D0000000001").replace("\n", "\r\n"))
    assert run_cli("keys", "add", "4B464D0000000002", "--generate", "--file", str(path)) == 0
    assert path.read_bytes().startswith(b"[meters.4B464D0000000001]\r\n")
    assert len(KeyStore.load([path])) == 2


def test_a_meter_names_a_built_in_profile(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.toml", meter(T, profile='"kaifa-ma304-list3-3p"'))
    (entry,) = KeyStore.load([path])
    assert entry.profile is not None and entry.profile.name == "kaifa-ma304-list3-3p"
    assert entry.layout is entry.profile
    other = write_keys(tmp_path / "o.toml", meter(T, push_object_list='["1-0:1.8.0"]'))
    (listed,) = KeyStore.load([other])
    assert listed.profile is None and listed.layout == listed.push_object_list


def test_encryption_only_meter_needs_no_authentication_key(tmp_path: Path) -> None:
    # M-Bus customer interfaces (Kaifa MA309, Sagemcom T210-D) get one key and send
    # encryption-only pushes: `security = ["enc"]` without authentication_key loads,
    # and its cipher decrypts SC 0x20 but refuses every authenticated form.
    text = f'[meters.4B464D1234567890]\nencryption_key = "{EK}"\nsecurity = ["enc"]\n'
    [entry] = load_key_file(write_keys(tmp_path / "k.toml", text))
    assert entry.allowed_security == {"enc"} and entry.authentication_key is None
    cipher = entry.cipher
    assert cipher is not None and cipher.allow_encryption_only
    title = bytes.fromhex("4B464D1234567890")
    ciphertext = cipher.encrypt(title, 0x20, 1, b"\x0f\x00")
    assert cipher.decrypt(title, 0x20, 1, ciphertext) == b"\x0f\x00"
    with pytest.raises(UnsupportedSecurity, match="no authentication key"):
        cipher.decrypt(title, 0x30, 1, bytes(20))


@pytest.mark.parametrize("security", ['["auth+enc"]', '["enc", "auth"]', None])
def test_authenticated_forms_still_need_the_authentication_key(
    tmp_path: Path, security: str | None
) -> None:
    text = f'[meters.4B464D1234567890]\nencryption_key = "{EK}"\n'
    if security is not None:
        text += f"security = {security}\n"
    with pytest.raises(KeyFileError, match="authentication_key: missing"):
        load_key_file(write_keys(tmp_path / "k.toml", text))


def test_keys_add_encryption_only_meter_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    code = run_cli("keys", "add", T, "--ek", EK, "--security", "enc", "--file", str(path))
    assert code == 0
    entry = KeyStore.load([path]).lookup(bytes.fromhex(T))
    assert entry is not None
    assert entry.allowed_security == {"enc"} and entry.authentication_key is None
    # Without "enc"-only security the authentication key is still required.
    other = tmp_path / "other.toml"
    assert run_cli("keys", "add", T, "--ek", EK, "--file", str(other)) != 0
    assert not other.exists()
