"""Per-meter push-then-read settings: the ``[meters.<title>.read_after_push]`` table.

::

    [meters.4B464D1234567890.read_after_push]
    profile = "7-0:99.1.0*255"        # the Profile Generic to read (required)
    client_sap = 1                    # default 1 (management client)
    authentication = "lls"            # none | lls | hls-gmac
    password_file = "gas-42.pw"       # LLS password, relative to the key file
    ciphering = "global"              # none | global (the meter's EK/AK)
    max_rows = 1000                   # rows taken per readback
    timeout = 10.0                    # seconds per exchange
    deadline = 120.0                  # seconds for the whole readback

No I/O here except reading the password file (at key store load, so a
missing file is a load error, not a failed readback at 3 a.m.).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from dlmsd.protocol.association import Authentication, Ciphering
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.obis import Obis

#: The system title the daemon uses as a client (HLS-GMAC and ciphering need one).
DEFAULT_CLIENT_SYSTEM_TITLE = b"DLMSD\x00\x00\x01"
#: The meter's frame counter, read through the public client before a ciphered association.
DEFAULT_FRAME_COUNTER = "0-0:43.1.0*255"
FRAME_COUNTER = Obis.parse(DEFAULT_FRAME_COUNTER)

_AUTHENTICATION = {
    "none": Authentication.NONE,
    "lls": Authentication.LLS,
    "hls-gmac": Authentication.HLS_GMAC,
}
_CIPHERING = {"none": Ciphering.NONE, "global": Ciphering.GLOBAL}
_KEYS = frozenset(
    {
        "profile",
        "client_sap",
        "server_logical_device",
        "authentication",
        "password_file",
        "ciphering",
        "client_system_title",
        "frame_counter",
        "max_rows",
        "timeout",
        "deadline",
        "use_gbt",
    }
)


class ReadbackSettingsError(Exception):
    """A bad ``read_after_push`` table; the message names the key, never the password."""


@attrs.frozen(slots=True, kw_only=True)
class ReadAfterPush:
    """What the daemon reads from a meter on the connection it pushed on."""

    profile: Obis
    client_sap: int = 1
    server_logical_device: int = 1
    authentication: Authentication = Authentication.NONE
    password: bytes | None = attrs.field(default=None, repr=False)
    ciphering: Ciphering = Ciphering.NONE
    client_system_title: bytes = DEFAULT_CLIENT_SYSTEM_TITLE
    frame_counter: Obis = FRAME_COUNTER
    max_rows: int = 1000
    timeout: float = 10.0
    deadline: float = 120.0
    use_gbt: bool = False

    @property
    def needs_keys(self) -> bool:
        """HLS-GMAC and ciphering use the meter's EK/AK."""
        return self.authentication == Authentication.HLS_GMAC or self.ciphering != Ciphering.NONE


def parse_read_after_push(
    where: str, table: object, key_file: Path | None, has_keys: bool
) -> ReadAfterPush:
    """Validate one table; `where` names it in errors, `key_file` anchors ``password_file``."""
    if not isinstance(table, dict):
        raise ReadbackSettingsError(f"{where}: expected a table")
    for key in table:
        if key not in _KEYS:
            raise ReadbackSettingsError(
                f"{where}.{key}: unknown key (allowed: {', '.join(sorted(_KEYS))})"
            )
    values: dict[str, object] = {
        "profile": _obis(where, table, "profile", None),
        "frame_counter": _obis(where, table, "frame_counter", DEFAULT_FRAME_COUNTER),
        "authentication": _choice(where, table, "authentication", _AUTHENTICATION),
        "ciphering": _choice(where, table, "ciphering", _CIPHERING),
    }
    for key, low, high in (
        ("client_sap", 1, 0x7F),
        ("server_logical_device", 1, 0x3FFF),
        ("max_rows", 1, 1_000_000),
    ):
        if key in table:
            value = table[key]
            if type(value) is not int or not low <= value <= high:
                raise ReadbackSettingsError(f"{where}.{key}: expected an integer {low}..{high}")
            values[key] = value
    for key in ("timeout", "deadline"):
        if key in table:
            value = table[key]
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0 < value <= 3600
            ):
                raise ReadbackSettingsError(f"{where}.{key}: expected seconds in (0, 3600]")
            values[key] = float(value)
    if "use_gbt" in table:
        if not isinstance(table["use_gbt"], bool):
            raise ReadbackSettingsError(f"{where}.use_gbt: expected true or false")
        values["use_gbt"] = table["use_gbt"]
    if "client_system_title" in table:
        text = table["client_system_title"]
        try:
            title = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            title = b""
        if len(title) != 8:
            raise ReadbackSettingsError(f"{where}.client_system_title: expected 16 hex characters")
        values["client_system_title"] = title
    if "password_file" in table:
        values["password"] = _password(where, table["password_file"], key_file)
    settings = ReadAfterPush(**values)  # type: ignore[arg-type]
    if settings.authentication == Authentication.LLS and not settings.password:
        raise ReadbackSettingsError(f"{where}.password_file: required for authentication = lls")
    if settings.needs_keys and not has_keys:
        raise ReadbackSettingsError(
            f"{where}: hls-gmac and ciphering need the meter's encryption and authentication keys"
        )
    return settings


def _obis(where: str, table: dict[str, object], key: str, default: str | None) -> Obis:
    text = table.get(key, default)
    if not isinstance(text, str):
        raise ReadbackSettingsError(f"{where}.{key}: expected an OBIS code such as 7-0:99.1.0*255")
    try:
        return Obis.parse(text)
    except DlmsError as error:
        raise ReadbackSettingsError(f"{where}.{key}: {error.reason}") from None


def _choice(
    where: str, table: dict[str, object], key: str, choices: Mapping[str, object]
) -> object:
    text = table.get(key, "none")
    if text not in choices:
        raise ReadbackSettingsError(f"{where}.{key}: expected one of {', '.join(choices)}")
    return choices[str(text)]


def _password(where: str, name: object, key_file: Path | None) -> bytes:
    if not isinstance(name, str) or not name:
        raise ReadbackSettingsError(f"{where}.password_file: expected a path")
    path = Path(name)
    if not path.is_absolute() and key_file is not None:
        path = key_file.parent / path
    try:
        password = path.read_bytes().rstrip(b"\r\n")
    except OSError as error:
        raise ReadbackSettingsError(
            f"{where}.password_file: cannot read {path}: {error.strerror or error}"
        ) from None
    if not password:
        raise ReadbackSettingsError(f"{where}.password_file: {path} is empty")
    return password
