"""`dlmsd completion bash|zsh`: the generated scripts load in the real shells and complete."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dlmsd.cli import build_parser, main
from dlmsd.completion import commands_of


def _script(capsys: pytest.CaptureFixture[str], shell: str, tmp_path: Path) -> Path:
    assert main(["completion", shell]) == 0
    path = tmp_path / f"dlmsd.{shell}"
    path.write_text(capsys.readouterr().out)
    return path


def _bash(script: Path, *words: str) -> list[str]:
    """What bash offers after `dlmsd WORDS...` (the last word is being completed)."""
    quoted = " ".join(f"'{word}'" for word in ("dlmsd", *words))
    program = (
        f"source {script}\n"
        "complete -p dlmsd\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words)}\n"
        '_dlmsd; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "complete -o default -F _dlmsd dlmsd"
    return [line for line in lines[1:] if line]


def test_bash_completes_commands_options_and_choices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = _script(capsys, "bash", tmp_path)
    names = [command.name for command in commands_of(build_parser())]
    assert {"decode", "get", "set", "action", "completion"} <= set(names)
    assert sorted(_bash(script, "")) == sorted([*names, "--help", "--version"])
    assert _bash(script, "se") == ["set"]
    assert "--table" in _bash(script, "get", "--t")
    assert _bash(script, "get", "--auth", "") == ["none", "lls", "hls-gmac"]
    assert _bash(script, "completion", "z") == ["zsh"]
    assert sorted(_bash(script, "keys", "")) == ["add", "check", "list", "reload"]
    (tmp_path / "meter-keys.toml").write_text("")
    assert _bash(script, "decode", "--keys", str(tmp_path / "meter-")) == [
        str(tmp_path / "meter-keys.toml")
    ]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed (make test-deps)")
def test_zsh_script_loads_and_registers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = _script(capsys, "zsh", tmp_path)
    # sourced after compinit, as the docs say; and autoloaded from $fpath as _dlmsd
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "_dlmsd").write_text(script.read_text())
    program = (
        f"fpath=({functions} $fpath)\n"
        f"autoload -Uz compinit && compinit -u -d {tmp_path}/zcompdump\n"
        'print -r -- "fpath:${_comps[dlmsd]}"\n'
        f"source {script}\n"
        'print -r -- "sourced:${_comps[dlmsd]}"\n'
        "whence -w _dlmsd\n"
    )
    done = subprocess.run(
        ["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == ["fpath:_dlmsd", "sourced:_dlmsd", "_dlmsd: function"]
    # zsh parses every _arguments spec line (a quoting error fails here)
    check = subprocess.run(
        ["zsh", "-f", "-n", str(script)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stderr
