"""``dlmsd set`` and ``dlmsd action``: write an attribute, invoke a method, from the shell.

Same connection, security and output options as ``dlmsd get``. A value is
either the typed JSON ``dlmsd get --raw`` prints (``'{"type": "long-unsigned",
"value": 900}'``) or ``TYPE:TEXT`` (``long-unsigned:900``, ``visible-string:abc``,
``octet-string:0a0b``, ``clock:now``). The clock's time (attribute 2 of a class 8
object such as ``0-0:1.0.0``) also takes bare ISO 8601 text or ``now``.
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from dlmsd.client.cli import (
    UsageError,
    _connection_options,
    _main,
    _target,
    client_from_args,
    write_json,
)
from dlmsd.client.cli_values import TEXT_TYPES, data_from_json, data_from_text, json_value
from dlmsd.client.targets import CLOCK_CLASS, Target
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.errors import DlmsError

_VALUE_HELP = (
    "typed JSON as `dlmsd get --raw` prints it, or TYPE:TEXT, e.g. long-unsigned:900, "
    "octet-string:0a0b (hex), visible-string:abc, clock:2030-01-01T00:00+01:00, clock:now "
    "(the clock's time also takes bare ISO 8601 or 'now')"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlmsd set`` and ``dlmsd action``."""
    set_ = sub.add_parser(
        "set",
        help="write an attribute of a meter (SET)",
        description="Write one attribute given as [CLASS/]OBIS[:ATTRIBUTE] (attribute 2 by "
        "default). Examples: set the clock: `dlmsd set 0-0:1.0.0 now`; a push setup's number "
        "of retries: `dlmsd set 0-0:25.9.0:6 unsigned:5`. TYPE is one of "
        + ", ".join(TEXT_TYPES)
        + ".",
    )
    set_.add_argument("target", metavar="OBIS[:attr]")
    set_.add_argument("value", metavar="VALUE", help=_VALUE_HELP)
    _connection_options(set_)
    set_.set_defaults(func=lambda args: _main(args, _run_set))

    action = sub.add_parser(
        "action",
        help="invoke a method of a meter object (ACTION)",
        description="Invoke method METHOD of [CLASS/]OBIS, with an optional parameter. "
        "Examples: disconnect: `dlmsd action 0-0:96.3.10 1 integer:0`; reconnect: "
        "method 2; push now: `dlmsd action 0-0:25.9.0 1 integer:0`. Prints the "
        "method's return data (null when it has none).",
    )
    action.add_argument("target", metavar="[CLASS/]OBIS")
    action.add_argument("method", type=int, metavar="METHOD", help="method number (1, 2, ...)")
    action.add_argument("value", nargs="?", metavar="PARAMETER", help=_VALUE_HELP)
    action.add_argument(
        "--raw", action="store_true", help="print the return data as the typed view"
    )
    _connection_options(action)
    action.set_defaults(func=lambda args: _main(args, _run_action))


def _run_set(args: argparse.Namespace, out: TextIO) -> int:
    _no_table(args)
    target = _target(args.target)
    value = _value(args.value, target)
    client = client_from_args(args)
    with client.session() as meter:
        meter.set(target, value)
    write_json(out, {"target": str(target), "result": "success"}, args)
    return 0


def _run_action(args: argparse.Namespace, out: TextIO) -> int:
    _no_table(args)
    target = _target(args.target)
    if not 0 < args.method < 256:
        raise UsageError(f"method {args.method} out of range 1..255")
    parameters = None if args.value is None else _value(args.value, None)
    client = client_from_args(args)
    with client.session() as meter:
        returned = meter.action(target.obis, args.method, parameters, class_id=target.class_id)
    shown: object = None
    if returned is not None:
        shown = returned.to_json() if args.raw else json_value(returned)
    target_text = f"{target.resolved_class_id}/{target.obis}"
    write_json(out, {"target": target_text, "method": args.method, "return": shown}, args)
    return 0


def _no_table(args: argparse.Namespace) -> None:
    if args.table:
        raise UsageError("--table: this command prints one JSON object (--pretty indents it)")


def _value(text: str, target: Target | None) -> Data:
    try:
        if text.lstrip().startswith("{"):
            try:
                node = json.loads(text)
            except ValueError as error:
                raise UsageError(f"the value is not JSON: {error}") from None
            return data_from_json(node)
        type_name, colon, rest = text.partition(":")
        if colon and type_name in TEXT_TYPES:
            return data_from_text(rest, type_name)
        if _is_clock_time(target):
            return data_from_text(text, "clock")
        raise UsageError(
            f"{text!r}: give typed JSON or TYPE:TEXT, TYPE one of {', '.join(TEXT_TYPES)}"
        )
    except DlmsError as error:
        raise UsageError(error.reason) from None


def _is_clock_time(target: Target | None) -> bool:
    return target is not None and target.attribute == 2 and target.resolved_class_id == CLOCK_CLASS
