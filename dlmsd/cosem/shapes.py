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
fifth of the full path. A cache made with ``records=True`` (the public decode
path, `dlmsd.decoding`) also compiles, per shape, a function that builds the
record as a dict (what ``Push.to_record()`` gives): the values come out of the
plaintext in one `struct` unpack, everything else is a literal of the source.

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
import json
import re
import struct
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from dlmsd.cosem.readings import (
    Layout,
    Plan,
    Reading,
    form_text,
    json_number,
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
    Push,
    notification_fields_json,
    open_decrypted,
    record_head,
    record_head_json,
)

_Convert = Callable[[bytes], str]
# A record builder: (the record's head fields, the unpacked values) -> the record.
_Build = Callable[[dict[str, object], tuple[Any, ...]], dict[str, object]]

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
# Memory: a shape holds about 20 bytes per plaintext byte (pattern, regex, template),
# about 60 with its record builder. No limit on a push's length: the cache is
# bounded by the plaintext bytes behind all its shapes.
_HELD_LIMIT = 1 << 20  # plaintext bytes behind all shapes kept


class ShapeCache:
    """Records of pushes, through compiled shapes where a layout repeats.

    `record_json` gives exactly ``open_decrypted(envelope, plaintext, objects)
    .record_json(more)``, and raises the same errors; with ``records=True``,
    `record` gives exactly its ``to_record()`` and the layout mismatch. Bounded:
    at most 4 shapes per (length, push object list), 4,096 such keys, and shapes
    of 1 MiB of plaintext in all (about 20 MiB of memory, 60 MiB with records).

    `max_values` bounds the decoded body of a push (`decode_data`); a shape is only
    made from a push that decoded within it and matches only pushes of the same
    layout, so the shape path keeps the bound too.
    """

    def __init__(self, records: bool = False, max_values: int = MAX_VALUES) -> None:
        self._max_values = max_values
        # (plaintext length, id of the push object list) -> (that list, its shapes, misses)
        self._shapes: dict[tuple[int, int], _Entry] = {}
        self._records = records  # compile record builders too (for `record`)
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
        entry = self._shapes.get((len(plaintext), id(objects)))
        if entry is not None:
            for shape in entry.shapes:
                fields = shape.fields_json(plaintext)
                if fields is not None:
                    self.layout_mismatch = None  # a shape is only made of a fitting push
                    return f"{record_head_json(envelope)}{fields}{more}}}"
        push = self._full(envelope, plaintext, objects)
        self.layout_mismatch = push.layout_mismatch
        return push.record_json(more)

    def record(
        self, envelope: Envelope, plaintext: bytes, layout: Layout | None = None
    ) -> tuple[dict[str, object], str | None]:
        """``(push.to_record(), push.layout_mismatch)`` of ``open_decrypted(envelope,
        plaintext, layout)``, the same errors too. Only the cache's own state changes:
        its results do not go through `layout_mismatch`."""
        objects = layout or None
        entry = self._shapes.get((len(plaintext), id(objects)))
        if entry is not None:
            for shape in entry.shapes:
                record = shape.record(envelope, plaintext)
                if record is not None:
                    return record, None  # a shape is only made of a fitting push
        push = self._full(envelope, plaintext, objects)
        return push.to_record(), push.layout_mismatch

    def _full(self, envelope: Envelope, plaintext: bytes, objects: Layout | None) -> Push:
        """The full path for a push no shape matched; compiles a shape now and then."""
        push = open_decrypted(envelope, plaintext, objects, self._max_values)
        key = (len(plaintext), id(objects))
        self.misses += 1
        entry = self._shapes.get(key)
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
        ):
            self._last_compile = self.misses
            try:
                self._learn(entry, envelope, plaintext, push)
            except Exception:
                # Shapes only save time: a bug in compiling must not cost this push.
                self.failed += 1
        return push

    def _learn(self, entry: _Entry, envelope: Envelope, plaintext: bytes, push: Push) -> None:
        if push.layout_mismatch is not None:
            return  # a hit reports no mismatch: shapes are made of fitting pushes only
        notification, readings = push.notification, push.readings
        shape = compile_shape(plaintext, notification, readings, entry.objects, self._records)
        if shape is None:
            return
        if shape.fields_json(plaintext) != notification_fields_json(notification, readings) or (
            self._records and shape.record(envelope, plaintext) != push.to_record()
        ):
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

    __slots__ = ("_build", "_holes", "_match", "_template", "_unpack", "size")

    def __init__(
        self,
        pattern: bytes,
        template: str,
        holes: list[tuple[int, _Convert]],
        size: int,
        builder: tuple[Callable[[bytes], tuple[Any, ...]], _Build] | None = None,
    ) -> None:
        self._match = re.compile(pattern, re.DOTALL).fullmatch
        self._template = template
        self._holes = holes
        self.size = size  # bytes of the plaintexts it matches
        self._unpack: Callable[[bytes], tuple[Any, ...]] | None = None
        self._build: _Build | None = None
        if builder is not None:
            self._unpack, self._build = builder

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

    def record(self, envelope: Envelope, plaintext: bytes) -> dict[str, object] | None:
        """`build_record` of a plaintext of this layout (None: not of this layout, or
        the shape was compiled without a record builder)."""
        if self._build is None or self._unpack is None or self._match(plaintext) is None:
            return None
        try:
            return self._build(record_head(envelope), self._unpack(plaintext))
        except DlmsError:  # defensive, as in fields_json
            return None


