"""general-protection: strict in what we send, tolerant in what we accept.

The server grants general-protection in a ciphered context when the client
proposes it, and answers every ciphered request in the form the request used
(general-glo for general-glo, glo- for glo-). The client sends general-glo/ded
when it was granted, the service-specific glo-/ded- form otherwise. (dlms-cosem
sends general-glo whatever was granted; see tests/interop/ for the real peer.)
"""

from __future__ import annotations

import pytest

from dlmsd.protocol.apdus.initiate import Conformance
from dlmsd.protocol.association import (
    Authentication,
    Ciphering,
    ClientSettings,
    default_conformance,
)
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.ciphered import (
    GeneralGloCiphering,
    ServiceSpecificCiphered,
    decode_ciphered,
)
from dlmsd.protocol.client import Associated, GetResult, Released
from dlmsd.protocol.security import Suite0Cipher
from tests.protocol.test_client_server import (
    AK,
    CLIENT_TITLE,
    EK,
    SERVER_TITLE,
    VOLUME,
    Link,
    associate,
    hls_settings,
    make,
)

GENERAL_GLO, GENERAL_DED = 0xDB, 0xDC
GLO_GET_REQUEST, GLO_ACTION_REQUEST = 0xC8, 0xCB
GLO_GET_RESPONSE, GLO_ACTION_RESPONSE = 0xCC, 0xCF
DED_GET_REQUEST, DED_GET_RESPONSE = 0xD0, 0xD4


class Recorder:
    """Wraps a link's server so every APDU both ways is kept, in order."""

    def __init__(self, link: Link) -> None:
        self.sent: list[bytes] = []
        self.answered: list[bytes] = []
        receive = link.server.receive_apdu

        def spy(apdu: bytes) -> list[bytes]:
            self.sent.append(apdu)
            out = receive(apdu)
            self.answered.extend(out)
            return out

        link.server.receive_apdu = spy  # type: ignore[method-assign]

    def tags(self) -> tuple[list[int], list[int]]:
        return [a[0] for a in self.sent], [a[0] for a in self.answered]


def test_granted_when_ciphered_and_proposed_then_general_glo_both_ways() -> None:
    link = make(hls_settings(ciphering=Ciphering.GLOBAL))
    recorder = Recorder(link)
    event = associate(link)
    assert event.conformance & Conformance.GENERAL_PROTECTION
    assert link.server.conformance & Conformance.GENERAL_PROTECTION
    result = link.run(link.client.get(VOLUME))
    assert isinstance(result, GetResult) and isinstance(result.result, Data)
    assert isinstance(link.run(link.client.release()), Released)
    sent, answered = recorder.tags()
    # AARQ, the HLS reply, the GET, the RLRQ; AARE, the HLS answer, the GET answer, RLRE
    assert sent == [0x60, GENERAL_GLO, GENERAL_GLO, 0x62]
    assert answered == [0x61, GENERAL_GLO, GENERAL_GLO, 0x63]
    # the envelopes carry each side's own system title
    assert GeneralGloCiphering.from_bytes(recorder.sent[1]).system_title == CLIENT_TITLE
    assert GeneralGloCiphering.from_bytes(recorder.answered[1]).system_title == SERVER_TITLE


def test_dedicated_uses_general_ded_when_granted() -> None:
    link = make(hls_settings(ciphering=Ciphering.DEDICATED))
    recorder = Recorder(link)
    associate(link)
    result = link.run(link.client.get(VOLUME))
    assert isinstance(result, GetResult) and isinstance(result.result, Data)
    sent, answered = recorder.tags()
    assert sent[1:] == [GENERAL_DED, GENERAL_DED]
    assert answered[1:] == [GENERAL_DED, GENERAL_DED]


@pytest.mark.parametrize(
    ("ciphering", "request_tags", "response_tags"),
    [
        (Ciphering.GLOBAL, [GLO_ACTION_REQUEST, GLO_GET_REQUEST], [GLO_ACTION_RESPONSE, 0xCC]),
        (Ciphering.DEDICATED, [0xD3, DED_GET_REQUEST], [0xD7, DED_GET_RESPONSE]),
    ],
)
def test_not_proposed_means_service_specific_both_ways(
    ciphering: Ciphering, request_tags: list[int], response_tags: list[int]
) -> None:
    settings = hls_settings(ciphering=ciphering, conformance=default_conformance())
    link = make(settings)
    recorder = Recorder(link)
    event = associate(link)
    assert not event.conformance & Conformance.GENERAL_PROTECTION
    result = link.run(link.client.get(VOLUME))
    assert isinstance(result, GetResult) and isinstance(result.result, Data)
    sent, answered = recorder.tags()
    assert sent[1:] == request_tags
    assert answered[1:] == response_tags


def test_plain_context_never_grants_general_protection() -> None:
    proposed = default_conformance() | Conformance.GENERAL_PROTECTION
    link = make(hls_settings(conformance=proposed))  # HLS-GMAC, unciphered context
    event = associate(link)
    assert not event.conformance & Conformance.GENERAL_PROTECTION


def _as_general_glo(apdu: bytes) -> bytes:
    """Re-wrap a client's glo- request as general-glo (same IC), as dlms-cosem sends it."""
    cipher = Suite0Cipher(EK, AK)
    container = decode_ciphered(apdu)
    assert isinstance(container, ServiceSpecificCiphered)
    counter = container.invocation_counter
    plain = cipher.decrypt(CLIENT_TITLE, container.security_control, counter, container.payload)
    payload = cipher.encrypt(CLIENT_TITLE, 0x30, counter, plain)
    return GeneralGloCiphering(CLIENT_TITLE, 0x30, counter, payload).to_bytes()


def test_server_answers_general_glo_even_when_not_granted() -> None:
    """dlms-cosem 25.1.0 sends reply_to_HLS_authentication as general-glo whether or not
    general-protection was granted: the server answers in that form (it used to answer
    glo-action-response 0xCF, which dlms-cosem cannot parse)."""
    settings = hls_settings(ciphering=Ciphering.GLOBAL, conformance=default_conformance())
    link = make(settings)
    client, server = link.client, link.server
    aare = server.receive_apdu(client.associate())
    assert len(aare) == 1
    client.receive_apdu(aare[0])
    (hls_reply,) = client.data_to_send()
    assert hls_reply[0] == GLO_ACTION_REQUEST
    rewrapped = _as_general_glo(hls_reply)
    (answer,) = server.receive_apdu(rewrapped)
    assert answer[0] == GENERAL_GLO
    # and our client, tolerant, takes the general-glo answer though it sent glo-
    client.receive_apdu(answer)
    assert isinstance(client.next_event(), Associated)
    # the next glo- request is answered glo- again: the form follows each request
    (response,) = server.receive_apdu(client.get(VOLUME))
    assert response[0] == GLO_GET_RESPONSE


def test_lls_ciphered_uses_general_glo_when_granted() -> None:
    settings = ClientSettings(
        authentication=Authentication.LLS,
        password=b"12345678",
        ciphering=Ciphering.GLOBAL,
        cipher=Suite0Cipher(EK, AK),
        client_system_title=CLIENT_TITLE,
    )
    link = make(settings)
    recorder = Recorder(link)
    associate(link)
    link.run(link.client.get(VOLUME))
    sent, answered = recorder.tags()
    assert sent[1:] == [GENERAL_GLO] and answered[1:] == [GENERAL_GLO]
