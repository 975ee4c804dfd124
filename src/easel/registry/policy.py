"""The one place consent is decided: may work W be used for purpose P at time T?

The answer comes from the consent ledger alone, read in order:

1. A work that is not registered (or was not yet registered at T) may not be used.
2. An opt-out ("No AI training") — on the work or artist-wide, and not undone by a later
   opt-in — refuses every purpose. It always wins over grants: a protected work stays protected.
3. The owner's latest explicit grant or revocation *of this work* for P decides.
4. Else the owner's latest artist-wide grant or revocation for P decides.
5. Else the licence the work was registered under decides (``LICENCE_DEFAULTS``): open
   licences allow every purpose with attribution; unknown or proprietary licences allow none.

``Decision.event_id`` is the event that decided (the registration event when the licence did),
and is what a corpus manifest records per item. Nothing else in Easel decides consent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from easel.errors import BadInput
from easel.registry.models import PURPOSES, ConsentEvent, Work

_ALL = frozenset(PURPOSES)
# SPDX ids (upper-cased) whose terms allow training and commercial use with attribution.
# Share-alike and attribution duties travel with the work into the manifest's attribution column.
# Non-commercial (-NC), no-derivatives (-ND), unknown and proprietary licences allow nothing
# by default: only the owner's explicit grant can.
LICENCE_DEFAULTS: dict[str, frozenset[str]] = {
    spdx.upper(): _ALL for spdx in (
        "CC0-1.0", "CC-BY-4.0", "CC-BY-3.0", "CC-BY-2.0", "CC-BY-SA-4.0", "CC-BY-SA-3.0",
        "MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "Unlicense",
    )
}


@dataclass(frozen=True)
class Decision:
    """Whether a use is allowed, why (one sentence), and the event that decided it."""

    allowed: bool
    reason: str
    event_id: str | None = None
    # Which rule decided: "unregistered", "optout", "work", "artist" or "licence".
    rule: str = "unregistered"


def licence_allows(spdx: str, purpose: str) -> bool:
    """Whether licence ``spdx`` allows ``purpose`` when the owner has said nothing."""
    return purpose in LICENCE_DEFAULTS.get(spdx.strip().upper(), frozenset())


def check_purpose(purpose: str) -> str:
    """Return ``purpose`` or raise ``BadInput`` naming the valid ones."""
    if purpose not in PURPOSES:
        raise BadInput(f"unknown purpose {purpose!r}", hint=f"choose one of {', '.join(PURPOSES)}")
    return purpose


def _decide(work: Work, own: Sequence[ConsentEvent], artist_wide: Sequence[ConsentEvent],
            purpose: str) -> Decision:
    """Apply the rules in the module docstring to one work's events (each list in seq order)."""
    registration: ConsentEvent | None = None
    optout: dict[str, ConsentEvent | None] = {"work": None, "artist": None}
    explicit: dict[str, ConsentEvent | None] = {"work": None, "artist": None}
    for level, events in (("work", own), ("artist", artist_wide)):
        for event in events:
            if event.kind == "register":
                registration = event
            elif event.kind == "optout":
                optout[level] = event
            elif event.kind == "optin":
                optout[level] = None
            elif event.kind in ("grant", "revoke") and purpose in event.purpose_list:
                explicit[level] = event
    if registration is None:
        return Decision(False, f"work {work.id} was not registered at that time")
    for level in ("work", "artist"):
        stop = optout[level]
        if stop is not None:
            scope = "this work" if level == "work" else f"all works of {work.owner_id}"
            return Decision(False, f"opted out of AI use ({scope}, event {stop.id})", stop.id,
                            "optout")
    for level in ("work", "artist"):
        said = explicit[level]
        if said is not None:
            scope = "for this work" if level == "work" else "artist-wide"
            verb = "granted" if said.kind == "grant" else "revoked"
            return Decision(said.kind == "grant",
                            f"{purpose} {verb} by {said.actor_id} {scope} (event {said.id})", said.id,
                            level)
    if licence_allows(work.license_spdx, purpose):
        return Decision(True, f"licence {work.license_spdx} allows {purpose} with attribution "
                              f"(registration event {registration.id})", registration.id, "licence")
    return Decision(False, f"licence {work.license_spdx!r} does not allow {purpose} and the owner "
                           "has not granted it", registration.id, "licence")


