"""The install story: the wheel, ``twistd dlmsd`` and ``dlmsd run`` from it, and
deploy/install.sh into a scratch root that systemd then verifies.

The wheel is built once per module from a copy of the sources (no network: the
dev extra has the build backend). The scratch venvs reach the dependencies
through a ``.pth`` line naming this venv's site-packages; the checkout itself is
never on their path (that line does not run this venv's own ``.pth`` files).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import site
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

import dlmsd
from dlmsd.service.config import load_config

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
ANALYZE = shutil.which("systemd-analyze")
SYSUSERS = shutil.which("systemd-sysusers")
TMPFILES = shutil.which("systemd-tmpfiles")


def clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH (the Makefile points it at the checkout)."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("dlmsd", "twisted"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--disable-pip-version-check"),
            *("-w", str(work / "dist"), str(source)),
        ],
        check=True,
        env=clean_env(),
        timeout=300,
    )
    [built] = (work / "dist").glob("dlmsd-*.whl")
    return built


@pytest.fixture(scope="module")
def scratch_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel installed (dependencies: this venv's site-packages)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"),
            *("--quiet", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)),
        ],
        check=True,
        env=clean_env(),
        timeout=300,
    )
    [packages] = venv.glob("lib/python3*/site-packages")
    (packages / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def test_the_wheel_carries_license_type_marker_plugin_and_one_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"dlmsd-{dlmsd.__version__}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    assert "dlmsd/py.typed" in names
    assert "twisted/plugins/dlmsd_plugin.py" in names
    # Twisted's own package file must never be replaced by ours.
    assert "twisted/plugins/__init__.py" not in names and "twisted/__init__.py" not in names
    assert metadata["Version"] == dlmsd.__version__  # setup.cfg reads dlmsd/__init__.py
    assert metadata["License"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers and "Framework :: Twisted" in classifiers


def run_until_started(command: list[str], config: Path, cwd: Path) -> tuple[int, str]:
    """Start the daemon, wait for "dlmsd started", SIGTERM it; (exit status, output)."""
    process = subprocess.Popen(
        command, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    lines: list[bytes] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if b"dlmsd started" in line:
                # twistd installs its SIGTERM handler as the reactor starts running.
                time.sleep(1.0)
                process.send_signal(signal.SIGTERM)
                break
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, (b"".join(lines) + rest).decode(errors="replace")


def small_config(root: Path) -> Path:
    keys = root / "keys.toml"
    keys.write_text((REPO / "deploy" / "keys.toml").read_text())
    keys.chmod(0o600)
    config = root / "dlmsd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{root / "state"}"\n\n'
        '[[listeners.udp]]\nname = "udp"\naddress = "127.0.0.1"\nport = 0\n\n'
        f'[keys]\nfiles = ["{keys}"]\n\n[metrics]\nenabled = false\n\n'
        f'[[sinks]]\ntype = "jsonl"\nname = "jsonl"\npath = "{root / "out.jsonl"}"\n'
    )
    return config


def test_twistd_dlmsd_and_dlmsd_run_work_from_the_installed_wheel(
    scratch_venv: Path, tmp_path: Path
) -> None:
    python = str(scratch_venv / "bin" / "python")
    twistd = [python, "-c", "from twisted.scripts.twistd import run; run()"]
    # twistd finds the plugin in the installed wheel's twisted/plugins/.
    helped = subprocess.run(
        [*twistd, "--nodaemon", "--pidfile=", "dlmsd", "--help"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0, helped.stderr
    assert "--config" in helped.stdout
    config = small_config(tmp_path)
    code, output = run_until_started(
        [*twistd, "--nodaemon", "--pidfile=", "dlmsd", "--config", str(config)], config, tmp_path
    )
    assert "dlmsd started: 0 meters" in output and code in (0, -signal.SIGTERM), output
    assert "dlmsd stopped" in output
    code, output = run_until_started(
        [str(scratch_venv / "bin" / "dlmsd"), "run", "--config", str(config)], config, tmp_path
    )
    assert "dlmsd started: 0 meters" in output and code in (0, -signal.SIGTERM), output
    assert "dlmsd stopped" in output


def test_dlmsd_run_needs_no_plugin_discovery(scratch_venv: Path, tmp_path: Path) -> None:
    # What a PEP 660 editable install looks like to Twisted: no twisted/plugins/dlmsd_plugin.py.
    venv = tmp_path / "venv"
    shutil.copytree(scratch_venv, venv, symlinks=True)
    [plugin] = venv.glob("lib/python3*/site-packages/twisted/plugins/dlmsd_plugin.py")
    plugin.unlink()
    python = str(venv / "bin" / "python")
    missing = subprocess.run(
        [python, "-c", "from twisted.scripts.twistd import run; run()", "dlmsd", "--help"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0  # twistd: Unknown command: dlmsd
    config = small_config(tmp_path)
    code, output = run_until_started(
        [python, "-m", "dlmsd.cli", "run", "--config", str(config)], config, tmp_path
    )
    assert "dlmsd started" in output and code in (0, -signal.SIGTERM), output


def test_dlmsd_run_refuses_a_bad_config_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nlog_level = 'loud'\n")
    result = subprocess.run(
        [sys.executable, "-m", "dlmsd.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "dlmsd: cannot start: daemon.log_level: expected one of" in result.stderr
    assert "Traceback" not in result.stderr


# --- deploy/install.sh into a scratch root ---------------------------------------------

needs_root_and_systemd = pytest.mark.skipif(
    os.geteuid() != 0 or None in (ANALYZE, SYSUSERS, TMPFILES),
    reason="needs root (chown) and systemd-analyze, systemd-sysusers, systemd-tmpfiles",
)


@pytest.fixture
def staged(wheel: Path, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "root"
    install(root, wheel)
    yield root


def install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env() | {
        "DESTDIR": str(root),
        "WHEEL": str(wheel),
        "PYTHON": sys.executable,
        # The venv gets only dlmsd here: its dependencies would come from PyPI.
        "PIP_ARGS": "--no-deps --no-index",
    }
    result = subprocess.run(
        ["sh", str(INSTALL)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def owner_and_mode(path: Path) -> tuple[str, str, str]:
    info = path.stat()
    users = {line.split(":")[2]: line.split(":")[0] for line in owner_db(path, "passwd")}
    groups = {line.split(":")[2]: line.split(":")[0] for line in owner_db(path, "group")}
    return (
        users.get(str(info.st_uid), str(info.st_uid)),
        groups.get(str(info.st_gid), str(info.st_gid)),
        oct(stat.S_IMODE(info.st_mode)),
    )


def owner_db(path: Path, name: str) -> list[str]:
    root = next(parent for parent in path.parents if (parent / "etc" / name).exists())
    lines = (root / "etc" / name).read_text().splitlines()
    return [line for line in lines if line] + ["root:x:0:0"]


@needs_root_and_systemd
def test_install_into_a_scratch_root_with_owners_and_modes(staged: Path, wheel: Path) -> None:
    assert any(line.startswith("dlmsd:") for line in owner_db(staged / "etc" / "x", "passwd"))
    conf = staged / "etc" / "dlmsd"
    assert owner_and_mode(conf) == ("root", "dlmsd", "0o750")
    assert owner_and_mode(conf / "dlmsd.toml") == ("root", "dlmsd", "0o640")
    assert owner_and_mode(conf / "keys.toml") == ("dlmsd", "dlmsd", "0o600")
    assert owner_and_mode(staged / "var" / "lib" / "dlmsd") == ("dlmsd", "dlmsd", "0o700")
    # The sample config is valid as shipped.
    config = load_config(conf / "dlmsd.toml")
    assert config.keys.files == (Path("/etc/dlmsd/keys.toml"),)
    # The venv's scripts name /opt/dlmsd, where the server will run them.
    script = staged / "opt" / "dlmsd" / ".venv" / "bin" / "dlmsd"
    assert script.read_text().splitlines()[0] == "#!/opt/dlmsd/.venv/bin/python"
    # A second run upgrades and leaves the operator's files alone.
    (conf / "dlmsd.toml").write_text("# edited\n")
    install(staged, wheel)
    assert (conf / "dlmsd.toml").read_text() == "# edited\n"


@needs_root_and_systemd
def test_systemd_accepts_the_installed_unit_and_tmpfiles(staged: Path) -> None:
    unit_dir = staged / "usr" / "local" / "lib" / "systemd" / "system"
    text = (unit_dir / "dlmsd.service").read_text()
    assert "ExecStart=/opt/dlmsd/.venv/bin/dlmsd run --config /etc/dlmsd/dlmsd.toml" in text
    # systemd looks for the ExecStart binary on this host: point it into the scratch root.
    local = staged.parent / "dlmsd.service"
    local.write_text(text.replace("/opt/dlmsd/", f"{staged}/opt/dlmsd/"))
    assert ANALYZE is not None and TMPFILES is not None
    verify = subprocess.run(
        [ANALYZE, "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and "dlmsd.service" not in verify.stderr, verify.stderr
    # tmpfiles.d (user names from the root's own /etc/passwd) repairs a loosened mode.
    keys = staged / "etc" / "dlmsd" / "keys.toml"
    keys.chmod(0o644)
    tmpfiles = staged / "usr" / "local" / "lib" / "tmpfiles.d" / "dlmsd.conf"
    repaired = subprocess.run(
        [TMPFILES, f"--root={staged}", "--create", str(tmpfiles)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert repaired.returncode == 0, repaired.stderr
    assert owner_and_mode(keys) == ("dlmsd", "dlmsd", "0o600")
    assert pwd.getpwuid(os.geteuid()).pw_name == "root"
