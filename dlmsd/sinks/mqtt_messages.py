"""What the MQTT sink publishes: its settings, topics, payloads, Home Assistant discovery.

Pure functions and value classes, no connection: `parse_mqtt_settings`
validates a ``[[sinks]]`` table of type ``mqtt``; `MessageBuilder` turns a
batch of records into `Message`s per the topic templates, the mode and the
discovery option. `publish_packet` and `split_packets` are the two ends of
the wire the sink moves its messages over (PUBLISH out, acknowledgements in);
`dlmsd.sinks.mqtt` sends them.

Topic template fields: ``{system_title}``, ``{meter}``, ``{meter_id}``,
``{invocation_counter}``, ``{record_id}``, ``{sink}``, and for `obis_topic`
also ``{obis}``, ``{obis_slug}`` and ``{attribute}``. Values are made
topic-safe (``/``, ``+``, ``#`` become ``_``).

One rule names the meter in both default topics: its system title
(``dlmsd/{system_title}/push``, ``dlmsd/{system_title}/{obis}``), the one
identity every record has and that a rename in the key file does not move.
``{meter}`` (the key file's name, else the system title) is there for either
template when names are wanted. Home Assistant shows the meter's name anyway
(the device name of its discovery configs).
"""

from __future__ import annotations

import functools
import json
import math
import socket
import ssl
import string
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from paho.mqtt.enums import MQTTProtocolVersion

from dlmsd import __version__
from dlmsd.service.state import SpoolRecord, encode_record
from dlmsd.sinks.base import SinkConfigError
from dlmsd.sinks.homeassistant import sensor_classes, sensor_name
from dlmsd.sinks.options import OptionReader, Secret, secret_option

MODES = ("push", "obis", "both")
PROTOCOLS = {"3.1.1": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}
PUSH_FIELDS = frozenset(
    {"system_title", "meter", "meter_id", "invocation_counter", "record_id", "sink"}
)
OBIS_FIELDS = PUSH_FIELDS | {"obis", "obis_slug", "attribute"}
# Fields the push topic can take from the spool row's record_id, without parsing the JSON.
_ID_FIELDS = frozenset({"system_title", "invocation_counter", "record_id", "sink"})
# A push topic of these fields is the same for every record of a meter: formatted once.
_PER_METER_FIELDS = frozenset({"system_title", "sink"})
_TOPIC_CACHE_SIZE = 65_536
_QOS2_V311_WINDOW = 20  # mosquitto's default max_inflight_messages
# MQTT topic names must not hold wildcards; a "/" in a meter name would add a level.
_TOPIC_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\x00": "_"})


class TlsSetupError(Exception):
    """The TLS files cannot be loaded; the message names the file and the reason."""


# --- settings ----------------------------------------------------------------------


@attrs.frozen(slots=True)
class TlsSettings:
    """TLS towards the broker: CA bundle (system store when None), client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: Secret | None = attrs.field(default=None, repr=False)

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the chain and the host name.

        Raises TlsSetupError naming the file at fault (or SecretError).
        """
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as error:
                raise TlsSetupError(f"ca_file {self.ca_file}: {describe_error(error)}") from None
        if self.cert_file is not None:
            password = self.key_password.read() if self.key_password is not None else None
            key = str(self.key_file) if self.key_file is not None else None
            try:
                context.load_cert_chain(str(self.cert_file), key, password)
            except (OSError, ssl.SSLError) as error:
                files = f"{self.cert_file}" + (f" / {self.key_file}" if key else "")
                raise TlsSetupError(
                    f"cert_file/key_file {files}: {describe_error(error)}"
                ) from None
        return context


