"""Who may train, use, share and withdraw a personal style; credits for its outputs.

Consent is asked of ``easel.registry.policy`` only (``decide_many`` for ``train_style``), at
training time *and* at every use: a style whose works no longer all allow ``train_style`` is
withdrawn the moment anyone asks (and the registry calls ``withdraw_unconsented`` when consent
is revoked or an artist opts out), so generation with it stops at once. Withdrawal deletes the
adapter files; the style's row, its items and its credits stay, so past outputs stay verifiable.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from easel.errors import BadInput, NotFound, PermissionDenied
from easel.registry import policy
from easel.registry.models import Artist, Work, utcnow
from easel.style.models import VISIBILITIES, PersonalStyle, StyleCredit, StyleItem, StyleShare

PURPOSE = "train_style"
MIN_STYLE_WORKS = 3
"""Fewest works a style may be trained from: below that an adapter can only memorise (issue 7
asks for 20–50; three keeps the tests small)."""
MAX_STYLE_WORKS = 500
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEFAULT_NAME = "default"
_PENDING_DELETE = "easel.style.pending_delete"


def check_name(name: str) -> str:
    """Return a valid style name or raise ``BadInput``."""
    if not NAME.match(name):
        raise BadInput(f"style name {name!r} is not valid",
                       hint="use 1-64 lower-case letters, digits, '_' or '-'")
    return name


def style_tag(artist_id: str, name: str) -> str:
    """The words appended to prompts for this style (what the adapter is trained with)."""
    return f"{artist_id} style" if name == DEFAULT_NAME else f"{artist_id} {name} style"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``artist:A`` or ``artist:A/name`` → (A, name or None)."""
    if not ref.startswith("artist:") or not ref[len("artist:"):]:
        raise BadInput(f"personal style {ref!r} is not of the form artist:ARTIST[/NAME]")
    body = ref[len("artist:"):]
    artist, _, name = body.partition("/")
    return artist, (check_name(name) if name else None)


# Acting users -------------------------------------------------------------------------------
def identify(session: Session, name: str, key: str | None) -> str:
    """Prove that the caller is ``name``: an artist by their registry API key, or a server
    account by one of its API keys. Returns the name; raises ``PermissionDenied`` otherwise."""
    from easel.registry.service import authenticate

    if session.get(Artist, name) is not None:
        if not key:
            raise PermissionDenied(f"no API key for artist {name!r}", hint="pass --key or set EASEL_API_KEY")
        authenticate(session, name, key)
        return name
    from easel.server.accounts import user_for_api_key

    user = user_for_api_key(session, key) if key else None
    if user is None or user.username != name:
        raise PermissionDenied(f"cannot act as {name!r}: no such artist, or the key is not theirs",
                               hint="pass the user's API key with --key (or EASEL_API_KEY)")
    return name


def known_user(session: Session, name: str) -> bool:
    """Whether ``name`` is a registered artist or a server account."""
    if session.get(Artist, name) is not None:
        return True
    from easel.server.models import User

    return session.scalar(select(User.id).where(User.username == name)) is not None


# Training eligibility -----------------------------------------------------------------------
@dataclass
class Eligible:
    """The works a style may be trained from now, the consent event that allows each, and the
    works of the artist that were left out (work id → why)."""

    works: list[Work]
    consent: dict[str, str]
    skipped: dict[str, str]


