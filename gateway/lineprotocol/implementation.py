"""Which implementation accepts runs of plain lines: the C accelerator or pure Python.

`validate` walks a body in runs. Runs of plain lines (the grammar of `fastpath.py`) are decided
either by the pure-Python bulk checks of `fastpath.py` -- the reference, always there -- or by
`_speedups.scan_plain`, a C extension (`_speedups.c`) that `pip install` builds where a compiler
is present and skips with a warning where not (setup.py marks it optional). Everything else, and
every error message, is the same Python code either way.

The C one is active when it imports, unless the environment sets INFLUX_GATEWAY_PURE_PYTHON=1.
`ACTIVE` is read once at import; `validate(..., implementation=...)` picks one per call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Literal

from gateway.lineprotocol.precision import ScanPolicy

Implementation = Literal["c", "python"]
# (end, newlines, accepted, lowest_ns, highest_ns, normalized bytes or None, end of a line refused
# for its timestamp or None): see _speedups.c
ScanResult = tuple[int, int, int, int, int, bytes | None, int | None]
ScanPlain = Callable[[bytes, int, ScanPolicy], ScanResult]

PURE_PYTHON_VARIABLE = "INFLUX_GATEWAY_PURE_PYTHON"
_INTERFACE_VERSION = 2  # what this Python code expects of _speedups (INTERFACE_VERSION there)


def _compiled() -> ScanPlain | None:
    """The C scan, or None when the extension was not built (or is a stale in-place build)."""
    try:
        from gateway.lineprotocol import _speedups
    except ImportError:
        return None
    if getattr(_speedups, "INTERFACE_VERSION", None) != _INTERFACE_VERSION:
        return None
    return _speedups.scan_plain


def pure_python_requested(environ: Mapping[str, str]) -> bool:
    """True when the environment asks for the pure-Python implementation."""
    return environ.get(PURE_PYTHON_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


COMPILED_SCAN = _compiled()
AVAILABLE: tuple[Implementation, ...] = ("python",) if COMPILED_SCAN is None else ("c", "python")
ACTIVE: Implementation = (
    "c" if COMPILED_SCAN is not None and not pure_python_requested(os.environ) else "python"
)


def plain_scanner(which: Implementation | None = None) -> ScanPlain | None:
    """The C scan for "c", None for "python"; `which` None means the active implementation."""
    chosen = ACTIVE if which is None else which
    if chosen == "python":
        return None
    if COMPILED_SCAN is None:
        raise RuntimeError("the C line protocol accelerator (_speedups) is not built")
    return COMPILED_SCAN
