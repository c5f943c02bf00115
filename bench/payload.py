"""Telegraf-like line protocol batches for the benchmark, written as plain and gzip files.

A batch is what Telegraf's `outputs.influxdb_v2` sends from a fleet: for each host and
collection interval the `cpu` (one line per core plus cpu-total), `mem`, `disk` (per mount),
`diskio` (per device), `net` (per interface) and `system` inputs, with their real tag sets and
a mix of field types (float, int `i`, uint `u`, string, bool), nanosecond timestamps in the
last few minutes. Generation is deterministic for a given seed and `now`.

The first line of every batch is a *marker* line, `bench_batch id=<n>i <ts>`, so that the sink
can tell duplicates from loss: the load driver (bench/lua/write.lua) replaces it with a unique
id per request. Files written into OUT_DIR:

    batch.lp        the whole batch (marker id 0), plain
    batch.lp.gz     the same, gzip
    body.lp         the batch without its marker line (what write.lua appends to the marker)
    body.lp.gz      the same, gzip (write.lua prepends a stored gzip member with the marker)
    meta.json       lines per batch, sizes, the generation time

    python bench/payload.py OUT_DIR [--lines 5000] [--seed 1] [--level 6]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

MARKER_MEASUREMENT = b"bench_batch"
INTERVAL_NS = 10 * 10**9

_DISKS = [("/", "vda1", "ext4"), ("/boot", "vda15", "vfat"), ("/var/lib/docker", "vdb", "xfs")]
_DISKIO = ["vda", "vda1", "vda15", "vdb"]
_IFACES = ["eth0", "eth1", "docker0"]
_CPU_FIELDS = (
    "usage_guest", "usage_guest_nice", "usage_idle", "usage_iowait", "usage_irq",
    "usage_nice", "usage_softirq", "usage_steal", "usage_system", "usage_user",
)  # fmt: skip


def _f(rng: random.Random, lo: float, hi: float) -> str:
    """A float field value as Telegraf prints it (shortest repr, no suffix)."""
    return repr(rng.uniform(lo, hi))


def _host_lines(rng: random.Random, host: str, cpus: int, ts: int) -> Iterator[str]:
    """One collection interval of one host: cpu, mem, disk, diskio, net, system."""
    common = f"host={host}"
    for n in [*range(cpus), None]:
        cpu = "cpu-total" if n is None else f"cpu{n}"
        values = [rng.uniform(0, 4) for _ in _CPU_FIELDS]
        values[2] = 100 - sum(values) + values[2]  # usage_idle takes the rest
        fields = ",".join(f"{k}={v!r}" for k, v in zip(_CPU_FIELDS, values, strict=True))
        yield f"cpu,cpu={cpu},{common} {fields} {ts + rng.randrange(1000, 9000_000)}"
    total = 16 * 2**30
    used = rng.randrange(2 * 2**30, 12 * 2**30)
    yield (
        f"mem,{common} active={rng.randrange(2**30, 8 * 2**30)}i,available={total - used}i,"
        f"available_percent={100 * (total - used) / total!r},buffered={rng.randrange(2**27)}i,"
        f"cached={rng.randrange(2**32)}i,commit_limit={total // 2}i,"
        f"committed_as={rng.randrange(2**33)}i,dirty={rng.randrange(2**20)}i,free="
        f"{rng.randrange(2**30)}i,huge_pages_total=0i,inactive={rng.randrange(2**32)}i,"
        f"slab={rng.randrange(2**29)}i,swap_cached=0i,swap_free=0i,swap_total=0i,"
        f"total={total}i,used={used}i,used_percent={100 * used / total!r},"
        f"write_back=0i,swap_enabled=false {ts + rng.randrange(1000, 9000_000)}"
    )
    for path, device, fstype in _DISKS:
        size = 2**30 * rng.choice([1, 100, 500])
        used = rng.randrange(size // 10, size)
        yield (
            f"disk,device={device},fstype={fstype},{common},mode=rw,path={path} "
            f"free={size - used}u,inodes_free={rng.randrange(10**6, 10**7)}u,"
            f"inodes_total=16777216u,inodes_used={rng.randrange(10**5, 10**6)}u,"
            f"readonly=false,total={size}u,used={used}u,used_percent={100 * used / size!r} "
            f"{ts + rng.randrange(1000, 9000_000)}"
        )
    for device in _DISKIO:
        yield (
            f"diskio,{common},name={device} io_time={rng.randrange(10**9)}i,"
            f"iops_in_progress={rng.randrange(8)}i,merged_reads={rng.randrange(10**6)}i,"
            f"merged_writes={rng.randrange(10**7)}i,read_bytes={rng.randrange(10**12)}i,"
            f"read_time={rng.randrange(10**8)}i,reads={rng.randrange(10**8)}i,"
            f"weighted_io_time={rng.randrange(10**9)}i,write_bytes={rng.randrange(10**12)}i,"
            f"write_time={rng.randrange(10**9)}i,writes={rng.randrange(10**9)}i "
            f"{ts + rng.randrange(1000, 9000_000)}"
        )
    for iface in _IFACES:
        yield (
            f"net,{common},interface={iface} bytes_recv={rng.randrange(10**13)}u,"
            f"bytes_sent={rng.randrange(10**13)}u,drop_in={rng.randrange(100)}u,"
            f"drop_out=0u,err_in=0u,err_out=0u,packets_recv={rng.randrange(10**10)}u,"
            f"packets_sent={rng.randrange(10**10)}u,up=true,speed=10000i "
            f"{ts + rng.randrange(1000, 9000_000)}"
        )
    uptime = rng.randrange(10**5, 10**7)
    days, rest = divmod(uptime, 86400)
    t = ts + rng.randrange(1000, 9000_000)
    yield (
        f"system,{common} load1={_f(rng, 0, 4)},load15={_f(rng, 0, 4)},load5={_f(rng, 0, 4)},"
        f"n_cpus={cpus}i,n_unique_users={rng.randrange(5)}i,n_users={rng.randrange(9)}i {t}"
    )
    yield f"system,{common} uptime={uptime}u {t}"
    yield (
        f'system,{common} uptime_format="{days} days, {rest // 3600:2d}:{rest % 3600 // 60:02d}"'
        f" {t}"
    )


def marker_line(batch_id: int, ts: int) -> bytes:
    """The first line of a batch: a unique id the sink counts to tell duplicates from loss."""
    return b"%s id=%di %d\n" % (MARKER_MEASUREMENT, batch_id, ts)


def stored_gzip_member(data: bytes) -> bytes:
    """`data` as one gzip member with a single stored (uncompressed) deflate block.

    The Python twin of `gzip_stored` in bench/lua/wrk.lua, which puts each request's marker
    line in front of the compressed batch this way (data must be shorter than 64 KiB).
    """
    n = len(data)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    block = b"\x01" + n.to_bytes(2, "little") + (n ^ 0xFFFF).to_bytes(2, "little")
    return header + block + data + zlib.crc32(data).to_bytes(4, "little") + n.to_bytes(4, "little")


def batch_body(lines: int = 5000, *, seed: int = 1, now_ns: int | None = None) -> bytes:
    """`lines - 1` Telegraf-like lines (the batch without its marker line), newline-terminated."""
    rng = random.Random(seed)
    now = time.time_ns() if now_ns is None else now_ns
    hosts = [(f"web-{i:03d}.prod.example.com", rng.choice([2, 4, 8, 16])) for i in range(500)]
    wanted = lines - 1
    out: list[str] = []
    # Walk back from now one interval at a time, all hosts per interval, until the batch is full.
    start = now - now % INTERVAL_NS - 60 * INTERVAL_NS
    interval = 0
    while len(out) < wanted:
        ts = start + interval * INTERVAL_NS
        for host, cpus in hosts:
            out.extend(_host_lines(rng, host, cpus, ts))
            if len(out) >= wanted:
                break
        interval += 1
    return ("\n".join(out[:wanted]) + "\n").encode()


def write_payload(
    out_dir: Path, lines: int = 5000, *, seed: int = 1, level: int = 6, now_ns: int | None = None
) -> dict[str, object]:
    """Write batch.lp[.gz], body.lp[.gz] and meta.json into out_dir; return the metadata."""
    now = time.time_ns() if now_ns is None else now_ns
    body = batch_body(lines, seed=seed, now_ns=now)
    batch = marker_line(0, now - 120 * 10**9) + body
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "batch.lp": batch,
        "batch.lp.gz": gzip.compress(batch, level, mtime=0),
        "body.lp": body,
        "body.lp.gz": gzip.compress(body, level, mtime=0),
    }
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    meta: dict[str, object] = {
        "lines": lines,
        "seed": seed,
        "gzip_level": level,
        "generated_ns": now,
        "marker_ts": now - 120 * 10**9,
        "bytes": {name: len(data) for name, data in files.items()},
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> None:
    """Command line: write the payload files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--lines", type=int, default=5000, help="lines per batch (default 5000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--level", type=int, default=6, help="gzip level (Telegraf uses 6)")
    args = parser.parse_args()
    meta = write_payload(args.out_dir, args.lines, seed=args.seed, level=args.level)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
