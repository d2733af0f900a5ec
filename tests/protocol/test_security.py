"""Suite 0 security: SecurityControl, Suite0Cipher, HLS-GMAC, key wrap.

Vectors come from tests/data/published.json (each test cites the vector's
`source`) and from the fact sheet /work/shared/docs/dlms-reference.md section 4.
"""

from __future__ import annotations

import pickle
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.errors import (
    AuthenticationFailed,
    DlmsError,
    LengthError,
    SecurityError,
    TruncatedError,
    UnsupportedSecurity,
)
from dlmsd.protocol.security import (
    GMAC_RESPONSE_LENGTH,
    SecurityControl,
    Suite0Cipher,
    hls_gmac_response,
    unwrap_key,
    verify_hls_gmac_response,
    wrap_key,
)
from tests.vectors import cipher_for, vector_params


def ic_bytes(ic: int) -> bytes:
    return ic.to_bytes(4, "big")


# Fact sheet section 4 keys (the Green Book example keys).
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
SYSTEM_TITLE = bytes.fromhex("4D4D4D0000BC614E")
IC = 0x01234567
INITIATE_REQUEST = bytes.fromhex("01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0")
DATA_NOTIFICATION = bytes.fromhex("0F 00000001 00 0202 0600003039 09060100010800FF")


@pytest.fixture
def cipher() -> Suite0Cipher:
    return Suite0Cipher(EK, AK)


# --- SecurityControl -------------------------------------------------------------


@pytest.mark.parametrize("value", range(256))
def test_security_control_round_trips_every_byte(value: int) -> None:
    assert SecurityControl.from_byte(value).to_byte() == value


def test_security_control_fields_and_labels() -> None:
    sc = SecurityControl.from_byte(0x30)
    assert sc == SecurityControl(suite_id=0, authenticated=True, encrypted=True)
    assert sc.label == "auth+enc"
    assert SecurityControl.from_byte(SecurityControl.AUTH).label == "auth"
    assert SecurityControl.from_byte(SecurityControl.ENC).label == "enc"
    assert SecurityControl.from_byte(0).label == "none"
    assert SecurityControl.AUTH_ENC == 0x30
    full = SecurityControl.from_byte(0xF3)
    assert (full.suite_id, full.broadcast_key, full.compressed) == (3, True, True)


def test_security_control_rejects_out_of_range() -> None:
    with pytest.raises(DlmsError):
        SecurityControl.from_byte(256)
    with pytest.raises(DlmsError):
        SecurityControl(suite_id=16).to_byte()


# --- fact sheet section 4 vectors ------------------------------------------------


def test_fact_sheet_vector_1_glo_initiate_request(cipher: Suite0Cipher) -> None:
    # dlms-reference.md section 4, vector 1 (Green Book glo-InitiateRequest, SC 0x30).
    apdu = bytes.fromhex(
        "21 30 30 01234567 801302FF8A7874133D414CED25B42534D28DB0047720606B"
        "175BD52211BE6841DB204D39EE6FDB8E356855"
    )
    body = cipher.encrypt(SYSTEM_TITLE, 0x30, IC, INITIATE_REQUEST)
    assert bytes((0x21, 5 + len(body), 0x30)) + ic_bytes(IC) + body == apdu
    assert cipher.decrypt(SYSTEM_TITLE, 0x30, IC, apdu[7:]) == INITIATE_REQUEST


def test_fact_sheet_vector_2_authenticated_only(cipher: Suite0Cipher) -> None:
    # dlms-reference.md section 4, vector 2 (SC 0x10: plaintext in clear | tag).
    content = bytes.fromhex(
        "10 01234567 01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0"
        " CE0F5B426AA53E1FFB736C1E"
    )
    assert b"\x10" + ic_bytes(IC) + cipher.encrypt(SYSTEM_TITLE, 0x10, IC, INITIATE_REQUEST) == (
        content
    )
    assert cipher.decrypt(SYSTEM_TITLE, 0x10, IC, content[5:]) == INITIATE_REQUEST


def test_fact_sheet_vector_3_data_notification(cipher: Suite0Cipher) -> None:
    # dlms-reference.md section 4, vector 3 (DataNotification as general-glo-ciphering).
    apdu = bytes.fromhex(
        "DB 08 4D4D4D0000BC614E 26 30 01234567 8E1212FF9A5A45556E273B55851798F90F624704"
        "884948FC3E15574307AF2732AE"
    )
    assert apdu[2:10] == SYSTEM_TITLE
    assert cipher.decrypt(SYSTEM_TITLE, 0x30, IC, apdu[16:]) == DATA_NOTIFICATION
    assert cipher.encrypt(SYSTEM_TITLE, 0x30, IC, DATA_NOTIFICATION) == apdu[16:]


