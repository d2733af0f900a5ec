"""``dlmsd simulate``: a fleet of meters pushing encrypted DataNotifications.

Each simulated meter has its own system title and keys, derived from a seed so
a run can be repeated, and a rising invocation counter. Gas meters push their
clock, volume (m³, scaler -3) and a status word; electricity meters their
clock, active energy import and export (Wh) and active power (W). Bodies are
arrays of ``structure{OBIS, value[, structure{scaler, unit}]}``, layout (a)
of `dlmsd.cosem.readings`. Pushes go out as general-glo-ciphering (SC 0x30),
over UDP or TCP in the IEC 62056-47 wrapper, or as HDLC UI frames over TCP.

`build_push` is the library entry for tests and benchmarks; `write_key_file`
writes the matching key store (mode 0600) so a daemon can decrypt the run.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from dlmsd.protocol.axdr import Data, encode_data
from dlmsd.protocol.ciphered import GeneralGloCiphering
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.hdlc.address import HdlcAddress
from dlmsd.protocol.hdlc.frames import LLC_RESPONSE, Control, FrameKind, HdlcFrame
from dlmsd.protocol.mbus import segment_apdu
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher
from dlmsd.protocol.wrapper import WrapperFrame

TRANSPORTS = ("udp", "tcp", "hdlc-tcp")
AUTH_ENC = 0x30
MANUFACTURER = b"SIM"
GAS = "gas"
ELECTRICITY = "electricity"
# Information field size of each HDLC frame; longer APDUs are segmented.
HDLC_MAX_INFORMATION = 128

_CLOCK = Obis.parse("0-0:1.0.0*255").to_bytes()
_GAS_VOLUME = Obis.parse("7-0:3.0.0*255").to_bytes()
_GAS_STATUS = Obis.parse("0-0:96.5.0*255").to_bytes()
_ENERGY_IMPORT = Obis.parse("1-0:1.8.0*255").to_bytes()
_ENERGY_EXPORT = Obis.parse("1-0:2.8.0*255").to_bytes()
_POWER_IMPORT = Obis.parse("1-0:1.7.0*255").to_bytes()
_M3_MILLI = Data.structure(Data.integer(-3), Data.enum(13))
_WH = Data.structure(Data.integer(0), Data.enum(30))
_W = Data.structure(Data.integer(0), Data.enum(27))


@attrs.frozen(slots=True)
class SimMeter:
    """One simulated meter; keys never in its repr."""

    index: int
    kind: str
    system_title: bytes
    encryption_key: bytes = attrs.field(repr=False)
    authentication_key: bytes = attrs.field(repr=False)
    cipher: Suite0Cipher = attrs.field(repr=False, eq=False)

    @property
    def name(self) -> str:
        return f"sim-{self.kind}-{self.index}"


def make_meter(index: int, seed: int = 0) -> SimMeter:
    """Meter `index` (below 2**24) of the fleet of `seed`: even indices are gas, odd
    electricity. The system title is ``SIM`` + kind + seed (low byte) + index."""
    digest = hashlib.sha256(f"dlmsd-simulator:{seed}:{index}".encode()).digest()
    kind = GAS if index % 2 == 0 else ELECTRICITY
    serial = bytes((1 if kind == GAS else 2, seed & 0xFF)) + index.to_bytes(3, "big")
    encryption_key, authentication_key = digest[:16], digest[16:]
    return SimMeter(
        index,
        kind,
        MANUFACTURER + serial,
        encryption_key,
        authentication_key,
        Suite0Cipher(encryption_key, authentication_key),
    )


def make_meters(count: int, seed: int = 0) -> list[SimMeter]:
    """A fleet of `count` meters with distinct system titles and keys."""
    return [make_meter(index, seed) for index in range(count)]


def _entry(obis: bytes, value: Data, scaler_unit: Data | None = None) -> Data:
    if scaler_unit is None:
        return Data.structure(Data.octet_string(obis), value)
    return Data.structure(Data.octet_string(obis), value, scaler_unit)


def register_values(meter: SimMeter, invocation_counter: int) -> tuple[int, ...]:
    """The 32-bit register values of one push, rising with the invocation counter:
    gas volume (litres); or energy import, export (Wh) and power (W)."""
    step = invocation_counter & 0xFFFFFF
    if meter.kind == GAS:
        return ((meter.index * 1_000_000 + step * 7) & 0xFFFFFFFF,)
    return (
        (meter.index * 10_000_000 + step * 250) & 0xFFFFFFFF,
        step * 10 & 0xFFFFFFFF,
        500 + step * 37 % 3000,
    )


def _body(kind: str, stamp: bytes, values: Sequence[int]) -> Data:
    clock = _entry(_CLOCK, Data.octet_string(stamp))
    if kind == GAS:
        return Data.array(
            clock,
            _entry(_GAS_VOLUME, Data.double_long_unsigned(values[0]), _M3_MILLI),
            _entry(_GAS_STATUS, Data.long_unsigned(0)),
        )
    imported, exported, power = values
    return Data.array(
        clock,
        _entry(_ENERGY_IMPORT, Data.double_long_unsigned(imported), _WH),
        _entry(_ENERGY_EXPORT, Data.double_long_unsigned(exported), _WH),
        _entry(_POWER_IMPORT, Data.double_long_unsigned(power), _W),
    )


def push_body(meter: SimMeter, invocation_counter: int, stamp: CosemDateTime) -> Data:
    """The notification body of one push; values grow with the invocation counter."""
    return _body(meter.kind, stamp.to_bytes(), register_values(meter, invocation_counter))


@functools.cache
def _body_template(kind: str) -> tuple[bytes, ...]:
    """The encoded body of a `kind` meter cut around its variable fields: constant
    pieces to join with the 12-byte stamp and each 32-bit value in turn.

    Found by encoding the body twice, once with every variable byte 0x00 and once
    0xFF: the runs that differ are the fields. `build_notification` then joins
    bytes instead of encoding a tree (~1 us instead of ~40 us per push), which is
    what lets `--prebuild` make 100,000s of pushes in seconds.
    """
    fields = 1 if kind == GAS else 3
    low = encode_data(_body(kind, bytes(12), [0] * fields))
    high = encode_data(_body(kind, b"\xff" * 12, [0xFFFFFFFF] * fields))
    pieces, runs, start, index = [], [], 0, 0
    while index < len(low):
        if low[index] == high[index]:
            index += 1
            continue
        end = index
        while end < len(low) and low[end] != high[end]:
            end += 1
        pieces.append(low[start:index])
        runs.append(end - index)
        start = index = end
    pieces.append(low[start:])
    if runs != [12] + [4] * fields:  # pragma: no cover - a layout change breaks this
        raise AssertionError(f"unexpected body template runs {runs}")
    return tuple(pieces)


_U32 = struct.Struct(">I")


@functools.lru_cache(maxsize=256)
def _stamp(moment: datetime) -> bytes:
    return CosemDateTime.from_datetime(moment).to_bytes()


def build_notification(meter: SimMeter, invocation_counter: int, now: datetime) -> bytes:
    """The plaintext DataNotification APDU of one push (the bytes
    ``DataNotification(..., body=push_body(...)).to_bytes()`` gives)."""
    utc = now.astimezone(UTC)
    # The stamp has hundredths of a second: pushes built together share one.
    stamp = _stamp(utc.replace(microsecond=utc.microsecond // 10_000 * 10_000))
    pieces = _body_template(meter.kind)
    # The notification's own date-time, then the body (whose clock entry repeats it).
    invoke = _U32.pack(invocation_counter & 0x00FFFFFF)
    parts = [b"\x0f", invoke, b"\x0c", stamp, pieces[0], stamp]
    for piece, value in zip(pieces[1:], register_values(meter, invocation_counter), strict=False):
        parts += (piece, _U32.pack(value))
    parts.append(pieces[-1])
    return b"".join(parts)


def build_push(
    meter: SimMeter,
    invocation_counter: int,
    now: datetime,
    security_control: int = AUTH_ENC,
) -> bytes:
    """One pushed APDU: the DataNotification in general-glo-ciphering."""
    plaintext = build_notification(meter, invocation_counter, now)
    payload = meter.cipher.encrypt(
        meter.system_title, security_control, invocation_counter, plaintext
    )
    return GeneralGloCiphering(
        meter.system_title, security_control, invocation_counter, payload
    ).to_bytes()


def forge(apdu: bytes) -> bytes:
    """The same APDU with one bit of its tag flipped: it must fail authentication."""
    return apdu[:-1] + bytes((apdu[-1] ^ 0x01,))


def wrap(apdu: bytes) -> bytes:
    """An APDU in a wrapper frame (wPorts 1 -> 1, as meters push)."""
    return WrapperFrame(1, 1, apdu).to_bytes()


def hdlc_frames(apdu: bytes, max_information: int = HDLC_MAX_INFORMATION) -> bytes:
    """An APDU as HDLC UI frames (LLC ``E6 E7 00`` first), segmented as meters do."""
    information = LLC_RESPONSE + apdu
    destination = HdlcAddress.client(16)
    source = HdlcAddress.server(1, 17)
    control = Control(FrameKind.UI)
    chunks = [
        information[start : start + max_information]
        for start in range(0, len(information), max_information)
    ]
    return b"".join(
        HdlcFrame(destination, source, control, chunk, index < len(chunks) - 1).to_bytes()
        for index, chunk in enumerate(chunks)
    )


def mbus_frames(apdu: bytes, segment_size: int = 250) -> bytes:
    """An APDU as wired M-Bus long frames (CI 0x00.., the last with bit 4), as the
    customer interfaces of Austrian meters send it."""
    return b"".join(frame.to_bytes() for frame in segment_apdu(apdu, segment_size=segment_size))


def key_file_text(meters: Sequence[SimMeter]) -> str:
    """A key store (TOML) for the fleet, in the form `dlmsd keys add` writes."""
    lines = ["# Written by `dlmsd simulate`: keys of simulated meters.", ""]
    for meter in meters:
        lines += [
            f"[meters.{meter.system_title.hex().upper()}]",
            f'name = "{meter.name}"',
            f'encryption_key = "{meter.encryption_key.hex().upper()}"',
            f'authentication_key = "{meter.authentication_key.hex().upper()}"',
            f'labels = {{ kind = "{meter.kind}", source = "simulator" }}',
            "",
        ]
    return "\n".join(lines)


def write_key_file(path: Path, meters: Sequence[SimMeter]) -> None:
    """Write the fleet's key file atomically with mode 0600."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key_file_text(meters))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