def _events_for(session: Session, works: Sequence[Work],
                at: datetime | None) -> tuple[dict[str, list[ConsentEvent]], dict[str, list[ConsentEvent]]]:
    by_work: dict[str, list[ConsentEvent]] = defaultdict(list)
    by_artist: dict[str, list[ConsentEvent]] = defaultdict(list)
    if not works:
        return by_work, by_artist
    owners = sorted({w.owner_id for w in works})
    query = select(ConsentEvent).where(ConsentEvent.artist_id.in_(owners))
    if len(works) <= 500:
        ids = [w.id for w in works]
        query = select(ConsentEvent).where(or_(
            ConsentEvent.work_id.in_(ids),
            (ConsentEvent.work_id.is_(None)) & ConsentEvent.artist_id.in_(owners)))
    if at is not None:
        query = query.where(ConsentEvent.created_at <= at.astimezone(UTC))
    for event in session.execute(query.order_by(ConsentEvent.seq)).scalars():
        if event.work_id is None:
            by_artist[event.artist_id].append(event)
        else:
            by_work[event.work_id].append(event)
    return by_work, by_artist


def decide_many(session: Session, works: Sequence[Work], purpose: str,
                at: datetime | None = None) -> dict[str, Decision]:
    """``may_use`` for many works at once (one query); returns work id → ``Decision``."""
    check_purpose(purpose)
    by_work, by_artist = _events_for(session, works, at)
    return {w.id: _decide(w, by_work.get(w.id, []), by_artist.get(w.owner_id, []), purpose)
            for w in works}


def may_use(session: Session, work_id: str, purpose: str, at: datetime | None = None) -> Decision:
    """May work ``work_id`` be used for ``purpose`` at ``at`` (default: now)?

    ``purpose`` is one of ``train_base``, ``train_style``, ``commercial_output``. An unknown
    work is never allowed. See the module docstring for the rules.
    """
    check_purpose(purpose)
    work = session.execute(select(Work).where(Work.id == work_id)).scalar_one_or_none()
    if work is None:
        return Decision(False, f"work {work_id!r} is not registered")
    return decide_many(session, [work], purpose, at)[work.id]


def works_by_source(session: Session, sources: Iterable[str]) -> dict[str, Work]:
    """Registered works keyed by their source reference (e.g. corpus item ids)."""
    wanted = list(dict.fromkeys(sources))
    found: dict[str, Work] = {}
    for start in range(0, len(wanted), 900):
        chunk = wanted[start:start + 900]
        for work in session.execute(select(Work).where(Work.source.in_(chunk))).scalars():
            assert work.source is not None
            found[work.source] = work
    return found


def decide_items(session: Session, item_ids: list[str], purpose: str,
                 at: datetime | None = None) -> dict[str, Decision]:
    """A ``Decision`` for each corpus item id (an unregistered item is not allowed)."""
    check_purpose(purpose)
    works = works_by_source(session, item_ids)
    decided = decide_many(session, list(works.values()), purpose, at)
    out: dict[str, Decision] = {}
    for item in item_ids:
        work = works.get(item)
        out[item] = (decided[work.id] if work is not None
                     else Decision(False, f"{item} is not a registered work"))
    return out


def disallowed_items(session: Session, item_ids: list[str], purpose: str) -> dict[str, str]:
    """Item id → reason for every corpus item that may not be used for ``purpose`` now.

    The trainer calls this before training; an empty result means every item is allowed.
    """
    return {item: d.reason for item, d in decide_items(session, item_ids, purpose).items()
            if not d.allowed}


def allowed_works(session: Session, purpose: str, at: datetime | None = None) -> dict[str, Decision]:
    """Every registered work allowed for ``purpose`` at ``at``: work id → ``Decision``."""
    works = list(session.execute(select(Work).order_by(Work.pk)).scalars())
    return {wid: d for wid, d in decide_many(session, works, purpose, at).items() if d.allowed}


def opted_out(session: Session, works: Sequence[Work]) -> dict[str, str]:
    """Work id → opt-out event id for each of ``works`` that is opted out of AI use now."""
    decided = decide_many(session, works, PURPOSES[0])
    return {wid: d.event_id for wid, d in decided.items() if d.rule == "optout" and d.event_id}