def compile_shape(
    plaintext: bytes,
    notification: DataNotification,
    readings: tuple[Reading, ...],
    push_object_list: Layout | None,
    records: bool = False,
) -> Shape | None:
    """The shape of a decoded push, or None when its layout is not one we compile.
    With `records`, the shape can also give the record as a dict (`Shape.record`)."""
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
    record = None
    if records:
        record = _record_builder(plaintext, notification, readings, plan, holes, stamp)
    return builder.shape(record)


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

    def shape(
        self, record: tuple[Callable[[bytes], tuple[Any, ...]], _Build] | None = None
    ) -> Shape:
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
            record,
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
def _date_time_value(raw: bytes) -> str | None:
    # An impossible date-time is no error: it is null, as on the full path.
    moment = CosemDateTime.from_bytes(raw).to_datetime()
    return None if moment is None else moment.isoformat()


def _date_time_text(raw: bytes) -> str:
    value = _date_time_value(raw)
    return "null" if value is None else encode_basestring(value)


# --- record builders: the record as a dict ------------------------------------------------
#
# `build_record` makes a tree of dicts and lists per push; for a layout seen before only
# the values change. The builder is the Python source of that tree with every literal
# written in (``repr`` of the full path's own values: str, int, float, bool, None,
# lists and dicts) and each value an expression over the tuple one `struct` unpack
# of the plaintext gives; compiled once per shape, it builds the tree at the cost of
# its displays. The compile check in `ShapeCache._learn` compares it with
# `Push.to_record()`.

# Struct codes of the fixed-size integer leaves (each checked against axdr's sizes).
_STRUCT_CODES = {
    DataType.DOUBLE_LONG: "i",
    DataType.DOUBLE_LONG_UNSIGNED: "I",
    DataType.INTEGER: "b",
    DataType.LONG: "h",
    DataType.LONG_UNSIGNED: "H",
    DataType.LONG64: "q",
    DataType.LONG64_UNSIGNED: "Q",
    DataType.UNSIGNED: "B",
    DataType.ENUM: "B",
    DataType.BCD: "B",
}


def _struct_code(tag: int) -> str | None:
    fixed = fixed_size_leaf(tag)
    code = _STRUCT_CODES.get(fixed[1]) if fixed is not None else None
    if fixed is None or code is None or struct.calcsize(">" + code) != fixed[0]:
        return None
    return code


class _Source:
    """The values a builder reads (one struct field per byte span) and the functions
    its source calls."""

    def __init__(self) -> None:
        self.spans: dict[tuple[int, int], tuple[int, str]] = {}  # span -> (field, code)
        self.names: dict[str, object] = {}

    def value(self, start: int, end: int, code: str) -> str:
        known = self.spans.get((start, end))
        if known is None:
            known = self.spans[(start, end)] = (len(self.spans), code)
        elif known[1] != code:
            raise ValueError("one span read two ways")
        return f"v[{known[0]}]"

    def call(self, function: Callable[[Any], object], argument: str) -> str:
        name = f"f{len(self.names)}"
        self.names[name] = function
        return f"{name}({argument})"

    def unpacker(self, size: int) -> Callable[[bytes], tuple[Any, ...]]:
        fields = sorted(self.spans.items())  # by position; field numbers follow
        codes, position = [">"], 0
        for index, ((start, end), (field, code)) in enumerate(fields):
            if field != index:
                raise ValueError("fields out of order")
            codes.append(f"{start - position}x{code}")
            position = end
        codes.append(f"{size - position}x")
        unpack = struct.Struct("".join(codes)).unpack
        return unpack


_LABELS: dict[DataType, str] = {}


def _label(data_type: DataType) -> str:
    label = _LABELS.get(data_type)
    if label is None:
        label = _LABELS[data_type] = json.loads(json_text_open(data_type) + "null}")["type"]
    return label