# --- sending ----------------------------------------------------------------------


@attrs.define
class SimulationStats:
    """What a run sent."""

    sent: int = 0
    forged: int = 0
    plaintext: int = 0
    started: float = 0.0
    finished: float = 0.0
    build_seconds: float = 0.0
    #: CPU seconds this process spent sending (building excluded): the sender's own cost.
    send_cpu_seconds: float = 0.0
    last_counters: dict[bytes, int] = attrs.field(factory=dict)

    @property
    def genuine(self) -> int:
        return self.sent - self.forged - self.plaintext

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)


@attrs.define
class Simulation:
    """A paced, bounded run: `count` pushes or `duration` seconds, whichever ends first.

    `rate` is pushes per second over the whole fleet (0: as fast as possible).
    Meters take turns; each push uses that meter's next invocation counter.
    Every `forge_every`-th push has a broken tag and every `plaintext_every`-th
    is sent without protection (both 0: never).

    Over TCP a meter's pushes all go over one connection, in counter order
    (connection i of `connections` serves meters i, i + N, ...): pushes of one
    meter spread over several connections overtake each other and the later
    ones would be refused as replays.

    `prebuild` builds and encrypts every push before the first is sent
    (default: when `count` bounds the run), so the sender does nothing but
    write and can drive a daemon to its limit; `stats.build_seconds` says what
    building took.
    """

    meters: Sequence[SimMeter]
    transport: str = "udp"
    host: str = "127.0.0.1"
    port: int = 4059
    rate: float = 100.0
    count: int | None = None
    duration: float | None = None
    start_ic: int = 1
    forge_every: int = 0
    plaintext_every: int = 0
    connections: int = 8
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    stats: SimulationStats = attrs.field(factory=SimulationStats)
    prebuild: bool | None = None
    _built: int = attrs.field(default=0, init=False)

    def next_push(self) -> tuple[int, bytes]:
        """The next push, framed for the transport, with its meter's place in the fleet."""
        stats = self.stats
        number = self._built + 1
        position = self._built % len(self.meters)
        meter = self.meters[position]
        counter = stats.last_counters.get(meter.system_title, self.start_ic - 1) + 1
        stats.last_counters[meter.system_title] = counter
        if self._is_plaintext(number):
            apdu = build_notification(meter, counter, self.clock())
        else:
            apdu = build_push(meter, counter, self.clock())
            if self._is_forged(number):
                apdu = forge(apdu)
        self._built = number
        framed = hdlc_frames(apdu) if self.transport == "hdlc-tcp" else wrap(apdu)
        return position, framed

    def next_frame(self) -> bytes:
        """The next push, framed for the transport."""
        return self.next_push()[1]

    def _is_plaintext(self, number: int) -> bool:
        return bool(self.plaintext_every) and number % self.plaintext_every == 0

    def _is_forged(self, number: int) -> bool:
        forged = bool(self.forge_every) and number % self.forge_every == 0
        return forged and not self._is_plaintext(number)

    @property
    def prebuilds(self) -> bool:
        """Whether `run` builds every push before sending."""
        return self.prebuild if self.prebuild is not None else self.count is not None

    def build_all(self) -> tuple[list[int], list[bytes]]:
        """Every push of a `count`-bounded run: meter positions and frames, in send order."""
        if self.count is None:
            raise ValueError("pre-building needs a count")
        pushes = [self.next_push() for _ in range(self.count)]
        return [position for position, _ in pushes], [frame for _, frame in pushes]

    async def run(self, reactor: Any) -> SimulationStats:
        """Send the run; returns its stats once everything is written and closed."""
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if not self.meters:
            raise ValueError("a simulation needs at least one meter")
        stats = self.stats
        prebuilt: tuple[list[int], list[bytes]] | None = None
        if self.prebuilds:
            began = time.perf_counter()
            prebuilt = self.build_all()
            stats.build_seconds = time.perf_counter() - began
        sender = await _open_sender(reactor, self)
        stats.started = reactor.seconds()
        cpu_started = time.process_time()
        deadline = stats.started + self.duration if self.duration is not None else None
        limit = self.count
        # Unpaced: a chunk per reactor turn keeps the reactor responsive.
        chunk = _PREBUILT_CHUNK if prebuilt is not None else _CHUNK
        while limit is None or stats.sent < limit:
            now = reactor.seconds()
            if deadline is not None and now >= deadline:
                break
            sent = stats.sent
            due = int((now - stats.started) * self.rate) + 1 - sent if self.rate > 0 else chunk
            if limit is not None:
                due = min(due, limit - sent)
            if due > 0:
                if prebuilt is not None:
                    positions, frames = prebuilt
                    sender.send(positions[sent : sent + due], frames[sent : sent + due])
                else:
                    pushes = [self.next_push() for _ in range(due)]
                    sender.send([p for p, _ in pushes], [frame for _, frame in pushes])
                stats.sent = sent + due
            wait = 0.0 if self.rate <= 0 else min(0.01, max(1.0 / self.rate, 0.001))
            await _sleep(reactor, wait)
        await sender.close()
        stats.finished = reactor.seconds()
        stats.send_cpu_seconds = time.process_time() - cpu_started
        stats.forged = sum(map(self._is_forged, range(1, stats.sent + 1)))
        stats.plaintext = sum(map(self._is_plaintext, range(1, stats.sent + 1)))
        return stats


