"""Compiled push shapes: a push's record text straight from its plaintext.

A meter sends the same layout push after push: the same types, lengths, OBIS
codes, scalers and units; only the values move. The first push of a layout goes
the full way (DataNotification -> typed tree -> readings -> record text) and
leaves behind a *shape*:

* a regular expression that matches exactly the plaintexts of that layout:
  every byte literal except the content of the leaves that carry readings,
  the invoke id and the date-time, which become groups;
* the record text with a hole per group, and per hole the conversion the full
  path applies to those bytes (the same functions: `scaled_value`,
  `value_json_text`, `CosemDateTime`).

Later pushes of that layout cost one match and a few conversions, about a
fifth of the full path.

Why the text is the same: readings extraction decides its structure from the
types, lengths and element counts (literal in the pattern) and from the OBIS
codes and scaler/unit values (literal too, since they are not reading values);
see `dlmsd.cosem.readings.ReadingPlan`. A hole is only a fixed-size integer or
a short octet-string, whose text in the body and in its reading depends on its
own bytes alone. Each shape is checked once when compiled: it must give the
full path's text for the push it was made from, or it is not kept. A
conversion that raises a `DlmsError` sends the push down the full path, which
says what is wrong.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from json.encoder import encode_basestring

from dlmsd.cosem.readings import (
    Layout,
    Plan,
    Reading,
    form_text,
    plan_readings,
    reading_frame,
    scaled_value,
    value_json_text,
)
from dlmsd.protocol.apdus.notification import DataNotification
from dlmsd.protocol.axdr import (
    MAX_VALUES,
    Data,
    DataType,
    data_json_text,
    decode_data,
    decode_length,
    fixed_size_leaf,
    json_text_open,
)
from dlmsd.protocol.cosem_datetime import CosemDateTime
from dlmsd.protocol.errors import DlmsError
from dlmsd.protocol.push import (
    DATA_NOTIFICATION,
    Envelope,
    notification_fields_json,
    open_decrypted,
    record_head_json,
)

_Convert = Callable[[bytes], str]

_OCTET_STRING_TAG = 9
_DATE_TIME_SIZE = 12
# Compiling a shape costs about ten full decodes, so it is done for layouts that
# repeat: on a layout's second miss, later only at powers of two (a meter whose
# literal bytes change every push costs a compile now and then, not one per push),
# and at most once per _COMPILE_SPACING misses overall, so a stream of ever-new
# layouts spends a bounded share of the CPU on compiling.
_COMPILE_SPACING = 64
_SHAPES_PER_KEY = 4
_KEY_LIMIT = 4096
# Memory: a shape holds about 20 bytes per plaintext byte (pattern, regex, template).
_MAX_SHAPE_LENGTH = 2048  # longer pushes take the full path
_HELD_LIMIT = 1 << 20  # plaintext bytes behind all shapes kept


class ShapeCache:
    """Record texts of pushes, through compiled shapes where a layout repeats.

    `record_json` gives exactly ``open_decrypted(envelope, plaintext, objects)
    .record_json(more)``, and raises the same errors. Bounded: at most 4 shapes
    per (length, push object list), 4,096 such keys, and shapes of 1 MiB of
    plaintext in all (about 20 MiB of memory).

    `max_values` bounds the decoded body of a push (`decode_data`); a shape is only
    made from a push that decoded within it and matches only pushes of the same
    layout, so the shape path keeps the bound too.
    """

    def __init__(self, max_values: int = MAX_VALUES) -> None:
        self._max_values = max_values
        # (plaintext length, id of the push object list) -> (that list, its shapes, misses)
        self._shapes: dict[tuple[int, int], _Entry] = {}
        self._held = 0  # plaintext bytes behind the shapes kept
        self._last_compile = -_COMPILE_SPACING  # `misses` when a compile last ran
        self.misses = 0  # pushes that went the full way
        self.compiled = 0  # shapes made
        self.refused = 0  # shapes that failed their check against the full path
        self.failed = 0  # compiles that raised (a bug: the push still got its record)
        # Why the layout of the last push did not fit its body (None: it did, or none).
        self.layout_mismatch: str | None = None

    def record_json(
        self,
        envelope: Envelope,
        plaintext: bytes,
        layout: Layout | None = None,
        more: str = "",
    ) -> str:
        """The record of a push as JSON text, with `more` (``,"key":value...``) spliced
        in before the closing brace. `layout_mismatch` tells afterwards whether the
        meter's layout (push object list or profile) did not fit the body."""
        objects = layout or None
        key = (len(plaintext), id(objects))
        entry = self._shapes.get(key)
        if entry is not None:
            for shape in entry.shapes:
                fields = shape.fields_json(plaintext)
                if fields is not None:
                    self.layout_mismatch = None  # a shape is only made of a fitting push
                    return f"{record_head_json(envelope)}{fields}{more}}}"
        push = open_decrypted(envelope, plaintext, objects, self._max_values)
        self.layout_mismatch = push.layout_mismatch
        self.misses += 1
        if entry is None:
            if len(self._shapes) >= _KEY_LIMIT:
                self._forget()
            entry = self._shapes[key] = _Entry(objects)
        entry.misses += 1
        misses = entry.misses
        if (
            misses >= 2
            and misses & (misses - 1) == 0
            and self.misses - self._last_compile >= _COMPILE_SPACING
            and len(plaintext) <= _MAX_SHAPE_LENGTH
        ):
            self._last_compile = self.misses
            try:
                self._learn(entry, plaintext, push.notification, push.readings)
            except Exception:
                # Shapes only save time: a bug in compiling must not cost this push.
                self.failed += 1
        return push.record_json(more)

    def _learn(
        self,
        entry: _Entry,
        plaintext: bytes,
        notification: DataNotification,
        readings: tuple[Reading, ...],
    ) -> None:
        shape = compile_shape(plaintext, notification, readings, entry.objects)
        if shape is None:
            return
        if shape.fields_json(plaintext) != notification_fields_json(notification, readings):
            self.refused += 1
            return
        if self._held + len(plaintext) > _HELD_LIMIT:
            self._forget()
        self.compiled += 1
        if len(entry.shapes) >= _SHAPES_PER_KEY:
            self._held -= entry.shapes.pop(0).size
        entry.shapes.append(shape)
        self._held += shape.size

    def _forget(self) -> None:
        self._shapes.clear()
        self._held = 0


