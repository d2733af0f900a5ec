"""``dlmsd get``, ``dlmsd profile`` and ``dlmsd objects``: read a meter from the shell.

A thin layer over :mod:`dlmsd.client.blocking`. Output is JSON (``--pretty``:
indented; ``--table``: a text table). Errors are one line on stderr: exit 2 for
bad usage or input, 1 when the exchange with the meter failed (timeout, refused association, wrong
keys, an error answer).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from dlmsd.client.blocking import Client, SerialClient, TcpClient, UdpClient
from dlmsd.client.cli_values import json_value, number
from dlmsd.client.errors import ClientError, ServiceError
from dlmsd.client.operations import ProfileRows
from dlmsd.client.targets import Target, parse_target
from dlmsd.client.transport import MANAGEMENT_CLIENT, PUBLIC_CLIENT
from dlmsd.cosem.objects import ObjectListEntry
from dlmsd.keysource import EK_ENV, KeySourceError, add_key_options, resolve_keys
from dlmsd.protocol.apdus.errors import DataAccessResult
from dlmsd.protocol.association import (
    DEFAULT_FRAME_COUNTER,
    Authentication,
    Ciphering,
    ClientSettings,
)
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher

DEFAULT_CLIENT_TITLE = b"DLMSDCLI"
_PROGRESS_STEP = 64 * 1024


class UsageError(Exception):
    """Bad command-line input: exit 2 with this one line."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlmsd get``, ``dlmsd profile`` and ``dlmsd objects``."""
    get = sub.add_parser(
        "get",
        help="read attributes of a meter (GET) and print them as JSON",
        description="Read attributes given as [CLASS/]OBIS[:ATTRIBUTE] (attribute 2 by "
        "default; the class is guessed from the OBIS code and checked against the object "
        "list when the meter disagrees).",
    )
    get.add_argument("targets", nargs="+", metavar="OBIS[:attr]")
    get.add_argument(
        "--scaled", action="store_true", help="registers: apply the scaler and show the unit"
    )
    get.add_argument(
        "--raw",
        action="store_true",
        help='the typed view ({"type": "long-unsigned", "value": 5}) instead of plain values',
    )
    _connection_options(get)
    get.set_defaults(func=lambda args: _main(args, _run_get))

    profile = sub.add_parser(
        "profile",
        help="read a Profile Generic buffer by time range or entries",
        description="Read rows of a profile (e.g. 7-0:99.1.0*255) between two times "
        "(ISO 8601, meter local time unless an offset is given) or by entry numbers.",
    )
    profile.add_argument("obis", metavar="OBIS")
    profile.add_argument("--from", dest="from_", metavar="TIME", help="first capture time")
    profile.add_argument("--to", metavar="TIME", help="last capture time")
    profile.add_argument("--entries", metavar="A:B", help="entries A to B (1-based; B 0 = last)")
    profile.add_argument("--columns", metavar="1,2,...", help="capture objects to read (1-based)")
    profile.add_argument("--raw", action="store_true", help="do not apply scalers")
    _connection_options(profile)
    profile.set_defaults(func=lambda args: _main(args, _run_profile))

    objects = sub.add_parser(
        "objects",
        help="list the objects of the association (Association LN object list)",
        description="Print the object list of the current association.",
    )
    _connection_options(objects)
    objects.set_defaults(func=lambda args: _main(args, _run_objects))


