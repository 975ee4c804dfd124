"""``easel registry …``: artists, works, consent, opt-outs, checks and the ledger.

Changes to a work or to consent act *as* an artist (``--as ID``), proven by that artist's API
key: ``--key``, else ``EASEL_API_KEY``, else the key file ``EASEL_HOME/keys/artists/ID.key``
that ``artist add`` and ``import-corpus`` write.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from easel.config import get_settings
from easel.errors import BadInput, EaselError, PermissionDenied

app = typer.Typer(help="The artwork registry: artists, works, consent and the consent ledger.",
                  no_args_is_help=True)
artist_app = typer.Typer(help="Register and list artists.", no_args_is_help=True)
work_app = typer.Typer(help="Register, list and show works.", no_args_is_help=True)
consent_app = typer.Typer(help="Grant or revoke consent, and show a work's consent history.",
                          no_args_is_help=True)
app.add_typer(artist_app, name="artist")
app.add_typer(work_app, name="work")
app.add_typer(consent_app, name="consent")

AS_OPTION = typer.Option(..., "--as", help="The artist acting (must own the work).")
KEY_OPTION = typer.Option(None, "--key", help="The acting artist's API key (default: "
                          "EASEL_API_KEY, then EASEL_HOME/keys/artists/ID.key).")
PURPOSE_HELP = "train_base, train_style or commercial_output (repeatable)."


def register(root: typer.Typer) -> None:
    """Add ``easel registry`` to the root CLI."""
    root.add_typer(app, name="registry")


def _key_for(artist_id: str, key: str | None) -> str:
    if key:
        return key
    if os.environ.get("EASEL_API_KEY"):
        return os.environ["EASEL_API_KEY"]
    path = get_settings().keys_dir / "artists" / f"{artist_id}.key"
    if path.exists():
        return path.read_text().strip()
    raise PermissionDenied(f"no API key for artist {artist_id!r}",
                           hint="pass --key or set EASEL_API_KEY")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc


# Artists ---------------------------------------------------------------------------------
@artist_app.command("add")
def artist_add(
    artist_id: str = typer.Argument(..., help="Short id, e.g. 'alice' (lower-case)."),
    name: str = typer.Option(..., "--name", help="Display name."),
    contact: str = typer.Option(None, "--contact", help="E-mail address (stored unverified)."),
    save_key: bool = typer.Option(True, help="Also save the key under EASEL_HOME/keys/artists."),
) -> None:
    """Register an artist and print their API key (shown once; only its hash is stored)."""
    from easel.registry.importer import save_key as write_key
    from easel.registry.service import add_artist
    from easel.registry.store import registry_session

    settings = get_settings()
    settings.ensure_home()
    with registry_session() as session:
        artist, key = add_artist(session, artist_id, name, contact)
    typer.echo(f"artist {artist.id} ({artist.name})")
    typer.echo(f"api key {key}")
    if save_key:
        typer.echo(f"key file {write_key(settings.keys_dir, artist.id, key)}")


@artist_app.command("list")
def artist_list() -> None:
    """List artists with their number of works."""
    from sqlalchemy import func, select

    from easel.registry.models import Artist, Work
    from easel.registry.store import registry_session

    with registry_session() as session:
        rows = session.execute(
            select(Artist.id, Artist.name, Artist.contact, func.count(Work.pk))
            .outerjoin(Work, Work.owner_id == Artist.id).group_by(Artist.id)
            .order_by(Artist.id)).all()
    typer.echo(f"{'artist':24s} {'works':>6s}  name")
    for artist_id, name, contact, count in rows:
        typer.echo(f"{artist_id:24s} {count:6d}  {name}" + (f" <{contact}>" if contact else ""))


# Works -----------------------------------------------------------------------------------
@work_app.command("add")
def work_add(
    image: Path = typer.Argument(..., help="PNG, JPEG, WebP or SVG file."),
    as_artist: str = AS_OPTION,
    key: str = KEY_OPTION,
    title: str = typer.Option(None, help="Title (default: the file name)."),
    license_spdx: str = typer.Option(..., "--license", help="SPDX id, e.g. CC-BY-4.0, or "
                                     "LicenseRef-proprietary."),
    attribution: str = typer.Option("", help="How to credit the work."),
    source: str = typer.Option(None, help="Where the work is published (URL)."),
) -> None:
    """Register a work: validate, fingerprint, refuse it if it matches another owner's work."""
    from easel.registry.service import register_work
    from easel.registry.store import registry_url

    data = _read(image)
    settings = get_settings()
    settings.ensure_home()
    work = register_work(registry_url(), data, as_artist, _key_for(as_artist, key),
                         title or image.stem, license_spdx, attribution=attribution,
                         source=source, name=image.name, store_dir=settings.home / "works")
    line = (f"work {work.id} registered for {work.owner_id} ({work.media_type}, "
            f"{work.width}x{work.height}, PDQ quality {work.pdq_quality})")
    typer.echo(line)


