"""`run` (the gateway itself) and `config check`."""

from __future__ import annotations

import sys

import click
import tomlkit

from gateway.cli.common import EXIT_STARTUP, config_options, fail, load
from gateway.config import redacted
from gateway.errors import ConfigError, PolicyError, StartupError


@click.command()
@config_options
@click.option("--listen", default=None, help="HOST:PORT to listen on (overrides server.listen).")
@click.option("--workers", type=int, default=None, help="Worker processes (SO_REUSEPORT).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level (overrides [log] level).",
)
def run(
    config_file: str | None,
    data_dir: str | None,
    listen: str | None,
    workers: int | None,
    log_level: str | None,
) -> None:
    """Run the gateway."""
    import dataclasses

    from gateway.server import serve

    config = load(config_file, data_dir)
    if log_level is not None:
        config = dataclasses.replace(
            config,
            log=dataclasses.replace(config.log, level=log_level),  # type: ignore[arg-type]  # a click.Choice of the Literal's values
        )
    try:
        code = serve(config, listen=listen, workers=workers)
    except (ConfigError, PolicyError) as e:
        fail(str(e))
    except StartupError as e:
        fail(str(e), EXIT_STARTUP)
    sys.exit(code)


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@config_options
def config_check(config_file: str | None, data_dir: str | None) -> None:
    """Validate config and policy; print the effective config with secrets redacted."""
    from gateway.auth.policyfile import load_policy

    config = load(config_file, data_dir)
    policy_note = "does not exist yet (run creates it)"
    if config.policy_path.exists():
        try:
            policy = load_policy(config.policy_path)
        except PolicyError as e:
            fail(str(e))
        policy_note = f"{len(policy.tokens)} token(s)"
    click.echo(f"# config: {config.source or 'built-in defaults'}")
    click.echo(f"# policy: {config.policy_path}: {policy_note}")
    click.echo(tomlkit.dumps(redacted(config)), nl=False)
