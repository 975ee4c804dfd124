"""``easel style …`` and ``easel ledger``: personal style models, who may use them, credits.

The acting artist is named with ``--artist`` (train) or ``--as`` (changes) and proven by their
API key, as in ``easel registry``: ``--key``, else ``EASEL_API_KEY``, else the key file
``EASEL_HOME/keys/artists/ID.key``.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from easel.config import get_settings
from easel.errors import PermissionDenied

app = typer.Typer(help="Personal style models: train from your consented works, share, withdraw.",
                  no_args_is_help=True)

KEY_OPTION = typer.Option(None, "--key", help="The acting artist's API key (default: "
                          "EASEL_API_KEY, then EASEL_HOME/keys/artists/ID.key).")
REF_ARG = typer.Argument(..., help="The style: artist:ARTIST[/NAME].")


def register(root: typer.Typer) -> None:
    """Add ``easel style`` and ``easel ledger`` to the root CLI."""
    root.add_typer(app, name="style")
    root.command("ledger")(ledger)


def acting_key(name: str, key: str | None) -> str | None:
    """The API key for acting as ``name``: ``key``, ``EASEL_API_KEY`` or the artist's key file."""
    if key:
        return key
    if os.environ.get("EASEL_API_KEY"):
        return os.environ["EASEL_API_KEY"]
    path = get_settings().keys_dir / "artists" / f"{name}.key"
    return path.read_text().strip() if path.exists() else None


def _prove(session: object, name: str, key: str | None) -> str:
    from easel.style.service import identify

    found = acting_key(name, key)
    if found is None:
        raise PermissionDenied(f"no API key for {name!r}", hint="pass --key or set EASEL_API_KEY")
    return identify(session, name, found)  # type: ignore[arg-type]


