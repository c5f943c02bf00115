"""The influx-gateway command line: parse arguments, then delegate. Exit codes 0 / 2 / 3.

One module per command group; `common.py` holds what they share (config loading, errors, tables).
"""

from __future__ import annotations

import click

from gateway.cli.buffer import buffer_group, deadletter_group
from gateway.cli.replay import replay_command
from gateway.cli.run import config_group, run
from gateway.cli.store import store_group
from gateway.cli.tokens import token_group

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="influx-gateway")
def main() -> None:
    """influx-gateway: an InfluxDB write gateway (v2 and v1 write API)."""


for command in (
    run,
    config_group,
    token_group,
    store_group,
    buffer_group,
    deadletter_group,
    replay_command,
):
    main.add_command(command)