_CHUNK = 256
_PREBUILT_CHUNK = 4096


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class _UdpSender:
    """Datagrams straight from a socket: a write through the reactor costs several
    times the system call, and UDP on loopback never blocks for long."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._address = address
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)

    def send(self, positions: Sequence[int], frames: Sequence[bytes]) -> None:
        sendto = self._socket.sendto
        address = self._address
        for frame in frames:
            try:  # noqa: SIM105 - suppress() would cost a call per datagram
                sendto(frame, address)
            except OSError:
                pass  # ENOBUFS and the like: UDP may lose it anyway

    async def close(self) -> None:
        self._socket.close()


class _StreamClient(Protocol):
    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


class _TcpSender:
    """Connection i carries the pushes of meters i, i + N, ... (one connection per meter
    keeps its pushes in order)."""

    def __init__(self, clients: list[_StreamClient]) -> None:
        self._clients = clients

    def send(self, positions: Sequence[int], frames: Sequence[bytes]) -> None:
        count = len(self._clients)
        if count == 1:
            writes = [list(frames)]
        else:
            writes = [[] for _ in range(count)]
            for position, frame in zip(positions, frames, strict=True):
                writes[position % count].append(frame)
        for client, pieces in zip(self._clients, writes, strict=True):
            if pieces:
                transport: Any = client.transport
                transport.write(b"".join(pieces))

    async def close(self) -> None:
        for client in self._clients:
            transport: Any = client.transport
            transport.loseConnection()  # after the buffered frames are written
        await defer.gatherResults([client.closed for client in self._clients])


async def _open_sender(reactor: Any, simulation: Simulation) -> _UdpSender | _TcpSender:
    host = socket.gethostbyname(simulation.host)
    if simulation.transport == "udp":
        return _UdpSender((host, simulation.port))
    from twisted.internet.endpoints import TCP4ClientEndpoint

    endpoint = TCP4ClientEndpoint(reactor, host, simulation.port)
    factory: Any = Factory.forProtocol(_StreamClient)
    count = max(1, min(simulation.connections, len(simulation.meters)))
    clients: list[_StreamClient] = [await endpoint.connect(factory) for _ in range(count)]
    return _TcpSender(clients)


# --- command line ------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlmsd simulate`` to the command line."""
    parser = subparsers.add_parser(
        "simulate",
        help="send realistic encrypted pushes from simulated meters",
        description="Send encrypted DataNotification pushes from N simulated gas and "
        "electricity meters with distinct keys and rising invocation counters, and "
        "write the matching key file for the daemon.",
    )
    parser.add_argument("--meters", type=int, default=10, help="number of meters (default 10)")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="pushes per second overall; 0 = unpaced"
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default="udp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4059)
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--count", type=int, help="pushes to send (default: one per meter)")
    bound.add_argument("--duration", type=float, help="seconds to send for")
    parser.add_argument("--keys-out", type=Path, help="write the fleet's key file here (0600)")
    parser.add_argument("--seed", type=int, default=0, help="derives titles and keys (default 0)")
    parser.add_argument(
        "--start-ic", type=int, default=1, help="first invocation counter of every meter"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="TCP connections to use; connection i carries meters i, i+N, ... (default 8)",
    )
    parser.add_argument(
        "--prebuild",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="build and encrypt every push before sending, so sending runs at full speed"
        " (default: on with --count, off with --duration)",
    )
    parser.add_argument("--forge-every", type=int, default=0, help="break the tag of every Kth")
    parser.add_argument(
        "--plaintext-every", type=int, default=0, help="send every Kth push unprotected"
    )
    parser.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """The ``dlmsd simulate`` command; returns the exit code."""
    if args.meters < 1:
        print("dlmsd simulate: --meters must be at least 1", file=sys.stderr)
        return 2
    meters = make_meters(args.meters, args.seed)
    if args.keys_out is not None:
        write_key_file(args.keys_out, meters)
        print(f"wrote keys of {len(meters)} meters to {args.keys_out}")
    count = args.count if args.count is not None or args.duration is not None else len(meters)
    if count == 0:
        return 0
    simulation = Simulation(
        meters,
        transport=args.transport,
        host=args.host,
        port=args.port,
        rate=args.rate,
        count=count,
        duration=args.duration,
        start_ic=args.start_ic,
        forge_every=args.forge_every,
        plaintext_every=args.plaintext_every,
        connections=args.connections,
        prebuild=args.prebuild if args.duration is None else False,
    )
    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    outcome: list[object] = []

    def finished(result: object) -> None:
        outcome.append(result)
        reactor.stop()

    reactor.callWhenRunning(
        lambda: defer.ensureDeferred(simulation.run(reactor)).addBoth(finished)
    )
    reactor.run()
    result = outcome[0] if outcome else None
    if not isinstance(result, SimulationStats):
        error = result.getErrorMessage() if isinstance(result, Failure) else "interrupted"
        print(f"dlmsd simulate: {error}", file=sys.stderr)
        return 1
    stats = simulation.stats
    built = f"; built beforehand in {stats.build_seconds:.2f}s" if stats.build_seconds else ""
    print(
        f"sent {stats.sent} pushes ({stats.forged} forged, {stats.plaintext} plaintext) "
        f"from {len(meters)} meters over {args.transport} to {args.host}:{args.port} "
        f"in {stats.elapsed:.2f}s ({stats.sent / stats.elapsed:.0f}/s, "
        f"{stats.sent / max(stats.send_cpu_seconds, 1e-9):.0f}/s per CPU second){built}"
    )
    return 0
