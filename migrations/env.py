"""Alembic environment: runs migrations on the engine handed over by engine.storage.db."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from engine.storage.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line: read the URL from the environment
    from engine.environment import read_settings

    engine = create_engine(read_settings().database_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