def _connection_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("meter")
    target = where.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", help="meter (or terminal server) host name or address")
    target.add_argument("--serial", metavar="DEV", help="serial port (HDLC), or a pyserial URL")
    where.add_argument("--port", type=int, default=4059, help="TCP/UDP port (default 4059)")
    where.add_argument("--udp", action="store_true", help="wrapper over UDP instead of TCP")
    where.add_argument(
        "--transport",
        choices=("wrapper", "hdlc"),
        default="wrapper",
        help="framing on TCP (a serial port is always HDLC)",
    )
    where.add_argument("--baudrate", type=int, default=9600)
    where.add_argument(
        "--client-sap", type=int, help="client SAP (default 16 public, 1 with auth)"
    )
    where.add_argument("--server-sap", type=int, default=1, help="server logical device")
    where.add_argument("--physical-address", type=int, default=17, help="HDLC lower address")
    where.add_argument("--timeout", type=float, default=5.0, help="seconds of silence allowed")
    where.add_argument("--retries", type=int, default=3, help="retransmissions before giving up")

    auth = parser.add_argument_group("security")
    auth.add_argument("--auth", choices=("none", "lls", "hls-gmac"), default="none")
    secret = auth.add_mutually_exclusive_group()
    secret.add_argument("--password", help="LLS password (prefer --password-file)")
    secret.add_argument("--password-file", metavar="FILE", help="file holding the LLS password")
    add_key_options(auth)
    auth.add_argument("--meter-title", help="the meter's system title, to pick from --keys")
    auth.add_argument(
        "--ciphering",
        choices=("none", "global", "dedicated"),
        help="protect APDUs (default: global when keys are given, else none)",
    )
    auth.add_argument("--system-title", help="our system title (16 hex characters)")
    auth.add_argument(
        "--invocation-counter",
        type=int,
        help="first outgoing invocation counter (default: read from the meter)",
    )
    auth.add_argument(
        "--counter-obis",
        default=str(DEFAULT_FRAME_COUNTER),
        help="frame counter object read through a public association",
    )
    auth.add_argument("--gbt", action="store_true", help="propose general block transfer")
    auth.add_argument("--gbt-window", type=int, default=1)
    auth.add_argument("--max-pdu", type=int, default=0xFFFF, help="our max receive PDU size")

    out = parser.add_argument_group("output")
    shape = out.add_mutually_exclusive_group()
    shape.add_argument("--pretty", action="store_true", help="indented JSON")
    shape.add_argument("--table", action="store_true", help="a text table instead of JSON")


# -- building the client ------------------------------------------------------------------


def load_cipher(
    keys: str | None, ek: str | None, ak: str | None, system_title: bytes | None
) -> Suite0Cipher | None:
    """A cipher from ``--keys`` (the entry for ``system_title``, or the only one), from
    ``--ek/--ak`` (hex or ``-`` for stdin) or from DLMSD_EK/DLMSD_AK (`dlmsd.keysource`)."""
    try:
        given = resolve_keys(keys, ek, ak)
    except KeySourceError as error:
        raise UsageError(str(error)) from None
    store = given.store
    if store is not None:
        entry = store.lookup(system_title) if system_title else None
        if entry is None:
            entries = list(store)
            if len(entries) != 1:
                raise UsageError(
                    f"{keys} holds {len(entries)} meters: name one with --meter-title"
                )
            entry = entries[0]
        if entry.cipher is None:
            raise UsageError(f"{keys}: the meter entry has no keys")
        return entry.cipher
    if given.loose is None:
        return None
    encryption, authentication = given.loose.ek, given.loose.ak
    if encryption is None:
        raise UsageError(f"--ak needs --ek (or {EK_ENV})")
    return Suite0Cipher(encryption, authentication or encryption)


def _hex(text: str, option: str, length: int) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{option} is not hex") from None
    if len(value) != length:
        raise UsageError(f"{option} must be {length} bytes ({2 * length} hex characters)")
    return value


def settings_from_args(args: argparse.Namespace) -> ClientSettings:
    """The association settings the options ask for."""
    authentication = {
        "none": Authentication.NONE,
        "lls": Authentication.LLS,
        "hls-gmac": Authentication.HLS_GMAC,
    }[args.auth]
    meter_title = _hex(args.meter_title, "--meter-title", 8) if args.meter_title else None
    cipher = load_cipher(args.keys, args.ek, args.ak, meter_title)
    ciphering_name = args.ciphering or ("global" if cipher is not None else "none")
    ciphering = Ciphering(ciphering_name)
    if (ciphering != Ciphering.NONE or authentication == Authentication.HLS_GMAC) and not cipher:
        raise UsageError("ciphering and HLS-GMAC need keys: --keys FILE or --ek/--ak")
    password: bytes | None = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_bytes().rstrip(b"\r\n")
        except OSError as error:
            raise UsageError(f"cannot read {args.password_file}: {error.strerror}") from None
    elif args.password:
        password = args.password.encode()
    if authentication == Authentication.LLS and not password:
        raise UsageError("--auth lls needs --password or --password-file")
    title = _hex(args.system_title, "--system-title", 8) if args.system_title else None
    secured = authentication != Authentication.NONE or ciphering != Ciphering.NONE
    client_sap = args.client_sap
    if client_sap is None:
        client_sap = MANAGEMENT_CLIENT if secured else PUBLIC_CLIENT
    try:
        return ClientSettings(
            client_sap=client_sap,
            server_logical_device=args.server_sap,
            authentication=authentication,
            password=password,
            ciphering=ciphering,
            cipher=cipher if secured else None,
            client_system_title=(title or DEFAULT_CLIENT_TITLE) if secured else title,
            invocation_counter=args.invocation_counter or 1,
            use_gbt=args.gbt,
            gbt_window=args.gbt_window,
            max_pdu_size=args.max_pdu,
        )
    except DlmsError as error:
        raise UsageError(error.reason) from None


