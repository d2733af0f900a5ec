"""One association over one transport: the sans-io glue both drivers share.

A :class:`Channel` joins an APDU transport (wrapper or HDLC framing) and a
:class:`~dlmsd.protocol.client.ClientConnection` (the association and its
services). The driver only moves bytes and keeps time::

    write(channel.open_link())                  # SNRM, or nothing
    ... feed bytes until channel.link_up
    write(channel.request(lambda c: c.associate()))
    loop: channel.receive_data(read()); event = channel.next_event();
          write(channel.data_to_send())          # acks, next-block requests, HLS reply
    on silence: write(channel.on_timeout())      # retransmission; empty -> give up

Errors: bad bytes raise :class:`~dlmsd.protocol.errors.DlmsError`, a link the
peer drops raises a :class:`~dlmsd.client.errors.ClientError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

from dlmsd.client.errors import ClientError, ProtocolViolation, ServiceError
from dlmsd.client.transport import PUBLIC_CLIENT, ClientTransport
from dlmsd.protocol.association import ClientSettings, next_invocation_counter
from dlmsd.protocol.client import ClientConnection, ClientEvent, ClientState
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.events import NEED_DATA, NeedData
from dlmsd.protocol.gbt import GeneralBlockTransfer

_GBT_TAG = bytes((GeneralBlockTransfer.TAG,))
_STREAMING = 0x40  # GBT block-control: more blocks of this window follow

Request = Callable[[ClientConnection], bytes]
"""Builds one request APDU from the connection (``lambda c: c.get(...)``)."""


class Channel:
    """A transport and the association currently running over it."""

    def __init__(self, transport: ClientTransport, connection: ClientConnection) -> None:
        self.transport = transport
        self.connection = connection
        # A GBT transfer is running: silence then means a lost block, not a dead meter.
        self._in_gbt = False
        # The last GBT block said more follow without an ack (streaming).
        self._streaming = False

    def link_up(self) -> bool:
        """Process what was received; True once the link is connected (the wrapper: always)."""
        self.next_event()  # no association yet: only link frames (UA, DM) matter
        return self.transport.connected

    def link_closed(self) -> bool:
        """Process what was received; True once the link is down after our disconnect."""
        self.next_event()
        return self.transport.closed

    @property
    def in_gbt(self) -> bool:
        """A GBT transfer is running (its own recovery decides when to give up)."""
        return self._in_gbt

    @property
    def skipped_frames(self) -> int:
        """Corrupted or stray frames the transport dropped so far (HDLC)."""
        return int(getattr(self.transport, "skipped_frames", 0))

    def open_link(self) -> bytes:
        """Bytes that open the link (HDLC SNRM), empty for the wrapper."""
        return self.transport.connect()

    def close_link(self) -> bytes:
        """Bytes that close the link (HDLC DISC), empty for the wrapper."""
        return self.transport.disconnect()

    def request(self, build: Request) -> bytes:
        """Build one request with the connection and frame it for the line."""
        return b"".join(self.transport.frame(build(self.connection)))

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the line."""
        self.transport.receive_data(data)

    def next_event(self) -> object | NeedData:
        """The next event of the association, or ``NEED_DATA``."""
        connection = self.connection
        while True:
            event: ClientEvent | NeedData = connection.next_event()
            if event is not NEED_DATA:
                self._in_gbt = False
                return event
            apdu = self.transport.next_apdu()
            if apdu is NEED_DATA:
                return NEED_DATA
            self._in_gbt = apdu[:1] == _GBT_TAG
            self._streaming = self._in_gbt and len(apdu) > 1 and bool(apdu[1] & _STREAMING)
            connection.receive_apdu(apdu)

    def data_to_send(self) -> bytes:
        """What the link and the association want sent now, framed."""
        transport = self.transport
        frames = transport.data_to_send()
        apdus = self.connection.data_to_send()
        for apdu in apdus:
            frames.extend(transport.frame(apdu))
        frames.extend(transport.data_to_send())
        if self._streaming and not frames:
            frames.extend(transport.request_more())
        self._streaming = False
        return b"".join(frames)

    def on_timeout(self) -> bytes:
        """The line was silent: link retransmission and GBT recovery, framed (may be empty)."""
        frames = self.transport.on_timeout()
        if self._in_gbt:
            # Asks again for the missing blocks; after its retries the connection
            # fails with a ProtocolFailure event that says which blocks.
            self.connection.on_timeout()
            for apdu in self.connection.data_to_send():
                frames.extend(self.transport.frame(apdu))
        return b"".join(frames)


@contextmanager
def session_failures(
    channel: Channel, drop: Callable[[], object], *, opening: bool = False
) -> Iterator[None]:
    """What both drivers do when an exchange fails: `drop` the session, re-raise.

    Bad bytes from the meter become :class:`~dlmsd.client.errors.ProtocolViolation`.
    A :class:`~dlmsd.client.errors.ServiceError` of a running session (not
    `opening`) ends it only when the association failed with it: a refused
    GET leaves the session usable.
    """
    try:
        yield
    except ServiceError:
        if opening or channel.connection.state is ClientState.FAILED:
            drop()
        raise
    except ClientError:
        drop()
        raise
    except DlmsError as error:
        drop()
        raise ProtocolViolation(f"bad answer from the meter: {error}") from None


# The frame counter is read through the public association (client SAP 16),
# then the real association goes on with the counter after it.


def public_association(settings: ClientSettings, transport: ClientTransport) -> ClientSettings:
    """Settings of the public association to the same logical device; `transport` follows."""
    transport.reassign(PUBLIC_CLIENT)
    return ClientSettings(
        client_sap=PUBLIC_CLIENT, server_logical_device=settings.server_logical_device
    )


def after_counter_read(
    settings: ClientSettings, transport: ClientTransport, counter: int
) -> ClientSettings:
    """`settings` with the invocation counter after `counter`; `transport` back on its SAP."""
    transport.reassign(settings.client_sap)
    return attrs.evolve(settings, invocation_counter=next_invocation_counter(counter))
