"""Child processes for the benchmark and what /proc says about them.

`Child` starts a server in its own session with its output in a log file, stops it by its own
pid (SIGTERM, then SIGKILL to its own process group after a timeout), and measures its process
tree: CPU seconds (utime + stime of every process in the tree) and peak RSS (VmHWM, summed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark cannot go on: a tool is missing, a server did not start, a timeout."""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may contain spaces: split after the last ")".
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # stat fields 14 and 15
    return ticks / CLK_TCK


def all_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) of every process on the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        out[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


KERNEL_THREADS = ("ksoftirqd", "kworker", "jbd2", "rcu", "kswapd", "migration", "kcompactd")


def foreign_cpu(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int]
) -> float:
    """CPU seconds used by processes that are neither ours nor kernel threads, in between."""
    total = 0.0
    for pid, (name, seconds) in after.items():
        if pid not in ours and not name.startswith(KERNEL_THREADS):
            total += seconds - before.get(pid, (name, 0.0))[1]
    return total


def busiest_others(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    ours: set[int],
    top: int = 3,
) -> list[tuple[str, float]]:
    """The processes, not ours, that used the most CPU between two `all_cpu()` snapshots."""
    used = []
    for pid, (name, seconds) in after.items():
        if pid in ours:
            continue
        start = before.get(pid, (name, 0.0))[1]
        if seconds - start >= 0.2:
            used.append((f"{name}[{pid}]", round(seconds - start, 1)))
    return sorted(used, key=lambda x: -x[1])[:top]


def peak_rss_mb(pids: Sequence[int]) -> float:
    """The sum of VmHWM (peak resident set) of these processes, in MiB."""
    return _sum_kb(pids, "status", "VmHWM:") / 1024


def pss_mb(pids: Sequence[int]) -> float:
    """The sum of Pss (proportional set size) of these processes now, in MiB: pages shared by
    forked workers are split between them instead of being counted once per process."""
    return _sum_kb(pids, "smaps_rollup", "Pss:") / 1024


def _sum_kb(pids: Sequence[int], file: str, key: str) -> int:
    """The first `key` line's kB value in /proc/PID/`file`, summed over processes still there."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
                if line.startswith(key):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kb


class PssSampler:
    """Samples the summed Pss of a process tree every `interval` s in a thread; keeps the peak."""

    def __init__(self, pids: Callable[[], Sequence[int]], interval: float = 0.5) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_mb = max(self.peak_mb, pss_mb(self._pids()))


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # up to steal; guest time is already in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


def http_get(url: str, timeout: float = 5.0) -> bytes:
    """The body of a GET that must succeed."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


@dataclass
class Child:
    """A server process started by the benchmark."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, name: str, command: Sequence[str], log: Path, *, cwd: Path | None = None
    ) -> Child:
        """Start `command` in a new session, stdout and stderr into `log`."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("INFLUX_GATEWAY_CONFIG", None)
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        return cls(name, process, log)

    def output(self) -> str:
        """What the child wrote so far."""
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        """The end of the child's output, for error messages."""
        return "\n".join(self.output().splitlines()[-lines:])

    def check_alive(self) -> None:
        """BenchError when the child has exited."""
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with {code}:\n{self.tail()}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `ready` until true; else stop the child and raise BenchError (it died, timeout)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.check_alive()
                if ready():
                    return
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise BenchError(f"{self.name}: {what} not within {timeout:.0f}s:\n{self.tail()}")

    def pids(self) -> list[int]:
        """The child and its descendants."""
        return process_tree(self.process.pid) if self.process.poll() is None else []

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to its process group (its own session), wait; then SIGKILL.

        Returns the exit code, None if it had to be killed.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            return None
        return self.process.returncode