class _Entry:
    __slots__ = ("misses", "objects", "shapes")

    def __init__(self, objects: Layout | None) -> None:
        self.objects = objects  # kept so its id stays its own while cached
        self.shapes: list[Shape] = []
        self.misses = 0


class Shape:
    """One layout: a pattern over the plaintext and the record text with holes."""

    __slots__ = ("_holes", "_match", "_template", "size")

    def __init__(
        self, pattern: bytes, template: str, holes: list[tuple[int, _Convert]], size: int
    ) -> None:
        self._match = re.compile(pattern, re.DOTALL).fullmatch
        self._template = template
        self._holes = holes
        self.size = size  # bytes of the plaintexts it matches

    def fields_json(self, plaintext: bytes) -> str | None:
        """`notification_fields_json` of a plaintext of this layout, else None."""
        match = self._match(plaintext)
        if match is None:
            return None
        groups = match.groups()
        try:
            values = tuple([convert(groups[index]) for index, convert in self._holes])
        except DlmsError:  # defensive: no conversion raises one today
            return None
        return self._template % values


def compile_shape(
    plaintext: bytes,
    notification: DataNotification,
    readings: tuple[Reading, ...],
    push_object_list: Layout | None,
) -> Shape | None:
    """The shape of a decoded push, or None when its layout is not one we compile."""
    if plaintext[:1] != bytes((DATA_NOTIFICATION,)) or notification.body_descriptors:
        return None  # descriptor bodies (XT211) are not one A-XDR value: full path
    stamp = _date_time_start(plaintext)
    body_offset = 6 if stamp is None else stamp + _DATE_TIME_SIZE
    try:
        plan = plan_readings(notification.body, push_object_list)
    except DlmsError:
        plan = Plan()
    if len(plan) != len(readings):
        return None  # extraction gave up on this body: no holes in it
    leaves: dict[int, tuple[int, int, int] | None] = {}
    if _leaf_spans(notification.body, plaintext, body_offset, leaves) != len(plaintext):
        return None
    builder = _Builder(plaintext)
    builder.text(',"invoke_id":')
    builder.hole(1, 5, _invoke_id_text)
    builder.text(',"datetime":')
    if stamp is None:
        builder.text("null")
    else:
        builder.hole(stamp, stamp + _DATE_TIME_SIZE, _date_time_text)
    # Leaves that carry a reading become holes; every other byte stays literal.
    holes: dict[int, tuple[int, int, int]] = {}
    pinned = {id(item) for item in plan.pinned}  # bytes the plan depends on stay literal
    for _obis, item, _scaler, _unit, _attribute, _form in plan:
        span = leaves.get(id(item))
        if span is not None and id(item) not in pinned:
            holes[id(item)] = span
    if not holes:
        return None  # all literal: it would only match this very push again
    builder.text(',"body":')
    _body_text(notification.body, holes, builder)
    builder.text(',"readings":[')
    for position, (entry, reading) in enumerate(zip(plan, readings, strict=True)):
        head, tail = reading_frame(reading)
        builder.text(("," if position else "") + head)
        span = holes.get(id(entry[1]))
        if span is None:
            builder.text(value_json_text(reading.value))
        else:
            tag, start, end = span
            builder.hole(start, end, _reading_converter(tag, entry[2], entry[5]))
        builder.text(tail)
    builder.text("]")
    return builder.shape()


