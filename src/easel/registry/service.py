"""Registry operations: artists and their keys, ingest with match checks, consent changes.

Every function takes an open session and leaves committing to the caller (``registry_session``
commits on success and rolls back on any error, so a refused operation changes nothing).
Ownership is checked here: only a work's owner, authenticated by their API key, may change its
consent. Whether a work may be *used* is never decided here — that is ``policy.may_use``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from easel.errors import BadInput, NotFound, PermissionDenied
from easel.registry import policy
from easel.registry.fingerprint import PDQ_MATCH_DISTANCE, Fingerprint, fingerprint
from easel.registry.index import BinaryIndex, add_to_pdq_index, pdq_index
from easel.registry.ledger import append_event, lock, registration_detail
from easel.registry.models import PURPOSES, Artist, ConsentEvent, Work
from easel.registry.validate import LoadedImage, load_image

ARTIST_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
SPDX_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
               "image/svg+xml": ".svg"}


# Artists ---------------------------------------------------------------------------------
def hash_api_key(key: str) -> str:
    """``scrypt$salt$digest`` of an API key; only this is stored."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_api_key(key: str, stored: str | None) -> bool:
    """Whether ``key`` matches a stored ``hash_api_key`` value (constant-time compare)."""
    if not stored or not key:
        return False
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = hashlib.scrypt(key.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(actual.hex(), digest)


def add_artist(session: Session, artist_id: str, name: str,
               contact: str | None = None) -> tuple[Artist, str]:
    """Create an artist; returns it and its new API key (shown once, stored only hashed)."""
    if not ARTIST_ID.match(artist_id):
        raise BadInput(f"artist id {artist_id!r} is not valid",
                       hint="use 2-64 lower-case letters, digits, '.', '_' or '-'")
    if not name.strip():
        raise BadInput("artist name is empty")
    if contact is not None and "@" not in contact:
        raise BadInput(f"contact {contact!r} is not an e-mail address")
    if session.get(Artist, artist_id) is not None:
        raise BadInput(f"artist {artist_id!r} already exists", hint="choose another id")
    key = "ek_" + secrets.token_urlsafe(24)
    artist = Artist(id=artist_id, name=name.strip(), contact=contact, contact_verified=False,
                    api_key_hash=hash_api_key(key))
    session.add(artist)
    session.flush()
    return artist, key


def get_artist(session: Session, artist_id: str) -> Artist:
    """The artist ``artist_id`` or ``NotFound``."""
    artist = session.get(Artist, artist_id)
    if artist is None:
        raise NotFound(f"no artist {artist_id!r}", hint="see `easel registry artist list`")
    return artist


def authenticate(session: Session, artist_id: str, api_key: str) -> Artist:
    """The artist, if ``api_key`` is theirs; ``PermissionDenied`` otherwise."""
    artist = get_artist(session, artist_id)
    if not check_api_key(api_key, artist.api_key_hash):
        raise PermissionDenied(f"the API key given is not {artist_id}'s",
                               hint="pass the key printed by `easel registry artist add`")
    return artist


def get_work(session: Session, work_id: str) -> Work:
    """The work ``work_id`` or ``NotFound``."""
    work = session.execute(select(Work).where(Work.id == work_id)).scalar_one_or_none()
    if work is None:
        raise NotFound(f"no work {work_id!r}", hint="see `easel registry work list`")
    return work


# Checking and ingest --------------------------------------------------------------------
@dataclass(frozen=True)
class Conflict:
    """A registered work an upload matches, and why that matters."""

    work_id: str
    owner_id: str
    distance: int
    variant: str  # which rotation/mirror of the upload matched ("identity", "flip", ...)
    reason: str  # "another owner's work", "opted-out work" or "same owner"
    refuses: bool


@dataclass
class CheckResult:
    """What ``check`` found: the fingerprint, every match, and whether it would be accepted."""

    image: LoadedImage
    fingerprint: Fingerprint
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def refusing(self) -> list[Conflict]:
        return [c for c in self.conflicts if c.refuses]

    @property
    def accepted(self) -> bool:
        return not self.refusing

    def summary(self) -> str:
        if self.accepted:
            return "accepted"
        first = self.refusing[0]
        return (f"matches {first.reason} {first.work_id} (owner {first.owner_id}) at PDQ distance "
                f"{first.distance} ({first.variant})")


class Ingestor:
    """Checks and registers works against the saved index plus those added in this session.

    Call ``ingest`` for each work, commit the session, then ``finish`` to update the index
    files (a crash in between leaves the files stale, and the next look-up rebuilds them).
    """

    def __init__(self, session: Session, index_folder: Path, store_dir: Path | None = None) -> None:
        self.session = session
        self.index_folder = index_folder
        self.store_dir = store_dir
        self.pending = BinaryIndex()
        self.pending_works: dict[int, Work] = {}
        self.added: list[Work] = []
        self._saved: BinaryIndex | None = None
        from easel.audit.guard import IngestDescriptors  # copy descriptors (audit stage)

        self.descriptors = IngestDescriptors(session, index_folder)

    def saved_index(self) -> BinaryIndex:
        """The on-disk index as of this session's start (works added since are in ``pending``)."""
        if self._saved is None:
            self._saved = pdq_index(self.session, self.index_folder)
        return self._saved

    def check(self, image: LoadedImage, owner_id: str | None,
              fp: Fingerprint | None = None) -> CheckResult:
        """Find every registered work ``image`` matches (fingerprinting it unless ``fp`` is given)."""
        from easel.registry.fingerprint import DIHEDRAL_NAMES

        fp = fp or fingerprint(image.image)
        result = CheckResult(image, fp)
        found: dict[int, tuple[int, str]] = {}
        for work in self.session.execute(select(Work).where(Work.sha256 == image.sha256)).scalars():
            found[work.pk] = (0, "identical bytes")
        for work in self.added:
            if work.sha256 == image.sha256:
                found[work.pk] = (0, "identical bytes")
        if fp.usable:
            queries = np.frombuffer(b"".join(fp.dihedral), np.uint8).reshape(len(fp.dihedral), -1)
            hits = self.saved_index().search(queries, PDQ_MATCH_DISTANCE)
            hits += self.pending.search(queries, PDQ_MATCH_DISTANCE)
            for hit in hits:
                if hit.key not in found or hit.distance < found[hit.key][0]:
                    found[hit.key] = (hit.distance, DIHEDRAL_NAMES[hit.query])
        self.descriptors.check(image.sha256, image.image, fp.dihedral, found)
        if not found:
            return result
        works = {w.pk: w for w in self.session.execute(
            select(Work).where(Work.pk.in_(list(found)))).scalars()}
        works.update({pk: w for pk, w in self.pending_works.items() if pk in found})
        protected = policy.opted_out(self.session, list(works.values()))
        for pk, (distance, variant) in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0])):
            match = works.get(pk)
            if match is None:
                continue  # the index was ahead of the database; the next rebuild drops it
            if owner_id is not None and match.owner_id != owner_id:
                reason, refuses = "another owner's work", True
            elif match.id in protected:
                reason, refuses = "opted-out work", True
            elif owner_id is None:
                reason, refuses = "registered work", True
            else:
                reason, refuses = "same owner's work", distance == 0 and variant == "identical bytes"
            result.conflicts.append(Conflict(match.id, match.owner_id, distance, variant, reason, refuses))
        return result

    def ingest(self, data: bytes, owner: Artist, title: str, license_spdx: str,
               attribution: str = "", source: str | None = None, name: str = "image",
               loaded: LoadedImage | None = None, fp: Fingerprint | None = None) -> Work:
        """Validate, fingerprint, check and register one work, with its registration event.

        The check and the insert run under the ledger lock (``ledger.lock``), so two concurrent
        uploads of one picture by two owners cannot both pass. Pass ``loaded``/``fp`` (from
        ``prepare``) to do the CPU work before taking the lock.

        Raises ``BadInput`` for a bad image or field, ``PermissionDenied`` naming the matched
        work id and distance when it matches another owner's work or an opted-out work.
        """
        if not title.strip():
            raise BadInput("title is empty")
        if not SPDX_LIKE.match(license_spdx):
            raise BadInput(f"licence {license_spdx!r} is not an SPDX identifier",
                           hint="e.g. CC-BY-4.0, MIT, Apache-2.0, or LicenseRef-proprietary")
        if source is not None and self.session.execute(
                select(Work.id).where(Work.source == source)).first() is not None:
            raise BadInput(f"source {source!r} is already registered")
        image = loaded or load_image(data, name)
        fp = fp or fingerprint(image.image)
        lock(self.session)
        result = self.check(image, owner.id, fp)
        if not result.accepted:
            first = result.refusing[0]
            if first.reason == "same owner's work":
                raise BadInput(f"{name} is already registered as work {first.work_id}")
            raise PermissionDenied(f"{name} refused: {result.summary()}",
                                   hint="only the owner may register a work; opted-out works "
                                        "are protected")
        work = Work(id="wk_" + uuid.uuid4().hex[:20], owner_id=owner.id, title=title.strip(),
                    license_spdx=license_spdx, attribution=attribution, source=source,
                    sha256=image.sha256, media_type=image.media_type, width=image.width,
                    height=image.height, pdq=fp.pdq_hex, pdq_quality=fp.quality,
                    pdq_dihedral=fp.dihedral_hex)
        if self.store_dir is not None:
            work.stored_path = str(self._store(image))
        self.session.add(work)
        self.session.flush()
        append_event(self.session, "register", artist_id=owner.id, actor_id=owner.id,
                     work_id=work.id, basis=f"licence:{license_spdx}",
                     detail=registration_detail(work))
        if fp.usable:
            self.pending.add([work.pk], np.frombuffer(fp.pdq, np.uint8))
        self.pending_works[work.pk] = work
        self.added.append(work)
        self.descriptors.add(work.pk, image.sha256, image.image)
        return work

    def _store(self, image: LoadedImage) -> Path:
        assert self.store_dir is not None
        ext = _EXTENSIONS.get(image.media_type, ".bin")
        path = self.store_dir / image.sha256[:2] / f"{image.sha256}{ext}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(image.data)
            tmp.replace(path)
        return path

    def finish(self) -> None:
        """After the session committed: put the new works into the saved index."""
        if self.added:
            # A short session of its own: the ingest session is committed and closed by now.
            with Session(self.session.get_bind()) as session:
                add_to_pdq_index(session, self.index_folder, self.added)
            self.descriptors.finish()
        self.pending = BinaryIndex()
        self.pending_works.clear()
        self.added.clear()
        self._saved = None


