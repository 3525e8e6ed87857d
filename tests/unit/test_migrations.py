"""The migrations create exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from engine.storage.db import make_engine, upgrade
from engine.storage.models import Base


def test_models_match_migrations(any_services):
    with any_services.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_upgrade_twice_is_harmless(services):
    upgrade(services.engine)
    upgrade(services.engine)


@pytest.mark.parametrize("url", ["sqlite_url", "pg_url"])
def test_suppressions_added_twice_before_0004_keep_their_oldest_entry(request, url):  # type: ignore[no-untyped-def]
    engine = make_engine(request.getfixturevalue(url))
    try:
        upgrade(engine, "0003")
        at = datetime(2026, 1, 1, tzinfo=timezone.utc)
        with engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO customers (id, traits, first_seen_at, last_seen_at, updated_at)"
                " VALUES (7, '{}', :at, :at, :at)"), {"at": at})
            rows = [("email", "ada@example.com", None, "hard_bounce"), ("email", "ada@example.com", None, "manual"),
                    ("sms", "ada@example.com", None, "manual"), ("*", None, 7, "complaint"), ("*", None, 7, "manual"),
                    ("email", None, 7, "manual")]
            for channel, address, customer_id, reason in rows:
                connection.execute(sa.text(
                    "INSERT INTO suppressions (channel, address, customer_id, reason, at)"
                    " VALUES (:channel, :address, :customer_id, :reason, :at)"),
                    {"channel": channel, "address": address, "customer_id": customer_id, "reason": reason, "at": at})
        upgrade(engine)
        with engine.connect() as connection:
            kept = connection.execute(sa.text(
                "SELECT channel, address, customer_id, reason FROM suppressions ORDER BY id")).all()
        assert [tuple(row) for row in kept] == [
            ("email", "ada@example.com", None, "hard_bounce"), ("sms", "ada@example.com", None, "manual"),
            ("*", None, 7, "complaint"), ("email", None, 7, "manual")]
    finally:
        engine.dispose()
