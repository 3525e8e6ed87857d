"""Storage: the SQLAlchemy models, connections, migrations and queries."""
