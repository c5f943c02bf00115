"""`run --workers N` with the real process: one port, one data shard per worker, merged
metrics and store, signals, crashes, and shards left over by a run with more workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    RunningGateway,
    WriteLoad,
    cli,
    free_port,
    running,
    start_gateway,
    wait_until,
)
from tests.realservers import influxdb1, influxdb1_create_database, influxdb1_points

T0 = (time.time_ns() // 10**9 - 600) * 10**9


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def accepted_lines(gateway: RunningGateway) -> float:
    """gateway_write_lines_total{result="accepted"} summed, from one /metrics scrape."""
    return sum(gateway.metric_values("gateway_write_lines_total", result="accepted"))


def write_each_on_a_new_connection(gateway: RunningGateway, bodies: list[bytes]) -> None:
    for body in bodies:  # urllib opens a new connection per request: the kernel spreads them
        assert 204 == gateway.write("/api/v2/write?bucket=mydb&precision=ns", body)


def test_two_workers_share_the_port_and_the_gateway_sees_every_write(tmp_path: Path) -> None:
    with running(tmp_path, "--workers", "2") as gateway:
        wait_until(lambda: len(children(gateway.process.pid)) == 2, 10, "two workers")
        bodies = [f"cpu,host=h{i} v={i}i {T0 + i}\n".encode() for i in range(60)]
        write_each_on_a_new_connection(gateway, bodies)
        # Both workers took writes, each into its own shard.
        assert (gateway.data_dir / "store").is_dir()
        assert (gateway.data_dir / "store.worker-1").is_dir()
        # Whichever worker answers /metrics, it reports the whole gateway.
        for _ in range(6):
            assert accepted_lines(gateway) == 60
        # The CLI reads every shard as one store.
        export = cli("store", "export", "--database", "mydb", "--data-dir", str(gateway.data_dir))
        assert sorted(export.stdout.splitlines()) == sorted(b.rstrip(b"\n") for b in bodies)
        stats = cli("store", "stats", "--json", "--data-dir", str(gateway.data_dir))
        [row] = json.loads(stats.stdout)
        assert (row["points"], row["series"]) == (60, 60)
        workers = children(gateway.process.pid)
        assert 0 == gateway.stop()
        assert not any(alive(pid) for pid in workers)


def test_a_worker_killed_stops_the_gateway_for_its_restart(tmp_path: Path) -> None:
    """A dead worker is not left half-running: the others stop and the exit code is not 0,
    so the service manager restarts the gateway (nothing acknowledged is lost: see below)."""
    with running(tmp_path, "--workers", "2") as gateway:
        wait_until(lambda: len(children(gateway.process.pid)) == 2, 10, "two workers")
        first, second = sorted(children(gateway.process.pid))
        os.kill(first, signal.SIGKILL)
        assert gateway.process.wait(timeout=20) != 0
        wait_until(lambda: not alive(second), 10, "the other worker to stop")
        assert "worker exited: stopping the gateway" in gateway.stderr()


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with running(tmp_path, "--workers", "2") as gateway:
        wait_until(lambda: len(children(gateway.process.pid)) == 2, 10, "two workers")
        workers = children(gateway.process.pid)
        gateway.process.kill()
        gateway.process.wait(timeout=10)
        wait_until(lambda: not any(alive(pid) for pid in workers), 20, "the workers to stop")


def test_port_in_use_is_a_startup_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "gateway", "run", "--workers", "2"]
        command += ["--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")]
        done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr.decode()


@pytest.mark.slow
def test_a_shard_left_by_more_workers_is_delivered_after_a_restart_with_fewer(
    tmp_path: Path,
) -> None:
    """Two workers buffer writes while the upstream is down; the gateway then restarts with
    one worker: a drain-only worker delivers the second shard, then exits."""
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[server]\nshutdown_timeout = "1s"\n'
        f'[[upstreams]]\nname = "influx"\nurl = "http://127.0.0.1:{port}"\napi = "v1"\n'
        'flush_interval = "100ms"\nretry_max_delay = "500ms"\n'
    )
    gateway = start_gateway(tmp_path, "-c", str(config), "--workers", "2")
    try:
        bodies = [f"mem,host=a used={i}i {T0 + i * 10**9}\n".encode() for i in range(40)]
        write_each_on_a_new_connection(gateway, bodies)
    finally:
        assert 0 == gateway.stop()
    assert (gateway.data_dir / "buffer.worker-1").is_dir()
    status = cli(
        "buffer", "status", "--json", "-c", str(config), "--data-dir", str(gateway.data_dir)
    )
    [row] = json.loads(status.stdout)
    assert row["pending_records"] == 40

    with influxdb1(tmp_path / "influx", port=port) as server:
        influxdb1_create_database(server, "mydb")
        restarted = start_gateway(tmp_path, "-c", str(config), "--workers", "1")
        try:
            wait_until(
                lambda: len(influxdb1_points(server, "mydb", "mem")) == 40, 30, "all 40 points"
            )
            # The drain-only worker exits once its shard is empty; the listening one stays.
            wait_until(
                lambda: len(children(restarted.process.pid)) == 1, 20, "the drain worker to exit"
            )
            assert "leftover worker shard drained" in restarted.stderr()
            assert restarted.process.poll() is None
            points = influxdb1_points(server, "mydb", "mem")
        finally:
            assert 0 == restarted.stop()
        # Delivered once is enough: the next start has nothing left over to drain.
        again = start_gateway(tmp_path, "-c", str(config), "--workers", "1")
        try:
            assert children(again.process.pid) == []  # one process, no supervisor
            assert "leftover" not in again.stderr()
        finally:
            assert 0 == again.stop()
    assert sorted(fields["used"] for _, fields, _ in points) == list(range(40))


def test_sighup_to_the_supervisor_reloads_the_policy_in_every_worker(tmp_path: Path) -> None:
    with running(tmp_path, "--workers", "2") as gateway:
        wait_until(lambda: len(children(gateway.process.pid)) == 2, 10, "two workers")
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: gateway.stderr().count('"trigger":"SIGHUP"') == 2, 10, "two SIGHUP reloads"
        )
        assert gateway.process.poll() is None
        assert 0 == gateway.stop()


@pytest.mark.slow
def test_kill_9_of_every_process_under_load_loses_no_acknowledged_line(tmp_path: Path) -> None:
    """Two workers under load, then kill -9 of the supervisor and both workers at once; after
    a restart, every line that got a 204 from either worker reaches the real upstream."""
    from tests.realservers import influxdb1_query

    with influxdb1(tmp_path / "influx") as server:
        influxdb1_create_database(server, "telegraf")
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[[upstreams]]\nname = "influx"\nurl = "{server.url}"\napi = "v1"\n'
            'flush_interval = "100ms"\nretry_max_delay = "500ms"\n'
        )
        gateway = start_gateway(tmp_path, "-c", str(config), "--workers", "2")
        wait_until(lambda: len(children(gateway.process.pid)) == 2, 10, "two workers")
        with WriteLoad(gateway, T0) as load:
            time.sleep(1.5)
            for pid in [gateway.process.pid, *children(gateway.process.pid)]:
                os.kill(pid, signal.SIGKILL)
            gateway.process.wait(timeout=10)
        acknowledged = load.acknowledged
        assert len(acknowledged) > 100
        assert (gateway.data_dir / "buffer.worker-1").is_dir()  # both shards took writes
        restarted = start_gateway(tmp_path, "-c", str(config), "--workers", "2")
        try:

            def delivered() -> set[int]:
                rows = influxdb1_query(server, "telegraf", 'SELECT "id" FROM "load"')
                return {int(row["id"]) for row in rows}  # type: ignore[call-overload]

            wait_until(lambda: set(acknowledged) <= delivered(), 30, "every acknowledged line")
        finally:
            assert 0 == restarted.stop()
