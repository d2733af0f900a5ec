"""General Block Transfer inside HDLC pushes: the block rules, on real captures and
synthetic streams (random splits, restarts, gaps, duplicates, truncation)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.errors import DlmsError, LengthError
from dlmsd.protocol.framing import (
    StreamApdu,
    StreamError,
    StreamNotice,
    detect,
)
from dlmsd.protocol.gbt import GeneralBlockTransfer
from dlmsd.protocol.gbt_push import GbtPushAssembler, MessageDropped
from dlmsd.protocol.hdlc.address import HdlcAddress
from dlmsd.protocol.hdlc.events import ApduReceived
from dlmsd.protocol.hdlc.frames import LLC_RESPONSE, Control, FrameKind, HdlcFrame
from dlmsd.protocol.hdlc.pushes import HdlcPushAssembler
from dlmsd.protocol.hdlc.reassembly import ReassemblyError
from tests.gbt_captures import (
    E450_DUPLICATED_BLOCK,
    field_hex,
    frames_of,
    stream_events,
)


def assemble(frames: list[HdlcFrame]) -> list[object]:
    assembler = HdlcPushAssembler()
    return [event for frame in frames for event in assembler.feed(frame)]


# --- real captures ------------------------------------------------------------------


def test_real_restarted_push_gives_the_whole_second_push_and_counts_the_first() -> None:
    # Blocks 1, 2 of one push, then 1..4 of the next (as the meter sent them).
    frames = frames_of(field_hex("e450-scs-restarted-push"))
    events = assemble(frames)
    assert [type(event) for event in events] == [MessageDropped, ApduReceived]
    dropped, received = events
    assert isinstance(dropped, MessageDropped) and isinstance(received, ApduReceived)
    assert dropped.reason == "GBT message restarted at block 1 after block 2"
    assert received.frames == 4
    # The joined APDU: a DataNotification with long-invoke-id 0x0000CBC6 and a bare
    # 12-byte date-time, whose body ends with the last block's data.
    assert received.apdu.startswith(bytes.fromhex("0F0000CBC60C07E50706020E3A10FF800000"))
    last = GeneralBlockTransfer.from_bytes(frames[-1].information)
    assert last.last_block and received.apdu.endswith(last.block_data)


def test_real_duplicated_block_refuses_the_push() -> None:
    events = assemble(frames_of(E450_DUPLICATED_BLOCK))
    assert not any(isinstance(event, ApduReceived) for event in events)
    [refused] = [event for event in events if isinstance(event, ReassemblyError)]
    assert refused.reason == "GBT block 2 after 2 (a duplicate)"
    # Blocks 4 and 3 of the refused push are skipped quietly.
    assert len(events) == 1


@pytest.mark.parametrize(
    ("slug", "blocks"),
    [
        ("e450-scs-vse-2026", 4),
        ("e450-scs-alternative-config", 3),
        ("e450-scs-extended-registers", 3),
        ("e570-scs-encrypted", 5),
        ("e570-scs-vse-2026", 4),
        ("e570-scs-vse-2026-under-load", 4),
    ],
)
def test_real_gbt_pushes_join_at_any_split(slug: str, blocks: int) -> None:
    data = field_hex(slug)
    [whole] = stream_events(data)
    assert isinstance(whole, StreamApdu) and whole.framing == "hdlc"
    assert whole.apdu[:1] in (b"\x0f", b"\xdb")
    for step in (1, 7, 50):
        assert stream_events(data, list(range(0, len(data), step))) == [whole]
    assert len(frames_of(data)) == blocks
    assert detect(data) == "hdlc"


def test_real_capture_truncated_anywhere_never_accepts_a_part() -> None:
    data = field_hex("e450-scs-vse-2026")
    [whole] = stream_events(data)
    for end in range(0, len(data) - 1, 3):
        events = stream_events(data[:end])
        assert whole not in events
        assert not any(isinstance(event, StreamApdu) for event in events)
        if end > 20:
            assert isinstance(events[-1], StreamError)


def test_capture_starting_mid_push_skips_to_the_next_block_1() -> None:
    first = field_hex("e450-scs-vse-2026")
    second = field_hex("e450-scs-alternative-config")
    frames = frames_of(first)
    tail = b"".join(frame.to_bytes() for frame in frames[2:])
    events = stream_events(tail + second)
    assert [type(event) for event in events] == [StreamNotice, StreamApdu]
    assert "GBT block 3 without its block 1" in events[0].reason  # type: ignore[union-attr]
    assert events[1] == stream_events(second)[0]


# --- the block rules, synthetic (built with dlmsd's own encoders) ----------------------


def block(number: int, data: bytes = b"x", *, last: bool = False) -> GeneralBlockTransfer:
    return GeneralBlockTransfer(last, not last, 0, number, 0, data)


def feed_all(assembler: GbtPushAssembler, blocks: list[GeneralBlockTransfer]) -> list[object]:
    return [event for item in blocks for event in assembler.feed(item)]


@pytest.mark.parametrize(
    ("numbers", "reason"),
    [
        ([1, 2, 4], "GBT block 4 after 2 (block 3 missing)"),
        ([1, 2, 2], "GBT block 2 after 2 (a duplicate)"),
        ([1, 3, 2], "GBT block 3 after 1 (block 2 missing)"),
        ([1, 2, 3, 2], "GBT block 2 after 3 (out of order)"),
        ([1, 9], "GBT block 9 after 1 (blocks 2..8 missing)"),
        ([1, 0], "GBT block 0 after 1 (out of order)"),
    ],
)
def test_gap_duplicate_and_order_refuse_with_a_clear_reason(
    numbers: list[int], reason: str
) -> None:
    assembler = GbtPushAssembler()
    events = feed_all(assembler, [block(n) for n in numbers] + [block(len(numbers) + 1)])
    assert [event.reason for event in events] == [reason]  # type: ignore[attr-defined]
    assert isinstance(events[0], ReassemblyError)
    assert not assembler.pending
    # The next block 1 starts afresh.
    assert feed_all(assembler, [block(1, b"a"), block(2, b"b", last=True)]) == [
        ApduReceived(b"ab", 2)
    ]


def test_size_bound_refuses_and_skips_the_rest() -> None:
    assembler = GbtPushAssembler(max_size=10)
    events = feed_all(assembler, [block(1, b"12345"), block(2, b"67890"), block(3, b"x")])
    assert len(events) == 1 and isinstance(events[0], ReassemblyError)
    assert isinstance(events[0].error, LengthError)
    assert events[0].reason == "GBT message exceeds 10 bytes"
    assert feed_all(assembler, [block(4, b"", last=True)]) == []


def test_a_plain_apdu_in_the_middle_refuses_the_open_message() -> None:
    destination, source = HdlcAddress.client(16), HdlcAddress.server(1, 17)
    control = Control(FrameKind.UI)

    def frame(information: bytes) -> HdlcFrame:
        return HdlcFrame(destination, source, control, information)

    assembler = HdlcPushAssembler()
    events = assembler.feed(frame(LLC_RESPONSE + block(1, b"\x0f\x00").to_bytes()))
    assert events == [] and assembler.pending
    events = assembler.feed(frame(LLC_RESPONSE + b"\x0f\x00\x00\x00\x01\x00\x00"))
    assert [type(event) for event in events] == [ReassemblyError, ApduReceived]
    assert events[0].reason == "GBT message interrupted by another APDU"  # type: ignore[union-attr]
    assert not assembler.pending


def test_a_bad_gbt_block_is_refused_not_raised() -> None:
    assembler = GbtPushAssembler()
    assembler.feed(block(1))
    [event] = assembler.feed_bytes(b"\xe0\x40\x00\x02\x00\x00\x05ab")
    assert isinstance(event, ReassemblyError)
    assert event.reason.startswith("bad GBT block: ")
    assert event.dropped_bytes == 1


# --- hypothesis: random messages, mutations and splits ----------------------------------

MUTATIONS = ("whole", "drop", "duplicate", "swap", "truncate")


@st.composite
def message_plans(draw: st.DrawFn) -> list[tuple[bytes, list[bytes], str, int]]:
    """Messages (APDU, its blocks, a mutation, the block it hits)."""
    plans = []
    for _ in range(draw(st.integers(1, 5))):
        apdu = draw(st.binary(min_size=1, max_size=300))
        size = draw(st.integers(1, 120))
        chunks = [apdu[i : i + size] for i in range(0, len(apdu), size)]
        mutation = draw(st.sampled_from(MUTATIONS))
        if mutation == "swap" and len(chunks) < 2:
            mutation = "whole"
        if mutation == "truncate" and len(chunks) < 2:
            mutation = "drop"
        limit = len(chunks) - 1 if mutation in ("swap", "truncate") else len(chunks)
        where = draw(st.integers(1, max(limit, 1)))
        if plans and _left_open(plans[-1]) and mutation in ("drop", "swap") and where == 1:
            # Blocks carry no message id: the tail of this message (block 2...) would
            # continue the open one as if it were its own, a whole-looking message.
            # Only a block 1 can tell them apart; keep it first here.
            mutation = "whole"
        plans.append((apdu, chunks, mutation, where))
    return plans


def _left_open(plan: tuple[bytes, list[bytes], str, int]) -> bool:
    """The message ends without its last block on the wire."""
    _, chunks, mutation, where = plan
    if mutation == "swap":
        # Two blocks swapped: 2 then 1, and block 1 is left waiting for its tail.
        return len(chunks) == 2
    return mutation == "truncate" or (mutation == "drop" and where == len(chunks) > 1)


def wire(plans: list[tuple[bytes, list[bytes], str, int]]) -> tuple[bytes, list[bytes]]:
    """HDLC frames of every message as mutated, and the APDUs that must come out."""
    destination, source = HdlcAddress.client(16), HdlcAddress.server(1, 17)
    control = Control(FrameKind.UI)
    stream = b""
    expected: list[bytes] = []
    for apdu, chunks, mutation, where in plans:
        blocks = [
            (n, GeneralBlockTransfer(n == len(chunks), n < len(chunks), 0, n, 0, chunk))
            for n, chunk in enumerate(chunks, 1)
        ]
        if mutation == "drop":
            del blocks[where - 1]
        elif mutation == "duplicate":
            blocks.insert(where, blocks[where - 1])
        elif mutation == "swap":
            blocks[where - 1], blocks[where] = blocks[where], blocks[where - 1]
        elif mutation == "truncate":
            del blocks[where:]
        for number, item in blocks:
            information = (LLC_RESPONSE if number == 1 else b"") + item.to_bytes()
            stream += HdlcFrame(destination, source, control, information).to_bytes()
        # What must come out: a whole message. A repeated block 1 restarts the message, a
        # repeated last block follows a message already complete: it still comes out
        # (twice when that one block is the whole message).
        if mutation == "whole":
            expected.append(apdu)
        elif mutation == "duplicate" and where in (1, len(chunks)):
            expected += [apdu] * (2 if len(chunks) == 1 else 1)
    return stream, expected


@settings(max_examples=300, deadline=None)
@given(message_plans(), st.lists(st.integers(0, 4000), max_size=8))
def test_only_whole_messages_come_out_at_any_split(
    plans: list[tuple[bytes, list[bytes], str, int]], cuts: list[int]
) -> None:
    stream, expected = wire(plans)
    events = stream_events(stream, cuts)
    assert [e.apdu for e in events if isinstance(e, StreamApdu)] == expected
    assert all(
        isinstance(event.error, DlmsError) for event in events if isinstance(event, StreamError)
    )


@settings(max_examples=200, deadline=None)
@given(message_plans(), st.integers(0, 4000), st.binary(max_size=40))
def test_truncated_or_noisy_streams_never_raise(
    plans: list[tuple[bytes, list[bytes], str, int]], end: int, noise: bytes
) -> None:
    stream, expected = wire(plans)
    events = stream_events(noise + stream[:end])
    apdus = [e.apdu for e in events if isinstance(e, StreamApdu)]
    # Whatever comes out was whole: an in-order subsequence of the expected APDUs.
    remaining = iter(expected)
    assert all(any(apdu == candidate for candidate in remaining) for apdu in apdus)
    assert len(events) <= len(noise) + end + 2
