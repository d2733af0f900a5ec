"""One running `twistd dlmsd` for the interop tests that push to it.

It knows the published vector meter and the simulator's (tests/faults/support.py)
plus the titles the peers push with; tests tell their records apart by system
title and invocation counter.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.support import DaemonProcess
from tests.interop.peers import AK, COSEM_PUSH_TITLE, EK, GURUX_PUSH_OBJECTS, GURUX_PUSH_TITLE


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("interop-daemon"), meters=1)
    objects = ", ".join(f'"{item}"' for item in GURUX_PUSH_OBJECTS)
    keys = (
        f'\n[meters.{GURUX_PUSH_TITLE.hex().upper()}]\nname = "gurux-notify"\n'
        f'encryption_key = "{EK.hex()}"\nauthentication_key = "{AK.hex()}"\n'
        # Gurux pushes bare values: which object each one is comes from the push setup
        f"push_object_list = [{objects}]\n"
        f'\n[meters.{COSEM_PUSH_TITLE.hex().upper()}]\nname = "dlms-cosem"\n'
        f'encryption_key = "{EK.hex()}"\nauthentication_key = "{AK.hex()}"\n'
    )
    process.keys.write_text(process.keys.read_text() + keys)
    with process:
        yield process
