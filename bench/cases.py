"""One benchmark case: start a sink and a server, drive them with wrk, measure, verify.

The measurements: wrk's count of responses per status and its latency percentiles, CPU
seconds (utime + stime) and peak RSS (VmHWM) of the server's process tree from /proc, the
CPU of the sink and of wrk, what the rest of the machine did meanwhile, and, once the server
has delivered what it acknowledged (the gateway: once its buffer is empty), the sink's counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.procs import (
    BenchError,
    Child,
    PssSampler,
    all_cpu,
    busiest_others,
    cpu_seconds,
    foreign_cpu,
    http_get,
    machine_cpu,
    peak_rss_mb,
)
from bench.targets import (
    BENCH,
    PeerSpec,
    Sink,
    Target,
    sink_target,
    start_gateway,
    start_nginx,
    start_peer,
    start_sink,
)

LUA = BENCH / "lua" / "wrk.lua"
PING_INTERVAL_MS = 10
WRK_TIMEOUT = "30s"  # a slow 204 still counts; wrk's default (2 s) would call it an error


@dataclass(frozen=True)
class Options:
    """What one benchmark run does."""

    duration: float
    connections: int
    threads: int
    encodings: tuple[str, ...]
    cases: tuple[str, ...]
    peers: tuple[PeerSpec, ...]
    unique_ids: bool
    upstream_gzip: bool
    gateway_workers: int | None
    gateway_fsync: str
    gateway_validation_nice: int | None
    sink_workers: int
    nginx_workers: str
    drain_timeout: float
    wait_idle: float
    repeat: int
    python: str
    wrk: str
    nginx: str | None
    half_load: bool = False


# ------------------------------------------------------------------------------------- wrk


def start_wrk(
    options: Options, url: str, args: list[str], log: Path, *, threads: int, connections: int
) -> Child:
    """wrk with bench/lua/wrk.lua for --duration seconds."""
    command = [options.wrk, "-t", str(threads), "-c", str(connections)]
    command += ["-d", f"{options.duration:g}s", "--timeout", WRK_TIMEOUT, "--latency"]
    command += ["-s", str(LUA), url, "--", *args]
    return Child.start("wrk", command, log)


def wrk_result(child: Child, timeout: float) -> dict[str, Any]:
    """Wait for wrk and parse the WRK_JSON line its `done` hook printed."""
    try:
        child.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.stop()
        raise BenchError(f"wrk did not finish within {timeout:.0f}s") from None
    match = re.search(r"^WRK_JSON (.*)$", child.output(), re.MULTILINE)
    if child.process.returncode != 0 or not match:
        raise BenchError(f"wrk failed ({child.process.returncode}):\n{child.tail()}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["statuses"] = {str(k): int(v) for k, v in (result.get("statuses") or {}).items()}
    return result


def latency_ms(result: dict[str, Any]) -> dict[str, float]:
    """wrk's latency percentiles (microseconds) in milliseconds."""
    lat = result["latency_us"]
    return {
        k: round(float(lat.get(k) or 0) / 1000, 3) for k in ("p50", "p90", "p99", "p999", "max")
    }


# ------------------------------------------------------------------------------- gateway


