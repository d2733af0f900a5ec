"""Adapters that drive the peer libraries (dlms-cosem, gurux-dlms) for the benchmarks.

The bench only CALLS the peers through their public (or, where noted, their
documented-by-use internal) entry points; nothing here copies their code.
Both are bench-only dependencies (`pip install -e '.[bench]'`): `dlmsd/` never
imports them. Imports happen inside the factory functions, so a missing peer
turns into a "n/a" row instead of a crash.

Every adapter has the same shape: `decode(x)` does the timed work and returns
the peer's own result; `summarize(result)` turns that result into plain values
the harness compares with the published vectors. `summarize` is never timed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any

import attrs


@attrs.frozen(slots=True)
class PushSummary:
    """What a push decoder found in one frame, as plain values."""

    invoke_id: int
    body: bytes  # the notification body as A-XDR bytes (tag included)
    body_value: bytes  # the octet-string inside the body
    system_title: bytes | None = None  # None: the implementation does not expose it
    invocation_counter: int | None = None

    def mismatches(self, expected: PushSummary) -> list[str]:
        """Names of the fields that differ from `expected` (unexposed ones are skipped)."""
        return [
            field.name
            for field in attrs.fields(PushSummary)
            if getattr(self, field.name) is not None
            and getattr(self, field.name) != getattr(expected, field.name)
        ]


@attrs.frozen(slots=True)
class ProfileSummary:
    """What a profile-buffer parser found, as plain values."""

    rows: int
    columns: int
    last_row: tuple[object, ...]  # the last row, datetime column left out

    def mismatches(self, expected: ProfileSummary) -> list[str]:
        """Names of the fields that differ from `expected`."""
        return [
            field.name
            for field in attrs.fields(ProfileSummary)
            if getattr(self, field.name) != getattr(expected, field.name)
        ]


@attrs.frozen(slots=True)
class Adapter:
    """One implementation ready to run: a timed `decode` and an untimed `summarize`."""

    name: str
    version: str
    decode: Callable[[bytes], Any]
    summarize: Callable[[Any], Any]
    notes: str = ""


def package_version(distribution: str) -> str:
    """The installed version of a distribution, or "?"."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


class _NullWriter:
    """A stdout that swallows writes: Gurux prints two lines per decrypted frame."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence print() for the duration (the cost of the call itself stays measured)."""
    with contextlib.redirect_stdout(_NullWriter()):
        yield


# --- dlms-cosem ---------------------------------------------------------------------------


def dlms_cosem_push(encryption_key: bytes, authentication_key: bytes) -> Adapter:
    """dlms-cosem: wrapper PDU -> GeneralGlobalCipher -> decrypt -> DataNotification -> body.

    The chain a dlms-cosem user writes for a UDP push: `WrapperProtocolDataUnit`
    strips the IEC 62056-47 header, `XDlmsApduFactory` picks `GeneralGlobalCipher`,
    `to_plain_apdu` verifies and decrypts (security.decrypt, AES-GCM via
    `cryptography`), the factory again gives the `DataNotification`, and
    `DlmsDataParser` decodes its A-XDR body.
    """
    from dlms_cosem.connection import XDlmsApduFactory  # type: ignore[import-untyped]
    from dlms_cosem.dlms_data import DlmsDataParser  # type: ignore[import-untyped]
    from dlms_cosem.protocol.wrappers import WrapperProtocolDataUnit  # type: ignore[import-untyped]

    apdu_from_bytes = XDlmsApduFactory.apdu_from_bytes

    def decode(frame: bytes) -> tuple[Any, Any, list[Any]]:
        wrapped = WrapperProtocolDataUnit.from_bytes(frame)
        ciphered = apdu_from_bytes(wrapped.data)
        notification = apdu_from_bytes(ciphered.to_plain_apdu(encryption_key, authentication_key))
        body = DlmsDataParser().parse(notification.body)
        return ciphered, notification, body

    def summarize(result: tuple[Any, Any, list[Any]]) -> PushSummary:
        ciphered, notification, body = result
        return PushSummary(
            invoke_id=notification.long_invoke_id_and_priority.long_invoke_id,
            body=bytes(notification.body),
            body_value=bytes(body[0].value),
            system_title=bytes(ciphered.system_title),
            invocation_counter=ciphered.invocation_counter,
        )

    return Adapter("dlms-cosem", package_version("dlms-cosem"), decode, summarize)


