"""HDLC parameter negotiation carried in the SNRM and UA information fields.

``81 80 len | 05 n max-info-tx | 06 n max-info-rx | 07 n window-tx | 08 n window-rx``
(format identifier 0x81, group identifier 0x80; each value 1, 2 or 4 bytes).
Parameters left out take the defaults of IEC 62056-46: 128 bytes and window 1.
Values are from the sender's point of view: a UA's ``max_info_tx`` is what the
server sends, so it bounds what the client receives.
"""

from __future__ import annotations

import enum

import attrs

from dlmsd.protocol.errors import DecodeError, EncodeError, LengthError, TruncatedError

FORMAT_IDENTIFIER = 0x81
GROUP_IDENTIFIER = 0x80
DEFAULT_MAX_INFO_LENGTH = 128
DEFAULT_WINDOW_SIZE = 1


class ParameterId(enum.IntEnum):
    """Parameter identifiers inside the 0x80 group."""

    MAX_INFO_TX = 0x05
    MAX_INFO_RX = 0x06
    WINDOW_TX = 0x07
    WINDOW_RX = 0x08


_FIELDS = {
    ParameterId.MAX_INFO_TX: "max_info_tx",
    ParameterId.MAX_INFO_RX: "max_info_rx",
    ParameterId.WINDOW_TX: "window_tx",
    ParameterId.WINDOW_RX: "window_rx",
}
_DEFAULTS = {
    ParameterId.MAX_INFO_TX: DEFAULT_MAX_INFO_LENGTH,
    ParameterId.MAX_INFO_RX: DEFAULT_MAX_INFO_LENGTH,
    ParameterId.WINDOW_TX: DEFAULT_WINDOW_SIZE,
    ParameterId.WINDOW_RX: DEFAULT_WINDOW_SIZE,
}

Layout = tuple[tuple[int, int], ...]


@attrs.frozen(slots=True)
class HdlcParameters:
    """Negotiated link parameters (maximum information field lengths, window sizes).

    ``layout`` records which parameters a decoded block carried, in which order
    and with how many bytes each, so that it re-encodes byte for byte (meters
    send 128 as ``01 80`` or ``02 0080``). It takes no part in equality. Without
    a layout, :meth:`to_bytes` writes all four, lengths as 1 or 2 bytes and
    windows as 4 bytes, as the Green Book examples do.
    """

    max_info_tx: int = DEFAULT_MAX_INFO_LENGTH
    max_info_rx: int = DEFAULT_MAX_INFO_LENGTH
    window_tx: int = DEFAULT_WINDOW_SIZE
    window_rx: int = DEFAULT_WINDOW_SIZE
    layout: Layout | None = attrs.field(default=None, eq=False, repr=False)

    def to_bytes(self) -> bytes:
        """Encode the ``81 80 len ...`` block."""
        body = bytearray()
        for parameter_id, width in self._effective_layout():
            value = getattr(self, _FIELDS[ParameterId(parameter_id)])
            if not 0 <= value < 1 << (8 * width):
                raise EncodeError(f"HDLC parameter {value} does not fit in {width} bytes")
            body += bytes((parameter_id, width)) + value.to_bytes(width, "big")
        if len(body) > 0xFF:
            raise EncodeError("HDLC parameter group longer than 255 bytes")
        return bytes((FORMAT_IDENTIFIER, GROUP_IDENTIFIER, len(body))) + body

    def _effective_layout(self) -> Layout:
        if self.layout is None:
            return tuple(
                (parameter_id, _canonical_width(parameter_id, getattr(self, name)))
                for parameter_id, name in _FIELDS.items()
            )
        listed = {parameter_id for parameter_id, _ in self.layout}
        # A value changed away from its default must be sent even if the
        # decoded block left it out.
        extra = tuple(
            (parameter_id, _canonical_width(parameter_id, getattr(self, name)))
            for parameter_id, name in _FIELDS.items()
            if parameter_id not in listed and getattr(self, name) != _DEFAULTS[parameter_id]
        )
        return self.layout + extra

    @classmethod
    def from_bytes(cls, data: bytes) -> HdlcParameters:
        """Decode an SNRM/UA information field; empty means all defaults.

        Unknown parameter identifiers inside the group are skipped (they do not
        survive a re-encode).
        """
        if not data:
            return cls()
        if len(data) < 3:
            raise TruncatedError("HDLC parameter block needs 3 header bytes", len(data))
        if data[0] != FORMAT_IDENTIFIER:
            raise DecodeError(f"HDLC parameter format identifier 0x{data[0]:02X} is not 0x81", 0)
        if data[1] != GROUP_IDENTIFIER:
            raise DecodeError(f"HDLC parameter group identifier 0x{data[1]:02X} is not 0x80", 1)
        end = 3 + data[2]
        if end > len(data):
            raise TruncatedError(f"HDLC parameter group announces {data[2]} bytes", len(data))
        if end < len(data):
            raise LengthError("bytes after the HDLC parameter group", end)
        values: dict[str, int] = {}
        layout: list[tuple[int, int]] = []
        offset = 3
        while offset < end:
            if end - offset < 2:
                raise TruncatedError("HDLC parameter without a length", offset)
            parameter_id, width = data[offset], data[offset + 1]
            value_at = offset + 2
            if value_at + width > end:
                raise TruncatedError(
                    f"HDLC parameter 0x{parameter_id:02X} runs past the group", offset
                )
            offset = value_at + width
            if parameter_id not in _FIELDS:
                continue
            if not 1 <= width <= 4:
                raise LengthError(
                    f"HDLC parameter value of {width} bytes (1 to 4 allowed)", value_at
                )
            name = _FIELDS[ParameterId(parameter_id)]
            if name in values:
                raise DecodeError(f"HDLC parameter 0x{parameter_id:02X} given twice", value_at - 2)
            values[name] = int.from_bytes(data[value_at:offset], "big")
            layout.append((parameter_id, width))
        return cls(**values, layout=tuple(layout))


def _canonical_width(parameter_id: int, value: int) -> int:
    if parameter_id in (ParameterId.WINDOW_TX, ParameterId.WINDOW_RX):
        return 4  # too large a value fails the range check in to_bytes
    if value <= 0xFF:
        return 1
    return 2 if value <= 0xFFFF else 4