def prepare(data: bytes, name: str = "image") -> tuple[LoadedImage, Fingerprint]:
    """Validate and fingerprint an upload (no database work)."""
    loaded = load_image(data, name)
    return loaded, fingerprint(loaded.image)


# Consent --------------------------------------------------------------------------------
def _purposes(purposes: Iterable[str]) -> list[str]:
    chosen = sorted(set(purposes))
    if not chosen:
        raise BadInput("no purpose given", hint=f"choose from {', '.join(PURPOSES)}")
    for p in chosen:
        policy.check_purpose(p)
    return chosen


def _owned(session: Session, actor: Artist, work_id: str) -> Work:
    work = get_work(session, work_id)
    if work.owner_id != actor.id:
        raise PermissionDenied(f"artist {actor.id!r} does not own work {work_id} "
                               f"(its owner is {work.owner_id!r}); nothing was changed")
    return work


def change_consent(session: Session, actor: Artist, kind: str, purposes: Iterable[str],
                   work_id: str | None = None) -> ConsentEvent:
    """Record a ``grant`` or ``revoke`` by ``actor`` for one work, or artist-wide if no work."""
    if kind not in ("grant", "revoke"):
        raise ValueError(kind)
    chosen = _purposes(purposes)
    if work_id is not None:
        work = _owned(session, actor, work_id)
        if kind == "grant" and work.id in policy.opted_out(session, [work]):
            raise PermissionDenied(f"work {work_id} is opted out of AI use",
                                   hint="undo the opt-out first: `easel registry optout --undo`")
    event = append_event(session, kind, artist_id=actor.id, actor_id=actor.id, work_id=work_id,
                         purposes=chosen, basis="owner")
    if kind == "revoke" and "train_style" in chosen:
        _withdraw_styles(session, actor.id)
    return event