@attrs.frozen(slots=True)
class MqttSettings:
    """One MQTT sink's validated options (see `mqtt_sink_factory` for the keys)."""

    host: str
    port: int
    protocol: str = "3.1.1"
    client_id: str = ""
    clean_session: bool = True
    session_expiry: int = 0
    keepalive: int = 60
    topic: str = "dlmsd/{system_title}/push"
    obis_topic: str = "dlmsd/{system_title}/{obis}"
    mode: str = "push"
    retain: bool = False
    obis_retain: bool = True
    qos: int = 1
    username: str | None = None
    password: Secret | None = attrs.field(default=None, repr=False)
    tls: TlsSettings | None = None
    connect_timeout: float = 5.0
    connect_wait: float = 5.0
    ack_timeout: float = 30.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    max_inflight: int = 1000
    homeassistant: bool = False
    discovery_prefix: str = "homeassistant"
    availability_topic: str | None = None
    push_interval: float | None = None
    expire_after_pushes: float = 3.0

    @property
    def status_topic(self) -> str:
        """Where Home Assistant announces itself (its birth ``online``)."""
        return f"{self.discovery_prefix}/status"

    @property
    def url(self) -> str:
        """Where the broker is, for log lines (no credentials)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _template_fields(template: str, allowed: frozenset[str], key: str) -> frozenset[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise SinkConfigError(key, f"bad topic template: {error}") from None
    fields = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in allowed or spec or conversion:
            known = ", ".join("{" + name + "}" for name in sorted(allowed))
            raise SinkConfigError(key, f"unknown field {{{field}}} in topic (known: {known})")
        fields.add(field)
    if "+" in template or "#" in template:
        raise SinkConfigError(key, "a topic to publish to cannot hold the wildcards + or #")
    return frozenset(fields)


def _default_window(protocol: str, qos: int) -> int:
    """QoS 2 over MQTT 3.1.1: a broker holds each message until its PUBREL and caps how
    many (mosquitto: max_inflight_messages, 20), but 3.1.1 cannot tell the client; one
    over the cap and mosquitto drops the connection, every batch again. MQTT 5 brokers
    announce their cap (Receive Maximum), and QoS 1 holds nothing at the broker."""
    return _QOS2_V311_WINDOW if qos == 2 and protocol == "3.1.1" else 1000


OPTION_DOCS = {
    "host": "Broker host name or address.",
    "port": "Broker port (default 1883; 8883 with tls).",
    "protocol": "MQTT protocol version: 3.1.1 or 5.",
    "client_id": "Client id (unique per sink: a broker drops the older of two same-id sessions).",
    "clean_session": "Start a fresh session (false: the broker keeps queued QoS messages).",
    "session_expiry": "MQTT 5: seconds the broker keeps the session after a disconnect.",
    "keepalive": "Seconds between keep-alive pings.",
    "topic": "Topic template of whole pushes (fields: see the mqtt sink docs).",
    "obis_topic": "Topic template of single readings (obis/both mode; adds {obis}, {obis_slug}).",
    "mode": "push: one message per push; obis: one per reading; both.",
    "retain": "Publish with the retain flag.",
    "qos": "QoS of the publishes: 1 (at least once) or 2 (exactly once to the broker).",
    "username": "User name for the broker (needs password_file or password_env).",
    "password_file": "File holding the broker password (first line; mode 0600, checked at start).",
    "password_env": "Environment variable holding the broker password (checked at start).",
    "tls": "Connect over TLS, verifying the broker's certificate and host name.",
    "ca_file": "CA bundle to verify the broker against (default: the system store).",
    "cert_file": "Client certificate (PEM) for TLS client authentication.",
    "key_file": "Private key of cert_file, if not in the same file.",
    "key_password_file": "File holding the password of key_file (mode 0600, checked at start).",
    "key_password_env": "Environment variable holding the password of key_file.",
    "connect_timeout": "Seconds to wait for the TCP/TLS connection and the CONNACK.",
    "connect_wait": "Seconds a delivery waits for a connection before it fails and retries.",
    "ack_timeout": "Seconds to wait for the acknowledgements of a batch before reconnecting.",
    "reconnect_min": "Seconds before the first reconnect attempt (doubles per failure).",
    "reconnect_max": "Longest wait between reconnect attempts (seconds).",
    "max_inflight": "Unacknowledged publishes at most (1000; 20 for QoS 2 over MQTT 3.1.1).",
    "homeassistant": "Publish Home Assistant discovery configs (needs mode obis or both).",
    "discovery_prefix": "Home Assistant discovery topic prefix.",
    "availability_topic": "Online/offline topic of this sink (default dlmsd/CLIENT_ID/status).",
    "obis_retain": "Publish the per-OBIS state topics with the retain flag.",
    "push_interval": "Seconds between pushes, for sensors' expire_after (a meter label wins).",
    "expire_after_pushes": "Sensors expire after this many missed pushes (0: never).",
}
"""One line of doc per option, for docs/configuration.md (`dlmsd.service.configdoc`)."""


def parse_mqtt_settings(name: str, options: Mapping[str, Any]) -> MqttSettings:
    """Validate an ``[[sinks]]`` table of type ``mqtt``; raises SinkConfigError."""
    read = OptionReader(options)
    tls_enabled = read.boolean("tls", False)
    ca_file, cert_file, key_file = (
        read.path("ca_file"),
        read.path("cert_file"),
        read.path("key_file"),
    )
    key_password = secret_option(options, "key_password")
    password = secret_option(options, "password")
    read.mark("key_password_file", "key_password_env", "password_file", "password_env")
    if (ca_file or cert_file or key_file) and not tls_enabled:
        raise SinkConfigError("tls", "ca_file/cert_file/key_file are given: set tls = true")
    if key_file and not cert_file:
        raise SinkConfigError("key_file", "a key_file needs its cert_file")
    tls = TlsSettings(ca_file, cert_file, key_file, key_password) if tls_enabled else None
    protocol = read.choice("protocol", tuple(PROTOCOLS), "3.1.1")
    mode = read.choice("mode", MODES, "push")
    topic = read.string("topic", "dlmsd/{system_title}/push")
    obis_topic = read.string("obis_topic", "dlmsd/{system_title}/{obis}")
    _template_fields(topic, PUSH_FIELDS, "topic")
    _template_fields(obis_topic, OBIS_FIELDS, "obis_topic")
    homeassistant = read.boolean("homeassistant", False)
    if homeassistant and mode == "push":
        raise SinkConfigError(
            "homeassistant", 'discovery needs one topic per OBIS: set mode = "obis" or "both"'
        )
    client_id = read.string("client_id", f"dlmsd-{socket.gethostname()}-{name}")[:128]
    availability_topic = read.optional_string("availability_topic")
    if availability_topic is not None:
        _template_fields(availability_topic, frozenset(), "availability_topic")
        if not availability_topic:
            raise SinkConfigError("availability_topic", "must not be empty")
    elif homeassistant:
        availability_topic = f"dlmsd/{_safe(client_id)}/status"
    username = read.optional_string("username")
    if password is not None and username is None:
        raise SinkConfigError("username", "a password needs a username")
    reconnect_min = read.number("reconnect_min", 0.5, 0.01, 3600.0)
    qos = read.integer("qos", 1, 1, 2)
    settings = MqttSettings(
        host=read.string("host", "127.0.0.1"),
        port=read.integer("port", 8883 if tls else 1883, 1, 65535),
        protocol=protocol,
        # Unique per host and sink: a broker drops the older of two same-id sessions.
        client_id=client_id,
        clean_session=read.boolean("clean_session", True),
        session_expiry=read.integer("session_expiry", 0, 0, 0xFFFFFFFF),
        keepalive=read.integer("keepalive", 60, 5, 65535),
        topic=topic,
        obis_topic=obis_topic,
        mode=mode,
        retain=read.boolean("retain", False),
        obis_retain=read.boolean("obis_retain", True),
        qos=qos,
        username=username,
        password=password,
        tls=tls,
        connect_timeout=read.number("connect_timeout", 5.0, 0.1, 600.0),
        connect_wait=read.number("connect_wait", 5.0, 0.0, 3600.0),
        ack_timeout=read.number("ack_timeout", 30.0, 0.1, 3600.0),
        reconnect_min=reconnect_min,
        reconnect_max=read.number("reconnect_max", 30.0, reconnect_min, 86400.0),
        max_inflight=read.integer("max_inflight", _default_window(protocol, qos), 1, 60_000),
        homeassistant=homeassistant,
        discovery_prefix=read.string("discovery_prefix", "homeassistant"),
        availability_topic=availability_topic,
        push_interval=(
            read.number("push_interval", 0.0, 1.0, 31_622_400.0)
            if "push_interval" in options
            else None
        ),
        expire_after_pushes=read.number("expire_after_pushes", 3.0, 0.0, 1000.0),
    )
    read.finish()
    return settings


# --- messages ----------------------------------------------------------------------


@attrs.frozen(slots=True)
class Message:
    """One PUBLISH: topic, payload, retain flag."""

    topic: str
    payload: bytes
    retain: bool


def obis_slug(obis: str) -> str:
    """``1-0:1.8.0*255`` -> ``1-0_1_8_0_255``: an id Home Assistant and topics accept."""
    return obis.replace(":", "_").replace(".", "_").replace("*", "_")


def _safe(value: object) -> str:
    return str(value).translate(_TOPIC_UNSAFE)


def homeassistant_classes(obis: str, unit: str | None, value: object) -> dict[str, str]:
    """device_class/state_class/unit_of_measurement of a reading's sensor
    (`dlmsd.sinks.homeassistant.sensor_classes`: by medium, quantity and unit)."""
    return sensor_classes(obis, unit, value).config()


class MessageBuilder:
    """Turns records into messages per the topic templates, mode and discovery option."""

    def __init__(self, sink_name: str, settings: MqttSettings) -> None:
        self.sink_name = sink_name
        self.settings = settings
        self._push_fields = _template_fields(settings.topic, PUSH_FIELDS, "topic")
        # Most templates only need the system title: take it from the record id.
        self._push_from_id = self._push_fields <= _ID_FIELDS
        self._per_meter = self._push_fields <= _PER_METER_FIELDS
        self._topics: dict[str, str] = {}  # system title -> push topic, when per meter
        self.announced: set[str] = set()
        # The last discovery config of each sensor: sent again on every new connection
        # (a broker without persistence forgets retained messages) and when Home
        # Assistant comes online.
        self.discovery: dict[str, Message] = {}

    def messages(self, records: Sequence[Mapping[str, object]]) -> tuple[list[Message], set[str]]:
        """The messages of a batch, and the discovery keys it announces (kept on success)."""
        out: list[Message] = []
        announcing: set[str] = set()
        mode = self.settings.mode
        for record in records:
            if mode != "obis":
                out.append(self._push_message(record))
            if mode != "push":
                out.extend(self._obis_messages(record, announcing))
        return out, announcing

    def _push_message(self, record: Mapping[str, object]) -> Message:
        settings = self.settings
        if isinstance(record, SpoolRecord):
            payload = record.utf8  # the stored bytes, not decoded and re-encoded
            if self._per_meter:
                title = record.record_id.partition(":")[0]
                topic = self._topics.get(title)
                if topic is None:
                    if len(self._topics) >= _TOPIC_CACHE_SIZE:
                        self._topics.clear()
                    topic = settings.topic.format(system_title=title, sink=self.sink_name)
                    self._topics[title] = topic
                return Message(topic, payload, settings.retain)
            if self._push_from_id:
                title, _, counter = record.record_id.partition(":")
                topic = settings.topic.format(
                    system_title=title,
                    invocation_counter=counter,
                    record_id=_safe(record.record_id),
                    sink=self.sink_name,
                )
                return Message(topic, payload, settings.retain)
        else:
            payload = encode_record(record).encode("utf-8")
        return Message(settings.topic.format_map(self._fields(record)), payload, settings.retain)

    def _fields(self, record: Mapping[str, object]) -> dict[str, str]:
        title = record.get("system_title")
        counter = record.get("invocation_counter")
        record_id = record.record_id if isinstance(record, SpoolRecord) else f"{title}:{counter}"
        meter = record.get("meter") or record.get("meter_id") or title
        return {
            "system_title": _safe(title),
            "meter": _safe(meter),
            "meter_id": _safe(record.get("meter_id") or title),
            "invocation_counter": _safe(counter),
            "record_id": _safe(record_id),
            "sink": _safe(self.sink_name),
        }

    def _obis_messages(
        self, record: Mapping[str, object], announcing: set[str]
    ) -> Iterator[Message]:
        readings = record.get("readings")
        if not isinstance(readings, list):
            return
        settings = self.settings
        fields = self._fields(record)
        common = {
            "meter": record.get("meter"),
            "system_title": record.get("system_title"),
            "invocation_counter": record.get("invocation_counter"),
            "record_id": fields["record_id"],
            "datetime": record.get("datetime"),
            "received_at": record.get("received_at"),
        }
        for reading in readings:
            if not isinstance(reading, dict) or not isinstance(reading.get("obis"), str):
                continue
            obis = reading["obis"]
            topic = settings.obis_topic.format(
                obis=obis,
                obis_slug=obis_slug(obis),
                attribute=_safe(reading.get("attribute")),
                **fields,
            )
            value, unit = reading.get("value"), reading.get("unit")
            if settings.homeassistant and value is not None:
                key = f"{fields['system_title']}/{obis}"
                if key not in self.announced and key not in announcing:
                    announcing.add(key)
                    config = self._discovery(record, fields, obis, unit, value, topic)
                    self.discovery[key] = config
                    yield config
            payload = {"obis": obis, "value": value, "unit": unit, **common}
            yield Message(topic, encode_record(payload).encode("utf-8"), settings.obis_retain)

    def _discovery(
        self,
        record: Mapping[str, object],
        fields: Mapping[str, str],
        obis: str,
        unit: object,
        value: object,
        state_topic: str,
    ) -> Message:
        title = fields["system_title"]
        slug = obis_slug(obis)
        classes = sensor_classes(obis, unit if isinstance(unit, str) else None, value)
        meter = record.get("meter")
        config: dict[str, object] = {
            "name": sensor_name(obis, classes),
            # entity_id sensor.<meter>_<obis>: the OBIS code, unique across meters
            "object_id": _id_text(f"{meter or title}_{slug}"),
            "unique_id": f"dlmsd_{title}_{slug}",
            "state_topic": state_topic,
            "value_template": "{{ value_json.value }}",
            **classes.config(),
        }
        availability = self.settings.availability_topic
        if availability is not None:
            config["availability"] = [{"topic": availability}]
            config["payload_available"] = "online"
            config["payload_not_available"] = "offline"
        interval = _push_interval(record.get("labels"), self.settings.push_interval)
        pushes = self.settings.expire_after_pushes
        if interval is not None and pushes > 0:
            # Unavailable once this many pushes in a row did not come.
            config["expire_after"] = max(1, math.ceil(interval * pushes))
        config["device"] = {
            "identifiers": [f"dlmsd_{title}"],
            "name": str(meter or title),
            "serial_number": title,
            "model": "DLMS/COSEM meter",
            "manufacturer": _flag_id(title),
        }
        config["origin"] = {"name": "dlmsd", "sw_version": __version__}
        topic = f"{self.settings.discovery_prefix}/sensor/dlmsd_{title}/{slug}/config"
        return Message(topic, json.dumps(config, ensure_ascii=False).encode("utf-8"), True)


def _push_interval(labels: object, default: float | None) -> float | None:
    """The meter's push interval in seconds: its ``push_interval`` label in the key
    file, else the sink's ``push_interval`` option, else unknown."""
    if isinstance(labels, dict):
        text = labels.get("push_interval")
        if isinstance(text, str):
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if math.isfinite(value) and value > 0:
                return value
    return default


