"""Security suite 0 (AES-GCM-128, 12-byte tags): the security control byte, the
cipher, HLS-GMAC and RFC 3394 key wrap. Suite 1 ciphers APDUs the same way.

Wire facts (Green Book, fact sheet section 4): IV = system title (8) | invocation
counter (4, big-endian). Authenticated encryption (SC 0x30) uses AAD = SC | AK;
authentication only (SC 0x10) uses AAD = SC | AK | plaintext and sends the
plaintext in clear; encryption only (SC 0x20) is AES-CTR from counter block
IV | 00000002 with no tag. Tags are the first 12 bytes of the GCM tag.

Keys never appear in a repr, a str or an error message.
"""

from __future__ import annotations

from typing import ClassVar, NoReturn

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from dlmsd.protocol.errors import (
    AuthenticationFailed,
    DecodeError,
    EncodeError,
    LengthError,
    TruncatedError,
    UnsupportedSecurity,
)

__all__ = [
    "GMAC_RESPONSE_LENGTH",
    "KEY_LENGTH",
    "SYSTEM_TITLE_LENGTH",
    "TAG_LENGTH",
    "SecurityControl",
    "Suite0Cipher",
    "hls_gmac_response",
    "unwrap_key",
    "verify_hls_gmac_response",
    "wrap_key",
]

KEY_LENGTH = 16
TAG_LENGTH = 12
SYSTEM_TITLE_LENGTH = 8
# SC(1) | IC(4) | tag(12): the reply_to_HLS_authentication octet-string.
GMAC_RESPONSE_LENGTH = 1 + 4 + TAG_LENGTH

_SUITE_MASK = 0x0F
_AUTH = 0x10
_ENC = 0x20
_BROADCAST = 0x40
_COMPRESSED = 0x80
# Bits that make a security control byte unusable here: a suite id other than 0
# or 1, and compression (we have no V.44 decompressor). Suite 1 ciphers APDUs with
# the same AES-GCM-128 as suite 0 (Green Book, security suites: 0 and 1 differ in
# key agreement and signatures only); Austrian M-Bus interfaces send SC 0x21.
_UNSUPPORTED_BITS = (_SUITE_MASK & ~1) | _COMPRESSED
# Encryption-only mode is AES-CTR starting at J0 + 1 = IV | 00000002.
_CTR_START = b"\x00\x00\x00\x02"
# The SC byte that starts the AAD, for every SC value with authentication that
# `_mode` lets through. Shared by all ciphers: a per-cipher table of SC | AK
# prefixes cost ~420 bytes for each meter that has pushed (100k-meter key stores).
_SC_BYTE = {
    sc | suite: bytes((sc | suite,)) for sc in (0x10, 0x30, 0x50, 0x70) for suite in (0, 1)
}


@attrs.frozen(slots=True)
class SecurityControl:
    """The security control byte: suite id (bits 0-3), authentication (4),
    encryption (5), broadcast key (6) and compression (7)."""

    AUTH: ClassVar[int] = _AUTH
    ENC: ClassVar[int] = _ENC
    AUTH_ENC: ClassVar[int] = _AUTH | _ENC

    suite_id: int = 0
    authenticated: bool = False
    encrypted: bool = False
    broadcast_key: bool = False
    compressed: bool = False

    @classmethod
    def from_byte(cls, value: int) -> SecurityControl:
        """Split a security control byte into its fields."""
        if not 0 <= value <= 0xFF:
            raise DecodeError(f"security control must be one byte, got {value}")
        return cls(
            suite_id=value & _SUITE_MASK,
            authenticated=bool(value & _AUTH),
            encrypted=bool(value & _ENC),
            broadcast_key=bool(value & _BROADCAST),
            compressed=bool(value & _COMPRESSED),
        )

    def to_byte(self) -> int:
        """The byte as sent on the wire."""
        if not 0 <= self.suite_id <= _SUITE_MASK:
            raise EncodeError(f"security suite id must be 0..15, got {self.suite_id}")
        return (
            self.suite_id
            | (_AUTH if self.authenticated else 0)
            | (_ENC if self.encrypted else 0)
            | (_BROADCAST if self.broadcast_key else 0)
            | (_COMPRESSED if self.compressed else 0)
        )

    @property
    def label(self) -> str:
        """`none`, `auth`, `enc` or `auth+enc`, for logs and metrics."""
        if self.authenticated:
            return "auth+enc" if self.encrypted else "auth"
        return "enc" if self.encrypted else "none"


def _check_key(name: str, key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview):
        raise UnsupportedSecurity(f"the {name} must be bytes, got {type(key).__name__}")
    key = bytes(key)
    if len(key) != KEY_LENGTH:
        # Only the length: the key itself must never reach a log.
        raise UnsupportedSecurity(
            f"suite 0 needs a {KEY_LENGTH}-byte {name}, got {len(key)} bytes"
        )
    return key


