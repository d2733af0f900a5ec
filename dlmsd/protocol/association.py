"""Association parameters shared by the client and server cores.

What a client proposes (:class:`ClientSettings`), what a server accepts
(:class:`ServerSettings`), the security levels, and the few fixed COSEM names an
association needs (the current Association LN object and its
reply_to_HLS_authentication method). Settings are checked once, here, at the
edge: the connection cores trust them.
"""

from __future__ import annotations

import enum

import attrs

from dlmsd.protocol.apdus.common import CosemMethodDescriptor
from dlmsd.protocol.apdus.initiate import Conformance
from dlmsd.protocol.errors import EncodeError
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import KEY_LENGTH, SYSTEM_TITLE_LENGTH, Suite0Cipher

__all__ = [
    "ASSOCIATION_LN_CLASS_ID",
    "CURRENT_ASSOCIATION",
    "DEFAULT_FRAME_COUNTER",
    "REPLY_TO_HLS_AUTHENTICATION",
    "Authentication",
    "Ciphering",
    "ClientSettings",
    "ServerSettings",
    "dedicated_cipher",
    "default_conformance",
    "next_invocation_counter",
]

ASSOCIATION_LN_CLASS_ID = 15
#: The Association LN object of the current association (Blue Book 4.4.3).
CURRENT_ASSOCIATION = Obis(0, 0, 40, 0, 0, 255)
#: reply_to_HLS_authentication: the client's f(StoC) in, the server's f(CtoS) out.
REPLY_TO_HLS_AUTHENTICATION = CosemMethodDescriptor(
    ASSOCIATION_LN_CLASS_ID, CURRENT_ASSOCIATION, 1
)
#: The usual invocation counter object a public client reads before a ciphered session.
DEFAULT_FRAME_COUNTER = Obis(0, 0, 43, 1, 0, 255)

_MIN_PDU_SIZE = 12  # Green Book: smaller than this cannot carry a useful APDU


class Authentication(enum.IntEnum):
    """Authentication mechanism of an association, ordered by strength.

    The order doubles as the association level for access rights: an attribute
    readable at LLS is readable at HLS_GMAC too.
    """

    NONE = 0
    LLS = 1
    HLS_GMAC = 5


class Ciphering(enum.Enum):
    """How the xDLMS service APDUs of an association are protected."""

    NONE = "none"
    GLOBAL = "global"
    DEDICATED = "dedicated"


def default_conformance(use_gbt: bool = False) -> Conformance:
    """What a client proposes unless told otherwise."""
    proposed = (
        Conformance.GET
        | Conformance.SET
        | Conformance.ACTION
        | Conformance.SELECTIVE_ACCESS
        | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
        | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
        | Conformance.BLOCK_TRANSFER_WITH_ACTION
        | Conformance.MULTIPLE_REFERENCES
    )
    if use_gbt:
        proposed |= Conformance.GENERAL_BLOCK_TRANSFER
    return proposed


def next_invocation_counter(frame_counter_value: int) -> int:
    """The outgoing IC to start from, given the meter's frame counter object value.

    The object holds the last counter the meter accepted from this client, so the
    next one must be above it (meters that hold the *next* value accept it too).
    """
    return frame_counter_value + 1


def dedicated_cipher(global_cipher: Suite0Cipher, dedicated_key: bytes) -> Suite0Cipher:
    """A cipher for ded- APDUs: the dedicated key with the global authentication key."""
    # Suite0Cipher keeps its AK private so it cannot leak into logs; the dedicated
    # context shares it by definition (Green Book 9.2.3).
    return global_cipher.with_encryption_key(dedicated_key)


def _redacted(value: object) -> str:
    return "None" if value is None else "<redacted>"


def _check_title(value: bytes | None, what: str) -> None:
    if value is not None and len(value) != SYSTEM_TITLE_LENGTH:
        raise EncodeError(f"{what} must be {SYSTEM_TITLE_LENGTH} bytes, got {len(value)}")