def _id_text(value: object) -> str:
    """Lower-case letters, digits and ``_``: what Home Assistant keeps of an object id."""
    text = "".join(c if c.isascii() and c.isalnum() else "_" for c in str(value).lower())
    return text.strip("_") or "meter"


def _flag_id(title_hex: str) -> str:
    """The manufacturer's three-letter FLAG id: the system title's first three bytes."""
    try:
        text = bytes.fromhex(title_hex[:6]).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return "unknown"
    return text if text.isalnum() else "unknown"


# --- packets on the wire -----------------------------------------------------------
# The sink writes its PUBLISH packets and reads their acknowledgements itself, in
# bulk: through paho each message cost ~40 µs of Python (an MQTTMessage with a lock
# per PUBLISH, three recv() calls and a Properties object per PUBACK).

PUBLISH = 0x30
PUBACK = 0x40
PUBREC = 0x50
PUBREL = 0x60
PUBCOMP = 0x70
ACKNOWLEDGEMENTS = frozenset({PUBACK, PUBREC, PUBCOMP})
_MAX_REMAINING = 268_435_455  # four bytes of remaining length
_FIRST_BYTES = [bytes((PUBLISH | flags,)) for flags in range(8)]  # by qos << 1 | retain


class PacketError(ValueError):
    """Bytes that are not MQTT packets (a remaining length over four bytes)."""


