"""Load generator and bare baselines for the socket benchmarks (`bench/ingest.py`).

Run as ``python -m bench.loadgen ROLE ...``; every role talks to its parent
over stdin/stdout lines, so the parent can start them, wait until they are
ready and sample them at the same moments as the daemon:

* ``send``: pre-builds valid encrypted pushes of N simulated meters, prints
  ``ready``, waits for ``go`` and sends them over UDP or TCP; prints ``sent N S``.
* ``send --mode steps``: the same frames, sent at a given rate on demand: each
  ``step RATE SECONDS`` line sends RATE*SECONDS frames paced over SECONDS
  (bursts every ~1 ms, the sender catches up when a sleep overshoots) and
  answers ``stepped N S`` (frames sent, seconds it took); ``end`` stops. The
  parent steps the rate up until the receiver loses frames.
* ``udp-counter`` / ``tcp-counter``: the ceiling: a bare Twisted protocol
  that only counts datagrams (for TCP: splits the wrapper stream on its
  headers and counts frames); prints ``port P``, then answers each ``?``
  line with ``count N T RECEIVED REJECTED``.
* ``udp-verify``: the authentication floor: a bare ``DatagramProtocol`` that
  does only the security work every push needs (wrapper check, peel, key
  lookup by system title, GCM verify + decrypt) and counts the pushes that
  pass; no decoding, no state, no sink. Same ``port`` / ``?`` protocol.

UDP has no flow control: a sender faster than the receiver only fills the
kernel's receive queue and the rest is dropped. The ``closed`` mode therefore
watches the receiver's queue in ``/proc/net/udp`` and sends while it is below
half of its buffer: the receiver is never idle and next to nothing is dropped,
for the daemon and the bare counter alike.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

# Plaintexts built per meter up to this many meters, then reused: building a
# DataNotification costs ~30 us, encrypting it ~8 us; what the daemon does per
# push does not depend on which meter's values it carries.
_DISTINCT_BODIES = 1000
_BURST = 32  # datagrams between two looks at the receiver's queue


def build_frames(
    meters: int, count: int, *, seed: int = 0, first_ic: int = 1, offset: int = 0
) -> list[bytes]:
    """`count` wrapper frames, meters taking turns (meter i of `meters`, rising ICs).

    Every frame is a distinct valid push (general-glo-ciphering, SC 0x30) the
    daemon accepts once. `offset` starts the round robin further on, for a
    second sender with its own share.
    """
    from dlmsd.protocol.ciphered import GeneralGloCiphering
    from dlmsd.service.simulator import build_notification, make_meter, wrap

    fleet = [make_meter(index, seed) for index in range(meters)]
    now = datetime.now(UTC)
    bodies = [
        build_notification(fleet[i], first_ic, now) for i in range(min(meters, _DISTINCT_BODIES))
    ]
    frames = []
    for number in range(offset, offset + count):
        index = number % meters
        meter = fleet[index]
        counter = first_ic + number // meters
        payload = meter.cipher.encrypt(
            meter.system_title, 0x30, counter, bodies[index % len(bodies)]
        )
        apdu = GeneralGloCiphering(meter.system_title, 0x30, counter, payload).to_bytes()
        frames.append(wrap(apdu))
    return frames


def frame_id(frame: bytes) -> str:
    """``<system title hex>:<invocation counter>`` of a frame `build_frames` made
    (the daemon's record id)."""
    # wrapper(8) | DB | 08 | title(8) | length | SC | IC(4)
    return f"{frame[10:18].hex().upper()}:{int.from_bytes(frame[20:24], 'big')}"


# --- sending -------------------------------------------------------------------------------


class UdpQueueWatch:
    """The UDP socket bound to 127.0.0.1:`port`, as /proc/net/udp shows it: its receive
    queue (bytes) and how many datagrams the kernel dropped because that queue was full."""

    def __init__(self, port: int) -> None:
        self._local = f"0100007F:{port:04X}".encode()

    def _fields(self) -> list[bytes]:
        with open("/proc/net/udp", "rb") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 12 and fields[1] == self._local:
                    return fields
        return []

    def queued(self) -> int:
        fields = self._fields()
        return int(fields[4].split(b":")[1], 16) if fields else 0

    def drops(self) -> int:
        fields = self._fields()
        return int(fields[12]) if fields else 0


def send_udp_closed(frames: Sequence[bytes], port: int, duration: float, cycle: bool) -> int:
    """Keep the receiver's queue filled for `duration` s; returns datagrams sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    send = sock.send
    watch = UdpQueueWatch(port)
    limit = _receive_buffer_limit()
    deadline = time.monotonic() + duration
    sent = 0
    total = len(frames)
    while time.monotonic() < deadline:
        if watch.queued() > limit:
            time.sleep(0.0002)
            continue
        if sent + _BURST > total and not cycle:
            break
        for index in range(sent, sent + _BURST):
            send(frames[index % total])
        sent += _BURST
    sock.close()
    return sent


def _receive_buffer_limit() -> int:
    # Half the default receive buffer the listening sockets have.
    try:
        with open("/proc/sys/net/core/rmem_default") as handle:
            return int(handle.read()) // 2
    except OSError:
        return 100_000


def send_paced(
    frames: Sequence[bytes], port: int, rate: float, transport: str
) -> tuple[int, list[float]]:
    """Send every frame at `rate` per second; returns the count and each send time."""
    sock = _connect(transport, port)
    send = sock.send if transport == "udp" else sock.sendall
    times: list[float] = []
    start = time.monotonic()
    for index, frame in enumerate(frames):
        due = start + index / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        times.append(time.monotonic())
        send(frame)
    sock.close()
    return len(frames), times


def send_at_rate(
    send: Any, frames: Sequence[bytes], start: int, count: int, rate: float
) -> tuple[int, float]:
    """Send frames ``start .. start+count`` (cycling) at `rate`/s; returns (sent, seconds).

    Paced by the clock, not by a sleep per frame (sleeps overshoot by ~50 us): after
    each sleep every frame now due goes out, so the average rate holds."""
    total = len(frames)
    began = time.monotonic()
    sent = 0
    while sent < count:
        elapsed = time.monotonic() - began
        due = min(count, int(elapsed * rate) + 1)
        if due <= sent:
            time.sleep(max((sent + 1) / rate - elapsed, 0.0002))
            continue
        for index in range(start + sent, start + due):
            send(frames[index % total])
        sent = due
    return sent, time.monotonic() - began


def run_steps(frames: Sequence[bytes], port: int, cycle: bool) -> int:
    """Serve ``step RATE SECONDS`` lines until ``end`` (see the module docstring)."""
    sock = _connect("udp", port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    position = 0
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "step":
            break
        rate, seconds = float(words[1]), float(words[2])
        count = int(rate * seconds)
        if not cycle:
            count = min(count, len(frames) - position)
        sent, elapsed = send_at_rate(sock.send, frames, position, count, rate)
        position += sent
        print(f"stepped {sent} {elapsed!r}", flush=True)
    sock.close()
    return 0


def send_tcp(frames: Sequence[bytes], port: int, duration: float, connections: int) -> int:
    """Stream the frames over `connections` connections (batched writes) for `duration` s."""
    socks = [_connect("tcp", port) for _ in range(connections)]
    batch = 64
    batches = [b"".join(frames[i : i + batch]) for i in range(0, len(frames), batch)]
    deadline = time.monotonic() + duration
    sent = 0
    for index, chunk in enumerate(batches):
        if time.monotonic() >= deadline:
            break
        socks[index % connections].sendall(chunk)
        sent += min(batch, len(frames) - index * batch)
    for sock in socks:
        sock.close()
    return sent


def send_tcp_cycle(frames: Sequence[bytes], port: int, duration: float, connections: int) -> int:
    """As `send_tcp` but cycling over the frames until `duration` ends (for the counter)."""
    socks = [_connect("tcp", port) for _ in range(connections)]
    chunk = b"".join(frames[:256])
    deadline = time.monotonic() + duration
    sent = 0
    index = 0
    while time.monotonic() < deadline:
        socks[index % connections].sendall(chunk)
        sent += min(256, len(frames))
        index += 1
    for sock in socks:
        sock.close()
    return sent


def _connect(transport: str, port: int) -> socket.socket:
    if transport == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect(("127.0.0.1", port))
    return sock


def run_sender(arguments: argparse.Namespace) -> int:
    frames = build_frames(
        arguments.meters, arguments.frames, seed=arguments.seed, first_ic=arguments.first_ic
    )
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    if arguments.mode == "steps":
        return run_steps(frames, arguments.port, arguments.cycle)
    started = time.monotonic()
    times: list[float] = []
    if arguments.mode == "paced":
        sent, times = send_paced(frames, arguments.port, arguments.rate, arguments.transport)
    elif arguments.transport == "udp":
        sent = send_udp_closed(frames, arguments.port, arguments.duration, arguments.cycle)
    elif arguments.cycle:
        sent = send_tcp_cycle(frames, arguments.port, arguments.duration, arguments.connections)
    else:
        sent = send_tcp(frames, arguments.port, arguments.duration, arguments.connections)
    elapsed = time.monotonic() - started
    if arguments.times_out:
        with open(arguments.times_out, "w") as handle:
            for frame, moment in zip(frames, times, strict=False):
                handle.write(f"{frame_id(frame)} {moment!r}\n")
    print(f"sent {sent} {elapsed!r} {sum(map(len, frames[:sent])) if sent else 0}", flush=True)
    return 0


# --- bare baselines --------------------------------------------------------------------------


def push_verifier(meters: int, seed: int) -> Callable[[bytes], bool]:
    """The security work every push needs and nothing more: True when `datagram` is a
    wrapper frame whose ciphered push names a known meter and authenticates.

    Wrapper check, `peel`, key lookup by system title, GCM tag verification and
    decryption (`Envelope.open`); the keys are those of the key file the daemon
    gets (`make_meters`, as bench/ingest.py writes it).
    """
    from dlmsd.protocol.errors import DlmsError
    from dlmsd.protocol.push import peel
    from dlmsd.protocol.wrapper import decode_datagram
    from dlmsd.service.simulator import make_meters

    ciphers = {meter.system_title: meter.cipher for meter in make_meters(meters, seed)}

    def verify(datagram: bytes) -> bool:
        try:
            envelope = peel(decode_datagram(datagram).apdu)
            title = envelope.system_title
            cipher = ciphers.get(title) if title is not None else None
            if cipher is None:
                return False
            envelope.open(cipher)
        except DlmsError:
            return False
        return True

    return verify


def run_receiver(role: str, meters: int = 1000, seed: int = 0) -> int:
    """A bare Twisted receiver (`udp-counter`, `tcp-counter` or `udp-verify`); answers
    ``?`` on stdin with ``count TAKEN TIME RECEIVED REJECTED``."""
    from twisted.internet import reactor as default_reactor
    from twisted.internet import stdio
    from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
    from twisted.protocols.basic import LineReceiver

    reactor: Any = default_reactor
    counted = [0]
    rejected = [0]

    class CountDatagrams(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            counted[0] += 1

    class VerifyDatagrams(DatagramProtocol):
        def __init__(self, verify: Callable[[bytes], bool]) -> None:
            self.verify = verify

        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            if self.verify(datagram):
                counted[0] += 1
            else:
                rejected[0] += 1

    class CountFrames(Protocol):
        """Splits the wrapper stream on its headers (the least any TCP listener must
        do) and counts the frames; nothing is decoded."""

        def __init__(self) -> None:
            self.buffer = b""

        def dataReceived(self, data: bytes) -> None:
            buffer = self.buffer + data
            start, size = 0, len(buffer)
            while size - start >= 8:
                end = start + 8 + int.from_bytes(buffer[start + 6 : start + 8], "big")
                if end > size:
                    break
                start = end
                counted[0] += 1
            self.buffer = buffer[start:]

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            if line.strip() == b"?":
                taken, refused = counted[0], rejected[0]
                self.sendLine(  # type: ignore[no-untyped-call]
                    f"count {taken} {time.monotonic()!r} {taken + refused} {refused}".encode()
                )
            elif line.strip() == b"quit":
                reactor.stop()

        def connectionLost(self, reason: object = None) -> None:
            if reactor.running:
                reactor.stop()

    if role == "tcp-counter":
        port = reactor.listenTCP(0, Factory.forProtocol(CountFrames), interface="127.0.0.1")
    else:
        from dlmsd.service.config import DEFAULT_UDP_RECEIVE_BUFFER
        from dlmsd.service.udp import set_receive_buffer

        protocol: DatagramProtocol = (
            VerifyDatagrams(push_verifier(meters, seed))
            if role == "udp-verify"
            else CountDatagrams()
        )
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1", maxPacketSize=65535)
        # The same receive buffer as the daemon's listener, so both absorb bursts alike.
        set_receive_buffer(port, DEFAULT_UDP_RECEIVE_BUFFER)
    print(f"port {port.getHost().port}", flush=True)
    stdio.StandardIO(Control())  # type: ignore[no-untyped-call]
    reactor.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    roles = parser.add_subparsers(dest="role", required=True)
    send = roles.add_parser("send")
    send.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--meters", type=int, default=1000)
    send.add_argument("--frames", type=int, default=100_000)
    send.add_argument("--seed", type=int, default=0)
    send.add_argument("--first-ic", type=int, default=1)
    send.add_argument("--mode", choices=("closed", "paced", "steps"), default="closed")
    send.add_argument("--rate", type=float, default=1000.0)
    send.add_argument("--duration", type=float, default=3.0)
    send.add_argument("--connections", type=int, default=4)
    send.add_argument("--cycle", action="store_true", help="reuse frames (bare counters)")
    send.add_argument("--times-out", help="write '<record id> <send time>' lines here")
    roles.add_parser("udp-counter")
    roles.add_parser("tcp-counter")
    verify = roles.add_parser("udp-verify")
    verify.add_argument("--meters", type=int, default=1000)
    verify.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    if arguments.role == "send":
        return run_sender(arguments)
    if arguments.role == "udp-verify":
        return run_receiver(arguments.role, arguments.meters, arguments.seed)
    return run_receiver(arguments.role)


if __name__ == "__main__":
    sys.exit(main())
