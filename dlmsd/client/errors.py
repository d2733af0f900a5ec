"""What a client session raises: one base class, one subclass per way an exchange fails.

Every message is one line a user can act on ("association refused: authentication
failure", "no answer from the meter within 5.0 s"); none carries key material.
The blocking and the Twisted drivers raise the same classes.
"""

from __future__ import annotations

import builtins


class ClientError(Exception):
    """Base of every failure of a client session."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class TimeoutError(ClientError, builtins.TimeoutError):
    """The meter did not answer in time (after the retransmissions the link allows).

    Also a built-in :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """


class ConnectionFailed(ClientError):
    """The connection could not be opened (refused, no route, no such device)."""


class ConnectionClosed(ClientError):
    """The peer closed the connection or the link in the middle of an exchange."""


class LinkRefused(ClientError):
    """The HDLC server refused the link (DM or FRMR to our SNRM)."""


class AssociationRefused(ClientError):
    """The meter refused the association (AARE result not accepted)."""


class WrongPassword(AssociationRefused):
    """LLS: the meter refused the password."""


class WrongKeys(ClientError):
    """A ciphered answer did not verify, or the meter's HLS answer f(StoC) was wrong."""


class ProtocolViolation(ClientError):
    """The meter sent something malformed or out of place (garbage, truncated APDU)."""


class ServiceError(ClientError):
    """The meter answered a request with an error (data-access-result, action-result, ...).

    ``result`` is the typed result from the protocol core (an ``enum.IntEnum`` member,
    or an exception/confirmed-service-error value).
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