@attrs.frozen(slots=True, kw_only=True)
class ClientSettings:
    """What a client proposes when it associates, and how it protects its APDUs.

    ``invocation_counter`` is the first outgoing IC: read the meter's frame
    counter object (e.g. 0-0:43.1.0.255) through a public association first and
    start at :func:`next_invocation_counter` of it. ``dedicated_key`` is only used
    with :attr:`Ciphering.DEDICATED`; when None a fresh one is drawn per
    association from the connection's challenge source.
    """

    client_sap: int = 16
    server_logical_device: int = 1
    authentication: Authentication = Authentication.NONE
    password: bytes | None = attrs.field(default=None, repr=_redacted)
    ciphering: Ciphering = Ciphering.NONE
    cipher: Suite0Cipher | None = attrs.field(default=None, repr=_redacted)
    client_system_title: bytes | None = None
    invocation_counter: int = 1
    conformance: Conformance | None = None
    max_pdu_size: int = 0xFFFF
    use_gbt: bool = False
    gbt_window: int = 1
    dedicated_key: bytes | None = attrs.field(default=None, repr=_redacted)
    challenge_length: int = 16
    #: Bound on one reassembled response (block transfer or GBT), against memory abuse.
    max_response_size: int = 16 << 20
    #: How often a GBT recovery request is repeated (one per driver timeout) before failing.
    gbt_retries: int = 3

    def __attrs_post_init__(self) -> None:
        needs_keys = (
            self.authentication == Authentication.HLS_GMAC or self.ciphering != Ciphering.NONE
        )
        if needs_keys and (self.cipher is None or self.client_system_title is None):
            raise EncodeError("HLS-GMAC and ciphering need a cipher and a client system title")
        if self.authentication == Authentication.LLS and not self.password:
            raise EncodeError("LLS needs a password")
        _check_title(self.client_system_title, "client system title")
        if self.dedicated_key is not None and len(self.dedicated_key) != KEY_LENGTH:
            raise EncodeError(f"the dedicated key must be {KEY_LENGTH} bytes")
        if not 0 <= self.invocation_counter <= 0xFFFFFFFF:
            raise EncodeError(f"invocation counter out of range: {self.invocation_counter}")
        if not _MIN_PDU_SIZE <= self.max_pdu_size <= 0xFFFF:
            raise EncodeError(f"max PDU size must be {_MIN_PDU_SIZE}..65535")
        if not 1 <= self.gbt_window <= 63:
            raise EncodeError("GBT window must be 1..63")
        if not 8 <= self.challenge_length <= 64:
            raise EncodeError("HLS challenge length must be 8..64")

    @property
    def proposed_conformance(self) -> Conformance:
        """The conformance block of the AARQ (general-protection when ciphering)."""
        if self.conformance is not None:
            return self.conformance
        proposed = default_conformance(self.use_gbt)
        if self.ciphering != Ciphering.NONE:
            proposed |= Conformance.GENERAL_PROTECTION
        return proposed


@attrs.frozen(slots=True, kw_only=True)
class ServerSettings:
    """What a server (the emulator) accepts.

    A client may associate with any mechanism at or above ``authentication``
    for which the server holds the secret (``password`` for LLS, ``cipher`` for
    HLS-GMAC and ciphering). ``ciphering_required`` refuses plain contexts.
    ``block_size`` / ``gbt_block_size`` force the size of response blocks
    (default: whatever fits the client's max PDU size); ``force_block_transfer``
    sends every GET response in blocks, to exercise the client.
    """

    server_system_title: bytes = b"DLM\x00\x00\x00\x00\x01"
    authentication: Authentication = Authentication.NONE
    password: bytes | None = attrs.field(default=None, repr=_redacted)
    cipher: Suite0Cipher | None = attrs.field(default=None, repr=_redacted)
    ciphering_required: bool = False
    conformance: Conformance = attrs.field(
        default=default_conformance(True)
        | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET
        | Conformance.DATA_NOTIFICATION
    )
    max_pdu_size: int = 0xFFFF
    supports_gbt: bool = True
    gbt_window: int = 1
    block_size: int | None = None
    gbt_block_size: int | None = None
    force_block_transfer: bool = False
    frame_counter: Obis = DEFAULT_FRAME_COUNTER
    #: Who the association is between (Association LN attribute 3 shows them).
    client_sap: int = 16
    server_sap: int = 1
    #: This client SAP has no association here: every AARQ is refused.
    refuse_associations: bool = False

    def __attrs_post_init__(self) -> None:
        _check_title(self.server_system_title, "server system title")
        if not _MIN_PDU_SIZE <= self.max_pdu_size <= 0xFFFF:
            raise EncodeError(f"max PDU size must be {_MIN_PDU_SIZE}..65535")
        if not 1 <= self.gbt_window <= 63:
            raise EncodeError("GBT window must be 1..63")
        for size in (self.block_size, self.gbt_block_size):
            if size is not None and size < 1:
                raise EncodeError("block sizes must be positive")

    @property
    def offered_conformance(self) -> Conformance:
        """The conformance bits the server can grant."""
        if self.supports_gbt:
            return self.conformance
        return self.conformance & ~Conformance.GENERAL_BLOCK_TRANSFER
