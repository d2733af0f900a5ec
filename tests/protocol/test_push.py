"""The push pipeline: peel (no crypto), open (tag first), decode."""

from __future__ import annotations

import attrs
import pytest

from dlmsd.protocol.ciphered import GeneralCiphering, GeneralGloCiphering, IdentifiedKey, KeyId
from dlmsd.protocol.errors import AuthenticationFailed, UnsupportedSecurity
from dlmsd.protocol.push import decode_push, peel
from dlmsd.protocol.security import Suite0Cipher
from tests.vectors import by_kind

# ../shared/docs/dlms-reference.md section 4: keys, system title, IC of the vectors.
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = bytes.fromhex("4D4D4D0000BC614E")
IC = 0x01234567
# Fact sheet vector 3: DataNotification, invoke id 1, structure{dlu 12345, OBIS 1-0:1.8.0}.
NOTIFICATION = bytes.fromhex("0F0000000100020206000030390906010001 0800FF".replace(" ", ""))
CIPHER = Suite0Cipher(EK, AK)


def test_fact_sheet_general_glo_vector() -> None:
    apdu = bytes.fromhex(
        "DB084D4D4D0000BC614E263001234567"
        "8E1212FF9A5A45556E273B55851798F90F624704884948FC3E15574307AF2732AE"
    )
    envelope = peel(apdu)
    assert (envelope.system_title, envelope.invocation_counter) == (TITLE, IC)
    assert envelope.security == "auth+enc"
    assert envelope.open(CIPHER) == NOTIFICATION


def test_plaintext_notification_has_no_envelope_security() -> None:
    (vector,) = by_kind("data_notification_apdu")  # pwitab/dlms-cosem test_data_notification
    push = decode_push(bytes.fromhex(vector["hex"]), lambda _title: None)
    assert push.envelope.security == "none"
    assert push.notification.invoke_id == 475


def test_empty_system_title_is_taken_from_the_transport() -> None:
    payload = CIPHER.encrypt(TITLE, 0x30, IC, NOTIFICATION)
    apdu = GeneralGloCiphering(b"", 0x30, IC, payload).to_bytes()
    push = decode_push(apdu, lambda _title: CIPHER, system_title=TITLE)
    assert push.system_title == TITLE
    assert push.notification.to_bytes() == NOTIFICATION


@pytest.mark.parametrize("control", [0x32, 0xB0, 0x00, 0x40])
def test_unsupported_security_control(control: int) -> None:
    apdu = GeneralGloCiphering(TITLE, control, IC, bytes(20)).to_bytes()
    with pytest.raises(UnsupportedSecurity):
        peel(apdu)


def _general_ciphering(transaction_id: bytes) -> GeneralCiphering:
    header = GeneralCiphering(
        transaction_id,
        TITLE,
        b"",
        b"",
        b"",
        IdentifiedKey(KeyId.GLOBAL_UNICAST_ENCRYPTION_KEY),
        0x30,
        IC,
        b"",
    )
    payload = CIPHER.encrypt(TITLE, 0x30, IC, NOTIFICATION, extra_aad=header.header_aad())
    return attrs.evolve(header, payload=payload)


def test_general_ciphering_authenticates_its_header() -> None:
    container = _general_ciphering(b"\x01")
    push = decode_push(container.to_bytes(), lambda _title: CIPHER)
    assert push.notification.to_bytes() == NOTIFICATION
    tampered = attrs.evolve(container, transaction_id=b"\x02")
    with pytest.raises(AuthenticationFailed):
        decode_push(tampered.to_bytes(), lambda _title: CIPHER)