# --- published vectors -------------------------------------------------------------


@pytest.mark.parametrize("vector", vector_params("aes_gcm_ciphertext_and_tag"))
def test_published_aes_gcm_ciphertext_and_tag(vector: dict[str, Any]) -> None:
    keys, expected = vector["keys"], vector["expected"]
    cipher = cipher_for(keys)
    st_ = bytes.fromhex(keys["system_title"])
    sc, ic = int(keys["security_control"], 16), keys["invocation_counter"]
    plaintext = bytes.fromhex(expected["asserted"]["plaintext_hex"])
    body = bytes.fromhex(vector["hex"])
    assert body == bytes.fromhex(expected["ciphertext_hex"] + expected["tag_hex"])
    assert cipher.encrypt(st_, sc, ic, plaintext) == body
    assert cipher.decrypt(st_, sc, ic, body) == plaintext


@pytest.mark.parametrize("vector", vector_params("hls_gmac_tag"))
def test_published_hls_gmac_tag(vector: dict[str, Any]) -> None:
    keys, asserted = vector["keys"], vector["expected"]["asserted"]
    cipher = cipher_for(keys)
    st_ = bytes.fromhex(keys["system_title"])
    ic = keys["invocation_counter"]
    assert st_ + ic_bytes(ic) == bytes.fromhex(asserted["iv_hex"])
    challenge = bytes.fromhex(keys["challenge"])
    tag = cipher.gmac(st_, ic, challenge)
    assert tag == bytes.fromhex(asserted["gmac_tag_hex"]) == bytes.fromhex(vector["hex"])


@pytest.mark.parametrize("vector", vector_params("hls_gmac_f_stoc"))
def test_published_hls_gmac_f_stoc(vector: dict[str, Any]) -> None:
    keys = vector["keys"]
    cipher = cipher_for(keys)
    st_ = bytes.fromhex(keys["system_title"])
    challenge = bytes.fromhex(keys["challenge"])
    response = bytes.fromhex(vector["hex"])
    assert hls_gmac_response(cipher, st_, keys["invocation_counter"], challenge) == response
    assert verify_hls_gmac_response(cipher, st_, challenge, response) == 1
    with pytest.raises(AuthenticationFailed):
        verify_hls_gmac_response(cipher, st_, challenge[:-1] + b"\x00", response)


@pytest.mark.parametrize(
    "vector", vector_params("glo_initiate_request_apdu", "glo_initiate_request_green_book")
)
def test_published_glo_initiate_request_encrypts_exactly(vector: dict[str, Any]) -> None:
    keys = vector["keys"]
    cipher = cipher_for(keys)
    st_ = bytes.fromhex(keys["system_title"])
    apdu = bytes.fromhex(vector["hex"])
    plaintext_hex = (
        vector["expected"].get("plaintext_hex") or vector["expected"]["derived"]["plaintext_hex"]
    )
    plaintext = bytes.fromhex(plaintext_hex)
    # 21 | len | SC | IC(4) | ciphertext | tag
    assert cipher.encrypt(st_, 0x30, keys["invocation_counter"], plaintext) == apdu[7:]
    assert cipher.decrypt(st_, apdu[2], int.from_bytes(apdu[3:7], "big"), apdu[7:]) == plaintext


@pytest.mark.parametrize("vector", vector_params("aes_key_wrap_rfc3394"))
def test_published_aes_key_wrap(vector: dict[str, Any]) -> None:
    kek = bytes.fromhex(vector["keys"]["master_key_kek"])
    key = bytes.fromhex(vector["expected"]["asserted"]["unwrapped_key"])
    wrapped = bytes.fromhex(vector["hex"])
    assert wrap_key(kek, key) == wrapped
    assert unwrap_key(kek, wrapped) == key
    corrupted = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    with pytest.raises(AuthenticationFailed):
        unwrap_key(kek, corrupted)
    with pytest.raises(AuthenticationFailed):
        unwrap_key(bytes(16), wrapped)
    with pytest.raises(LengthError):
        unwrap_key(kek, wrapped[:-1])
    with pytest.raises(LengthError):
        wrap_key(kek[:15], key)
    with pytest.raises(LengthError):
        wrap_key(kek, key[:15])


# --- negative tests ------------------------------------------------------------------


