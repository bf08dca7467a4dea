"""``dms``: serve, start, stop, archive."""

from __future__ import annotations

import click

from dms import __version__
from dms.cli.archiving import archive
from dms.cli.inspecting import models, status
from dms.cli.serving import serve, start, stop, token


@click.group()
@click.version_option(__version__, prog_name="dms")
def cli() -> None:
    """Deep Model Server."""


cli.add_command(serve)
cli.add_command(start)
cli.add_command(stop)
cli.add_command(archive)
cli.add_command(token)
cli.add_command(status)
cli.add_command(models)


def main() -> None:
    cli()
