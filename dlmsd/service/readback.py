"""Push-then-read: after a meter's accepted push, read its profile on the same connection.

A meter that opens a TCP connection to push is reachable for as long as it
keeps the connection open; many close it soon, and most cannot be reached
otherwise (NAT, mobile networks). So, for meters whose key store entry has a
``read_after_push`` table (see :mod:`dlmsd.service.readback_settings`), the
daemon turns client on that connection right after the push is accepted:

    AARQ -> [entries in use] -> GET profile buffer (range since the last entry,
    or the newest ``max_rows`` entries the first time) -> RLRQ

Each new row becomes a record (``kind: "profile"``) staged through the same
spool as pushes, so every sink gets it; its ``record_id`` is system title +
profile OBIS + entry time, stable across re-reads. The time of the last row
is remembered per meter (:mod:`dlmsd.service.readback_marks`) once the rows
are committed.

A readback runs on the reactor like any exchange, so it never holds up other
connections. A meter that refuses the association, stays silent (``timeout``
per exchange, ``deadline`` overall) or talks nonsense gets its connection
closed; its push stays accepted. Every readback is counted in
``dlmsd_readback_total{result}`` and logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import attrs
from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dlmsd.client.errors import (
    AssociationRefused,
    ClientError,
    ConnectionClosed,
    ServiceError,
    TimeoutError,
)
from dlmsd.client.operations import ProfileRows
from dlmsd.client.targets import PROFILE_GENERIC_CLASS, Target
from dlmsd.client.transport import WrapperTransport
from dlmsd.client.twisted import TwistedSession, session_on_connection
from dlmsd.protocol.association import Ciphering, ClientSettings
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.push import RECORD_SCHEMA_VERSION, peel
from dlmsd.service.ingest import Ingest
from dlmsd.service.keystore import MeterEntry
from dlmsd.service.metrics import Metrics
from dlmsd.service.readback_marks import ReadbackMarks
from dlmsd.service.readback_settings import ReadAfterPush
from dlmsd.service.state import AcceptedPush, encode_record

#: ``dlmsd_readback_total`` labels.
RESULTS = ("ok", "refused", "timeout", "closed", "error", "state_unavailable")
_ENTRIES_IN_USE = 7


@attrs.frozen(slots=True)
class NewRows:
    """Rows read in one readback: column names, unit symbols, (entry time, cells) oldest first."""

    headers: tuple[str, ...]
    units: tuple[str | None, ...]
    rows: tuple[tuple[datetime, tuple[object, ...]], ...]


class ReadbackConnection(Protocol):
    """What a readback needs from the push connection (the TCP wrapper protocol)."""

    source: str
    max_apdu_length: int

    def write(self, data: bytes) -> None:
        """Send bytes to the meter."""

    def abort(self) -> None:
        """Drop the connection."""

    def divert(self, receive: Callable[[bytes], None], lost: Callable[[], None]) -> None:
        """Send what the meter says to `receive` (not the ingest) until `undivert`."""

    def undivert(self) -> None:
        """Hand the connection back to the ingest (and its idle timer)."""

    @property
    def diverted(self) -> bool:
        """A readback owns the connection."""


class Readback:
    """Runs the readbacks of one daemon; the TCP wrapper listener calls `after_push`."""

    log = Logger()

    def __init__(
        self,
        *,
        ingest: Ingest,
        marks: ReadbackMarks,
        metrics: Metrics,
        reactor: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ingest = ingest
        self.marks = marks
        self.reactor = reactor
        self._clock = clock
        self._results = Counter(
            "dlmsd_readback_total",
            "Profile readbacks after a push, by result",
            ["result"],
            registry=metrics.registry,
        )
        for result in RESULTS:
            self._results.labels(result)
        #: Readbacks running now (their Deferreds fire when done; never fail).
        self.running: set[Deferred[str]] = set()

    def after_push(self, connection: ReadbackConnection, apdu: bytes) -> None:
        """An accepted push arrived on `connection`: start a readback if its meter wants one."""
        if connection.diverted:
            return
        try:
            title = peel(apdu, None).system_title
        except DlmsError:
            return
        entry = self.ingest.keystore.lookup(title) if title is not None else None
        if entry is None or entry.read_after_push is None:
            return
        done = Deferred.fromCoroutine(self._run(connection, entry, entry.read_after_push))
        self.running.add(done)
        done.addBoth(self._finished, done)

    def _finished(self, result: object, done: Deferred[str]) -> object:
        self.running.discard(done)
        return result

    # -- one readback ------------------------------------------------------------------

    async def _run(
        self, connection: ReadbackConnection, entry: MeterEntry, settings: ReadAfterPush
    ) -> str:
        meter = entry.name or entry.display_id
        try:
            client = _client_settings(entry, settings, connection.max_apdu_length)
        except DlmsError as error:
            return self._count("error", meter, connection, f"bad client settings: {error}")
        transport = WrapperTransport(client.client_sap, client.server_logical_device)
        driver, opened = session_on_connection(
            self.reactor,
            connection.write,
            connection.abort,
            transport,
            client,
            timeout=settings.timeout,
            retries=0,
            invocation_counter_obis=(
                settings.frame_counter if client.ciphering != Ciphering.NONE else None
            ),
        )
        connection.divert(driver.data_received, driver.connection_lost)
        expired: list[bool] = []

        def past_deadline() -> None:
            expired.append(True)
            connection.abort()

        deadline = self.reactor.callLater(settings.deadline, past_deadline)
        try:
            session = await opened
            rows = await self._read(session, entry.system_title, settings)
            await session.close(drop_link=False)
        except TimeoutError as error:
            connection.abort()
            return self._count("timeout", meter, connection, str(error))
        except AssociationRefused as error:
            connection.abort()
            return self._count("refused", meter, connection, str(error))
        except ConnectionClosed as error:
            result = "timeout" if expired else "closed"
            detail = f"no result within {settings.deadline:g} s" if expired else str(error)
            return self._count(result, meter, connection, detail)
        except ClientError as error:
            connection.abort()
            return self._count("error", meter, connection, str(error))
        finally:
            if deadline.active():
                deadline.cancel()
            connection.undivert()
        return await self._deliver(connection, entry, settings, rows)

    async def _read(
        self, session: TwistedSession, title: bytes, settings: ReadAfterPush
    ) -> NewRows:
        """The new rows with their entry time, oldest first, at most ``max_rows``."""
        profile = settings.profile
        mark = self.marks.get(title, profile)
        if mark is None:
            rows = await self._newest(session, settings)
        else:
            rows = await session.read_profile(profile, from_=mark)
        timed = _timed_rows(rows)
        if mark is not None:
            timed = [(moment, row) for moment, row in timed if _after(moment, mark)]
        units = tuple(unit.symbol if unit is not None else None for unit in rows.units)
        # The oldest first: what is left over comes with the next push.
        return NewRows(rows.headers, units, tuple(timed[: settings.max_rows]))

    async def _newest(self, session: TwistedSession, settings: ReadAfterPush) -> ProfileRows:
        """The first readback of a meter: its newest ``max_rows`` entries."""
        target = Target(settings.profile, _ENTRIES_IN_USE, PROFILE_GENERIC_CLASS)
        try:
            value = (await session.get(target)).value
        except ServiceError:
            value = None
        if type(value) is not int or value <= 0:
            return await session.read_profile(settings.profile)
        first = max(1, value - settings.max_rows + 1)
        return await session.read_profile(settings.profile, entries=(first, 0))

    async def _deliver(
        self,
        connection: ReadbackConnection,
        entry: MeterEntry,
        settings: ReadAfterPush,
        new: NewRows,
    ) -> str:
        meter = entry.name or entry.display_id
        rows = new.rows
        if not rows:
            return self._count("ok", meter, connection, "no new entries", rows=0)
        state = self.ingest.state
        if not state.available or not state.spool_has_room():
            return self._count(
                "state_unavailable", meter, connection, "state database or spool cannot take rows"
            )
        received_at = datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds")
        for moment, row in rows:
            record_id, text = profile_record(
                entry,
                settings,
                moment,
                row,
                headers=new.headers,
                units=new.units,
                received_at=received_at,
                source=connection.source,
            )
            # A negative counter: spooled like a push, moves no replay counter.
            state.stage(AcceptedPush(entry.system_title, -1, record_id, text))
        accepted = await self.ingest.flush()
        if not accepted:
            return self._count("state_unavailable", meter, connection, "commit failed")
        self.marks.set(entry.system_title, settings.profile, rows[-1][0])
        return self._count("ok", meter, connection, "", rows=len(rows))

    def _count(
        self,
        result: str,
        meter: str,
        connection: ReadbackConnection,
        detail: str,
        *,
        rows: int | None = None,
    ) -> str:
        self._results.labels(result).inc()
        if result == "ok":
            self.log.info(
                "readback from meter {meter} ({source}): {rows} new entries",
                meter=meter,
                source=connection.source,
                rows=rows,
                result=result,
            )
        else:
            self.log.warn(
                "readback from meter {meter} ({source}) failed: {result}: {detail};"
                " connection closed, the push stays accepted",
                meter=meter,
                source=connection.source,
                result=result,
                detail=detail,
            )
        return result


def _client_settings(
    entry: MeterEntry, settings: ReadAfterPush, max_apdu_length: int
) -> ClientSettings:
    keyed = settings.needs_keys
    return ClientSettings(
        client_sap=settings.client_sap,
        server_logical_device=settings.server_logical_device,
        authentication=settings.authentication,
        password=settings.password,
        ciphering=settings.ciphering,
        cipher=entry.cipher if keyed else None,
        client_system_title=settings.client_system_title if keyed else None,
        use_gbt=settings.use_gbt,
        # The meter's answers must fit the listener's frame limit.
        max_pdu_size=max(256, min(0xFFFF, max_apdu_length)),
    )


def _timed_rows(rows: ProfileRows) -> list[tuple[datetime, tuple[object, ...]]]:
    """Rows with the time of their clock column; rows without one cannot be named, so skipped."""
    index = rows.table.clock_index
    if index is None:
        return []
    timed = []
    for row in rows.rows:
        stamp = row[index]
        moment = stamp.to_datetime() if isinstance(stamp, CosemDateTime) else None
        if moment is not None:
            timed.append((moment, row))
    return timed


def _comparable(moment: datetime) -> datetime:
    # A meter without a deviation sends local time; compared as UTC it only needs to be
    # consistent with itself, which it is (the mark came from the same meter).
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _after(moment: datetime, mark: datetime) -> bool:
    return _comparable(moment) > _comparable(mark)


def _cell(value: object) -> object:
    if value is None or isinstance(value, bool | int | str | Decimal | bytes):
        return value
    if isinstance(value, CosemDateTime):
        moment = value.to_datetime()
        return moment.isoformat() if moment is not None else value.raw.hex().upper()
    return str(value)


def profile_record(
    entry: MeterEntry,
    settings: ReadAfterPush,
    moment: datetime,
    row: Sequence[object],
    *,
    headers: Sequence[str],
    units: Sequence[str | None],
    received_at: str,
    source: str,
) -> tuple[str, str]:
    """One profile row as a spool record: ``(record_id, JSON text)``."""
    title = entry.system_title.hex().upper()
    entry_time = moment.isoformat()
    record_id = f"{title}:{settings.profile}:{entry_time}"
    record = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "kind": "profile",
        "received_at": received_at,
        "source": source,
        "transport": "tcp",
        "meter": entry.name,
        "meter_id": entry.display_id,
        "labels": dict(entry.labels),
        "system_title": title,
        "obis": str(settings.profile),
        "entry_time": entry_time,
        "columns": list(headers),
        "units": list(units),
        "values": [_cell(value) for value in row],
        "record_id": record_id,
    }
    return record_id, encode_record(record)
