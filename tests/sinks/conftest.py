"""Fixtures of the sink tests: a real mosquitto (plain, TLS, password listeners) and its PKI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sinks.mosquitto import MOSQUITTO, Certificates, Mosquitto, make_certificates


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a broker certificate for ``localhost`` and a client certificate (PEM files)."""
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mosquitto(tmp_path: Path, certificates: Certificates) -> Iterator[Mosquitto]:
    """A running broker of this test alone; `stop()`/`start()` for outages; stopped at teardown."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (make test-deps installs it)")
    broker = Mosquitto(tmp_path / "mosquitto", certificates)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
