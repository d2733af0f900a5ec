"""The sans-io client side of a DLMS/COSEM association (model: h11's ``Connection``).

The caller moves bytes; this object decides what they mean::

    conn = ClientConnection(settings)
    send(conn.associate())
    while True:
        conn.receive_apdu(read_apdu())         # from the wrapper / HDLC layer
        for apdu in conn.data_to_send():       # block requests, GBT acks, the HLS reply
            send(apdu)
        event = conn.next_event()
        if event is not NEED_DATA: break
    send(conn.get(CosemAttributeDescriptor(8, Obis(0, 0, 1, 0, 0, 255), 2)))
    ...

One confirmed request is outstanding at a time. Block transfer (GET/SET/ACTION),
GBT, ciphering and HLS-GMAC's fourth pass run inside: the caller only sees the
final event. Whatever the meter sends, :meth:`receive_apdu` does not raise: bad
input becomes a :class:`ProtocolFailure` event and the connection goes to
``FAILED``. Misuse (a request in the wrong state) raises
:class:`~dlmsd.protocol.errors.ProtocolError`. No clocks: the driver owns the
timers and calls :meth:`on_timeout`.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeAlias

import attrs

from dlmsd.protocol.apdus.acse import (
    AARE,
    AARE_TAG,
    AARQ,
    RLRE,
    RLRE_TAG,
    RLRQ,
    AcseServiceUserDiagnostic,
    ApplicationContext,
    AssociationResult,
    DiagnosticSource,
    Mechanism,
    ReleaseRequestReason,
    ResultSourceDiagnostic,
)
from dlmsd.protocol.apdus.action import (
    ActionRequestNextPBlock,
    ActionRequestNormal,
    ActionRequestWithFirstPBlock,
    ActionRequestWithPBlock,
    ActionResponseNextPBlock,
    ActionResponseNormal,
    ActionResponseWithPBlock,
    decode_action_response,
)
from dlmsd.protocol.apdus.common import (
    AttributeWithSelection,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    InvokeIdAndPriority,
    SelectiveAccess,
    read_sequence_of,
)
from dlmsd.protocol.apdus.errors import (
    ActionResult,
    ConfirmedServiceError,
    DataAccessResult,
    ExceptionResponse,
    ServiceErrorKind,
)
from dlmsd.protocol.apdus.get import (
    GetDataResult,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
    decode_get_response,
    read_get_data_result,
)
from dlmsd.protocol.apdus.initiate import (
    INITIATE_RESPONSE_TAG,
    Conformance,
    InitiateRequest,
    InitiateResponse,
)
from dlmsd.protocol.apdus.notification import DataNotification, EventNotificationRequest
from dlmsd.protocol.apdus.set import (
    SetRequestNormal,
    SetRequestWithDataBlock,
    SetRequestWithFirstDataBlock,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseNormal,
    decode_set_response,
)
from dlmsd.protocol.association import (
    REPLY_TO_HLS_AUTHENTICATION,
    Authentication,
    Ciphering,
    ClientSettings,
    dedicated_cipher,
)
from dlmsd.protocol.axdr import Data, decode_data_exact, encode_data
from dlmsd.protocol.ciphered import (
    CIPHERED_TAGS,
    CipheredApduTag,
    GeneralDedCiphering,
    GeneralGloCiphering,
    ServiceSpecificCiphered,
    decode_ciphered,
)
from dlmsd.protocol.errors import (
    AuthenticationFailed,
    DecodeError,
    DlmsError,
    LengthError,
    ProtocolError,
    ReplayError,
    SecurityError,
    UnsupportedSecurity,
)
from dlmsd.protocol.events import NEED_DATA, NeedDataType
from dlmsd.protocol.gbt import GbtReceiver, GeneralBlockTransfer, SendAck, TransferComplete
from dlmsd.protocol.security import Suite0Cipher, hls_gmac_response, verify_hls_gmac_response

__all__ = [
    "ActionOutcome",
    "Associated",
    "AssociationRefused",
    "ClientConnection",
    "ClientEvent",
    "ClientState",
    "ExceptionReceived",
    "GetListResult",
    "GetResult",
    "ProtocolFailure",
    "Released",
    "SetResult",
    "UnsolicitedApdu",
]

# Authenticated encryption of every service APDU we send.
_SECURITY_CONTROL = 0x30
# tag + long length (3) + SC + IC(4) + GCM tag(12): what ciphering adds to an APDU.
_CIPHER_OVERHEAD = 1 + 3 + 1 + 4 + 12
# general-glo/ded also carry our system title (length + 8 bytes)
_GENERAL_OVERHEAD = 1 + 8
# Room for the A-XDR length of a block's raw-data.
_LENGTH_ROOM = 5
_GBT_TAG = GeneralBlockTransfer.TAG


class ClientState(enum.Enum):
    """Where the association stands."""

    IDLE = "idle"
    AWAITING_AARE = "awaiting-aare"
    AWAITING_HLS_REPLY = "awaiting-hls-reply"
    ASSOCIATED = "associated"
    AWAITING_RESPONSE = "awaiting-response"
    AWAITING_RLRE = "awaiting-rlre"
    RELEASED = "released"
    FAILED = "failed"


# --- events ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Associated:
    """The association is open (after HLS-GMAC's fourth pass when that is used)."""

    aare: AARE
    conformance: Conformance
    server_max_pdu_size: int
    server_system_title: bytes | None


@attrs.frozen(slots=True)
class AssociationRefused:
    """The meter refused the association, or failed to prove it holds the keys."""

    result: AssociationResult | None
    diagnostic: ResultSourceDiagnostic | None
    reason: str


@attrs.frozen(slots=True)
class GetResult:
    """The value of one attribute, or why the meter did not give it."""

    invoke_id: int
    result: GetDataResult


@attrs.frozen(slots=True)
class GetListResult:
    """One result per attribute of a :meth:`ClientConnection.get_with_list`."""

    invoke_id: int
    results: tuple[GetDataResult, ...]


@attrs.frozen(slots=True)
class SetResult:
    """The outcome of one SET (normal or in blocks)."""

    invoke_id: int
    result: DataAccessResult


@attrs.frozen(slots=True)
class ActionOutcome:
    """The outcome of one ACTION and the method's return data, if any."""

    invoke_id: int
    result: ActionResult
    return_data: GetDataResult | None = None


@attrs.frozen(slots=True)
class Released:
    """The association was released (RLRE received)."""

    rlre: RLRE


@attrs.frozen(slots=True)
class ExceptionReceived:
    """The meter answered the outstanding request with an error APDU."""

    invoke_id: int | None
    error: ExceptionResponse | ConfirmedServiceError


@attrs.frozen(slots=True)
class UnsolicitedApdu:
    """A DataNotification / EventNotification that arrived during the session (deciphered)."""

    apdu: bytes


@attrs.frozen(slots=True)
class ProtocolFailure:
    """The session cannot go on: bad or unexpected bytes, a forged reply, a timeout."""

    reason: str


ClientEvent: TypeAlias = (
    Associated
    | AssociationRefused
    | GetResult
    | GetListResult
    | SetResult
    | ActionOutcome
    | Released
    | ExceptionReceived
    | UnsolicitedApdu
    | ProtocolFailure
)


# --- the outstanding request ----------------------------------------------------------


class _Kind(enum.Enum):
    GET = "get"
    GET_LIST = "get-with-list"
    SET = "set"
    ACTION = "action"
    HLS = "hls-reply"


class _Pending:
    """The request in flight and its block-transfer state (mutable, internal)."""

    __slots__ = (
        "blocks_out",
        "count",
        "invoke_id",
        "kind",
        "next_block",
        "parts",
        "received",
        "sent_block",
    )

    def __init__(self, kind: _Kind, invoke_id: int, count: int = 1) -> None:
        self.kind = kind
        self.invoke_id = invoke_id
        self.count = count
        # incoming blocks (GET datablocks, ACTION pblocks)
        self.next_block = 1
        self.parts: list[bytes] = []
        self.received = 0
        # outgoing blocks (SET datablocks, ACTION pblocks): the chunks still to send
        self.blocks_out: list[bytes] = []
        self.sent_block = 1


_REFUSAL_REASONS: dict[int, str] = {
    AcseServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED: (
        "application context not supported (ciphering required or not available?)"
    ),
    AcseServiceUserDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED: "client system title not accepted",
    AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED: (
        "authentication mechanism not supported by the meter"
    ),
    AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED: (
        "the meter requires authentication"
    ),
    AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED: "the meter requires authentication",
}


class ClientConnection:
    """The client end of one association: APDUs in, events out (see the module doc).

    ``challenge_source(n)`` gives the n random bytes of the HLS challenge CtoS (and a
    dedicated key when none is configured); tests inject fixed bytes.
    """

    def __init__(
        self,
        settings: ClientSettings,
        challenge_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.settings = settings
        self._challenge_source = challenge_source
        self._state = ClientState.IDLE
        self._events: deque[ClientEvent] = deque()
        self._outgoing: list[bytes] = []
        self._invocation_counter = settings.invocation_counter
        self._invoke_id = 0
        self._pending: _Pending | None = None
        self._ctos = b""
        self._server_title: bytes | None = None
        self._server_ic_seen = -1
        self._dedicated: Suite0Cipher | None = None
        self._dedicated_key: bytes | None = None
        self._conformance = Conformance(0)
        self._server_max_pdu = 0xFFFF
        self._aare: AARE | None = None
        self._gbt: GbtReceiver | None = None
        self._gbt_retries = 0

    # -- introspection -----------------------------------------------------------------
    @property
    def state(self) -> ClientState:
        """Where the association stands."""
        return self._state

    @property
    def invocation_counter(self) -> int:
        """The IC the next ciphered APDU will carry (persist it between sessions)."""
        return self._invocation_counter

    @property
    def conformance(self) -> Conformance:
        """The negotiated conformance (empty before the AARE)."""
        return self._conformance

    @property
    def server_max_pdu_size(self) -> int:
        """The largest APDU the meter accepts."""
        return self._server_max_pdu

    @property
    def bytes_received(self) -> int:
        """Bytes of the current long response received so far (progress display)."""
        if self._gbt is not None:
            return self._gbt.in_order
        return 0 if self._pending is None else self._pending.received

    @property
    def _ciphered(self) -> bool:
        return self.settings.ciphering != Ciphering.NONE

    @property
    def _general_protection(self) -> bool:
        """The meter granted general-protection: service APDUs go in general-glo/ded."""
        return self._ciphered and bool(self._conformance & Conformance.GENERAL_PROTECTION)

    @property
    def _cipher_overhead(self) -> int:
        if not self._ciphered:
            return 0
        return _CIPHER_OVERHEAD + (_GENERAL_OVERHEAD if self._general_protection else 0)

    # -- requests ----------------------------------------------------------------------
    def associate(self) -> bytes:
        """The AARQ that opens the association."""
        self._require(ClientState.IDLE, "associate")
        settings = self.settings
        dedicated_key: bytes | None = None
        if settings.ciphering == Ciphering.DEDICATED:
            assert settings.cipher is not None  # checked by ClientSettings
            dedicated_key = settings.dedicated_key or self._challenge_source(16)
            self._dedicated = dedicated_cipher(settings.cipher, dedicated_key)
        initiate = InitiateRequest(
            proposed_conformance=settings.proposed_conformance,
            client_max_receive_pdu_size=settings.max_pdu_size,
            dedicated_key=dedicated_key,
        ).to_bytes()
        mechanism: Mechanism | None = None
        auth_value: bytes | None = None
        if settings.authentication == Authentication.LLS:
            mechanism, auth_value = Mechanism.LLS, settings.password
        elif settings.authentication == Authentication.HLS_GMAC:
            self._ctos = self._challenge_source(settings.challenge_length)
            mechanism, auth_value = Mechanism.HLS_GMAC, self._ctos
        if self._ciphered:
            initiate = self._encrypt(
                CipheredApduTag.GLO_INITIATE_REQUEST, initiate, global_key=True
            )
        aarq = AARQ(
            application_context=(
                ApplicationContext.LOGICAL_NAME_CIPHERED
                if self._ciphered
                else ApplicationContext.LOGICAL_NAME
            ),
            calling_ap_title=(
                settings.client_system_title
                if mechanism == Mechanism.HLS_GMAC or self._ciphered
                else None
            ),
            sender_acse_requirements=mechanism is not None,
            mechanism=mechanism,
            calling_authentication_value=auth_value,
            user_information=initiate,
        )
        self._state = ClientState.AWAITING_AARE
        return aarq.to_bytes()

    def get(
        self, attribute: CosemAttributeDescriptor, access: SelectiveAccess | None = None
    ) -> bytes:
        """GET one attribute; the answer is a :class:`GetResult` event."""
        pending = self._start(_Kind.GET, "get")
        request = GetRequestNormal(self._invoke_byte(pending), attribute, access)
        return self._protect(request.to_bytes())

    def get_with_list(self, items: Sequence[AttributeWithSelection]) -> bytes:
        """GET several attributes at once; the answer is a :class:`GetListResult` event."""
        if not items:
            raise ProtocolError("get_with_list needs at least one attribute")
        self._require_conformance(Conformance.MULTIPLE_REFERENCES, "GET with-list")
        pending = self._start(_Kind.GET_LIST, "get_with_list", count=len(items))
        request = GetRequestWithList(self._invoke_byte(pending), tuple(items))
        return self._protect(request.to_bytes())

    def set(
        self,
        attribute: CosemAttributeDescriptor,
        value: Data,
        access: SelectiveAccess | None = None,
    ) -> bytes:
        """SET one attribute, in blocks when it does not fit the meter's PDU size."""
        self._require_associated("set")
        encoded = encode_data(value)  # raises EncodeError before any state changes
        pending = self._start(_Kind.SET, "set")
        invoke = self._invoke_byte(pending)
        normal = SetRequestNormal(invoke, attribute, access, value).to_bytes()
        if self._fits(normal):
            return self._protect(normal)
        if not self._conformance & Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE:
            self._abandon()
            raise ProtocolError("value too large for one APDU and the meter has no SET blocks")
        head = SetRequestWithFirstDataBlock(invoke, attribute, access, False, 1, b"").to_bytes()
        chunks = self._chunks(encoded, len(head))
        pending.blocks_out = chunks[1:]
        first = SetRequestWithFirstDataBlock(
            invoke, attribute, access, len(chunks) == 1, 1, chunks[0]
        )
        return self._protect(first.to_bytes())

    def action(self, method: CosemMethodDescriptor, parameters: Data | None = None) -> bytes:
        """Invoke a method, its parameters in pblocks when they do not fit one APDU."""
        self._require_associated("action")
        encoded = None if parameters is None else encode_data(parameters)
        pending = self._start(_Kind.ACTION, "action")
        invoke = self._invoke_byte(pending)
        normal = ActionRequestNormal(invoke, method, parameters).to_bytes()
        if encoded is None or self._fits(normal):
            return self._protect(normal)
        if not self._conformance & Conformance.BLOCK_TRANSFER_WITH_ACTION:
            self._abandon()
            raise ProtocolError("parameters too large and the meter has no ACTION blocks")
        head = ActionRequestWithFirstPBlock(invoke, method, False, 1, b"").to_bytes()
        chunks = self._chunks(encoded, len(head))
        pending.blocks_out = chunks[1:]
        first = ActionRequestWithFirstPBlock(invoke, method, len(chunks) == 1, 1, chunks[0])
        return self._protect(first.to_bytes())

    def release(self) -> bytes:
        """The RLRQ that closes the association; the answer is a :class:`Released` event."""
        self._require_associated("release")
        self._state = ClientState.AWAITING_RLRE
        return RLRQ(reason=ReleaseRequestReason.NORMAL).to_bytes()

    # -- input -------------------------------------------------------------------------
    def receive_apdu(self, apdu: bytes) -> None:
        """Take one complete APDU from the transport. Never raises for what the meter sent."""
        if self._state in (ClientState.FAILED, ClientState.RELEASED, ClientState.IDLE):
            return
        try:
            self._receive(bytes(apdu))
        except DlmsError as exc:
            self._fail(f"bad response from the meter: {exc}")

    def on_timeout(self) -> None:
        """The driver's timer ran out waiting for the meter.

        During a GBT transfer this asks again for the missing blocks (see
        :meth:`data_to_send`) up to ``settings.gbt_retries`` times; otherwise, or
        after that, the session fails with a :class:`ProtocolFailure`.
        """
        if self._state in (ClientState.FAILED, ClientState.RELEASED, ClientState.IDLE):
            return
        if self._gbt is not None:
            if self._gbt_retries < self.settings.gbt_retries:
                self._gbt_retries += 1
                self._outgoing.append(self._gbt.on_timeout().to_bytes())
                return
            missing = self._gbt.missing or (self._gbt.in_order + 1,)
            self._fail(
                f"GBT block(s) {', '.join(map(str, missing))} still missing after "
                f"{self.settings.gbt_retries} recovery requests"
            )
            return
        self._fail(f"no answer from the meter (timeout while {self._state.value})")

    def next_event(self) -> ClientEvent | NeedDataType:
        """The next event, or ``NEED_DATA`` when the meter's next APDU is needed."""
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    def data_to_send(self) -> list[bytes]:
        """APDUs the core produced on its own (block requests, GBT acks, the HLS reply)."""
        out, self._outgoing = self._outgoing, []
        return out

    # -- internals: requests -----------------------------------------------------------
    def _require(self, state: ClientState, what: str) -> None:
        if self._state != state:
            raise ProtocolError(f"cannot {what} in state {self._state.value}")

    def _require_associated(self, what: str) -> None:
        self._require(ClientState.ASSOCIATED, what)

    def _require_conformance(self, bit: Conformance, what: str) -> None:
        self._require_associated(what)
        if not self._conformance & bit:
            raise ProtocolError(f"{what} was not negotiated with the meter")

    def _start(self, kind: _Kind, what: str, count: int = 1) -> _Pending:
        self._require_associated(what)
        self._invoke_id = (self._invoke_id + 1) & 0x0F
        self._pending = _Pending(kind, self._invoke_id, count)
        self._state = ClientState.AWAITING_RESPONSE
        return self._pending

    def _abandon(self) -> None:
        self._pending = None
        self._state = ClientState.ASSOCIATED

    @staticmethod
    def _invoke_byte(pending: _Pending) -> int:
        return InvokeIdAndPriority.make(pending.invoke_id).raw

    def _fits(self, plain: bytes) -> bool:
        return len(plain) + self._cipher_overhead <= self._server_max_pdu

    def _chunks(self, encoded: bytes, head_size: int) -> list[bytes]:
        overhead = head_size + _LENGTH_ROOM + self._cipher_overhead
        size = max(self._server_max_pdu - overhead, 1)
        return [encoded[i : i + size] for i in range(0, len(encoded), size)] or [b""]

    def _take_invocation_counter(self) -> int:
        value = self._invocation_counter
        if value > 0xFFFFFFFF:
            raise ProtocolError("the invocation counter is exhausted: new keys are needed")
        self._invocation_counter = value + 1
        return value

    def _encrypt(
        self, tag: int, plain: bytes, *, global_key: bool, general: bool = False
    ) -> bytes:
        cipher = self.settings.cipher if global_key else self._dedicated
        title = self.settings.client_system_title
        assert cipher is not None and title is not None  # checked by ClientSettings
        counter = self._take_invocation_counter()
        payload = cipher.encrypt(title, _SECURITY_CONTROL, counter, plain)
        if general:
            envelope = GeneralGloCiphering if global_key else GeneralDedCiphering
            return envelope(title, _SECURITY_CONTROL, counter, payload).to_bytes()
        return ServiceSpecificCiphered(tag, _SECURITY_CONTROL, counter, payload).to_bytes()

    def _protect(self, plain: bytes) -> bytes:
        """Wrap a service APDU when the association is ciphered: general-glo/ded when the
        meter granted general-protection, the service-specific glo-/ded- form otherwise."""
        if not self._ciphered:
            return plain
        dedicated = self.settings.ciphering == Ciphering.DEDICATED
        return self._encrypt(
            plain[0] + (16 if dedicated else 8),
            plain,
            global_key=not dedicated,
            general=self._general_protection,
        )

    def _send(self, plain: bytes) -> None:
        self._outgoing.append(self._protect(plain))

    # -- internals: responses ----------------------------------------------------------
    def _fail(self, reason: str) -> None:
        self._state = ClientState.FAILED
        self._pending = None
        self._gbt = None
        self._events.append(ProtocolFailure(reason))

    def _refuse(
        self,
        reason: str,
        result: AssociationResult | None = None,
        diagnostic: ResultSourceDiagnostic | None = None,
    ) -> None:
        self._state = ClientState.FAILED
        self._pending = None
        self._events.append(AssociationRefused(result, diagnostic, reason))

    def _finish(self, event: ClientEvent) -> None:
        self._pending = None
        self._state = ClientState.ASSOCIATED
        self._events.append(event)

    def _receive(self, apdu: bytes) -> None:
        if not apdu:
            raise DecodeError("empty APDU")
        tag = apdu[0]
        if tag == _GBT_TAG:
            self._receive_gbt(apdu)
            return
        if self._state == ClientState.AWAITING_AARE:
            self._receive_aare(apdu)
            return
        if tag == RLRE_TAG:
            if self._state != ClientState.AWAITING_RLRE:
                raise ProtocolError("RLRE without a release request")
            self._state = ClientState.RELEASED
            self._events.append(Released(RLRE.from_bytes(apdu)))
            return
        if tag in CIPHERED_TAGS:
            apdu = self._decipher(apdu)
            tag = apdu[0] if apdu else -1
        elif self._ciphered and tag not in (ExceptionResponse.TAG, ConfirmedServiceError.TAG):
            raise SecurityError(f"unciphered APDU 0x{tag:02X} in a ciphered association")
        self._dispatch(tag, apdu)

    def _dispatch(self, tag: int, apdu: bytes) -> None:
        if tag in (DataNotification.TAG, EventNotificationRequest.TAG):
            self._events.append(UnsolicitedApdu(apdu))
            return
        if tag == ExceptionResponse.TAG or tag == ConfirmedServiceError.TAG:
            self._receive_error(
                ExceptionResponse.from_bytes(apdu)
                if tag == ExceptionResponse.TAG
                else ConfirmedServiceError.from_bytes(apdu)
            )
            return
        pending = self._pending
        if pending is None:
            raise ProtocolError(f"APDU 0x{tag:02X} while no request is outstanding")
        if tag == 0xC4:
            self._receive_get(pending, apdu)
        elif tag == 0xC5:
            self._receive_set(pending, apdu)
        elif tag == 0xC7:
            self._receive_action(pending, apdu)
        else:
            raise ProtocolError(f"unexpected APDU 0x{tag:02X} in answer to a {pending.kind.value}")

    def _receive_error(self, error: ExceptionResponse | ConfirmedServiceError) -> None:
        if self._state == ClientState.AWAITING_HLS_REPLY:
            self._refuse(f"the meter refused the HLS-GMAC reply: {_describe_error(error)}")
            return
        invoke = None if self._pending is None else self._pending.invoke_id
        if self._state == ClientState.AWAITING_RESPONSE:
            self._finish(ExceptionReceived(invoke, error))
        else:
            self._events.append(ExceptionReceived(invoke, error))

    def _decipher(self, apdu: bytes) -> bytes:
        container = decode_ciphered(apdu)
        cipher = self.settings.cipher
        title = self._server_title
        if isinstance(container, ServiceSpecificCiphered):
            if container.is_dedicated:
                cipher = self._dedicated
        elif isinstance(container, GeneralGloCiphering):
            title = container.system_title or title
        elif isinstance(container, GeneralDedCiphering):
            title = container.system_title or title
            cipher = self._dedicated
        else:
            raise UnsupportedSecurity("general-ciphering responses are not supported")
        if cipher is None:
            raise SecurityError("ciphered APDU but no matching key in this association")
        if title is None:
            raise SecurityError("ciphered APDU but the meter sent no system title")
        if container.invocation_counter <= self._server_ic_seen:
            raise ReplayError(
                f"meter invocation counter {container.invocation_counter} not above "
                f"{self._server_ic_seen} (replayed response?)"
            )
        plain = cipher.decrypt(
            title, container.security_control, container.invocation_counter, container.payload
        )
        self._server_ic_seen = container.invocation_counter
        if plain and plain[0] in CIPHERED_TAGS:
            raise DecodeError("ciphered APDU inside a ciphered APDU")
        return plain

    def _receive_gbt(self, apdu: bytes) -> None:
        if not self._conformance & Conformance.GENERAL_BLOCK_TRANSFER:
            raise ProtocolError("general-block-transfer was not negotiated")
        if self._state != ClientState.AWAITING_RESPONSE:
            raise ProtocolError("general-block-transfer while no request is outstanding")
        block = GeneralBlockTransfer.from_bytes(apdu)
        if self._gbt is None:
            self._gbt = GbtReceiver(
                self.settings.gbt_window, max_size=self.settings.max_response_size
            )
        before = self._gbt.in_order
        outcome = self._gbt.receive(block)
        if self._gbt.in_order != before:
            self._gbt_retries = 0  # progress: the retry budget is per stall
        if isinstance(outcome, SendAck):
            self._outgoing.append(outcome.apdu.to_bytes())
        elif isinstance(outcome, TransferComplete):
            self._gbt = None
            self._gbt_retries = 0
            inner = outcome.apdu
            if inner[:1] == bytes((_GBT_TAG,)):
                raise DecodeError("general-block-transfer inside general-block-transfer")
            self._receive(inner)

    # -- association -------------------------------------------------------------------
    def _receive_aare(self, apdu: bytes) -> None:
        if apdu[0] in (ExceptionResponse.TAG, ConfirmedServiceError.TAG):
            error = (
                ExceptionResponse.from_bytes(apdu)
                if apdu[0] == ExceptionResponse.TAG
                else ConfirmedServiceError.from_bytes(apdu)
            )
            self._refuse(f"association refused: {_describe_error(error)}")
            return
        if apdu[0] != AARE_TAG:
            raise ProtocolError(f"expected an AARE, got APDU 0x{apdu[0]:02X}")
        aare = AARE.from_bytes(apdu)
        self._aare = aare
        self._server_title = aare.responding_ap_title
        if not aare.accepted:
            self._refuse(self._refusal_reason(aare), aare.result, aare.result_source_diagnostic)
            return
        if self._ciphered and (self._server_title is None or len(self._server_title) != 8):
            self._refuse("the meter sent no valid system title", aare.result)
            return
        try:
            initiate = self._initiate_response(aare.user_information)
        except AuthenticationFailed:
            self._refuse("wrong keys: the meter's initiate response does not decrypt")
            return
        if isinstance(initiate, ConfirmedServiceError):
            self._refuse(f"association refused: {_describe_error(initiate)}", aare.result)
            return
        self._conformance = initiate.negotiated_conformance
        self._server_max_pdu = initiate.server_max_receive_pdu_size or 0xFFFF
        if self._server_max_pdu < 12:
            raise DecodeError(f"meter max PDU size {self._server_max_pdu} is too small")
        if self.settings.authentication != Authentication.HLS_GMAC:
            self._associated()
            return
        stoc = aare.responding_authentication_value
        if aare.mechanism != Mechanism.HLS_GMAC or not stoc:
            self._refuse("the meter did not start HLS-GMAC (no server challenge)", aare.result)
            return
        cipher, title = self.settings.cipher, self.settings.client_system_title
        assert cipher is not None and title is not None  # checked by ClientSettings
        f_stoc = hls_gmac_response(cipher, title, self._take_invocation_counter(), stoc)
        self._state = ClientState.AWAITING_HLS_REPLY
        self._invoke_id = (self._invoke_id + 1) & 0x0F
        self._pending = _Pending(_Kind.HLS, self._invoke_id)
        request = ActionRequestNormal(
            self._invoke_byte(self._pending),
            REPLY_TO_HLS_AUTHENTICATION,
            Data.octet_string(f_stoc),
        )
        self._send(request.to_bytes())

    def _initiate_response(self, info: bytes | None) -> InitiateResponse | ConfirmedServiceError:
        if not info:
            raise DecodeError("AARE without an initiate response")
        if info[0] in CIPHERED_TAGS:
            info = self._decipher(info)
            if not info:
                raise DecodeError("empty initiate response")
        elif self._ciphered:
            if info[0] == ConfirmedServiceError.TAG:
                return ConfirmedServiceError.from_bytes(info)
            raise SecurityError("unciphered initiate response in a ciphered association")
        if info[0] == ConfirmedServiceError.TAG:
            return ConfirmedServiceError.from_bytes(info)
        if info[0] != INITIATE_RESPONSE_TAG:
            raise DecodeError(f"AARE user-information 0x{info[0]:02X} is not an initiate response")
        return InitiateResponse.from_bytes(info)

    def _refusal_reason(self, aare: AARE) -> str:
        error: ConfirmedServiceError | None = None
        info = aare.user_information
        try:
            if info and info[0] in CIPHERED_TAGS:
                info = self._decipher(info)
            if info and info[0] == ConfirmedServiceError.TAG:
                error = ConfirmedServiceError.from_bytes(info)
        except DlmsError:
            error = None  # the diagnostic below still says why
        diagnostic = aare.result_source_diagnostic
        if diagnostic.source == DiagnosticSource.ACSE_SERVICE_USER:
            if diagnostic.value == AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE:
                if self.settings.authentication == Authentication.LLS:
                    return "association refused: wrong password"
                return "association refused: authentication failed (wrong keys?)"
            known = _REFUSAL_REASONS.get(diagnostic.value)
            if known is not None:
                return f"association refused: {known}"
        if error is not None:
            if (
                error.error.kind == ServiceErrorKind.APPLICATION_REFERENCE
                and error.error.reason == 6
            ):
                return "association refused: wrong keys (the meter could not decipher the request)"
            return f"association refused: {_describe_error(error)}"
        name = getattr(diagnostic.value, "name", str(diagnostic.value))
        return f"association refused ({aare.result.name.lower()}, diagnostic {name})"

    def _associated(self) -> None:
        assert self._aare is not None
        self._pending = None
        self._state = ClientState.ASSOCIATED
        self._events.append(
            Associated(self._aare, self._conformance, self._server_max_pdu, self._server_title)
        )

    def _receive_hls_reply(self, response: ActionResponseNormal) -> None:
        if response.result != ActionResult.SUCCESS:
            self._refuse(
                f"wrong keys: the meter refused our HLS-GMAC reply ({response.result.name})"
            )
            return
        value = response.return_parameters
        if not isinstance(value, Data) or not isinstance(value.value, bytes):
            self._refuse("the meter's HLS-GMAC reply carries no octet-string")
            return
        cipher = self.settings.cipher
        assert cipher is not None
        if self._server_title is None or len(self._server_title) != 8:
            self._refuse("the meter sent no valid system title: its HLS reply cannot be checked")
            return
        try:
            verify_hls_gmac_response(cipher, self._server_title, self._ctos, value.value)
        except AuthenticationFailed:
            self._refuse("wrong keys: the meter's HLS-GMAC reply does not verify")
            return
        except DlmsError as exc:
            self._refuse(f"malformed HLS-GMAC reply from the meter: {exc}")
            return
        self._associated()

    # -- services ----------------------------------------------------------------------
    def _check_invoke(self, pending: _Pending, invoke_byte: int) -> None:
        if invoke_byte & 0x0F != pending.invoke_id:
            raise ProtocolError(
                f"response for invoke id {invoke_byte & 0x0F}, expected {pending.invoke_id}"
            )

    def _take_block(self, pending: _Pending, number: int, raw: bytes) -> None:
        if number != pending.next_block:
            raise ProtocolError(f"block {number} out of sequence, expected {pending.next_block}")
        pending.received += len(raw)
        if pending.received > self.settings.max_response_size:
            raise LengthError(f"response exceeds {self.settings.max_response_size} bytes")
        pending.parts.append(raw)
        pending.next_block += 1

    def _receive_get(self, pending: _Pending, apdu: bytes) -> None:
        if pending.kind not in (_Kind.GET, _Kind.GET_LIST):
            raise ProtocolError(f"GET response in answer to a {pending.kind.value}")
        response = decode_get_response(apdu)
        self._check_invoke(pending, response.invoke_id_and_priority)
        listed = pending.kind == _Kind.GET_LIST
        if isinstance(response, GetResponseNormal):
            if listed:
                raise ProtocolError("get-response-normal in answer to get-with-list")
            self._finish(GetResult(pending.invoke_id, response.result))
            return
        if isinstance(response, GetResponseWithList):
            if not listed or len(response.results) != pending.count:
                raise ProtocolError(
                    f"get-response-with-list of {len(response.results)} results "
                    f"for {pending.count if listed else 'a single'} attribute(s)"
                )
            self._finish(GetListResult(pending.invoke_id, response.results))
            return
        assert isinstance(response, GetResponseWithDataBlock)
        if isinstance(response.result, DataAccessResult):
            # The meter aborted the long GET.
            if listed:
                self._finish(GetListResult(pending.invoke_id, (response.result,) * pending.count))
            else:
                self._finish(GetResult(pending.invoke_id, response.result))
            return
        self._take_block(pending, response.block_number, response.result)
        if not response.last_block:
            next_request = GetRequestNext(response.invoke_id_and_priority, response.block_number)
            self._send(next_request.to_bytes())
            return
        raw = b"".join(pending.parts)
        if listed:
            results, end = read_sequence_of(raw, 0, read_get_data_result, "result list", 2)
            if end != len(raw) or len(results) != pending.count:
                raise DecodeError("block-transferred result list does not match the request")
            self._finish(GetListResult(pending.invoke_id, results))
        else:
            self._finish(GetResult(pending.invoke_id, decode_data_exact(raw)))

    def _receive_set(self, pending: _Pending, apdu: bytes) -> None:
        if pending.kind != _Kind.SET:
            raise ProtocolError(f"SET response in answer to a {pending.kind.value}")
        response = decode_set_response(apdu)
        self._check_invoke(pending, response.invoke_id_and_priority)
        if isinstance(response, SetResponseNormal | SetResponseLastDataBlock):
            if isinstance(response, SetResponseLastDataBlock) and pending.blocks_out:
                raise ProtocolError("last-datablock response before the last block was sent")
            self._finish(SetResult(pending.invoke_id, response.result))
            return
        if isinstance(response, SetResponseDataBlock):
            if response.block_number != pending.sent_block or not pending.blocks_out:
                raise ProtocolError(f"meter acknowledged SET block {response.block_number}")
            pending.sent_block += 1
            chunk = pending.blocks_out.pop(0)
            block = SetRequestWithDataBlock(
                response.invoke_id_and_priority,
                not pending.blocks_out,
                pending.sent_block,
                chunk,
            )
            self._send(block.to_bytes())
            return
        raise ProtocolError(f"unexpected {type(response).__name__}")

    def _receive_action(self, pending: _Pending, apdu: bytes) -> None:
        if pending.kind not in (_Kind.ACTION, _Kind.HLS):
            raise ProtocolError(f"ACTION response in answer to a {pending.kind.value}")
        response = decode_action_response(apdu)
        self._check_invoke(pending, response.invoke_id_and_priority)
        if pending.kind == _Kind.HLS:
            if not isinstance(response, ActionResponseNormal):
                raise ProtocolError("HLS reply must be an action-response-normal")
            self._receive_hls_reply(response)
            return
        if isinstance(response, ActionResponseNormal):
            if pending.blocks_out:
                raise ProtocolError("action response before the last parameter block was sent")
            self._finish(
                ActionOutcome(pending.invoke_id, response.result, response.return_parameters)
            )
        elif isinstance(response, ActionResponseNextPBlock):
            if response.block_number != pending.sent_block or not pending.blocks_out:
                raise ProtocolError(f"meter acknowledged ACTION block {response.block_number}")
            pending.sent_block += 1
            chunk = pending.blocks_out.pop(0)
            block = ActionRequestWithPBlock(
                response.invoke_id_and_priority,
                not pending.blocks_out,
                pending.sent_block,
                chunk,
            )
            self._send(block.to_bytes())
        elif isinstance(response, ActionResponseWithPBlock):
            if pending.blocks_out:
                raise ProtocolError("response blocks before the last parameter block was sent")
            self._take_block(pending, response.block_number, response.raw_data)
            if not response.last_block:
                ack = ActionRequestNextPBlock(
                    response.invoke_id_and_priority, response.block_number
                )
                self._send(ack.to_bytes())
                return
            data = decode_data_exact(b"".join(pending.parts))
            self._finish(ActionOutcome(pending.invoke_id, ActionResult.SUCCESS, data))
        else:
            raise ProtocolError("action-response-with-list in answer to a single action")


def _describe_error(error: ExceptionResponse | ConfirmedServiceError) -> str:
    if isinstance(error, ExceptionResponse):
        text = f"exception {error.state_error.name.lower()}/{error.service_error.name.lower()}"
        if error.invocation_counter is not None:
            text += f" (meter expects invocation counter {error.invocation_counter})"
        return text
    try:
        reason = error.error.reason_name.lower()
    except ValueError:
        reason = str(error.error.reason)
    return f"{error.service.name.lower()}: {error.error.kind.name.lower()} {reason}"