class _Builder:
    """Collects the record text with holes, and the byte spans the holes read."""

    def __init__(self, plaintext: bytes) -> None:
        self._plaintext = plaintext
        self._template: list[str] = []
        self._holes: list[tuple[int, int, _Convert]] = []

    def text(self, text: str) -> None:
        self._template.append(text.replace("%", "%%"))

    def hole(self, start: int, end: int, convert: _Convert) -> None:
        self._template.append("%s")
        self._holes.append((start, end, convert))

    def shape(self) -> Shape:
        # One group per distinct span, numbered in the order they occur in the bytes.
        spans = sorted({(start, end) for start, end, _ in self._holes})
        group = {span: index for index, span in enumerate(spans)}
        pattern = []
        position = 0
        for start, end in spans:
            pattern.append(re.escape(self._plaintext[position:start]))
            pattern.append(b"(.{%d})" % (end - start))
            position = end
        pattern.append(re.escape(self._plaintext[position:]))
        return Shape(
            b"".join(pattern),
            "".join(self._template),
            [(group[(start, end)], convert) for start, end, convert in self._holes],
            len(self._plaintext),
        )


def _date_time_start(plaintext: bytes) -> int | None:
    """Where the date-time of a (decoded, so well-formed) DataNotification starts:
    after ``0C`` or ``09 0C``; None when absent (``00``)."""
    marker = plaintext[5]
    if marker == 0:
        return None
    return 7 if marker == _OCTET_STRING_TAG else 6


def _leaf_spans(
    item: Data, buf: bytes, offset: int, spans: dict[int, tuple[int, int, int] | None]
) -> int:
    """Where the content of each fixed-size integer and octet-string leaf of `item`
    (encoded at `offset`) lies: ``spans[id(leaf)] = (tag, start, end)``.
    Returns the offset after `item`."""
    tag = buf[offset]
    value = item.value
    if type(value) is tuple and (tag == 1 or tag == 2):
        count, position = decode_length(buf, offset + 1)
        if count == len(value):
            for child in value:
                position = _leaf_spans(child, buf, position, spans)
            return position
    fixed = fixed_size_leaf(tag)
    end: int
    if fixed is not None and fixed[1] is item.type:
        start, end = offset + 1, offset + 1 + fixed[0]
    elif tag == _OCTET_STRING_TAG and type(value) is bytes:
        size, start = decode_length(buf, offset + 1)
        end = start + size
    else:
        return decode_data(buf, offset)[1]
    # The decoder makes a new object per leaf; if one ever appeared twice, hole neither.
    spans[id(item)] = None if id(item) in spans else (tag, start, end)
    return end


