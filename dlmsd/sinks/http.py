"""The HTTP sink: POSTs records as JSON arrays with treq; 4xx to a dead-letter file.

One `deliver()` is split into POSTs of at most `max_batch` records, sent one
after the other. The body is a JSON array of the records, built from the
spool's JSON text without parsing it.

Outcomes per POST:

* 2xx: stored.
* 408, 429, 5xx, a connection error or a timeout: retried with backoff
  (`retry_min` doubled up to `retry_max`), at most `attempts` times; then the
  delivery fails and the pump keeps the batch in the spool and tries again
  later. Nothing is lost; duplicates are possible (records carry
  ``system_title`` + ``invocation_counter`` to drop them).
* any other status (4xx, and 3xx since redirects are not followed): the
  endpoint refused this content for good, so retrying cannot help. The batch
  goes to the dead-letter file (one JSON line: time, URL, status, response
  body, the records), is counted (``dlmsd_sink_dead_letters_total``) and
  logged, and leaves the spool.

Linger: a POST of fewer than `max_batch` records waits until `linger` seconds
after the previous POST began, so a trickle of pushes becomes a POST every
`linger` seconds instead of one per push (records then wait up to about twice
`linger`). A full batch goes at once.

Headers: ``User-Agent: dlmsd/<version>`` and ``Idempotency-Key``: the SHA-256
of the POST's record ids (one per line), as the structured-field string the
IETF draft "The Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-
idempotency-key-header) specifies. A retry of the same POST carries the same
key, so an endpoint can answer it without storing the batch twice.

TLS: certificates are verified (host name included, by service-identity)
against the system's trust store, or against `ca_file`. Auth: a bearer token,
or basic auth with a user name, the secret read from a file or the
environment at each POST; it never appears in logs or errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
from treq.client import HTTPClient
from twisted.internet import defer, error, task
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.error import SchemeNotSupported

from dlmsd import __version__
from dlmsd.service.quarantine import LogRateLimiter
from dlmsd.service.state import SpoolRecord, encode_record
from dlmsd.sinks.base import SinkConfigError
from dlmsd.sinks.options import (
    Backoff,
    OptionReader,
    Secret,
    SecretError,
    check_secrets,
    secret_option,
)
from dlmsd.sinks.spool import SinkHealth

RETRYABLE_STATUS = frozenset({408, 429})
RESPONSE_KEEP = 64 * 1024  # bytes of a refusing response kept in the dead-letter file


class HttpError(Exception):
    """A POST failed for now (connection, timeout, 408/429/5xx): retry later."""


@attrs.frozen(slots=True)
class HttpSettings:
    """One HTTP sink's validated options (see `http_sink_factory` for the keys)."""

    url: str
    dead_letter: Path
    max_batch: int = 500
    linger: float = 0.5
    timeout: float = 30.0
    attempts: int = 5
    retry_min: float = 0.5
    retry_max: float = 30.0
    bearer_token: Secret | None = attrs.field(default=None, repr=False)
    username: str | None = None
    password: Secret | None = attrs.field(default=None, repr=False)
    ca_file: Path | None = None


OPTION_DOCS = {
    "url": "Where batches are POSTed as a JSON array (http:// or https://, no credentials).",
    "dead_letter": "JSONL file batches the endpoint refused (4xx) are written to.",
    "max_batch": "Records per POST at most.",
    "linger": "Seconds after the previous POST began before a short batch is POSTed.",
    "timeout": "Seconds a POST may take before it counts as failed.",
    "attempts": "POSTs of a batch (with backoff) before the delivery fails and the pump retries.",
    "retry_min": "Seconds before the first retry of a failed POST (doubles per failure).",
    "retry_max": "Longest wait between retries of a POST (seconds).",
    "bearer_token_file": "File holding a bearer token (first line; mode 0600, checked at start).",
    "bearer_token_env": "Environment variable holding a bearer token (checked at start).",
    "username": "User name for basic auth (needs password_file or password_env).",
    "password_file": "File holding the basic auth password (mode 0600, checked at start).",
    "password_env": "Environment variable holding the basic auth password.",
    "ca_file": "CA bundle to verify the endpoint against (https only; default: system store).",
}
"""One line of doc per option, for docs/configuration.md (`dlmsd.service.configdoc`)."""