@work_app.command("list")
def work_list(
    artist: str = typer.Option(None, "--artist", help="Only this artist's works."),
    limit: int = typer.Option(50, help="How many to show (0 for all)."),
) -> None:
    """List works, newest first."""
    from sqlalchemy import select

    from easel.registry.models import Work
    from easel.registry.service import get_artist
    from easel.registry.store import registry_session

    with registry_session() as session:
        query = select(Work).order_by(Work.pk.desc())
        if artist:
            get_artist(session, artist)
            query = query.where(Work.owner_id == artist)
        if limit:
            query = query.limit(limit)
        works = list(session.execute(query).scalars())
    for work in works:
        typer.echo(f"{work.id}  {work.owner_id:20s} {work.license_spdx:14s} {work.title}")


@work_app.command("show")
def work_show(work_id: str = typer.Argument(..., help="Work id (wk_…).")) -> None:
    """Show a work, its fingerprints and what it may be used for now."""
    from easel.registry.models import PURPOSES
    from easel.registry.policy import may_use
    from easel.registry.service import get_work
    from easel.registry.store import registry_session

    with registry_session() as session:
        work = get_work(session, work_id)
        decisions = {p: may_use(session, work.id, p) for p in PURPOSES}
        typer.echo(f"work        {work.id}")
        typer.echo(f"title       {work.title}")
        typer.echo(f"owner       {work.owner_id}")
        typer.echo(f"licence     {work.license_spdx}")
        typer.echo(f"attribution {work.attribution}")
        typer.echo(f"source      {work.source or '-'}")
        typer.echo(f"content     {work.media_type} {work.width}x{work.height} sha256 {work.sha256}")
        typer.echo(f"pdq         {work.pdq} (quality {work.pdq_quality})")
        typer.echo(f"registered  {work.created_at.isoformat(timespec='seconds')}")
        for purpose, decision in decisions.items():
            verdict = "allowed" if decision.allowed else "NOT allowed"
            typer.echo(f"{purpose:18s} {verdict}: {decision.reason}")


# Consent ---------------------------------------------------------------------------------
def _consent(kind: str, work_id: str | None, all_works: bool, as_artist: str, key: str | None,
             purposes: list[str]) -> None:
    from easel.registry.ledger import lock
    from easel.registry.service import authenticate, change_consent
    from easel.registry.store import registry_session

    if (work_id is None) == (not all_works):
        raise BadInput("give either a WORK id or --all-works (an artist-wide default), not both")
    with registry_session() as session:
        lock(session)
        actor = authenticate(session, as_artist, _key_for(as_artist, key))
        event = change_consent(session, actor, kind, purposes or [], work_id)
        scope = f"work {work_id}" if work_id else f"all works of {actor.id}"
        line = f"{kind} {event.purposes} for {scope}: event {event.id} (#{event.seq})"
    typer.echo(line)


@consent_app.command("grant")
def consent_grant(
    work_id: str = typer.Argument(None, help="Work id; omit with --all-works."),
    purposes: list[str] = typer.Option(None, "--purpose", "-p", help=PURPOSE_HELP),
    all_works: bool = typer.Option(False, "--all-works", help="Artist-wide default."),
    as_artist: str = AS_OPTION,
    key: str = KEY_OPTION,
) -> None:
    """Allow a work (or all your works) to be used for the given purposes."""
    _consent("grant", work_id, all_works, as_artist, key, purposes)