def client_from_args(
    args: argparse.Namespace, progress: Callable[[int], object] | None = None
) -> Client:
    """The blocking client the options describe."""
    settings = settings_from_args(args)
    counter_obis: Obis | None = None
    if settings.ciphering != Ciphering.NONE and args.invocation_counter is None:
        try:
            counter_obis = Obis.parse(args.counter_obis)
        except DlmsError as error:
            raise UsageError(f"--counter-obis: {error.reason}") from None
    options: dict[str, Any] = {
        "timeout": args.timeout,
        "retries": args.retries,
        "invocation_counter_obis": counter_obis,
        "progress": progress,
    }
    if args.serial:
        return SerialClient(
            args.serial,
            settings,
            baudrate=args.baudrate,
            physical_address=args.physical_address,
            **options,
        )
    if args.udp:
        return UdpClient(args.host, args.port, settings, **options)
    return TcpClient(
        args.host,
        args.port,
        settings,
        transport=args.transport,
        physical_address=args.physical_address,
        **options,
    )


# -- commands --------------------------------------------------------------------------


def _main(args: argparse.Namespace, command: Callable[[argparse.Namespace, TextIO], int]) -> int:
    name = f"dlmsd {args.command}"
    try:
        return command(args, sys.stdout)
    except UsageError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        print(f"{name}: {error.message}", file=sys.stderr)
        return 1


def _run_get(args: argparse.Namespace, out: TextIO) -> int:
    targets = [_target(text) for text in args.targets]
    client = client_from_args(args)
    results: list[dict[str, object]] = []
    failed = False
    with client.session() as meter:
        for target in targets:
            entry: dict[str, object] = {"target": str(target)}
            try:
                if args.scaled and target.attribute == 2:
                    reading = meter.read_register(target)
                    entry.update(value=number(reading.value), unit=reading.unit)
                elif args.raw:
                    entry["value"] = meter.get(target).to_json()
                else:
                    entry["value"] = json_value(meter.get(target))
            except ServiceError as error:
                failed = True
                entry["error"] = result_name(error)
            results.append(entry)
    if args.table:
        rows = [
            (str(r["target"]), _cell(r.get("value", r.get("error"))), str(r.get("unit") or ""))
            for r in results
        ]
        _table(out, ("target", "value", "unit"), rows)
    else:
        write_json(out, results, args)
    return 1 if failed else 0


def _run_profile(args: argparse.Namespace, out: TextIO) -> int:
    target = _target(args.obis)
    start, end = _time(args.from_, "--from"), _time(args.to, "--to")
    entries = _entries(args.entries) if args.entries else None
    if entries is not None and (start or end):
        raise UsageError("use --from/--to or --entries, not both")
    columns = _columns(args.columns) if args.columns else None
    progress = _Progress(sys.stderr) if sys.stderr.isatty() or args.table else None
    client = client_from_args(args, progress)
    try:
        with client.session() as meter:
            rows = meter.read_profile(
                target.obis,
                from_=start,
                to=end,
                entries=entries,
                columns=columns,
                apply_scalers=not args.raw,
            )
    finally:
        if progress is not None:
            progress.done()
    if args.table:
        headers = tuple(
            f"{header} [{unit.symbol}]" if unit is not None and unit.symbol else header
            for header, unit in zip(rows.headers, rows.units, strict=True)
        )
        _table(out, headers, [tuple(_cell(cell) for cell in row) for row in rows.rows])
    else:
        write_json(out, profile_json(rows), args)
    return 0


