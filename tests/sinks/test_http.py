"""HTTP sink against a real Twisted web server on loopback (plain and TLS).

`Endpoint` is a twisted.web resource that records every POST (headers, body,
arrival time) and answers with the statuses a test scripts (200 when the
script is empty).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor as _reactor
from twisted.internet import ssl, task
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from dlmsd import __version__
from dlmsd.service.state import SpoolRecord, encode_record
from dlmsd.sinks import SinkConfigError, create_sink
from dlmsd.sinks.http import (
    HttpError,
    HttpSettings,
    HttpSink,
    batch_body,
    idempotency_key,
    parse_http_settings,
)
from tests.service.test_daemon import (
    LogCapture,
    make_setup,
    metric,
    port_of,
    start,
    stop,
    wait_until,
)
from tests.sinks.mosquitto import Certificates, free_port
from tests.sinks.test_mqtt import frames, send_paced

reactor: Any = _reactor
F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])
TITLE = "53494D0200000003"
TOKEN = "tok-3n7-never-logged"
PASSWORD = "basic-pa55-never-logged"


def on_reactor(test: F) -> F:
    """Run an async test on the real reactor (pytest-twisted, typed)."""
    return cast(F, pytest_twisted.ensureDeferred(test))


def record(counter: int) -> SpoolRecord:
    fields = {"system_title": TITLE, "invocation_counter": counter, "readings": []}
    return SpoolRecord(f"{TITLE}:{counter}", encode_record(fields))


@attrs.define
class Post:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def records(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], json.loads(self.body))


class Endpoint(Resource):
    """Records POSTs; answers each with the next scripted status (default 200)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.posts: list[Post] = []
        self.script: list[int] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        headers = {
            key.decode().lower(): values[0].decode()
            for key, values in request.requestHeaders.getAllRawHeaders()
        }
        self.posts.append(Post(headers, request.content.read(), time.monotonic()))
        status = self.script.pop(0) if self.script else 200
        request.setResponseCode(status)
        if status >= 400:
            return json.dumps({"error": f"scripted {status}", "field": "readings"}).encode()
        return b'{"stored": true}'

    @property
    def counters(self) -> set[tuple[str, int]]:
        return {
            (item["system_title"], item["invocation_counter"])
            for post in self.posts
            for item in post.records
        }


@pytest.fixture
def endpoint() -> Iterator[tuple[Endpoint, int]]:
    resource = Endpoint()
    site = Site(resource)  # type: ignore[no-untyped-call]
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        yield resource, port.getHost().port
    finally:
        port.stopListening()


def sink(url: str, tmp_path: Path, **options: object) -> HttpSink:
    values: dict[str, object] = {
        "url": url,
        "dead_letter": str(tmp_path / "dead-letter.jsonl"),
        "retry_min": 0.05,
        "retry_max": 0.2,
        "linger": 0.0,
        "timeout": 5.0,
    }
    values.update(options)
    return HttpSink("http", parse_http_settings(values))


# --- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"dead_letter": "/tmp/x"}, "url"),
        ({"url": "ftp://host/x", "dead_letter": "/tmp/x"}, "url"),
        ({"url": "https://u:p@host/x", "dead_letter": "/tmp/x"}, "url"),
        ({"url": "https://host/x"}, "dead_letter"),
        ({"url": "https://host/x", "dead_letter": "/d", "bearer_token": "t"}, "bearer_token"),
        ({"url": "https://host/x", "dead_letter": "/d", "password_env": "P"}, "username"),
        ({"url": "https://host/x", "dead_letter": "/d", "username": "u"}, "password_file"),
        ({"url": "http://host/x", "dead_letter": "/d", "ca_file": "/ca.pem"}, "ca_file"),
        ({"url": "https://host/x", "dead_letter": "/d", "max_batch": 0}, "max_batch"),
        ({"url": "https://host/x", "dead_letter": "/d", "batch": 5}, "batch"),
    ],
)
def test_bad_settings_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(SinkConfigError) as caught:
        parse_http_settings(options)
    assert caught.value.key == key