@consent_app.command("revoke")
def consent_revoke(
    work_id: str = typer.Argument(None, help="Work id; omit with --all-works."),
    purposes: list[str] = typer.Option(None, "--purpose", "-p", help=PURPOSE_HELP),
    all_works: bool = typer.Option(False, "--all-works", help="Artist-wide default."),
    as_artist: str = AS_OPTION,
    key: str = KEY_OPTION,
) -> None:
    """Withdraw consent; the next corpus build leaves the work out."""
    _consent("revoke", work_id, all_works, as_artist, key, purposes)


@consent_app.command("history")
def consent_history(
    work_id: str = typer.Argument(None, help="Work id (its own and its owner's artist-wide events)."),
    artist: str = typer.Option(None, "--artist", help="All events of this artist instead."),
) -> None:
    """Show consent events in order, with their hashes."""
    from easel.registry.service import history
    from easel.registry.store import registry_session

    if (work_id is None) == (artist is None):
        raise BadInput("give either a WORK id or --artist")
    with registry_session() as session:
        events = history(session, work_id=work_id, artist_id=artist)
        for e in events:
            scope = e.work_id or f"all works of {e.artist_id}"
            typer.echo(f"#{e.seq:<6d} {e.created_at.isoformat(timespec='seconds')} {e.kind:8s} "
                       f"{e.purposes or '-':40s} {scope}  by {e.actor_id} [{e.basis}] "
                       f"{e.id} {e.hash[:12]}")


@app.command("optout")
def optout(
    work_id: str = typer.Argument(None, help="Work id; omit for all your works."),
    as_artist: str = AS_OPTION,
    key: str = KEY_OPTION,
    undo: bool = typer.Option(False, "--undo", help="Withdraw the opt-out."),
) -> None:
    """Mark a work (or all your works) "No AI training": never in a corpus, and protected from
    look-alike uploads by anyone."""
    from easel.registry.ledger import lock
    from easel.registry.service import authenticate, set_optout
    from easel.registry.store import registry_session

    with registry_session() as session:
        lock(session)
        actor = authenticate(session, as_artist, _key_for(as_artist, key))
        event = set_optout(session, actor, work_id, undo=undo)
        line = f"{event.kind} for {work_id or 'all works of ' + actor.id}: event {event.id}"
    typer.echo(line)


@app.command("may-use")
def may_use_cmd(
    work_id: str = typer.Argument(..., help="Work id."),
    purpose: str = typer.Option(..., "--purpose", "-p", help="train_base, train_style or "
                                "commercial_output."),
) -> None:
    """Ask the policy: may this work be used for this purpose now? (exit code 3 if not)"""
    from easel.registry.policy import may_use
    from easel.registry.store import registry_session

    with registry_session() as session:
        decision = may_use(session, work_id, purpose)
    if not decision.allowed:
        raise PermissionDenied(f"{work_id} may not be used for {purpose}: {decision.reason}")
    typer.echo(f"allowed: {decision.reason}")


@app.command("check")
def check(
    image: Path = typer.Argument(..., help="Image to check."),
    as_artist: str = typer.Option(None, "--as", help="Check as if this artist uploaded it."),
) -> None:
    """Would this image be accepted? Lists every registered work it matches, and why not."""
    from easel.registry.service import Ingestor, get_artist
    from easel.registry.store import index_dir, registry_session, registry_url
    from easel.registry.validate import load_image

    data = _read(image)
    url = registry_url()
    with registry_session(url) as session:
        if as_artist:
            get_artist(session, as_artist)
        loaded = load_image(data, image.name)
        result = Ingestor(session, index_dir(url)).check(loaded, as_artist)
    fp = result.fingerprint
    typer.echo(f"{image.name}: {loaded.media_type} {loaded.width}x{loaded.height}, "
               f"PDQ {fp.pdq_hex[:16]}… quality {fp.quality}")
    for c in result.conflicts:
        typer.echo(f"  matches {c.work_id} (owner {c.owner_id}) at distance {c.distance} "
                   f"[{c.variant}]: {c.reason}{' - refuses' if c.refuses else ''}")
    if result.accepted:
        typer.echo("would be accepted")
    else:
        raise PermissionDenied(f"{image.name} would be refused: {result.summary()}")


