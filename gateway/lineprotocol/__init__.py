"""Line protocol, pure (no I/O): validate request bodies exactly as InfluxDB 3 would, normalize
what is accepted, and read accepted bodies back.

    split.py      where a logical line ends (IOx's quote/escape-aware splitter), comment skipping
    syntax.py     the grammar of one line (the exact, reference parser) and unescaping
    diagnose.py   the wording of syntax errors
    rules.py      InfluxDB 3's write rules: duplicate tags/fields, `time`, tag/field clashes
    fastpath.py   bulk checks over runs of plain lines (the C-speed part of the hot path)
    _speedups.c   the optional C accelerator of those runs; implementation.py picks C or Python
    precision.py  precisions, scaling, the plausibility guard and its messages, round_to
    validate.py   validate(): body in, accepted normalized body + line errors out
    points.py     Point/parse_points, summarize, iter_lines, rescale
"""

from __future__ import annotations

from gateway.lineprotocol import implementation
from gateway.lineprotocol.points import (
    LineSummary,
    Point,
    UInt,
    iter_lines,
    parse_points,
    rescale,
    summarize,
)
from gateway.lineprotocol.precision import NS_PER_UNIT, PRECISIONS, Precision, TimeRules
from gateway.lineprotocol.validate import LineError, ValidationResult, validate

# Which implementation `validate` uses by default: "c" (the accelerator) or "python".
IMPLEMENTATION: implementation.Implementation = implementation.ACTIVE

__all__ = [
    "IMPLEMENTATION",
    "NS_PER_UNIT",
    "PRECISIONS",
    "LineError",
    "LineSummary",
    "Point",
    "Precision",
    "TimeRules",
    "UInt",
    "ValidationResult",
    "iter_lines",
    "parse_points",
    "rescale",
    "summarize",
    "validate",
]
