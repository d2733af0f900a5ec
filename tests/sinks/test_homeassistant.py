"""Home Assistant MQTT discovery: the class table row by row, the names, and every
discovery payload a real mosquitto carries checked against the schema Home Assistant
documents for MQTT sensors (tests/sinks/schemas/ha-mqtt-sensor.schema.json, which
cites the pages it was written from).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from dlmsd.sinks import SinkConfigError
from dlmsd.sinks.homeassistant import (
    DEVICE_CLASS_UNITS,
    RULES,
    SensorClasses,
    sensor_classes,
    sensor_name,
)
from dlmsd.sinks.mqtt import MessageBuilder, MqttSink
from tests.service.test_daemon import wait_until
from tests.sinks.ha_schema import SENSOR_SCHEMA, check_discovery
from tests.sinks.mosquitto import Mosquitto
from tests.sinks.test_mqtt import (
    TITLE,
    on_reactor,
    reading,
    record,
    settings,
    sink_options,
)

STAMP = "2024-03-01T12:00:00+01:00"


# --- the class table: one case per row, then the fall-backs ---------------------------

# (rule name, OBIS, unit, value) -> (device class, state class, Home Assistant unit)
ROWS = [
    ("electric energy", "1-0:1.8.0*255", "Wh", 1000, ("energy", "total_increasing", "Wh")),
    ("electric energy, period", "1-0:1.29.0*255", "Wh", 10, ("energy", "total", "Wh")),
    (
        "reactive energy",
        "1-0:3.8.0*255",
        "varh",
        5,
        ("reactive_energy", "total_increasing", "varh"),
    ),
    ("reactive energy, period", "1-0:4.29.0*255", "varh", 5, ("reactive_energy", "total", "varh")),
    ("apparent energy", "1-0:9.8.0*255", "VAh", 5, (None, "total_increasing", "VAh")),
    ("active power", "1-0:1.7.0*255", "W", 530, ("power", "measurement", "W")),
    ("reactive power", "1-0:3.7.0*255", "var", 12, ("reactive_power", "measurement", "var")),
    ("apparent power", "1-0:9.7.0*255", "VA", 600, ("apparent_power", "measurement", "VA")),
    ("voltage", "1-0:32.7.0*255", "V", 230.1, ("voltage", "measurement", "V")),
    ("current", "1-0:31.7.0*255", "A", 1.2, ("current", "measurement", "A")),
    ("frequency", "1-0:14.7.0*255", "Hz", 50.0, ("frequency", "measurement", "Hz")),
    ("power factor", "1-0:13.7.0*255", None, 0.98, ("power_factor", "measurement", None)),
    ("heat energy", "6-0:1.0.0*255", "Wh", 1000, ("energy", "total_increasing", "Wh")),
    ("heat volume", "6-0:2.0.0*255", "m³", 1.5, ("volume", "total_increasing", "m³")),
    ("heat power", "6-0:8.0.0*255", "W", 1500, ("power", "measurement", "W")),
    ("gas volume", "7-0:3.0.0*255", "m³", 12.345, ("gas", "total_increasing", "m³")),
    ("gas energy", "7-0:31.0.0*255", "Wh", 100, ("energy", "total_increasing", "Wh")),
    ("gas pressure", "7-0:42.0.0*255", "bar", 1.01, ("pressure", "measurement", "bar")),
    ("water volume", "8-0:1.0.0*255", "m³", 3.2, ("water", "total_increasing", "m³")),
    ("water volume", "9-0:1.0.0*255", "l", 320, ("water", "total_increasing", "L")),
    ("flow", "8-0:2.0.0*255", "m³/h", 0.4, ("volume_flow_rate", "measurement", "m³/h")),
    ("temperature", "9-0:10.0.0*255", "°C", 55.5, ("temperature", "measurement", "°C")),
    ("M-Bus gas volume", "0-1:24.2.1*255", "m³", 871.2, ("gas", "total_increasing", "m³")),
    ("clock", "0-0:1.0.0*255", None, STAMP, ("timestamp", None, None)),
]
FALLBACKS = [
    # the cases: status word, text, a clock without an offset, other numbers
    ("0-0:96.5.0*255", None, 0, (None, None, None)),
    ("0-0:96.14.0*255", None, 2, (None, None, None)),
    ("0-0:96.1.0*255", None, "4C475A0012345678", (None, None, None)),
    ("0-0:1.0.0*255", None, "2024-03-01T12:00:00", (None, None, None)),
    ("1-0:32.32.0*255", None, 3, (None, None, None)),
    ("1-0:81.7.0*255", "°", 120, (None, "measurement", "°")),
    ("1-0:1.8.0*255", "Wh", None, (None, None, "Wh")),
    ("not an obis code", "Wh", 1, (None, None, "Wh")),
]


def test_every_rule_has_a_case() -> None:
    assert {row[0] for row in ROWS} == {rule.name for rule in RULES}


@pytest.mark.parametrize(
    ("rule", "obis", "unit", "value", "expected"), ROWS, ids=[f"{r[0]}:{r[1]}" for r in ROWS]
)
def test_class_table_row(
    rule: str, obis: str, unit: str | None, value: object, expected: tuple[Any, ...]
) -> None:
    classes = sensor_classes(obis, unit, value)
    assert classes == SensorClasses(*expected)
    # What Home Assistant accepts for that class, and the schema agrees.
    if classes.device_class is not None:
        assert classes.unit in DEVICE_CLASS_UNITS[classes.device_class]
    check_discovery({"state_topic": "t", **classes.config()})


@pytest.mark.parametrize(("obis", "unit", "value", "expected"), FALLBACKS)
def test_class_fallbacks(obis: str, unit: str | None, value: object, expected: Any) -> None:
    assert sensor_classes(obis, unit, value) == SensorClasses(*expected)


def test_the_schema_refuses_what_home_assistant_refuses() -> None:
    """The issue's bugs, as payloads: each breaks a documented rule."""
    bad = [
        {"device_class": "gas", "unit_of_measurement": "kWh"},
        {"device_class": "energy", "state_class": "measurement", "unit_of_measurement": "Wh"},
        {"device_class": "water", "unit_of_measurement": "l"},
        {"device_class": "timestamp", "state_class": "measurement"},
        {"availability": [{"topic": "a"}], "availability_topic": "a"},
        {"device": {"name": "no identifiers"}, "unique_id": "x"},
        {"nmae": "typo"},
    ]
    for extra in bad:
        assert list(SENSOR_SCHEMA.iter_errors({"state_topic": "t", **extra})), extra


