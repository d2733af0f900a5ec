"""The anti-replay window of one meter, in the style of IPsec ESP (RFC 4303 §3.4.3).

Strict (width 0, the default): a push is accepted only if its invocation
counter is above the highest one accepted so far. A push that overtook
another (UDP over a cellular network reorders) then costs the overtaken one.

With a window of width W, the state of a meter is the highest counter H
accepted and a bitmap of the W counters below it: bit k set means counter
``H - 1 - k`` was accepted. A counter above H is accepted (the window slides
up); one inside the window (``H - W <= c < H``) is accepted if its bit is not
set; H itself and anything below the window are refused. So no counter is
ever accepted twice, and a push that arrives up to W counters late still is.

The trade-off: a window lets an attacker who captured a push but could not
deliver it (it was lost, or blocked) replay it later as long as it is inside
the window and the meter's genuine copy never arrived; the strict check
refuses it as soon as any later push was accepted. Both refuse every
duplicate. Reading order: a consumer sees a late push after later ones.

Stored with the counter (`encode` / `decode`): two bytes of width, then the
bitmap. Stored state of another width is read conservatively: bits a
narrower stored window never tracked (or no stored window at all, from a
strict daemon) count as seen, so widening the window never re-opens counters
that may have been accepted before.

Pure functions on ``(highest, seen)``; the state backends keep the per-meter
state, check before authenticating (`accepts`) and advance after (`advance`).
"""

from __future__ import annotations

MAX_WIDTH = 4096


def accepts(highest: int | None, seen: int, counter: int, width: int) -> bool:
    """Whether `counter` is fresh for a meter at (`highest`, `seen`)."""
    if highest is None or counter > highest:
        return True
    offset = highest - 1 - counter
    return 0 <= offset < width and not (seen >> offset) & 1


def advance(highest: int | None, seen: int, counter: int, width: int) -> tuple[int, int]:
    """The state after accepting `counter` (which `accepts` said is fresh)."""
    if highest is None:
        # Nothing known below a meter's first counter: the window starts empty.
        return counter, 0
    if counter > highest:
        shift = counter - highest
        if shift > width:
            return counter, 0
        # The old highest becomes bit shift-1; everything below moves up with it.
        return counter, ((seen << 1 | 1) << (shift - 1)) & ((1 << width) - 1)
    return highest, seen | 1 << (highest - 1 - counter)


def encode(seen: int, width: int) -> bytes:
    """The stored form of a bitmap of `width` bits."""
    return width.to_bytes(2, "big") + seen.to_bytes((width + 7) // 8, "big")


def decode(stored: bytes | None, width: int) -> int:
    """The bitmap for a window of `width` from its stored form (None: no window was kept).

    Bits beyond what was stored count as seen (see the module doc).
    """
    if stored is None or len(stored) < 2:
        stored_width, bits = 0, 0
    else:
        stored_width = min(int.from_bytes(stored[:2], "big"), 8 * (len(stored) - 2))
        bits = int.from_bytes(stored[2:], "big") & ((1 << stored_width) - 1)
    mask = (1 << width) - 1
    untracked = mask & ~((1 << stored_width) - 1)
    return (bits | untracked) & mask
