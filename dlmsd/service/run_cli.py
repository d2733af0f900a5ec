"""``dlmsd run --config FILE``: the daemon without Twisted's plugin discovery.

``twistd dlmsd`` finds the service through ``twisted/plugins/`` directories
on ``sys.path``, which a PEP 660 editable install (``pip install -e .``) does
not provide. ``dlmsd run`` hands twistd's own runner the same service maker
directly: same start-up checks, signals (SIGTERM drains, SIGHUP reloads keys),
log observers and exit status as ``twistd --nodaemon --pidfile= dlmsd``.
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.application.service import ServiceMaker

DESCRIPTION = "DLMS/COSEM push daemon: receives, authenticates, decodes and stores meter pushes"


def service_maker() -> ServiceMaker:
    """The twistd service maker of dlmsd (the plugin file exports the same one)."""
    return ServiceMaker("dlmsd", "dlmsd.service.maker", DESCRIPTION, "dlmsd")  # type: ignore[no-untyped-call]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlmsd run`` to the command line."""
    run = sub.add_parser(
        "run",
        help="run the daemon in the foreground (what the systemd unit starts)",
        description="Run the push daemon in the foreground until SIGTERM, like "
        "`twistd --nodaemon dlmsd`, without relying on Twisted plugin discovery.",
    )
    run.add_argument("--config", "-c", required=True, metavar="FILE", help="daemon TOML config")
    run.add_argument(
        "--pidfile", default="", metavar="PATH", help="write the process id here (default: none)"
    )
    run.set_defaults(func=run_daemon)


def run_daemon(args: argparse.Namespace) -> int:
    """Start twistd's runner on the dlmsd service; returns when the daemon stopped."""
    from twisted.python import usage
    from twisted.scripts import twistd

    maker = service_maker()

    class Options(twistd.ServerOptions):  # type: ignore[misc, name-defined]
        # The one plugin, given instead of searched for on sys.path.
        _getPlugins = staticmethod(lambda interface: [maker])

    options: Any = Options()
    try:
        options.parseOptions(
            ["--nodaemon", f"--pidfile={args.pidfile}", "dlmsd", "--config", args.config]
        )
    except usage.UsageError as error:
        raise SystemExit(f"dlmsd run: {error}") from None
    twistd.runApp(options)  # type: ignore[no-untyped-call]
    return 0
