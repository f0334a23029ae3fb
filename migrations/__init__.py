"""Alembic migrations, shipped inside the package as assistant.migrations."""