def eligible_works(session: Session, artist_id: str, work_ids: Sequence[str] | None = None) -> Eligible:
    """The works ``artist_id`` may train a style from: owned by them, registered (every
    registered work passed ingest) and allowed for ``train_style`` by the policy now.

    With ``work_ids``, every named work must qualify, else ``PermissionDenied`` names the ones
    that do not; without, all of the artist's works that qualify are taken and the rest listed
    in ``skipped``. Raises ``BadInput`` when fewer than ``MIN_STYLE_WORKS`` remain.
    """
    if session.get(Artist, artist_id) is None:
        raise NotFound(f"artist {artist_id!r} is not registered")
    if work_ids:
        wanted = list(dict.fromkeys(work_ids))
        found = {w.id: w for w in session.execute(select(Work).where(Work.id.in_(wanted))).scalars()}
        problems = [f"{wid}: not a registered work" for wid in wanted if wid not in found]
        problems += [f"{w.id}: owned by {w.owner_id!r}, not {artist_id!r}" for w in found.values()
                     if w.owner_id != artist_id]
        works = [found[wid] for wid in wanted if wid in found and found[wid].owner_id == artist_id]
    else:
        problems = []
        works = list(session.execute(select(Work).where(Work.owner_id == artist_id)
                                     .order_by(Work.pk)).scalars())
    decisions = policy.decide_many(session, works, PURPOSE)
    refused = {w.id: decisions[w.id].reason for w in works if not decisions[w.id].allowed}
    if work_ids:
        problems += [f"{wid}: {why}" for wid, why in refused.items()]
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise PermissionDenied(f"{len(problems)} work(s) may not train a style of {artist_id!r}: {shown}",
                                   hint="a style learns only from its artist's own works that allow "
                                        "train_style")
    allowed = [w for w in works if decisions[w.id].allowed]
    if len(allowed) < MIN_STYLE_WORKS:
        raise BadInput(f"artist {artist_id!r} has {len(allowed)} work(s) that allow train_style; "
                       f"a style needs at least {MIN_STYLE_WORKS}",
                       hint="register more works, or grant train_style on them")
    if len(allowed) > MAX_STYLE_WORKS:
        raise BadInput(f"{len(allowed)} works is more than a style takes ({MAX_STYLE_WORKS})",
                       hint="choose works with --works")
    consent = {w.id: str(decisions[w.id].event_id) for w in allowed}
    return Eligible(allowed, consent, refused)


# Styles ----------------------------------------------------------------------------------
def new_style_id() -> str:
    return "st_" + uuid.uuid4().hex[:20]


def find_style(session: Session, artist_id: str, name: str | None) -> PersonalStyle:
    """The style ``artist:<artist_id>/<name>``; without a name, the artist's only active style
    (or, when none is active, their latest, so that callers can say it was withdrawn)."""
    query = select(PersonalStyle).where(PersonalStyle.artist_id == artist_id)
    if name is not None:
        style = session.scalar(query.where(PersonalStyle.name == name))
        if style is None:
            raise NotFound(f"artist {artist_id!r} has no style named {name!r}",
                           hint=f"see `easel style list --artist {artist_id}`")
        return style
    active = list(session.scalars(query.where(PersonalStyle.status == "active")))
    if len(active) == 1:
        return active[0]
    if not active:
        latest = session.scalar(query.order_by(PersonalStyle.pk.desc()).limit(1))
        if latest is not None:
            return latest  # withdrawn: the caller says so, with the reason
        raise NotFound(f"artist {artist_id!r} has no active personal style",
                       hint="the artist trains one with `easel style train`")
    raise BadInput(f"artist {artist_id!r} has {len(active)} styles: "
                   + ", ".join(sorted(s.ref for s in active)), hint="name one: artist:ARTIST/NAME")


def record_style(session: Session, style_id: str, artist_id: str, name: str, adapter_path: Path,
                 manifest: dict[str, Any], manifest_sha256: str, eligible: Eligible) -> PersonalStyle:
    """Insert the style row and its items (the adapter directory is already written)."""
    existing = session.scalar(select(PersonalStyle).where(PersonalStyle.artist_id == artist_id,
                                                          PersonalStyle.name == name))
    if existing is not None:
        raise BadInput(f"artist {artist_id!r} already has a style named {name!r} ({existing.status})",
                       hint="choose another --name, or `easel style delete` it first")
    style = PersonalStyle(id=style_id, artist_id=artist_id, name=name, adapter_path=str(adapter_path),
                          base_model_id=manifest["base_model"]["model_id"],
                          base_model_sha256=manifest["base_model"]["unet_sha256"],
                          manifest_sha256=manifest_sha256, style_tag=manifest["style_tag"],
                          attribution=manifest["attribution"], visibility="private", commercial=False,
                          status="active")
    session.add(style)
    session.flush()
    session.add_all(StyleItem(style_pk=style.pk, work_pk=w.pk, consent_event_id=eligible.consent[w.id])
                    for w in eligible.works)
    session.flush()
    return style


