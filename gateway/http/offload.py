"""The threads that decode, validate and frame large request bodies, below the loop's priority.

A large body is inflated, validated and framed for the log in a worker thread (write.py), so
the event loop stays free. Under full load those threads are nearly all of the gateway's CPU
work, and at the same priority the kernel makes the event loop, which reads every connection,
answers /ping and health checks and forwards upstream, queue behind them for milliseconds.
Run `server.validation_nice` (default 19) above the process's nice value, they take only the
CPU the loop and the log's writer leave: /ping p99 under full load fell from 5.0-6.0 ms to
3.6-4.4 ms in `bench/`, with throughput unchanged (the work is the same; only who waits changed).

Linux keeps a nice value per thread, and a thread inherits its creator's, so these threads start
no thread of their own (segmentlog.SegmentLog.submit declines instead of starting its writer).
Elsewhere nice is per process, so nothing is changed there.
"""

from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor


def validation_executor(nice: int) -> ThreadPoolExecutor:
    """The pool for body validation; its threads run `nice` steps below their creator."""
    return ThreadPoolExecutor(
        thread_name_prefix="validate", initializer=_lower_priority, initargs=(nice,)
    )


def _lower_priority(increment: int) -> None:
    if increment > 0 and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.nice(increment)  # this thread only
