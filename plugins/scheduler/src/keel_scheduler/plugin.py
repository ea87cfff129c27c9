"""The entry point ``scheduler`` (group ``keel``): the ``keel queue|worker|schedule|scheduler|intake``
commands. Cheap to import: the commands load the queue on first use."""

from __future__ import annotations

import click

import keel


@keel.hookimpl
def keel_commands(cli: click.Group) -> None:
    from keel_scheduler.cli import add_commands

    add_commands(cli)
