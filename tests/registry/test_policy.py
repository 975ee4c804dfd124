"""The one policy function over the event history, and tamper detection of that history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from easel.db import get_engine
from easel.errors import BadInput, PermissionDenied
from easel.registry.ledger import append_event, verify_log
from easel.registry.models import utcnow
from easel.registry.policy import disallowed_items, may_use
from easel.registry.service import Ingestor, authenticate, change_consent, get_artist, set_optout
from easel.registry.store import index_dir, registry_session
from tests.conftest import run_cli
from tests.registry.conftest import artwork, encode


def _work(url: str, artist: str, seed: int, license_spdx: str, source: str | None = None) -> str:
    with registry_session(url) as session:
        ingestor = Ingestor(session, index_dir(url))
        work = ingestor.ingest(encode(artwork(seed)), get_artist(session, artist), f"w{seed}",
                               license_spdx, source=source)
        work_id = work.id
    ingestor.finish()
    return work_id


def _act(url: str, keys: dict[str, str], artist: str, kind: str, work_id: str | None,
         purposes: tuple[str, ...] = ("train_base",)) -> str:
    with registry_session(url) as session:
        actor = authenticate(session, artist, keys[artist])
        if kind in ("optout", "optin"):
            return set_optout(session, actor, work_id, undo=kind == "optin").id
        return change_consent(session, actor, kind, purposes, work_id).id


def _allowed(url: str, work_id: str, purpose: str = "train_base") -> bool:
    with registry_session(url) as session:
        return may_use(session, work_id, purpose).allowed


def test_licence_defaults_and_owner_events(db_url: str, two_artists: dict[str, str]) -> None:
    keys = two_artists
    open_work = _work(db_url, "alice", 11, "CC-BY-4.0")
    closed = _work(db_url, "alice", 12, "LicenseRef-proprietary")
    with registry_session(db_url) as session:
        decision = may_use(session, open_work, "train_base")
        assert decision.allowed and decision.rule == "licence" and decision.event_id
        assert "CC-BY-4.0" in decision.reason
        denied = may_use(session, closed, "commercial_output")
        assert not denied.allowed and "does not allow" in denied.reason
        unknown = may_use(session, "wk_missing", "train_base")
        assert not unknown.allowed and unknown.event_id is None
        with pytest.raises(BadInput, match="unknown purpose"):
            may_use(session, open_work, "everything")
    # An explicit grant opens a proprietary work for that purpose only.
    grant = _act(db_url, keys, "alice", "grant", closed, ("train_style",))
    with registry_session(db_url) as session:
        decision = may_use(session, closed, "train_style")
        assert decision.allowed and decision.event_id == grant and decision.rule == "work"
        assert not may_use(session, closed, "train_base").allowed
    # A revocation beats the licence; an artist-wide revoke covers works without their own event.
    _act(db_url, keys, "alice", "revoke", open_work, ("train_base",))
    assert not _allowed(db_url, open_work)
    assert _allowed(db_url, open_work, "commercial_output")
    _act(db_url, keys, "alice", "revoke", None, ("train_style",))
    assert _allowed(db_url, closed, "train_style")  # its own grant is more specific
    assert not _allowed(db_url, open_work, "train_style")
    # Opt-out refuses everything, even granted purposes; opt-in undoes it.
    _act(db_url, keys, "alice", "optout", closed)
    assert not _allowed(db_url, closed, "train_style")
    with pytest.raises(PermissionDenied, match="opted out"):
        _act(db_url, keys, "alice", "grant", closed, ("train_base",))
    _act(db_url, keys, "alice", "optin", closed)
    assert _allowed(db_url, closed, "train_style")


def test_decisions_at_a_past_time(db_url: str, two_artists: dict[str, str]) -> None:
    work_id = _work(db_url, "bob", 13, "MIT")
    before_revoke = utcnow()
    _act(db_url, two_artists, "bob", "revoke", work_id)
    with registry_session(db_url) as session:
        assert may_use(session, work_id, "train_base", at=before_revoke).allowed
        assert not may_use(session, work_id, "train_base").allowed
        long_ago = before_revoke - timedelta(days=365)
        assert "not registered" in may_use(session, work_id, "train_base", at=long_ago).reason


def test_disallowed_items(db_url: str, two_artists: dict[str, str]) -> None:
    ok = _work(db_url, "alice", 14, "CC-BY-4.0", source="set:ok-icon")
    revoked = _work(db_url, "alice", 15, "CC-BY-4.0", source="set:revoked-icon")
    _act(db_url, two_artists, "alice", "revoke", revoked)
    with registry_session(db_url) as session:
        bad = disallowed_items(session, ["set:ok-icon", "set:revoked-icon", "set:unknown"],
                               "train_base")
    assert set(bad) == {"set:revoked-icon", "set:unknown"}
    assert "revoked" in bad["set:revoked-icon"] and "not a registered work" in bad["set:unknown"]
    assert ok and revoked


def test_tampering_is_detected(db_url: str, two_artists: dict[str, str]) -> None:
    work_id = _work(db_url, "alice", 16, "CC-BY-4.0")
    _act(db_url, two_artists, "alice", "revoke", work_id)
    _act(db_url, two_artists, "alice", "grant", None, ("train_style",))
    with registry_session(db_url) as session:
        assert verify_log(session).ok
    assert run_cli("registry", "verify-log").returncode == 0
    engine = get_engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    # Someone with database access removes the append-only trigger and rewrites history:
    # the revocation becomes a grant.
    with engine.begin() as conn:
        if sqlite:
            conn.execute(text("DROP TRIGGER consent_events_no_update"))
            conn.execute(text("DROP TRIGGER consent_events_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER consent_events_append_only ON consent_events"))
        conn.execute(text("UPDATE consent_events SET kind = 'grant' WHERE kind = 'revoke'"))
    with registry_session(db_url) as session:
        report = verify_log(session)
    assert not report.ok and any("edited" in p for p in report.problems)
    proc = run_cli("registry", "verify-log")
    assert proc.returncode == 1 and "TAMPERED" in proc.stderr
    # Deleting the last event is caught by the head; changing a work's licence by its
    # registration event.
    with engine.begin() as conn:
        conn.execute(text("UPDATE consent_events SET kind = 'revoke' WHERE kind = 'grant' "
                          "AND work_id IS NOT NULL"))
        conn.execute(text("DELETE FROM consent_events WHERE seq = (SELECT max(seq) FROM consent_events)"))
        conn.execute(text("UPDATE works SET license_spdx = 'CC0-1.0'"))
    with registry_session(db_url) as session:
        problems = verify_log(session).problems
    assert any("removed" in p for p in problems), problems
    assert any("license_spdx" in p for p in problems), problems
    assert not any("edited" in p for p in problems), problems


def test_concurrent_appends_never_fork_the_chain(db_url: str, two_artists: dict[str, str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def grant(i: int) -> None:
        with registry_session(db_url) as session:
            append_event(session, "grant", artist_id="alice", actor_id="alice",
                         purposes=["train_base"], basis=f"thread {i}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(grant, range(12)))
    with registry_session(db_url) as session:
        report = verify_log(session)
    assert report.ok and report.events == 12


def test_descriptor_slot(db_url: str, two_artists: dict[str, str]) -> None:
    import numpy as np

    from easel.registry.descriptors import load_descriptors, set_descriptor

    first, second = _work(db_url, "alice", 31, "MIT"), _work(db_url, "bob", 32, "MIT")
    with registry_session(db_url) as session:
        assert load_descriptors(session, "toy-v1")[0] == []
        set_descriptor(session, second, "toy-v1", np.array([0.6, 0.8, 0.0]))
        set_descriptor(session, first, "toy-v1", np.array([1.0, 0.0, 0.0]))
        set_descriptor(session, first, "toy-v1", np.array([0.0, 0.0, 1.0]))  # replaces
        with pytest.raises(BadInput, match="normalised"):
            set_descriptor(session, first, "toy-v1", np.array([3.0, 0.0, 0.0]))
    with registry_session(db_url) as session:
        ids, matrix = load_descriptors(session, "toy-v1")
    assert ids == [first, second]
    assert np.allclose(matrix, [[0, 0, 1], [0.6, 0.8, 0]]) and matrix.dtype == np.float32
    # A kind may keep several views per work; every view must be normalised.
    with registry_session(db_url) as session:
        set_descriptor(session, first, "views-v1", np.array([[1.0, 0.0], [0.0, 1.0]]))
        with pytest.raises(BadInput, match="normalised"):
            set_descriptor(session, second, "views-v1", np.array([[1.0, 0.0], [0.0, 2.0]]))
        set_descriptor(session, second, "views-v1", np.array([[0.6, 0.8], [0.8, 0.6]]))
    with registry_session(db_url) as session:
        ids, views = load_descriptors(session, "views-v1")
    assert ids == [first, second] and views.shape == (2, 2, 2) and np.allclose(views[1, 1], [0.8, 0.6])
