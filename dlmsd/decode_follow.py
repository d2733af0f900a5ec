"""`dlmsd decode --follow`: decode a stream push by push (stdin, a file, a serial device).

The stream may be binary (what the line carries) or hex text (a logged session);
which one is told from the first bytes unless ``--input`` says. The framing is
detected from the first bytes too (:func:`dlmsd.protocol.framing.detect`) unless
``--framing`` names it. Each complete APDU becomes the same record as
`dlmsd decode` prints for a capture; a bad frame, a refused message or a push
that does not decode is one line on stderr, and the stream goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from typing import TextIO

import attrs

from dlmsd.decoding import CipherLookup, FoundApdu, LayoutLookup, decode_one
from dlmsd.protocol import framing
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.gbt_push import DEFAULT_MAX_PUSH_SIZE

INPUT_KINDS = ("auto", "binary", "hex")
PARITIES = ("N", "E", "O", "M", "S")

_HEX_TEXT = re.compile(rb"[0-9A-Fa-f\s:]*")
_SEPARATORS = re.compile(r"[\s:]+")
_READ_SIZE = 65536


class FollowError(Exception):
    """The stream cannot be read at all (reported as one line, exit status 2)."""


@attrs.frozen(slots=True)
class Record:
    """A decoded push (or other APDU): the JSON record."""

    record: dict[str, object]


@attrs.frozen(slots=True)
class Problem:
    """Something skipped or refused, in words; the stream goes on."""

    text: str


Output = Record | Problem


class HexText:
    """Hex text read in pieces to bytes; whitespace and ':' are ignored, an odd digit waits."""

    def __init__(self) -> None:
        self._carry = ""

    def feed(self, data: bytes) -> bytes:
        """The bytes spelled by `data` (DecodeError-free: bad text raises ValueError)."""
        if not _HEX_TEXT.fullmatch(data):
            raise ValueError("input is not hex text")
        digits = self._carry + _SEPARATORS.sub("", data.decode("ascii"))
        cut = len(digits) - len(digits) % 2
        self._carry = digits[cut:]
        return bytes.fromhex(digits[:cut])


class Follower:
    """Bytes of a stream in, records and problems out (no I/O here)."""

    def __init__(
        self,
        cipher_for: CipherLookup,
        system_title: bytes | None = None,
        *,
        framing_name: str | None = None,
        input_kind: str = "auto",
        max_apdu_size: int = DEFAULT_MAX_PUSH_SIZE,
        layout_for: LayoutLookup | None = None,
    ) -> None:
        self._cipher_for = cipher_for
        self._system_title = system_title
        self._layout_for = layout_for  # each meter's push layout, as the daemon's
        self._framing_name = framing_name
        self._input_kind = input_kind
        self._max_apdu_size = max_apdu_size
        framing.load_framings()
        self._hex = HexText()
        self._held = b""  # bytes kept until the framing is known
        self._stream: framing.FramingStream | None = None
        if framing_name is not None:
            self._stream = framing.make_stream(framing_name, max_apdu_size)

    @property
    def framing_name(self) -> str | None:
        """The framing in use (None until detected)."""
        return self._framing_name

    def feed(self, data: bytes) -> list[Output]:
        """Take bytes read from the stream."""
        if not data:
            return []
        if self._input_kind == "auto":
            sample = data.lstrip()
            if not sample:
                return []
            self._input_kind = "hex" if _HEX_TEXT.fullmatch(sample[:64]) else "binary"
        if self._input_kind == "hex":
            try:
                data = self._hex.feed(data)
            except ValueError:
                return [Problem("skipped a piece of input that is not hex text")]
        return self._feed_bytes(data)

    def finish(self) -> list[Output]:
        """The stream ended: a problem for what is left half-way."""
        if self._stream is None:
            if self._held:
                return [Problem(f"cannot tell the framing of {len(self._held)} bytes")]
            return []
        return self._outputs(self._stream.finish())

    def _feed_bytes(self, data: bytes) -> list[Output]:
        if self._stream is None:
            self._held += data
            name = framing.detect(self._held)
            if name is None:
                if len(self._held) < framing.DETECT_WINDOW:
                    return []
                held, self._held = len(self._held), b""
                return [Problem(f"cannot tell the framing from {held} bytes; give --framing")]
            self._framing_name = name
            self._stream = framing.make_stream(name, self._max_apdu_size)
            data, self._held = self._held, b""
        return self._outputs(self._stream.feed(data))

    def _outputs(self, events: list[framing.StreamEvent]) -> list[Output]:
        outputs: list[Output] = []
        for event in events:
            if isinstance(event, framing.StreamApdu):
                outputs.append(self._decode(event))
            elif isinstance(event, framing.StreamError):
                outputs.append(Problem(event.reason))
            else:
                outputs.append(Problem(f"note: {event.reason}"))
        return outputs

    def _decode(self, found: FoundApdu) -> Output:
        try:
            return Record(
                decode_one(found, self._cipher_for, self._system_title, self._layout_for)
            )
        except DlmsError as error:
            return Problem(str(error))


Reader = Callable[[], bytes]


def follow(
    read: Reader,
    follower: Follower,
    *,
    count: int | None = None,
    pretty: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Read until the end of input (or `count` records); print records and problems."""
    out = out or sys.stdout
    err = err or sys.stderr
    printed = 0
    while True:
        data = read()
        outputs = follower.feed(data) if data else follower.finish()
        for output in outputs:
            if isinstance(output, Problem):
                print(f"dlmsd decode: {output.text}", file=err, flush=True)
                continue
            if pretty:
                print(json.dumps(output.record, indent=2, ensure_ascii=False), file=out)
            else:
                text = json.dumps(output.record, ensure_ascii=False, separators=(",", ":"))
                print(text, file=out)
            out.flush()
            printed += 1
            if count is not None and printed >= count:
                return 0
        if not data:
            return 0


