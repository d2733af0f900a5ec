"""Decode a captured frame, whatever its framing: the library side of `dlmsd decode`.

A capture may be a wrapper frame (UDP/TCP, one or several back to back), HDLC
frames (one or several, segmented or carrying GBT blocks), or a bare APDU (with or
without its LLC header). Each APDU found becomes one JSON-able record.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator

import attrs

from dlmsd.cosem.readings import Layout
from dlmsd.cosem.shapes import ShapeCache
from dlmsd.protocol import framing, hdlc
from dlmsd.protocol.apdus import decode_apdu
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.errors import DecodeError, DlmsError
from dlmsd.protocol.framing import StreamApdu
from dlmsd.protocol.gbt_push import DEFAULT_MAX_PUSH_SIZE
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.push import DATA_NOTIFICATION, is_push_or_ciphered, peel
from dlmsd.protocol.security import Suite0Cipher

CipherLookup = Callable[[bytes | None], Suite0Cipher | None]
#: The configured push layout of a meter (push object list or profile), by system title.
LayoutLookup = Callable[[bytes | None], Layout | None]

HDLC_FLAG = 0x7E


#: One APDU out of a capture, with the framing it came in.
FoundApdu = StreamApdu

_LLC_HEADERS = (hdlc.LLC_COMMAND, hdlc.LLC_RESPONSE)
_BUILT_IN = ("hdlc", "wrapper")


def split_capture(data: bytes, max_apdu_size: int = DEFAULT_MAX_PUSH_SIZE) -> list[FoundApdu]:
    """Find the APDUs in a capture: HDLC, wrapper, or a bare APDU (LLC header allowed).

    Strict: any refused frame or message raises its `DlmsError`. A partial message
    dropped without a fault (a capture that starts in the middle of a GBT message,
    or a meter that restarted one) is skipped.
    """
    if not data:
        raise DecodeError("empty input", 0)
    if data[0] == HDLC_FLAG and len(data) > 2 and data[-1] == HDLC_FLAG:
        return _split_stream("hdlc", data, max_apdu_size)
    if len(data) >= 8 and data[0:2] == b"\x00\x01":
        return _split_stream("wrapper", data, max_apdu_size)
    for name, registered in framing.load_framings().items():
        # Framings registered by other modules (M-Bus) claim a capture that starts
        # with one of their frames.
        if name not in _BUILT_IN and registered.sniff(data) == 0:
            return _split_stream(name, data, max_apdu_size)
    if data[:3] in _LLC_HEADERS and len(data) > 3:
        # An APDU copied out of an HDLC frame with its LLC header still on.
        data = data[3:]
    return [FoundApdu("apdu", data)]


def _split_stream(name: str, data: bytes, max_apdu_size: int) -> list[FoundApdu]:
    stream = framing.make_stream(name, max_apdu_size)
    found: list[FoundApdu] = []
    notices: list[str] = []
    for event in [*stream.feed(data), *stream.finish()]:
        if isinstance(event, framing.StreamError):
            raise event.error
        if isinstance(event, framing.StreamNotice):
            notices.append(event.reason)
        else:
            found.append(event)
    if not found:
        if notices:
            raise DecodeError(f"no complete message: {notices[-1]}")
        raise DecodeError(f"no {name.upper()} frame with an information field")
    return found


#: Records of the public decode path: one process-wide cache of compiled shapes, so a
#: layout seen before is not decoded from scratch (bounded by memory, see ShapeCache).
RECORDS = ShapeCache(records=True)


def decode_capture(
    data: bytes,
    cipher_for: CipherLookup,
    system_title: bytes | None = None,
    layout_for: LayoutLookup | None = None,
) -> Iterator[dict[str, object]]:
    """One record per APDU in the capture. Raises `DlmsError` on bad input."""
    for found in split_capture(data):
        yield decode_one(found, cipher_for, system_title, layout_for)


def decode_one(
    found: FoundApdu,
    cipher_for: CipherLookup,
    system_title: bytes | None = None,
    layout_for: LayoutLookup | None = None,
) -> dict[str, object]:
    """The record of one APDU: a push record for DataNotifications, else a generic view.

    `layout_for` gives the meter's configured layout, as the daemon's key store does:
    the readings are the daemon's (`open_decrypted`, the path its shapes are pinned to).
    A layout seen before takes a compiled shape (`RECORDS`), the daemon's fast path.
    A layout that does not fit the body adds ``"layout_mismatch"`` to the record."""
    apdu = found.apdu
    envelope = peel(apdu, system_title) if is_push_or_ciphered(apdu) else None
    cipher = None
    if envelope is not None and envelope.ciphered:
        cipher = cipher_for(envelope.system_title)
        if cipher is None:
            title = envelope.system_title.hex().upper() if envelope.system_title else "unknown"
            raise UnknownMeter(f"no keys for system title {title}")
    plaintext = envelope.open(cipher) if envelope is not None else apdu
    record: dict[str, object]
    if envelope is not None and plaintext[:1] == bytes([DATA_NOTIFICATION]):
        layout = layout_for(envelope.system_title) if layout_for is not None else None
        record, mismatch = RECORDS.record(envelope, plaintext, layout)
        if mismatch is not None:
            record["layout_mismatch"] = mismatch
    else:
        record = {
            "system_title": _hex(envelope.system_title) if envelope else None,
            "invocation_counter": envelope.invocation_counter if envelope else None,
            "security": envelope.security if envelope else "none",
            "apdu": apdu_to_json(decode_apdu(plaintext)),
        }
    record["framing"] = found.framing
    return record


def _hex(value: bytes | None) -> str | None:
    return value.hex().upper() if value else None


class UnknownMeter(DlmsError):
    """A ciphered APDU from a system title we hold no keys for."""


def apdu_to_json(value: object) -> object:
    """A generic JSON view of a decoded APDU (attrs classes, enums, bytes, Data)."""
    if isinstance(value, Data):
        return value.to_json()
    if isinstance(value, Obis):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    cls = type(value)
    if attrs.has(cls):
        fields = {
            field.name: apdu_to_json(getattr(value, field.name))
            for field in attrs.fields(cls)
            if field.repr is not False
        }
        return {"type": cls.__name__, **fields}
    if isinstance(value, tuple | list):
        return [apdu_to_json(item) for item in value]
    return value
