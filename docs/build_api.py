"""Build the API reference (HTML) from the docstrings with pdoc; any warning fails.

    python docs/build_api.py [OUTPUT]      # default build/api; `make docs`

Documents what a library user imports: the names `dlmsd` exports and the
packages behind them (the sans-io protocol core, COSEM classes, the clients).
The daemon's service, sinks and command-line modules are left out.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

MODULES = (
    "dlmsd",
    "dlmsd.decoding",
    "dlmsd.protocol",
    "dlmsd.cosem",
    "dlmsd.client",
    "!dlmsd.client.cli.*",
    "!dlmsd.client.emulator.*",
)


def build(output: Path) -> list[Path]:
    """Write the reference to `output`; raise on any pdoc warning. Returns the pages."""
    import pdoc

    import dlmsd

    for name in dlmsd.__all__:
        getattr(dlmsd, name)  # load the lazily exported names so pdoc sees them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.pdoc(*MODULES, output_directory=output)
    return sorted(output.rglob("*.html"))


if __name__ == "__main__":
    pages = build(Path(sys.argv[1] if len(sys.argv) > 1 else "build/api"))
    print(f"{len(pages)} pages")
