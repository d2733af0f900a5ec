"""MQTT sink: settings, messages, and real deliveries through a real mosquitto.

The daemon tests run the real service tree in-process (real reactor, UDP on
loopback, real SQLite) with an MQTT sink next to the JSONL sink, send
simulator pushes and count, on a subscriber, every (system title, invocation
counter) the broker delivered. The crash test runs twistd as a subprocess and
SIGKILLs it while the broker holds back its PUBACKs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor as _reactor
from twisted.internet import task

from dlmsd.service.maker import DaemonService
from dlmsd.service.simulator import SimMeter, build_push, wrap
from dlmsd.service.state import SpoolRecord, encode_record
from dlmsd.sinks import SinkConfigError, create_sink
from dlmsd.sinks.mqtt import (
    MessageBuilder,
    MqttError,
    MqttSettings,
    MqttSink,
    homeassistant_classes,
    obis_slug,
    parse_mqtt_settings,
)
from tests.service.test_daemon import (
    LogCapture,
    _twistd_env,
    make_setup,
    metric,
    now,
    port_of,
    send_udp,
    start,
    stop,
    wait_until,
)
from tests.sinks.ha_schema import check_discovery
from tests.sinks.mosquitto import PASSWORD, USERNAME, Mosquitto, Subscriber, free_port
from tests.twistd import twistd_command

reactor: Any = _reactor
F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])
TITLE = "53494D0100000007"


def on_reactor(test: F) -> F:
    """Run an async test on the real reactor (pytest-twisted, typed)."""
    return cast(F, pytest_twisted.ensureDeferred(test))


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


def record(counter: int, title: str = TITLE, **extra: object) -> SpoolRecord:
    fields: dict[str, object] = {"system_title": title, "invocation_counter": counter, **extra}
    return SpoolRecord(f"{title}:{counter}", encode_record(fields))


def reading(obis: str, value: object, unit: str | None) -> dict[str, object]:
    return {"obis": obis, "attribute": 2, "value": value, "unit": unit, "scaler": None}


def settings(**options: object) -> MqttSettings:
    return parse_mqtt_settings("mqtt", options)


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    client = Subscriber(mosquitto.port)
    try:
        yield client
    finally:
        client.close()


def sink_options(port: int, **extra: object) -> dict[str, object]:
    """Fast retries so outages in tests take seconds."""
    options: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
        "connect_timeout": 2.0,
        # Short: a pump stopping while the broker is down waits this long for it.
        "connect_wait": 1.0,
    }
    options.update(extra)
    return options


def sink_table(port: int, **extra: object) -> str:
    """A ``[[sinks]]`` table of type mqtt, appended to the daemon test config."""
    values = {"type": "mqtt", "name": "mqtt", "retry_backoff": 0.05, **sink_options(port)}
    values.update(extra)
    lines = ["", "[[sinks]]"] + [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def frames(
    meters: Sequence[SimMeter], counters: range
) -> tuple[list[bytes], set[tuple[str, int]]]:
    """Wrapped pushes of every meter for every counter, and the (title, IC) pairs sent."""
    stamp = now()
    sent = [wrap(build_push(meter, ic, stamp)) for ic in counters for meter in meters]
    expected = {(meter.system_title.hex().upper(), ic) for ic in counters for meter in meters}
    return sent, expected


def send_paced(port: int, datagrams: Sequence[bytes], chunk: int = 50) -> None:
    # Small chunks: a burst of hundreds of datagrams could overflow a socket buffer.
    for start_at in range(0, len(datagrams), chunk):
        send_udp(port, *datagrams[start_at : start_at + chunk])
        time.sleep(0.002)


# --- settings ------------------------------------------------------------------------


def test_settings_defaults() -> None:
    parsed = settings()
    assert (parsed.host, parsed.port, parsed.protocol, parsed.qos) == (
        "127.0.0.1",
        1883,
        "3.1.1",
        1,
    )
    assert parsed.topic == "dlmsd/{system_title}/push"
    assert parsed.mode == "push" and parsed.clean_session and not parsed.retain
    assert settings(tls=True).port == 8883


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"hots": "x"}, "hots"),
        ({"password": "literal"}, "password"),
        ({"username": "u", "password_file": "/a", "password_env": "B"}, "password_file"),
        ({"password_env": "X"}, "username"),
        ({"topic": "dlmsd/{serial}/push"}, "topic"),
        ({"topic": "dlmsd/+/push"}, "topic"),
        ({"obis_topic": "dlmsd/{meter}/{obis!r}"}, "obis_topic"),
        ({"homeassistant": True}, "homeassistant"),
        ({"ca_file": "/ca.pem"}, "tls"),
        ({"protocol": "3"}, "protocol"),
        ({"qos": 0}, "qos"),
        ({"port": 0}, "port"),
        ({"keepalive": "60"}, "keepalive"),
    ],
)
def test_bad_settings_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(SinkConfigError) as caught:
        settings(**options)
    assert caught.value.key == key


def test_password_never_in_settings_repr(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    parsed = settings(username=USERNAME, password_file=str(secret_file))
    assert parsed.password is not None and parsed.password.read() == PASSWORD
    assert PASSWORD not in repr(parsed)


def test_sink_type_is_registered() -> None:
    with pytest.raises(SinkConfigError) as caught:
        create_sink("mqtt", "broker", {"topic": "{nope}"})
    assert caught.value.key == "topic"


# --- messages ------------------------------------------------------------------------


def test_push_message_takes_the_topic_from_the_record_id_and_the_json_as_is() -> None:
    builder = MessageBuilder("mqtt", settings())
    item = record(42, meter="kitchen")
    messages, announcing = builder.messages([item])
    assert [m.topic for m in messages] == [f"dlmsd/{TITLE}/push"]
    assert messages[0].payload == item.json.encode()
    assert not messages[0].retain and not announcing


def test_push_topic_with_meter_name_is_made_topic_safe() -> None:
    builder = MessageBuilder("mqtt", settings(topic="meters/{meter}/{invocation_counter}"))
    messages, _ = builder.messages([record(7, meter="floor 2/flat+3#")])
    assert messages[0].topic == "meters/floor 2_flat_3_/7"


def test_obis_messages_and_homeassistant_discovery() -> None:
    builder = MessageBuilder("mqtt", settings(mode="obis", homeassistant=True, retain=True))
    readings = [
        reading("7-0:3.0.0*255", 12.345, "m³"),
        reading("1-0:1.8.0*255", 1000, "Wh"),
        reading("1-0:1.7.0*255", 530, "W"),
        reading("0-0:96.5.0*255", 0, None),
    ]
    item = record(5, meter="house", readings=readings, datetime="2024-01-01T00:00:00+00:00")
    messages, announcing = builder.messages([item])
    configs = {m.topic: json.loads(m.payload) for m in messages if m.topic.endswith("/config")}
    values = {m.topic: json.loads(m.payload) for m in messages if m.topic.startswith("dlmsd/")}
    assert set(values) == {f"dlmsd/{TITLE}/{r['obis']}" for r in readings}
    gas = values[f"dlmsd/{TITLE}/7-0:3.0.0*255"]
    assert (gas["value"], gas["unit"], gas["invocation_counter"]) == (12.345, "m³", 5)
    assert gas["record_id"] == f"{TITLE}:5" and gas["meter"] == "house"
    assert all(m.retain for m in messages)
    prefix = f"homeassistant/sensor/dlmsd_{TITLE}"
    gas_config = configs[f"{prefix}/{obis_slug('7-0:3.0.0*255')}/config"]
    assert gas_config["device_class"] == "gas"
    assert gas_config["state_class"] == "total_increasing"
    assert gas_config["unit_of_measurement"] == "m³"
    assert gas_config["state_topic"] == f"dlmsd/{TITLE}/7-0:3.0.0*255"
    assert gas_config["name"] == "Gas volume"
    assert gas_config["object_id"] == "house_7_0_3_0_0_255"
    assert gas_config["value_template"] == "{{ value_json.value }}"
    assert gas_config["device"]["identifiers"] == [f"dlmsd_{TITLE}"]
    assert gas_config["device"]["manufacturer"] == "SIM"
    energy = configs[f"{prefix}/1-0_1_8_0_255/config"]
    assert (energy["device_class"], energy["state_class"]) == ("energy", "total_increasing")
    power = configs[f"{prefix}/1-0_1_7_0_255/config"]
    assert (power["device_class"], power["state_class"]) == ("power", "measurement")
    assert len(announcing) == 4
    # Announced once per run: after a successful batch, the next one has no configs.
    builder.announced |= announcing
    again, announcing = builder.messages([record(6, meter="house", readings=readings)])
    assert not announcing and not any(m.topic.endswith("/config") for m in again)


@pytest.mark.parametrize(
    ("obis", "unit", "value", "expected"),
    [
        ("7-0:3.0.0*255", "m³", 1.5, {"device_class": "gas", "state_class": "total_increasing"}),
        ("8-0:1.0.0*255", "m³", 1.5, {"device_class": "water", "state_class": "total_increasing"}),
        ("1-0:1.8.0*255", "Wh", 2, {"device_class": "energy", "state_class": "total_increasing"}),
        ("1-0:1.7.0*255", "W", 3, {"device_class": "power", "state_class": "measurement"}),
        ("0-0:96.5.0*255", None, 3, {}),
        ("0-0:1.0.0*255", None, "2024-01-01T00:00:00+00:00", {"device_class": "timestamp"}),
    ],
)
def test_homeassistant_classes(
    obis: str, unit: str | None, value: object, expected: dict[str, str]
) -> None:
    classes = homeassistant_classes(obis, unit, value)
    assert {k: v for k, v in classes.items() if k != "unit_of_measurement"} == expected


# --- the sink against a real broker -----------------------------------------------------


@on_reactor
async def test_batch_fires_only_after_puback(mosquitto: Mosquitto, subscriber: Subscriber) -> None:
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port)))
    try:
        await wait_until(lambda: sink.connected)
        assert mosquitto.process is not None
        os.kill(mosquitto.process.pid, signal.SIGSTOP)  # receives into its socket, acks nothing
        try:
            delivery = sink.deliver([record(1), record(2)])
            await sleep(0.3)
            assert not delivery.called
        finally:
            os.kill(mosquitto.process.pid, signal.SIGCONT)
        await delivery
        assert sink.published == 2
        await wait_until(lambda: subscriber.counters() == {(TITLE, 1), (TITLE, 2)})
    finally:
        await sink.close()
    assert not sink.connected


@on_reactor
async def test_missing_puback_fails_the_batch_and_reconnects(
    mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port, ack_timeout=0.5)))
    try:
        await wait_until(lambda: sink.connected)
        assert mosquitto.process is not None
        os.kill(mosquitto.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(MqttError, match=r"no acknowledgement for 0\.5s"):
                await sink.deliver([record(1)])
            assert sink.health.errors["timeout"] == 1
        finally:
            os.kill(mosquitto.process.pid, signal.SIGCONT)
        await sink.deliver([record(1)])  # the pump's retry, on a fresh connection
    finally:
        await sink.close()
    await wait_until(lambda: subscriber.counters() == {(TITLE, 1)})


@on_reactor
async def test_deliver_fails_cleanly_when_no_broker_comes(tmp_path: Path) -> None:
    port = free_port()
    with LogCapture() as logs:
        sink = MqttSink("mqtt", settings(**sink_options(port, connect_wait=0.3)))
        try:
            with pytest.raises(MqttError, match="not connected"):
                await sink.deliver([record(1)])
        finally:
            await sink.close()
    assert sink.health.errors["connect"] >= 1
    assert "cannot connect" in sink.health.last_error
    assert f"mqtt://127.0.0.1:{port}" in logs.text


@on_reactor
async def test_mqtt5_delivery(mosquitto: Mosquitto, subscriber: Subscriber) -> None:
    sink = MqttSink("mqtt", settings(**sink_options(mosquitto.port, protocol="5")))
    try:
        await sink.deliver([record(counter) for counter in range(1, 301)])
    finally:
        await sink.close()
    await wait_until(lambda: len(subscriber.counters()) == 300)


@on_reactor
async def test_persistent_session_option(mosquitto: Mosquitto, subscriber: Subscriber) -> None:
    for protocol in ("3.1.1", "5"):
        options = sink_options(mosquitto.port, protocol=protocol, clean_session=False)
        options["session_expiry"] = 60
        sink = MqttSink("mqtt", settings(**options))
        try:
            await sink.deliver([record(1 if protocol == "5" else 2)])
        finally:
            await sink.close()
    await wait_until(lambda: subscriber.counters() == {(TITLE, 1), (TITLE, 2)})


@on_reactor
async def test_password_from_file_and_environment_never_logged(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = Subscriber(mosquitto.port, client_id="password-test")
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text(PASSWORD + "\n")
    monkeypatch.setenv("DLMSD_TEST_MQTT_PASSWORD", PASSWORD)
    try:
        with LogCapture() as logs:
            sources = [
                {"password_file": str(secret_file)},
                {"password_env": "DLMSD_TEST_MQTT_PASSWORD"},
            ]
            for counter, source in enumerate(sources, 1):
                options = sink_options(mosquitto.password_port, username=USERNAME, **source)
                sink = MqttSink("mqtt", settings(**options))
                try:
                    await sink.deliver([record(counter)])
                finally:
                    await sink.close()
            secret_file.write_text("wrong-password\n")
            sink = MqttSink(
                "mqtt",
                settings(
                    **sink_options(
                        mosquitto.password_port, username=USERNAME, password_file=str(secret_file)
                    )
                ),
            )
            try:
                await wait_until(lambda: "credentials" in sink.health.errors)
            finally:
                await sink.close()
        await wait_until(lambda: len(listener.counters()) == 2)
    finally:
        listener.close()
    assert "refused the connection" in sink.health.last_error
    assert PASSWORD not in logs.text and "wrong-password" not in logs.text
    assert PASSWORD not in repr(sink.settings)


@on_reactor
async def test_missing_password_file_is_a_credentials_error(tmp_path: Path) -> None:
    options = sink_options(free_port(), username=USERNAME, password_file=str(tmp_path / "none"))
    sink = MqttSink("mqtt", settings(**options))
    try:
        await wait_until(lambda: "credentials" in sink.health.errors)
    finally:
        await sink.close()
    assert "cannot read secret file" in sink.health.last_error


# --- TLS -----------------------------------------------------------------------------


def tls_options(
    mosquitto: Mosquitto, host: str = "localhost", **extra: object
) -> dict[str, object]:
    certs = mosquitto.certificates
    options = sink_options(
        mosquitto.tls_port,
        tls=True,
        ca_file=str(certs.ca),
        cert_file=str(certs.client_cert),
        key_file=str(certs.client_key),
    )
    options["host"] = host
    options.update(extra)
    return options


@on_reactor
async def test_tls_with_generated_ca_and_client_certificate(
    mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    sink = MqttSink("mqtt", settings(**tls_options(mosquitto)))
    try:
        await sink.deliver([record(counter) for counter in range(1, 51)])
        assert sink.settings.url.startswith("mqtts://localhost:")
    finally:
        await sink.close()
    await wait_until(lambda: len(subscriber.counters()) == 50)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"host": "127.0.0.1"}, "certificate not accepted: IP address mismatch"),
        ({"ca_file": "other_ca"}, "TLS certificate not accepted"),
        ({"ca_file": "/nonexistent/ca.pem"}, "cannot set up TLS"),
        ({"cert_file": "/nonexistent/client.pem"}, "cannot set up TLS"),
    ],
    ids=["wrong-hostname", "unknown-ca", "missing-ca-file", "missing-client-cert"],
)
@on_reactor
async def test_tls_problems_are_clear_errors(
    mosquitto: Mosquitto, change: dict[str, str], expected: str
) -> None:
    options = tls_options(mosquitto)
    options.update(change)
    if options["ca_file"] == "other_ca":
        options["ca_file"] = str(mosquitto.certificates.other_ca)
    with LogCapture() as logs:
        sink = MqttSink("mqtt", settings(**options))
        try:
            await wait_until(lambda: "tls" in sink.health.errors)
        finally:
            await sink.close()
    assert expected in sink.health.last_error
    assert expected in logs.text
    assert not sink.connected


# --- through the daemon ----------------------------------------------------------------


def health(service: DaemonService, sink: str = "mqtt") -> dict[str, float]:
    return {
        "connected": metric(service, "dlmsd_sink_connected", sink=sink),
        "depth": metric(service, "dlmsd_spool_depth", sink=sink),
        "written": metric(service, "dlmsd_readings_written_total", sink=sink),
    }


@on_reactor
async def test_daemon_delivers_every_push_to_mqtt_and_jsonl(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    setup = make_setup(tmp_path, udp={}, extra=sink_table(mosquitto.port))
    service = start(setup)
    try:
        datagrams, expected = frames(setup.meters, range(1, 51))
        send_paced(port_of(service, "udp"), datagrams)
        await wait_until(lambda: subscriber.counters() == expected, timeout=20)
        await wait_until(lambda: len(setup.records()) == len(expected))
        await wait_until(lambda: health(service)["depth"] == 0)
        assert health(service)["connected"] == 1
        assert health(service)["written"] == len(expected)
    finally:
        await stop(service)
    jsonl = {(r["system_title"], r["invocation_counter"]) for r in setup.records()}
    assert jsonl == expected
    payload = subscriber.payloads()[0]
    assert payload["meter"].startswith("sim-") and payload["readings"]


@on_reactor
async def test_broker_outage_loses_no_reading(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    # connect_wait longer than the outage: the batch in flight waits for the broker.
    setup = make_setup(tmp_path, udp={}, extra=sink_table(mosquitto.port, connect_wait=10.0))
    service = start(setup)
    try:
        port = port_of(service, "udp")
        before, expected_before = frames(setup.meters, range(1, 21))
        send_paced(port, before)
        await wait_until(lambda: subscriber.counters() == expected_before, timeout=20)

        mosquitto.stop()
        await wait_until(lambda: health(service)["connected"] == 0)
        during, expected_during = frames(setup.meters, range(21, 81))
        send_paced(port, during)
        total = len(expected_before) + len(expected_during)
        await wait_until(lambda: metric(service, "dlmsd_pushes_accepted_total") == total)
        await sleep(1.5)  # a broker outage of a couple of seconds
        assert health(service)["depth"] == len(expected_during)
        assert metric(service, "dlmsd_sink_errors_total", sink="mqtt", kind="disconnected") >= 1

        mosquitto.start()
        after, expected_after = frames(setup.meters, range(81, 91))
        send_paced(port, after)
        everything = expected_before | expected_during | expected_after
        await wait_until(lambda: subscriber.counters() == everything, timeout=30)
        await wait_until(lambda: health(service)["depth"] == 0)
        assert health(service)["connected"] == 1
    finally:
        await stop(service)
    assert len(everything) == 4 * 90


@on_reactor
async def test_unreachable_broker_is_reported_and_the_daemon_keeps_spooling(
    tmp_path: Path,
) -> None:
    closed_port = free_port()
    table = sink_table(closed_port) + sink_table(
        closed_port, name="mqtt-tls", tls=True, ca_file="/nonexistent/ca.pem"
    )
    setup = make_setup(tmp_path, udp={}, extra=table)
    with LogCapture() as logs:
        service = start(setup)
        try:
            datagrams, expected = frames(setup.meters, range(1, 11))
            send_paced(port_of(service, "udp"), datagrams)
            await wait_until(lambda: len(setup.records()) == len(expected))
            await wait_until(
                lambda: (
                    metric(service, "dlmsd_sink_errors_total", sink="mqtt-tls", kind="tls") >= 1
                    and metric(service, "dlmsd_sink_errors_total", sink="mqtt", kind="connect")
                    >= 1
                )
            )
            assert health(service)["connected"] == 0
            assert health(service)["depth"] == len(expected)
            assert health(service, "mqtt-tls")["depth"] == len(expected)
            assert metric(service, "dlmsd_pushes_accepted_total") == len(expected)
            scraped = service.metrics.render().decode()
            assert 'dlmsd_sink_connected{sink="mqtt"} 0.0' in scraped
        finally:
            await stop(service)
    assert f"mqtt://127.0.0.1:{closed_port}: cannot connect" in logs.text
    assert "cannot set up TLS" in logs.text and "/nonexistent/ca.pem" in logs.text
    assert "records stay spooled" in logs.text


@on_reactor
async def test_wrong_tls_hostname_through_the_daemon_keeps_spooling(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    certs = mosquitto.certificates
    table = sink_table(
        mosquitto.tls_port,
        tls=True,
        ca_file=str(certs.ca),
        cert_file=str(certs.client_cert),
        key_file=str(certs.client_key),
    )  # host 127.0.0.1: the broker's certificate names only localhost
    setup = make_setup(tmp_path, udp={}, extra=table)
    service = start(setup)
    try:
        datagrams, expected = frames(setup.meters, range(1, 6))
        send_paced(port_of(service, "udp"), datagrams)
        await wait_until(lambda: len(setup.records()) == len(expected))
        await wait_until(
            lambda: metric(service, "dlmsd_sink_errors_total", sink="mqtt", kind="tls") >= 1
        )
        assert health(service)["depth"] == len(expected)
    finally:
        await stop(service)


@on_reactor
async def test_per_obis_topics_and_discovery_through_the_daemon(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    table = sink_table(mosquitto.port, mode="both", homeassistant=True)
    setup = make_setup(tmp_path, udp={}, meters=2, extra=table)
    service = start(setup)
    try:
        datagrams, expected = frames(setup.meters, range(1, 4))
        send_paced(port_of(service, "udp"), datagrams)
        await wait_until(lambda: subscriber.counters("dlmsd/53494D") == expected, timeout=20)
        # Distinct topics: a reconnect publishes every config again.
        await wait_until(lambda: len(config_topics(subscriber)) == 7)
    finally:
        await stop(service)
    gas = setup.meters[0]
    volume = subscriber.payloads(f"dlmsd/{gas.system_title.hex().upper()}/7-0:3.0.0*255")
    assert [p["invocation_counter"] for p in volume] == [1, 2, 3]
    assert volume[0]["unit"] == "m³" and isinstance(volume[0]["value"], float)
    configs = subscriber.payloads("homeassistant/")
    for config in configs:
        check_discovery(config)
    classes = {c["state_topic"].rsplit("/", 1)[1]: c.get("device_class") for c in configs}
    assert classes["7-0:3.0.0*255"] == "gas"
    assert classes["1-0:1.8.0*255"] == "energy"
    assert classes["1-0:1.7.0*255"] == "power"
    # Retained: a subscriber arriving later still gets every discovery config.
    late = Subscriber(mosquitto.port, "homeassistant/#", client_id="late-subscriber")
    try:
        await wait_until(lambda: len(late.messages) == 7)
        assert all(retained for _, _, retained in late.messages)
    finally:
        late.close()
    # one config per meter and OBIS code, however many pushes
    assert len(config_topics(subscriber)) == 3 + 4  # gas: clock, volume, status; electricity: 4


def config_topics(subscriber: Subscriber) -> set[str]:
    return {topic for topic, _, _ in subscriber.messages if topic.startswith("homeassistant/")}


# --- kill -9 of a daemon subprocess ----------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return cast(bytes, response.read()).decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name + (f"{{{label_text}}}" if labels else "")) + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass  # the daemon is not serving /metrics yet
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_kill_9_between_receipt_and_puback_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    ports = {"udp": _udp_port(), "metrics": free_port()}
    setup = make_setup(tmp_path, udp={}, ports=ports, extra=sink_table(mosquitto.port))
    log = open(tmp_path / "daemon.log", "ab")  # noqa: SIM115

    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            twistd_command(setup.config_path),
            cwd=tmp_path,
            env=_twistd_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def connected() -> bool:
        return sample(scrape(ports["metrics"]), "dlmsd_sink_connected", sink="mqtt") == 1.0

    assert mosquitto.process is not None
    broker_pid = mosquitto.process.pid
    daemon = launch()
    try:
        wait_for(connected, 20, "the daemon's MQTT connection")
        # The broker stops acknowledging: the daemon receives, spools, publishes, waits.
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            datagrams, expected = frames(setup.meters, range(1, 41))
            send_paced(ports["udp"], datagrams)
            wait_for(
                lambda: (
                    sample(scrape(ports["metrics"]), "dlmsd_pushes_accepted_total")
                    == len(expected)
                ),
                20,
                "every push accepted",
            )
            text = scrape(ports["metrics"])
            assert sample(text, "dlmsd_spool_depth", sink="mqtt") == len(expected)
            assert sample(text, "dlmsd_readings_written_total", sink="jsonl") == len(expected)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        daemon = launch()
        wait_for(lambda: subscriber.counters() == expected, 30, "every reading at the broker")
        wait_for(
            lambda: sample(scrape(ports["metrics"]), "dlmsd_spool_depth", sink="mqtt") == 0,
            10,
            "an empty spool",
        )
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        log.close()
    assert daemon.returncode in (0, -signal.SIGTERM)


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