def test_secrets_are_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLMSD_TEST_TOKEN", TOKEN)
    settings = parse_http_settings(
        {"url": "https://h/x", "dead_letter": "/d", "bearer_token_env": "DLMSD_TEST_TOKEN"}
    )
    assert isinstance(settings, HttpSettings)
    assert settings.bearer_token is not None and settings.bearer_token.read() == TOKEN
    assert TOKEN not in repr(settings) and "DLMSD_TEST_TOKEN" not in repr(settings)


def test_sink_type_is_registered() -> None:
    with pytest.raises(SinkConfigError) as caught:
        create_sink("http", "http", {"url": "nope"})
    assert caught.value.key == "url"


def test_batch_body_is_a_json_array_of_the_records_as_spooled() -> None:
    body = batch_body([record(1), {"system_title": TITLE, "invocation_counter": 2}])
    assert [item["invocation_counter"] for item in json.loads(body)] == [1, 2]
    assert body.startswith(b'[{"system_title"')


# --- against a real web server -----------------------------------------------------------


@on_reactor
async def test_batches_of_max_batch_arrive_in_order(
    endpoint: tuple[Endpoint, int], tmp_path: Path
) -> None:
    resource, port = endpoint
    http = sink(f"http://127.0.0.1:{port}/readings", tmp_path, max_batch=500)
    try:
        await http.deliver([record(counter) for counter in range(1, 1201)])
    finally:
        await http.close()
    assert [len(post.records) for post in resource.posts] == [500, 500, 200]
    counters = [item["invocation_counter"] for post in resource.posts for item in post.records]
    assert counters == list(range(1, 1201))
    assert resource.posts[0].headers["content-type"] == "application/json"
    assert "authorization" not in resource.posts[0].headers
    assert http.posted == 1200 and http.posts == 3
    assert {post.headers["user-agent"] for post in resource.posts} == {f"dlmsd/{__version__}"}
    # The batch's record ids, hashed: one key per POST, as an sf-string.
    keys = [post.headers["idempotency-key"] for post in resource.posts]
    ids = [[f"{TITLE}:{item['invocation_counter']}" for item in p.records] for p in resource.posts]
    expected = [
        '"' + hashlib.sha256(b"".join(i.encode() + b"\n" for i in batch)).hexdigest() + '"'
        for batch in ids
    ]
    assert keys == expected and len(set(keys)) == 3


@on_reactor
async def test_connections_do_not_log_starting_and_stopping_factory(
    endpoint: tuple[Endpoint, int], tmp_path: Path
) -> None:
    # Twisted's client factories log both lines at info for every new connection.
    resource, port = endpoint
    with LogCapture() as logs:
        for counter in range(3):
            http = sink(f"http://127.0.0.1:{port}/", tmp_path)
            try:
                await http.deliver([record(counter)])
            finally:
                await http.close()
    assert len(resource.posts) == 3
    assert "Starting factory" not in logs.text and "Stopping factory" not in logs.text


@on_reactor
async def test_linger_spaces_small_posts(endpoint: tuple[Endpoint, int], tmp_path: Path) -> None:
    resource, port = endpoint
    http = sink(f"http://127.0.0.1:{port}/", tmp_path, max_batch=10, linger=0.3)
    try:
        await http.deliver([record(1)])
        await http.deliver([record(2)])  # small: waits for the linger time
        await http.deliver([record(counter) for counter in range(3, 13)])  # full: at once
    finally:
        await http.close()
    first, second, third = (post.at for post in resource.posts)
    assert second - first >= 0.25
    assert third - second < 0.2