@pytest.mark.parametrize(
    ("obis", "name"),
    [
        ("1-0:1.8.0*255", "Active energy import"),
        ("1-0:2.8.0*255", "Active energy export"),
        ("1-0:1.8.2*255", "Active energy import T2"),
        ("1-0:1.7.0*255", "Active power import"),
        ("1-0:21.7.0*255", "Active power import L1"),
        ("1-0:62.7.0*255", "Active power export L3"),
        ("1-0:3.8.0*255", "Reactive energy import"),
        ("1-0:5.8.0*255", "Reactive energy QI"),
        ("1-0:1.6.0*255", "Active power import (maximum demand)"),
        ("1-0:32.7.0*255", "Voltage L1"),
        ("1-0:52.7.0*255", "Voltage L2"),
        ("1-0:71.7.0*255", "Current L3"),
        ("1-0:13.7.0*255", "Power factor"),
        ("1-0:14.7.0*255", "Frequency"),
        ("0-0:1.0.0*255", "Clock"),
        ("0-0:96.1.0*255", "Meter serial number"),
        ("7-0:3.0.0*255", "Gas volume"),
        ("8-0:1.0.0*255", "Water volume"),
        ("9-0:1.0.0*255", "Hot water volume"),
        ("6-0:1.0.0*255", "Heat energy"),
        ("0-1:24.2.1*255", "M-Bus channel 1 value"),
        ("1-0:99.1.0*255", "1-0:99.1.0"),
        ("1-0:99.1.0*101", "1-0:99.1.0*101"),
    ],
)
def test_names(obis: str, name: str) -> None:
    assert sensor_name(obis) == name


def test_medium_names_for_codes_outside_the_table() -> None:
    classes = sensor_classes("8-0:2.0.0*255", "m³/h", 0.4)
    assert sensor_name("8-0:2.0.0*255", classes) == "Water flow (8-0:2.0.0)"


# --- discovery configs -------------------------------------------------------------------

READINGS = [
    reading("0-0:1.0.0*255", STAMP, None),
    reading("0-0:96.1.0*255", "4C475A0012345678", None),
    reading("0-0:96.5.0*255", 0, None),
    reading("1-0:1.8.0*255", 123456, "Wh"),
    reading("1-0:2.8.0*255", 42, "Wh"),
    reading("1-0:3.8.0*255", 777, "varh"),
    reading("1-0:1.7.0*255", 530, "W"),
    reading("1-0:3.7.0*255", 12, "var"),
    reading("1-0:9.7.0*255", 600, "VA"),
    reading("1-0:32.7.0*255", 230.1, "V"),
    reading("1-0:31.7.0*255", 1.2, "A"),
    reading("1-0:14.7.0*255", 50.0, "Hz"),
    reading("1-0:13.7.0*255", 0.98, None),
    reading("7-0:3.0.0*255", 12.345, "m³"),
    reading("8-0:1.0.0*255", 3.2, "m³"),
    reading("9-0:1.0.0*255", 320, "l"),
    reading("6-0:1.0.0*255", 1000, "Wh"),
]


