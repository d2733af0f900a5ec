"""`python -m bench`: run the registered benchmarks, print one table, write latest.json.

A benchmark is a function registered with `@benchmark(name, description)` that
takes the run settings and returns `Row`s: a dlmsd figure, the peer or ceiling
it is compared with in the same run, and their ratio (dlmsd / baseline, so
higher is better for rates). Benchmarks that need other processes (socket
ingest, RSS of a running daemon) start them themselves; the harness only
collects rows.

The dlmsd side of each benchmark imports lazily: while a module is still being
written the row reads "n/a (not yet available: ...)" and the peers still run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.peers import (
    Adapter,
    ProfileSummary,
    PushSummary,
    dlms_cosem_data_parser,
    dlms_cosem_profile,
    dlms_cosem_push,
    gurux_data_parser,
    gurux_push,
    package_version,
    quiet_stdout,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS_PATH = ROOT / "tests" / "data" / "published.json"
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "latest.json"

PUSH_KIND = "udp_wrapper+general_glo_ciphering_datanotification"
PUSH_TARGET_PER_SECOND = 50_000.0  # the hot-path goal for a 78-byte encrypted push

PROFILE_ROWS = 10_000
PROFILE_CAPTURE_PERIOD_MINUTES = 15


# --- results ------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Row:
    """One line of the table: a dlmsd figure against one baseline."""

    benchmark: str
    name: str
    figure: float | None  # None: dlmsd not available or failed (see notes)
    unit: str
    baseline: str
    baseline_figure: float | None
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        if self.figure is None or not self.baseline_figure:
            return None
        return self.figure / self.baseline_figure

    def to_json(self) -> dict[str, object]:
        return {
            **attrs.asdict(self),
            "figure": _round(self.figure),
            "baseline_figure": _round(self.baseline_figure),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
        }


def _round(value: float | None) -> float | None:
    # Rates keep one decimal; ratios and other small figures keep three.
    if value is None:
        return None
    return round(value, 1) if abs(value) >= 10 else round(value, 3)


@attrs.frozen(slots=True)
class Settings:
    """Run settings every benchmark receives."""

    duration: float  # seconds of timed work per implementation
    warmup: float  # seconds of untimed work before it


@attrs.frozen(slots=True)
class Outcome:
    """One implementation's result in one benchmark (what the JSON keeps besides rows)."""

    name: str
    version: str
    status: str  # "ok", "n/a (...)" or "failed: ..."
    rate: float | None = None
    samples: tuple[float, ...] = ()
    verifies_tag: bool | None = None
    tag_check: str = ""
    notes: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@attrs.frozen(slots=True)
class BenchmarkResult:
    rows: list[Row]
    outcomes: list[Outcome]
    details: dict[str, object] = attrs.field(factory=dict)


BenchmarkFunction = Callable[[Settings], BenchmarkResult]


@attrs.frozen(slots=True)
class Benchmark:
    name: str
    description: str
    run: BenchmarkFunction


BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str, description: str) -> Callable[[BenchmarkFunction], BenchmarkFunction]:
    """Register a benchmark function under `name` (rows appear in registration order)."""

    def register(function: BenchmarkFunction) -> BenchmarkFunction:
        BENCHMARKS[name] = Benchmark(name, description, function)
        return function

    return register


# --- timing -------------------------------------------------------------------------------


ROUNDS = 10


def time_pass(decode: Callable[[bytes], object], items: Sequence[bytes], seconds: float) -> float:
    """Items per second of `decode` cycling over `items` for about `seconds` (at least one pass).

    The clock is read once per pass over `items`, not per call.
    """
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for item in items:
            decode(item)
        done += len(items)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def measure_interleaved(
    adapters: Sequence[Adapter], items: Sequence[bytes], settings: Settings
) -> list[tuple[float, ...]]:
    """Per adapter, its items-per-second in each of `ROUNDS` rounds, on this thread.

    Rounds take turns between the implementations (A B C, A B C, ...), so a
    noisy moment on a shared machine hits all of them alike instead of the one
    that happened to run then; the median of the rounds is the figure.
    """
    slice_seconds = settings.duration / ROUNDS
    samples: list[list[float]] = [[] for _ in adapters]
    with quiet_stdout():
        for adapter in adapters:
            time_pass(adapter.decode, items, settings.warmup)
        gc.collect()
        for _ in range(ROUNDS):
            for index, adapter in enumerate(adapters):
                samples[index].append(time_pass(adapter.decode, items, slice_seconds))
    return [tuple(rates) for rates in samples]


