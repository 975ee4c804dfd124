"""Alembic environment: run programmatically by ``easel.registry.store.upgrade(url)``.

The connection comes in ``config.attributes["connection"]``; a URL in the main option
``sqlalchemy.url`` is used otherwise (for the ``alembic`` command line).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import easel.provenance.log  # noqa: F401  (register the tables on Base.metadata)
import easel.registry.models  # noqa: F401
from easel.db import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
