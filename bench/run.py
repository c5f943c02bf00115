#!/usr/bin/env python3
"""The influx-gateway benchmark: the sink alone, nginx and influx-gateway (and peers), side by side.

In ONE run, on the same payload and the same connection counts, for plain and gzip bodies:

    sink      wrk -> bench/sink.py                        what this machine can move at all
    nginx     wrk -> nginx (reverse proxy) -> sink         the pass-through ceiling
    gateway   wrk -> influx-gateway (fsync always) -> sink  the product
    peer      wrk -> any --peer command -> sink            optional

Each case starts a fresh sink and a fresh server, drives it with wrk for --duration seconds
(a second wrk asks the server's health path every 10 ms on one connection, to see whether it
still answers while saturated), and reports: lines/s acknowledged (204 responses x lines per
request / duration), p50/p99 latency, every non-204 status, CPU seconds and peak RSS of the
server's process tree, /ping p50/p99, and whether the sink received every acknowledged line
(for the gateway after its buffer drained).

    python bench/run.py                       # 10 s per case, 4 connections, plain and gzip
    python bench/run.py --quick               # 2 s per case, 2 connections, plain only
    python bench/run.py --peer 'relay=influxdb-relay -config {tmp}/relay.toml' ...

Needs wrk and nginx (Debian packages; .ci/run installs them) and the project installed in
.venv (or --python). Exit status: 0 when every delivery check passed, 1 when one failed, 2 when
the benchmark could not run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py`

from bench.cases import CASES, Options, run_case
from bench.payload import write_payload
from bench.procs import BenchError, machine_cpu
from bench.report import markdown
from bench.targets import REPO, PeerSpec, find_nginx

SETUP_HINT = "run .ci/run (it installs Debian's wrk and nginx) or apt-get install wrk nginx"


def wait_for_idle(timeout: float, busy_cores: float = 0.25) -> float:
    """Wait (up to `timeout` s) until the machine used < `busy_cores` over 2 s; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before, _ = machine_cpu()
        time.sleep(2.0)
        after, _ = machine_cpu()
        if (after - before) / 2.0 < busy_cores:
            break
    return time.monotonic() - started if timeout > 0 else 0.0