def open_reader(args: argparse.Namespace) -> tuple[Reader, Callable[[], None]]:
    """The read function of ``--device``, ``--file`` or stdin, and how to close it."""
    if args.device:
        return _serial_reader(args)
    if args.file:
        try:
            handle = open(args.file, "rb")  # noqa: SIM115 - closed by the returned function
        except OSError as error:
            raise FollowError(f"cannot read {args.file}: {error.strerror}") from None
        return (lambda: handle.read(_READ_SIZE)), handle.close
    descriptor = sys.stdin.fileno()
    # os.read returns what the pipe or tty holds now: a push is printed when it arrives.
    return (lambda: os.read(descriptor, _READ_SIZE)), lambda: None


def _serial_reader(args: argparse.Namespace) -> tuple[Reader, Callable[[], None]]:
    import serial

    try:
        port = serial.Serial(
            args.device,
            baudrate=args.baud,
            bytesize=args.bytesize,
            parity=args.parity,
            stopbits=args.stopbits,
            timeout=0.5,
        )
    except (serial.SerialException, ValueError) as error:
        raise FollowError(f"cannot open {args.device}: {error}") from None
    line = f"{args.baud} {args.bytesize}{args.parity}{args.stopbits}"
    print(f"dlmsd decode: following {args.device} at {line}", file=sys.stderr, flush=True)

    def read() -> bytes:
        while True:  # a serial line has no end: wait for bytes (Ctrl-C stops)
            try:
                data: bytes = port.read(port.in_waiting or 1)
            except serial.SerialException as error:
                raise FollowError(f"{args.device}: {error}") from None
            if data:
                return data

    return read, port.close


def run_follow(
    args: argparse.Namespace,
    cipher_for: CipherLookup,
    title: bytes | None,
    layout_for: LayoutLookup | None = None,
) -> int:
    """`dlmsd decode --follow` once the keys (and layouts) are known; exit status."""
    follower = Follower(
        cipher_for,
        title,
        framing_name=args.framing,
        input_kind=args.input or "auto",
        layout_for=layout_for,
    )
    read, close = open_reader(args)
    try:
        return follow(read, follower, count=args.count, pretty=args.pretty)
    finally:
        close()