def _withdraw_styles(session: Session, artist_id: str) -> None:
    """Withdraw the artist's personal styles that their consent no longer allows (issue 7)."""
    from easel.style.service import withdraw_unconsented

    withdraw_unconsented(session, artist_id)


def set_optout(session: Session, actor: Artist, work_id: str | None = None,
               undo: bool = False) -> ConsentEvent:
    """Opt a work (or every work of ``actor``) out of AI use ("No AI training"), or undo it."""
    if work_id is not None:
        _owned(session, actor, work_id)
    event = append_event(session, "optin" if undo else "optout", artist_id=actor.id,
                         actor_id=actor.id, work_id=work_id, purposes=PURPOSES if not undo else (),
                         basis="owner")
    if not undo:
        _withdraw_styles(session, actor.id)
    return event


def history(session: Session, work_id: str | None = None,
            artist_id: str | None = None) -> list[ConsentEvent]:
    """The consent events of a work (its own and its owner's artist-wide ones) or an artist."""
    query = select(ConsentEvent)
    if work_id is not None:
        work = get_work(session, work_id)
        query = query.where((ConsentEvent.work_id == work.id) | (
            ConsentEvent.work_id.is_(None) & (ConsentEvent.artist_id == work.owner_id)))
    elif artist_id is not None:
        get_artist(session, artist_id)
        query = query.where(ConsentEvent.artist_id == artist_id)
    return list(session.execute(query.order_by(ConsentEvent.seq)).scalars())


def register_work(url: str, data: bytes, artist_id: str, api_key: str, title: str,
                  license_spdx: str, attribution: str = "", source: str | None = None,
                  name: str = "image", store_dir: Path | None = None) -> Work:
    """Authenticate ``artist_id`` and ingest one work in its own transaction (for front doors).

    Returns the committed work; raises like ``Ingestor.ingest`` and ``authenticate``, in which
    case nothing was stored.
    """
    from easel.registry.store import index_dir, registry_session

    loaded, fp = prepare(data, name)  # the CPU work, before any lock is taken
    with registry_session(url) as session:
        lock(session)  # first statement: on SQLite the transaction starts as a writer
        owner = authenticate(session, artist_id, api_key)
        ingestor = Ingestor(session, index_dir(url), store_dir)
        work = ingestor.ingest(data, owner, title, license_spdx, attribution=attribution,
                               source=source, name=name, loaded=loaded, fp=fp)
    ingestor.finish()
    return work
