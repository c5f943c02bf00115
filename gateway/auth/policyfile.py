"""The token policy file on disk: load it, create the default one, add and remove tokens.

Reading uses tomllib and ``policyschema`` (every problem is a PolicyError naming the file, the
entry and the key). Editing keeps the operator's comments and other entries byte for byte: a new
entry is appended as text rendered by tomlkit, a removed entry's lines are cut out, and the result
is parsed again and compared with the intended policy before it replaces the file. Writes are
atomic (temp file in the same directory, fsync, rename, fsync directory), the file is mode 0600,
and concurrent editors are serialised by an exclusive flock on the directory.

OSError is translated into PolicyError here, so callers only catch our own types.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import tomlkit
from tomlkit.items import AoT

from gateway.auth.policy import Policy, TokenEntry, token_digest
from gateway.auth.policyschema import (
    check_entry,
    policy_from_document,
    quote,
)
from gateway.errors import PolicyError

POLICY_FILE_MODE = 0o600

# A [[tokens]] header line; anything this misses falls back to a structural tomlkit edit.
_TOKENS_HEADER = re.compile(r"""\s*\[\[\s*(?:tokens|"tokens"|'tokens')\s*\]\]\s*(?:#.*)?""")
_TRIVIA_LINE = re.compile(r"\s*(?:#.*)?")

_DEFAULT_POLICY = """\
# influx-gateway token policy.
#
# Each [[tokens]] entry is one token. Only the SHA-256 hash of a token is stored; the token
# itself is shown once, when it is created. Keys:
#   name        unique; appears in logs and metrics
#   hash        "sha256:<hex of sha256(token)>"
#   write/read  database glob patterns ("*" also matches "/")
#   expires     optional date-time, e.g. 2027-06-30T00:00:00Z
#   rate_limit  optional, lines per second
#
# Manage tokens with `influx-gateway token create|list|revoke`. The gateway reloads this file
# when it changes and on SIGHUP.

[[tokens]]
# Full access. Create narrower tokens with `influx-gateway token create`, then revoke this one.
name = "admin"
hash = "{hash}"
write = ["*"]
read = ["*"]
"""

_NEW_POLICY_HEADER = """\
# influx-gateway token policy: one [[tokens]] entry per token (name, hash = "sha256:<hex>",
# write/read database globs, optional expires and rate_limit). Only token hashes are stored.
# Manage it with `influx-gateway token create|list|revoke`.
"""


def generate_token() -> str:
    """A new token: ``igw_`` and 32 random bytes in unpadded url-safe base64."""
    return "igw_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def hash_token(token: str) -> str:
    """The ``hash`` value stored for ``token``: ``sha256:<hex>``."""
    return "sha256:" + token_digest(token).hex()


def load_policy(path: Path) -> Policy:
    """Read and check the policy file; PolicyError names the file, entry and key at fault."""
    return _parse(_read_text(path), str(path))


def read_policy_bytes(path: Path) -> bytes:
    """The policy file's raw bytes (for hot reload); PolicyError when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PolicyError("policy file does not exist", file=str(path)) from None
    except OSError as exc:
        raise PolicyError(f"cannot read policy file: {_reason(exc)}", file=str(path)) from None


def parse_policy(data: bytes, source: str) -> Policy:
    """Check the bytes of a policy file; PolicyError names ``source``, the entry and the key."""
    return _parse(_decode(data, source), source)


def policy_mtime(path: Path) -> float | None:
    """The file's modification time, or None when it does not exist (for hot reload)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PolicyError(f"cannot stat policy file: {_reason(exc)}", file=str(path)) from None


def atomic_write(
    path: Path,
    data: bytes,
    mode: int = POLICY_FILE_MODE,
    *,
    overwrite: bool = True,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace ``path`` with ``data`` all at once: temp file, fsync, rename, fsync directory.

    With ``overwrite=False`` an existing ``path`` is left alone and FileExistsError is raised
    (the temp file is linked into place, which fails instead of replacing). ``owner`` (uid, gid)
    is given to the new file when the process may do so.
    """
    directory = path.parent
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            if owner is not None and owner != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(file.fileno(), *owner)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            os.link(temp, path)
            temp.unlink()
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def create_default_policy(path: Path) -> str:
    """Create a policy file with one full-access ``admin`` token and return that token.

    Never overwrites: an existing file is a PolicyError and stays as it is.
    """
    token = generate_token()
    data = _DEFAULT_POLICY.format(hash=hash_token(token)).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, overwrite=False)
    except FileExistsError:
        raise PolicyError(
            "policy file already exists; not overwriting it", file=str(path)
        ) from None
    except OSError as exc:
        raise PolicyError(f"cannot create policy file: {_reason(exc)}", file=str(path)) from None
    return token


def add_token(
    path: Path,
    name: str,
    *,
    write: Sequence[str],
    read: Sequence[str],
    expires: datetime | None,
    rate_limit: int | None = None,
) -> str:
    """Add a token entry (creating the file if missing) and return the new token.

    A name already present is a PolicyError and the file is left unchanged. A naive ``expires``
    is taken as UTC, as in the file.
    """
    source = str(path)
    token = generate_token()
    hash_value = hash_token(token)
    values: dict[str, object] = {
        "name": name,
        "hash": hash_value,
        "write": write,  # checked below; a bare str is refused, not split into characters
        "read": read,
    }
    if expires is not None:
        values["expires"] = expires
    if rate_limit is not None:
        values["rate_limit"] = rate_limit
    entry = check_entry(values, "cannot add token", source)
    with _editing(path, create=True):
        text = _read_text(path, missing_ok=True)
        old = _parse(text, source)
        if any(existing.name == name for existing in old.tokens):
            raise PolicyError(f"a token named {quote(name)} already exists", file=source)
        new_text = _append_entry(text, _entry_values(entry, hash_value))
        _check_edit(new_text, (*old.tokens, entry), source)
        _replace(path, new_text)
    return token


def remove_token(path: Path, name: str) -> None:
    """Remove the entry named ``name``; PolicyError if there is none (file unchanged)."""
    source = str(path)
    with _editing(path, create=False):
        text = _read_text(path)
        old = _parse(text, source)
        index = next((i for i, entry in enumerate(old.tokens) if entry.name == name), None)
        if index is None:
            raise PolicyError(f"no token named {quote(name)}", file=source)
        new_text = _cut_entry(text, index, len(old.tokens))
        kept = old.tokens[:index] + old.tokens[index + 1 :]
        if not _same_tokens(new_text, kept):
            new_text = _cut_entry_structurally(text, index)
        _check_edit(new_text, kept, source)
        _replace(path, new_text)


def _parse(text: str, source: str) -> Policy:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"invalid TOML: {exc}", file=source) from None
    return policy_from_document(document, source)


def _read_text(path: Path, *, missing_ok: bool = False) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return ""
        raise PolicyError("policy file does not exist", file=str(path)) from None
    except OSError as exc:
        raise PolicyError(f"cannot read policy file: {_reason(exc)}", file=str(path)) from None
    return _decode(data, str(path))


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 text (byte {exc.start})", file=source) from None


def _entry_values(entry: TokenEntry, hash_value: str) -> dict[str, object]:
    """An entry as the key/values written to the file, optional keys only when set."""
    values: dict[str, object] = {
        "name": entry.name,
        "hash": hash_value,
        "write": list(entry.write),
        "read": list(entry.read),
    }
    if entry.expires is not None:
        values["expires"] = entry.expires
    if entry.rate_limit is not None:
        values["rate_limit"] = entry.rate_limit
    return values


def _append_entry(text: str, values: dict[str, object]) -> str:
    document = tomlkit.parse(text) if text else tomlkit.document()
    existing = document.get("tokens")
    if existing is not None and not isinstance(existing, AoT):
        # `tokens = [{...}, ...]` written inline: extend the array itself.
        inline = tomlkit.inline_table()
        inline.update(values)
        existing.append(inline)
        return document.as_string()
    table = tomlkit.table()
    table.update(values)
    tables = tomlkit.aot()
    tables.append(table)
    entry_document = tomlkit.document()
    entry_document.append("tokens", tables)
    newline = "\r\n" if "\r\n" in text else "\n"
    rendered = entry_document.as_string().replace("\n", newline)
    if not text:
        return _NEW_POLICY_HEADER.replace("\n", newline) + newline + rendered
    if not text.endswith("\n"):
        text += newline
    if text.strip() and not text.endswith(newline * 2):
        text += newline
    return text + rendered


def _cut_entry(text: str, index: int, count: int) -> str:
    """Cut entry ``index`` from its header to its last key; comments after it stay."""
    lines = text.split("\n")  # only "\n" ends a TOML line; str.splitlines knows more
    headers = [n for n, line in enumerate(lines) if _TOKENS_HEADER.fullmatch(line.rstrip("\r"))]
    if len(headers) != count:
        return text  # not plain [[tokens]] tables; the caller falls back
    start = headers[index]
    end = headers[index + 1] if index + 1 < count else len(lines)
    last_content = start
    for n in range(start + 1, end):
        if not _TRIVIA_LINE.fullmatch(lines[n].rstrip("\r")):
            last_content = n
    before, after = lines[:start], lines[last_content + 1 :]
    if before and after and not before[-1].strip() and not after[0].strip():
        # Leave one blank line where the entry was, not two. A lone "" in `after` is the
        # file's final newline, so drop from `before` then.
        if len(after) > 1:
            after = after[1:]
        else:
            before = before[:-1]
    return "\n".join(before + after)


def _cut_entry_structurally(text: str, index: int) -> str:
    document = tomlkit.parse(text)
    tokens = document["tokens"]
    del tokens[index]
    if not len(tokens):
        del document["tokens"]
    return document.as_string()


def _same_tokens(text: str, expected: tuple[TokenEntry, ...]) -> bool:
    try:
        return _parse(text, "").tokens == expected
    except PolicyError:
        return False


def _check_edit(new_text: str, expected: tuple[TokenEntry, ...], source: str) -> None:
    # Never write a file that does not say exactly what was intended.
    if not _same_tokens(new_text, expected):
        raise PolicyError(
            "could not edit the policy file safely; it was left unchanged", file=source
        )


def _replace(path: Path, text: str) -> None:
    try:
        # Keep the owner: `sudo influx-gateway token create` must not lock the gateway out.
        old = path.stat() if path.exists() else None
        owner = None if old is None else (old.st_uid, old.st_gid)
        atomic_write(path, text.encode("utf-8"), owner=owner)
    except OSError as exc:
        raise PolicyError(f"cannot write policy file: {_reason(exc)}", file=str(path)) from None


@contextlib.contextmanager
def _editing(path: Path, *, create: bool) -> Iterator[None]:
    """Hold an exclusive lock on the policy file's directory (it survives the file's renames)."""
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise PolicyError(f"cannot open policy directory: {_reason(exc)}", file=str(path)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