def flipped(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


# Fact sheet vector 3 again: SC 0x30 | IC | ciphertext | tag.
V3_BODY = bytes.fromhex("8E1212FF9A5A45556E273B55851798F90F624704884948FC3E15574307AF2732AE")


@pytest.mark.parametrize("bit", range(len(V3_BODY) * 8))
def test_flipped_bit_in_ciphertext_or_tag_fails(cipher: Suite0Cipher, bit: int) -> None:
    with pytest.raises(AuthenticationFailed):
        cipher.decrypt(SYSTEM_TITLE, 0x30, IC, flipped(V3_BODY, bit))


@pytest.mark.parametrize("bit", range(32))
def test_flipped_bit_in_invocation_counter_fails(cipher: Suite0Cipher, bit: int) -> None:
    with pytest.raises(AuthenticationFailed):
        cipher.decrypt(SYSTEM_TITLE, 0x30, IC ^ (1 << bit), V3_BODY)


@pytest.mark.parametrize("bit", range(64))
def test_flipped_bit_in_system_title_fails(cipher: Suite0Cipher, bit: int) -> None:
    with pytest.raises(AuthenticationFailed):
        cipher.decrypt(flipped(SYSTEM_TITLE, bit), 0x30, IC, V3_BODY)


@pytest.mark.parametrize("bit", range(8))
def test_flipped_bit_in_security_control_never_returns(cipher: Suite0Cipher, bit: int) -> None:
    # Bits 1-3 (suite), 4 (authentication stripped -> encryption only) and 7
    # (compression) are refused as unsupported; bits 5 and 6, and bit 0 (suite 1,
    # which ciphers like suite 0 with the SC byte in the AAD) break the tag.
    sc = 0x30 ^ (1 << bit)
    expected = AuthenticationFailed if bit in (0, 5, 6) else UnsupportedSecurity
    with pytest.raises(expected):
        cipher.decrypt(SYSTEM_TITLE, sc, IC, V3_BODY)


def test_stripping_authentication_is_only_possible_when_allowed() -> None:
    # Why encryption-only is off by default: SC 0x30 -> 0x20 yields garbage, not an error.
    permissive = Suite0Cipher(EK, AK, allow_encryption_only=True)
    garbage = permissive.decrypt(SYSTEM_TITLE, 0x20, IC, V3_BODY)
    assert garbage[: len(DATA_NOTIFICATION)] == DATA_NOTIFICATION


def test_wrong_keys_fail() -> None:
    for ek, ak in ((bytes(16), AK), (EK, bytes(16))):
        with pytest.raises(AuthenticationFailed):
            Suite0Cipher(ek, ak).decrypt(SYSTEM_TITLE, 0x30, IC, V3_BODY)
    content = bytes.fromhex(
        "01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0 CE0F5B426AA53E1FFB736C1E"
    )
    with pytest.raises(AuthenticationFailed):
        Suite0Cipher(EK, bytes(16)).decrypt(SYSTEM_TITLE, 0x10, IC, content)


@pytest.mark.parametrize("sc", [0x10, 0x30])
@pytest.mark.parametrize("length", range(12))
def test_payload_shorter_than_tag_is_truncated(cipher: Suite0Cipher, sc: int, length: int) -> None:
    with pytest.raises(TruncatedError):
        cipher.decrypt(SYSTEM_TITLE, sc, IC, V3_BODY[:length])


@pytest.mark.parametrize("sc", [0x32, 0x33, 0x3F, 0xB0, 0x90, 0x00, 0x40])
def test_unsupported_security_control(cipher: Suite0Cipher, sc: int) -> None:
    with pytest.raises(UnsupportedSecurity):
        cipher.decrypt(SYSTEM_TITLE, sc, IC, V3_BODY)
    with pytest.raises(UnsupportedSecurity):
        cipher.encrypt(SYSTEM_TITLE, sc, IC, DATA_NOTIFICATION)


def test_bad_system_title_and_counter(cipher: Suite0Cipher) -> None:
    with pytest.raises(LengthError):
        cipher.decrypt(SYSTEM_TITLE[:7], 0x30, IC, V3_BODY)
    with pytest.raises(DlmsError):
        cipher.decrypt(SYSTEM_TITLE, 0x30, 2**32, V3_BODY)
    with pytest.raises(DlmsError):
        cipher.decrypt(SYSTEM_TITLE, 0x30, -1, V3_BODY)
    with pytest.raises(DlmsError):
        cipher.decrypt(SYSTEM_TITLE, 0x130, IC, V3_BODY)


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_bad_key_lengths_are_refused_without_the_key(length: int) -> None:
    key = bytes(range(0xA0, 0xA0 + length))
    for args in ((key, AK), (EK, key)):
        with pytest.raises(UnsupportedSecurity) as info:
            Suite0Cipher(*args)
        assert_no_key_material(info.value, key)


def test_hls_gmac_response_rejects_malformed(cipher: Suite0Cipher) -> None:
    challenge = b"P6wRJ21F"
    good = hls_gmac_response(cipher, SYSTEM_TITLE, 7, challenge)
    assert len(good) == GMAC_RESPONSE_LENGTH
    assert verify_hls_gmac_response(cipher, SYSTEM_TITLE, challenge, good) == 7
    with pytest.raises(TruncatedError):
        verify_hls_gmac_response(cipher, SYSTEM_TITLE, challenge, good[:-1])
    with pytest.raises(LengthError):
        verify_hls_gmac_response(cipher, SYSTEM_TITLE, challenge, good + b"\x00")
    with pytest.raises(UnsupportedSecurity):
        verify_hls_gmac_response(cipher, SYSTEM_TITLE, challenge, b"\x30" + good[1:])
    for bit in range(len(good) * 8):
        with pytest.raises(SecurityError):
            verify_hls_gmac_response(cipher, SYSTEM_TITLE, challenge, flipped(good, bit))
    with pytest.raises(UnsupportedSecurity):
        cipher.gmac(SYSTEM_TITLE, 1, challenge, security_control=0x30)


# --- key material never leaks ---------------------------------------------------------


def key_spellings(key: bytes) -> list[str]:
    spellings = [key.hex(), key.hex().upper(), repr(key)[2:-1], key.hex(" ")]
    return [s for s in spellings if s]


def assert_no_key_material(obj: object, *keys: bytes) -> None:
    texts = [repr(obj), str(obj)]
    if isinstance(obj, BaseException):
        texts += [repr(a) for a in obj.args]
        texts.append(str(getattr(obj, "reason", "")))
    for key in keys:
        for text in texts:
            for spelling in key_spellings(key):
                assert spelling not in text


def test_cipher_repr_and_str_hide_keys(cipher: Suite0Cipher) -> None:
    assert_no_key_material(cipher, EK, AK)
    assert "hidden" in repr(cipher)
    with pytest.raises(TypeError):
        pickle.dumps(cipher)


def test_no_error_message_contains_key_material(cipher: Suite0Cipher) -> None:
    failing_calls: list[Callable[[], object]] = [
        lambda: cipher.decrypt(SYSTEM_TITLE, 0x30, IC, flipped(V3_BODY, 3)),
        lambda: cipher.decrypt(SYSTEM_TITLE, 0x10, IC, V3_BODY),
        lambda: cipher.decrypt(SYSTEM_TITLE, 0x32, IC, V3_BODY),
        lambda: cipher.decrypt(SYSTEM_TITLE, 0xB0, IC, V3_BODY),
        lambda: cipher.decrypt(SYSTEM_TITLE, 0x20, IC, V3_BODY),
        lambda: cipher.decrypt(SYSTEM_TITLE, 0x00, IC, V3_BODY),
        lambda: cipher.decrypt(SYSTEM_TITLE, 0x30, IC, V3_BODY[:5]),
        lambda: cipher.decrypt(SYSTEM_TITLE[:3], 0x30, IC, V3_BODY),
        lambda: cipher.decrypt(SYSTEM_TITLE, 0x30, -1, V3_BODY),
        lambda: verify_hls_gmac_response(cipher, SYSTEM_TITLE, b"x", bytes(17)),
        lambda: unwrap_key(EK, bytes(24)),
        lambda: unwrap_key(EK, bytes(23)),
        lambda: wrap_key(EK, AK[:9]),
        lambda: Suite0Cipher(EK, AK[:15]),
        lambda: Suite0Cipher(EK[:15], AK),
    ]
    for call in failing_calls:
        with pytest.raises(DlmsError) as info:
            call()
        assert_no_key_material(info.value, EK, AK)
        assert info.value.__cause__ is None


def test_a_cipher_holds_nothing_per_key_beyond_the_aes_object() -> None:
    # A daemon keeps one cipher per meter that has pushed (100k-meter key stores):
    # a per-cipher table (it once held SC | AK for four SC values, ~420 bytes) costs
    # tens of megabytes. Only the cipher object and cryptography's AES object remain.
    keys = [(bytes([n]) * 16, bytes([n, 1]) * 8) for n in range(256)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ciphers = [Suite0Cipher(ek, ak) for ek, ak in keys]
        per_cipher = (tracemalloc.get_traced_memory()[0] - before) / len(ciphers)
    finally:
        tracemalloc.stop()
    assert per_cipher < 200
    for sc in (0x10, 0x30, 0x50, 0x70):
        body = ciphers[7].encrypt(SYSTEM_TITLE, sc, IC, b"data", extra_aad=b"hdr")
        assert ciphers[7].decrypt(SYSTEM_TITLE, sc, IC, body, extra_aad=b"hdr") == b"data"
        with pytest.raises(AuthenticationFailed):
            ciphers[7].decrypt(SYSTEM_TITLE, sc, IC, body)
        with pytest.raises(AuthenticationFailed):
            ciphers[8].decrypt(SYSTEM_TITLE, sc, IC, body, extra_aad=b"hdr")


# --- hypothesis ------------------------------------------------------------------------

keys16 = st.binary(min_size=16, max_size=16)
system_titles = st.binary(min_size=8, max_size=8)
counters = st.integers(min_value=0, max_value=2**32 - 1)
protections = st.sampled_from([0x10, 0x20, 0x30, 0x50, 0x60, 0x70])


@settings(max_examples=300, deadline=None)
@given(keys16, keys16, system_titles, protections, counters, st.binary(max_size=300))
def test_encrypt_decrypt_round_trip(
    ek: bytes, ak: bytes, title: bytes, sc: int, ic: int, plaintext: bytes
) -> None:
    cipher = Suite0Cipher(ek, ak, allow_encryption_only=True)
    body = cipher.encrypt(title, sc, ic, plaintext)
    tag_length = 0 if sc & 0x10 == 0 else 12
    assert len(body) == len(plaintext) + tag_length
    if sc & 0x30 == 0x10:
        assert body[: len(plaintext)] == plaintext
    assert cipher.decrypt(title, sc, ic, body) == plaintext


PERMISSIVE = Suite0Cipher(EK, AK, allow_encryption_only=True)


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=12),
    st.integers(min_value=-2, max_value=300),
    st.integers(min_value=-2, max_value=2**33),
    st.binary(max_size=64),
    st.booleans(),
)
def test_decrypt_arbitrary_input_raises_only_dlms_errors(
    title: bytes, sc: int, ic: int, payload: bytes, permissive: bool
) -> None:
    cipher = PERMISSIVE if permissive else Suite0Cipher(EK, AK)
    try:
        result = cipher.decrypt(title, sc, ic, payload)
    except DlmsError:
        return
    assert isinstance(result, bytes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=40))