def _remaining_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length < 0x4000:  # the usual record: two bytes
        return bytes((length & 0x7F | 0x80, length >> 7))
    out = bytearray()
    while True:
        length, digit = length >> 7, length & 0x7F
        out.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(out)


@functools.lru_cache(maxsize=4096)
def _topic_field(topic: str) -> bytes:
    """The topic as a PUBLISH carries it (length, UTF-8); the same few topics repeat."""
    name = topic.encode("utf-8")
    if not name or len(name) > 0xFFFF or b"+" in name or b"#" in name:
        raise ValueError(f"invalid topic {topic!r}")
    return len(name).to_bytes(2, "big") + name


def publish_packet(
    topic: str, payload: bytes, qos: int, retain: bool, mid: int, v5: bool
) -> bytes:
    """A QoS 1/2 PUBLISH; MQTT 5 adds an empty property list. Raises ValueError for a
    topic paho would refuse too (empty, wildcards, too long) or a payload over 256 MB."""
    field = _topic_field(topic)
    length = len(field) + (3 if v5 else 2) + len(payload)
    if length > _MAX_REMAINING:
        raise ValueError("payload too large")
    return b"".join(
        (
            _FIRST_BYTES[qos << 1 | (1 if retain else 0)],
            _remaining_length(length),
            field,
            mid.to_bytes(2, "big"),
            b"\x00" if v5 else b"",  # MQTT 5: no properties
            payload,
        )
    )


