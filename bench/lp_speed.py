"""Line protocol validator speed, lines/s, for each implementation (C accelerator, pure Python).

Self-contained: it makes its own Telegraf-like 5,000-line batches (cpu, mem, disk, diskio, net,
system; float, integer, unsigned, string and boolean fields; ns timestamps in the last minutes)
and calls `gateway.lineprotocol.validate` on them repeatedly, reporting the best of several
rounds. Besides the plain batch, variants exercise the other common shapes: seconds precision,
lines without timestamps (stamped), CRLF line ends, and one bad line per 1,000.

    .venv/bin/python bench/lp_speed.py [--lines 5000] [--seconds 1.0] [--rounds 5]
                                       [--implementation c|python ...] [--variant NAME ...]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterator

from gateway.lineprotocol import Precision, implementation, validate
from gateway.lineprotocol.implementation import Implementation

NOW = time.time_ns()
INTERVAL_NS = 10 * 10**9
_CPU_FIELDS = (
    "usage_guest", "usage_guest_nice", "usage_idle", "usage_iowait", "usage_irq",
    "usage_nice", "usage_softirq", "usage_steal", "usage_system", "usage_user",
)  # fmt: skip


def _host_lines(rng: random.Random, host: str, cpus: int, ts: int) -> Iterator[str]:
    """One collection interval of one host, as Telegraf's inputs print it."""
    tag = f"host={host}"
    for n in [*range(cpus), None]:
        cpu = "cpu-total" if n is None else f"cpu{n}"
        fields = ",".join(f"{key}={rng.uniform(0, 100)!r}" for key in _CPU_FIELDS)
        yield f"cpu,cpu={cpu},{tag} {fields} {ts + rng.randrange(10**6)}"
    used = rng.randrange(2 * 2**30, 12 * 2**30)
    yield (
        f"mem,{tag} active={rng.randrange(2**33)}i,available={16 * 2**30 - used}i,"
        f"available_percent={rng.uniform(0, 100)!r},buffered={rng.randrange(2**27)}i,"
        f"cached={rng.randrange(2**32)}i,free={rng.randrange(2**30)}i,swap_free=0i,"
        f"total={16 * 2**30}i,used={used}i,used_percent={rng.uniform(0, 100)!r} "
        f"{ts + rng.randrange(10**6)}"
    )
    for path, device, fstype in (("/", "vda1", "ext4"), ("/var/lib/docker", "vdb", "xfs")):
        yield (
            f"disk,device={device},fstype={fstype},{tag},mode=rw,path={path} "
            f"free={rng.randrange(2**40)}u,inodes_free={rng.randrange(10**7)}u,"
            f"inodes_total=16777216u,inodes_used={rng.randrange(10**6)}u,total={2**40}u,"
            f"used={rng.randrange(2**40)}u,used_percent={rng.uniform(0, 100)!r} "
            f"{ts + rng.randrange(10**6)}"
        )
    for device in ("vda", "vda1", "vdb"):
        yield (
            f"diskio,{tag},name={device} io_time={rng.randrange(10**9)}i,"
            f"iops_in_progress={rng.randrange(8)}i,read_bytes={rng.randrange(10**12)}i,"
            f"read_time={rng.randrange(10**8)}i,reads={rng.randrange(10**8)}i,"
            f"weighted_io_time={rng.randrange(10**9)}i,write_bytes={rng.randrange(10**12)}i,"
            f"write_time={rng.randrange(10**9)}i,writes={rng.randrange(10**9)}i "
            f"{ts + rng.randrange(10**6)}"
        )
    for interface in ("eth0", "docker0"):
        yield (
            f"net,{tag},interface={interface} bytes_recv={rng.randrange(10**13)}u,"
            f"bytes_sent={rng.randrange(10**13)}u,drop_in={rng.randrange(100)}u,drop_out=0u,"
            f"packets_recv={rng.randrange(10**10)}u,packets_sent={rng.randrange(10**10)}u,"
            f"up=true,speed=10000i {ts + rng.randrange(10**6)}"
        )
    uptime = rng.randrange(10**5, 10**7)
    days, rest = divmod(uptime, 86_400)
    yield (
        f"system,{tag} load1={rng.uniform(0, 4)!r},load15={rng.uniform(0, 4)!r},"
        f"load5={rng.uniform(0, 4)!r},n_cpus={cpus}i,n_users={rng.randrange(9)}i {ts}"
    )
    yield f"system,{tag} uptime={uptime}u {ts}"
    clock = f"{rest // 3600:2d}:{rest % 3600 // 60:02d}"
    yield f'system,{tag} uptime_format="{days} days, {clock}" {ts}'