class Suite0Cipher:
    """AES-GCM-128 with 12-byte tags for one key pair. Keys never in repr/str/errors.

    Stateless between calls: one instance per (encryption key, authentication key)
    can serve any number of system titles and frames. Replay checking (the
    invocation counter must grow) is the caller's job.

    Encryption-only frames (SC 0x20) carry no tag, so anyone can forge them and
    clearing one SC bit turns an authenticated frame into one; :meth:`decrypt`
    refuses them unless ``allow_encryption_only`` is set for this key pair.
    """

    __slots__ = ("_aes", "_ak", "allow_encryption_only")

    def __init__(
        self,
        encryption_key: bytes,
        authentication_key: bytes | None,
        *,
        allow_encryption_only: bool = False,
    ) -> None:
        ek = _check_key("encryption key", encryption_key)
        # None: a meter that only ever sends encryption-only APDUs (M-Bus customer
        # interfaces get one key); every authenticated form is then refused.
        self._ak = (
            None
            if authentication_key is None
            else _check_key("authentication key", authentication_key)
        )
        self.allow_encryption_only = allow_encryption_only
        # Built once per key: creating algorithms.AES per frame costs measurably.
        self._aes = algorithms.AES(ek)

    def __repr__(self) -> str:
        return "Suite0Cipher(<keys hidden>)"

    def with_encryption_key(self, encryption_key: bytes) -> Suite0Cipher:
        """A cipher with another encryption key and this authentication key.

        The dedicated key of a ciphered association replaces the global EK only.
        """
        return Suite0Cipher(
            encryption_key, self._ak, allow_encryption_only=self.allow_encryption_only
        )

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Refuse pickling: a pickle of the cipher would carry the keys.
        raise TypeError("Suite0Cipher holds key material and cannot be pickled")

    def _iv(self, system_title: bytes, invocation_counter: int) -> bytes:
        if len(system_title) != SYSTEM_TITLE_LENGTH:
            raise LengthError(
                f"system title must be {SYSTEM_TITLE_LENGTH} bytes, got {len(system_title)}"
            )
        try:
            return bytes(system_title) + invocation_counter.to_bytes(4, "big")
        except OverflowError:
            raise EncodeError(
                f"invocation counter must be 0..2**32-1, got {invocation_counter}"
            ) from None

    def _authentication_key(self) -> bytes:
        if self._ak is None:
            raise UnsupportedSecurity(
                "no authentication key for this meter: only encryption-only APDUs"
            )
        return self._ak

    def _mode(self, security_control: int) -> int:
        if security_control & _UNSUPPORTED_BITS or security_control >> 8:
            if not 0 <= security_control <= 0xFF:
                raise DecodeError(f"security control must be one byte, got {security_control}")
            if security_control & _COMPRESSED:
                raise UnsupportedSecurity("compressed APDUs are not supported")
            raise UnsupportedSecurity(
                f"security suite {security_control & _SUITE_MASK} is not supported (only 0 and 1)"
            )
        mode = security_control & (_AUTH | _ENC)
        if not mode:
            raise UnsupportedSecurity(
                f"security control 0x{security_control:02x} has neither authentication"
                " nor encryption"
            )
        return mode

    def decrypt(
        self,
        system_title: bytes,
        security_control: int,
        invocation_counter: int,
        payload: bytes,
        *,
        extra_aad: bytes = b"",
    ) -> bytes:
        """Verify and decrypt one ciphered APDU body; return the plaintext APDU.

        `payload` is what follows SC | IC: ciphertext | tag (SC 0x30),
        plaintext | tag (SC 0x10) or ciphertext (SC 0x20). `extra_aad` is
        appended after SC | AK (general-ciphering authenticates its header
        fields). Nothing is returned unless the tag verifies. SC 0x20 needs
        ``allow_encryption_only``, else UnsupportedSecurity.
        """
        mode = self._mode(security_control)
        iv = self._iv(system_title, invocation_counter)
        if mode == _ENC:
            if not self.allow_encryption_only:
                raise UnsupportedSecurity(
                    "encryption-only (unauthenticated) APDUs are refused for this key pair"
                )
            # No tag to check: this form gives confidentiality only.
            ctr = Cipher(self._aes, modes.CTR(iv + _CTR_START)).decryptor()
            return ctr.update(payload) + ctr.finalize()
        if len(payload) < TAG_LENGTH:
            raise TruncatedError(
                f"ciphered payload of {len(payload)} bytes is shorter than the"
                f" {TAG_LENGTH}-byte tag"
            )
        body = payload[:-TAG_LENGTH]
        gcm = Cipher(self._aes, modes.GCM(iv, payload[-TAG_LENGTH:], TAG_LENGTH)).decryptor()
        aad = _SC_BYTE[security_control] + self._authentication_key() + extra_aad
        if mode == _AUTH:
            gcm.authenticate_additional_data(aad + body)
            plaintext = body
        else:
            gcm.authenticate_additional_data(aad)
            plaintext = gcm.update(body)
        try:
            gcm.finalize()  # the library's constant-time tag check
        except InvalidTag:
            raise AuthenticationFailed(
                "authentication tag does not verify (forged frame or wrong key)"
            ) from None
        return plaintext

    def encrypt(
        self,
        system_title: bytes,
        security_control: int,
        invocation_counter: int,
        plaintext: bytes,
        *,
        extra_aad: bytes = b"",
    ) -> bytes:
        """Protect `plaintext`; return ciphertext | tag (no SC | IC prefix).

        SC 0x10 returns plaintext | tag, SC 0x20 the bare ciphertext.
        """
        mode = self._mode(security_control)
        iv = self._iv(system_title, invocation_counter)
        if mode == _ENC:
            ctr = Cipher(self._aes, modes.CTR(iv + _CTR_START)).encryptor()
            return ctr.update(plaintext) + ctr.finalize()
        gcm = Cipher(self._aes, modes.GCM(iv)).encryptor()
        aad = _SC_BYTE[security_control] + self._authentication_key() + extra_aad
        if mode == _AUTH:
            gcm.authenticate_additional_data(aad + plaintext)
            gcm.finalize()
            return bytes(plaintext) + gcm.tag[:TAG_LENGTH]
        gcm.authenticate_additional_data(aad)
        ciphertext = gcm.update(plaintext) + gcm.finalize()
        return ciphertext + gcm.tag[:TAG_LENGTH]

    def gmac(
        self,
        system_title: bytes,
        invocation_counter: int,
        data: bytes,
        security_control: int = _AUTH,
    ) -> bytes:
        """The 12-byte GMAC tag over SC | AK | data with an empty plaintext
        (HLS-GMAC f(StoC) / f(CtoS))."""
        if security_control & (_AUTH | _ENC) != _AUTH:
            raise UnsupportedSecurity(
                f"GMAC needs an authentication-only security control, got {security_control}"
            )
        return self.encrypt(system_title, security_control, invocation_counter, data)[-TAG_LENGTH:]


