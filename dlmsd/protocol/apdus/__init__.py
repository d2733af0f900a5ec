"""xDLMS and ACSE APDUs, and `decode_apdu`, which picks the decoder by tag.

Each APDU module can be used on its own; this package only dispatches.
"""

from __future__ import annotations

from collections.abc import Callable

from dlmsd.protocol.errors import TruncatedError, UnknownTagError

Decoder = Callable[[bytes], object]

_DECODERS: dict[int, Decoder] = {}


def _decoders() -> dict[int, Decoder]:
    # Built on first use: the APDU modules import helpers from this package.
    if _DECODERS:
        return _DECODERS
    from dlmsd.protocol import ciphered, gbt
    from dlmsd.protocol.apdus import acse, action, errors, get, initiate, notification, set

    table: dict[int, Decoder] = {
        initiate.INITIATE_REQUEST_TAG: initiate.InitiateRequest.from_bytes,
        initiate.INITIATE_RESPONSE_TAG: initiate.InitiateResponse.from_bytes,
        errors.ConfirmedServiceError.TAG: errors.decode_confirmed_service_error,
        notification.DataNotification.TAG: notification.DataNotification.from_bytes,
        acse.AARQ_TAG: acse.AARQ.from_bytes,
        acse.AARE_TAG: acse.AARE.from_bytes,
        acse.RLRQ_TAG: acse.RLRQ.from_bytes,
        acse.RLRE_TAG: acse.RLRE.from_bytes,
        0xC0: get.decode_get_request,
        0xC1: set.decode_set_request,
        0xC2: notification.EventNotificationRequest.from_bytes,
        0xC3: action.decode_action_request,
        0xC4: get.decode_get_response,
        0xC5: set.decode_set_response,
        0xC7: action.decode_action_response,
        errors.ExceptionResponse.TAG: errors.decode_exception_response,
        gbt.GeneralBlockTransfer.TAG: gbt.decode_general_block_transfer,
    }
    for tag in ciphered.CIPHERED_TAGS:
        table[tag] = ciphered.decode_ciphered
    _DECODERS.update(table)
    return _DECODERS


def decode_apdu(buf: bytes) -> object:
    """Decode any APDU this package knows, by its first byte.

    Ciphered APDUs come back as their container (not decrypted): opening them
    needs keys, see `dlmsd.protocol.push` and `dlmsd.protocol.security`.
    """
    if not buf:
        raise TruncatedError("empty APDU", 0)
    decoder = _decoders().get(buf[0])
    if decoder is None:
        raise UnknownTagError(f"unknown APDU tag 0x{buf[0]:02X}", 0)
    return decoder(bytes(buf))


def known_tags() -> frozenset[int]:
    """Every first byte `decode_apdu` accepts."""
    return frozenset(_decoders())