def dlms_cosem_profile(columns: int, capture_period_minutes: int) -> Adapter:
    """dlms-cosem's `ProfileGenericBufferParser` (A-XDR decode + clock column to datetime)."""
    from dlms_cosem.cosem import CosemAttribute, Obis  # type: ignore[import-untyped]
    from dlms_cosem.enumerations import CosemInterface  # type: ignore[import-untyped]
    from dlms_cosem.parsers import ProfileGenericBufferParser  # type: ignore[import-untyped]

    capture_objects = [
        CosemAttribute(CosemInterface.CLOCK, Obis.from_string("0.0.1.0.0.255"), 2),
        CosemAttribute(CosemInterface.DATA, Obis.from_string("0.0.96.10.1.255"), 2),
    ] + [
        CosemAttribute(CosemInterface.REGISTER, Obis.from_string(f"1.0.{c}.8.0.255"), 2)
        for c in range(1, columns - 1)
    ]
    parser = ProfileGenericBufferParser(capture_objects, capture_period_minutes)

    def summarize(rows: list[list[Any]]) -> ProfileSummary:
        last = rows[-1]
        return ProfileSummary(len(rows), len(last), tuple(c.value for c in last[1:]))

    return Adapter(
        "dlms-cosem ProfileGenericBufferParser",
        package_version("dlms-cosem"),
        parser.parse_bytes,
        summarize,
        "includes date-time column -> datetime",
    )


def dlms_cosem_data_parser() -> Adapter:
    """dlms-cosem's `DlmsDataParser`: the typed A-XDR tree alone, like `decode_data`."""
    from dlms_cosem.dlms_data import DlmsDataParser

    def decode(buffer: bytes) -> Any:
        return DlmsDataParser().parse(buffer)[0]

    def summarize(array: Any) -> ProfileSummary:
        last = array.value[-1].value
        return ProfileSummary(len(array.value), len(last), tuple(c.value for c in last[1:]))

    return Adapter("dlms-cosem DlmsDataParser", package_version("dlms-cosem"), decode, summarize)


# --- gurux-dlms ---------------------------------------------------------------------------


def gurux_push(encryption_key: bytes, authentication_key: bytes, system_title: bytes) -> Adapter:
    """gurux-dlms: `GXDLMSSecureNotify` over the WRAPPER interface, the Gurux push listener way.

    `getData` strips the wrapper, deciphers general-glo-ciphering with its
    pure-Python AES-GCM (GXDLMSChipperingStream) and parses the DataNotification
    into a `GXReplyData` (`data` = body bytes, `value` = decoded body).
    Gurux prints two lines per ciphered frame; stdout is swallowed while timing.
    """
    from gurux_dlms import GXByteBuffer, GXReplyData  # type: ignore[import-untyped]
    from gurux_dlms.enums import InterfaceType, Security  # type: ignore[import-untyped]
    from gurux_dlms.secure import GXDLMSSecureNotify  # type: ignore[import-untyped]

    notify = GXDLMSSecureNotify(True, 1, 1, InterfaceType.WRAPPER)
    notify.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    notify.ciphering.systemTitle = system_title
    notify.ciphering.blockCipherKey = encryption_key
    notify.ciphering.authenticationKey = authentication_key

    def decode(frame: bytes) -> Any:
        reply = GXReplyData()
        if not notify.getData(GXByteBuffer(frame), reply) or not reply.isComplete():
            raise ValueError("gurux: frame not complete")
        return reply

    def summarize(reply: Any) -> PushSummary:
        return PushSummary(
            invoke_id=reply.invokeId,
            body=bytes(reply.data.array()),
            body_value=bytes(reply.value),
        )

    return Adapter(
        "gurux-dlms",
        package_version("gurux-dlms"),
        decode,
        summarize,
        "pure-Python AES; per-frame print() to a null stdout",
    )


def gurux_data_parser() -> Adapter:
    """gurux-dlms's A-XDR decoder (`_GXCommon.getData`, what GXDLMSClient uses internally)."""
    from gurux_dlms import GXByteBuffer, GXDLMSSettings
    from gurux_dlms.internal._GXCommon import _GXCommon  # type: ignore[import-untyped]
    from gurux_dlms.internal._GXDataInfo import _GXDataInfo  # type: ignore[import-untyped]

    settings = GXDLMSSettings(False, None)

    def decode(buffer: bytes) -> Any:
        return _GXCommon.getData(settings, GXByteBuffer(buffer), _GXDataInfo())

    def summarize(array: Any) -> ProfileSummary:
        last = array[-1]
        return ProfileSummary(len(array), len(last), tuple(last[1:]))

    return Adapter(
        "gurux-dlms _GXCommon.getData",
        package_version("gurux-dlms"),
        decode,
        summarize,
        "internal API",
    )