def call_quietly(decode: Callable[[bytes], Any], item: bytes) -> Any:
    with quiet_stdout():
        return decode(item)


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 160 else text[:157] + "..."


def load_adapter(factory: Callable[[], Adapter], name: str) -> Adapter | Outcome:
    """Build an adapter, or an "n/a" / "failed" outcome saying why it cannot be built."""
    try:
        return factory()
    except ImportError as error:  # a module still being written, or a peer not installed
        return Outcome(name, "?", f"n/a (not yet available: {describe(error)})")
    except Exception as error:  # an API mismatch must not stop the other rows
        return Outcome(name, "?", f"failed: setting up: {describe(error)}")


def verify(
    adapter: Adapter, items: Sequence[bytes], expected: Sequence[PushSummary | ProfileSummary]
) -> str | None:
    """None when the adapter decodes every item to what is expected, else the reason."""
    for index, (item, want) in enumerate(zip(items, expected, strict=True)):
        try:
            got = adapter.summarize(call_quietly(adapter.decode, item))
        except Exception as error:
            return f"item {index}: {describe(error)}"
        wrong = got.mismatches(want)
        if wrong:
            details = ", ".join(f"{name}={getattr(got, name)!r:.60}" for name in wrong)
            return f"item {index}: wrong {details}"
    return None


def prepare(
    adapter: Adapter | Outcome,
    items: Sequence[bytes],
    expected: Sequence[PushSummary | ProfileSummary],
    forged: bytes | None,
) -> Outcome:
    """Verify one implementation's answers and probe it with the forged item (untimed)."""
    if isinstance(adapter, Outcome):
        return adapter
    reason = verify(adapter, items, expected)
    if reason is not None:
        return Outcome(adapter.name, adapter.version, f"failed: {reason}", notes=adapter.notes)
    verifies_tag, tag_check = (None, "") if forged is None else probe_tag_check(adapter, forged)
    return Outcome(
        adapter.name,
        adapter.version,
        "ok",
        verifies_tag=verifies_tag,
        tag_check=tag_check,
        notes=adapter.notes,
    )


def compete(
    candidates: Sequence[tuple[str, Callable[[], Adapter]]],
    items: Sequence[bytes],
    expected: Sequence[PushSummary | ProfileSummary],
    settings: Settings,
    units_per_item: int = 1,
    forged: bytes | None = None,
) -> list[Outcome]:
    """Build, verify and probe every (name, factory), then time the good ones together."""
    adapters = [load_adapter(factory, name) for name, factory in candidates]
    outcomes = [prepare(adapter, items, expected, forged) for adapter in adapters]
    ready = [
        (index, adapter)
        for index, (adapter, outcome) in enumerate(zip(adapters, outcomes, strict=True))
        if isinstance(adapter, Adapter) and outcome.ok
    ]
    rates = measure_interleaved([adapter for _, adapter in ready], items, settings)
    for (index, _), samples in zip(ready, rates, strict=True):
        scaled = tuple(rate * units_per_item for rate in samples)
        outcomes[index] = attrs.evolve(
            outcomes[index], rate=statistics.median(scaled), samples=scaled
        )
    return outcomes


def probe_tag_check(adapter: Adapter, forged: bytes) -> tuple[bool, str]:
    """Does the implementation refuse a frame whose GCM tag has one bit flipped?"""
    try:
        call_quietly(adapter.decode, forged)
    except Exception as error:
        return True, f"refused: {describe(error)}"
    return False, "accepted a frame with a flipped tag bit and decoded it"


# --- realistic pushes: the public decode path on what meters send --------------------------

# (label, registers, framing): synthetic pushes built with dlmsd's encoders (bench/realistic.py)
REALISTIC_SETS = (
    ("12 values", 12, "apdu"),
    ("90 registers", 90, "apdu"),
    ("200 registers", 200, "apdu"),
    ("12 values, 3 HDLC segments", 12, "hdlc3"),
    ("12 values, GBT in HDLC (3 blocks)", 12, "gbt3"),
)


