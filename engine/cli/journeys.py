"""``journey validate``, ``lint``, ``schema`` and ``graph``: check journey files before they run."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.cli.common import fail
from engine.definitions import journey_files, json_schema_text, load_journey, load_journeys
from engine.definitions.graph import mermaid
from engine.definitions.loader import JOURNEY_SUFFIXES
from engine.definitions.lint import lint as lint_journey
from engine.errors import DefinitionError, did_you_mean

DEFAULT_DIRECTORY = "journeys"
_paths = click.argument("paths", nargs=-1, type=click.Path(path_type=Path))


def _files_or_fail(paths: tuple[Path, ...]) -> list[Path]:
    """The journey files PATHS name (default: journeys/), or exit naming what is missing and what is close."""
    paths = paths or (Path(DEFAULT_DIRECTORY),)
    missing = [p for p in paths if not p.exists()]
    if missing:
        fail("; ".join(f"no such file or directory: {p}.{_close_name(p)}".removesuffix(".") for p in missing), RET_NOT_FOUND)
    files = journey_files(paths)
    if not files:
        where = ", ".join(f"{p}/" for p in paths)
        fail(f"no journey files (*.yaml, *.yml) in {where}; give a directory of journeys or journey files", RET_NOT_FOUND)
    return files


def _close_name(path: Path) -> str:
    """`` Did you mean 'journeys/cart_abandonment.yaml'?`` for a misspelt path whose directory exists."""
    if not path.parent.is_dir():
        return ""
    return did_you_mean(str(path), sorted(str(path.parent / p.name) for p in path.parent.iterdir()))


@click.command()
@_paths
def validate(paths: tuple[Path, ...]) -> None:
    """Check journey files (default: journeys/) and print every problem; exit 1 on any."""
    files = _files_or_fail(paths)
    result = load_journeys(files)
    for error in result.errors:
        click.echo(f"Error: {error}", err=True)
    if result.errors:
        click.echo(f"{len(result.errors)} of {len(files)} journey files are invalid", err=True)
        sys.exit(RET_INVALID)
    click.echo(f"{len(result.journeys)} journeys valid")


@click.command()
@_paths
@click.option("--strict", is_flag=True, help="Exit 1 on warnings, not only on errors.")
def lint(paths: tuple[Path, ...], strict: bool) -> None:
    """Warn about journeys that load but look wrong (unreachable steps, loops with no wait...)."""
    files = _files_or_fail(paths)
    result = load_journeys(files)
    for error in result.errors:
        click.echo(f"Error: {error}", err=True)
    count = 0
    for journey in result.journeys.values():
        warnings = lint_journey(journey)
        count += len(warnings)
        if warnings:
            noun = "warning" if len(warnings) == 1 else "warnings"
            lines = "\n".join(f"  {w}" for w in warnings)
            click.echo(f"Warning: {journey.path or journey.id} has {len(warnings)} {noun}:\n{lines}", err=True)
    if result.errors or (strict and count):
        sys.exit(RET_INVALID)
    click.echo(f"{len(result.journeys)} journeys checked, {count} warnings")


@click.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema (draft-07) of journey files, for editors and check-jsonschema."""
    text = json_schema_text()
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@click.command()
@click.argument("journey")
def graph(journey: str) -> None:
    """Print a Mermaid flowchart of JOURNEY (a file, or an id in journeys/)."""
    path = _journey_file(journey)
    try:
        loaded = load_journey(path)
    except DefinitionError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(RET_INVALID)
    click.echo(mermaid(loaded), nl=False)


def _journey_file(journey: str) -> Path:
    """The file that ``journey`` (a path, or an id in journeys/) names, or exit saying what to give."""
    path = Path(journey)
    if path.is_dir():
        files = journey_files([path])
        example = f"`journey graph {files[0]}`" if files else "a path such as `journey graph journeys/cart_abandonment.yaml`"
        fail(f"{journey} is a directory; give one journey file, such as {example}, or a journey id", RET_INVALID)
    if path.exists():
        return path
    directory = Path(DEFAULT_DIRECTORY)
    candidates = [directory / f"{journey}{suffix}" for suffix in JOURNEY_SUFFIXES]
    found = next((c for c in candidates if c.is_file()), None)
    if found is not None:
        return found
    ids = sorted(p.stem for p in journey_files([directory])) if directory.is_dir() else []
    listing = f" (journeys: {', '.join(ids)})" if ids else f" ({directory}/ has no journey files)"
    fail(f"no journey file or id '{journey}' in {directory}/.{did_you_mean(journey, ids)}{listing}".replace("/. (", "/ ("),
         RET_NOT_FOUND)


COMMANDS = [validate, lint, schema, graph]
