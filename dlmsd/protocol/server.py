"""The sans-io server side of an association: the meter emulator's core.

One :class:`ServerConnection` per client connection: every complete APDU from
the client goes to :meth:`ServerConnection.receive_apdu`, which returns the
APDUs to send back (AARE, responses, datablocks, GBT blocks, exception
responses). The objects come from an :class:`~dlmsd.cosem.model.ObjectModel`;
the invocation counters it keeps survive the connection, as a meter's do.

It never raises for what a client sends: malformed or out-of-place APDUs are
answered with an EXCEPTION-Response, refused associations with a rejecting
AARE. ``drop_gbt_blocks`` lets tests lose GBT blocks on purpose.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections.abc import Callable

from dlmsd.cosem.model import AssociationView, ObjectModel
from dlmsd.protocol.apdus.acse import (
    AARE,
    AARQ,
    AARQ_TAG,
    RLRE,
    RLRQ_TAG,
    AcseServiceUserDiagnostic,
    AssociationResult,
    Mechanism,
    ReleaseResponseReason,
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
    decode_action_request,
)
from dlmsd.protocol.apdus.common import (
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    SelectiveAccess,
    encode_sequence_of,
)
from dlmsd.protocol.apdus.errors import (
    ActionResult,
    ConfirmedServiceError,
    ConfirmedServiceErrorChoice,
    DataAccessResult,
    ExceptionResponse,
    ExceptionServiceError,
    InitiateError,
    ServiceError,
    ServiceErrorKind,
    StateError,
)
from dlmsd.protocol.apdus.get import (
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
    decode_get_request,
    encode_get_data_result,
)
from dlmsd.protocol.apdus.initiate import (
    INITIATE_REQUEST_TAG,
    Conformance,
    InitiateRequest,
    InitiateResponse,
)
from dlmsd.protocol.apdus.set import (
    SetRequestNormal,
    SetRequestWithDataBlock,
    SetRequestWithFirstDataBlock,
    SetRequestWithList,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseNormal,
    SetResponseWithList,
    decode_set_request,
)
from dlmsd.protocol.association import (
    REPLY_TO_HLS_AUTHENTICATION,
    Authentication,
    ServerSettings,
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
from dlmsd.protocol.errors import AuthenticationFailed, DlmsError, SecurityError
from dlmsd.protocol.gbt import GbtSender, GeneralBlockTransfer
from dlmsd.protocol.security import Suite0Cipher, hls_gmac_response, verify_hls_gmac_response

__all__ = ["Protection", "ServerConnection", "ServerState"]

_SECURITY_CONTROL = 0x30
_CIPHER_OVERHEAD = 1 + 3 + 1 + 4 + 12
# general-glo/ded also carry the sender's system title (length + 8 bytes)
_GENERAL_OVERHEAD = 1 + 8
# get-response-with-datablock header: tag, choice, invoke, last, number(4), choice, length(<=5)
_DATABLOCK_OVERHEAD = 3 + 1 + 4 + 1 + 5
_GBT_OVERHEAD = 6 + 5
_SERVICES = Conformance.GET | Conformance.SET | Conformance.ACTION
_MIN_PDU_SIZE = 12


class Protection(enum.Enum):
    """How a ciphered request was protected; the response is protected the same way."""

    GLO = "glo"
    DED = "ded"
    GENERAL_GLO = "general-glo"
    GENERAL_DED = "general-ded"

    @property
    def dedicated(self) -> bool:
        return self in (Protection.DED, Protection.GENERAL_DED)

    @property
    def general(self) -> bool:
        return self in (Protection.GENERAL_GLO, Protection.GENERAL_DED)


class ServerState(enum.Enum):
    """Where the association stands, server side."""

    IDLE = "idle"
    AWAITING_HLS = "awaiting-hls-reply"
    ASSOCIATED = "associated"
    RELEASED = "released"


def _exception(
    service: ExceptionServiceError = ExceptionServiceError.OPERATION_NOT_POSSIBLE,
    state: StateError = StateError.SERVICE_NOT_ALLOWED,
    counter: int | None = None,
) -> bytes:
    return ExceptionResponse(state, service, counter).to_bytes()


def _initiate_error(reason: InitiateError | int, kind: ServiceErrorKind) -> bytes:
    error = ServiceError(kind, int(reason))
    return ConfirmedServiceError(ConfirmedServiceErrorChoice.INITIATE_ERROR, error).to_bytes()


class _Refused(Exception):
    """Internal: the AARQ is refused with this diagnostic (and user-information)."""

    def __init__(self, diagnostic: AcseServiceUserDiagnostic, info: bytes | None = None) -> None:
        super().__init__(diagnostic.name)
        self.diagnostic = diagnostic
        self.info = info


class _OutgoingBlocks:
    """A long response being sent in datablocks (GET) or pblocks (ACTION)."""

    __slots__ = ("block_size", "invoke", "number", "raw")

    def __init__(self, invoke: int, raw: bytes, block_size: int) -> None:
        self.invoke = invoke
        self.raw = raw
        self.block_size = block_size
        self.number = 0  # the last block sent

    def next_block(self) -> tuple[bool, int, bytes]:
        start = self.number * self.block_size
        self.number += 1
        chunk = self.raw[start : start + self.block_size]
        return start + self.block_size >= len(self.raw), self.number, chunk


class _IncomingBlocks:
    """A long request arriving in datablocks (SET) or pblocks (ACTION)."""

    __slots__ = ("access", "number", "parts", "target")

    def __init__(
        self,
        target: CosemAttributeDescriptor | CosemMethodDescriptor,
        access: SelectiveAccess | None,
    ) -> None:
        self.target = target
        self.access = access
        self.parts: list[bytes] = []
        self.number = 0


class ServerConnection:
    """The server end of one association (see the module doc)."""

    def __init__(
        self,
        model: ObjectModel,
        settings: ServerSettings,
        challenge_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.model = model
        self.settings = settings
        self._challenge_source = challenge_source
        self._state = ServerState.IDLE
        self._level = Authentication.NONE
        self._ciphered = False
        self._client_title: bytes | None = None
        self._dedicated: Suite0Cipher | None = None
        self._conformance = Conformance(0)
        self._client_max_pdu = 0xFFFF
        self._ctos = b""
        self._stoc = b""
        self._reply = Protection.GLO
        self._view = AssociationView(settings.client_sap, settings.server_sap)
        self._long_get: _OutgoingBlocks | None = None
        self._long_action_out: _OutgoingBlocks | None = None
        self._long_set: _IncomingBlocks | None = None
        self._long_action_in: _IncomingBlocks | None = None
        self._gbt: GbtSender | None = None
        #: Test hook: GBT block numbers to lose once each (never sent the first time).
        self.drop_gbt_blocks: set[int] = set()

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def level(self) -> Authentication:
        """The association level access rights are checked against."""
        return self._level

    @property
    def conformance(self) -> Conformance:
        """The negotiated conformance."""
        return self._conformance

    # -- input ---------------------------------------------------------------------------
    def receive_apdu(self, apdu: bytes) -> list[bytes]:
        """Handle one complete APDU from the client; return the APDUs to send back."""
        apdu = bytes(apdu)
        if not apdu:
            return [_exception(ExceptionServiceError.OTHER_REASON)]
        try:
            return self._receive(apdu)
        except DlmsError:
            return [_exception(ExceptionServiceError.OTHER_REASON, StateError.SERVICE_UNKNOWN)]

    def _receive(self, apdu: bytes) -> list[bytes]:
        tag = apdu[0]
        if tag == AARQ_TAG:
            if self._state in (ServerState.ASSOCIATED, ServerState.AWAITING_HLS):
                return [_exception()]
            return [self._associate(AARQ.from_bytes(apdu))]
        if self._state in (ServerState.IDLE, ServerState.RELEASED):
            return [_exception()]
        if tag == RLRQ_TAG:
            self._state = ServerState.RELEASED
            return [RLRE(reason=ReleaseResponseReason.NORMAL).to_bytes()]
        if tag == GeneralBlockTransfer.TAG:
            return self._receive_gbt_ack(GeneralBlockTransfer.from_bytes(apdu))
        protection = Protection.GLO
        if tag in CIPHERED_TAGS:
            if not self._ciphered:
                return [_exception()]
            try:
                apdu, protection = self._decipher(apdu)
            except _CounterRejected as exc:
                return [
                    _exception(
                        ExceptionServiceError.INVOCATION_COUNTER_ERROR, counter=exc.expected
                    )
                ]
            except SecurityError:
                return [_exception(ExceptionServiceError.DECIPHERING_ERROR)]
            if not apdu:
                return [_exception(ExceptionServiceError.OTHER_REASON)]
            tag = apdu[0]
        elif self._ciphered:
            return [_exception()]
        self._reply = protection
        self._gbt = None  # a new request ends any GBT transfer still waiting for acks
        self.model.current = self._view  # Association LN shows this association
        if self._state == ServerState.AWAITING_HLS:
            return self._receive_hls(apdu)
        if tag == 0xC0:
            return self._get(apdu)
        if tag == 0xC1:
            return self._set(apdu)
        if tag == 0xC3:
            return self._action(apdu)
        return [
            self._protect(
                _exception(ExceptionServiceError.SERVICE_NOT_SUPPORTED, StateError.SERVICE_UNKNOWN)
            )
        ]

    # -- association ---------------------------------------------------------------------
    def _associate(self, aarq: AARQ) -> bytes:
        context = aarq.application_context
        try:
            accepted = self._check_aarq(aarq)
        except _Refused as refused:
            return AARE(
                application_context=context,
                result=AssociationResult.REJECTED_PERMANENT,
                result_source_diagnostic=ResultSourceDiagnostic.user(refused.diagnostic),
                user_information=refused.info,
            ).to_bytes()
        return accepted.to_bytes()

    def _check_aarq(self, aarq: AARQ) -> AARE:
        settings = self.settings
        context = aarq.application_context
        diagnostic = AcseServiceUserDiagnostic
        if settings.refuse_associations:
            raise _Refused(diagnostic.NO_REASON_GIVEN)
        if not context.logical_name:
            raise _Refused(diagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        ciphered = context.ciphered
        if (ciphered and settings.cipher is None) or (
            not ciphered and settings.ciphering_required
        ):
            raise _Refused(diagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        mechanism = aarq.mechanism or Mechanism.LOWEST
        title = aarq.calling_ap_title
        needs_title = ciphered or mechanism == Mechanism.HLS_GMAC
        if needs_title and (title is None or len(title) != 8):
            raise _Refused(diagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED)
        level = self._authenticate(aarq, mechanism)
        if level < settings.authentication:
            raise _Refused(diagnostic.AUTHENTICATION_REQUIRED)
        self._client_title = title
        self._ciphered = ciphered
        initiate = self._initiate_request(aarq.user_information)
        if initiate.proposed_dlms_version < 6:
            raise _Refused(
                diagnostic.NO_REASON_GIVEN,
                _initiate_error(InitiateError.DLMS_VERSION_TOO_LOW, ServiceErrorKind.INITIATE),
            )
        offered = settings.offered_conformance
        if ciphered:
            # general-glo/general-ded: served whenever the context is ciphered
            offered |= Conformance.GENERAL_PROTECTION
        conformance = initiate.proposed_conformance & offered
        if not conformance & _SERVICES:
            raise _Refused(
                diagnostic.NO_REASON_GIVEN,
                _initiate_error(InitiateError.INCOMPATIBLE_CONFORMANCE, ServiceErrorKind.INITIATE),
            )
        max_pdu = initiate.client_max_receive_pdu_size or 0xFFFF
        if max_pdu < _MIN_PDU_SIZE:
            raise _Refused(
                diagnostic.NO_REASON_GIVEN,
                _initiate_error(InitiateError.PDU_SIZE_TOO_SHORT, ServiceErrorKind.INITIATE),
            )
        if initiate.dedicated_key is not None and ciphered:
            assert settings.cipher is not None
            try:
                self._dedicated = dedicated_cipher(settings.cipher, initiate.dedicated_key)
            except DlmsError:
                raise _Refused(diagnostic.NO_REASON_GIVEN) from None
        self._conformance = Conformance(conformance)
        self._client_max_pdu = max_pdu
        self._view = AssociationView(
            client_sap=settings.client_sap,
            server_sap=settings.server_sap,
            application_context=int(context),
            mechanism=int(mechanism),
            conformance=int(conformance),
            max_receive_pdu=settings.max_pdu_size,
            max_send_pdu=max_pdu,
        )
        response = InitiateResponse(
            negotiated_conformance=self._conformance,
            server_max_receive_pdu_size=settings.max_pdu_size,
        ).to_bytes()
        if ciphered:
            response = self._encrypt(CipheredApduTag.GLO_INITIATE_RESPONSE, response, False)
        hls = mechanism == Mechanism.HLS_GMAC
        if hls:
            self._state = ServerState.AWAITING_HLS
            self._stoc = self._challenge_source(16)
        else:
            self._state = ServerState.ASSOCIATED
            self._level = level
        return AARE(
            application_context=context,
            result=AssociationResult.ACCEPTED,
            result_source_diagnostic=ResultSourceDiagnostic.user(
                diagnostic.AUTHENTICATION_REQUIRED if hls else diagnostic.NULL
            ),
            responding_ap_title=settings.server_system_title if needs_title else None,
            responder_acse_requirements=hls,
            mechanism=Mechanism.HLS_GMAC if hls else None,
            responding_authentication_value=self._stoc if hls else None,
            user_information=response,
        )

    def _authenticate(self, aarq: AARQ, mechanism: Mechanism) -> Authentication:
        settings = self.settings
        diagnostic = AcseServiceUserDiagnostic
        if mechanism == Mechanism.LOWEST:
            return Authentication.NONE
        if mechanism == Mechanism.LLS:
            given = aarq.calling_authentication_value or b""
            if settings.password is None or not hmac.compare_digest(given, settings.password):
                raise _Refused(diagnostic.AUTHENTICATION_FAILURE)
            return Authentication.LLS
        if mechanism == Mechanism.HLS_GMAC and settings.cipher is not None:
            challenge = aarq.calling_authentication_value or b""
            if not 8 <= len(challenge) <= 64:
                raise _Refused(diagnostic.AUTHENTICATION_FAILURE)
            self._ctos = challenge
            return Authentication.HLS_GMAC
        raise _Refused(diagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)

    def _initiate_request(self, info: bytes | None) -> InitiateRequest:
        refused = _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN)
        if not info:
            raise refused
        try:
            if self._ciphered:
                if info[0] != CipheredApduTag.GLO_INITIATE_REQUEST:
                    raise refused
                info, _ = self._decipher(info)
            if not info or info[0] != INITIATE_REQUEST_TAG:
                raise refused
            return InitiateRequest.from_bytes(info)
        except (SecurityError, _CounterRejected):
            raise _Refused(
                AcseServiceUserDiagnostic.NO_REASON_GIVEN,
                _initiate_error(6, ServiceErrorKind.APPLICATION_REFERENCE),  # deciphering-error
            ) from None
        except DlmsError:
            raise refused from None

    def _receive_hls(self, apdu: bytes) -> list[bytes]:
        """Before pass 4 of HLS-GMAC, only reply_to_HLS_authentication is served."""
        try:
            request = ActionRequestNormal.from_bytes(apdu)
        except DlmsError:
            return [self._protect(_exception())]
        if request.method != REPLY_TO_HLS_AUTHENTICATION or request.parameters is None:
            return [self._protect(_exception())]
        cipher, title = self.settings.cipher, self._client_title
        assert cipher is not None and title is not None
        reply = request.parameters.value
        try:
            if not isinstance(reply, bytes):
                raise AuthenticationFailed("reply_to_HLS_authentication needs an octet-string")
            verify_hls_gmac_response(cipher, title, self._stoc, reply)
        except DlmsError:
            refused = ActionResponseNormal(
                request.invoke_id_and_priority, ActionResult.READ_WRITE_DENIED
            )
            return [self._protect(refused.to_bytes())]
        self._state = ServerState.ASSOCIATED
        self._level = Authentication.HLS_GMAC
        f_ctos = hls_gmac_response(
            cipher, self.settings.server_system_title, self._take_server_ic(), self._ctos
        )
        response = ActionResponseNormal(
            request.invoke_id_and_priority, ActionResult.SUCCESS, Data.octet_string(f_ctos)
        )
        return [self._protect(response.to_bytes())]

    # -- ciphering -----------------------------------------------------------------------
    def _take_server_ic(self) -> int:
        value = self.model.server_invocation_counter
        self.model.server_invocation_counter = value + 1
        return value

    def _encrypt(self, tag: int, plain: bytes, dedicated: bool, general: bool = False) -> bytes:
        cipher = self._dedicated if dedicated else self.settings.cipher
        assert cipher is not None
        title = self.settings.server_system_title
        counter = self._take_server_ic()
        payload = cipher.encrypt(title, _SECURITY_CONTROL, counter, plain)
        if general:
            envelope = GeneralDedCiphering if dedicated else GeneralGloCiphering
            return envelope(title, _SECURITY_CONTROL, counter, payload).to_bytes()
        return ServiceSpecificCiphered(tag, _SECURITY_CONTROL, counter, payload).to_bytes()

    def _protect(self, plain: bytes) -> bytes:
        """Cipher a response the way the request was (glo, ded, general-glo, general-ded);
        exceptions stay plain."""
        if not self._ciphered or plain[0] == ExceptionResponse.TAG:
            return plain
        reply = self._reply
        offset = 16 if reply.dedicated else 8
        return self._encrypt(plain[0] + offset, plain, reply.dedicated, reply.general)

    def _decipher(self, apdu: bytes) -> tuple[bytes, Protection]:
        container = decode_ciphered(apdu)
        title = self._client_title
        if isinstance(container, ServiceSpecificCiphered):
            protection = Protection.DED if container.is_dedicated else Protection.GLO
        elif isinstance(container, GeneralGloCiphering):
            protection = Protection.GENERAL_GLO
            title = container.system_title or title
        elif isinstance(container, GeneralDedCiphering):
            protection = Protection.GENERAL_DED
            title = container.system_title or title
        else:
            raise SecurityError("only service-specific and general-glo/ded ciphering are served")
        dedicated = protection.dedicated
        cipher = self._dedicated if dedicated else self.settings.cipher
        if cipher is None or title is None:
            raise SecurityError("no key for this ciphered APDU")
        counter_object = self.settings.frame_counter
        last = self.model.last_client_invocation_counter(counter_object)
        if container.invocation_counter <= last:
            raise _CounterRejected(min(last + 1, 0xFFFFFFFF))
        plain = cipher.decrypt(
            title, container.security_control, container.invocation_counter, container.payload
        )
        self.model.accept_client_invocation_counter(counter_object, container.invocation_counter)
        return plain, protection

    # -- sending long responses ------------------------------------------------------------
    def _cipher_overhead(self) -> int:
        if not self._ciphered:
            return 0
        return _CIPHER_OVERHEAD + (_GENERAL_OVERHEAD if self._reply.general else 0)

    def _fits(self, plain: bytes) -> bool:
        return len(plain) + self._cipher_overhead() <= self._client_max_pdu

    def _gbt_negotiated(self) -> bool:
        return bool(self._conformance & Conformance.GENERAL_BLOCK_TRANSFER)

    def _send_gbt(self, plain: bytes) -> list[bytes]:
        protected = self._protect(plain)
        size = self.settings.gbt_block_size or max(self._client_max_pdu - _GBT_OVERHEAD, 1)
        self._gbt = GbtSender(protected, size, self.settings.gbt_window)
        return self._gbt_out(self._gbt.start())

    def _gbt_out(self, blocks: list[GeneralBlockTransfer]) -> list[bytes]:
        out = []
        for block in blocks:
            if block.block_number in self.drop_gbt_blocks:
                self.drop_gbt_blocks.discard(block.block_number)
                continue
            out.append(block.to_bytes())
        return out

    def _receive_gbt_ack(self, ack: GeneralBlockTransfer) -> list[bytes]:
        if self._gbt is None:
            return []  # a late ack for a finished transfer
        return self._gbt_out(self._gbt.receive_ack(ack))

    def _block_size(self) -> int:
        if self.settings.block_size is not None:
            return self.settings.block_size
        overhead = _DATABLOCK_OVERHEAD + self._cipher_overhead()
        return max(self._client_max_pdu - overhead, 1)

    def _respond_long(
        self, plain: bytes, raw: bytes, invoke: int, block_bit: Conformance, action: bool
    ) -> list[bytes]:
        """Send `plain` whole when it fits, else by GBT or in (p)blocks of `raw`."""
        forced = self.settings.force_block_transfer and not action
        if self._fits(plain) and not forced:
            return [self._protect(plain)]
        if self._gbt_negotiated():
            return self._send_gbt(plain)
        if not self._conformance & block_bit:
            if action:
                failed = ActionResponseNormal(invoke, ActionResult.OTHER_REASON)
                return [self._protect(failed.to_bytes())]
            return [
                self._protect(GetResponseNormal(invoke, DataAccessResult.OTHER_REASON).to_bytes())
            ]
        blocks = _OutgoingBlocks(invoke, raw, self._block_size())
        if action:
            self._long_action_out = blocks
            return [self._next_pblock(blocks)]
        self._long_get = blocks
        return [self._next_datablock(blocks)]

    def _next_datablock(self, blocks: _OutgoingBlocks) -> bytes:
        last, number, chunk = blocks.next_block()
        if last:
            self._long_get = None
        return self._protect(
            GetResponseWithDataBlock(blocks.invoke, last, number, chunk).to_bytes()
        )

    def _next_pblock(self, blocks: _OutgoingBlocks) -> bytes:
        last, number, chunk = blocks.next_block()
        if last:
            self._long_action_out = None
        return self._protect(
            ActionResponseWithPBlock(blocks.invoke, last, number, chunk).to_bytes()
        )

    # -- GET -----------------------------------------------------------------------------
    def _get(self, apdu: bytes) -> list[bytes]:
        request = decode_get_request(apdu)
        invoke = request.invoke_id_and_priority
        if isinstance(request, GetRequestNext):
            blocks = self._long_get
            if blocks is None or blocks.invoke != invoke:
                failed = GetResponseWithDataBlock(
                    invoke, True, request.block_number, DataAccessResult.NO_LONG_GET_IN_PROGRESS
                )
                return [self._protect(failed.to_bytes())]
            if request.block_number != blocks.number:
                self._long_get = None
                failed = GetResponseWithDataBlock(
                    invoke, True, request.block_number, DataAccessResult.DATA_BLOCK_NUMBER_INVALID
                )
                return [self._protect(failed.to_bytes())]
            return [self._next_datablock(blocks)]
        self._long_get = None
        level = self._level
        block_bit = Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
        if isinstance(request, GetRequestNormal):
            result = self.model.get(request.attribute, request.access, level)
            response = GetResponseNormal(invoke, result).to_bytes()
            if isinstance(result, DataAccessResult):
                return [self._protect(response)]
            return self._respond_long(response, encode_data(result), invoke, block_bit, False)
        assert isinstance(request, GetRequestWithList)
        results = tuple(
            self.model.get(item.attribute, item.access, level) for item in request.items
        )
        response = GetResponseWithList(invoke, results).to_bytes()
        raw = encode_sequence_of(results, encode_get_data_result)
        return self._respond_long(response, raw, invoke, block_bit, False)

    # -- SET -----------------------------------------------------------------------------
    def _set(self, apdu: bytes) -> list[bytes]:
        request = decode_set_request(apdu)
        invoke = request.invoke_id_and_priority
        level = self._level
        if isinstance(request, SetRequestNormal):
            result = self.model.set(request.attribute, request.value, request.access, level)
            return [self._protect(SetResponseNormal(invoke, result).to_bytes())]
        if isinstance(request, SetRequestWithList):
            if len(request.items) != len(request.values):
                results = (DataAccessResult.TYPE_UNMATCHED,) * len(request.items)
            else:
                results = tuple(
                    self.model.set(item.attribute, value, item.access, level)
                    for item, value in zip(request.items, request.values, strict=True)
                )
            return [self._protect(SetResponseWithList(invoke, results).to_bytes())]
        if isinstance(request, SetRequestWithFirstDataBlock):
            self._long_set = _IncomingBlocks(request.attribute, request.access)
            return self._set_block(
                invoke, request.last_block, request.block_number, request.raw_data
            )
        if isinstance(request, SetRequestWithDataBlock):
            return self._set_block(
                invoke, request.last_block, request.block_number, request.raw_data
            )
        return [self._protect(_exception(ExceptionServiceError.SERVICE_NOT_SUPPORTED))]

    def _set_block(self, invoke: int, last: bool, number: int, raw: bytes) -> list[bytes]:
        pending = self._long_set
        if pending is None:
            failed = SetResponseLastDataBlock(
                invoke, DataAccessResult.NO_LONG_SET_IN_PROGRESS, number
            )
            return [self._protect(failed.to_bytes())]
        if number != pending.number + 1:
            self._long_set = None
            failed = SetResponseLastDataBlock(
                invoke, DataAccessResult.DATA_BLOCK_NUMBER_INVALID, number
            )
            return [self._protect(failed.to_bytes())]
        pending.number = number
        pending.parts.append(raw)
        if sum(map(len, pending.parts)) > self.settings.max_pdu_size * 256:
            self._long_set = None
            failed = SetResponseLastDataBlock(invoke, DataAccessResult.LONG_SET_ABORTED, number)
            return [self._protect(failed.to_bytes())]
        if not last:
            return [self._protect(SetResponseDataBlock(invoke, number).to_bytes())]
        self._long_set = None
        assert isinstance(pending.target, CosemAttributeDescriptor)
        try:
            value = decode_data_exact(b"".join(pending.parts))
        except DlmsError:
            result = DataAccessResult.TYPE_UNMATCHED
        else:
            result = self.model.set(pending.target, value, pending.access, self._level)
        return [self._protect(SetResponseLastDataBlock(invoke, result, number).to_bytes())]

    # -- ACTION --------------------------------------------------------------------------
    def _action(self, apdu: bytes) -> list[bytes]:
        request = decode_action_request(apdu)
        invoke = request.invoke_id_and_priority
        if isinstance(request, ActionRequestNormal):
            if request.method == REPLY_TO_HLS_AUTHENTICATION:
                # Already authenticated: the challenge was used up.
                denied = ActionResponseNormal(invoke, ActionResult.READ_WRITE_DENIED)
                return [self._protect(denied.to_bytes())]
            return self._invoke(invoke, request.method, request.parameters)
        if isinstance(request, ActionRequestNextPBlock):
            blocks = self._long_action_out
            if blocks is None or request.block_number != blocks.number:
                self._long_action_out = None
                failed = ActionResponseNormal(invoke, ActionResult.NO_LONG_ACTION_IN_PROGRESS)
                return [self._protect(failed.to_bytes())]
            return [self._next_pblock(blocks)]
        if isinstance(request, ActionRequestWithFirstPBlock):
            self._long_action_in = _IncomingBlocks(request.method, None)
            return self._action_block(
                invoke, request.last_block, request.block_number, request.raw_data
            )
        if isinstance(request, ActionRequestWithPBlock):
            return self._action_block(
                invoke, request.last_block, request.block_number, request.raw_data
            )
        return [self._protect(_exception(ExceptionServiceError.SERVICE_NOT_SUPPORTED))]

    def _invoke(
        self, invoke: int, method: CosemMethodDescriptor, parameters: Data | None
    ) -> list[bytes]:
        result, returned = self.model.action(method, parameters, self._level)
        response = ActionResponseNormal(invoke, result, returned).to_bytes()
        if returned is None:
            return [self._protect(response)]
        block_bit = Conformance.BLOCK_TRANSFER_WITH_ACTION
        return self._respond_long(response, encode_data(returned), invoke, block_bit, True)

    def _action_block(self, invoke: int, last: bool, number: int, raw: bytes) -> list[bytes]:
        pending = self._long_action_in
        if pending is None or number != pending.number + 1:
            self._long_action_in = None
            failed = ActionResponseNormal(invoke, ActionResult.NO_LONG_ACTION_IN_PROGRESS)
            return [self._protect(failed.to_bytes())]
        pending.number = number
        pending.parts.append(raw)
        if not last:
            return [self._protect(ActionResponseNextPBlock(invoke, number).to_bytes())]
        self._long_action_in = None
        assert isinstance(pending.target, CosemMethodDescriptor)
        try:
            parameters = decode_data_exact(b"".join(pending.parts))
        except DlmsError:
            failed = ActionResponseNormal(invoke, ActionResult.TYPE_UNMATCHED)
            return [self._protect(failed.to_bytes())]
        return self._invoke(invoke, pending.target, parameters)


class _CounterRejected(Exception):
    """Internal: a client invocation counter not above the last one accepted."""

    def __init__(self, expected: int) -> None:
        super().__init__(f"invocation counter must be at least {expected}")
        self.expected = expected
