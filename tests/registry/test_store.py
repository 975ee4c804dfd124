"""Migrations and the append-only ledger on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from easel.db import get_engine
from easel.registry.ledger import append_event, verify_log
from easel.registry.service import add_artist
from easel.registry.store import current_revision, head_revision, registry_session, upgrade


def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    upgrade(db_url)  # a second run changes nothing
    assert current_revision(db_url) == head_revision()
    assert head_revision() == "0001_registry" or current_revision(db_url) == head_revision()
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert {"artists", "works", "consent_events", "ledger_head", "work_descriptors",
            "datasets", "dataset_items", "trained_models"} <= tables


def test_consent_events_cannot_be_updated_or_deleted(db_url: str) -> None:
    with registry_session(db_url) as session:
        add_artist(session, "alice", "Alice")
        append_event(session, "grant", artist_id="alice", actor_id="alice",
                     purposes=["train_base"], basis="owner")
    for statement in ("UPDATE consent_events SET purposes = 'train_style'",
                      "DELETE FROM consent_events"):
        with pytest.raises(DBAPIError, match="append-only"), get_engine(db_url).begin() as conn:
            conn.execute(text(statement))
    with registry_session(db_url) as session:
        report = verify_log(session)
        assert report.ok and report.events == 1
