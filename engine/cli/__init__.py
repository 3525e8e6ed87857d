"""The ``journey`` command line.

Each module of this package holds one family of commands and exposes them as
``COMMANDS``; :func:`main` adds them all to one click group. Exit codes are named in
:mod:`engine.cli.codes`.
"""

from __future__ import annotations

import importlib

import click

from engine.cli.codes import RET_OK

# Modules whose COMMANDS join the top-level group, in help order.
_COMMAND_MODULES = (
    "engine.cli.processes",  # serve, worker, scheduler, dev
    "engine.cli.db",  # db upgrade / current
    "engine.cli.keys",  # keys create / list / revoke
    "engine.cli.journeys",  # validate, lint, schema, graph
    "engine.cli.deploy",  # plan, deploy, journeys, pause, resume, archive
    "engine.cli.simulate",  # simulate
    "engine.cli.demo",  # demo
    "engine.cli.replay",  # replay
    "engine.cli.ops",  # trace, queues
    "engine.cli.policy",  # suppress add / list / remove, consent set / show
    "engine.cli.deliveries",  # deliveries list / unknown / retry / drop / resend / mark-sent
    "engine.cli.events",  # events failed / retry / drop
    "engine.cli.audit",  # audit
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="journey-engine", prog_name="journey")
def main() -> None:
    """Journey Engine: customer journeys as code."""


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a family not written yet
        if exc.name != _name:
            raise
        continue
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main", "RET_OK"]
