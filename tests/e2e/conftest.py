"""Fixtures that run the real `influx-gateway` process."""

from __future__ import annotations

import gzip
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

TOKEN_RE = re.compile(r"^\s+(igw_[A-Za-z0-9_-]+)\s*$", re.MULTILINE)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run `influx-gateway ARGS` as a subprocess (the installed console entry)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        capture_output=True,
        timeout=60,
        check=check,
    )


@dataclass
class RunningGateway:
    """A live `influx-gateway run` process."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    data_dir: Path
    token: str
    stderr_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send a signal and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def stderr(self) -> str:
        """Everything the process wrote on stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def metric_values(self, name: str, **labels: str) -> list[float]:
        """The values of every `name{...}` sample on /metrics that has these label values."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        return [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") and all(pair in line for pair in wanted)
        ]

    def write(self, path: str, body: bytes, *, gzipped: bool = False) -> int:
        """POST `body` to `path` with the admin token, gzip-compressed when asked; the status
        (0: no answer)."""
        headers = {"Authorization": f"Token {self.token}"}
        if gzipped:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0


def start_gateway(tmp_path: Path, *extra: str, tls: ssl.SSLContext | None = None) -> RunningGateway:
    """Start `influx-gateway run` on a free port and wait until /ready answers 200 (over HTTPS,
    trusting `tls`, when the gateway serves TLS)."""
    port = free_port()
    data_dir = tmp_path / "data"
    stderr_path = tmp_path / f"gateway-{port}.stderr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("INFLUX_GATEWAY_CONFIG", None)
    command = [sys.executable, "-m", "gateway", "run", "--listen", f"127.0.0.1:{port}"]
    command += ["--data-dir", str(data_dir), *extra]
    with stderr_path.open("wb") as stderr:  # the child keeps its own descriptor
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, env=env
        )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"gateway exited with {process.returncode}: {stderr_path.read_text()}"
            )
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=1, context=tls) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError(f"gateway not ready in time: {stderr_path.read_text()}")
    match = TOKEN_RE.search(stderr_path.read_text())
    token = match.group(1) if match else ""
    return RunningGateway(process, url, port, data_dir, token, stderr_path)


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate()` until true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def running(
    tmp_path: Path, *extra: str, tls: ssl.SSLContext | None = None
) -> Iterator[RunningGateway]:
    """`start_gateway`, killed afterwards if it is still running."""
    gateway = start_gateway(tmp_path, *extra, tls=tls)
    try:
        yield gateway
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait(timeout=10)


@pytest.fixture(name="running_gateway")
def fixture_running_gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    """A real gateway process on the embedded default (local store), stopped afterwards."""
    with running(tmp_path) as gateway:
        yield gateway


class WriteLoad:
    """Writer threads POSTing batches of `lines` distinct ids (`load,w=N id=<id>i`, 10 by
    default) to a gateway until stopped; `acknowledged` holds the ids of every batch that got a
    204. Odd writers send gzip bodies that validate unchanged, which the log stores as sent."""

    def __init__(self, gateway: RunningGateway, t0: int, writers: int = 4, lines: int = 10) -> None:
        self.acknowledged: list[int] = []
        self._gateway = gateway
        self._t0 = t0
        self._lines = lines
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(writers)]

    def __enter__(self) -> WriteLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set() and n < 2000:
            ids = [worker * 10**9 + n * self._lines + k for k in range(self._lines)]
            gzipped = worker % 2 == 1
            end = "\n" if gzipped else " \n"  # a trailing space: rewritten, stored plain
            body = "".join(f"load,w={worker} id={i}i {self._t0 + i}{end}" for i in ids).encode()
            if self._gateway.write("/api/v2/write?bucket=telegraf", body, gzipped=gzipped) == 204:
                with self._lock:
                    self.acknowledged.extend(ids)
            n += 1