@benchmark(
    "push_realistic",
    "decode + verify + decrypt + readings of realistic pushes (synthetic, dlmsd's encoders: "
    "clock + N {OBIS, value, {scaler, unit}} in general-glo-ciphering, suite 0), as one APDU, "
    "3 HDLC segments or 3 GBT blocks in HDLC; dlmsd's public decode_capture against "
    "dlms-cosem's value tree; and the cost per value at 200 registers against 12",
)
def bench_push_realistic(settings: Settings) -> BenchmarkResult:
    from bench import realistic

    rows: list[Row] = []
    outcomes: list[Outcome] = []
    details: dict[str, object] = {}
    for label, registers, framing in REALISTIC_SETS:
        pushes = realistic.push_set(label, registers, framing=framing)
        expected = realistic.expected_summaries(pushes)
        peer = _dlms_cosem_for(realistic, registers, framing)
        ours, theirs = compete(
            [("dlmsd", lambda f=framing: realistic.dlmsd_decode(f)), ("dlms-cosem", peer)],
            pushes.frames,
            expected,
            settings,
            forged=pushes.forged,
        )
        row = comparison_row("push_realistic", ours, theirs, "pushes/s")
        notes = f"{pushes.sizes}; {row.notes}"
        if framing == "gbt3":
            notes += (
                "; dlms-cosem reassembles no GBT push: its figure is the same push as"
                " 3 HDLC segments"
            )
        rows.append(attrs.evolve(row, name=f"{label}: dlmsd vs dlms-cosem", notes=notes))
        outcomes += [
            attrs.evolve(ours, name=f"dlmsd {label}"),
            attrs.evolve(theirs, name=f"dlms-cosem {label}"),
        ]
        details[label] = {"frame_bytes": pushes.sizes, "registers": registers, "framing": framing}
    rows.append(_cost_per_value_row(realistic, settings))
    return BenchmarkResult(rows, outcomes, details)


def _dlms_cosem_for(realistic: Any, registers: int, framing: str) -> Callable[[], Adapter]:
    """dlms-cosem's adapter for a set; GBT frames are decoded as the same pushes in HDLC
    segments (looked up, untimed work is one dict access)."""
    if framing != "gbt3":
        return lambda: realistic.dlms_cosem_decode(framing)

    def factory() -> Adapter:
        inner = realistic.dlms_cosem_decode("hdlc3")
        gbt = realistic.push_set("gbt", registers, framing="gbt3")
        hdlc = realistic.push_set("hdlc", registers, framing="hdlc3")
        same = dict(zip((*gbt.frames, gbt.forged), (*hdlc.frames, hdlc.forged), strict=True))
        return attrs.evolve(inner, decode=lambda frame: inner.decode(same[frame]))

    return factory


def _cost_per_value_row(realistic: Any, settings: Settings) -> Row:
    """Values per second of dlmsd's decode_capture at 200 registers against at 12, timed
    interleaved (no cliff: the ratio should stay above 1/1.3 = 0.77)."""
    small = realistic.push_set("12", 12)
    large = realistic.push_set("200", 200)
    count = len(small.frames)

    def by_index(pushes: Any) -> Adapter:
        inner = realistic.dlmsd_decode("apdu")
        return attrs.evolve(inner, decode=lambda item: inner.decode(pushes.frames[item[0]]))

    items = [bytes((index,)) for index in range(count)]
    rates = measure_interleaved([by_index(small), by_index(large)], items, settings)
    per_value_small = statistics.median(rates[0]) * small.registers
    per_value_large = statistics.median(rates[1]) * large.registers
    return Row(
        "push_realistic",
        "no cliff: values/s at 200 registers vs at 12",
        per_value_large,
        "values/s",
        "dlmsd at 12 values",
        per_value_small,
        f"{large.sizes} vs {small.sizes}; decode_capture with readings; cost per value within"
        " 1.3x of the 12-value push means a ratio of at least 0.77",
    )


# --- push: decode + verify + decrypt ------------------------------------------------------


@attrs.frozen(slots=True)
class PushVector:
    source: str
    frame: bytes
    encryption_key: bytes = attrs.field(repr=False)
    authentication_key: bytes = attrs.field(repr=False)
    system_title: bytes
    expected: PushSummary