def parse_http_settings(options: Mapping[str, Any]) -> HttpSettings:
    """Validate an ``[[sinks]]`` table of type ``http``; raises SinkConfigError."""
    read = OptionReader(options)
    url = read.string("url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkConfigError("url", "expected an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise SinkConfigError("url", "no credentials in the URL: use username/password_file")
    bearer = secret_option(options, "bearer_token")
    password = secret_option(options, "password")
    read.mark("bearer_token_file", "bearer_token_env", "password_file", "password_env")
    username = read.optional_string("username")
    if password is not None and username is None:
        raise SinkConfigError("username", "a password needs a username")
    if username is not None and password is None:
        raise SinkConfigError("password_file", "basic auth needs password_file or password_env")
    if bearer is not None and username is not None:
        raise SinkConfigError("bearer_token_file", "give a bearer token or a username, not both")
    dead_letter = read.path("dead_letter")
    if dead_letter is None:
        raise SinkConfigError("dead_letter", "required: the file refused batches go to")
    ca_file = read.path("ca_file")
    if ca_file is not None and parts.scheme != "https":
        raise SinkConfigError("ca_file", "ca_file needs an https:// URL")
    retry_min = read.number("retry_min", 0.5, 0.001, 3600.0)
    settings = HttpSettings(
        url=url,
        dead_letter=dead_letter,
        max_batch=read.integer("max_batch", 500, 1, 1_000_000),
        linger=read.number("linger", 0.5, 0.0, 3600.0),
        timeout=read.number("timeout", 30.0, 0.1, 3600.0),
        attempts=read.integer("attempts", 5, 1, 1000),
        retry_min=retry_min,
        retry_max=read.number("retry_max", 30.0, retry_min, 86400.0),
        bearer_token=bearer,
        username=username,
        password=password,
        ca_file=ca_file,
    )
    read.finish()
    return settings


USER_AGENT = f"dlmsd/{__version__}".encode("ascii")


def idempotency_key(records: Sequence[Mapping[str, object]]) -> str:
    """The ``Idempotency-Key`` of a POST: SHA-256 of its record ids, quoted
    (an sf-string). Records not from the spool use their ``record_id`` field,
    else ``system_title:invocation_counter``."""
    digest = hashlib.sha256()
    for record in records:
        if isinstance(record, SpoolRecord):
            record_id = record.record_id
        else:
            given = record.get("record_id")
            if isinstance(given, str):
                record_id = given
            else:
                record_id = f"{record.get('system_title')}:{record.get('invocation_counter')}"
        digest.update(record_id.encode("utf-8") + b"\n")
    return f'"{digest.hexdigest()}"'


def batch_body(records: Sequence[Mapping[str, object]]) -> bytes:
    """The records as one JSON array (spooled records are copied as they are)."""
    parts = [
        record.utf8 if isinstance(record, SpoolRecord) else encode_record(record).encode("utf-8")
        for record in records
    ]
    return b"[" + b",".join(parts) + b"]"


class HttpSink:
    """POSTs records to an HTTP endpoint; see the module docstring."""

    log = Logger()

    def __init__(self, name: str, settings: HttpSettings, *, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.name = name
        self.settings = settings
        self.health = SinkHealth(connected=None)
        self.posted = 0
        self.posts = 0
        self._reactor = reactor
        self._client: HTTPClient | None = None
        self._pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        self._pool.maxPersistentPerHost = 2
        # Each new connection's factory would log "Starting/Stopping factory" at info.
        self._pool._factory = _QuietClientFactory
        self._last_post = float("-inf")
        self._log_limit = LogRateLimiter(60.0)
        self._closed = False
        settings.dead_letter.parent.mkdir(parents=True, exist_ok=True)

    def _http(self) -> HTTPClient:
        """The client, built on first use so a bad ca_file is a retried sink error."""
        if self._client is None:
            ca_file = self.settings.ca_file
            if ca_file is None:
                policy = BrowserLikePolicyForHTTPS()  # type: ignore[no-untyped-call]
            else:
                try:
                    trust = Certificate.loadPEM(ca_file.read_bytes())
                except Exception as failure:
                    raise _Problem("tls", f"cannot load ca_file {ca_file}: {failure}") from None
                policy = BrowserLikePolicyForHTTPS(trustRoot=trust)  # type: ignore[no-untyped-call]
            agent: Any = Agent(self._reactor, contextFactory=policy, pool=self._pool)  # type: ignore[no-untyped-call]
            self._client = HTTPClient(agent)
        return self._client

    def _headers(self) -> dict[bytes | str, list[bytes | str]]:
        headers: dict[bytes | str, list[bytes | str]] = {
            b"Content-Type": [b"application/json"],
            b"User-Agent": [USER_AGENT],
        }
        settings = self.settings
        try:
            if settings.bearer_token is not None:
                token = settings.bearer_token.read()
                headers[b"Authorization"] = [b"Bearer " + token.encode("utf-8")]
            elif settings.username is not None and settings.password is not None:
                pair = f"{settings.username}:{settings.password.read()}".encode()
                headers[b"Authorization"] = [b"Basic " + base64.b64encode(pair)]
        except SecretError as failure:
            raise _Problem("credentials", str(failure)) from None
        return headers

    # --- delivering ----------------------------------------------------------------

    def deliver(self, records: Sequence[Mapping[str, object]]) -> Deferred[None]:
        """POST the records in batches of `max_batch`; fires when all are stored
        (or dead-lettered)."""
        if self._closed:
            return defer.fail(HttpError(f"sink {self.name} is closed"))
        return defer.ensureDeferred(self._deliver(list(records)))

    async def _deliver(self, records: list[Mapping[str, object]]) -> None:
        size = self.settings.max_batch
        for start in range(0, len(records), size):
            await self._post_with_retries(records[start : start + size])

    async def _post_with_retries(self, chunk: list[Mapping[str, object]]) -> None:
        settings = self.settings
        if len(chunk) < settings.max_batch:
            wait = self._last_post + settings.linger - self._reactor.seconds()
            if wait > 0:
                await task.deferLater(self._reactor, wait, lambda: None)
        body = batch_body(chunk)
        backoff = Backoff(settings.retry_min, settings.retry_max)
        for attempt in range(1, settings.attempts + 1):
            self._last_post = self._reactor.seconds()
            try:
                await self._post(chunk, body)
                return
            except _Problem as problem:
                self.health.error(problem.kind, problem.text)
                if problem.kind in ("connect", "timeout", "tls"):
                    self.health.connected = False
                if attempt == settings.attempts or self._closed:
                    raise HttpError(
                        f"{settings.url}: {problem.text} (after {attempt} attempts)"
                    ) from None
                delay = backoff.next()
                if self._log_limit.should_log(problem.kind.encode(), self._reactor.seconds()):
                    self.log.warn(
                        "sink {sink}: POST {url} failed: {error}; retry {attempt} in {delay:.1f}s",
                        sink=self.name,
                        url=settings.url,
                        error=problem.text,
                        attempt=attempt,
                        delay=delay,
                    )
                await task.deferLater(self._reactor, delay, lambda: None)

    async def _post(self, chunk: list[Mapping[str, object]], body: bytes) -> None:
        """One POST; raises _Problem for anything worth retrying."""
        settings = self.settings
        headers = self._headers()
        headers[b"Idempotency-Key"] = [idempotency_key(chunk).encode("ascii")]
        client = self._http()
        try:
            response = await client.post(
                settings.url,
                data=body,
                headers=headers,
                timeout=settings.timeout,
                allow_redirects=False,
            )
            content: bytes = await response.content()
        except (defer.CancelledError, error.TimeoutError):
            raise _Problem("timeout", f"no response within {settings.timeout:g}s") from None
        except SchemeNotSupported as failure:
            raise _Problem("connect", str(failure)) from None
        except Exception as failure:
            raise _Problem(*_classify(failure)) from None
        self.health.connected = True
        status = int(response.code)
        if 200 <= status < 300:
            self.posts += 1
            self.posted += len(chunk)
            return
        if status >= 500 or status in RETRYABLE_STATUS:
            kind = "http_5xx" if status >= 500 else f"http_{status}"
            raise _Problem(kind, f"HTTP {status} {_snippet(content)}")
        self._dead_letter(chunk, status, content)

    def _dead_letter(self, chunk: list[Mapping[str, object]], status: int, content: bytes) -> None:
        """Keep a refused batch, with the endpoint's answer, in the dead-letter file."""
        settings = self.settings
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "sink": self.name,
            "url": settings.url,
            "status": status,
            "response": content[:RESPONSE_KEEP].decode("utf-8", "replace"),
            "records": [dict(record) for record in chunk],
        }
        line = (encode_record(entry) + "\n").encode("utf-8")
        try:
            with open(settings.dead_letter, "ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as failure:
            # Not written anywhere: the batch must stay in the spool (the pump retries).
            text = f"cannot write dead-letter file {settings.dead_letter}: {failure.strerror}"
            self.health.error("dead_letter", text)
            self.log.error("sink {sink}: {error}", sink=self.name, error=text)
            raise HttpError(text) from None
        self.health.dead_letters += 1
        self.health.error(f"http_{status}", f"HTTP {status} {_snippet(content)}")
        self.log.error(
            "sink {sink}: {url} refused {count} records with HTTP {status} ({response}); "
            "written to {path}",
            sink=self.name,
            url=settings.url,
            count=len(chunk),
            status=status,
            response=_snippet(content),
            path=str(settings.dead_letter),
        )

    def close(self) -> Deferred[None]:
        """Stop retrying and close the idle persistent connections."""
        self._closed = True
        closing: Deferred[None] = self._pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        return closing


class _QuietClientFactory(_HTTP11ClientFactory):
    """The pool's connection factory without the per-connection info lines."""

    noisy = False


class _Problem(Exception):
    """Inside the sink: what went wrong, with its metric kind."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


def _classify(failure: BaseException) -> tuple[str, str]:
    """A kind and a message for a treq/Twisted failure (wrapped ones unwrapped)."""
    reasons = getattr(failure, "reasons", None)
    if reasons:  # ResponseNeverReceived, RequestTransmissionFailed wrap Failures
        inner = reasons[0].value
        if inner is not None:
            failure = inner
    text = str(failure) or type(failure).__name__
    tls_words = ("certificate", "SSL", "TLS", "VerificationError")
    if any(word in text or word in type(failure).__name__ for word in tls_words):
        return "tls", f"TLS: {text}"
    if isinstance(failure, error.DNSLookupError):
        return "connect", f"cannot resolve the host: {text}"
    return "connect", f"cannot reach the endpoint: {text}"


def _snippet(content: bytes, limit: int = 200) -> str:
    text = content[:limit].decode("utf-8", "replace").strip()
    return json.dumps(text + ("..." if len(content) > limit else ""), ensure_ascii=False)


def http_sink_factory(name: str, options: Mapping[str, Any]) -> HttpSink:
    """Build an HttpSink from its ``[[sinks]]`` table (type ``http``).

    Keys: url (required), dead_letter (required: a JSONL file), max_batch,
    linger, timeout, attempts, retry_min, retry_max, bearer_token_file /
    bearer_token_env, username with password_file / password_env, ca_file.
    """
    settings = parse_http_settings(options)
    check_secrets({"bearer_token": settings.bearer_token, "password": settings.password})
    return HttpSink(name, settings)


__all__ = [
    "HttpError",
    "HttpSettings",
    "HttpSink",
    "batch_body",
    "http_sink_factory",
    "idempotency_key",
    "parse_http_settings",
]
