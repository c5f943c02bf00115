"""The local store's directory layout: one directory per database, a name file, a writer lock.

    <store>/LOCK                      flock'ed by the one gateway that writes this store
    <store>/<quoted name>/database    the real database name (utf-8), written atomically
    <store>/<quoted name>/*.seg|.idx  that database's SegmentLog

Database names are 1-64 characters of A-Za-z0-9_-/; the directory name percent-encodes
everything else (so `telegraf/autogen` lives in `telegraf%2Fautogen`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path
from urllib.parse import quote

from gateway.buffer.segmentfile import fsync_directory, storage_error, write_atomic
from gateway.errors import StorageError

LOCK_FILE = "LOCK"
NAME_FILE = "database"
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_\-/]{1,64}")


def directory_name(database: str) -> str:
    """The directory name that holds `database`; ValueError for a name routing never allows."""
    if _DATABASE_NAME.fullmatch(database) is None:
        raise ValueError(f"invalid database name {database!r}")
    return quote(database, safe="")


def create_database_dir(store: Path, database: str) -> Path:
    """Create (or reuse) the directory of `database` with its name file, durably."""
    path = store / directory_name(database)
    try:
        path.mkdir(exist_ok=True)
        write_atomic(path / NAME_FILE, database.encode())
        fsync_directory(path)
        fsync_directory(store)
    except OSError as e:
        raise storage_error(e, f"cannot create the store directory for {database!r}") from e
    return path


def find_databases(store: Path) -> dict[str, Path]:
    """Database name -> directory for every database directory in the store."""
    found: dict[str, Path] = {}
    try:
        entries = sorted(store.iterdir())
    except FileNotFoundError:
        return found
    except OSError as e:
        raise storage_error(e, f"cannot list the store {store}") from e
    for entry in entries:
        try:
            name = (entry / NAME_FILE).read_text("utf-8")
        except (OSError, UnicodeDecodeError):  # not a database directory, or one never finished
            continue
        try:
            if directory_name(name) == entry.name:
                found[name] = entry
        except ValueError:
            continue
    return found


def lock_store(store: Path) -> int:
    """Take the store's exclusive writer lock; returns the descriptor that holds it."""
    path = store / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise storage_error(e, f"cannot open the store lock {path}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StorageError(
                f"the store in {store} is in use by another influx-gateway process "
                f"(lock {path} is held); stop it or use another data_dir"
            ) from None
        raise storage_error(e, f"cannot lock {path}") from e
    try:  # the holder's pid, for the operator who finds the lock taken
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return fd
