"""The demo: each sample file a scene of its own, each customer's story told once, nothing left behind.

``journey demo`` through click's runner, and the README's first command, ``journey dev
--demo``, as a process on the embedded default (a SQLite file), twice on one database.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from channels.settings import _VARIABLES as CHANNEL_VARIABLES
from engine.cli import main
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.storage.models import Base
from engine.storage.types import UTCDateTime
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
#: The story's last paragraph begins so.
CLOSING = "Times in UTC."


def no_channel_settings(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without any channel's settings (and without the user's database and broker)."""
    drop = {name for name, *_ in CHANNEL_VARIABLES} | {"DATABASE_URL", "REDIS_URL"}
    return {k: v for k, v in environ.items() if k not in drop}


def run_demo(database: Path) -> str:
    """``journey demo`` on the shipped journeys, no channel configured; its standard output."""
    with pytest.MonkeyPatch.context() as patch:
        for name in set(os.environ) - set(no_channel_settings(dict(os.environ))):
            patch.delenv(name)
        patch.setenv("DATABASE_URL", f"sqlite:///{database}")
        result = CliRunner().invoke(main, ["demo", "--journeys", str(ROOT / "journeys")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> str:
    return run_demo(tmp_path_factory.mktemp("demo") / "journey.db")


def scenes(text: str) -> dict[str, str]:
    """The story's scenes by sample file stem."""
    found = {}
    for block in text.split("== Scene ")[1:]:
        stem = re.search(r"samples/(\w+)\.jsonl", block)
        assert stem is not None, block
        found[stem.group(1)] = block
    return found


def customer(scene: str, name: str) -> list[str]:
    """One customer's lines in a scene."""
    lines, inside = [], False
    for line in scene.splitlines():
        if not line.startswith(" "):
            inside = line.startswith(f"{name} (")
        elif inside:
            lines.append(line)
    return lines


def test_running_the_demo_twice_tells_the_same_story(story, tmp_path):
    database = tmp_path / "journey.db"

    again = run_demo(database)

    assert again == story
    assert not database.exists()  # the scenes ran on twins: the user's database was not even opened


def test_every_sample_file_is_a_scene_of_its_own(story):
    stems = sorted(p.stem for p in (ROOT / "journeys" / "samples").glob("*.jsonl"))

    assert sorted(scenes(story)) == stems
    assert story.count("\nada (") == sum("\nada (" in scene for scene in scenes(story).values())


def test_ada_gets_one_thank_you_per_order_and_her_cart_reminder(story):
    by_scene = scenes(story)
    for stem, scene in by_scene.items():
        thanks = Counter(re.findall(r"Thank you for your order (o-\d+)", "\n".join(customer(scene, "ada"))))
        assert all(n == 1 for n in thanks.values()), (stem, thanks)
    order_followup = customer(by_scene["order_followup"], "ada")
    assert sum("Thank you for your order o-1001" in line for line in order_followup) == 1
    assert any("reminder" in line and "'Ada, your cart is waiting'" in line
               for line in customer(by_scene["cart_abandonment"], "ada"))


def test_a_channel_without_settings_would_send_and_says_why(story):
    welcome = customer(scenes(story)["welcome_series"], "ada")

    assert any("would send email welcome (marketing): 'Welcome, Ada!' (email not configured)" in line for line in welcome)
    assert not any(re.search(r"\bsent email\b", line) for line in story.splitlines())
    assert "email: the email channel needs SMTP_URL and EMAIL_FROM" in story.split(CLOSING)[1]


def test_held_and_deferred_messages_show_the_reason_the_engine_recorded(story):
    grace = customer(scenes(story)["cart_abandonment"], "grace")

    assert any("DEFERRED email cart_reminder" in line and "quiet hours 21:00-08:00 America/New_York" in line for line in grace)
    assert any("HELD email cart_reminder" in line and "the enrollment converted" in line for line in grace)


# -- journey dev --demo, the README's first command ------------------------------------------


def dev_demo(directory: Path) -> tuple[str, str]:
    """Run ``journey dev --demo`` in ``directory`` until its story is told, then stop it: (story, standard error)."""
    env = no_channel_settings(dict(os.environ))
    env["LOG_LEVEL"] = "INFO"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "dev", "--demo", "--port", str(free_port())],
        cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith(CLOSING):
                break
        assert lines and lines[-1].startswith(CLOSING), "".join(lines)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    return "".join(lines), err


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def dev_twice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """``journey dev --demo`` run twice in one directory (one ``journey.db``): the directory and each (story, stderr)."""
    directory = tmp_path_factory.mktemp("dev")
    shutil.copytree(ROOT / "journeys", directory / "journeys")
    return directory, [dev_demo(directory), dev_demo(directory)]


def test_dev_demo_twice_on_one_database_tells_one_story(dev_twice):
    _, [(first, _), (second, _)] = dev_twice

    assert second == first


def test_dev_demo_keeps_the_logs_back_while_it_tells_the_story(dev_twice):
    _, [(_, err), _] = dev_twice  # LOG_LEVEL=INFO, as a developer may have it
    after_story = err.split("the sample scenes' story:")[1].splitlines()
    # The lines written while the story is told: up to the start-up line of the channels, the
    # first thing logged once it is told (the test may stop the process before that line).
    ends = next((i for i, line in enumerate(after_story) if "journey dev: channels configured" in line), len(after_story))

    assert not [line for line in after_story[:ends] if " INFO " in line], err


def test_dev_demo_leaves_nothing_stamped_after_now(dev_twice):
    directory, _ = dev_twice
    now = dt.datetime.now(dt.timezone.utc)
    engine = create_engine(f"sqlite:///{directory / 'journey.db'}")  # the embedded default: a SQLite file here
    try:
        with Session(engine) as session:
            latest = {
                f"{table.name}.{column.name}": session.execute(select(func.max(column))).scalar_one()
                for table in Base.metadata.sorted_tables for column in table.columns
                if isinstance(column.type, UTCDateTime)
            }
    finally:
        engine.dispose()
    stamped = {where: _aware(at) for where, at in latest.items() if at is not None}

    assert {"journey_versions.deployed_at", "api_keys.created_at"} <= set(stamped), latest  # the deploy and the key
    assert not {where: at for where, at in stamped.items() if at > now}


def test_a_bad_sample_line_names_its_file_and_line(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "journeys", tmp_path / "journeys")
    sample = tmp_path / "journeys" / "samples" / "winback.jsonl"
    sample.write_text(sample.read_text(encoding="utf-8") + '{"type": "track", "userId": "ada", \n', encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'journey.db'}")

    result = CliRunner().invoke(main, ["demo", "--journeys", str(tmp_path / "journeys")])

    assert result.exit_code == RET_INVALID
    assert f"Error: {sample}:7: not JSON" in result.stderr, result.output


def test_a_directory_that_is_not_there_is_named(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--journeys", str(tmp_path / "nowhere")])

    assert result.exit_code == RET_NOT_FOUND
    assert f"no such directory: {tmp_path / 'nowhere'}" in result.stderr


def test_a_misspelt_type_in_a_sample_file_names_its_line_and_the_type_meant(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "journeys", tmp_path / "journeys")
    sample = tmp_path / "journeys" / "samples" / "winback.jsonl"
    sample.write_text(sample.read_text(encoding="utf-8").replace('"type": "track"', '"type": "trak"', 1), encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'journey.db'}")

    result = CliRunner().invoke(main, ["demo", "--journeys", str(tmp_path / "journeys")])

    assert "unknown type 'trak'. Did you mean 'track'?" in result.stderr, result.output


def test_a_file_where_the_journeys_directory_belongs_says_what_to_give():
    result = CliRunner().invoke(main, ["demo", "--journeys", str(ROOT / "journeys" / "winback.yaml")])

    assert result.exit_code == 2
    assert f"winback.yaml is a file; give the directory that holds it, such as --journeys {ROOT / 'journeys'}" in result.stderr