def hls_gmac_response(
    cipher: Suite0Cipher, system_title: bytes, invocation_counter: int, challenge: bytes
) -> bytes:
    """SC(0x10) | IC(4) | GMAC tag over the peer's challenge: the parameter of
    reply_to_HLS_authentication. `system_title` is our own (the sender's)."""
    tag = cipher.gmac(system_title, invocation_counter, challenge)
    return bytes((_AUTH,)) + invocation_counter.to_bytes(4, "big") + tag


def verify_hls_gmac_response(
    cipher: Suite0Cipher, system_title: bytes, challenge: bytes, response: bytes
) -> int:
    """Check a peer's SC | IC | tag over the challenge we sent; return its IC.

    `system_title` is the peer's. Raises AuthenticationFailed if the tag is wrong.
    """
    if len(response) < GMAC_RESPONSE_LENGTH:
        raise TruncatedError(
            f"HLS-GMAC response must be {GMAC_RESPONSE_LENGTH} bytes, got {len(response)}",
            len(response),
        )
    if len(response) > GMAC_RESPONSE_LENGTH:
        raise LengthError(
            f"HLS-GMAC response must be {GMAC_RESPONSE_LENGTH} bytes, got {len(response)}",
            GMAC_RESPONSE_LENGTH,
        )
    security_control = response[0]
    if security_control & (_AUTH | _ENC) != _AUTH:
        raise UnsupportedSecurity(
            f"HLS-GMAC response needs security control 0x10, got 0x{security_control:02x}"
        )
    invocation_counter = int.from_bytes(response[1:5], "big")
    # Authentication-only decrypt of challenge | tag is exactly the GMAC check,
    # and it uses the library's constant-time tag comparison.
    cipher.decrypt(system_title, security_control, invocation_counter, challenge + response[5:])
    return invocation_counter


def _check_key_wrap_lengths(kek: bytes, data: bytes, minimum: int, what: str) -> None:
    # RFC 3394: AES KEK, data in 64-bit blocks; checked here so that a length
    # problem is a LengthError and only an integrity failure is AuthenticationFailed.
    if len(kek) not in (16, 24, 32):
        raise LengthError(f"key wrap needs a 16, 24 or 32-byte KEK, got {len(kek)} bytes")
    if len(data) < minimum or len(data) % 8:
        raise LengthError(
            f"{what} must be at least {minimum} bytes in 8-byte steps, got {len(data)} bytes"
        )


def wrap_key(kek: bytes, key: bytes) -> bytes:
    """RFC 3394 AES key wrap (key_transfer of the Security setup object)."""
    _check_key_wrap_lengths(kek, key, 16, "the key to wrap")
    return aes_key_wrap(bytes(kek), bytes(key))


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 3394 AES key unwrap; AuthenticationFailed when the integrity check fails."""
    _check_key_wrap_lengths(kek, wrapped, 24, "wrapped key data")
    try:
        return aes_key_unwrap(bytes(kek), bytes(wrapped))
    except InvalidUnwrap:
        raise AuthenticationFailed(
            "wrapped key does not unwrap (wrong KEK or corrupted data)"
        ) from None