def _delete_after_commit(session: Session, path: Path) -> None:
    """Delete ``path`` when the transaction commits (a rolled-back withdrawal keeps it)."""
    pending: list[Path] | None = session.info.get(_PENDING_DELETE)
    if pending is None:
        pending = session.info[_PENDING_DELETE] = []

        def _delete(sess: Session) -> None:
            for folder in sess.info.pop(_PENDING_DELETE, []):
                shutil.rmtree(folder, ignore_errors=True)

        def _forget(sess: Session) -> None:
            sess.info.pop(_PENDING_DELETE, None)

        event.listen(session, "after_commit", _delete, once=True)
        event.listen(session, "after_rollback", _forget, once=True)
    pending.append(path)


def withdraw(session: Session, style: PersonalStyle, reason: str) -> PersonalStyle:
    """Withdraw ``style``: status ``withdrawn`` now, adapter files deleted at commit.

    Its row, items and credits stay, so the generation log and credentials of past outputs
    keep resolving."""
    if style.status != "withdrawn":
        style.status = "withdrawn"
        style.withdrawn_at = utcnow()
        style.withdrawn_reason = reason
        session.flush()
    _delete_after_commit(session, Path(style.adapter_path))
    return style


def unconsented_items(session: Session, style: PersonalStyle) -> dict[str, str]:
    """Work id → reason for each of the style's works that no longer allows ``train_style``."""
    works = list(session.scalars(select(Work).join(StyleItem, StyleItem.work_pk == Work.pk)
                                 .where(StyleItem.style_pk == style.pk)))
    if not works:
        return {"(none)": "the style has no recorded works"}
    decided = policy.decide_many(session, works, PURPOSE)
    return {wid: d.reason for wid, d in decided.items() if not d.allowed}


def withdraw_unconsented(session: Session, artist_id: str) -> list[PersonalStyle]:
    """Withdraw every active style of ``artist_id`` trained on a work that no longer allows
    ``train_style``; returns them. The registry calls this after a revocation or opt-out."""
    session.flush()  # the consent event just appended must be visible to the policy
    withdrawn = []
    for style in session.scalars(select(PersonalStyle).where(PersonalStyle.artist_id == artist_id,
                                                             PersonalStyle.status == "active")).all():
        gone = unconsented_items(session, style)
        if gone:
            wid, why = next(iter(gone.items()))
            withdraw(session, style, f"train_style no longer allowed for {len(gone)} work(s), "
                                     f"e.g. {wid}: {why}")
            withdrawn.append(style)
    return withdrawn


def may_use(style: PersonalStyle, user: str | None, shared_with: set[str]) -> bool:
    """The visibility rule alone: private → the artist; shared → the artist and the named
    users; public → anyone."""
    if style.visibility == "public":
        return True
    if user is None:
        return False
    if user == style.artist_id:
        return True
    return style.visibility == "shared" and user in shared_with


def shares(session: Session, style: PersonalStyle) -> set[str]:
    return set(session.scalars(select(StyleShare.grantee).where(StyleShare.style_pk == style.pk)))


@dataclass(frozen=True)
class StyleUse:
    """What a generator needs from an allowed style (detached from the session)."""

    style_id: str
    ref: str
    artist_id: str
    adapter_path: Path
    style_tag: str
    attribution: str
    commercial: bool
    base_model_id: str
    base_model_sha256: str
    user: str | None


def check_use(session: Session, ref: str, user: str | None) -> StyleUse:
    """May ``user`` (None: anonymous) generate with style ``ref`` now? Returns what to load,
    or raises ``PermissionDenied``/``NotFound`` saying why. Checked at every call: the style
    must be active, its adapter present, every work it learned from must still allow
    ``train_style`` (else it is withdrawn here and now), and the visibility rule must admit
    ``user``."""
    artist_id, name = parse_ref(ref)
    style = find_style(session, artist_id, name)
    if style.status != "active":
        raise PermissionDenied(f"style {style.ref} was withdrawn ({style.withdrawn_reason})",
                               hint="it can no longer be used; past outputs stay verifiable")
    gone = unconsented_items(session, style)
    if gone:
        wid, why = next(iter(gone.items()))
        withdraw(session, style, f"train_style no longer allowed for {len(gone)} work(s), e.g. {wid}: {why}")
        session.commit()  # the withdrawal stands even though this call is refused
        raise PermissionDenied(f"style {style.ref} was withdrawn: {style.withdrawn_reason}")
    if not may_use(style, user, shares(session, style)):
        who = f"user {user!r}" if user else "an anonymous user (no --as)"
        raise PermissionDenied(f"style {style.ref} is {style.visibility}: {who} may not use it",
                               hint="ask the artist to share it with you, or act --as a user it is "
                                    "shared with")
    if not (Path(style.adapter_path) / "adapter_model.safetensors").exists():
        raise PermissionDenied(f"style {style.ref}: its adapter files are missing from {style.adapter_path}",
                               hint="the style cannot be used; the artist may train it again")
    return StyleUse(style.id, style.ref, style.artist_id, Path(style.adapter_path), style.style_tag,
                    style.attribution, style.commercial, style.base_model_id, style.base_model_sha256, user)


