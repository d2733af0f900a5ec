"""A real mosquitto for the sink tests, and a thread-based test subscriber.

`Mosquitto` writes a config under a temporary directory and runs
``/usr/sbin/mosquitto`` on free loopback ports: a plain listener (anonymous),
a TLS listener that wants a client certificate signed by the test CA, and a
listener that wants a user name and password. It can be stopped and started
again on the same ports (outage tests); persistence is on, so a subscriber's
persistent session and its queued messages survive a restart.

`make_certificates` builds the CA, the broker's certificate (for
``localhost`` only, so connecting to ``127.0.0.1`` fails host name checks)
and a client certificate with `cryptography`.

`Subscriber` counts what the broker delivers: a paho client in its own
thread (``loop_start``), acceptable for the test side only.
"""

from __future__ import annotations

import datetime
import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
USERNAME = "meter-gateway"
PASSWORD = "s3cret-Pa55word-not-in-logs"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- certificates -----------------------------------------------------------------------


@attrs.frozen
class Certificates:
    """PEM files of a test PKI."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: verification against it fails


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    dns: list[str],
    usage: x509.ObjectIdentifier,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certificates(directory: Path) -> Certificates:
    """A CA, a broker certificate for ``localhost`` and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("dlmsd test CA")
    server, server_key = _leaf(
        "localhost", ca, ca_key, dns=["localhost"], usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client, client_key = _leaf(
        "dlmsd-client", ca, ca_key, dns=[], usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    other, _ = _ca("unrelated CA")
    return Certificates(
        ca=_write_cert(ca, directory / "ca.pem"),
        server_cert=_write_cert(server, directory / "server.pem"),
        server_key=_write_key(server_key, directory / "server.key"),
        client_cert=_write_cert(client, directory / "client.pem"),
        client_key=_write_key(client_key, directory / "client.key"),
        other_ca=_write_cert(other, directory / "other-ca.pem"),
    )


# --- the broker ---------------------------------------------------------------------------


@attrs.define
class Mosquitto:
    """One mosquitto process with a plain, a TLS and a password listener."""

    root: Path
    certificates: Certificates
    port: int = attrs.field(factory=free_port)
    tls_port: int = attrs.field(factory=free_port)
    password_port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: False: a restart forgets retained messages and sessions (write_config() again).
    persistence: bool = True

    @property
    def config_path(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "mosquitto.log"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        passwords = self.root / "passwd"
        passwords.write_text(f"{USERNAME}:{PASSWORD}\n")
        # -U hashes the plain text file in place.
        subprocess.run([MOSQUITTO_PASSWD, "-U", str(passwords)], check=True)
        certs = self.certificates
        self.config_path.write_text(
            "\n".join(
                [
                    "per_listener_settings true",
                    f"persistence {'true' if self.persistence else 'false'}",
                    f"persistence_location {self.root}/",
                    # Unlimited queue for offline persistent subscribers: count everything.
                    "max_queued_messages 0",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    # Ignored unless started as root, where it keeps mosquitto able to
                    # write its persistence file into the test's directory.
                    f"user {getpass.getuser()}",
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    f"listener {self.tls_port} 127.0.0.1",
                    "allow_anonymous true",
                    f"cafile {certs.ca}",
                    f"certfile {certs.server_cert}",
                    f"keyfile {certs.server_key}",
                    "require_certificate true",
                    f"listener {self.password_port} 127.0.0.1",
                    "allow_anonymous false",
                    f"password_file {passwords}",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until every listener accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        if not self.config_path.exists():
            self.write_config()
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "mosquitto.stderr", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + timeout
        for port in (self.port, self.tls_port, self.password_port):
            while not _accepts(port):
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.diagnostics()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not listen in time: {self.diagnostics()}")
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM saves the persistence file)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def diagnostics(self) -> str:
        parts = []
        for path in (self.root / "mosquitto.stderr", self.log_path):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --- the counting subscriber --------------------------------------------------------------


class Subscriber:
    """Subscribes (QoS 1, persistent session) and keeps every message it gets."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "test-subscriber") -> None:
        self.topic = topic
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        client.reconnect_delay_set(1, 1)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("subscriber did not get its SUBACK")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: Any, reasons: Any, props: Any
    ) -> None:
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self._messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    @property
    def messages(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self._messages)

    def payloads(self, prefix: str = "") -> list[dict[str, Any]]:
        """JSON payloads of the messages whose topic starts with `prefix` (JSON objects
        only: availability payloads are plain ``online``/``offline``)."""
        out = []
        for topic, payload, _ in self.messages:
            if topic.startswith(prefix) and payload.startswith(b"{"):
                out.append(json.loads(payload))
        return out

    def counters(self, prefix: str = "dlmsd/") -> set[tuple[str, int]]:
        """Distinct (system title, invocation counter) pairs seen in push messages."""
        return {
            (payload["system_title"], payload["invocation_counter"])
            for payload in self.payloads(prefix)
            if "invocation_counter" in payload
        }

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def iter_lines(path: Path) -> Iterator[str]:
    if path.exists():
        yield from path.read_text().splitlines()