@on_reactor
async def test_5xx_is_retried_with_backoff_then_succeeds(
    endpoint: tuple[Endpoint, int], tmp_path: Path
) -> None:
    resource, port = endpoint
    resource.script = [503, 500, 502]
    http = sink(f"http://127.0.0.1:{port}/", tmp_path, retry_min=0.1, retry_max=1.0)
    try:
        await http.deliver([record(1), record(2)])
    finally:
        await http.close()
    assert len(resource.posts) == 4
    # A retried POST is the same batch: the same Idempotency-Key.
    assert len({post.headers["idempotency-key"] for post in resource.posts}) == 1
    assert resource.posts[0].headers["idempotency-key"] == idempotency_key([record(1), record(2)])
    times = [post.at for post in resource.posts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.18 and gaps[2] >= 0.36  # doubling
    assert http.health.errors["http_5xx"] == 3
    assert not (tmp_path / "dead-letter.jsonl").exists()


@on_reactor
async def test_429_is_retried_and_too_many_failures_fail_the_delivery(
    endpoint: tuple[Endpoint, int], tmp_path: Path
) -> None:
    resource, port = endpoint
    resource.script = [429, 500, 500]
    http = sink(f"http://127.0.0.1:{port}/", tmp_path, attempts=3)
    try:
        with pytest.raises(HttpError, match=r"HTTP 500.*after 3 attempts"):
            await http.deliver([record(1)])
        await http.deliver([record(1)])  # the pump's later retry
    finally:
        await http.close()
    assert len(resource.posts) == 4
    assert http.health.errors == {"http_429": 1, "http_5xx": 2}


@on_reactor
async def test_connection_errors_are_retried_until_the_endpoint_is_up(tmp_path: Path) -> None:
    port = free_port()
    http = sink(f"http://127.0.0.1:{port}/", tmp_path, attempts=100)
    resource = Endpoint()
    delivery = http.deliver([record(7)])
    listening: Any = None
    try:
        await wait_until(lambda: http.health.errors.get("connect", 0) >= 2)
        assert not delivery.called
        down: object = http.health.connected
        assert down is False
        listening = reactor.listenTCP(port, Site(resource), interface="127.0.0.1")  # type: ignore[no-untyped-call]
        await delivery
    finally:
        await http.close()
        if listening is not None:
            await listening.stopListening()
    assert resource.counters == {(TITLE, 7)}
    assert http.health.connected is True
    assert "cannot reach the endpoint" in http.health.last_error


@on_reactor
async def test_4xx_goes_to_the_dead_letter_file_with_the_response(
    endpoint: tuple[Endpoint, int], tmp_path: Path
) -> None:
    resource, port = endpoint
    resource.script = [422]
    http = sink(f"http://127.0.0.1:{port}/", tmp_path)
    with LogCapture() as logs:
        try:
            await http.deliver([record(1), record(2)])  # stored: as dead letters
            await http.deliver([record(3)])
        finally:
            await http.close()
    lines = (tmp_path / "dead-letter.jsonl").read_text().splitlines()
    assert len(lines) == 1
    dead = json.loads(lines[0])
    assert dead["status"] == 422 and dead["sink"] == "http"
    assert json.loads(dead["response"]) == {"error": "scripted 422", "field": "readings"}
    assert [item["invocation_counter"] for item in dead["records"]] == [1, 2]
    assert dead["url"] == f"http://127.0.0.1:{port}/"
    assert http.health.dead_letters == 1 and http.health.errors["http_422"] == 1
    assert "refused 2 records with HTTP 422" in logs.text
    assert resource.counters == {(TITLE, 1), (TITLE, 2), (TITLE, 3)}


@on_reactor
async def test_unwritable_dead_letter_file_keeps_the_batch(
    endpoint: tuple[Endpoint, int], tmp_path: Path
) -> None:
    resource, port = endpoint
    resource.script = [400]
    (tmp_path / "a-directory").mkdir()
    http = sink(f"http://127.0.0.1:{port}/", tmp_path, dead_letter=str(tmp_path / "a-directory"))
    try:
        with pytest.raises(HttpError, match="cannot write dead-letter file"):
            await http.deliver([record(1)])
    finally:
        await http.close()
    assert http.health.dead_letters == 0 and http.health.errors["dead_letter"] == 1
    assert len(resource.posts) == 1


@on_reactor
async def test_bearer_and_basic_auth_from_file_and_environment_never_logged(
    endpoint: tuple[Endpoint, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource, port = endpoint
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("DLMSD_TEST_HTTP_PASSWORD", PASSWORD)
    url = f"http://127.0.0.1:{port}/"
    resource.script = [500, 200, 500, 200]
    with LogCapture() as logs:
        bearer = sink(url, tmp_path, bearer_token_file=str(token_file))
        basic = sink(url, tmp_path, username="gateway", password_env="DLMSD_TEST_HTTP_PASSWORD")
        missing = sink(url, tmp_path, bearer_token_env="DLMSD_TEST_UNSET_TOKEN", attempts=1)
        try:
            await bearer.deliver([record(1)])
            await basic.deliver([record(2)])
            with pytest.raises(HttpError, match="DLMSD_TEST_UNSET_TOKEN is not set"):
                await missing.deliver([record(3)])
        finally:
            for item in (bearer, basic, missing):
                await item.close()
    assert resource.posts[0].headers["authorization"] == f"Bearer {TOKEN}"
    expected = base64.b64encode(f"gateway:{PASSWORD}".encode()).decode()
    assert resource.posts[2].headers["authorization"] == f"Basic {expected}"
    assert missing.health.errors == {"credentials": 1}
    assert TOKEN not in logs.text and PASSWORD not in logs.text and expected not in logs.text
    assert "POST" in logs.text  # the retries were logged


# --- TLS -----------------------------------------------------------------------------


@pytest.fixture
def tls_endpoint(certificates: Certificates) -> Iterator[tuple[Endpoint, int]]:
    resource = Endpoint()
    pem = certificates.server_cert.read_bytes() + certificates.server_key.read_bytes()
    options = ssl.PrivateCertificate.loadPEM(pem).options()  # type: ignore[no-untyped-call]
    site = Site(resource)  # type: ignore[no-untyped-call]
    port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    try:
        yield resource, port.getHost().port
    finally:
        port.stopListening()


@on_reactor
async def test_tls_verified_against_the_configured_ca(
    tls_endpoint: tuple[Endpoint, int], tmp_path: Path, certificates: Certificates
) -> None:
    resource, port = tls_endpoint
    http = sink(f"https://localhost:{port}/", tmp_path, ca_file=str(certificates.ca))
    try:
        await http.deliver([record(1)])
    finally:
        await http.close()
    assert resource.counters == {(TITLE, 1)}


@pytest.mark.parametrize(
    ("host", "ca", "expected"),
    [
        ("127.0.0.1", "ca", "TLS"),  # the certificate names only localhost
        ("localhost", "other_ca", "TLS"),
        ("localhost", None, "TLS"),  # system trust store: the test CA is not in it
        ("localhost", "missing", "cannot load ca_file"),
    ],
    ids=["wrong-hostname", "unknown-ca", "system-store", "missing-ca-file"],
)
@on_reactor
async def test_tls_verification_failures_are_clear_errors(
    tls_endpoint: tuple[Endpoint, int],
    tmp_path: Path,
    certificates: Certificates,
    host: str,
    ca: str | None,
    expected: str,
) -> None:
    resource, port = tls_endpoint
    files = {"ca": certificates.ca, "other_ca": certificates.other_ca, "missing": tmp_path / "no"}
    options: dict[str, object] = {"attempts": 1}
    if ca is not None:
        options["ca_file"] = str(files[ca])
    http = sink(f"https://{host}:{port}/", tmp_path, **options)
    try:
        with pytest.raises(HttpError, match=expected):
            await http.deliver([record(1)])
    finally:
        await http.close()
    assert http.health.errors == {"tls": 1}
    assert not resource.posts


# --- through the daemon ----------------------------------------------------------------


@on_reactor
async def test_daemon_delivers_every_push_to_http_and_jsonl(
    tmp_path: Path, endpoint: tuple[Endpoint, int]
) -> None:
    resource, port = endpoint
    resource.script = [503]  # one failure on the way: the pump retries from the spool
    table = (
        '\n[[sinks]]\ntype = "http"\nname = "http"\nretry_backoff = 0.05\n'
        f'url = "http://127.0.0.1:{port}/"\ndead_letter = "{tmp_path / "dead.jsonl"}"\n'
        "linger = 0.05\nretry_min = 0.05\n"
    )
    setup = make_setup(tmp_path, udp={}, extra=table)
    service = start(setup)
    try:
        datagrams, expected = frames(setup.meters, range(1, 31))
        send_paced(port_of(service, "udp"), datagrams)
        await wait_until(lambda: resource.counters == expected, timeout=20)
        await wait_until(lambda: metric(service, "dlmsd_spool_depth", sink="http") == 0)
        assert metric(service, "dlmsd_sink_errors_total", sink="http", kind="http_5xx") == 1
    finally:
        await stop(service)
    assert {(r["system_title"], r["invocation_counter"]) for r in setup.records()} == expected
    await task.deferLater(reactor, 0, lambda: None)