def _body_text(item: Data, holes: dict[int, tuple[int, int, int]], builder: _Builder) -> None:
    """`data_json_text(item)` with the holes' values left open."""
    span = holes.get(id(item))
    if span is not None:
        tag, start, end = span
        builder.text(json_text_open(item.type))
        builder.hole(start, end, _BODY_CONVERTERS[tag])
        builder.text("}")
        return
    value = item.value
    if type(value) is tuple:
        builder.text(json_text_open(item.type) + "[")
        for position, child in enumerate(value):
            if position:
                builder.text(",")
            _body_text(child, holes, builder)
        builder.text("]}")
        return
    builder.text(data_json_text(item))


def _integer_text(read: Callable[[bytes], int]) -> _Convert:
    return lambda raw: str(read(raw))


def _octets_text(raw: bytes) -> str:
    return f'"{raw.hex()}"'


def _body_converters() -> dict[int, _Convert]:
    converters: dict[int, _Convert] = {_OCTET_STRING_TAG: _octets_text}
    for tag in range(256):
        fixed = fixed_size_leaf(tag)
        if fixed is not None:
            converters[tag] = _integer_text(fixed[2])
    return converters


_BODY_CONVERTERS = _body_converters()


def _reading_converter(tag: int, scaler: int | None, form: str | None = None) -> _Convert:
    fixed = fixed_size_leaf(tag)
    if fixed is None:
        if form is not None:
            return functools.partial(_formed_reading_text, form)
        return _octets_reading_text  # no scaler applies to octets
    _size, kind, read = fixed
    if scaler is not None and scaler >= 0:
        # An integer times 10**scaler is integral, and an integral value's text is the
        # integer's: what scaled_value + value_json_text make of it, without Decimal.
        factor = 10**scaler
        return lambda raw: str(read(raw) * factor)
    if scaler is not None and -scaler <= _MAX_FAST_DIGITS:
        return _fractional_text(kind, read, scaler)
    return lambda raw: value_json_text(scaled_value(kind, read(raw), scaler))


_MAX_FAST_DIGITS = 15


def _fractional_text(kind: DataType, read: Callable[[bytes], int], scaler: int) -> _Convert:
    """`value_json_text(scaled_value(...))` for a negative scaler, without Decimal where
    the answer is plain: an integral result is the integer's text, and a result whose
    exact decimal text is also its float's repr is that repr (what json_number picks)."""
    divisor = 10**-scaler
    digits = -scaler

    def convert(raw: bytes) -> str:
        number = read(raw)
        whole, fraction = divmod(abs(number), divisor)
        if not fraction:
            return str(number // divisor)
        exact = f"{'-' if number < 0 else ''}{whole}.{str(fraction).zfill(digits).rstrip('0')}"
        text = repr(float(exact))
        if text == exact:
            return text
        return value_json_text(scaled_value(kind, number, scaler))

    return convert


# Octet-string values (mostly time stamps) and date-times repeat across meters pushing
# on the same schedule; their text costs a CosemDateTime parse, so keep the last ones.
@functools.lru_cache(maxsize=4096)
def _octets_reading_text(raw: bytes) -> str:
    return value_json_text(scaled_value(DataType.OCTET_STRING, raw, None))


def _formed_reading_text(form: str, raw: bytes) -> str:
    return value_json_text(form_text(form, raw))


def _invoke_id_text(raw: bytes) -> str:
    # DataNotification.invoke_id: the low 24 bits of long-invoke-id-and-priority.
    return str(int.from_bytes(raw, "big") & 0x00FFFFFF)


@functools.lru_cache(maxsize=4096)
def _date_time_text(raw: bytes) -> str:
    # An impossible date-time is no error: its text is null, as on the full path.
    moment = CosemDateTime.from_bytes(raw).to_datetime()
    return "null" if moment is None else encode_basestring(moment.isoformat())
