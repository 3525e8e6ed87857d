"""``journey demo``: tell each customer's story in the shipped journeys' sample scenes.

``journey dev --demo`` tells the same story before it starts the engine.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import click

from channels.base import Channel
from engine.cli.codes import RET_NOT_FOUND
from engine.cli.common import a_directory, fail, services_for
from engine.cli.simulate import describe, read_events, timelines
from engine.definitions import journey_files, load_journeys
from engine.demo import play, scenes, start
from engine.services import Services
from engine.twin import DEFAULT_HORIZON, Effect, TwinStuck


def tell(services: Services, directory: Path) -> Iterator[str]:
    """The demo's story, a block of lines at a time: every scene of ``directory/samples``, then a note on the channels.

    ``services``: the user's, for the engine's settings and the channels they configured.
    A configured channel's real adapter sends the scene's messages (``sent``); any other
    channel is the twin's recording stub (``would send``, and why it is not configured).

    Raises:
        click.ClickException: a journey or a sample line is invalid, or a scene is stuck.
    """
    loaded = load_journeys(journey_files([directory]))
    if loaded.errors:
        raise click.ClickException("\n".join(str(e) for e in loaded.errors))
    problems = services.channel_problems()
    adapters: dict[str, Channel] = {
        name: services.adapter(name, preview=False) for name, problem in problems.items() if problem is None
    }
    unconfigured = {name for name, problem in problems.items() if problem is not None}

    def line(effect: Effect) -> str:
        if effect.effect != "send":
            return describe(effect)
        if effect.channel in unconfigured:
            return describe(effect, "would send", f"{effect.channel} not configured")
        return describe(effect, "sent")

    found = scenes(directory, loaded.journeys)
    if not found:
        raise click.ClickException(f"no sample files in {directory / 'samples'} (*.jsonl, one Segment event a line)")
    used: set[str] = set()
    for number, scene in enumerate(found, start=1):
        events = [event for _, event in read_events(scene.path)]
        try:
            twin = play(events, loaded.journeys.values(), settings=services.settings, adapters=adapters)
        except (ValueError, TwinStuck) as exc:
            raise click.ClickException(f"{scene.path}: {exc}") from None
        with twin:
            used |= {e.channel for e in twin.effects() if e.effect == "send" and e.channel}
            yield (f"== Scene {number} of {len(found)}: {scene.title}\n"
                   f"   {scene.path}, from {start(events):%Y-%m-%d %H:%M} on its own timeline"
                   f" (as `journey simulate {directory} --events {scene.path}`)\n\n"
                   + timelines(twin, line=line) + "\n")
    notes = [f"  {name}: {problems[name]}" for name in sorted(used & unconfigured)]
    yield (f"Times in UTC. Each scene ran on its own in-memory copy of the engine, from its first event until nothing "
           f"was due (at most {DEFAULT_HORIZON.days}d on); nothing was written to your database."
           + ("\nWould send: these channels have no settings, so the demo only shows their messages:\n"
              + "\n".join(notes) if notes else ""))


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Hold the engine's logs back to warnings while the story is told, unless ``verbose``."""
    root = logging.getLogger()
    level = root.level
    if not verbose:
        root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


@click.command("demo")
@click.option("--journeys", "journeys_dir", default="journeys", show_default=True,
              type=click.Path(path_type=Path), callback=a_directory,
              help="The journeys to run; their scenes are DIR/samples/*.jsonl.")
@click.option("--verbose", "-v", is_flag=True, help="Show the engine's logs too.")
def demo(journeys_dir: Path, verbose: bool) -> None:
    """Tell each customer's story in the sample scenes: what they did, what they received, and why.

    Each file of journeys/samples is its own scene, run on its own in-memory copy of the
    engine (the real pipeline on a virtual clock, as `journey simulate` runs it) with
    every journey deployed. A channel with settings really sends; one without says
    "would send". Nothing is written to the database.
    """
    if not journeys_dir.is_dir():
        fail(f"no such directory: {journeys_dir} (the journeys, with their scenes in {journeys_dir / 'samples'})",
             RET_NOT_FOUND)
    with services_for() as services, quiet(verbose):
        for block in tell(services, journeys_dir):
            click.echo(block)


__all__ = ["demo", "quiet", "tell"]

COMMANDS = [demo]
