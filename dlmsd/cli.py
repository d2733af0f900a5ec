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
    _register(sub, "dlmsd.service.run_cli")
    _register(sub, "dlmsd.client.cli")
    _register(sub, "dlmsd.client.cli_write")
    _register(sub, "dlmsd.client.emulator")
    _register(sub, "dlmsd.completion")
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
        "Wrapper, HDLC (one or several frames, segmented or GBT blocks) and bare APDUs "
        "(LLC header allowed) are detected.",
    )
    decode.add_argument("hex", nargs="?", default="-", help="frame as hex; '-' reads stdin")
    from dlmsd.keysource import add_key_options

    add_key_options(
        decode,
        keys_help="key store file (TOML, mode 0600), keys picked by the frame's system title;"
        " default: none",
        ek_note="default: none, so ciphered frames are refused (no keys)",
        ak_note="for authenticated frames (security 0x10/0x30); default: the --ek value",
    )
    decode.add_argument(
        "--system-title",
        help="system title (hex) for APDUs that carry none (glo- APDUs); default: the frame's own",
    )
    decode.add_argument(
        "--quarantine",
        metavar="FILE",
        help="decode every frame of a quarantine file (JSON lines with frame_hex)",
    )
    decode.add_argument(
        "--profile",
        metavar="NAME",
        help="read bare push bodies with this built-in layout (docs/profiles.md);"
        " with --keys, each meter's own push_object_list or profile applies",
    )
    decode.add_argument("--pretty", action="store_true", help="indented JSON")
    _register_decode_stream(decode)
    decode.set_defaults(func=_run_decode)


def _register_decode_stream(decode: argparse.ArgumentParser) -> None:
    stream = decode.add_argument_group(
        "files and streams",
        "A capture file (hex text or raw bytes) instead of the hex argument; or --follow: "
        "decode a stream push by push (stdin, --file, or --device), one JSON line each, "
        "problems on stderr.",
    )
    stream.add_argument("--file", metavar="PATH", help="read the capture (or stream) from PATH")
    stream.add_argument(
        "--follow", action="store_true", help="decode a stream push by push until it ends"
    )
    stream.add_argument("--device", metavar="PATH", help="follow a serial device (HAN/P1 port)")
    stream.add_argument("--baud", type=int, default=115200, help="serial speed (115200)")
    stream.add_argument(
        "--parity", choices=("N", "E", "O", "M", "S"), default="N", help="serial parity (N)"
    )
    stream.add_argument("--bytesize", type=int, choices=(5, 6, 7, 8), default=8)
    stream.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    stream.add_argument(
        "--framing", help="the stream's framing (hdlc, wrapper, ...); detected if not given"
    )
    stream.add_argument(
        "--input",
        choices=("auto", "binary", "hex"),
        default="auto",
        help="the stream is raw bytes or hex text (auto: told from the first bytes)",
    )
    stream.add_argument(
        "--count", type=int, metavar="N", help="stop after N records (with --follow)"
    )


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