def telegraf_lines(count: int, seed: int = 1) -> list[str]:
    """`count` Telegraf-like lines from a fleet of hosts, the newest a minute ago."""
    rng = random.Random(seed)
    hosts = [(f"web-{i:03d}.prod.example.com", rng.choice([2, 4, 8, 16])) for i in range(200)]
    start = NOW - NOW % INTERVAL_NS - 30 * INTERVAL_NS
    lines: list[str] = []
    interval = 0
    while len(lines) < count:
        for host, cpus in hosts:
            lines.extend(_host_lines(rng, host, cpus, start + interval * INTERVAL_NS))
        interval += 1
    return lines[:count]


def _seconds(line: str) -> str:
    series, stamp = line.rsplit(" ", 1)
    return f"{series} {int(stamp) // 10**9}"


def _break(line: str) -> str:
    """The line with its first field value made invalid (`f=x1.5`)."""
    series, fields = line.split(" ", 1)
    return f"{series} {fields.replace('=', '=x', 1)}"


def variants(count: int) -> dict[str, tuple[bytes, Precision]]:
    """Name -> (body, precision) of every benchmarked batch shape."""
    lines = telegraf_lines(count)
    bad = [line if i % 1000 != 500 else _break(line) for i, line in enumerate(lines)]
    return {
        "telegraf": ("\n".join(lines).encode() + b"\n", "ns"),
        "telegraf-s": ("\n".join(map(_seconds, lines)).encode() + b"\n", "s"),
        "no-timestamps": ("\n".join(line.rsplit(" ", 1)[0] for line in lines).encode(), "ns"),
        "crlf": ("\r\n".join(lines).encode() + b"\r\n", "ns"),
        "bad-1-per-1000": ("\n".join(bad).encode() + b"\n", "ns"),
    }


def lines_per_second(call: Callable[[], object], lines: int, seconds: float, rounds: int) -> float:
    """The best of `rounds` rounds of calling `call` for about `seconds` each."""
    call()  # warm up
    best = 0.0
    for _ in range(rounds):
        calls = 0
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < seconds:
            call()
            calls += 1
            elapsed = time.perf_counter() - start
        best = max(best, calls * lines / elapsed)
    return best


def main() -> None:
    """Command line: print a lines/s table, one row per variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5000, help="lines per batch (default 5000)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of a round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best one counts")
    parser.add_argument("--implementation", action="append", choices=("c", "python"))
    parser.add_argument("--variant", action="append")
    args = parser.parse_args()
    chosen: list[Implementation] = args.implementation or list(implementation.AVAILABLE)
    batches = variants(args.lines)
    names = args.variant or list(batches)
    print(f"{args.lines} lines/batch, best of {args.rounds} x {args.seconds}s, one core")
    print(f"{'variant':<16}" + "".join(f"{name + ' lines/s':>18}" for name in chosen) + "   ratio")
    for name in names:
        body, precision = batches[name]
        rates = []
        for which in chosen:
            result = validate(body, precision, now_ns=NOW, implementation=which)
            assert result.accepted == args.lines - result.rejected, (name, which, result.errors)

            def call(
                body: bytes = body, precision: Precision = precision, which: Implementation = which
            ) -> object:
                return validate(body, precision, now_ns=NOW, implementation=which)

            rates.append(lines_per_second(call, args.lines, args.seconds, args.rounds))
        ratio = f"{rates[0] / rates[-1]:8.1f}x" if len(rates) > 1 else ""
        print(f"{name:<16}" + "".join(f"{rate:>18,.0f}" for rate in rates) + ratio)


if __name__ == "__main__":
    main()