def gateway_metrics(target: Target) -> dict[str, float]:
    """Accepted lines and pending buffer records, from the gateway's /metrics."""
    assert target.metrics_url is not None
    text = http_get(target.metrics_url).decode()
    accepted = pending = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_write_lines_total{") and 'result="accepted"' in line:
            accepted += float(line.rsplit(" ", 1)[1])
        elif line.startswith("gateway_buffer_records{"):
            pending += float(line.rsplit(" ", 1)[1])
    return {"accepted_lines": accepted, "buffer_records": pending}


def buffer_status(options: Options, target: Target) -> list[dict[str, Any]]:
    """`influx-gateway buffer status --json`: what the WAL itself says is pending."""
    assert target.config is not None and target.data_dir is not None
    done = subprocess.run(
        [options.python, "-m", "gateway", "buffer", "status", "--json", *target_dirs(target)],
        capture_output=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise BenchError(f"influx-gateway buffer status failed: {done.stderr.decode()}")
    return list(json.loads(done.stdout))


def target_dirs(target: Target) -> list[str]:
    """-c and --data-dir of the gateway target, for its CLI."""
    return ["-c", str(target.config), "--data-dir", str(target.data_dir)]


def drain_gateway(options: Options, target: Target, sink: Sink, load_end: float) -> dict[str, Any]:
    """Wait until the gateway's buffer is empty; what it accepted, and how long that took.

    The buffer gauge is refreshed every 2 s, so an empty buffer counts only when read at least
    2.5 s after the load stopped; `buffer status --json` then confirms it from the WAL.
    """
    first = gateway_metrics(target)
    accepted = first["accepted_lines"]
    expected = accepted * target.copies  # what the sink gets: every line once per upstream
    backlog = max(0.0, expected - sink.stats()["lines"]) / target.copies
    deadline = time.monotonic() + options.drain_timeout
    caught_up_at: float | None = None
    while True:
        now = time.monotonic()
        metrics = gateway_metrics(target)
        lines = sink.stats()["lines"]
        if caught_up_at is None and lines >= expected:
            caught_up_at = now
        empty = metrics["buffer_records"] == 0 and now >= load_end + 2.5
        if (empty and (lines >= expected or now >= load_end + 5.0)) or now >= deadline:
            break
        time.sleep(0.2)
    status = buffer_status(options, target)
    return {
        "accepted_lines": int(accepted),
        "backlog_lines_at_end": int(backlog),
        "drain_s": None if caught_up_at is None else round(max(0.0, caught_up_at - load_end), 2),
        "pending_records": sum(int(row["pending_records"]) for row in status),
        "deadletter_lines": sum(int(row["deadletter_lines"]) for row in status),
    }


def settle_sink(sink: Sink, expected_lines: int, timeout: float = 10.0) -> None:
    """Let a proxy deliver what it acknowledged: until the sink has it, or stops growing."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        lines = sink.stats()["lines"]
        if lines >= expected_lines or lines == last:
            return
        last = lines
        time.sleep(0.5)


# ---------------------------------------------------------------------------------- cases


def write_args(options: Options, target: Target, payload: Path, encoding: str) -> list[str]:
    """The wrk.lua arguments of the load: which file, which headers, unique ids or not."""
    meta = json.loads((payload / "meta.json").read_text())
    gz = ".gz" if encoding == "gzip" else ""
    args = ["mode=write", f"token={target.token}", f"gzip={1 if gz else 0}"]
    if options.unique_ids:
        args += [f"body={payload / ('body.lp' + gz)}", "unique=1", f"ts={meta['marker_ts']}"]
    else:
        args += [f"body={payload / ('batch.lp' + gz)}"]
    return args


CASES = ("sink", "nginx", "gateway", "gateway-fanout", "gateway-outage")  # and peer:NAME


def start_target(options: Options, case: str, root: Path, sink: Sink, tmp_root: Path) -> Target:
    """Start the server of a case in front of `sink`."""
    if case == "sink":
        return sink_target(sink)
    if case == "nginx":
        assert options.nginx is not None
        return start_nginx(
            options.nginx, root / "nginx", sink, workers=options.nginx_workers, tmp_root=tmp_root
        )
    if case in ("gateway", "gateway-fanout", "gateway-outage"):
        target = start_gateway(
            options.python,
            root / "gateway",
            sink,
            upstream_gzip=options.upstream_gzip,
            workers=options.gateway_workers,
            fsync=options.gateway_fsync,
            validation_nice=options.gateway_validation_nice,
            upstreams=2 if case == "gateway-fanout" else 1,
        )
        if case == "gateway-outage":
            target = replace(target, name="influx-gateway (upstream stalled)")
        return target
    spec = next(p for p in options.peers if f"peer:{p.name}" == case)
    return start_peer(spec, root / "peer", sink)


def run_case(
    options: Options, case: str, encoding: str, payload: Path, root: Path, tmp_root: Path
) -> dict[str, Any]:
    """One server, one encoding: load, measure, verify delivery."""
    root.mkdir(parents=True)
    meta = json.loads((payload / "meta.json").read_text())
    lines_per_request = int(meta["lines"])
    sink = start_sink(
        options.python, root, workers=options.sink_workers, markers=options.unique_ids
    )
    target: Target | None = None
    try:
        target = start_target(options, case, root, sink, tmp_root)
        server = target.server
        own_sink = server is sink.child
        server_pids, sink_pids = server.pids(), sink.child.pids()
        server_cpu0, sink_cpu0 = cpu_seconds(server_pids), cpu_seconds(sink_pids)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0, _ = machine_cpu()
        everyone0 = all_cpu()
        started = time.monotonic()

        load = start_wrk(
            options,
            target.write_url,
            write_args(options, target, payload, encoding),
            root / "wrk.log",
            threads=options.threads,
            connections=options.connections,
        )
        ping_args = ["mode=get", f"interval_ms={PING_INTERVAL_MS}"]
        ping = start_wrk(
            options, target.ping_url, ping_args, root / "wrk-ping.log", threads=1, connections=1
        )
        # gateway-outage: the upstream takes connections and bytes but never answers while the
        # load runs (the gateway must keep acknowledging from its buffer), then comes back.
        stalled = sink.child.pids() if case == "gateway-outage" else []
        signal_all(stalled, signal.SIGSTOP)
        try:
            with PssSampler(server.pids) as pss:
                result = wrk_result(load, options.duration + 60)
                ping_result = wrk_result(ping, options.duration + 60)
        finally:
            signal_all(stalled, signal.SIGCONT)
        load_end = time.monotonic()

        busy1, _ = machine_cpu()
        everyone1 = all_cpu()
        ours = {os.getpid(), load.process.pid, ping.process.pid}
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_pids2, sink_pids2 = server.pids(), sink.child.pids()
        server_cpu = cpu_seconds(server_pids2) - server_cpu0
        sink_cpu = 0.0 if own_sink else cpu_seconds(sink_pids2) - sink_cpu0
        loadgen_cpu = (children1.ru_utime + children1.ru_stime) - (
            children0.ru_utime + children0.ru_stime
        )
        ours.update(server_pids + server_pids2 + sink_pids + sink_pids2)
        rss = peak_rss_mb(server_pids2)
        sink_rss = peak_rss_mb(sink_pids2)
        sink_at_end = sink.stats()

        statuses = result["statuses"]
        ok = statuses.get("204", 0)
        duration = result["duration_us"] / 1e6
        acked_lines = ok * lines_per_request
        out: dict[str, Any] = {
            "case": case,
            "target": target.name,
            "encoding": encoding,
            "duration_s": round(duration, 3),
            "requests": result["requests"],
            "statuses": statuses,
            "non_204": sum(n for code, n in statuses.items() if code != "204"),
            "socket_errors": result["errors"],
            "acked_requests": ok,
            "acked_lines": acked_lines,
            "lines_per_s": round(acked_lines / duration),
            "wire_mb_per_s": round(
                ok * request_bytes(options, payload, encoding) / duration / 1e6, 1
            ),
            "latency_ms": latency_ms(result),
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_us_per_line": round(server_cpu / acked_lines * 1e6, 3)
            if acked_lines
            else None,
            "sink_cpu_s": round(sink_cpu, 2),
            "loadgen_cpu_s": round(loadgen_cpu, 2),
            "machine_busy_s": round(busy1 - busy0, 2),
            "machine_capacity_s": round((load_end - started) * (os.cpu_count() or 1), 2),
            "peak_rss_mb": round(rss, 1),
            "peak_pss_mb": round(pss.peak_mb, 1),
            "sink_peak_rss_mb": round(sink_rss, 1),
            "delivered_lines_during_load": sink_at_end["lines"],
            "ping": {
                "url": target.ping_url,
                "requests": ping_result["requests"],
                "statuses": ping_result["statuses"],
                "socket_errors": ping_result["errors"],
                "latency_ms": latency_ms(ping_result),
            },
            "notes": target.notes,
            "copies": target.copies,
        }
        out["busiest_others"] = busiest_others(everyone0, everyone1, ours)
        out["foreign_cpu_s"] = round(foreign_cpu(everyone0, everyone1, ours), 2)
        out["other_cpu_s"] = round(out["machine_busy_s"] - server_cpu - sink_cpu - loadgen_cpu, 2)

        if options.half_load and ok and not stalled:
            out["half_load"] = half_load(options, target, payload, encoding, root, out)
            load_end = time.monotonic()
        if target.kind == "gateway":
            before_drain = cpu_seconds(server.pids())
            out["gateway"] = drain_gateway(options, target, sink, load_end)
            drained_cpu = cpu_seconds(server.pids()) - before_drain
            out["gateway"]["cpu_s_after_load"] = round(drained_cpu, 2)
        else:
            settle_sink(sink, acked_lines + out.get("half_load", {}).get("acked_lines", 0))
        out["sink"] = sink.stats()
        out["delivery"] = verify(options, out)
        out["server_exit"] = None if own_sink else target.server.stop()
        return out
    except BenchError as e:
        raise BenchError(f"{case} ({encoding}): {e}") from None
    finally:
        if target is not None and target.server is not sink.child:
            target.server.stop()
        sink.child.stop()


def signal_all(pids: list[int], signum: int) -> None:
    """Send a signal to each of these processes (those already gone are skipped)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


HALF_LOAD_CALIBRATION_S = 2.0


def half_load(
    options: Options,
    target: Target,
    payload: Path,
    encoding: str,
    root: Path,
    peak: dict[str, Any],
) -> dict[str, Any]:
    """Latency at about half the peak rate just measured (SPEC 9: p99 at half load).

    wrk is closed-loop, so the rate is set by a pause between requests on each connection:
    a connection's cycle at peak was connections / peak rate; at half rate it is twice that,
    of which the request itself takes its latency at that lower load. A short calibration run
    measures that latency, then the measured phase runs for half the case duration.
    """
    peak_rps = peak["acked_requests"] / peak["duration_s"]
    half_cycle_ms = 2 * 1000 * options.connections / peak_rps
    args = write_args(options, target, payload, encoding)
    delay_ms = max(1, round(half_cycle_ms / 2))  # first guess: the latency stays as at peak
    phases = []
    # Each wrk run numbers its threads from its own tid_base, so unique batch ids stay unique:
    # the full-load run had 0..threads-1 (threads <= 8: at most 24 of the sink's 32 slots).
    calibrate, half = options.threads, 2 * options.threads
    phase_runs = (
        ("calibrate", HALF_LOAD_CALIBRATION_S, calibrate),
        ("half", options.duration / 2, half),
    )
    for phase, seconds, tid_base in phase_runs:
        run = start_wrk(
            replace(options, duration=seconds),
            target.write_url,
            [*args, f"interval_ms={delay_ms}", f"tid_base={tid_base}"],
            root / f"wrk-half-{phase}.log",
            threads=options.threads,
            connections=options.connections,
        )
        result = wrk_result(run, seconds + 60)
        phases.append((delay_ms, result))
        latency = latency_ms(result)["p50"]
        delay_ms = max(1, round(half_cycle_ms - latency))
    delay_ms, result = phases[-1]
    ok = result["statuses"].get("204", 0)
    duration = result["duration_us"] / 1e6
    lines = int(json.loads((payload / "meta.json").read_text())["lines"])
    acked_requests = sum(r["statuses"].get("204", 0) for _, r in phases)
    return {
        "interval_ms": delay_ms,
        "lines_per_s": round(ok * lines / duration),
        "fraction_of_peak": round(ok / duration / peak_rps, 2),
        "latency_ms": latency_ms(result),
        "non_204": sum(r["requests"] - r["statuses"].get("204", 0) for _, r in phases),
        "acked_requests": acked_requests,  # both phases: the sink must have these too
        "acked_lines": acked_requests * lines,
    }


def request_bytes(options: Options, payload: Path, encoding: str) -> int:
    """The size of one request body on the wire."""
    gz = ".gz" if encoding == "gzip" else ""
    if options.unique_ids:
        return (payload / f"body.lp{gz}").stat().st_size + 40
    return (payload / f"batch.lp{gz}").stat().st_size


def verify(options: Options, case: dict[str, Any]) -> dict[str, Any]:
    """Did the sink receive every acknowledged line (and, for the gateway, every accepted one)?"""
    sink = case["sink"]
    copies = case.get("copies", 1)
    acked = (case["acked_lines"] + case.get("half_load", {}).get("acked_lines", 0)) * copies
    got = int(sink["lines"])
    problems = []
    if not acked:
        problems.append("no request was answered 204")
    if got < acked:
        problems.append(f"sink has {got} lines, {acked} were acknowledged: {acked - got} lost")
    gateway = case.get("gateway")
    if gateway is not None:
        if got < gateway["accepted_lines"] * copies:
            problems.append(
                f"the gateway accepted {gateway['accepted_lines']} lines for {copies} upstream(s), "
                f"the sink has {got}"
            )
        if gateway["pending_records"]:
            problems.append(f"{gateway['pending_records']} records still pending in the buffer")
        if gateway["deadletter_lines"]:
            problems.append(f"{gateway['deadletter_lines']} lines dead-lettered")
    if options.unique_ids:
        acked_batches = case["acked_requests"] + case.get("half_load", {}).get("acked_requests", 0)
        if sink["distinct_markers"] < acked_batches:
            problems.append(
                f"{sink['distinct_markers']} distinct batch ids at the sink, "
                f"{acked_batches} batches acknowledged"
            )
        if sink["markers_unkeyed"]:
            problems.append(f"{sink['markers_unkeyed']} batch ids unreadable at the sink")
    detail = {
        "status": "FAIL" if problems else "PASS",
        "problems": problems,
        "sink_lines": got,
        "acked_lines": acked,
        "extra_lines": got - acked,
    }
    if options.unique_ids:
        detail["duplicate_batches"] = int(sink["duplicate_markers"])
    return detail
