"""The ``journey`` command line: keys, db, and clear errors for bad settings."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from engine import keys
from engine.cli import main
from engine.cli.codes import RET_CONFIG, RET_NOT_FOUND, RET_SERVICE
from engine.storage.db import make_engine, current_revision
from tests.conftest import free_port

HEAD = current_revision(make_engine("sqlite://"))[1]


@pytest.fixture
def run(sqlite_url, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_keys_need_a_migrated_database(run):
    result = run("keys", "list")
    assert result.exit_code == RET_SERVICE
    assert f"is at revision none but the code needs {HEAD}; run `journey db upgrade`" in result.output


def test_keys_create_list_revoke(run, services):
    created = run("keys", "create", "web-app")
    assert created.exit_code == 0
    secret = created.stdout.strip()
    assert secret.startswith(keys.WRITE_PREFIX)
    assert "shown only now" in created.stderr
    admin = run("keys", "create", "ops", "--admin")
    assert admin.stdout.strip().startswith(keys.ADMIN_PREFIX)

    listing = run("keys", "list").output
    assert "web-app" in listing and "write" in listing and "admin" in listing
    assert secret not in listing

    revoked = run("keys", "revoke", "web-app")
    assert revoked.exit_code == 0 and "revoked 1 key" in revoked.output
    with services.sessions() as session:
        with pytest.raises(Exception, match="was revoked"):
            keys.authenticate(session, secret)
    again = run("keys", "revoke", "web-app")
    assert again.exit_code == RET_NOT_FOUND
    assert again.output.startswith("Error: no active key has the id, prefix or name 'web-app'")


def test_keys_create_needs_a_name(run, services):
    result = run("keys", "create", "  ")
    assert result.exit_code == 1
    assert "a key needs a name" in result.output


def test_db_upgrade_and_current(run):
    upgraded = run("db", "upgrade")
    assert upgraded.exit_code == 0 and f"is at revision {HEAD}" in upgraded.output
    assert "up to date" in run("db", "current").output


def test_bad_setting_is_one_clear_line(run, monkeypatch):
    monkeypatch.setenv("JOURNEY_WORKER_THREADS", "many")
    result = run("keys", "list")
    assert result.exit_code == RET_CONFIG
    assert result.output == (
        "Error: JOURNEY_WORKER_THREADS='many' is invalid: not a whole number; expected a whole number >= 1\n"
    )


def test_a_rate_limit_on_a_channel_not_installed_is_refused_at_start(run, monkeypatch):
    monkeypatch.setenv("CHANNEL_RATE_LIMITS", "emial=10")
    result = run("keys", "list")
    assert result.exit_code == RET_CONFIG
    assert result.output.startswith(
        "Error: CHANNEL_RATE_LIMITS names the channel 'emial', which is not installed. Did you mean 'email'? "
        "(installed: email, "
    )


def test_worker_without_redis_says_what_to_do(run):
    result = run("worker")
    assert result.exit_code == RET_SERVICE
    assert "REDIS_URL is not set" in result.output


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_a_port_in_use_is_one_clear_line_and_a_non_zero_exit(command, sqlite_url, tmp_path):
    # Given another process listening on the port the API would take
    port = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        environment = {key: value for key, value in os.environ.items() if key not in ("PORT", "REDIS_URL")}
        environment["DATABASE_URL"] = sqlite_url
        # When `journey serve` (or `journey dev`) starts on it, as a person starts it
        started = subprocess.run(
            [sys.executable, "-m", "engine", command, "--port", str(port)],
            capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300,
        )
    # Then it says so, and what to do, and exits with the configuration code
    said = started.stderr.splitlines()[-1]
    pattern = rf"Error: port {port} is in use on 127\.0\.0\.1: stop the other process or set PORT=\d+ \(or --port\)"
    assert (started.returncode, bool(re.fullmatch(pattern, said))) == (RET_CONFIG, True), started.stderr
