"""Implied scales of pushes that carry their push object list, from a real capture.

Iskraemeco AM550 (Switzerland, VSE configuration): element 1 is the push object list,
the values follow without scaler-unit and are scaled as scs/smartmeter-datacollector
documents (tests/data/field/iskraemeco/smdc-am550-vse2026.json).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from dlmsd.cosem.readings import extract_readings
from dlmsd.decoding import split_capture
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import Data

FIELD = Path(__file__).resolve().parents[1] / "data" / "field"


def body_of(name: str) -> Data:
    capture = json.loads((FIELD / name).read_text(encoding="utf-8"))
    (found,) = split_capture(bytes.fromhex(capture["hex"]))
    return DataNotification.from_bytes(found.apdu).body


def by_obis(body: Data) -> dict[str, object]:
    return {str(r.obis).removesuffix("*255"): (r.value, r.unit) for r in extract_readings(body)}


def test_iskra_push_object_list_gets_the_documented_scales() -> None:
    readings = by_obis(body_of("iskraemeco/smdc-am550-vse2026.json"))
    assert readings["1-1:1.7.0"] == (27, "W")
    assert readings["1-1:1.8.0"] == (15207, "Wh")
    assert readings["1-0:32.7.0"] == (Decimal("234.7"), "V")
    assert readings["1-0:31.7.0"] == (Decimal("0.12"), "A")
    assert readings["0-0:42.0.0"] == ("ISK1030783821282", None)
