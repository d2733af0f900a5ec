"""``dlmsd state migrate|check|export`` on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlmsd.cli import main
from dlmsd.service.state import AcceptedPush, StateStore

A = bytes.fromhex("4B464D0000000001")


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/state.sqlite3"
    return str(request.getfixturevalue("pg_dsn"))


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(["state", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _fill(dsn: str) -> None:
    from dlmsd.service.statebackend import is_postgresql, sqlite_path

    items = [AcceptedPush.create(A, n, {"n": n}) for n in (1, 2)]
    if not is_postgresql(dsn):
        store = StateStore(sqlite_path(dsn), ["jsonl"])
        store.accept(items)
        store.close()
        return
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dlmsd_counters (system_title, invocation_counter, previous_counter)"
            " VALUES (%s, 2, 1)",
            (A,),
        )
        for item in items:
            conn.execute(
                "INSERT INTO dlmsd_spool (sink, record_id, record, created_at)"
                " VALUES ('jsonl', %s, %s, 1.0)",
                (item.record_id, item.record_json),
            )


def test_migrate_check_export(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    if dsn.startswith("sqlite"):
        code, out, err = run(capsys, "check", "--dsn", dsn)
        assert code == 2 and "no such state database" in err
        Path(dsn[len("sqlite://") :]).touch()
        code, out, _ = run(capsys, "check", "--dsn", dsn)
        assert code == 1 and "dlmsd state migrate" in out
    from dlmsd.service import pgstate, state

    version = state.SCHEMA_VERSION if dsn.startswith("sqlite") else pgstate.SCHEMA_VERSION
    code, out, _ = run(capsys, "migrate", "--dsn", dsn)
    assert code == 0 and f"schema version 0 -> {version}" in out
    code, out, _ = run(capsys, "migrate", "--dsn", dsn)
    assert code == 0 and f"schema version {version} -> {version}" in out
    _fill(dsn)
    code, out, _ = run(capsys, "check", "--dsn", dsn)
    assert code == 0, out
    assert "meters with a counter: 1" in out and "queued for sink jsonl: 2" in out
    code, out, _ = run(capsys, "export", "--dsn", dsn)
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {
        "type": "counter",
        "system_title": A.hex().upper(),
        "invocation_counter": 2,
    }
    assert [line["record"] for line in lines[1:]] == [{"n": 1}, {"n": 2}]
    code, out, _ = run(capsys, "export", "--dsn", dsn, "--what", "counters")
    assert len(out.splitlines()) == 1


def test_unreachable_postgresql_exits_2_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.state.pgserver import free_port

    code, out, err = run(
        capsys, "check", "--dsn", f"postgresql://u:hunter2@127.0.0.1:{free_port()}/x"
    )
    assert code == 2 and "cannot connect" in err and "hunter2" not in err + out


def test_dsn_from_the_daemon_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "dlmsd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\n[[listeners.udp]]\nport = 0\n'
        '[keys]\nfiles = ["k.toml"]\n[[sinks]]\ntype = "jsonl"\npath = "x"\n'
    )
    code, out, _ = run(capsys, "migrate", "--config", str(config))
    assert code == 0 and str(tmp_path / "state.sqlite3") in out
