"""Alembic migrations of Easel's database (run with ``easel.registry.store.upgrade``)."""
