"""`peel` reads the usual containers straight from the bytes: same envelopes, same errors.

The reference is `_peel_decoded` (every container through `decode_ciphered`), the
code `peel` ran for every push before the short-form path existed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.ciphered import (
    CIPHERED_TAGS,
    CipheredApduTag,
    GeneralCiphering,
    GeneralDedCiphering,
    GeneralGloCiphering,
    IdentifiedKey,
    KeyId,
    ServiceSpecificCiphered,
)
from dlmsd.protocol.errors import DlmsError, TruncatedError
from dlmsd.protocol.push import (
    DATA_NOTIFICATION,
    Envelope,
    _peel_decoded,
    _peel_short_form,
    peel,
)
from dlmsd.service.simulator import build_push, make_meter

TITLE = bytes.fromhex("4D4D4D0000BC614E")


def reference_peel(apdu: bytes, system_title: bytes | None) -> Envelope:
    """`peel` as it was: empty and plaintext first, then the full decoder."""
    if not apdu:
        raise TruncatedError("empty APDU", 0)
    if apdu[0] == DATA_NOTIFICATION:
        return Envelope(apdu, system_title, None, None, apdu)
    return _peel_decoded(apdu, system_title)


def outcome(peeler: Callable[[bytes, bytes | None], Envelope], apdu: bytes, title: Any) -> Any:
    """The envelope, or what identifies the error: its type, offset and reason."""
    try:
        return peeler(apdu, title)
    except DlmsError as error:
        return (type(error), error.offset, error.reason)


def assert_same_as_reference(apdu: bytes, title: bytes | None) -> None:
    assert outcome(peel, apdu, title) == outcome(reference_peel, apdu, title)
    fast = _peel_short_form(apdu, title) if apdu else None
    if fast is not None:
        assert fast == _peel_decoded(apdu, title)


# --- the forms the fast path takes ------------------------------------------------------


def _simulated_push() -> bytes:
    """What the bench sends: a DataNotification in general-glo-ciphering, SC 0x30."""
    return build_push(make_meter(0), 1, datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("name", "apdu"),
    [
        ("simulated push", _simulated_push()),
        ("short content", GeneralGloCiphering(TITLE, 0x30, 7, bytes(100)).to_bytes()),
        ("0x81 content", GeneralGloCiphering(TITLE, 0x30, 7, bytes(200)).to_bytes()),
        ("0x82 content", GeneralGloCiphering(TITLE, 0x10, 7, bytes(300)).to_bytes()),
        ("empty title", GeneralGloCiphering(b"", 0x20, 7, bytes(60)).to_bytes()),
        ("general-ded", GeneralDedCiphering(TITLE, 0x70, 2**32 - 1, bytes(60)).to_bytes()),
        ("glo-event", ServiceSpecificCiphered(202, 0x30, 0, bytes(60)).to_bytes()),
        ("ded-get 0x81", ServiceSpecificCiphered(212, 0x30, 9, bytes(150)).to_bytes()),
    ],
)
def test_usual_containers_take_the_fast_path(name: str, apdu: bytes) -> None:
    fast = _peel_short_form(apdu, TITLE)
    assert fast is not None, name
    assert fast == _peel_decoded(apdu, TITLE)
    assert peel(apdu, TITLE) == fast


def test_general_ciphering_goes_through_the_decoder() -> None:
    container = GeneralCiphering(
        b"\x01", TITLE, b"", b"", b"", IdentifiedKey(KeyId(0)), 0x30, 7, bytes(40)
    )
    apdu = container.to_bytes()
    assert _peel_short_form(apdu, None) is None
    assert peel(apdu).extra_aad == container.header_aad()


@pytest.mark.parametrize(
    "apdu",
    [
        # Length fields not in their shortest form: decode_ciphered rejects them.
        bytes.fromhex("DB08") + TITLE + bytes.fromhex("8105") + bytes.fromhex("3000000001"),
        bytes.fromhex("DB08") + TITLE + bytes.fromhex("820005") + bytes.fromhex("3000000001"),
        bytes.fromhex("DB08") + TITLE + bytes.fromhex("817F30") + bytes(126),
        bytes.fromhex("DB08") + TITLE + bytes.fromhex("8200FF30") + bytes(254),
        bytes.fromhex("DB8108") + TITLE + bytes.fromhex("05") + bytes.fromhex("3000000001"),
        # Trailing byte, short content, unsupported security controls.
        GeneralGloCiphering(TITLE, 0x30, 7, b"").to_bytes() + b"\x00",
        bytes.fromhex("DB08") + TITLE + bytes.fromhex("04") + bytes.fromhex("30000000"),
        GeneralGloCiphering(TITLE, 0x32, 7, bytes(20)).to_bytes(),
        GeneralGloCiphering(TITLE, 0x00, 7, bytes(20)).to_bytes(),
        GeneralGloCiphering(TITLE, 0xB0, 7, bytes(20)).to_bytes(),
        # A title too long for the one-byte length form.
        GeneralGloCiphering(bytes(range(128)), 0x30, 7, bytes(20)).to_bytes(),
        b"\xdb",
        b"\xdb\x08",
        b"\xc8",
        b"\xc8\x05\x30",
    ],
)
def test_unusual_containers_fail_exactly_as_before(apdu: bytes) -> None:
    assert _peel_short_form(apdu, TITLE) is None
    assert_same_as_reference(apdu, TITLE)
    assert_same_as_reference(apdu, None)


# --- properties -------------------------------------------------------------------------

counters = st.integers(min_value=0, max_value=2**32 - 1)
controls = st.sampled_from([0x10, 0x20, 0x30, 0x50, 0x70]) | st.integers(0, 255)
payloads = st.binary(max_size=120) | st.binary(min_size=250, max_size=320)
containers = st.one_of(
    st.builds(GeneralGloCiphering, st.binary(max_size=140), controls, counters, payloads),
    st.builds(GeneralDedCiphering, st.binary(max_size=20), controls, counters, payloads),
    st.builds(
        ServiceSpecificCiphered,
        st.sampled_from(list(CipheredApduTag)),
        controls,
        counters,
        payloads,
    ),
)
titles = st.none() | st.just(TITLE)


def any_length_form(length: int, form: int) -> bytes:
    """`length` as an A-XDR length field of `form` extra bytes (0 = one byte), shortest or not."""
    if form == 0:
        return bytes((length & 0x7F,))
    return bytes((0x80 | form,)) + (length % (1 << 8 * form)).to_bytes(form, "big")


@st.composite
def hand_built(draw: st.DrawFn) -> bytes:
    """Containers with length fields in any form, around the 0x80 and 0x100 limits."""
    tag = draw(st.sampled_from([0xDB, 0xDC, 0xC8, 0x21]))
    content: bytes = bytes((draw(controls),)) + draw(st.binary(min_size=4, max_size=4))
    content += bytes(draw(st.sampled_from([0, 1, 122, 123, 124, 250, 251, 252, 300])))
    content = content[: draw(st.just(len(content)) | st.integers(0, len(content)))]
    body = any_length_form(len(content), draw(st.integers(0, 3))) + content
    if tag in (0xDB, 0xDC):
        title = draw(st.binary(max_size=10))
        body = any_length_form(len(title), draw(st.integers(0, 2))) + title + body
    return bytes((tag,)) + body


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=80), titles)
def test_arbitrary_bytes(apdu: bytes, title: bytes | None) -> None:
    assert_same_as_reference(apdu, title)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(CIPHERED_TAGS | {DATA_NOTIFICATION})), st.binary(max_size=300))
def test_arbitrary_body_after_a_ciphered_tag(tag: int, body: bytes) -> None:
    assert_same_as_reference(bytes((tag,)) + body, TITLE)


@settings(max_examples=1000, deadline=None)
@given(containers, titles)
def test_valid_containers(container: Any, title: bytes | None) -> None:
    assert_same_as_reference(container.to_bytes(), title)


@settings(max_examples=1000, deadline=None)
@given(hand_built(), titles)
def test_any_length_forms(apdu: bytes, title: bytes | None) -> None:
    assert_same_as_reference(apdu, title)


@settings(max_examples=1000, deadline=None)
@given(containers, titles, st.data())
def test_mutated_containers(container: Any, title: bytes | None, data: st.DataObject) -> None:
    encoded = bytearray(container.to_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(
            st.integers(0, min(len(encoded) - 1, 20)) | st.integers(0, len(encoded) - 1)
        )
        encoded[at] = data.draw(st.sampled_from([0x00, 0x04, 0x05, 0x7F, 0x80, 0x81, 0x82, 0xFF]))
    cut = data.draw(st.just(len(encoded)) | st.integers(0, len(encoded)))
    extra = data.draw(st.just(b"") | st.binary(max_size=3))
    assert_same_as_reference(bytes(encoded[:cut]) + extra, title)