def test_discovery_config_names_availability_and_expiry() -> None:
    builder = MessageBuilder("mqtt", settings(mode="obis", homeassistant=True, client_id="gw"))
    item = record(5, meter="Flat 3", readings=READINGS, labels={"push_interval": "900"})
    messages, announcing = builder.messages([item])
    configs = {m.topic: json.loads(m.payload) for m in messages if m.topic.endswith("/config")}
    assert len(configs) == len(READINGS) == len(announcing)
    for config in configs.values():
        check_discovery(config)
        assert config["availability"] == [{"topic": "dlmsd/gw/status"}]
        assert config["expire_after"] == 2700  # three pushes of 900 s missed
        assert config["device"]["name"] == "Flat 3"
    water = configs[f"homeassistant/sensor/dlmsd_{TITLE}/8-0_1_0_0_255/config"]
    assert (water["name"], water["device_class"], water["object_id"]) == (
        "Water volume",
        "water",
        "flat_3_8_0_1_0_0_255",
    )
    status = configs[f"homeassistant/sensor/dlmsd_{TITLE}/0-0_96_5_0_255/config"]
    assert "state_class" not in status and "device_class" not in status
    clock = configs[f"homeassistant/sensor/dlmsd_{TITLE}/0-0_1_0_0_255/config"]
    assert clock["device_class"] == "timestamp"
    # State topics are retained by default, the push topic is not.
    assert all(m.retain for m in messages)
    both = MessageBuilder("mqtt", settings(mode="both"))
    push, *per_obis = both.messages([record(6, readings=READINGS[:2])])[0]
    assert not push.retain and all(m.retain for m in per_obis)
    plain = MessageBuilder("mqtt", settings(mode="obis", obis_retain=False))
    assert not any(m.retain for m in plain.messages([record(7, readings=READINGS[:2])])[0])


def test_no_expiry_without_a_push_interval_and_availability_off_without_discovery() -> None:
    builder = MessageBuilder("mqtt", settings(mode="obis", homeassistant=True))
    messages, _ = builder.messages([record(5, readings=READINGS[:1], labels={})])
    assert "expire_after" not in json.loads(messages[0].payload)
    # The sink's push_interval is every meter's, unless a meter's label says otherwise.
    builder = MessageBuilder("mqtt", settings(mode="obis", homeassistant=True, push_interval=10))
    messages, _ = builder.messages([record(5, readings=READINGS[:1])])
    assert json.loads(messages[0].payload)["expire_after"] == 30
    bad_label = record(
        5, title="53494D0100000008", readings=READINGS[:1], labels={"push_interval": "x"}
    )
    messages, _ = builder.messages([bad_label])
    assert json.loads(messages[0].payload)["expire_after"] == 30
    assert settings().availability_topic is None
    assert settings(availability_topic="gw/up").availability_topic == "gw/up"


# --- against the real broker ------------------------------------------------------------


class Collector:
    """Every message on `topic`, kept in arrival order (a clean session each time)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: self._ready.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop_start()
        self._client = client
        if not self._ready.wait(10):
            raise RuntimeError("no SUBACK")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def configs(self) -> list[tuple[str, dict[str, Any], bool]]:
        with self._lock:
            return [
                (topic, json.loads(payload), retained)
                for topic, payload, retained in self.messages
                if topic.endswith("/config")
            ]

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for name, payload, _ in self.messages if name == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def volatile_mosquitto(mosquitto: Mosquitto) -> Iterator[Mosquitto]:
    """The test's broker, without persistence: a restart forgets every retained message."""
    mosquitto.stop()
    mosquitto.persistence = False
    mosquitto.write_config()
    mosquitto.start()
    yield mosquitto


def ha_sink(port: int, protocol: str = "3.1.1") -> MqttSink:
    options = sink_options(
        port, mode="obis", homeassistant=True, client_id="dlmsd-ha-test", protocol=protocol
    )
    return MqttSink("mqtt", settings(**options))


