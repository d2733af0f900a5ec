"""The blocking clients against the emulator (a subprocess), over every transport.

Real sockets and a real pseudo-terminal; no mocks. Timeouts are short so the
fault tests stay fast.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from dlmsd.client.blocking import SerialClient, TcpClient, UdpClient
from dlmsd.client.errors import (
    AssociationRefused,
    ConnectionFailed,
    ProtocolViolation,
    ServiceError,
    TimeoutError,
    WrongKeys,
    WrongPassword,
)
from dlmsd.client.targets import Target
from dlmsd.protocol.apdus.errors import DataAccessResult
from dlmsd.protocol.association import Authentication, Ciphering, ClientSettings
from dlmsd.protocol.axdr import Data
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.obis import Obis
from dlmsd.protocol.security import Suite0Cipher
from tests.client.conftest import AK, EK, KEYS, EmulatorProcess

Start = Callable[..., EmulatorProcess]
CIPHER = Suite0Cipher(bytes.fromhex(EK), bytes.fromhex(AK))
WRONG_CIPHER = Suite0Cipher(bytes.fromhex(EK), bytes.fromhex(AK[:-2] + "00"))
TITLE = b"DLMSDTST"
GAS_VOLUME = "7-0:3.0.0*255"
GAS_PROFILE = "7-0:99.1.0*255"


def hls(cipher: Suite0Cipher = CIPHER, **options: object) -> ClientSettings:
    return ClientSettings(
        client_sap=1,
        authentication=Authentication.HLS_GMAC,
        cipher=cipher,
        client_system_title=TITLE,
        **options,  # type: ignore[arg-type]
    )


def test_register_with_scaler_unit_clock_and_list(emulator: Start) -> None:
    meter = emulator("--hours", "48")
    with TcpClient("127.0.0.1", meter.port, timeout=2).session() as session:
        reading = session.read_register(GAS_VOLUME)
        assert isinstance(reading.value, Decimal) and reading.unit == "m³"
        assert reading.value.as_tuple().exponent == -3  # scaler -3 applied exactly
        raw = session.get(GAS_VOLUME)
        assert reading.value == Decimal(raw.value) / 1000  # type: ignore[arg-type]
        moment = session.read_clock().to_datetime()
        assert moment is not None and moment == datetime(2023, 1, 2, 23, 0, tzinfo=UTC)
        values = session.get_many([GAS_VOLUME, "7-0:13.0.0*255", "1-0:99.99.99*255"])
        assert isinstance(values[0], Data) and isinstance(values[1], Data)
        assert values[2] == DataAccessResult.OBJECT_UNDEFINED
        with pytest.raises(ServiceError) as failed:
            session.get("1-0:99.99.99*255")
        assert failed.value.result == DataAccessResult.OBJECT_UNDEFINED
        session.get(GAS_VOLUME)  # a failed GET leaves the session usable


def test_wrong_class_guess_is_corrected_from_the_object_list(emulator: Start) -> None:
    meter = emulator("--hours", "24")
    with TcpClient("127.0.0.1", meter.port, timeout=2).session() as session:
        # 0-1:24.2.1 looks like a Data object but is an Extended Register (class 4).
        reading = session.read_register("0-1:24.2.1*255")
        assert reading.unit == "m³" and isinstance(reading.value, Decimal)
        assert session.get(Target(Obis.parse("0-1:24.2.1"), 5, 4)).value is not None


def test_object_list(emulator: Start) -> None:
    meter = emulator("--hours", "24")
    with TcpClient("127.0.0.1", meter.port, timeout=2).session() as session:
        objects = session.object_list()
    classes = Counter(entry.class_id for entry in objects)
    assert classes[7] == 2 and classes[8] == 1 and classes[15] == 1 and classes[70] == 1
    names = {str(entry.logical_name) for entry in objects}
    assert {GAS_PROFILE, "0-0:43.1.0*255", "1-0:99.1.0*255"} <= names


def test_profile_by_range_by_entries_and_columns(emulator: Start) -> None:
    meter = emulator("--hours", "48")
    with TcpClient("127.0.0.1", meter.port, timeout=2).session() as session:
        everything = session.read_profile(GAS_PROFILE)
        assert len(everything) == 48 and len(everything.columns) == 4
        start = datetime(2023, 1, 1, 5, 0, tzinfo=UTC)
        ranged = session.read_profile(
            GAS_PROFILE, from_=start, to=datetime(2023, 1, 1, 7, 0, tzinfo=UTC)
        )
        assert len(ranged) == 3
        first = ranged.rows[0][0]
        assert isinstance(first, CosemDateTime) and first.to_datetime() == start
        assert ranged.units[2] is not None and ranged.units[2].symbol == "m³"
        assert isinstance(ranged.rows[0][2], Decimal)
        entries = session.read_profile(GAS_PROFILE, entries=(2, 3))
        assert entries.rows == everything.rows[1:3]
        narrow = session.read_profile(GAS_PROFILE, entries=(1, 2), columns=[3, 4])
        assert narrow.headers == ("7-0:3.0.0*255:2", "7-0:13.0.0*255:2")
        assert narrow.rows == tuple(row[2:] for row in everything.rows[:2])
        picked = session.read_profile(
            GAS_PROFILE, from_=start, to=start, columns=[1, 4], apply_scalers=False
        )
        # 05:00 UTC is 06:00 in the meter's CET: the seventh row
        assert picked.rows == ((everything.rows[6][0], everything.table.rows[6][3]),)


def test_get_with_block_transfer(emulator: Start) -> None:
    meter = emulator("--hours", "200", "--block-size", "100")
    settings = ClientSettings(max_pdu_size=256)
    with TcpClient("127.0.0.1", meter.port, settings, timeout=2).session() as session:
        rows = session.read_profile(GAS_PROFILE)
        assert len(rows) == 200
        assert len(session.object_list()) > 10


def test_gbt_recovers_a_dropped_block(emulator: Start) -> None:
    meter = emulator("--hours", "300", "--gbt", "--fault", "drop-gbt-block=3")
    settings = ClientSettings(use_gbt=True, gbt_window=4, max_pdu_size=512)
    with TcpClient("127.0.0.1", meter.port, settings, timeout=0.3).session() as session:
        rows = session.read_profile(GAS_PROFILE)
    assert len(rows) == 300


def test_gbt_block_lost_for_good_is_a_clear_error(emulator: Start) -> None:
    meter = emulator(
        "--hours",
        "300",
        "--gbt",
        "--fault",
        "drop-gbt-block=3",
        "--fault",
        "drop-gbt-block-always",
    )
    settings = ClientSettings(use_gbt=True, gbt_window=4, max_pdu_size=512)
    client = TcpClient("127.0.0.1", meter.port, settings, timeout=0.2)
    with (
        pytest.raises(ProtocolViolation, match=r"GBT block\(s\) 3 still missing"),
        client.session() as session,
    ):
        session.read_profile(GAS_PROFILE)


def test_lls_set_and_wrong_password(emulator: Start) -> None:
    meter = emulator("--hours", "24", "--auth", "lls", "--password", "12345678")
    settings = ClientSettings(
        client_sap=1, authentication=Authentication.LLS, password=b"12345678"
    )
    with TcpClient("127.0.0.1", meter.port, settings, timeout=2).session() as session:
        session.set("0-0:96.13.0*255", Data.octet_string(b"hello"))
        assert session.get("0-0:96.13.0*255") == Data.octet_string(b"hello")
        with pytest.raises(ServiceError) as denied:
            session.set(GAS_VOLUME, Data.double_long_unsigned(1))
        assert denied.value.result == DataAccessResult.READ_WRITE_DENIED
    wrong = ClientSettings(client_sap=1, authentication=Authentication.LLS, password=b"nope")
    with (
        pytest.raises(WrongPassword, match="wrong password"),
        TcpClient("127.0.0.1", meter.port, wrong, timeout=2).session(),
    ):
        pass
    public = TcpClient("127.0.0.1", meter.port, timeout=2)
    with public.session() as session, pytest.raises(ServiceError):  # the public client may not
        session.set("0-0:96.13.0*255", Data.octet_string(b"x"))  # write


def test_hls_gmac_action_and_wrong_keys(emulator: Start) -> None:
    meter = emulator("--hours", "24", "--auth", "hls-gmac", *KEYS)
    with TcpClient("127.0.0.1", meter.port, hls(), timeout=2).session() as session:
        assert session.get("0-0:96.3.10*255", 3) == Data.enum(1)  # connected
        assert session.action("0-0:96.3.10*255", 1) is None  # remote_disconnect
        assert session.get("0-0:96.3.10*255", 3) == Data.enum(0)
        assert session.get("0-0:96.3.10*255", 2) == Data.boolean(False)
    with (
        pytest.raises(WrongKeys) as refused,
        TcpClient("127.0.0.1", meter.port, hls(WRONG_CIPHER), timeout=2).session(),
    ):
        pass
    assert isinstance(refused.value, AssociationRefused)


def test_global_ciphering_reads_the_invocation_counter_first(emulator: Start) -> None:
    meter = emulator("--hours", "24", "--auth", "hls-gmac", "--ciphering", *KEYS)
    settings = hls(ciphering=Ciphering.GLOBAL)
    for _ in range(2):  # the second session must start above the first one's counter
        client = TcpClient(
            "127.0.0.1", meter.port, settings, timeout=2, invocation_counter_obis="0-0:43.1.0*255"
        )
        with client.session() as session:
            assert session.read_register(GAS_VOLUME).unit == "m³"
            assert session.connection.invocation_counter > 2
    counter = TcpClient("127.0.0.1", meter.port, settings, timeout=2).read_invocation_counter()
    assert counter > 2
    # Starting again at IC 1: the meter cannot accept the ciphered AARQ.
    with (
        pytest.raises(AssociationRefused, match="could not decipher"),
        TcpClient("127.0.0.1", meter.port, settings, timeout=2).session() as stale,
    ):
        stale.get(GAS_VOLUME)
    with (
        pytest.raises(AssociationRefused),
        TcpClient("127.0.0.1", meter.port, hls(), timeout=2).session(),
    ):  # a plain context where ciphering is required
        pass


def test_silent_meter_times_out_and_closes(emulator: Start) -> None:
    meter = emulator("--hours", "24", "--fault", "silent")
    began = time.monotonic()
    with (
        pytest.raises(TimeoutError, match=r"no answer from the meter within 0\.3 s"),
        TcpClient("127.0.0.1", meter.port, timeout=0.3).session(),
    ):
        pass
    assert time.monotonic() - began < 3


def test_garbage_answer_is_a_protocol_violation(emulator: Start) -> None:
    meter = emulator("--hours", "24", "--fault", "garbage-after=1")
    with (
        pytest.raises(ProtocolViolation, match="bad answer from the meter"),
        TcpClient("127.0.0.1", meter.port, timeout=1).session() as session,
    ):
        session.get(GAS_VOLUME)


def test_truncated_answer_is_a_protocol_violation(emulator: Start) -> None:
    meter = emulator("--hours", "24", "--fault", "truncate-after=1")
    client = TcpClient("127.0.0.1", meter.port, timeout=1)
    with (
        pytest.raises(ProtocolViolation, match="bad response from the meter"),
        client.session() as session,
    ):
        session.get("0-0:42.0.0*255")


def test_nobody_listening_is_a_connection_error(emulator: Start) -> None:
    meter = emulator("--hours", "1")
    port = meter.port
    meter.stop()
    with (
        pytest.raises(ConnectionFailed, match="cannot connect"),
        TcpClient("127.0.0.1", port, timeout=1).session(),
    ):
        pass


# -- HDLC -----------------------------------------------------------------------------------


def test_hdlc_over_tcp(emulator: Start) -> None:
    meter = emulator("--hours", "100", "--transport", "hdlc")
    client = TcpClient("127.0.0.1", meter.port, transport="hdlc", timeout=2)
    with client.session() as session:
        assert session.read_register("1-0:1.8.0*255").value == Decimal(12345678)
        assert len(session.read_profile(GAS_PROFILE)) == 100  # segmented over many I frames


def test_hdlc_lost_frame_is_retransmitted(emulator: Start) -> None:
    meter = emulator("--hours", "48", "--transport", "hdlc", "--fault", "drop-frame=4")
    client = TcpClient("127.0.0.1", meter.port, transport="hdlc", timeout=0.3)
    with client.session() as session:
        assert len(session.read_profile(GAS_PROFILE)) == 48


def test_hdlc_corrupted_frame_is_retransmitted(emulator: Start) -> None:
    meter = emulator("--hours", "48", "--transport", "hdlc", "--fault", "corrupt-frame=3")
    client = TcpClient("127.0.0.1", meter.port, transport="hdlc", timeout=0.3)
    with client.session() as session:
        assert len(session.read_profile(GAS_PROFILE)) == 48


def test_hdlc_frames_corrupted_for_good_end_in_a_clear_error(emulator: Start) -> None:
    meter = emulator("--hours", "48", "--transport", "hdlc", "--fault", "corrupt-from-frame=3")
    client = TcpClient("127.0.0.1", meter.port, transport="hdlc", timeout=0.2, retries=2)
    message = r"after 2 retransmissions\); \d+ corrupted frame\(s\) skipped"
    with pytest.raises(TimeoutError, match=message), client.session() as session:
        session.read_profile(GAS_PROFILE)


def test_serial_client_over_a_pty_with_hls_gmac(emulator: Start) -> None:
    meter = emulator("--hours", "48", "--transport", "hdlc", "--pty", "--auth", "hls-gmac", *KEYS)
    with SerialClient(meter.pty, hls(), baudrate=115200, timeout=2).session() as session:
        assert session.read_register(GAS_VOLUME).unit == "m³"
        assert len(session.read_profile(GAS_PROFILE, entries=(1, 10))) == 10
    with pytest.raises(WrongKeys), SerialClient(meter.pty, hls(WRONG_CIPHER), timeout=2).session():
        pass
    with SerialClient(meter.pty, timeout=2).session() as again:  # the line is free again
        assert again.get("0-0:42.0.0*255").value == b"DLMSDGAS0000001"


def test_serial_port_that_does_not_exist(tmp_path: object) -> None:
    with (
        pytest.raises(ConnectionFailed, match="cannot open"),
        SerialClient("/dev/does-not-exist", timeout=1).session(),
    ):
        pass


def test_udp_wrapper(emulator: Start) -> None:
    meter = emulator("--hours", "24", "--udp")
    with UdpClient("127.0.0.1", meter.udp_port, timeout=2).session() as session:
        assert session.read_register("1-0:2.8.0*255").value == Decimal(1234)
        assert len(session.read_profile(GAS_PROFILE, entries=(1, 5))) == 5


# -- the README example ----------------------------------------------------------------------


def test_readme_billing_profile_over_hdlc_with_hls_gmac(emulator: Start) -> None:
    meter = emulator("--transport", "hdlc", "--auth", "hls-gmac", *KEYS, "--hours", "24")
    port = meter.port
    # --- README example (keep in sync with the README section) ---
    from datetime import datetime

    from dlmsd.client.blocking import TcpClient
    from dlmsd.protocol.association import Authentication, ClientSettings
    from dlmsd.protocol.security import Suite0Cipher

    cipher = Suite0Cipher(
        bytes.fromhex("000102030405060708090A0B0C0D0E0F"),  # encryption key
        bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),  # authentication key
    )
    settings = ClientSettings(
        client_sap=1,
        authentication=Authentication.HLS_GMAC,
        cipher=cipher,
        client_system_title=b"DLMSDCLI",
    )
    meter_link = TcpClient("127.0.0.1", port, settings, transport="hdlc")
    with meter_link.session() as session:
        billing = session.read_profile(
            "1-0:99.1.0*255",
            from_=datetime(2022, 6, 1, tzinfo=UTC),
            to=datetime(2022, 12, 31, tzinfo=UTC),
        )
    for row in billing.as_dicts():
        print(row)
    # --- end of the README example ---
    assert len(billing) == 7  # June to December
    assert billing.headers[1] == "1-0:1.8.0*255:2" and str(billing.units[1]) != "None"
    assert billing.units[1] is not None and billing.units[1].symbol == "Wh"
