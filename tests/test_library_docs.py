"""The library's promises: what `import dlmsd` exports, the API reference, and every
Python example in docs/library.md and the README run as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import attrs
import pytest

from tests.client.conftest import EmulatorProcess

ROOT = Path(__file__).parent.parent
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)


def test_import_exports_the_library_without_twisted() -> None:
    program = (
        "import sys, dlmsd\n"
        "assert 'twisted' not in sys.modules, 'import dlmsd imported Twisted'\n"
        "assert 'dlmsd.client.blocking' not in sys.modules\n"
        "for name in dlmsd.__all__:\n"
        "    getattr(dlmsd, name)\n"
        "assert set(dlmsd.__all__) <= set(dir(dlmsd))\n"
        "print('twisted' in sys.modules)\n"
    )
    done = _python(program)
    assert done.stdout == "True\n"  # the Twisted client came in only when asked for


def test_exported_names_are_the_real_ones() -> None:
    import dlmsd
    from dlmsd.client import blocking, errors, twisted
    from dlmsd.protocol import errors as protocol_errors
    from dlmsd.protocol.association import Authentication, ClientSettings
    from dlmsd.protocol.obis import Obis
    from dlmsd.protocol.security import Suite0Cipher

    assert dlmsd.Suite0Cipher is Suite0Cipher and dlmsd.Obis is Obis
    assert dlmsd.ClientSettings is ClientSettings and dlmsd.Authentication is Authentication
    assert dlmsd.TcpClient is blocking.TcpClient and dlmsd.connect_tcp is twisted.connect_tcp
    assert issubclass(dlmsd.AuthenticationFailed, dlmsd.SecurityError)
    assert issubclass(dlmsd.SecurityError, dlmsd.DlmsError)
    assert dlmsd.DlmsError is protocol_errors.DlmsError
    assert issubclass(dlmsd.WrongPassword, dlmsd.AssociationRefused)
    assert issubclass(errors.TimeoutError, dlmsd.ClientError)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        dlmsd.nothing  # noqa: B018


def test_py_typed_ships_in_the_wheel(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("dlmsd-*.whl")
    assert "dlmsd/py.typed" in zipfile.ZipFile(wheel).namelist()


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path: Path) -> None:
    done = _python(
        f"import runpy, sys\nsys.argv = ['build_api', {str(tmp_path)!r}]\n"
        f"runpy.run_path({str(ROOT / 'docs' / 'build_api.py')!r}, run_name='__main__')"
    )
    assert done.stdout.endswith("pages\n")
    page = (tmp_path / "dlmsd.html").read_text()
    for name in ("decode_capture", "Suite0Cipher", "TcpClient", "connect_tcp", "ClientError"):
        assert f'id="{name}"' in page


# -- examples ------------------------------------------------------------------------------


@attrs.frozen
class Example:
    where: str
    code: str
    output: str | None
    emulator: tuple[str, ...] | None  # `dlmsd emulate` options from the shell block before
    port: int | None


def examples(path: Path) -> list[Example]:
    """The Python blocks of a Markdown page, each with the text block after it (its
    output) and the `dlmsd emulate` command the page says to start before it."""
    text = path.read_text()
    blocks = [
        (m.group(1), m.group(2), text[: m.start()].count("\n") + 1) for m in BLOCK.finditer(text)
    ]
    found: list[Example] = []
    emulate: list[str] | None = None
    for index, (language, body, line) in enumerate(blocks):
        if language == "sh":
            for command in body.replace("\\\n", " ").splitlines():
                words = shlex.split(command.split("#")[0].rstrip(" &"))
                if len(words) > 1 and words[0].endswith("dlmsd") and words[1] == "emulate":
                    emulate = words[2:]
        if language != "python":
            continue
        after = blocks[index + 1] if index + 1 < len(blocks) else None
        output = after[1] if after is not None and after[0] == "text" else None
        options: tuple[str, ...] | None = None
        port: int | None = None
        if emulate is not None and "--port" in emulate:
            port = int(emulate[emulate.index("--port") + 1])
            if str(port) in body:
                at = emulate.index("--port")
                options = (*emulate[:at], *emulate[at + 2 :])
        found.append(Example(f"{path.name}:{line}", body, output, options, port))
    return found


LIBRARY = examples(ROOT / "docs" / "library.md")
README = [
    e for e in examples(ROOT / "README.md") if "import dlmsd" in e.code or "from dlmsd" in e.code
]


def test_the_pages_have_the_examples_they_promise() -> None:
    assert len(LIBRARY) == 4  # decode, read (blocking, Twisted), profile buffer
    assert sum(example.emulator is not None for example in LIBRARY) == 2
    assert README and all(example.emulator is not None for example in README)


@pytest.mark.parametrize("example", LIBRARY + README, ids=lambda example: example.where)
def test_example_runs(example: Example, tmp_path: Path) -> None:
    code = example.code
    meter = None
    if example.emulator is not None:
        meter = EmulatorProcess(list(example.emulator))
        assert example.port is not None
        code = code.replace(str(example.port), str(meter.port))
    try:
        done = _python(code, cwd=tmp_path)
    finally:
        if meter is not None:
            meter.stop()
    if example.output is not None:
        assert done.stdout == example.output


def _python(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done