@on_reactor
async def test_every_discovery_payload_on_the_broker_is_a_valid_sensor(
    mosquitto: Mosquitto,
) -> None:
    sink = ha_sink(mosquitto.port)
    watcher = Collector(mosquitto.port, "homeassistant/#")
    try:
        await wait_until(lambda: sink.connected)
        await sink.deliver([record(1, meter="Flat 3", readings=READINGS)])
        await sink.deliver([record(2, meter="Flat 3", readings=READINGS)])
        await wait_until(lambda: len(watcher.configs()) == len(READINGS))
    finally:
        await sink.close()
        watcher.close()
    configs = [config for _, config, _ in watcher.configs()]
    for config in configs:
        check_discovery(config)
    # A late subscriber (Home Assistant starting) gets them all, retained, and the states.
    late = Collector(mosquitto.port, "#")
    try:
        await wait_until(lambda: len(late.configs()) == len(READINGS))
        assert all(retained for _, _, retained in late.configs())
        states = [m for m in late.messages if m[0].startswith(f"dlmsd/{TITLE}/")]
        assert len(states) == len(READINGS) and all(retained for *_, retained in states)
        # Closed cleanly: the availability topic says offline (retained).
        await wait_until(lambda: late.payloads("dlmsd/dlmsd-ha-test/status") == [b"offline"])
    finally:
        late.close()
    names = {c["state_topic"].rsplit("/", 1)[1]: c["name"] for c in configs}
    assert names["7-0:3.0.0*255"] == "Gas volume"
    assert names["1-0:32.7.0*255"] == "Voltage L1"


@on_reactor
async def test_discovery_is_republished_after_a_broker_restart_without_persistence(
    volatile_mosquitto: Mosquitto,
) -> None:
    broker = volatile_mosquitto
    sink = ha_sink(broker.port)
    try:
        await wait_until(lambda: sink.connected)
        await sink.deliver([record(1, readings=READINGS)])
        broker.stop()
        await wait_until(lambda: not sink.connected)
        broker.start()  # empty: no retained configs, no availability
        await wait_until(lambda: sink.connected, timeout=10)
        late = Collector(broker.port, "#")
        try:
            # No new push: the reconnect alone brings every config and "online" back.
            await wait_until(lambda: len(late.configs()) == len(READINGS))
            assert all(retained for _, _, retained in late.configs())
            for _, config, _ in late.configs():
                check_discovery(config)
            assert late.payloads("dlmsd/dlmsd-ha-test/status") == [b"online"]
        finally:
            late.close()
    finally:
        await sink.close()
    assert sink.republished == len(READINGS)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@on_reactor
async def test_home_assistant_online_brings_the_configs_again(
    mosquitto: Mosquitto, protocol: str
) -> None:
    sink = ha_sink(mosquitto.port, protocol)
    watcher = Collector(mosquitto.port, "homeassistant/sensor/#")
    try:
        await wait_until(lambda: sink.connected)
        await sink.deliver([record(1, readings=READINGS[:3])])
        await wait_until(lambda: len(watcher.configs()) == 3)
        home_assistant = paho.Client(CallbackAPIVersion.VERSION2, client_id="ha")
        home_assistant.connect("127.0.0.1", mosquitto.port)
        home_assistant.loop_start()
        try:
            home_assistant.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
            await wait_until(lambda: len(watcher.configs()) == 6)
            home_assistant.publish("homeassistant/status", "offline", qos=1).wait_for_publish(5)
        finally:
            home_assistant.disconnect()
            home_assistant.loop_stop()
    finally:
        await sink.close()
        watcher.close()
    assert len(watcher.configs()) == 6  # "offline" asks for nothing


@on_reactor
async def test_last_will_says_offline_when_the_connection_drops(mosquitto: Mosquitto) -> None:
    sink = ha_sink(mosquitto.port)
    status = "dlmsd/dlmsd-ha-test/status"
    watcher = Collector(mosquitto.port, status)
    try:
        await wait_until(lambda: sink.connected)
        await wait_until(lambda: watcher.payloads(status) == [b"online"])
        # Drop the TCP connection without DISCONNECT: the broker publishes the will.
        sink._drop(sink._client)
        sink._schedule_reconnect(0.3)
        await wait_until(lambda: watcher.payloads(status)[:2] == [b"online", b"offline"])
        await wait_until(lambda: watcher.payloads(status) == [b"online", b"offline", b"online"])
    finally:
        await sink.close()
        await wait_until(lambda: watcher.payloads(status)[-1:] == [b"offline"])
        watcher.close()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"push_interval": 0}, "push_interval"),
        ({"push_interval": "900"}, "push_interval"),
        ({"expire_after_pushes": -1}, "expire_after_pushes"),
        ({"availability_topic": "gw/+/status"}, "availability_topic"),
        ({"availability_topic": ""}, "availability_topic"),
        ({"obis_retain": "yes"}, "obis_retain"),
    ],
)
def test_bad_discovery_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(SinkConfigError) as caught:
        settings(**options)
    assert caught.value.key == key
