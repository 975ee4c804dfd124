"""The consent ledger: append-only events, each holding the hash of the one before.

Every consent change — a work registered under a licence, a grant, a revocation, an opt-out —
is one ``ConsentEvent`` row. ``hash`` is sha256 over the canonical JSON of the event's other
fields, ``prev_hash`` included; the single ``ledger_head`` row holds the last seq and hash and
is locked by every append, so the chain never forks. ``verify_log`` recomputes the chain and
cross-checks each work against its registration event, so any edit, deletion or reordering of
history — or of a work's licence, owner or content hash — is reported.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from easel.registry.models import (
    EVENT_KINDS,
    GENESIS_HASH,
    PURPOSES,
    ConsentEvent,
    LedgerHead,
    Work,
    utcnow,
)

_WRITER_KEY = "easel.ledger.writer"


def canonical_time(value: datetime) -> str:
    """The timestamp as hashed: UTC, microseconds, ``+00:00``."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the one JSON spelling that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(event: ConsentEvent) -> str:
    """sha256 (hex) over every field of ``event`` except ``hash`` itself."""
    body = {
        "seq": event.seq,
        "id": event.id,
        "kind": event.kind,
        "artist_id": event.artist_id,
        "work_id": event.work_id,
        "actor_id": event.actor_id,
        "purposes": event.purposes,
        "basis": event.basis,
        "detail": event.detail,
        "created_at": canonical_time(event.created_at),
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


class LedgerWriter:
    """Appends events within one session; the head row stays locked until it commits."""

    def __init__(self, session: Session) -> None:
        self.session = session
        # Taking the write lock first (an UPDATE) serialises appenders on SQLite and PostgreSQL.
        session.execute(update(LedgerHead).where(LedgerHead.id == 1).values(seq=LedgerHead.seq))
        head = session.execute(select(LedgerHead).where(LedgerHead.id == 1)).scalar_one()
        self.head = head

    def append(self, kind: str, artist_id: str, actor_id: str, work_id: str | None = None,
               purposes: Iterable[str] = (), basis: str = "", detail: dict[str, Any] | None = None,
               at: datetime | None = None) -> ConsentEvent:
        """Add one event after the head and move the head to it."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        chosen = sorted(set(purposes))
        bad = [p for p in chosen if p not in PURPOSES]
        if bad:
            raise ValueError(f"unknown purpose(s) {bad}")
        event = ConsentEvent(
            seq=self.head.seq + 1,
            id=uuid.uuid4().hex,
            kind=kind,
            artist_id=artist_id,
            work_id=work_id,
            actor_id=actor_id,
            purposes=",".join(chosen),
            basis=basis,
            detail=canonical_json(detail or {}),
            created_at=(at or utcnow()).astimezone(UTC),
            prev_hash=self.head.hash,
        )
        event.hash = event_hash(event)
        self.session.add(event)
        self.head.seq = event.seq
        self.head.hash = event.hash
        return event


def writer(session: Session) -> LedgerWriter:
    """The session's ledger writer (created, and the head locked, on first use)."""
    existing = session.info.get(_WRITER_KEY)
    if existing is None or existing.session is not session:
        existing = LedgerWriter(session)
        session.info[_WRITER_KEY] = existing
    return existing


def lock(session: Session) -> LedgerWriter:
    """Take the ledger lock for this transaction (held until commit or rollback).

    Writers that check something before appending (ingest: "does this match a registered
    work?") take it first, so the check and the append are one serial step. On SQLite, make it
    the transaction's first statement: a transaction that read first cannot always upgrade.
    """
    return writer(session)


def append_event(session: Session, kind: str, artist_id: str, actor_id: str,
                 work_id: str | None = None, purposes: Iterable[str] = (), basis: str = "",
                 detail: dict[str, Any] | None = None, at: datetime | None = None) -> ConsentEvent:
    """Append one consent event (see ``LedgerWriter.append``); it is written at commit."""
    return writer(session).append(kind, artist_id, actor_id, work_id=work_id, purposes=purposes,
                                  basis=basis, detail=detail, at=at)


def registration_detail(work: Work) -> dict[str, Any]:
    """What a ``register`` event records about a work (``verify_log`` compares it with the row)."""
    return {"owner_id": work.owner_id, "sha256": work.sha256, "pdq": work.pdq,
            "license_spdx": work.license_spdx, "source": work.source, "title": work.title}


@dataclass
class VerifyReport:
    """The outcome of ``verify_log``: ``ok`` when the chain and the works agree."""

    events: int = 0
    works: int = 0
    problems: list[str] = field(default_factory=list)
    head_hash: str = GENESIS_HASH

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_log(session: Session, batch: int = 5000) -> VerifyReport:
    """Recompute the whole chain and cross-check every work with its registration event."""
    report = VerifyReport()
    expected_seq, prev = 1, GENESIS_HASH
    registered: dict[str, dict[str, Any]] = {}
    rows = session.execute(select(ConsentEvent).order_by(ConsentEvent.seq)
                           .execution_options(yield_per=batch)).scalars()
    for event in rows:
        report.events += 1
        where = f"event #{event.seq} ({event.id})"
        if event.seq != expected_seq:
            report.problems.append(f"{where}: expected seq {expected_seq}; events are missing")
        if event.prev_hash != prev:
            report.problems.append(f"{where}: prev_hash does not match the event before it")
        if event_hash(event) != event.hash:
            report.problems.append(f"{where}: contents do not match its hash (edited)")
        if event.kind == "register" and event.work_id is not None:
            try:
                registered[event.work_id] = json.loads(event.detail)
            except ValueError:
                report.problems.append(f"{where}: detail is not JSON")
        expected_seq, prev = event.seq + 1, event.hash
        report.head_hash = event.hash
    head = session.execute(select(LedgerHead).where(LedgerHead.id == 1)).scalar_one_or_none()
    if head is None:
        report.problems.append("ledger head row is missing")
    elif head.seq != expected_seq - 1 or head.hash != prev:
        report.problems.append(f"ledger head says #{head.seq} {head.hash[:12]}…, chain ends at "
                               f"#{expected_seq - 1} {prev[:12]}…: events were removed or added")
    for work in session.execute(select(Work).order_by(Work.pk)
                                .execution_options(yield_per=batch)).scalars():
        report.works += 1
        detail = registered.pop(work.id, None)
        if detail is None:
            report.problems.append(f"work {work.id}: no registration event in the ledger")
            continue
        for key, value in registration_detail(work).items():
            if detail.get(key) != value:
                report.problems.append(f"work {work.id}: {key} is {value!r} but was registered "
                                       f"as {detail.get(key)!r}")
    for work_id in registered:
        report.problems.append(f"work {work_id}: registered in the ledger but missing from works")
    return report
