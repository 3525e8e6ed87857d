"""Stored history for bench/e2e.py ``--history N``: N more finished bench journeys, set-wise.

One bench event the engine applied (its event row, its enrollment, delivery, trace and
applied-effect rows) is the template; ``INSERT ... SELECT FROM generate_series`` copies it
N times in the database, spread over the bench's customers (so each has its share of
the history: what the re-entry look-up and the customer's enrollments see) and back in
time a second apart. The columns are read from the schema, so a new column is copied
as it is; ids the database generates are left to it. Then VACUUM ANALYZE, as
autovacuum would after such a load.
"""

from __future__ import annotations

import sqlalchemy as sa

PREFIX = "hist-"


def fill(db: sa.Engine, n: int, journey: str = "bench") -> None:
    """Store ``n`` copies of one finished enrollment of ``journey``, with its event and what it wrote."""
    with db.begin() as connection:
        template = connection.execute(sa.text(
            "SELECT id, trigger_event_id FROM enrollments WHERE journey_id = :journey AND status <> 'active'"
            " AND trigger_event_id IS NOT NULL ORDER BY started_at LIMIT 1"), {"journey": journey}).one()
        connection.execute(sa.text("""
            CREATE TEMP TABLE history ON COMMIT DROP AS
            SELECT g, c.id AS customer_id, c.external_id, NULL::bigint AS event_id
            FROM generate_series(1, :n) AS g
            JOIN (SELECT id, external_id, row_number() OVER (ORDER BY id) - 1 AS i FROM customers
                  WHERE id IN (SELECT customer_id FROM enrollments WHERE journey_id = :journey)) AS c
              ON c.i = g % (SELECT count(DISTINCT customer_id) FROM enrollments WHERE journey_id = :journey)
        """), {"n": n, "journey": journey})
        mine = f"'{PREFIX}' || h.g"
        events = _copy(connection, "events", "id = :id", {"message_id": mine, "customer_id": "h.customer_id",
                                                          "user_id": "h.external_id"}, returning="id, message_id")
        connection.execute(sa.text(
            f"WITH copied AS ({events}) UPDATE history h SET event_id = copied.id FROM copied"
            f" WHERE copied.message_id = {mine}"), {"id": template.trigger_event_id})
        owned = {"enrollment_id": mine, "customer_id": "h.customer_id"}
        _run(connection, "enrollments", "id = :id",
             {"id": mine, "customer_id": "h.customer_id", "trigger_event_id": "h.event_id"}, template.id)
        _run(connection, "deliveries", "enrollment_id = :id", {**owned, "key": f"{mine} || ':' || t.key"}, template.id)
        _run(connection, "trace", "enrollment_id = :id", owned, template.id)
        _run(connection, "applied_effects", "enrollment_id = :id", {**owned, "key": f"{mine} || ':' || t.key"}, template.id)
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")


def _run(connection: sa.Connection, table: str, where: str, overrides: dict[str, str], template: str) -> None:
    connection.execute(sa.text(_copy(connection, table, where, overrides)), {"id": template})


def _copy(connection: sa.Connection, table: str, where: str, overrides: dict[str, str], returning: str = "") -> str:
    """The INSERT that copies ``table``'s rows matching ``where`` once per history row, ``overrides`` applied."""
    columns = connection.execute(sa.text(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = :table AND coalesce(column_default, '') NOT LIKE 'nextval%' AND is_identity = 'NO'"
        " ORDER BY ordinal_position"), {"table": table}).all()
    if not columns:
        raise SystemExit(f"history: no table {table!r} in the schema")
    values = [overrides.get(name) or (f't."{name}" - h.g * INTERVAL \'1 second\'' if kind.startswith("timestamp")
                                      else f't."{name}"') for name, kind in columns]
    names = ", ".join(f'"{name}"' for name, _ in columns)
    statement = (f"INSERT INTO {table} ({names}) SELECT {', '.join(values)}"
                 f" FROM history h CROSS JOIN (SELECT * FROM {table} WHERE {where}) t")
    return f"{statement} RETURNING {returning}" if returning else statement
