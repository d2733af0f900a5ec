"""General Block Transfer: the APDU codec and the sender/receiver state machines."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlmsd.protocol.errors import (
    DecodeError,
    DlmsError,
    EncodeError,
    LengthError,
    ProtocolError,
    TruncatedError,
    UnknownTagError,
)
from dlmsd.protocol.events import NEED_DATA
from dlmsd.protocol.gbt import (
    GbtReceiver,
    GbtSender,
    GeneralBlockTransfer,
    SendAck,
    TransferComplete,
    decode_general_block_transfer,
)
from tests.protocol.test_get import FAST, assert_only_dlms_errors

# A GET response long enough for several blocks (a get-response-normal with an octet-string).
APDU = bytes.fromhex("c401c10009") + bytes([100]) + bytes(range(100))


def test_gbt_apdu_layout() -> None:
    # Fact sheet section 3: E0 | block-control | block-number(2) | block-number-ack(2) | data
    block = GeneralBlockTransfer(True, False, 5, 3, 1, b"\xaa\xbb")
    raw = bytes.fromhex("e0850003000102aabb")
    assert block.to_bytes() == raw
    assert decode_general_block_transfer(raw) == block
    streaming = GeneralBlockTransfer(False, True, 63, 0xFFFF, 0, b"")
    assert streaming.to_bytes() == bytes.fromhex("e07fffff000000")
    assert streaming.block_control == 0x7F


@pytest.mark.parametrize(
    ("hex_bytes", "error"),
    [
        ("", TruncatedError),
        ("e0850003000102aa", TruncatedError),
        ("e1850003000100", UnknownTagError),
        ("e085000300010100aa", DecodeError),  # trailing byte
        ("e08500030001ff", LengthError),
        ("e0850003000182ffff", TruncatedError),
    ],
)
def test_malformed_gbt_apdu(hex_bytes: str, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        GeneralBlockTransfer.from_bytes(bytes.fromhex(hex_bytes))


def test_gbt_encode_checks_ranges() -> None:
    for bad in (
        GeneralBlockTransfer(False, False, 64, 1, 0),
        GeneralBlockTransfer(False, False, 1, 0x10000, 0),
        GeneralBlockTransfer(False, False, 1, 1, -1),
    ):
        with pytest.raises(EncodeError):
            bad.to_bytes()


# --- state machines ----------------------------------------------------------------

Network = Callable[[GeneralBlockTransfer], bool]


def run_transfer(
    sender: GbtSender,
    receiver: GbtReceiver,
    deliver: Network,
    *,
    reorder: bool = False,
    max_rounds: int = 1000,
) -> tuple[bytes, list[GeneralBlockTransfer]]:
    """Drive both ends; `deliver(block)` says whether a block gets through.

    `reorder` delivers each window backwards. Returns the reassembled APDU and
    every ack the receiver sent.
    """
    acks: list[GeneralBlockTransfer] = []
    in_flight = sender.start()
    for _ in range(max_rounds):
        answer: GeneralBlockTransfer | None = None
        for block in reversed(in_flight) if reorder else in_flight:
            if not deliver(block):
                continue
            event = receiver.receive(block)
            if isinstance(event, TransferComplete):
                return event.apdu, acks
            if isinstance(event, SendAck):
                answer = event.apdu
        if answer is None:  # silence: the receiver's timer fires
            answer = receiver.on_timeout()
        acks.append(answer)
        in_flight = sender.receive_ack(decode_general_block_transfer(answer.to_bytes()))
    raise AssertionError("transfer did not finish")


def everything(block: GeneralBlockTransfer) -> bool:
    return True


@pytest.mark.parametrize("window", [1, 2, 3, 63])
def test_windowed_streaming_transfer(window: int) -> None:
    sender = GbtSender(APDU, block_size=10, window=window)
    receiver = GbtReceiver(window=window)
    apdu, acks = run_transfer(sender, receiver, everything)
    assert apdu == APDU
    assert sender.block_count == 11
    assert len(acks) == -(-11 // window) - 1  # one ack per window but the last
    assert [ack.block_number_ack for ack in acks] == [window * i for i in range(1, len(acks) + 1)]
    assert all(ack.last_block and not ack.streaming and ack.block_data == b"" for ack in acks)
    assert [ack.block_number for ack in acks] == list(range(1, len(acks) + 1))


def test_blocks_of_a_window_carry_streaming_until_the_last() -> None:
    sender = GbtSender(APDU, block_size=10, window=3)
    first = sender.start()
    assert [b.block_number for b in first] == [1, 2, 3]
    assert [b.streaming for b in first] == [True, True, False]
    assert all(b.window == 3 and not b.last_block for b in first)
    assert sender.all_sent is False


def test_non_streaming_sends_one_block_per_ack() -> None:
    sender = GbtSender(APDU, block_size=40, window=5, streaming=False)
    assert len(sender.start()) == 1
    receiver = GbtReceiver(window=1)
    apdu, acks = run_transfer(sender, receiver, everything)
    assert apdu == APDU
    assert len(acks) == 2  # 3 blocks: acks after block 1 and 2


def test_lost_block_is_recovered() -> None:
    sender = GbtSender(APDU, block_size=10, window=4)
    receiver = GbtReceiver(window=4)
    blocks = sender.start()
    assert receiver.receive(blocks[0]) is NEED_DATA
    # block 2 is lost; 3 and 4 (end of window) arrive
    assert receiver.receive(blocks[2]) is NEED_DATA
    event = receiver.receive(blocks[3])
    assert isinstance(event, SendAck)
    assert list(receiver.missing) == [2]
    # recovery: ack the last in-order block (1) and ask for the missing run only
    assert event.apdu.block_number_ack == 1 and event.apdu.window == 1
    resent = sender.receive_ack(event.apdu)
    assert [b.block_number for b in resent] == [2]
    event = receiver.receive(resent[0])
    assert isinstance(event, SendAck)
    assert event.apdu.block_number_ack == 4 and event.apdu.window == 4
    assert not receiver.missing
    assert [b.block_number for b in sender.receive_ack(event.apdu)] == [5, 6, 7, 8]


def test_lost_run_of_blocks_is_asked_for_in_one_request() -> None:
    sender = GbtSender(APDU, block_size=10, window=6)
    receiver = GbtReceiver(window=6)
    blocks = sender.start()
    for kept in (blocks[0], blocks[3], blocks[5]):
        event = receiver.receive(kept)
    assert receiver.missing == (2, 3, 5)
    assert isinstance(event, SendAck)
    assert (event.apdu.block_number_ack, event.apdu.window) == (1, 2)
    assert [b.block_number for b in sender.receive_ack(event.apdu)] == [2, 3]


def test_lost_end_of_window_block_recovered_by_timeout() -> None:
    sender = GbtSender(APDU, block_size=10, window=3)
    receiver = GbtReceiver(window=3)
    blocks = sender.start()
    assert receiver.receive(blocks[0]) is NEED_DATA
    assert receiver.receive(blocks[1]) is NEED_DATA
    ack = receiver.on_timeout()  # block 3 never came
    assert (ack.block_number_ack, ack.window) == (2, 3)
    assert [b.block_number for b in sender.receive_ack(ack)] == [3, 4, 5]


def test_last_block_lost_then_recovered() -> None:
    dropped: set[int] = set()

    def lose_last_once(block: GeneralBlockTransfer) -> bool:
        if block.last_block and block.block_number not in dropped:
            dropped.add(block.block_number)
            return False
        return True

    apdu, _ = run_transfer(GbtSender(APDU, 10, 4), GbtReceiver(4), lose_last_once)
    assert apdu == APDU and dropped == {11}


def test_duplicates_are_ignored() -> None:
    sender = GbtSender(APDU, block_size=30, window=4)
    receiver = GbtReceiver(window=4)
    blocks = sender.start()
    assert receiver.receive(blocks[0]) is NEED_DATA
    assert receiver.receive(blocks[0]) is NEED_DATA
    assert receiver.receive(blocks[1]) is NEED_DATA
    tampered = GeneralBlockTransfer(False, True, 4, 2, 0, b"X" * 30)
    assert receiver.receive(tampered) is NEED_DATA  # same number: first copy wins
    assert receiver.receive(blocks[2]) is NEED_DATA
    event = receiver.receive(blocks[3])
    assert isinstance(event, TransferComplete)
    assert event.apdu == APDU
    assert receiver.complete
    assert receiver.receive(blocks[3]) is NEED_DATA  # after completion, nothing more


def test_duplicate_end_of_window_is_acknowledged_again() -> None:
    # Our ack got lost, the sender timed out and resent its window.
    sender = GbtSender(APDU, block_size=10, window=2)
    receiver = GbtReceiver(window=2)
    blocks = sender.start()
    receiver.receive(blocks[0])
    first_ack = receiver.receive(blocks[1])
    assert isinstance(first_ack, SendAck)
    resent = sender.on_timeout()
    assert [b.block_number for b in resent] == [1, 2]
    assert receiver.receive(resent[0]) is NEED_DATA
    again = receiver.receive(resent[1])
    assert isinstance(again, SendAck)
    assert again.apdu.block_number_ack == 2
    assert again.apdu.block_number == first_ack.apdu.block_number + 1


def test_out_of_order_within_a_window() -> None:
    sender = GbtSender(APDU, block_size=40, window=3)
    receiver = GbtReceiver(window=3)
    first, second, third = sender.start()
    assert receiver.receive(second) is NEED_DATA
    assert receiver.receive(first) is NEED_DATA
    assert receiver.in_order == 2
    event = receiver.receive(third)
    assert isinstance(event, TransferComplete)
    assert event.apdu == APDU


def test_empty_apdu_is_one_empty_last_block() -> None:
    sender = GbtSender(b"", block_size=10)
    (only,) = sender.start()
    assert only.last_block and only.block_number == 1 and only.block_data == b""
    assert GbtReceiver().receive(only) == TransferComplete(b"")


def test_sender_refuses_bad_parameters() -> None:
    with pytest.raises(EncodeError):
        GbtSender(APDU, block_size=0)
    with pytest.raises(EncodeError):
        GbtSender(APDU, block_size=10, window=64)
    with pytest.raises(EncodeError):
        GbtSender(bytes(70000), block_size=1)
    sender = GbtSender(APDU, block_size=10, window=2)
    sender.start()
    with pytest.raises(ProtocolError):
        sender.receive_ack(GeneralBlockTransfer(True, False, 2, 1, 5))  # acks unsent block 5


def test_sender_done_after_final_ack() -> None:
    sender = GbtSender(APDU, block_size=60, window=2)
    assert len(sender.start()) == 2 and sender.all_sent
    assert sender.receive_ack(GeneralBlockTransfer(True, False, 2, 1, 2)) == []
    assert sender.done and sender.acked == 2


def test_receiver_bounds_the_total_size() -> None:
    receiver = GbtReceiver(window=4, max_size=25)
    blocks = GbtSender(APDU, block_size=10, window=4).start()
    receiver.receive(blocks[0])
    receiver.receive(blocks[1])
    with pytest.raises(LengthError):
        receiver.receive(blocks[2])


@pytest.mark.parametrize(
    "second",
    [
        GeneralBlockTransfer(False, True, 1, 0, 0, b"x"),  # block 0
        GeneralBlockTransfer(False, True, 1, 3, 0, b"x"),  # after the last (2)
        GeneralBlockTransfer(True, False, 1, 1, 0, b"x"),  # "last" before a held later block
    ],
)
def test_receiver_refuses_contradictions(second: GeneralBlockTransfer) -> None:
    receiver = GbtReceiver(window=4)
    assert receiver.receive(GeneralBlockTransfer(True, False, 4, 2, 0, b"y")) is not None
    with pytest.raises(ProtocolError):
        receiver.receive(second)


def test_receiver_refuses_blocks_beyond_any_window() -> None:
    with pytest.raises(ProtocolError):
        GbtReceiver().receive(GeneralBlockTransfer(False, True, 1, 64, 0, b"x"))


def test_no_timeout_request_after_completion() -> None:
    receiver = GbtReceiver()
    receiver.receive(GeneralBlockTransfer(True, False, 1, 1, 0, b"z"))
    with pytest.raises(ProtocolError):
        receiver.on_timeout()


def test_receiver_records_the_peer_ack() -> None:
    receiver = GbtReceiver(window=2)
    receiver.receive(GeneralBlockTransfer(False, True, 2, 1, 7, b"a"))
    assert receiver.peer_ack == 7


# --- properties ------------------------------------------------------------------------

gbt_apdus = st.builds(
    GeneralBlockTransfer,
    st.booleans(),
    st.booleans(),
    st.integers(0, 63),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
)


@FAST
@given(gbt_apdus)
def test_gbt_apdu_round_trip(block: GeneralBlockTransfer) -> None:
    encoded = block.to_bytes()
    assert decode_general_block_transfer(encoded) == block
    assert decode_general_block_transfer(encoded).to_bytes() == encoded


@FAST
@given(st.binary(max_size=40))
def test_arbitrary_bytes_into_gbt_decoder(data: bytes) -> None:
    assert_only_dlms_errors(decode_general_block_transfer, data)
    assert_only_dlms_errors(decode_general_block_transfer, b"\xe0" + data)


@FAST
@given(
    apdu=st.binary(max_size=600),
    block_size=st.integers(1, 64),
    window=st.integers(1, 8),
    streaming=st.booleans(),
    losses=st.sets(st.integers(1, 80), max_size=10),
    reverse=st.booleans(),
)
def test_transfer_survives_losses_and_reordering(
    apdu: bytes, block_size: int, window: int, streaming: bool, losses: set[int], reverse: bool
) -> None:
    """Any APDU arrives intact when each listed block is lost once (and windows reordered)."""
    lost_once = set(losses)

    def deliver(block: GeneralBlockTransfer) -> bool:
        if block.block_number in lost_once:
            lost_once.discard(block.block_number)
            return False
        return True

    sender = GbtSender(apdu, block_size, window, streaming=streaming)
    receiver = GbtReceiver(window=window, max_size=len(apdu))
    result, _ = run_transfer(sender, receiver, deliver, reorder=reverse)
    assert result == apdu


@FAST
@given(st.lists(gbt_apdus, max_size=20), st.integers(1, 63))
def test_receiver_on_arbitrary_blocks_raises_only_dlms_errors(
    blocks: list[GeneralBlockTransfer], window: int
) -> None:
    receiver = GbtReceiver(window=window, max_size=2000)
    for block in blocks:
        try:
            receiver.receive(block)
        except DlmsError:
            break