def profile_json(rows: ProfileRows) -> dict[str, object]:
    """A profile read as JSON: columns (with units) and rows of plain values."""
    return {
        "columns": [
            {
                "class_id": column.class_id,
                "obis": str(column.logical_name),
                "attribute": column.attribute_index,
                "data_index": column.data_index,
                "unit": None if unit is None else unit.symbol,
            }
            for column, unit in zip(rows.columns, rows.units, strict=True)
        ],
        "rows": [[_plain(cell) for cell in row] for row in rows.rows],
    }


def _run_objects(args: argparse.Namespace, out: TextIO) -> int:
    client = client_from_args(args)
    with client.session() as meter:
        entries = meter.object_list()
    if args.table:
        _table(
            out,
            ("class", "version", "obis", "name", "attributes", "methods"),
            [_object_row(entry) for entry in entries],
        )
    else:
        write_json(out, [object_json(entry) for entry in entries], args)
    return 0


def object_json(entry: ObjectListEntry) -> dict[str, object]:
    """One object list entry as JSON."""
    return {
        "class_id": entry.class_id,
        "class": entry.class_name,
        "version": entry.version,
        "obis": str(entry.logical_name),
        "attributes": [
            {"id": item.attribute_id, "access": item.access_mode}
            for item in entry.attribute_access
        ],
        "methods": [
            {"id": item.method_id, "access": item.access_mode} for item in entry.method_access
        ],
    }


def _object_row(entry: ObjectListEntry) -> tuple[str, ...]:
    return (
        str(entry.class_id),
        str(entry.version),
        str(entry.logical_name),
        entry.class_name or "",
        str(len(entry.attribute_access)),
        str(len(entry.method_access)),
    )


# -- parsing and printing ---------------------------------------------------------------


def _target(text: str) -> Target:
    try:
        return parse_target(text)
    except DlmsError as error:
        raise UsageError(error.reason) from None


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: not an ISO 8601 time: {text!r}") from None


def _entries(text: str) -> tuple[int, int]:
    first, sep, last = text.partition(":")
    try:
        low, high = int(first), int(last) if sep else int(first)
    except ValueError:
        raise UsageError(f"--entries: expected A:B, got {text!r}") from None
    if low < 1 or high < 0 or (high and high < low):
        raise UsageError(f"--entries: {text!r} is not a range of entries (1-based, B 0 = last)")
    return low, high


def _columns(text: str) -> list[int]:
    try:
        columns = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--columns: expected numbers like 1,3,4, got {text!r}") from None
    if not columns or min(columns) < 1:
        raise UsageError("--columns: column numbers start at 1")
    return columns


def write_json(out: TextIO, value: object, args: argparse.Namespace) -> None:
    """One JSON document on a line, or indented with ``--pretty``."""
    json.dump(value, out, ensure_ascii=False, indent=2 if args.pretty else None)
    out.write("\n")


def result_name(error: ServiceError) -> str:
    """A failed item as JSON shows it: ``object-undefined``, ``read-write-denied``, ..."""
    result = error.result
    if isinstance(result, DataAccessResult):
        return result.name.lower().replace("_", "-")
    return error.message


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return number(value)
    if isinstance(value, CosemDateTime):
        moment = value.to_datetime()
        return moment.isoformat() if moment is not None else value.to_json()
    if isinstance(value, Data):
        return value.to_json()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _cell(value: object) -> str:
    plain = _plain(value)
    if plain is None:
        return "-"
    if isinstance(plain, str):
        return plain
    return json.dumps(plain)


def _table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(header) for header in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    out.write(line.format(*headers).rstrip() + "\n")
    out.write("  ".join("-" * width for width in widths) + "\n")
    for row in rows:
        out.write(line.format(*row).rstrip() + "\n")


class _Progress:
    """Bytes received so far on stderr, for long profile reads."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._shown = 0

    def __call__(self, received: int) -> None:
        if received - self._shown >= _PROGRESS_STEP:
            self._shown = received
            self._stream.write(f"\rreceived {received // 1024} KiB")
            self._stream.flush()

    def done(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