def load_push_vectors() -> list[PushVector]:
    """The published 78-byte UDP general-glo-ciphering pushes, with what they decode to."""
    with VECTORS_PATH.open() as file:
        published = json.load(file)
    vectors = []
    for entry in published:
        if entry["kind"] != PUSH_KIND:
            continue
        keys = entry["keys"]
        plaintext = bytes.fromhex(entry["expected"]["derived"]["plaintext_hex"])
        vectors.append(
            PushVector(
                source=entry["source"],
                frame=bytes.fromhex(entry["hex"]),
                encryption_key=bytes.fromhex(keys["encryption_key"]),
                authentication_key=bytes.fromhex(keys["authentication_key"]),
                system_title=bytes.fromhex(keys["system_title"]),
                expected=summarize_plaintext(
                    plaintext, bytes.fromhex(keys["system_title"]), keys["invocation_counter"]
                ),
            )
        )
    if not vectors:
        raise RuntimeError(f"no {PUSH_KIND} vectors in {VECTORS_PATH}")
    return vectors


def summarize_plaintext(
    plaintext: bytes, system_title: bytes | None = None, invocation_counter: int | None = None
) -> PushSummary:
    """Read a DataNotification plaintext by hand (0F, invoke id, date-time, body)."""
    if plaintext[:1] != b"\x0f":
        raise ValueError(f"not a DataNotification: {plaintext[:8].hex()}")
    body = plaintext[6:] if plaintext[5] == 0 else plaintext[6 + plaintext[5] :]
    # These pushes carry one short octet-string as the body.
    if body[0] != 0x09 or body[1] >= 0x80 or len(body) != 2 + body[1]:
        raise ValueError(f"body is not one short octet-string: {body[:8].hex()}")
    return PushSummary(
        invoke_id=int.from_bytes(plaintext[1:5], "big"),
        body=body,
        body_value=body[2:],
        system_title=system_title,
        invocation_counter=invocation_counter,
    )


def flip_tag_bit(frame: bytes) -> bytes:
    """The same frame with one bit of its (trailing, 12-byte) GCM tag flipped."""
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


def dlmsd_version() -> str:
    import dlmsd

    return str(getattr(dlmsd, "__version__", "?"))


def dlmsd_push(vector: PushVector) -> Adapter:
    """dlmsd: `decode_datagram` -> `decode_push` (peel, verify + decrypt, DataNotification).

    Imported here, not at the top, so the bench runs before dlmsd's push
    pipeline exists. Adjust this function if the final signatures differ.
    """
    from dlmsd.protocol.push import decode_push
    from dlmsd.protocol.security import Suite0Cipher
    from dlmsd.protocol.wrapper import decode_datagram

    cipher = Suite0Cipher(vector.encryption_key, vector.authentication_key)
    ciphers = {vector.system_title: cipher}

    def cipher_for(system_title: bytes | None) -> Suite0Cipher | None:
        return ciphers.get(system_title) if system_title is not None else None

    def decode(frame: bytes) -> Any:
        return decode_push(decode_datagram(frame).apdu, cipher_for)

    def summarize(push: Any) -> PushSummary:
        body = push.notification.body
        return PushSummary(
            invoke_id=push.notification.invoke_id,
            body=body.to_bytes(),
            body_value=body.value,
            system_title=push.system_title,
            invocation_counter=push.invocation_counter,
        )

    return Adapter("dlmsd", dlmsd_version(), decode, summarize, "incl. readings")