@app.command("verify-log")
def verify_log_cmd() -> None:
    """Recompute the consent ledger's hash chain and check every work against it."""
    from easel.registry.ledger import verify_log
    from easel.registry.store import registry_session

    with registry_session() as session:
        report = verify_log(session)
    for problem in report.problems[:50]:
        typer.echo(f"  {problem}", err=True)
    if report.ok:
        typer.echo(f"ok: {report.events} events and {report.works} works verified; "
                   f"head {report.head_hash}")
        return
    raise EaselError(f"TAMPERED: the consent ledger fails verification with "
                     f"{len(report.problems)} problem(s) in {report.events} events",
                     hint="restore the database from a backup and compare ledger heads")


@app.command("import-corpus")
def import_corpus_cmd(
    sets: list[str] = typer.Option(None, "--set", "-s", help="Set id (repeatable); default all fetched."),
    workers: int = typer.Option(0, help="Processes that render and hash icons; 0: one per core."),
) -> None:
    """Register the fetched emoji sets as artists and their icons as works, consent from licences."""
    from tqdm import tqdm

    from easel.corpus.sources import fetched_sets, resolve_sets
    from easel.errors import NotFound
    from easel.registry.importer import import_corpus
    from easel.registry.store import registry_url

    settings = get_settings()
    settings.ensure_home()
    available = {s.set_id: s for s in fetched_sets(settings.sources_dir)}
    if not available:
        raise NotFound("no emoji sets are fetched", hint="run `easel corpus fetch` first")
    chosen = resolve_sets(sets, available) if sets else list(available.values())
    bars: dict[str, tqdm] = {}

    def progress(set_id: str, done: int, total: int) -> None:
        # One bar per set, on stderr: a full import renders and checks ~19,000 icons (minutes).
        bar = bars.get(set_id)
        if bar is None:
            bar = bars[set_id] = tqdm(total=total, desc=f"import {set_id}", unit="icon")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    try:
        result = import_corpus(registry_url(), settings.sources_dir, chosen, settings.keys_dir,
                               progress=progress,
                               workers=workers or max(1, min(os.cpu_count() or 1, 8)))
    finally:
        for bar in bars.values():
            bar.close()
    for icon_set in chosen:
        refused = sum(1 for item in result.refused if item.startswith(icon_set.set_id + ":"))
        typer.echo(f"{icon_set.set_id:20s} registered {result.registered.get(icon_set.set_id, 0):6d}"
                   f"  present {result.present.get(icon_set.set_id, 0):6d}  refused {refused:5d}")
    for item, reason in list(result.refused.items())[:20]:
        typer.echo(f"  refused {item}: {reason}")
    if len(result.refused) > 20:
        typer.echo(f"  … and {len(result.refused) - 20} more refused")
    for artist_id, path in result.keys.items():
        typer.echo(f"key of {artist_id} saved to {path}")
    typer.echo(f"{result.total_registered} works registered in {result.seconds:.1f} s")


@app.command("affected")
def affected_cmd(artist: str = typer.Option(..., "--artist", help="Artist id.")) -> None:
    """Which datasets and models included this artist's works, and which of those works may
    no longer be used for the dataset's purpose."""
    from easel.registry.lineage import affected
    from easel.registry.store import registry_session

    with registry_session() as session:
        entries = affected(session, artist)
        if not entries:
            typer.echo(f"no recorded dataset includes works of {artist}")
            return
        for entry in entries:
            typer.echo(f"dataset {entry.dataset_id} ({entry.purpose}, {entry.manifest_path}): "
                       f"{len(entry.works)} work(s) of {artist}, {len(entry.withdrawn)} no longer allowed")
            for work_id, reason in list(entry.withdrawn.items())[:20]:
                typer.echo(f"  withdrawn {work_id}: {reason}")
            for model in entry.models:
                typer.echo(f"  model {model.id} ({model.kind}) {model.path}")
            if entry.outputs:
                by_model = ", ".join(f"{n} by {m}" for m, n in sorted(entry.model_outputs.items()))
                typer.echo(f"  {entry.outputs} logged output(s) name it as their training data ({by_model}); "
                           "`easel verify` shows each one's record")
