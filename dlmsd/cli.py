"""The `dlmsd` command: a thin layer over the library.

Subcommands live next to what they drive (keys in the service, the simulator
beside the daemon); this module only wires them into one parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dlmsd import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlmsd", description="DLMS/COSEM head-end: decode, read and receive meter data."
    )
    parser.add_argument("--version", action="version", version=f"dlmsd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _register_decode(sub)
    _register(sub, "dlmsd.service.keys_cli")
    _register(sub, "dlmsd.service.simulator")
    _register(sub, "dlmsd.service.state_cli")
    _register(sub, "dlmsd.client.cli")
    _register(sub, "dlmsd.client.emulator")
    return parser


def _register(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str) -> None:
    import importlib

    module = importlib.import_module(name)
    module.register(sub)


def _register_decode(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    decode = sub.add_parser(
        "decode",
        help="decode a captured frame (wrapper, HDLC or bare APDU) to JSON",
        description="Decode a captured frame given as hex (or '-' for stdin). "
        "Wrapper, HDLC (one or several frames, segmented) and bare APDUs are detected.",
    )
    decode.add_argument("hex", nargs="?", default="-", help="frame as hex; '-' reads stdin")
    decode.add_argument("--ek", help="encryption key (32 hex characters)")
    decode.add_argument("--ak", help="authentication key (32 hex characters)")
    decode.add_argument("--keys", metavar="FILE", help="key store file (TOML)")
    decode.add_argument(
        "--system-title", help="system title (hex) for APDUs that carry none (glo- APDUs)"
    )
    decode.add_argument(
        "--quarantine",
        metavar="FILE",
        help="decode every frame of a quarantine file (JSON lines with frame_hex)",
    )
    decode.add_argument("--pretty", action="store_true", help="indented, readable output")
    decode.set_defaults(func=_run_decode)


def _run_decode(args: argparse.Namespace) -> int:
    from dlmsd.decode_command import run_decode

    return run_decode(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
