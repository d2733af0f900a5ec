"""Built-in push layouts ("profiles"): which object each value of a bare push is.

Many HAN ports and customer interfaces push a structure of bare values with no
OBIS codes: the meaning of each element is fixed by the make and the list the
network operator configured. A `Profile` names each element's OBIS code,
attribute, scaler and unit, and the value types that element may have. A meter
selects one in the key store (``profile = "kaifa-ma304-list3-3p"``); without one,
`detect` picks a profile from the body's shape. See docs/profiles.md for the
detection rule and the table of profiles.

Some makes push OBIS codes but no scaler-unit and document an implied scale
(`ImpliedScales`, for example Kamstrup currents in centiamperes); those apply only
when the push carries no scaler-unit of its own and the list identifies its make.

Every entry cites the public source its layout, scalers and units come from.
This module is data: readings.py applies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from dlmsd.protocol.axdr import Data, DataType
from dlmsd.protocol.obis import Obis

__all__ = [
    "IMPLIED_SCALES",
    "PROFILES",
    "Element",
    "ImpliedScales",
    "Profile",
    "detect",
    "fits",
    "profile_named",
]

# Value forms an element may declare (how its octets read; the default is by type).
FORM_TIME = "time"  # 4-byte COSEM time in an octet-string
FORM_DATE = "date"  # 5-byte COSEM date in an octet-string
FORM_OBIS = "obis"  # a 6-byte octet-string that is an OBIS code (a logical name)
FORMS = frozenset({FORM_TIME, FORM_DATE, FORM_OBIS})

# Unit codes (Blue Book table of units).
W, VAR, WH, VARH, AMPERE, VOLT = 27, 29, 30, 32, 33, 35

_U32 = frozenset({DataType.DOUBLE_LONG_UNSIGNED})
_U16 = frozenset({DataType.LONG_UNSIGNED})
_I32 = frozenset({DataType.DOUBLE_LONG})
_TEXT = frozenset({DataType.OCTET_STRING, DataType.VISIBLE_STRING})
_OCTETS = frozenset({DataType.OCTET_STRING})


@attrs.frozen(slots=True)
class Element:
    """One element of a bare push: the object it is and the value types it may have."""

    obis: Obis
    types: frozenset[DataType]
    scaler: int | None = None
    unit: int | None = None
    attribute: int = 2
    form: str | None = None


@attrs.frozen(slots=True)
class Profile:
    """A bare push layout of one make and list, with the public source it comes from."""

    name: str
    make: str
    models: str
    network: str
    source: str
    elements: tuple[Element, ...]
    #: False when the shape is too generic to pick from the body alone (select it).
    detect: bool = True
    notes: str = ""
    #: For pushes that carry their own push object list: the scales to give values
    #: without scaler-unit, instead of those the logical device name implies. Such a
    #: profile has no elements (the push names its objects) and is only ever selected.
    list_scales: Mapping[Obis, tuple[int, int]] | None = attrs.field(default=None, eq=False)

    def __len__(self) -> int:
        return len(self.elements)

    def __bool__(self) -> bool:
        # A selected profile always configures something, even one without elements
        # (`list_scales`); callers treat an empty push object list as none with `or None`.
        return True


def _e(
    obis: str,
    types: frozenset[DataType],
    scaler: int | None = None,
    unit: int | None = None,
    *,
    attribute: int = 2,
    form: str | None = None,
) -> Element:
    return Element(Obis.parse(obis), types, scaler, unit, attribute, form)


# --- Kaifa MA304/MA105 (Norway, NVE/NEK HAN lists "KFM_001") ----------------------
# Source: toreamun/amshan han/kaifa.py (list orders _get_field_lists, _FIELD_SCALING:
# currents -3, voltages -1) and tests/test_kaifa.py (real frames with stated values).
# OBIS codes as Kaifa's own OBIS-carrying list (tests/test_kaifa.py NOTIFICATION_BODY_SE_LIST)
# names them.
_AMSHAN_KAIFA = "https://github.com/toreamun/amshan han/kaifa.py, tests/test_kaifa.py"
_KAIFA_HEAD = (
    _e("1-0:0.2.129", _TEXT),  # OBIS list version identifier ("KFM_001")
    _e("0-0:96.1.0", _TEXT),  # meter id (GS1)
    _e("0-0:96.1.7", _TEXT),  # meter type
    _e("1-0:1.7.0", _U32, 0, W),
    _e("1-0:2.7.0", _U32, 0, W),
    _e("1-0:3.7.0", _U32, 0, VAR),
    _e("1-0:4.7.0", _U32, 0, VAR),
)
_KAIFA_IL = (
    _e("1-0:31.7.0", _U32, -3, AMPERE),
    _e("1-0:51.7.0", _U32, -3, AMPERE),
    _e("1-0:71.7.0", _U32, -3, AMPERE),
)
_KAIFA_UL = (
    _e("1-0:32.7.0", _U32, -1, VOLT),
    _e("1-0:52.7.0", _U32, -1, VOLT),
    _e("1-0:72.7.0", _U32, -1, VOLT),
)
_KAIFA_TAIL = (
    _e("0-0:1.0.0", _OCTETS),  # clock
    _e("1-0:1.8.0", _U32, 0, WH),
    _e("1-0:2.8.0", _U32, 0, WH),
    _e("1-0:3.8.0", _U32, 0, VARH),
    _e("1-0:4.8.0", _U32, 0, VARH),
)
_KAIFA_LIST2_1P = (*_KAIFA_HEAD, _KAIFA_IL[0], _KAIFA_UL[0])
_KAIFA_LIST2_3P = (*_KAIFA_HEAD, *_KAIFA_IL, *_KAIFA_UL)

# --- Iskraemeco AM550 on Wiener Netze (infrared customer interface) ---------------
# Source: https://gist.github.com/pocki80/941fa090a8d6269a9b3b68c195f8750f ("WN": the
# plaintext explained element by element: time stamp, +A, -A, +R, -R in Wh/varh, then
# +P, -P, +Q, -Q in W/var).
_POCKI80 = "https://gist.github.com/pocki80/941fa090a8d6269a9b3b68c195f8750f"

# --- L+G E450 on Netz Burgenland ----------------------------------------------------
# Source: Noschvie/shrdzm code/SHRDZMDevice/Device_IM350.cpp (parse e450: UL1..3 and
# IL1..3 as long-unsigned, then 1.7.0, 2.7.0, 1.8.0, 2.8.0 as double-long-unsigned).
# That source prints the raw numbers and names no scaler: none is implied here.
_SHRDZM = (
    "https://github.com/Noschvie/shrdzm code/SHRDZMDevice/Device_IM350.cpp"
    " (commit 0582f38e6bc750e394dc1226b589ecad059e80b6)"
)

# --- Iskraemeco AM550 / Siemens IM350 with the push setup's name first --------------
# Kärnten Netz (and the Siemens IM350 on the same list): the push setup's logical name,
# the serial number, time and date as two separate octet-strings, +A, -A, +R, -R, +P, -P,
# two customer information strings. Sources: the pocki80 gist ("KN": the plaintext
# explained element by element, values stated) and Noschvie/shrdzm Device_IM350.cpp
# (published AM550 and IM350 frames with their keys; parse_message reads the same six
# values; "im350Wels" is this list without the two customer information strings).
_NAME_FIRST = (
    # The push setup's logical name (0-6:25.9.0): a 6-byte value that is an OBIS code.
    _e("0-6:25.9.0", _OCTETS, attribute=1, form=FORM_OBIS),
    _e("0-0:96.1.0", _TEXT),  # serial number
    # Time and date as two separate octet-strings: the OBIS local time and local date.
    _e("1-0:0.9.1", _OCTETS, form=FORM_TIME),
    _e("1-0:0.9.2", _OCTETS, form=FORM_DATE),
    _e("1-0:1.8.0", _U32, 0, WH),
    _e("1-0:2.8.0", _U32, 0, WH),
    _e("1-0:3.8.0", _U32, 0, VARH),
    _e("1-0:4.8.0", _U32, 0, VARH),
    _e("1-0:1.7.0", _U32, 0, W),
    _e("1-0:2.7.0", _U32, 0, W),
)
_CUSTOMER_INFO = (
    _e("0-0:96.13.0", _TEXT),  # customer information text
    _e("0-0:96.13.1", _TEXT),  # customer information code
)

PROFILES: tuple[Profile, ...] = (
    Profile(
        "kaifa-ma304-list1",
        "Kaifa",
        "MA304, MA105",
        "Norway (NVE list 1)",
        _AMSHAN_KAIFA,
        (_e("1-0:1.7.0", _U32, 0, W),),
        detect=False,
        notes="One value every 2 s: too generic to detect, select it in the key store.",
    ),
    Profile(
        "kaifa-ma304-list2-1p",
        "Kaifa",
        "MA105 (single phase)",
        "Norway (NVE list 2)",
        _AMSHAN_KAIFA,
        _KAIFA_LIST2_1P,
    ),
    Profile(
        "kaifa-ma304-list2-3p",
        "Kaifa",
        "MA304 (three phase)",
        "Norway (NVE list 2)",
        _AMSHAN_KAIFA,
        _KAIFA_LIST2_3P,
    ),
    Profile(
        "kaifa-ma304-list3-1p",
        "Kaifa",
        "MA105 (single phase)",
        "Norway (NVE list 3)",
        _AMSHAN_KAIFA,
        (*_KAIFA_LIST2_1P, *_KAIFA_TAIL),
    ),
    Profile(
        "kaifa-ma304-list3-3p",
        "Kaifa",
        "MA304 (three phase)",
        "Norway (NVE list 3)",
        _AMSHAN_KAIFA,
        (*_KAIFA_LIST2_3P, *_KAIFA_TAIL),
    ),
    Profile(
        "iskra-am550-wiener-netze",
        "Iskraemeco",
        "AM550 (also Siemens IM350, L+G E450 on the same interface)",
        "Wiener Netze (AT), infrared customer interface",
        _POCKI80,
        (
            _e("0-0:1.0.0", _OCTETS),
            _e("1-0:1.8.0", _U32, 0, WH),
            _e("1-0:2.8.0", _U32, 0, WH),
            _e("1-0:3.8.0", _U32, 0, VARH),
            _e("1-0:4.8.0", _U32, 0, VARH),
            _e("1-0:1.7.0", _U32, 0, W),
            _e("1-0:2.7.0", _U32, 0, W),
            _e("1-0:3.7.0", _U32, 0, VAR),
            _e("1-0:4.7.0", _U32, 0, VAR),
        ),
    ),
    Profile(
        "iskra-am550-kaernten-netz",
        "Iskraemeco",
        "AM550 (also Siemens IM350 on the same list)",
        "Kärnten Netz (AT), P1 customer interface",
        f"{_POCKI80}; {_SHRDZM}",
        (*_NAME_FIRST, *_CUSTOMER_INFO),
    ),
    Profile(
        "siemens-im350-wels",
        "Siemens",
        "IM350",
        "Wels (AT), as the source names it",
        _SHRDZM,
        _NAME_FIRST,
    ),
    Profile(
        "lg-e450-netz-burgenland",
        "Landis+Gyr",
        "E450",
        "Netz Burgenland (AT)",
        _SHRDZM,
        (
            _e("1-0:32.7.0", _U16),
            _e("1-0:52.7.0", _U16),
            _e("1-0:72.7.0", _U16),
            _e("1-0:31.7.0", _U16),
            _e("1-0:51.7.0", _U16),
            _e("1-0:71.7.0", _U16),
            _e("1-0:1.7.0", _U32, 0, W),
            _e("1-0:2.7.0", _U32, 0, W),
            _e("1-0:1.8.0", _U32, 0, WH),
            _e("1-0:2.8.0", _U32, 0, WH),
        ),
        notes="Voltages and currents raw: the source states no scaler for them.",
    ),
)

_BY_NAME: dict[str, Profile] = {profile.name: profile for profile in PROFILES}


def profile_named(name: str) -> Profile | None:
    """The built-in profile of that name, else None."""
    return _BY_NAME.get(name)


def fits(profile: Profile, items: Sequence[Data]) -> bool:
    """Whether a body's elements have the profile's count and value types."""
    if len(items) != len(profile.elements):
        return False
    return all(
        item.type in element.types for item, element in zip(items, profile.elements, strict=True)
    )


def detect(items: Sequence[Data]) -> Profile | None:
    """The one detectable profile whose shape the body has; None when none or several do.

    The shape is the element count and each element's type (never a value), so the
    same layout always picks the same profile, and a body two profiles could read
    is read by neither.
    """
    found: Profile | None = None
    for profile in _BY_COUNT.get(len(items), ()):
        if fits(profile, items):
            if found is not None:
                return None  # ambiguous: no guessed OBIS codes
            found = profile
    return found


def _by_count() -> dict[int, tuple[Profile, ...]]:
    table: dict[int, list[Profile]] = {}
    for profile in PROFILES:
        if profile.detect:
            table.setdefault(len(profile.elements), []).append(profile)
    return {count: tuple(profiles) for count, profiles in table.items()}


_BY_COUNT = _by_count()


# --- implied scales of OBIS-carrying lists without scaler-unit --------------------


@attrs.frozen(slots=True)
class ImpliedScales:
    """Scaler and unit per OBIS code a make documents for lists that carry none.

    `list_ids` are the list version identifiers (the first value of the list, or the
    value of ``x-x:0.2.129``) that name the make; `variants` switch to other scales by
    a prefix of the meter type (``x-x:96.1.1`` / ``x-x:96.1.7``).
    """

    name: str
    make: str
    source: str
    list_ids: tuple[bytes, ...]
    scales: Mapping[Obis, tuple[int, int]]
    variants: tuple[tuple[bytes, Mapping[Obis, tuple[int, int]]], ...] = ()


def _scales(entries: Mapping[str, tuple[int, int]]) -> Mapping[Obis, tuple[int, int]]:
    return {Obis.parse(text): value for text, value in entries.items()}


# Kamstrup Omnipower / 6841 / 6851 (Norway "Kamstrup_V0001"): currents in centiamperes,
# energies in 10 Wh steps; CT meters (type 685...) currents in milliamperes.
# Sources: toreamun/amshan han/kamstrup.py (_field_scaling_standard, _field_scaling_ct_meter,
# the "685" meter type test); esphome/esphome esphome/components/dlms_meter/
# dlms_meter_kamstrup_omnipower.cpp (current * 0.01, energy * 10).
_KAMSTRUP_COMMON = {
    "1-1:1.7.0": (0, W),
    "1-1:2.7.0": (0, W),
    "1-1:3.7.0": (0, VAR),
    "1-1:4.7.0": (0, VAR),
    "1-1:32.7.0": (0, VOLT),
    "1-1:52.7.0": (0, VOLT),
    "1-1:72.7.0": (0, VOLT),
    "1-1:1.8.0": (1, WH),
    "1-1:2.8.0": (1, WH),
    "1-1:3.8.0": (1, VARH),
    "1-1:4.8.0": (1, VARH),
}
_KAMSTRUP_STANDARD = {
    **_KAMSTRUP_COMMON,
    "1-1:31.7.0": (-2, AMPERE),
    "1-1:51.7.0": (-2, AMPERE),
    "1-1:71.7.0": (-2, AMPERE),
}
_KAMSTRUP_CT = {
    **_KAMSTRUP_COMMON,
    "1-1:31.7.0": (-3, AMPERE),
    "1-1:51.7.0": (-3, AMPERE),
    "1-1:71.7.0": (-3, AMPERE),
}

# Kaifa lists with OBIS codes ("KFM_001", Sweden/Norway): currents mA, voltages 0.1 V.
# Source: toreamun/amshan han/kaifa.py (_FIELD_SCALING, applied to OBIS-carrying lists in
# _normalize_parsed_obis_elements) and tests/test_kaifa.py (test_decode_frame_se_list).
_KAIFA_OBIS = {
    "1-0:1.7.0": (0, W),
    "1-0:2.7.0": (0, W),
    "1-0:3.7.0": (0, VAR),
    "1-0:4.7.0": (0, VAR),
    "1-0:31.7.0": (-3, AMPERE),
    "1-0:51.7.0": (-3, AMPERE),
    "1-0:71.7.0": (-3, AMPERE),
    "1-0:32.7.0": (-1, VOLT),
    "1-0:52.7.0": (-1, VOLT),
    "1-0:72.7.0": (-1, VOLT),
    "1-0:1.8.0": (0, WH),
    "1-0:2.8.0": (0, WH),
    "1-0:3.8.0": (0, VARH),
    "1-0:4.8.0": (0, VARH),
}

IMPLIED_SCALES: tuple[ImpliedScales, ...] = (
    ImpliedScales(
        "kamstrup-han",
        "Kamstrup",
        "https://github.com/toreamun/amshan han/kamstrup.py; https://github.com/esphome/"
        "esphome esphome/components/dlms_meter/dlms_meter_kamstrup_omnipower.cpp",
        (b"Kamstrup_V0001",),
        _scales(_KAMSTRUP_STANDARD),
        ((b"685", _scales(_KAMSTRUP_CT)),),
    ),
    ImpliedScales(
        "kaifa-han-obis",
        "Kaifa",
        "https://github.com/toreamun/amshan han/kaifa.py, tests/test_kaifa.py",
        (b"KFM_001",),
        _scales(_KAIFA_OBIS),
    ),
)

# Landis+Gyr E450/E570 pushes that carry their push object list (Swiss VSE/SCS
# configurations): no scaler-unit; currents in 0.01 A, the other values in W, Wh, VAh, V.
# Source: scs/smartmeter-datacollector (commit 1507c3fc) smartmeter_datacollector/
# smartmeter/cosem.py (0.01 on 1-0:31/51/71.7.0), meter_data.py (units), and
# tests/test_lge450.py test_lge450_vse_standard (values stated for a real E450 push).
# Named by the logical device name (0-0:42.0.0), whose FLAG id LGZ is Landis+Gyr's.
_LG_CAPTURE_LIST = {
    "1-1:1.8.0": (0, WH),
    "1-1:2.8.0": (0, WH),
    "1-1:3.8.0": (0, 31),  # VAh, as the source names it
    "1-1:4.8.0": (0, 31),
    "1-0:1.7.0": (0, W),
    "1-0:2.7.0": (0, W),
    "1-0:32.7.0": (0, VOLT),
    "1-0:52.7.0": (0, VOLT),
    "1-0:72.7.0": (0, VOLT),
    "1-0:31.7.0": (-2, AMPERE),
    "1-0:51.7.0": (-2, AMPERE),
    "1-0:71.7.0": (-2, AMPERE),
}
# Iskraemeco AM550 pushes that carry their push object list (Swiss VSE configuration):
# like L+G's, but voltages in 0.1 V, and power on channel 1 (1-1:x.7.0).
# Source: scs/smartmeter-datacollector (commit 1507c3fc) smartmeter/iskraam550.py (0.1 on
# 1-0:32/52/72.7.0), cosem.py (0.01 on 1-0:31/51/71.7.0), meter_data.py (units), and
# tests/test_iskraam550.py test_iskraam550_parse_data_with_vse_standard (values stated for
# a real AM550 push). Named by the logical device name's FLAG id ISK.
_ISKRA_CAPTURE_LIST = {
    "1-1:1.8.0": (0, WH),
    "1-1:2.8.0": (0, WH),
    "1-1:3.8.0": (0, 31),  # VAh, as the source names it
    "1-1:4.8.0": (0, 31),
    "1-1:1.7.0": (0, W),
    "1-1:2.7.0": (0, W),
    "1-0:32.7.0": (-1, VOLT),
    "1-0:52.7.0": (-1, VOLT),
    "1-0:72.7.0": (-1, VOLT),
    "1-0:31.7.0": (-2, AMPERE),
    "1-0:51.7.0": (-2, AMPERE),
    "1-0:71.7.0": (-2, AMPERE),
}
DEVICE_SCALES: tuple[ImpliedScales, ...] = (
    ImpliedScales(
        "iskra-push-object-list",
        "Iskraemeco",
        "https://github.com/scs/smartmeter-datacollector smartmeter_datacollector/smartmeter/"
        "iskraam550.py, cosem.py, meter_data.py, tests/test_iskraam550.py (commit 1507c3fc)",
        (b"ISK",),
        _scales(_ISKRA_CAPTURE_LIST),
    ),
    ImpliedScales(
        "lg-push-object-list",
        "Landis+Gyr",
        "https://github.com/scs/smartmeter-datacollector smartmeter_datacollector/smartmeter/"
        "cosem.py, meter_data.py, tests/test_lge450.py (commit 1507c3fc)",
        (b"LGZ",),
        _scales(_LG_CAPTURE_LIST),
    ),
)


def device_scales_for(device_name: bytes) -> Mapping[Obis, tuple[int, int]]:
    """The implied scales of a push that carries its own push object list, by the
    logical device name's FLAG manufacturer id (its first three letters); empty if
    the name names no make this module knows."""
    for entry in DEVICE_SCALES:
        if device_name[:3] in entry.list_ids:
            return entry.scales
    return {}


_LIST_IDS: dict[bytes, ImpliedScales] = {
    list_id: entry for entry in IMPLIED_SCALES for list_id in entry.list_ids
}


def implied_scales_for(list_id: bytes, meter_type: bytes | None) -> Mapping[Obis, tuple[int, int]]:
    """The implied scales of a list named `list_id` (trailing NULs ignored); empty if
    the list id names no make this module knows."""
    entry = _LIST_IDS.get(list_id.rstrip(b"\x00"))
    if entry is None:
        return {}
    if meter_type is not None:
        for prefix, scales in entry.variants:
            if meter_type.startswith(prefix):
                return scales
    return entry.scales


# Landis+Gyr E360 (Swiss VSE/SCS configurations) pushes the same self-describing list
# as the E450/E570, but voltages in 0.1 V; the push cannot tell the models apart (the
# logical device name is LGZ... for all), so a meter selects this in the key store.
# Source: scs/smartmeter-datacollector (commit 1507c3fc) smartmeter/lge360.py (class
# LGE360), tests/test_lge360.py test_lge360_vse_standard (states 235.7 V for the raw 2357
# and 0.06 A for 6 of a real E360 push, tests/testdata/lg_e360.py).
_LG_E360_CAPTURE_LIST = {
    **_LG_CAPTURE_LIST,
    "1-0:32.7.0": (-1, VOLT),
    "1-0:52.7.0": (-1, VOLT),
    "1-0:72.7.0": (-1, VOLT),
}

# Defined here, after the L+G scales they use; selected by name only (detect=False).
PROFILES += (
    Profile(
        "lg-e360-push-object-list",
        "Landis+Gyr",
        "E360",
        "Switzerland (VSE/SCS configurations)",
        "https://github.com/scs/smartmeter-datacollector smartmeter_datacollector/smartmeter/"
        "lge360.py, tests/test_lge360.py (commit 1507c3fc)",
        (),
        detect=False,
        notes="Scales for a push that carries its push object list: voltages 0.1 V.",
        list_scales=_scales(_LG_E360_CAPTURE_LIST),
    ),
    # The E450/E570 scales (`_LG_CAPTURE_LIST`) by selection, for pushes whose list names
    # the meter by its serial (0-0:96.1.0) instead of the LGZ logical device name, as the
    # E450 of Regionalwerke Baden (amsreader-firmware issue 740) does.
    Profile(
        "lg-e450-push-object-list",
        "Landis+Gyr",
        "E450, E570",
        "Switzerland (VSE/SCS configurations)",
        "https://github.com/scs/smartmeter-datacollector smartmeter_datacollector/smartmeter/"
        "cosem.py, meter_data.py, tests/test_lge450.py (commit 1507c3fc)",
        (),
        detect=False,
        notes="Scales for a push that carries its push object list: V, 0.01 A.",
        list_scales=_scales(_LG_CAPTURE_LIST),
    ),
)
_BY_NAME.update((profile.name, profile) for profile in PROFILES[-2:])