def environment(options: Options, payload_meta: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """What the numbers were measured on."""

    def first_line(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, timeout=10)
        except OSError:
            return "?"
        text = (done.stdout or done.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else "?"

    cpu_model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    commit = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    # Read-only questions to git: changed tracked files, untracked files, under gateway/.
    git = ["git", "--no-optional-locks", "-C", str(REPO)]
    changed = subprocess.run(
        [*git, "diff", "--no-ext-diff", "--quiet", "HEAD", "--", "gateway"], capture_output=True
    )
    untracked = subprocess.run(
        [*git, "ls-files", "--others", "--exclude-standard", "gateway"], capture_output=True
    )
    dirty = changed.returncode == 1 or bool(untracked.stdout.strip())
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": first_line([options.python, "--version"]),
        "gateway_version": first_line([options.python, "-m", "gateway", "--version"]),
        "commit": commit,
        "gateway_dirty": dirty,
        "wrk": first_line([options.wrk, "-v"]),
        "nginx": first_line([options.nginx, "-v"]) if options.nginx else None,
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "data_dir_fs": filesystem_type(data_dir),
        "payload": payload_meta,
    }


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (a tmpfs would make fsync free)."""
    best, kind = "", "?"
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mount = parts[1]
        if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
            best
        ):
            best, kind = mount, parts[2]
    return kind


def parse_options(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="influx-gateway vs nginx vs the sink (and peers), in one run.",
        epilog="See bench/README.md.",
    )
    parser.add_argument("--duration", type=float, help="seconds per case (default 10)")
    parser.add_argument("--connections", type=int, help="wrk connections (default 4)")
    parser.add_argument("--threads", type=int, help="wrk threads (default: min(2, connections))")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--plain", dest="encodings", action="store_const", const=("plain",))
    group.add_argument("--gzip", dest="encodings", action="store_const", const=("gzip",))
    group.add_argument(
        "--both", dest="encodings", action="store_const", const=("plain", "gzip"), help="default"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 s per case, 2 connections, plain only (CI smoke)"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated, of sink,nginx,gateway,gateway-fanout,gateway-outage (default: the "
        "first four; with --quick sink,nginx,gateway; peers are added). gateway-outage: the "
        "upstream stalls for the whole load (the sink is stopped with SIGSTOP), then resumes",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=CMD",
        help="a peer server command; {port} {sink_url} {sink_port} {tmp} {database} are filled in",
    )
    parser.add_argument(
        "--peer-url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="the peer's write URL template (default http://127.0.0.1:{port}/api/v2/write?bucket=bench)",
    )
    parser.add_argument(
        "--peer-ping",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="the peer's health URL template (default http://127.0.0.1:{port}/ping)",
    )
    parser.add_argument(
        "--unique-ids",
        action="store_true",
        help="a unique batch id per request, so the sink tells duplicates from loss "
        "(costs the load generator a 1.5 MB copy per request: use for correctness, not speed)",
    )
    parser.add_argument(
        "--upstream-gzip",
        action="store_true",
        help="the gateway gzips what it forwards (its default; off here: loopback, like nginx)",
    )
    parser.add_argument("--gateway-workers", type=int, help="pass --workers N to the gateway")
    parser.add_argument(
        "--gateway-fsync",
        choices=["always", "interval", "never"],
        default="always",
        help='the gateway\'s buffer.fsync (default "always", the product default)',
    )
    parser.add_argument(
        "--gateway-validation-nice",
        type=int,
        metavar="N",
        help="the gateway's server.validation_nice (default: the product's, 0)",
    )
    parser.add_argument(
        "--half-load",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after each case, a latency run at half of its peak rate (default: on, off with "
        "--quick)",
    )
    parser.add_argument("--sink-workers", type=int, default=1, help="sink processes (default 1)")
    parser.add_argument("--nginx-workers", default="auto", help="worker_processes (default auto)")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run every case N times, interleaved; the table shows each case's best run",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each case, wait up to this long for the machine to be idle (shared hosts)",
    )
    parser.add_argument("--python", help="the interpreter with the project installed (.venv)")
    parser.add_argument("--tmp-dir", help="where the temp dir goes (default: the system's)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep configs, data and logs")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    quick = args.quick
    duration = args.duration if args.duration is not None else (2.0 if quick else 10.0)
    connections = args.connections if args.connections is not None else (2 if quick else 4)
    threads = args.threads if args.threads is not None else min(2, connections)
    if connections < 1 or not 1 <= threads <= 8 or connections % threads:
        parser.error("--threads must be 1..8 and divide --connections")
    encodings = args.encodings or (("plain",) if quick else ("plain", "gzip"))

    default_cases = "sink,nginx,gateway" if quick else "sink,nginx,gateway,gateway-fanout"
    cases = [c.strip() for c in (args.cases or default_cases).split(",") if c.strip()]
    for case in cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}: use {', '.join(CASES)} (and --peer)")
    peers = []
    urls = dict(x.split("=", 1) for x in args.peer_url)
    pings = dict(x.split("=", 1) for x in args.peer_ping)
    for spec in args.peer:
        name, sep, command = spec.partition("=")
        if not sep or not name or not command:
            parser.error(f"--peer wants NAME=CMD, got {spec!r}")
        peer = PeerSpec(name, command)
        if name in urls:
            peer = PeerSpec(name, command, url=urls[name], ping=peer.ping)
        if name in pings:
            peer = PeerSpec(peer.name, command, url=peer.url, ping=pings[name])
        peers.append(peer)
        cases.append(f"peer:{name}")

    python = args.python
    if python is None:
        venv = REPO / ".venv" / "bin" / "python"
        python = str(venv) if venv.exists() else sys.executable
    wrk = shutil.which("wrk")
    nginx = find_nginx()
    missing = []
    if wrk is None:
        missing.append("wrk")
    if "nginx" in cases and nginx is None:
        missing.append("nginx")
    if missing:
        raise BenchError(f"{' and '.join(missing)} not found: {SETUP_HINT}")
    probe = subprocess.run([python, "-c", "import gateway, aiohttp"], capture_output=True)
    if any(c.startswith("gateway") for c in cases) and probe.returncode != 0:
        raise BenchError(
            f"{python} cannot import the gateway: install the project "
            "(python3 -m venv .venv && .venv/bin/pip install -e .) or pass --python"
        )
    options = Options(
        duration=duration,
        connections=connections,
        threads=threads,
        encodings=tuple(encodings),
        cases=tuple(cases),
        peers=tuple(peers),
        unique_ids=args.unique_ids,
        upstream_gzip=args.upstream_gzip,
        gateway_workers=args.gateway_workers,
        gateway_fsync=args.gateway_fsync,
        gateway_validation_nice=args.gateway_validation_nice,
        sink_workers=args.sink_workers,
        nginx_workers=args.nginx_workers,
        drain_timeout=args.drain_timeout,
        wait_idle=args.wait_idle,
        repeat=args.repeat,
        python=python,
        wrk=wrk or "wrk",
        nginx=nginx,
        half_load=args.half_load if args.half_load is not None else not quick,
    )
    return options, args


def main(argv: list[str] | None = None) -> int:
    """Run every case, print the Markdown report; 0 all delivered, 1 a check failed, 2 error."""
    try:
        options, args = parse_options(argv)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    tmp_root = Path(tempfile.mkdtemp(prefix="igw-bench-", dir=args.tmp_dir))
    failed = True
    try:
        payload_meta = write_payload(tmp_root / "payload")
        env = environment(options, payload_meta, tmp_root)
        results = []
        for encoding in options.encodings:
            for repeat in range(options.repeat):
                for case in options.cases:
                    waited = wait_for_idle(options.wait_idle)
                    note = f", waited {waited:.0f} s for an idle machine" if waited >= 3 else ""
                    print(
                        f"bench: {case} ({encoding}, run {repeat + 1}/{options.repeat}{note})",
                        file=sys.stderr,
                        flush=True,
                    )
                    case_root = tmp_root / f"{encoding}-{case.replace(':', '-')}-{repeat + 1}"
                    result = run_case(
                        options, case, encoding, tmp_root / "payload", case_root, tmp_root
                    )
                    result["run"] = repeat + 1
                    result["waited_for_idle_s"] = round(waited, 1)
                    results.append(result)
        command = " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])])
        report = {
            "command": command,
            "options": {k: v for k, v in vars(options).items() if k not in ("peers",)}
            | {"peers": [vars(p) for p in options.peers]},
            "environment": env,
            "results": results,
        }
        print(markdown(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        failed = any(r["delivery"]["status"] != "PASS" for r in results)
        return 1 if failed else 0
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    finally:
        if args.keep_tmp or failed:
            print(f"bench: configs, data and logs kept in {tmp_root}", file=sys.stderr)
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
