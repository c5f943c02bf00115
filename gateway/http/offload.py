"""The threads that decode, validate and frame large request bodies, optionally below the
event loop's CPU priority.

A large body is inflated, validated and framed for the log in a worker thread (write.py), so
the event loop stays free. Under full load those threads are nearly all of the gateway's CPU
work, and at the same priority the kernel makes the event loop, which reads every connection,
answers /ping and health checks and forwards upstream, queue behind them for milliseconds.
With `server.validation_nice` above 0 their nice value is that much higher than their
creator's (a lower priority), and they take only the CPU the loop and the log's writer leave: at
19, /ping p99 under full load fell from 4.4-5.8 ms to 3.5-4.9 ms in `bench/`, throughput
unchanged.

It is off (0) by default because nice weighs every task of one scheduling group (a cgroup, or
the session's autogroup): where other CPU-bound processes share the gateway's group, they take
the CPU from validation threads at 19, and a starved thread that holds the GIL stalls the event
loop too. With two busy processes in the gateway's group the benchmark fell from 1.0 M to
0.08 M lines/s and /ping p99 rose to 170-200 ms (12 ms at 0). So it is for a gateway with a
group of its own: a container, or a systemd service with CPU accounting.

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
