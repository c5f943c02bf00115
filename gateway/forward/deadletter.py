"""Dead letters: writes an upstream refused for good, kept with the upstream's reason.

One JSON-lines file per upstream, `<dir>/<upstream>.jsonl`, appended and fsynced before the
forwarder's cursor passes the refused lines, so nothing is lost between the log and this file.
`influx-gateway deadletter replay` moves entries to `<upstream>.replay.jsonl`; the running
gateway (or the next one to start) sends that file to the upstream again and deletes it.
`purge` deletes entries. Files are small and rare, so they are rewritten whole when edited.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from gateway.buffer.segmentfile import fsync_directory, storage_error, write_atomic
from gateway.errors import StorageError
from gateway.forward.decide import UpstreamDecision, UpstreamResponse

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
DEAD_SUFFIX = ".jsonl"
REPLAY_SUFFIX = ".replay.jsonl"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused batch (or the refused lines of a partial write)."""

    time: str  # RFC3339, when it was dead-lettered
    upstream: str
    database: str
    precision: str
    status: int | None
    reason: str
    message: str  # the upstream's own words
    lines: int
    data: str  # the refused line protocol, newline-terminated lines


def refused(
    upstream: str,
    database: str,
    precision: str,
    response: UpstreamResponse,
    decision: UpstreamDecision,
    data: bytes,
    lines: int,
) -> DeadLetter:
    """The dead letter for lines an upstream refused, stamped now."""
    return DeadLetter(
        time=datetime.now(tz=UTC).isoformat().replace("+00:00", "Z"),
        upstream=upstream,
        database=database,
        precision=precision,
        status=response.status,
        reason=decision.reason,
        message=decision.message,
        lines=lines,
        data=data.decode("utf-8", "replace"),
    )


def _name(upstream: str) -> str:
    return _SAFE.sub("_", upstream)


def dead_path(directory: Path, upstream: str) -> Path:
    """The dead-letter file of an upstream."""
    return directory / f"{_name(upstream)}{DEAD_SUFFIX}"


def replay_path(directory: Path, upstream: str) -> Path:
    """The replay spool of an upstream."""
    return directory / f"{_name(upstream)}{REPLAY_SUFFIX}"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise editors of the dead-letter directory (gateway and CLI)."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append(directory: Path, letter: DeadLetter) -> None:
    """Append one dead letter durably."""
    try:
        with _locked(directory):
            path = dead_path(directory, letter.upstream)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, orjson.dumps(asdict(letter)) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:
        raise storage_error(e, f"cannot write a dead letter in {directory}") from e


def read(path: Path) -> list[DeadLetter]:
    """Every entry of a dead-letter or replay file ([] when missing); torn last lines skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise storage_error(e, f"cannot read {path}") from e
    letters = []
    for line in raw.splitlines():
        try:
            letters.append(DeadLetter(**orjson.loads(line)))
        except (ValueError, TypeError):
            continue  # a line torn by a crash mid-append
    return letters


def list_letters(directory: Path, upstream: str | None = None) -> list[DeadLetter]:
    """Dead letters of one upstream, or of all."""
    if upstream is not None:
        return read(dead_path(directory, upstream))
    letters: list[DeadLetter] = []
    if directory.is_dir():
        for path in sorted(directory.glob(f"*{DEAD_SUFFIX}")):
            if not path.name.endswith(REPLAY_SUFFIX):
                letters.extend(read(path))
    return letters


def _upstreams(directory: Path, upstream: str | None) -> list[str]:
    if upstream is not None:
        return [upstream]
    return sorted({letter.upstream for letter in list_letters(directory)})


def purge(directory: Path, upstream: str | None = None) -> int:
    """Delete the dead letters of one upstream (or all); returns how many were deleted."""
    count = 0
    try:
        with _locked(directory):
            for name in _upstreams(directory, upstream):
                path = dead_path(directory, name)
                count += len(read(path))
                path.unlink(missing_ok=True)
            fsync_directory(directory)
    except OSError as e:
        raise storage_error(e, f"cannot purge dead letters in {directory}") from e
    return count


def queue_replay(directory: Path, upstream: str | None = None) -> int:
    """Move dead letters to the replay spool of their upstream; returns how many."""
    count = 0
    try:
        with _locked(directory):
            for name in _upstreams(directory, upstream):
                letters = read(dead_path(directory, name))
                if not letters:
                    continue
                spool = replay_path(directory, name)
                queued = read(spool) + letters
                write_atomic(spool, b"".join(orjson.dumps(asdict(x)) + b"\n" for x in queued))
                dead_path(directory, name).unlink()
                count += len(letters)
            fsync_directory(directory)
    except OSError as e:
        raise storage_error(e, f"cannot queue dead letters for replay in {directory}") from e
    return count


def take_replay(directory: Path, upstream: str) -> list[DeadLetter]:
    """The replay spool of an upstream (left in place until `finish_replay`)."""
    if not directory.is_dir():
        return []
    try:
        with _locked(directory):
            return read(replay_path(directory, upstream))
    except OSError as e:
        raise StorageError(f"cannot read the replay spool in {directory}: {e}") from e


def finish_replay(directory: Path, upstream: str, count: int) -> None:
    """Remove the first `count` entries of the replay spool (they were sent or re-dead-lettered)."""
    try:
        with _locked(directory):
            spool = replay_path(directory, upstream)
            rest = read(spool)[count:]
            if rest:
                write_atomic(spool, b"".join(orjson.dumps(asdict(x)) + b"\n" for x in rest))
            else:
                spool.unlink(missing_ok=True)
            fsync_directory(directory)
    except OSError as e:
        raise storage_error(e, f"cannot update the replay spool in {directory}") from e
