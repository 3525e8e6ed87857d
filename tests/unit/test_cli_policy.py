"""``journey suppress`` and ``journey consent``, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from engine import preferences
from engine.cli import main
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND, RET_SERVICE, RET_USAGE
from engine.policy import subscribed, suppression
from engine.services import Services
from engine.storage.models import Customer
from tests.unit.test_api_suppressions import add_customer

Run = Callable[..., Result]


@pytest.fixture
def run(any_services: Services, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Run:
    url = request.getfixturevalue("sqlite_url" if any_services.engine.dialect.name == "sqlite" else "pg_url")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def ada(any_services: Services) -> int:
    return add_customer(any_services, "ada", {"email": "Ada@Example.com"}, "anon-ada")


def suppressed(services: Services, customer_id: int, channel: str) -> bool:
    with services.sessions() as session:
        return suppression(session, channel, session.get(Customer, customer_id)) is not None


def test_add_list_and_remove_an_address(run: Run, any_services: Services, ada: int) -> None:
    added = run("suppress", "add", "email", "Ada@Example.com", "--reason", "complaint", "--note", "ticket 42")
    assert (added.exit_code, added.output) == (0, "suppressed ada@example.com on email (complaint)\n")
    assert suppressed(any_services, ada, "email") and not suppressed(any_services, ada, "sms")
    again = run("suppress", "add", "email", "ada@example.com")
    assert again.exit_code == 0 and again.output.startswith("already suppressed: ada@example.com on email (complaint since")

    listing = run("suppress", "list").output.splitlines()
    assert listing[0].split() == ["ID", "CHANNEL", "ADDRESS", "/", "USER", "REASON", "SINCE", "NOTE"]
    assert listing[1].split()[1:4] == ["email", "ada@example.com", "complaint"] and listing[1].endswith("ticket 42")
    [entry] = json.loads(run("suppress", "list", "--json").output)
    assert (entry["address"], entry["reason"], entry["note"]) == ("ada@example.com", "complaint", "ticket 42")
    assert run("suppress", "list", "--channel", "sms").output == "no entries match\n"

    removed = run("suppress", "remove", "email", "ADA@example.com")
    assert removed.exit_code == 0 and removed.output.startswith("lifted ada@example.com on email (was complaint since")
    assert not suppressed(any_services, ada, "email")
    assert run("suppress", "list").output == "no entries; the suppression list is empty\n"
    gone = run("suppress", "remove", "email", "ada@example.com")
    assert gone.exit_code == RET_NOT_FOUND
    assert gone.output == "Error: the address 'ada@example.com' is not on the suppression list of channel 'email'\n"


def test_add_and_remove_a_customer(run: Run, any_services: Services, ada: int) -> None:
    added = run("suppress", "add", "*", "--user", "anon-ada")
    assert (added.exit_code, added.output) == (0, "suppressed customer 'ada' on * (manual)\n")
    assert suppressed(any_services, ada, "push")
    assert "customer 'ada'" in run("suppress", "list", "--channel", "*").output
    assert run("suppress", "remove", "*", "--user", "ada").exit_code == 0
    assert not suppressed(any_services, ada, "push")
    unknown = run("suppress", "add", "email", "--user", "bob")
    assert unknown.exit_code == RET_NOT_FOUND
    assert unknown.output == "Error: no customer is known by the user id or anonymous id 'bob'\n"


def test_the_list_reads_every_page(run: Run, ada: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        run("suppress", "add", "email", f"u{i}@example.com")
    monkeypatch.setattr(preferences, "MAX_LIMIT", 2)
    entries = json.loads(run("suppress", "list", "--json").output)
    assert [e["address"] for e in entries] == [f"u{i}@example.com" for i in reversed(range(5))]


@pytest.mark.parametrize("args, code, message", [
    (("suppress", "add", "emial", "ada@example.com"), RET_INVALID,
     "Error: the suppression is invalid for 1 reason:\n  channel: unknown channel 'emial'. Did you mean 'email'?"),
    (("suppress", "add", "sms", "0415 555"), RET_INVALID,
     "Error: the suppression is invalid for 1 reason:\n  address: '0415 555' is not a phone number in E.164 form"),
    (("suppress", "add", "email", "ada@example.com", "--user", "ada"), RET_INVALID,
     "Error: the suppression is invalid for 1 reason:\n  userId: give an address or a userId, not both"),
    (("suppress", "add", "email"), RET_INVALID,
     "Error: the suppression is invalid for 1 reason:\n  address: is required"),
    (("suppress", "add", "email", "ada@example.com", "--reason", "bored"), RET_USAGE,
     "Invalid value for '--reason': 'bored' is not one of 'hard_bounce', 'complaint', 'manual'."),
    (("suppress", "list", "--channel", "mail"), RET_INVALID,
     "Error: the listing is invalid for 1 reason:\n  channel: unknown channel 'mail'"),
    (("suppress", "remove", "email"), RET_INVALID,
     "Error: the suppression to lift is invalid for 1 reason:\n  address: name the address to lift"),
    (("consent", "set", "ada", "*", "--unsubscribed"), RET_INVALID,
     "Error: the consent is invalid for 1 reason:\n  channel: a consent is per channel: name one"),
    (("consent", "set", "ada", "email"), RET_USAGE, "Error: say --subscribed or --unsubscribed"),
    (("consent", "set", "bob", "email", "--subscribed"), RET_NOT_FOUND,
     "Error: no customer is known by the user id or anonymous id 'bob'"),
    (("consent", "show", "bob"), RET_NOT_FOUND, "Error: no customer is known by the user id or anonymous id 'bob'"),
])
def test_bad_input_is_one_clear_error(run: Run, any_services: Services, ada: int, args: tuple[str, ...], code: int,
                                      message: str) -> None:
    result = run(*args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output
    assert run("suppress", "list").output == "no entries; the suppression list is empty\n"


def test_consent_set_and_show(run: Run, any_services: Services, ada: int) -> None:
    assert run("consent", "show", "ada").output == "no choice recorded for 'ada': marketing is allowed on every channel\n"
    off = run("consent", "set", "ada", "email", "--unsubscribed")
    assert (off.exit_code, off.output) == (0, "ada unsubscribed from email, every topic\n")
    on = run("consent", "set", "anon-ada", "email", "--topic", "surveys", "--subscribed", "--source", "phone call")
    assert (on.exit_code, on.output) == (0, "anon-ada subscribed to email, topic surveys\n")
    with any_services.sessions() as session:
        assert not subscribed(session, ada, "email", "news")
        assert subscribed(session, ada, "email", "surveys")

    table = run("consent", "show", "ada").output.splitlines()
    assert table[0].split() == ["CHANNEL", "TOPIC", "CHOICE", "SINCE", "SOURCE"]
    assert table[1].split()[:3] == ["email", "*", "unsubscribed"] and table[1].endswith("command line")
    assert table[2].split()[:3] == ["email", "surveys", "subscribed"] and table[2].endswith("phone call")
    shown = json.loads(run("consent", "show", "ada", "--json").output)
    assert shown["userId"] == "ada" and [c["topic"] for c in shown["consents"]] == ["*", "surveys"]


def test_the_commands_need_a_migrated_database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    for args in (("suppress", "list"), ("consent", "show", "ada")):
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == RET_SERVICE and "run `journey db upgrade`" in result.output
