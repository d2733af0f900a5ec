"""Ciphered APDU containers: decode, encode, and decrypt through Suite0Cipher.

Vectors come from tests/data/published.json; each test id carries the vector's
`source`. Fact sheet: /work/shared/docs/dlms-reference.md sections 3 and 4.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmsd.protocol.ciphered import (
    CIPHERED_TAGS,
    CipheredApduTag,
    GeneralCiphering,
    GeneralCipheringTag,
    GeneralDedCiphering,
    GeneralGloCiphering,
    IdentifiedKey,
    KeyId,
    KeyInfo,
    ServiceSpecificCiphered,
    WrappedKey,
    decode_ciphered,
)
from dlmsd.protocol.errors import (
    AuthenticationFailed,
    DecodeError,
    DlmsError,
    EncodeError,
    LengthError,
    TruncatedError,
    UnknownTagError,
    UnsupportedSecurity,
)
from dlmsd.protocol.security import Suite0Cipher, unwrap_key, wrap_key
from tests.vectors import cipher_for, published, vector_params

VECTORS = published()


def plaintext_of(vector: dict[str, Any], payload: bytes) -> bytes:
    expected = vector["expected"]
    for where in (expected, expected.get("derived") or {}, expected.get("asserted") or {}):
        if isinstance(where, dict) and "plaintext_hex" in where:
            return bytes.fromhex(where["plaintext_hex"])
    # glo_get_request (PR #90) states no plaintext; its notes point to the
    # aes_gcm_ciphertext_and_tag vector (tests/test_security.py:L51) with the same bytes.
    for other in VECTORS:
        if (
            other["kind"] == "aes_gcm_ciphertext_and_tag"
            and bytes.fromhex(other["hex"]) == payload
        ):
            return bytes.fromhex(other["expected"]["asserted"]["plaintext_hex"])
    raise AssertionError("vector has no plaintext")


EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
SYSTEM_TITLE = bytes.fromhex("4D4D4D0000BC614E")
IC = 0x01234567

# --- tags ----------------------------------------------------------------------------


def test_service_specific_tags_match_the_fact_sheet() -> None:
    # dlms-reference.md section 3: 200..207 glo-, 208..215 ded- versions of 192..199
    # (198 unused), 33/40 glo-initiateRequest/Response.
    assert CipheredApduTag.GLO_INITIATE_REQUEST.value == 33
    assert CipheredApduTag.GLO_INITIATE_RESPONSE.value == 40
    assert CipheredApduTag.GLO_CONFIRMED_SERVICE_ERROR.value == 46
    assert CipheredApduTag.DED_INITIATE_REQUEST.value == 65
    lncipher = [t for t in CipheredApduTag if t >= 200]
    assert sorted(lncipher) == [t for t in range(200, 216) if t not in (206, 214)]
    for tag in lncipher:
        assert tag.plain_tag == 192 + (tag - 200) % 8
        assert tag.is_dedicated == (tag >= 208)
    assert CipheredApduTag.GLO_INITIATE_REQUEST.plain_tag == 1
    assert CipheredApduTag.DED_INITIATE_RESPONSE.plain_tag == 8
    assert CipheredApduTag.GLO_CONFIRMED_SERVICE_ERROR.plain_tag == 14
    assert CipheredApduTag.DED_INFORMATION_REPORT_REQUEST.plain_tag == 24
    assert not CipheredApduTag.GLO_INITIATE_RESPONSE.is_dedicated
    assert CipheredApduTag.DED_INITIATE_REQUEST.is_dedicated
    assert [int(t) for t in GeneralCipheringTag] == [219, 220, 221]


CIPHERED_FIRST_BYTES = {int(t) for t in CipheredApduTag} | {219, 220, 221}


def test_ciphered_tags_lists_every_accepted_first_byte() -> None:
    assert CIPHERED_TAGS == CIPHERED_FIRST_BYTES


@pytest.mark.parametrize("first", sorted(set(range(256)) - CIPHERED_FIRST_BYTES))
def test_non_ciphered_tag_is_unknown(first: int) -> None:
    with pytest.raises(UnknownTagError) as info:
        decode_ciphered(bytes((first, 5, 0x30, 0, 0, 0, 1)))
    assert info.value.offset == 0


def test_empty_input_is_truncated() -> None:
    with pytest.raises(TruncatedError):
        decode_ciphered(b"")


# --- published vectors ------------------------------------------------------------


@pytest.mark.parametrize(
    "vector",
    vector_params(
        "glo_get_request",
        "glo_get_request_auth_enc",
        "glo_get_request_enc_only",
        "glo_initiate_request_apdu",
        "glo_initiate_request_green_book",
    ),
)
def test_published_service_specific(vector: dict[str, Any]) -> None:
    keys = vector["keys"]
    apdu = bytes.fromhex(vector["hex"])
    decoded = decode_ciphered(apdu)
    assert isinstance(decoded, ServiceSpecificCiphered)
    assert decoded == ServiceSpecificCiphered.from_bytes(apdu)
    assert decoded.tag == apdu[0]
    assert decoded.security_control == int(keys["security_control"], 16)
    assert decoded.invocation_counter == keys["invocation_counter"]
    asserted = vector["expected"]["asserted"]
    if "ciphered_text_hex" in asserted:
        assert decoded.payload == bytes.fromhex(asserted["ciphered_text_hex"])
    assert decoded.to_bytes() == apdu  # sources assert roundtrip / encode equality
    assert not decoded.is_dedicated
    # System title from the association (AARQ calling-AP-title).
    cipher = cipher_for(keys, allow_encryption_only=True)
    title = bytes.fromhex(keys["system_title"])
    plaintext = cipher.decrypt(
        title, decoded.security_control, decoded.invocation_counter, decoded.payload
    )
    assert plaintext == plaintext_of(vector, decoded.payload)
    assert plaintext[0] == CipheredApduTag(decoded.tag).plain_tag
    assert (
        cipher.encrypt(title, decoded.security_control, decoded.invocation_counter, plaintext)
        == decoded.payload
    )


@pytest.mark.parametrize(
    "vector",
    vector_params(
        "general_glo_ciphering_apdu", "udp_wrapper+general_glo_ciphering_datanotification"
    ),
)
def test_published_general_glo_ciphering_decrypts(vector: dict[str, Any]) -> None:
    keys, derived = vector["keys"], vector["expected"]["derived"]
    frame = bytes.fromhex(vector["hex"])
    # The udp_wrapper vectors carry the 8-byte IEC 62056-47 header first.
    apdu = frame[8:] if vector["kind"].startswith("udp_wrapper") else frame
    decoded = decode_ciphered(apdu)
    assert isinstance(decoded, GeneralGloCiphering)
    assert decoded.system_title == bytes.fromhex(keys["system_title"])
    assert decoded.security_control == 0x30
    assert decoded.invocation_counter == derived["invocation_counter"]
    if "ciphered_content_len" in derived:
        assert 5 + len(decoded.payload) == derived["ciphered_content_len"]
    assert decoded.to_bytes() == apdu
    plaintext = cipher_for(keys).decrypt(
        decoded.system_title,
        decoded.security_control,
        decoded.invocation_counter,
        decoded.payload,
    )
    assert plaintext == bytes.fromhex(derived["plaintext_hex"])
    assert plaintext[0] == 0x0F  # DataNotification


@pytest.mark.parametrize("vector", vector_params("general_glo_ciphering_apdu_empty_system_title"))
def test_published_general_glo_ciphering_empty_system_title(vector: dict[str, Any]) -> None:
    apdu = bytes.fromhex(vector["hex"])
    expected = GeneralGloCiphering(
        system_title=b"",
        security_control=0x30,
        invocation_counter=2147483857,
        payload=bytes.fromhex(vector["expected"]["asserted"]["ciphered_text_hex"]),
    )
    assert decode_ciphered(apdu) == expected
    assert expected.to_bytes() == apdu
    # An empty system title cannot form the IV: the cipher says so instead of guessing.
    with pytest.raises(LengthError):
        Suite0Cipher(EK, AK).decrypt(b"", 0x30, 1, expected.payload)


def user_information_apdu(acse_hex: str, marker: str) -> bytes:
    """The ciphered APDU after the BE .. 04 .. user-information header."""
    data = bytes.fromhex(acse_hex)
    at = data.index(bytes.fromhex(marker))
    return data[at + len(bytes.fromhex(marker)) :]


@pytest.mark.parametrize("vector", vector_params("rlre_ciphered"))
def test_published_rlre_glo_initiate_response(vector: dict[str, Any]) -> None:
    keys, derived = vector["keys"], vector["expected"]["derived"]
    apdu = user_information_apdu(vector["hex"], "be230421")
    decoded = decode_ciphered(apdu)
    assert isinstance(decoded, ServiceSpecificCiphered)
    assert decoded.tag == CipheredApduTag.GLO_INITIATE_RESPONSE
    assert decoded.invocation_counter == derived["invocation_counter"]
    assert decoded.to_bytes() == apdu
    cipher = cipher_for(keys)
    args = (decoded.security_control, decoded.invocation_counter, decoded.payload)
    # derived.decrypt_system_title: the server's title works, the client's does not.
    assert cipher.decrypt(SYSTEM_TITLE, *args) == bytes.fromhex(derived["plaintext_hex"])
    with pytest.raises(AuthenticationFailed):
        cipher.decrypt(bytes.fromhex("4d4d4d0000000001"), *args)


@pytest.mark.parametrize("vector", vector_params("aarq_ciphered_lls", "rlrq_ciphered"))
def test_published_acse_glo_initiate_request(vector: dict[str, Any]) -> None:
    apdu = user_information_apdu(vector["hex"], "be340432")
    decoded = decode_ciphered(apdu)
    assert isinstance(decoded, ServiceSpecificCiphered)
    assert decoded.tag == CipheredApduTag.GLO_INITIATE_REQUEST
    assert decoded.to_bytes() == apdu
    plaintext = cipher_for(vector["keys"]).decrypt(
        SYSTEM_TITLE, decoded.security_control, decoded.invocation_counter, decoded.payload
    )
    assert plaintext.hex() == "01011000112233445566778899aabbccddeeff0000065f1f0400007e1f04b0"


def test_fact_sheet_vector_3_container() -> None:
    # dlms-reference.md section 4, vector 3, inside its UDP wrapper (wPorts 1 -> 1).
    frame = bytes.fromhex(
        "0001 0001 0001 0031 DB 08 4D4D4D0000BC614E 26 30 01234567 8E1212FF9A5A45556E273B55"
        "851798F90F624704884948FC3E15574307AF2732AE"
    )
    assert int.from_bytes(frame[6:8], "big") == len(frame) - 8
    decoded = decode_ciphered(frame[8:])
    assert decoded == GeneralGloCiphering(SYSTEM_TITLE, 0x30, IC, frame[16 + 8 :])
    plaintext = Suite0Cipher(EK, AK).decrypt(SYSTEM_TITLE, 0x30, IC, decoded.payload)
    assert plaintext == bytes.fromhex("0F 00000001 00 0202 0600003039 09060100010800FF")


# --- malformed input -------------------------------------------------------------

ALL_CONTAINERS = [
    v["hex"][16:] if v["kind"].startswith("udp_wrapper") else v["hex"]
    for v in VECTORS
    if v["kind"]
    in (
        "general_glo_ciphering_apdu",
        "general_glo_ciphering_apdu_empty_system_title",
        "udp_wrapper+general_glo_ciphering_datanotification",
        "glo_get_request",
        "glo_get_request_enc_only",
        "glo_initiate_request_apdu",
    )
]


@pytest.mark.parametrize("apdu_hex", ALL_CONTAINERS)
def test_every_prefix_is_refused(apdu_hex: str) -> None:
    apdu = bytes.fromhex(apdu_hex)
    for end in range(len(apdu)):
        with pytest.raises(TruncatedError):
            decode_ciphered(apdu[:end])


@pytest.mark.parametrize("apdu_hex", ALL_CONTAINERS)
def test_trailing_bytes_are_refused(apdu_hex: str) -> None:
    apdu = bytes.fromhex(apdu_hex)
    with pytest.raises(DecodeError) as info:
        decode_ciphered(apdu + b"\x00")
    assert info.value.offset == len(apdu)


@pytest.mark.parametrize(
    "apdu_hex",
    [
        "c8 03 30 0000",  # content too short for SC | IC
        "db 00 04 30 000000",
        "db 00 00",
    ],
)
def test_content_without_sc_and_ic_is_refused(apdu_hex: str) -> None:
    with pytest.raises(LengthError):
        decode_ciphered(bytes.fromhex(apdu_hex))


@pytest.mark.parametrize(
    "apdu_hex",
    [
        "c8 81 05 30 00000001",  # 5 in the long form
        "c8 82 0080" + "30 00000001" + "00" * 123,  # 128 with a zero high byte
        "c8 80 30 00000001",  # indefinite form is not A-XDR
        "c8 85 0000000005 30 00000001",  # more than 4 length bytes
        "db 81 08 4d4d4d0000bc614e 05 30 00000001",
    ],
)
def test_non_minimal_or_unsupported_lengths_are_refused(apdu_hex: str) -> None:
    with pytest.raises(LengthError):
        decode_ciphered(bytes.fromhex(apdu_hex))


def test_long_length_forms_round_trip() -> None:
    for size in (0x7A, 0x7B, 0xFA, 0xFB, 0x1_0000, 0x2_0000):
        for value in (
            ServiceSpecificCiphered(CipheredApduTag.GLO_GET_RESPONSE, 0x30, 5, bytes(size)),
            GeneralGloCiphering(bytes(8), 0x30, 5, bytes(size)),
            GeneralDedCiphering(bytes(size), 0x10, 5, b"\x01"),
        ):
            encoded = value.to_bytes()
            assert decode_ciphered(encoded) == value


def test_encoder_rejects_out_of_range_fields() -> None:
    bad: list[ServiceSpecificCiphered | GeneralGloCiphering | GeneralCiphering] = [
        ServiceSpecificCiphered(0xC0, 0x30, 1, b""),
        ServiceSpecificCiphered(0xC8, 0x130, 1, b""),
        GeneralGloCiphering(b"", 0x30, 2**32, b""),
        GeneralGloCiphering(b"", 0x30, -1, b""),
        GeneralCiphering(b"", b"", b"", b"", b"", IdentifiedKey(256), 0x30, 1, b""),
        GeneralCiphering(b"", b"", b"", b"", b"", WrappedKey(-1, b""), 0x30, 1, b""),
    ]
    for value in bad:
        with pytest.raises(EncodeError):
            value.to_bytes()


# --- general-ciphering --------------------------------------------------------------

# The header of the Green Book Table 41 ACCESS.request example (agreed key).
GREEN_BOOK_T41_HEAD = bytes.fromhex(
    "DD 08 0102030405060708 08 4D4D4D0000BC614E 08 4D4D4D0000000001 00 00 01 02 01 01 81 80"
)


def test_general_ciphering_agreed_key_is_unsupported() -> None:
    payload = GREEN_BOOK_T41_HEAD + bytes(128) + b"\x05\x30\x00\x00\x00\x00"
    with pytest.raises(UnsupportedSecurity):
        decode_ciphered(payload)


def general_ciphering(key_info: KeyInfo | None, payload: bytes = b"\xaa" * 20) -> GeneralCiphering:
    return GeneralCiphering(
        transaction_id=bytes.fromhex("0102030405060708"),
        originator_system_title=SYSTEM_TITLE,
        recipient_system_title=bytes.fromhex("4D4D4D0000000001"),
        date_time=b"",
        other_information=b"",
        key_info=key_info,
        security_control=0x30,
        invocation_counter=IC,
        payload=payload,
    )


@pytest.mark.parametrize(
    ("key_info", "key_info_hex"),
    [
        (None, "00"),
        (IdentifiedKey(KeyId.GLOBAL_UNICAST_ENCRYPTION_KEY), "010000"),
        (IdentifiedKey(KeyId.GLOBAL_BROADCAST_ENCRYPTION_KEY), "010001"),
        (WrappedKey(0, bytes(range(24))), "010100" + "18" + bytes(range(24)).hex()),
    ],
)
def test_general_ciphering_layout(key_info: KeyInfo | None, key_info_hex: str) -> None:
    value = general_ciphering(key_info)
    encoded = value.to_bytes()
    assert encoded == (
        GREEN_BOOK_T41_HEAD[:30]  # DD | five header octet strings, as in Table 41
        + bytes.fromhex(key_info_hex)
        + bytes.fromhex("19 30 01234567")
        + b"\xaa" * 20
    )
    assert value.header_aad() == GREEN_BOOK_T41_HEAD[1:30]
    decoded = decode_ciphered(encoded)
    assert decoded == value
    assert isinstance(decoded, GeneralCiphering)
    assert isinstance(decoded.key_info, type(key_info))
    if isinstance(decoded.key_info, IdentifiedKey):
        assert isinstance(decoded.key_info.key_id, KeyId)


@pytest.mark.parametrize(
    ("key_info_hex", "error"),
    [
        ("02", DecodeError),  # OPTIONAL presence byte must be 0 or 1
        ("0100 02", UnknownTagError),  # key-id 2 is not defined
        ("0101 01 00", UnknownTagError),  # kek-id 1 is not defined
        ("0103 00", UnknownTagError),  # no such Key-Info choice
        ("01", TruncatedError),
        ("0101 00 20 00", TruncatedError),
    ],
)
def test_general_ciphering_bad_key_info(key_info_hex: str, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        decode_ciphered(GREEN_BOOK_T41_HEAD[:30] + bytes.fromhex(key_info_hex))


def test_general_ciphering_encrypts_with_header_in_aad() -> None:
    cipher = Suite0Cipher(EK, AK)
    plaintext = bytes.fromhex("c0010000080000010000ff0200")
    template = general_ciphering(IdentifiedKey(KeyId.GLOBAL_UNICAST_ENCRYPTION_KEY))
    body = cipher.encrypt(SYSTEM_TITLE, 0x30, IC, plaintext, extra_aad=template.header_aad())
    decoded = decode_ciphered(general_ciphering(template.key_info, body).to_bytes())
    assert isinstance(decoded, GeneralCiphering)
    assert (
        cipher.decrypt(
            decoded.originator_system_title,
            decoded.security_control,
            decoded.invocation_counter,
            decoded.payload,
            extra_aad=decoded.header_aad(),
        )
        == plaintext
    )
    # The header is authenticated: another recipient title breaks the tag.
    tampered = GeneralCiphering(
        decoded.transaction_id,
        decoded.originator_system_title,
        bytes(8),
        decoded.date_time,
        decoded.other_information,
        decoded.key_info,
        decoded.security_control,
        decoded.invocation_counter,
        decoded.payload,
    )
    with pytest.raises(AuthenticationFailed):
        cipher.decrypt(SYSTEM_TITLE, 0x30, IC, decoded.payload, extra_aad=tampered.header_aad())


def test_general_ciphering_wrapped_key_unwraps() -> None:
    new_key = bytes(range(16))
    wrapped = wrap_key(EK, new_key)
    decoded = decode_ciphered(general_ciphering(WrappedKey(0, wrapped)).to_bytes())
    assert isinstance(decoded, GeneralCiphering)
    assert isinstance(decoded.key_info, WrappedKey)
    assert unwrap_key(EK, decoded.key_info.key_ciphered_data) == new_key


# --- hypothesis -------------------------------------------------------------------------

octets = st.binary(max_size=300)
counters = st.integers(min_value=0, max_value=2**32 - 1)
bytes_1 = st.integers(min_value=0, max_value=255)

service_specific = st.builds(
    ServiceSpecificCiphered, st.sampled_from(list(CipheredApduTag)), bytes_1, counters, octets
)
general_glo = st.builds(GeneralGloCiphering, st.binary(max_size=200), bytes_1, counters, octets)
general_ded = st.builds(GeneralDedCiphering, st.binary(max_size=200), bytes_1, counters, octets)
key_infos = st.one_of(
    st.none(),
    st.builds(IdentifiedKey, st.sampled_from(list(KeyId))),
    st.builds(WrappedKey, st.just(0), st.binary(max_size=200)),
)
general = st.builds(
    GeneralCiphering,
    octets,
    octets,
    octets,
    octets,
    octets,
    key_infos,
    bytes_1,
    counters,
    octets,
)
containers = st.one_of(service_specific, general_glo, general_ded, general)


@settings(max_examples=400, deadline=None)
@given(containers)
def test_container_encode_decode_round_trip(value: Any) -> None:
    encoded = value.to_bytes()
    decoded = decode_ciphered(encoded)
    assert decoded == value
    assert type(decoded).from_bytes(encoded) == value
    assert decoded.to_bytes() == encoded  # decode -> encode byte-exact


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_decode_arbitrary_bytes_raises_only_dlms_errors(data: bytes) -> None:
    try:
        decoded = decode_ciphered(data)
    except DlmsError:
        return
    assert decoded.to_bytes() == data  # whatever decodes is canonical


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(CIPHERED_FIRST_BYTES)), st.binary(max_size=80))
def test_decode_arbitrary_body_after_a_ciphered_tag(tag: int, body: bytes) -> None:
    data = bytes((tag,)) + body
    try:
        decoded = decode_ciphered(data)
    except DlmsError:
        return
    assert decoded.to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(containers, st.data())
def test_mutated_containers_raise_only_dlms_errors(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(value.to_bytes())
    at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[at] = data.draw(bytes_1)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    try:
        decode_ciphered(bytes(encoded[:cut]))
    except DlmsError:
        return
