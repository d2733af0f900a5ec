"""The daemon's command line for tests that run it as a real twistd subprocess.

Run as ``python -c "...run()"`` with this interpreter (the venv's twistd script may
not exist in every environment); the subprocess needs PYTHONPATH at the
repository root so twistd finds twisted/plugins/dlmsd_plugin.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def twistd_command(config: Path) -> list[str]:
    """``twistd -n --pidfile= dlmsd --config CONFIG`` with this interpreter."""
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "dlmsd",
        "--config",
        str(config),
    ]