def publish_packet_qos0(topic: str, payload: bytes, retain: bool, v5: bool) -> bytes:
    """A QoS 0 PUBLISH (no packet id, no acknowledgement): the availability and the
    discovery configs sent again on a new connection, which the next connection
    sends again if this one drops."""
    field = _topic_field(topic)
    length = len(field) + (1 if v5 else 0) + len(payload)
    if length > _MAX_REMAINING:
        raise ValueError("payload too large")
    return b"".join(
        (
            _FIRST_BYTES[1 if retain else 0],
            _remaining_length(length),
            field,
            b"\x00" if v5 else b"",
            payload,
        )
    )


def subscribe_packet(topic: str, mid: int, v5: bool) -> bytes:
    """SUBSCRIBE to one topic filter at QoS 0 (the sink writes it itself so that its
    packet id is one of the sink's, never one a PUBLISH in flight holds)."""
    name = topic.encode("utf-8")
    body = (
        mid.to_bytes(2, "big")
        + (b"\x00" if v5 else b"")
        + len(name).to_bytes(2, "big")
        + name
        + b"\x00"
    )
    return b"\x82" + _remaining_length(len(body)) + body


def pubrel_packet(mid: int) -> bytes:
    """PUBREL (QoS 2, after PUBREC): reason Success, which both versions write as no byte."""
    return b"\x62\x02" + mid.to_bytes(2, "big")


def split_packets(data: bytes | bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """The whole packets at the start of `data` as (packet start, body start, body end),
    and where the incomplete rest starts. Raises PacketError for a bad remaining length."""
    packets: list[tuple[int, int, int]] = []
    position, end = 0, len(data)
    while position + 2 <= end:
        length = data[position + 1]
        body = position + 2
        if length & 0x80:
            length, shift = length & 0x7F, 7
            while True:
                if body >= end:
                    return packets, position
                digit = data[body]
                body += 1
                length |= (digit & 0x7F) << shift
                if not digit & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise PacketError("remaining length over four bytes")
        stop = body + length
        if stop > end:
            break
        packets.append((position, body, stop))
        position = stop
    return packets, position


def describe_error(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error)
    return text or type(error).__name__