def test_gmac_verify_arbitrary_input_raises_only_dlms_errors(
    challenge: bytes, response: bytes
) -> None:
    cipher = Suite0Cipher(EK, AK)
    try:
        verify_hls_gmac_response(cipher, SYSTEM_TITLE, challenge, response)
    except DlmsError:
        return


@settings(max_examples=200, deadline=None)
@given(
    keys16,
    st.integers(min_value=2, max_value=6).flatmap(
        lambda n: st.binary(min_size=8 * n, max_size=8 * n)
    ),
)
def test_key_wrap_round_trip(kek: bytes, key: bytes) -> None:
    assert unwrap_key(kek, wrap_key(kek, key)) == key


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=64))
def test_key_unwrap_arbitrary_input_raises_only_dlms_errors(kek: bytes, wrapped: bytes) -> None:
    try:
        unwrap_key(kek, wrapped)
    except DlmsError:
        return


@pytest.mark.parametrize("sc", [0x21, 0x31, 0x11])
def test_suite_1_ciphers_like_suite_0_with_its_own_sc_byte(sc: int) -> None:
    # Suite 1 uses AES-GCM-128 for APDUs as suite 0 does; the SC byte (in the AAD
    # of the authenticated forms) keeps a suite 0 frame from passing as suite 1.
    cipher = Suite0Cipher(EK, AK, allow_encryption_only=True)
    protected = cipher.encrypt(SYSTEM_TITLE, sc, IC, DATA_NOTIFICATION)
    assert cipher.decrypt(SYSTEM_TITLE, sc, IC, protected) == DATA_NOTIFICATION
    if sc & 0x10:
        with pytest.raises(AuthenticationFailed):
            cipher.decrypt(SYSTEM_TITLE, sc & ~1, IC, protected)


def test_cipher_without_authentication_key_is_encryption_only() -> None:
    cipher = Suite0Cipher(EK, None, allow_encryption_only=True)
    assert cipher.decrypt(SYSTEM_TITLE, 0x20, IC, cipher.encrypt(SYSTEM_TITLE, 0x20, IC, b"x"))
    for sc in (0x10, 0x30, 0x31):
        with pytest.raises(UnsupportedSecurity, match="no authentication key"):
            cipher.decrypt(SYSTEM_TITLE, sc, IC, V3_BODY)
        with pytest.raises(UnsupportedSecurity):
            cipher.encrypt(SYSTEM_TITLE, sc, IC, b"x")