def _record_builder(
    plaintext: bytes,
    notification: DataNotification,
    readings: tuple[Reading, ...],
    plan: Plan,
    holes: dict[int, tuple[int, int, int]],
    stamp: int | None,
) -> tuple[Callable[[bytes], tuple[Any, ...]], _Build] | None:
    """The unpacker and the builder of a shape's record, or None if a hole's type has
    no struct code. Spans must be numbered in byte order, so they are registered so."""
    source = _Source()
    spans: list[tuple[int, int, str]] = [(1, 5, "I")]
    if stamp is not None:
        spans.append((stamp, stamp + _DATE_TIME_SIZE, f"{_DATE_TIME_SIZE}s"))
    for tag, start, end in holes.values():
        code = f"{end - start}s" if tag == _OCTET_STRING_TAG else _struct_code(tag)
        if code is None:
            return None
        spans.append((start, end, code))
    for start, end, code in sorted(spans):
        source.value(start, end, code)
    invoke = source.value(1, 5, "I") + " & 16777215"
    if stamp is None:
        date_time = "None"
    else:
        raw = source.value(stamp, stamp + _DATE_TIME_SIZE, f"{_DATE_TIME_SIZE}s")
        date_time = source.call(_date_time_value, raw)
    body = _body_source(notification.body, holes, source)
    parts = []
    for entry, reading in zip(plan, readings, strict=True):
        span = holes.get(id(entry[1]))
        value: str | None = None
        if span is not None:
            tag, start, end = span
            code = f"{end - start}s" if tag == _OCTET_STRING_TAG else _struct_code(tag)
            assert code is not None  # checked above
            value = source.call(
                _reading_value(tag, entry[2], entry[5]), source.value(start, end, code)
            )
        parts.append(_dict_source(reading.to_json(), {"value": value} if value else {}))
    text = (
        "def build(h, v):\n    return {**h, "
        f"'invoke_id': {invoke}, 'datetime': {date_time}, "
        f"'body': {body}, 'readings': [{', '.join(parts)}]}}\n"
    )
    namespace: dict[str, Any] = dict(source.names)
    # Our own source, of reprs of decoded values: no text from a meter is ever code.
    exec(compile(text, "<dlmsd.cosem.shapes record builder>", "exec"), namespace)
    return source.unpacker(len(plaintext)), namespace["build"]


def _dict_source(node: dict[str, object], values: dict[str, str]) -> str:
    """A dict display of `node`, with the expressions in `values` for those keys."""
    items = (f"{key!r}: {values.get(key) or repr(value)}" for key, value in node.items())
    return "{" + ", ".join(items) + "}"


def _body_source(item: Data, holes: dict[int, tuple[int, int, int]], source: _Source) -> str:
    """The source of `item.to_json()`, the holes' values read from the plaintext."""
    span = holes.get(id(item))
    if span is not None:
        tag, start, end = span
        if tag == _OCTET_STRING_TAG:
            read = source.value(start, end, f"{end - start}s") + ".hex()"
        else:
            code = _struct_code(tag)
            assert code is not None  # checked by the caller
            read = source.value(start, end, code)
        return f"{{'type': {_label(item.type)!r}, 'value': {read}}}"
    value = item.value
    if type(value) is tuple:
        children = ", ".join(_body_source(child, holes, source) for child in value)
        return f"{{'type': {_label(item.type)!r}, 'value': [{children}]}}"
    return repr(item.to_json())


def _reading_value(tag: int, scaler: int | None, form: str | None) -> Callable[[Any], object]:
    """The reading's JSON value from what the unpacker gives for its hole (an int, or
    the octets): ``json_number(scaled_value(...))`` as `Reading.to_json` has it."""
    fixed = fixed_size_leaf(tag)
    if fixed is None:
        if form is not None:
            return lambda raw: json_number(form_text(form, raw))
        return _octets_reading_value
    kind = fixed[1]
    if scaler is not None and scaler >= 0:
        factor = 10**scaler
        return lambda number: number * factor
    if scaler is not None and -scaler <= _MAX_FAST_DIGITS:
        return _fractional_value(kind, scaler)
    return lambda number: json_number(scaled_value(kind, number, scaler))


def _fractional_value(kind: DataType, scaler: int) -> Callable[[int], object]:
    """`_fractional_text` as a value: an int when integral, the float when its repr is
    the exact decimal text, else what `json_number` makes of the Decimal."""
    divisor = 10**-scaler
    digits = -scaler

    def convert(number: int) -> object:
        whole, fraction = divmod(abs(number), divisor)
        if not fraction:
            return number // divisor
        exact = f"{'-' if number < 0 else ''}{whole}.{str(fraction).zfill(digits).rstrip('0')}"
        as_float = float(exact)
        if repr(as_float) == exact:
            return as_float
        return json_number(scaled_value(kind, number, scaler))

    return convert


@functools.lru_cache(maxsize=4096)
def _octets_reading_value(raw: bytes) -> object:
    return json_number(scaled_value(DataType.OCTET_STRING, raw, None))
