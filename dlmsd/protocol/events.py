"""Sentinels shared by the stream decoders of the protocol core."""

from __future__ import annotations

import enum
from typing import Final, Literal, TypeAlias


class NeedData(enum.Enum):
    """Returned by a stream decoder's ``next_event()`` when the buffered bytes end mid-frame.

    An enum with one member, so ``event is NEED_DATA`` narrows the type for mypy.
    """

    NEED_DATA = "need-data"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
NeedDataType: TypeAlias = Literal[NeedData.NEED_DATA]

__all__ = ["NEED_DATA", "NeedData", "NeedDataType"]