def record_credit(session: Session, use: StyleUse, generation_id: str) -> StyleCredit:
    """One credit row for one output; refuses (so nothing is published) if the style was
    withdrawn since the generation began."""
    status = session.scalar(select(PersonalStyle.status).where(PersonalStyle.id == use.style_id))
    if status != "active":
        raise PermissionDenied(f"style {use.ref} was withdrawn while generating; the image was not published")
    credit = StyleCredit(style_id=use.style_id, artist_id=use.artist_id, generation_id=generation_id,
                         user=use.user, commercial=use.commercial)
    session.add(credit)
    return credit


def credits(session: Session, artist_id: str) -> list[StyleCredit]:
    """Every credit to ``artist_id``, oldest first."""
    return list(session.scalars(select(StyleCredit).where(StyleCredit.artist_id == artist_id)
                                .order_by(StyleCredit.pk)))


def credit_counts(session: Session, artist_id: str) -> dict[str, int]:
    """Style id → number of credited outputs for ``artist_id``."""
    rows = session.execute(select(StyleCredit.style_id, func.count(StyleCredit.pk))
                           .where(StyleCredit.artist_id == artist_id).group_by(StyleCredit.style_id))
    return {sid: int(n) for sid, n in rows}


# Owner controls -----------------------------------------------------------------------------
def owned_style(session: Session, actor: str, ref: str) -> PersonalStyle:
    """The style ``ref`` if ``actor`` is its artist, else ``PermissionDenied``."""
    artist_id, name = parse_ref(ref)
    style = find_style(session, artist_id, name)
    if style.artist_id != actor:
        raise PermissionDenied(f"{actor!r} is not the artist of {style.ref}; nothing was changed")
    return style


def set_visibility(session: Session, style: PersonalStyle, visibility: str,
                   commercial: bool | None = None) -> PersonalStyle:
    """Set who may use the style, and optionally whether outputs may be used commercially."""
    if visibility not in VISIBILITIES:
        raise BadInput(f"visibility {visibility!r} is not one of {', '.join(VISIBILITIES)}")
    if style.status != "active":
        raise BadInput(f"style {style.ref} is withdrawn; its settings can no longer change")
    style.visibility = visibility
    if commercial is not None:
        style.commercial = commercial
    session.flush()
    return style


def share(session: Session, style: PersonalStyle, users: Sequence[str], revoke: bool = False) -> set[str]:
    """Share the style with ``users`` (or stop sharing); makes a private style ``shared``.
    Returns the users it is shared with afterwards."""
    if style.status != "active":
        raise BadInput(f"style {style.ref} is withdrawn; it cannot be shared")
    current = shares(session, style)
    for user in users:
        if revoke:
            row = session.get(StyleShare, (style.pk, user))
            if row is not None:
                session.delete(row)
                current.discard(user)
            continue
        if not known_user(session, user):
            raise NotFound(f"user {user!r} is not a registered artist or account")
        if user not in current:
            session.add(StyleShare(style_pk=style.pk, grantee=user))
            current.add(user)
    if not revoke and style.visibility == "private":
        style.visibility = "shared"
    session.flush()
    return current


def list_styles(session: Session, artist_id: str | None = None) -> list[PersonalStyle]:
    """Styles (of one artist, or all), oldest first."""
    query = select(PersonalStyle).order_by(PersonalStyle.pk)
    if artist_id is not None:
        query = query.where(PersonalStyle.artist_id == artist_id)
    return list(session.scalars(query))
