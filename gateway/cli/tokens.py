"""`token create | list | revoke`: the policy file's tokens (only their hashes are stored)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from gateway.cli.common import config_options, fail, load, print_table, rfc3339, when
from gateway.errors import PolicyError


@click.group("token")
def token_group() -> None:
    """Create, list and revoke tokens in the policy file."""


def _policy_path(policy: str | None, config_file: str | None, data_dir: str | None) -> Path:
    return Path(policy) if policy else load(config_file, data_dir).policy_path


@token_group.command("create")
@click.argument("name")
@click.option("--write", "write", multiple=True, help="Database glob the token may write (repeat).")
@click.option("--read", "read", multiple=True, help="Database glob the token may read (repeat).")
@click.option("--expires", default=None, help="RFC3339 time or duration from now (30d).")
@click.option("--rate-limit", type=int, default=None, help="Lines per second.")
@click.option("--policy", default=None, help="Policy file (default: from the config).")
@config_options
def token_create(
    name: str,
    write: tuple[str, ...],
    read: tuple[str, ...],
    expires: str | None,
    rate_limit: int | None,
    policy: str | None,
    config_file: str | None,
    data_dir: str | None,
) -> None:
    """Create a token; prints the token alone on stdout."""
    from gateway.auth.policyfile import add_token

    path = _policy_path(policy, config_file, data_dir)
    expires_at = None
    if expires:
        moment = when(expires, time.time_ns())  # a bare duration ("30d") counts forward
        assert moment is not None
        expires_at = datetime.fromtimestamp(moment // 10**9, tz=UTC)
        if moment <= time.time_ns():
            fail(
                f"--expires {expires}: {rfc3339(expires_at)} is in the past; "
                "the token would never work"
            )
    try:
        token = add_token(
            path,
            name,
            write=list(write),
            read=list(read),
            expires=expires_at,
            rate_limit=rate_limit,
        )
    except PolicyError as e:
        fail(str(e))
    click.echo(token)
    scopes = f"write: {', '.join(write) or '-'}; read: {', '.join(read) or '-'}"
    until = rfc3339(expires_at) if expires_at else "never"
    click.echo(
        f'created token "{name}" in {path} ({scopes}; expires: {until}).\n'
        "The token (on stdout) is shown only this once; only its hash is stored. Keep it safe.\n"
        "A running gateway accepts it within 2 s (or at once after SIGHUP). Clients send it as\n"
        '"Authorization: Token <token>".',
        err=True,
    )
    if not write and not read:
        click.echo("note: this token may neither write nor read (add --write/--read)", err=True)


@token_group.command("list")
@click.option("--policy", default=None, help="Policy file (default: from the config).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@config_options
def token_list(
    policy: str | None, as_json: bool, config_file: str | None, data_dir: str | None
) -> None:
    """List token names, scopes and expiry (never a token or its hash)."""
    from gateway.auth.policyfile import load_policy

    path = _policy_path(policy, config_file, data_dir)
    try:
        loaded = load_policy(path)
    except PolicyError as e:
        fail(str(e))
    rows = [
        {
            "name": t.name,
            "write": list(t.write),
            "read": list(t.read),
            "expires": rfc3339(t.expires) if t.expires else None,
            "rate_limit": t.rate_limit,
        }
        for t in loaded.tokens
    ]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    print_table(
        ["NAME", "WRITE", "READ", "EXPIRES", "RATE_LIMIT"],
        [
            [
                t.name,
                ",".join(t.write) or "-",
                ",".join(t.read) or "-",
                rfc3339(t.expires) if t.expires else "never",
                str(t.rate_limit or "-"),
            ]
            for t in loaded.tokens
        ],
    )


@token_group.command("revoke")
@click.argument("name")
@click.option("--policy", default=None, help="Policy file (default: from the config).")
@config_options
def token_revoke(
    name: str, policy: str | None, config_file: str | None, data_dir: str | None
) -> None:
    """Remove a token from the policy file."""
    from gateway.auth.policyfile import remove_token

    path = _policy_path(policy, config_file, data_dir)
    try:
        remove_token(path, name)
    except PolicyError as e:
        fail(str(e))
    click.echo(f'revoked token "{name}" in {path}', err=True)
