from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND, RET_OK
from engine.definitions import load_journey
from engine.errors import DefinitionError

ROOT = Path(__file__).parents[2]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


def test_validate_shipped_journeys(run) -> None:
    result = run("validate")

    assert result.exit_code == RET_OK, result.output
    assert result.output.endswith("journeys valid\n")


def test_validate_prints_every_problem_and_fails(run) -> None:
    result = run("validate", "tests/corpus/many_problems.yaml", "journeys/winback.yaml")

    assert result.exit_code == RET_INVALID
    assert "Error: tests/corpus/many_problems.yaml is invalid for 4 reasons:\n" in result.output
    assert "  line 16, col 21, steps[1].send.channel: unknown channel 'emial'. Did you mean 'email'?" in result.output
    assert "1 of 2 journey files are invalid" in result.output


def test_validate_missing_path(run) -> None:
    result = run("validate", "nowhere/")

    assert result.exit_code == RET_NOT_FOUND
    assert result.output == "Error: no such file or directory: nowhere\n"


def test_a_misspelt_journey_file_suggests_the_one_meant(run) -> None:
    result = run("validate", "journeys/cart_abandonmnt.yaml")

    assert result.exit_code == RET_NOT_FOUND
    assert result.output == (
        "Error: no such file or directory: journeys/cart_abandonmnt.yaml. Did you mean 'journeys/cart_abandonment.yaml'?\n"
    )


def test_lint_strict_passes_on_shipped_journeys(run) -> None:
    result = run("lint", "--strict")

    assert result.exit_code == RET_OK, result.output
    assert "0 warnings" in result.output


def test_lint_warns_and_strict_fails(run, tmp_path: Path) -> None:
    journey = tmp_path / "loose.yaml"
    journey.write_text(
        "id: loose\nname: Loose\nstage: awareness\ntrigger: {event: signed_up}\n"
        "steps:\n  - id: wait\n    wait_until: {event: order_completed}\n"
    )

    relaxed = run("lint", str(journey))
    strict = run("lint", "--strict", str(journey))

    assert relaxed.exit_code == RET_OK
    assert "has no timeout" in relaxed.output
    assert strict.exit_code == RET_INVALID


def test_schema_prints_the_committed_schema(run) -> None:
    result = run("schema")

    assert result.exit_code == RET_OK
    assert result.output == (ROOT / "schema" / "journey.schema.json").read_text()
    assert json.loads(result.output)["title"] == "Journey"


def test_graph_by_id(run) -> None:
    result = run("graph", "cart_abandonment")

    assert result.exit_code == RET_OK
    assert result.output.startswith("flowchart TD\n")
    assert "subgraph stage_consideration[consideration]" in result.output


def test_graph_of_unknown_journey(run) -> None:
    result = run("graph", "nope")

    assert result.exit_code == RET_NOT_FOUND
    assert result.output.startswith("Error: no journey file or id 'nope'")


def test_graph_of_a_misspelt_id_suggests_the_journey(run) -> None:
    result = run("graph", "browse_abandonmnt")

    assert result.exit_code == RET_NOT_FOUND
    assert result.output.startswith(
        "Error: no journey file or id 'browse_abandonmnt' in journeys/. Did you mean 'cart_abandonment'? "
        "(journeys: cart_abandonment, loyalty_points,"
    )


def test_graph_of_a_directory_says_to_give_one_file(run) -> None:
    result = run("graph", "journeys/")

    assert result.exit_code == RET_INVALID
    assert result.output == (
        "Error: journeys/ is a directory; give one journey file, such as "
        "`journey graph journeys/cart_abandonment.yaml`, or a journey id\n"
    )


def test_a_directory_given_as_a_journey_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "cart.yaml").write_text("id: cart\n")

    with pytest.raises(DefinitionError) as caught:
        load_journey(tmp_path)

    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path} is a directory, not a journey file; give one of its journey files, such as {tmp_path / 'cart.yaml'}"
    ]


def test_a_directory_without_journeys_says_where_it_looked(run, tmp_path: Path) -> None:
    result = run("validate", str(tmp_path))

    assert result.exit_code == RET_NOT_FOUND
    assert result.output == (
        f"Error: no journey files (*.yaml, *.yml) in {tmp_path}/; give a directory of journeys or journey files\n"
    )


def test_a_misspelt_command_gets_a_suggestion(run) -> None:
    result = run("grpah", "cart_abandonment")

    assert result.exit_code == 2
    assert "No such command 'grpah'. Did you mean 'graph'?" in result.output


def test_dev_refuses_a_file_where_the_journeys_directory_belongs(run) -> None:
    result = run("dev", "--journeys", "journeys/winback.yaml")

    assert result.exit_code == 2
    assert "journeys/winback.yaml is a file; give the directory that holds it, such as --journeys journeys" in result.output


def test_the_mistakes_of_issue_10_fail_validate_and_lint_strict(run, tmp_path: Path) -> None:
    shipped = (ROOT / "journeys" / "loyalty_points.yaml").read_text()
    (tmp_path / "templates").symlink_to(ROOT / "journeys" / "templates")
    no_tier = tmp_path / "no_tier.yaml"
    no_tier.write_text(shipped.replace('(!has(customer.tier) || customer.tier != "gold")', 'customer.tier != "gold"'))
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text(shipped.replace("trigger.properties.total > 0", 'trigger.properties.total > "0"'))

    linted = run("lint", "--strict", str(no_tier))
    validated = run("validate", str(quoted))

    assert linted.exit_code == RET_INVALID
    assert 'reads customer.tier, which a customer may not have' in linted.output
    assert validated.exit_code == RET_INVALID
    assert 'line 8, col 36, trigger.when: type mismatch in "trigger.properties.total > "0""' in validated.output
    assert 'write 0 without quotes' in validated.output
