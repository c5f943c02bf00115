"""The write rules InfluxDB 3 applies to a syntactically valid line (IOx `mutable_batch_lp`).

- A tag key may appear once per line, whatever its values (`duplicate tag key`).
- A tag may not be named `time` (IOx: the tag column clashes with the time column).
- A field named `time` is ignored (InfluxDB 3 Core); a line whose only fields are named `time`
  has no fields. (IOx's mutable batch would reject it as a type clash with the time column; the
  product contract, SPEC 3.1, follows InfluxDB 3 and ignores it.)
- A name used both as a tag and as a field is an error (IOx: column type mismatch).
- A repeated field key keeps its last value when every occurrence has the same type; different
  types are an error. The kept field sits at the position of its last occurrence (IOx walks the
  fields backwards and skips keys it has already seen).

Names are compared unescaped: `a\\,b` and `a,b` are the same field key.
"""

from __future__ import annotations

from gateway.lineprotocol.syntax import (
    NAME_ESCAPES,
    TYPE_NAMES,
    Field,
    LineSyntaxError,
    ParsedLine,
    show,
    unescape,
    value_kind,
)

_TIME = b"time"


def resolve_fields(line: ParsedLine) -> list[tuple[bytes, Field]]:
    """(unescaped key, field) pairs that InfluxDB 3 stores, or raise LineSyntaxError."""
    tag_keys: set[bytes] = set()
    for raw_key, _ in line.tags:
        key = unescape(raw_key, NAME_ESCAPES)
        if key in tag_keys:
            raise LineSyntaxError(f"duplicate tag key {show(key)}")
        if key == _TIME:
            raise LineSyntaxError("tag key `time` is not allowed")
        tag_keys.add(key)
    kept: list[tuple[bytes, Field]] = []
    later_kind: dict[bytes, int] = {}
    escaped = any(b"\\" in key for key, _ in line.fields)
    for field in reversed(line.fields):
        key = unescape(field[0], NAME_ESCAPES) if escaped else field[0]
        if key == _TIME:
            continue
        kind = later_kind.get(key)
        this_kind = value_kind(field[1])
        if kind is None:
            if key in tag_keys:
                raise LineSyntaxError(f"{show(key)} is used both as a tag and as a field")
            later_kind[key] = this_kind
            kept.append((key, field))
        elif kind != this_kind:
            raise LineSyntaxError(
                f"field {show(key)} has type {TYPE_NAMES[kind]} here "
                f"but {TYPE_NAMES[this_kind]} earlier in this line"
            )
    if not kept:
        raise LineSyntaxError("no fields other than `time` (a field named `time` is ignored)")
    kept.reverse()
    return kept


def check_rules(line: ParsedLine) -> None:
    """Raise LineSyntaxError when a parsed line breaks a write rule (cheap when all is well)."""
    keys = [key for key, _ in line.fields]
    tag_keys = [key for key, _ in line.tags]
    if not any(b"\\" in key for key in keys) and not any(b"\\" in key for key in tag_keys):
        # Without escapes raw names are the names: settle the common case with set sizes.
        unique = set(keys)
        tags = set(tag_keys)
        if (
            len(unique) == len(keys)
            and _TIME not in unique
            and len(tags) == len(tag_keys)
            and _TIME not in tags
            and tags.isdisjoint(unique)
        ):
            return
    resolve_fields(line)
