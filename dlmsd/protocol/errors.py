"""The one error hierarchy of the protocol core.

Every decoder raises a subclass of :class:`DlmsError` and nothing else: callers
(the daemon, the CLI, the fuzzers) catch one type and get the offset and the
reason. Messages never carry key material.
"""

from __future__ import annotations


class DlmsError(Exception):
    """Base of every error the protocol core raises on bad input or misuse."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.offset is None:
            return self.reason
        return f"{self.reason} (at offset {self.offset})"

    @property
    def kind(self) -> str:
        """A short stable label for metrics and logs (e.g. ``truncated``)."""
        return _KINDS.get(type(self), "malformed")


class DecodeError(DlmsError):
    """The bytes are not a valid encoding of what was asked for."""


class TruncatedError(DecodeError):
    """The input ends before the structure it announces does."""


class LengthError(DecodeError):
    """A length field is impossible or exceeds a limit."""


class LimitExceeded(LengthError):
    """Valid so far, but more than a documented limit allows (values per APDU)."""


class UnknownTagError(DecodeError):
    """A tag, choice or enum value that the standard (or we) do not define."""


class ChecksumError(DecodeError):
    """An HDLC HCS or FCS that does not match."""


class EncodeError(DlmsError):
    """A value cannot be encoded (out of range, wrong type)."""


class SecurityError(DlmsError):
    """Base of the ciphering errors."""


class AuthenticationFailed(SecurityError):
    """A GCM/GMAC tag did not verify: the frame is forged or the key is wrong."""


class UnsupportedSecurity(SecurityError):
    """A security suite, control bit (compression) or form we do not handle."""


class ReplayError(SecurityError):
    """An invocation counter not above the last one accepted."""


class ProtocolError(DlmsError):
    """A valid frame that is wrong in the current state of a connection."""


_KINDS: dict[type[DlmsError], str] = {
    DlmsError: "malformed",
    DecodeError: "malformed",
    TruncatedError: "truncated",
    LengthError: "length",
    LimitExceeded: "limit",
    UnknownTagError: "unknown_tag",
    ChecksumError: "checksum",
    EncodeError: "encode",
    SecurityError: "security",
    AuthenticationFailed: "auth_failed",
    UnsupportedSecurity: "unsupported_security",
    ReplayError: "replay",
    ProtocolError: "protocol",
}
