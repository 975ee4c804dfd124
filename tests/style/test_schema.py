"""Migration 0005_style on SQLite and PostgreSQL: the tables exist and credits are append-only."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError

from easel.db import get_engine
from easel.registry.store import registry_session
from easel.style.models import StyleCredit


def test_style_tables_and_append_only_credits(db_url: str) -> None:
    with registry_session(db_url) as session:
        session.add(StyleCredit(style_id="st_x", artist_id="alice", generation_id="0123456789ab"))
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert {"styles", "style_items", "style_shares", "style_credits"} <= tables
    for statement in ("UPDATE style_credits SET artist_id = 'mallory'", "DELETE FROM style_credits"):
        with pytest.raises(DatabaseError, match="append-only"), registry_session(db_url) as session:
            session.execute(text(statement))
    with registry_session(db_url) as session:
        assert session.execute(text("SELECT artist_id FROM style_credits")).scalar_one() == "alice"