def aes_gcm_ceiling(vector: PushVector) -> Adapter:
    """The floor cost: only AES-GCM verify+decrypt (`cryptography`) at fixed offsets.

    No parsing beyond slicing this one frame layout (8-byte wrapper, DB 08
    title(8) length SC IC(4) ciphertext tag(12)), one cached AES key object:
    what any Python implementation must at least spend per frame.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    aes = algorithms.AES(vector.encryption_key)
    authentication_key = vector.authentication_key

    def decode(frame: bytes) -> bytes:
        decryptor = Cipher(
            aes, modes.GCM(frame[10:18] + frame[20:24], frame[-12:], 12)
        ).decryptor()
        decryptor.authenticate_additional_data(frame[19:20] + authentication_key)
        return decryptor.update(frame[24:-12]) + decryptor.finalize()

    def summarize(plaintext: bytes) -> PushSummary:
        return summarize_plaintext(plaintext)

    return Adapter(
        "AES-GCM alone (ceiling)",
        package_version("cryptography"),
        decode,
        summarize,
        "cryptography Cipher/GCM, no parsing",
    )


@benchmark(
    "push_decrypt",
    "decode + verify + decrypt of the four published 78-byte UDP general-glo-ciphering "
    "DataNotification pushes (single core, one process)",
)
def bench_push_decrypt(settings: Settings) -> BenchmarkResult:
    vectors = load_push_vectors()
    first = vectors[0]
    frames = [vector.frame for vector in vectors]
    expected = [vector.expected for vector in vectors]

    ek, ak = first.encryption_key, first.authentication_key
    ours, *peers = compete(
        [
            ("dlmsd", lambda: dlmsd_push(first)),
            ("dlms-cosem", lambda: dlms_cosem_push(ek, ak)),
            ("gurux-dlms", lambda: gurux_push(ek, ak, first.system_title)),
            ("AES-GCM alone (ceiling)", lambda: aes_gcm_ceiling(first)),
        ],
        frames,
        expected,
        settings,
        forged=flip_tag_bit(first.frame),
    )
    rows = [comparison_row("push_decrypt", ours, peer, "frames/s") for peer in peers]
    rows.append(
        Row(
            "push_decrypt",
            "dlmsd vs target",
            ours.rate,
            "frames/s",
            "target",
            PUSH_TARGET_PER_SECOND,
            figure_notes(ours),
        )
    )
    return BenchmarkResult(
        rows,
        [ours, *peers],
        {"frames": len(frames), "frame_bytes": len(first.frame), "sources": _sources(vectors)},
    )


def _sources(vectors: Sequence[PushVector]) -> list[str]:
    return [f"tests/data/published.json: {vector.source}" for vector in vectors]


def comparison_row(benchmark_name: str, ours: Outcome, peer: Outcome, unit: str) -> Row:
    """A row comparing dlmsd's outcome with one peer's, notes saying what is missing."""
    notes = [figure_notes(ours)]
    if not peer.ok:
        notes.append(f"{peer.name}: {peer.status}")
    if peer.verifies_tag is not None:
        notes.append(f"{peer.name} verifies_tag={str(peer.verifies_tag).lower()}")
    if peer.notes:
        notes.append(f"{peer.name}: {peer.notes}")
    return Row(
        benchmark_name,
        f"dlmsd vs {peer.name}",
        ours.rate,
        unit,
        f"{peer.name} {peer.version}".strip(),
        peer.rate,
        "; ".join(note for note in notes if note),
    )


def figure_notes(ours: Outcome) -> str:
    if not ours.ok:
        return f"dlmsd {ours.status}"
    if ours.verifies_tag is False:
        return "dlmsd verifies_tag=false: IT ACCEPTS FORGED FRAMES"
    if ours.verifies_tag:
        return "dlmsd verifies_tag=true"
    return ""


# --- profile buffer parsing ---------------------------------------------------------------


def build_profile_buffer(rows: int) -> tuple[bytes, ProfileSummary]:
    """A Profile Generic buffer: array of `rows` structures {date-time octet-string,
    status unsigned, 4 x double-long-unsigned}, 15-minute capture period, UTC+1.
    Returns the A-XDR bytes and what its last row holds (date-time left out)."""
    start = datetime.datetime(2024, 1, 1)
    period = datetime.timedelta(minutes=PROFILE_CAPTURE_PERIOD_MINUTES)
    parts = [b"\x01\x82" + rows.to_bytes(2, "big")]
    last: tuple[int, ...] = ()
    for index in range(rows):
        stamp = start + index * period
        date_time = (
            stamp.year.to_bytes(2, "big")
            + bytes([stamp.month, stamp.day, stamp.isoweekday()])
            + bytes([stamp.hour, stamp.minute, stamp.second, 0])
            + (-60).to_bytes(2, "big", signed=True)  # deviation: local UTC+1 (Blue Book sign)
            + b"\x00"
        )
        status = index % 3
        registers = (
            1_000_000 + 7 * index,
            2_000_000 + 3 * index,
            index * 11 % 100_000,
            4_000_000_000 - index,
        )
        parts.append(
            b"\x02\x06\x09\x0c"
            + date_time
            + bytes([0x11, status])
            + b"".join(b"\x06" + value.to_bytes(4, "big") for value in registers)
        )
        last = (status, *registers)
    return b"".join(parts), ProfileSummary(rows, 6, last)


def dlmsd_profile() -> Adapter:
    """dlmsd: `decode_data` on the whole buffer, the typed `Data` tree."""
    from dlmsd.protocol.axdr import decode_data

    def decode(buffer: bytes) -> Any:
        value, end = decode_data(buffer, 0)
        if end != len(buffer):
            raise ValueError(f"decode_data stopped at {end} of {len(buffer)}")
        return value

    def summarize(array: Any) -> ProfileSummary:
        last = array.value[-1].value
        return ProfileSummary(len(array.value), len(last), tuple(c.value for c in last[1:]))

    return Adapter("dlmsd", dlmsd_version(), decode, summarize, "typed Data tree")


@benchmark(
    "profile_parse",
    f"A-XDR decode of a {PROFILE_ROWS:,}-row, 6-column Profile Generic buffer "
    "(date-time octet-string, unsigned, 4 x double-long-unsigned)",
)
def bench_profile_parse(settings: Settings) -> BenchmarkResult:
    buffer, expected = build_profile_buffer(PROFILE_ROWS)

    ours, *peers = compete(
        [
            ("dlmsd", dlmsd_profile),
            (
                "dlms-cosem ProfileGenericBufferParser",
                lambda: dlms_cosem_profile(6, PROFILE_CAPTURE_PERIOD_MINUTES),
            ),
            ("dlms-cosem DlmsDataParser", dlms_cosem_data_parser),
            ("gurux-dlms _GXCommon.getData", gurux_data_parser),
        ],
        [buffer],
        [expected],
        settings,
        units_per_item=PROFILE_ROWS,
    )
    rows = [comparison_row("profile_parse", ours, peer, "rows/s") for peer in peers]
    return BenchmarkResult(rows, [ours, *peers], {"buffer_bytes": len(buffer)})


# --- push to record text: the full path vs a compiled shape -------------------------------

RECORD_METERS = 1000


@benchmark(
    "push_record",
    "decrypted push -> record JSON text, simulator gas and electricity pushes of 1,000 "
    "meters: the full path (typed tree, readings, text) vs compiled shapes "
    "(dlmsd.cosem.shapes), one core",
)
def bench_push_record(settings: Settings) -> BenchmarkResult:
    from datetime import UTC, datetime

    from dlmsd.cosem.shapes import ShapeCache
    from dlmsd.protocol.push import Envelope, open_decrypted
    from dlmsd.service.simulator import build_notification, make_meter

    now = datetime.now(UTC)
    fleet = [make_meter(index, 0) for index in range(RECORD_METERS)]
    plaintexts = [build_notification(meter, 1 + index, now) for index, meter in enumerate(fleet)]
    envelopes = {
        plaintext: Envelope(plaintext, meter.system_title, 0x30, 1, b"")
        for plaintext, meter in zip(plaintexts, fleet, strict=True)
    }
    shapes = ShapeCache()

    def full(plaintext: bytes) -> str:
        return open_decrypted(envelopes[plaintext], plaintext).record_json()

    def shaped(plaintext: bytes) -> str:
        return shapes.record_json(envelopes[plaintext], plaintext)

    mismatched = sum(full(item) != shaped(item) for item in plaintexts)
    adapters = [
        Adapter("full path", dlmsd_version(), full, len),
        Adapter("compiled shapes", dlmsd_version(), shaped, len),
    ]
    full_rates, shape_rates = measure_interleaved(adapters, plaintexts, settings)
    full_rate = statistics.median(full_rates)
    shape_rate = statistics.median(shape_rates)
    notes = (
        f"{len(plaintexts)} pushes of {min(map(len, plaintexts))}-{max(map(len, plaintexts))}"
        f" bytes; texts identical: {mismatched == 0}; shapes compiled: {shapes.compiled}"
    )
    row = Row(
        "push_record",
        "record text: compiled shapes vs full path",
        shape_rate,
        "pushes/s",
        "full path (DataNotification, readings, record text)",
        full_rate,
        notes,
    )
    outcomes = [
        Outcome("compiled shapes", dlmsd_version(), "ok", shape_rate, shape_rates),
        Outcome("full path", dlmsd_version(), "ok", full_rate, full_rates),
    ]
    return BenchmarkResult([row], outcomes, {"pushes": len(plaintexts)})


# --- state backends: ingest with SQLite and PostgreSQL, 1 and 2 daemons ------------------


@benchmark(
    "state_ingest",
    "ingest pushes/s (decrypt, decode, replay check, batched commit): SQLite, and PostgreSQL "
    "with 1 and 2 daemon processes sharing one database (bench/state.py)",
)
def bench_state_ingest(settings: Settings) -> BenchmarkResult:
    from bench.state import state_ingest

    result: BenchmarkResult = state_ingest(settings)
    return result


# --- socket benchmarks (bench/ingest.py: the daemon as a subprocess on loopback) ----------


def _socket_benchmark(name: str) -> BenchmarkFunction:
    def run(settings: Settings) -> BenchmarkResult:
        from bench import ingest

        report = ingest.run(name, settings.duration)
        rows = [Row(**attrs.asdict(row)) for row in report.rows]
        return BenchmarkResult(rows, [], report.details)

    return run


def _register_socket_benchmarks() -> None:
    from bench.ingest import descriptions

    for name, description in descriptions():
        benchmark(name, description)(_socket_benchmark(name))


_register_socket_benchmarks()


# --- sinks: MQTT and HTTP next to the JSONL file (bench/sinks.py) -------------------------


def _sink_description() -> str:
    from bench.sinks import description

    return description()


@benchmark("sink_throughput", _sink_description())
def bench_sink_throughput(settings: Settings) -> BenchmarkResult:
    from bench.sinks import bench_mqtt_vs_jsonl

    rows = [Row(**attrs.asdict(row)) for row in bench_mqtt_vs_jsonl(settings.duration)]
    return BenchmarkResult(rows, [])


# --- client: a year of gas profile from the emulator, GBT vs blocks (bench/client.py) -----


def _client_description() -> str:
    from bench.client import description

    return description()


@benchmark("client_profile_read", _client_description())
def bench_client_profile_read(settings: Settings) -> BenchmarkResult:
    from bench.client import bench_profile_read

    return BenchmarkResult([Row(**row) for row in bench_profile_read(settings.duration)], [])


# --- output -------------------------------------------------------------------------------


def format_figure(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def format_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def render_table(rows: Sequence[Row]) -> str:
    """One plain-text table of every row."""
    header = ("benchmark", "comparison", "dlmsd", "unit", "baseline", "baseline fig.", "ratio")
    lines = [
        (
            row.benchmark,
            row.name,
            format_figure(row.figure),
            row.unit,
            row.baseline,
            format_figure(row.baseline_figure),
            format_ratio(row.ratio),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    right = {2, 5, 6}  # numbers

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [render(header), render(["-" * width for width in widths])]
    for row, cells in zip(rows, lines, strict=True):
        out.append(render(cells))
        if row.notes:
            out.append(f"    {row.notes}")
    return "\n".join(out)


def machine_info() -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": load,
        "cryptography": package_version("cryptography"),
    }


def outcome_to_json(outcome: Outcome) -> dict[str, object]:
    return {
        **attrs.asdict(outcome),
        "rate": _round(outcome.rate),
        "samples": [_round(sample) for sample in outcome.samples],
    }


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    """What makes the run fail: a wrong decode, or dlmsd accepting a forged tag."""
    found = [f"{o.name}: {o.status}" for o in outcomes if o.status.startswith("failed")]
    found += [
        "dlmsd accepted a forged GCM tag"
        for o in outcomes
        if o.name == "dlmsd" and o.verifies_tag is False
    ]
    return found


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=2.0, help="timed seconds per implementation (2)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.3, help="untimed seconds before timing (0.3)"
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results path")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks; exit status 1 if a peer or dlmsd row failed verification."""
    arguments = parse_arguments(argv)
    if arguments.list:
        for item in BENCHMARKS.values():
            print(f"{item.name}: {item.description}")
        return 0
    unknown = set(arguments.only or ()) - BENCHMARKS.keys()
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    selected = [b for b in BENCHMARKS.values() if not arguments.only or b.name in arguments.only]
    settings = Settings(arguments.duration, arguments.warmup)
    started = time.perf_counter()
    rows: list[Row] = []
    outcomes: list[Outcome] = []
    report: dict[str, object] = {}
    for item in selected:
        print(f"running {item.name} ...", file=sys.stderr, flush=True)
        result = item.run(settings)
        rows.extend(result.rows)
        outcomes.extend(result.outcomes)
        report[item.name] = {
            "description": item.description,
            "implementations": [outcome_to_json(outcome) for outcome in result.outcomes],
            **result.details,
        }
    elapsed = time.perf_counter() - started
    print(render_table(rows), flush=True)
    document = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "elapsed_seconds": round(elapsed, 1),
        "settings": attrs.asdict(settings),
        "machine": machine_info(),
        "rows": [row.to_json() for row in rows],
        "benchmarks": report,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {arguments.output} ({elapsed:.0f} s)", file=sys.stderr)
    problems = failures(outcomes)
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