@app.command("train")
def train(
    artist: str = typer.Option(..., "--artist", help="The artist whose style this is (you)."),
    name: str = typer.Option("default", "--name", help="Style name (lower-case)."),
    works: list[str] = typer.Option(None, "--works", help="Train only from these work ids "
                                    "(repeatable); default: all your works that allow train_style."),
    key: str = KEY_OPTION,
    steps: int = typer.Option(None, help="Training steps (default 600, about 4 minutes on one core)."),
    model_dir: Path = typer.Option(None, "--model-dir", help="Base Easel model directory "
                                   "(default: EASEL_MODEL_DIR or the shipped model)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train your personal style (a LoRA adapter) from your own works that allow train_style."""
    from easel.errors import BadInput
    from easel.registry.store import registry_session
    from easel.style.adapter import StyleTrainConfig
    from easel.style.training import train_style

    if steps is not None and not 1 <= steps <= 20000:
        raise BadInput(f"--steps must be between 1 and 20000, got {steps}")
    get_settings().ensure_home()
    with registry_session() as session:
        _prove(session, artist, key)
    config = StyleTrainConfig() if steps is None else StyleTrainConfig(steps=steps)
    result = train_style(artist, name, works or None, model_dir, config, progress=not quiet)
    for wid, why in sorted(result.skipped.items()):
        typer.echo(f"left out {wid}: {why}")
    typer.echo(f"style {result.ref} ({result.style_id}) from {len(result.manifest['items'])} works "
               f"in {result.seconds:.0f} s; private until you share it")
    typer.echo(f"adapter {result.adapter_dir}")


@app.command("list")
def list_cmd(artist: str = typer.Option(None, "--artist", help="Only this artist's styles.")) -> None:
    """List personal styles: visibility, commercial use, status and credited outputs."""
    from easel.registry.store import registry_session
    from easel.style.service import credit_counts, list_styles, shares

    with registry_session() as session:
        styles = list_styles(session, artist)
        counts: dict[str, int] = {}
        for a in {s.artist_id for s in styles}:
            counts.update(credit_counts(session, a))
        lines = []
        for s in styles:
            shared = sorted(shares(session, s)) if s.visibility == "shared" else []
            lines.append(f"{s.ref:32s} {s.status:9s} {s.visibility:8s} "
                         f"{'commercial' if s.commercial else 'non-commercial':14s} "
                         f"{counts.get(s.id, 0):6d} outputs  base {s.base_model_id}"
                         + (f"  shared with {', '.join(shared)}" if shared else "")
                         + (f"  ({s.withdrawn_reason})" if s.status == "withdrawn" else ""))
    typer.echo(f"{'style':32s} {'status':9s} {'visible':8s} {'use':14s} {'credits':>14s}")
    for line in lines:
        typer.echo(line)


@app.command("share")
def share_cmd(
    ref: str = REF_ARG,
    users: list[str] = typer.Option(..., "--with", help="User (artist id or account name); repeatable."),
    revoke: bool = typer.Option(False, "--revoke", help="Stop sharing with these users."),
    as_artist: str = typer.Option(..., "--as", help="You, the style's artist."),
    key: str = KEY_OPTION,
) -> None:
    """Share your style with named users (it becomes 'shared'), or stop sharing."""
    from easel.registry.store import registry_session
    from easel.style.service import owned_style, share

    with registry_session() as session:
        style = owned_style(session, _prove(session, as_artist, key), ref)
        now = share(session, style, users, revoke=revoke)
        line = f"{style.ref} is {style.visibility}; shared with: {', '.join(sorted(now)) or 'nobody'}"
    typer.echo(line)


@app.command("visibility")
def visibility_cmd(
    ref: str = REF_ARG,
    visibility: str = typer.Argument(..., help="private, shared or public."),
    commercial: bool = typer.Option(None, "--commercial/--no-commercial",
                                    help="Whether outputs may be used commercially (default: unchanged)."),
    as_artist: str = typer.Option(..., "--as", help="You, the style's artist."),
    key: str = KEY_OPTION,
) -> None:
    """Set who may generate with your style, and whether its outputs may be used commercially."""
    from easel.registry.store import registry_session
    from easel.style.service import owned_style, set_visibility

    with registry_session() as session:
        style = owned_style(session, _prove(session, as_artist, key), ref)
        set_visibility(session, style, visibility, commercial)
        line = (f"{style.ref} is {style.visibility}, "
                f"{'commercial use allowed' if style.commercial else 'no commercial use'}")
    typer.echo(line)


@app.command("delete")
def delete_cmd(
    ref: str = REF_ARG,
    as_artist: str = typer.Option(..., "--as", help="You, the style's artist."),
    key: str = KEY_OPTION,
) -> None:
    """Withdraw your style: its adapter is deleted and nobody can generate with it again.
    Past outputs stay verifiable (log rows, credits and credentials remain)."""
    from easel.registry.store import registry_session
    from easel.style.service import owned_style, withdraw

    with registry_session() as session:
        style = owned_style(session, _prove(session, as_artist, key), ref)
        withdraw(session, style, f"deleted by {as_artist}")
        line = f"{style.ref} withdrawn; adapter {style.adapter_path} deleted"
    typer.echo(line)


def ledger(artist: str = typer.Option(..., "--artist", help="The artist credited.")) -> None:
    """List the credits to an artist: one row per output made with their personal styles."""
    from easel.registry.store import registry_session
    from easel.style.models import PersonalStyle
    from easel.style.service import credits

    with registry_session() as session:
        rows = credits(session, artist)
        names = {s.id: s.ref for s in session.query(PersonalStyle).filter(PersonalStyle.artist_id == artist)}
        lines = [f"{c.created_at.isoformat(timespec='seconds')}  {c.generation_id}  "
                 f"{names.get(c.style_id, c.style_id):28s} {c.user or '-':16s} "
                 f"{'commercial' if c.commercial else 'non-commercial'}" for c in rows]
    for line in lines:
        typer.echo(line)
    typer.echo(f"{len(lines)} credit(s) to {artist}")
