"""``easel dataset lookup``: was a work — or an edited copy of it — in a model's training data?"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Ask what went into Easel's models.", no_args_is_help=True)


@app.command()
def lookup(
    image: Path = typer.Argument(None, help="An image file (need not be registered)."),
    artist: str = typer.Option(None, "--artist", "-a", help="Look up every registered work of this artist."),
    model: str = typer.Option(None, "--model", "-m", help="Only this model (id or model folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """For every model Easel knows, say whether IMAGE (or an edited copy: re-encoded, resized,
    flipped) or the works of --artist were in its training data, quoting the manifest rows."""
    from easel.config import get_settings
    from easel.curation.lookup import lookup_artist, lookup_image
    from easel.errors import BadInput, NotFound
    from easel.registry.store import registry_session

    if (image is None) == (artist is None):
        raise BadInput("give an IMAGE or --artist A (one of them)", hint="see `easel dataset lookup --help`")
    settings = get_settings()
    cache = settings.home / "lookup"
    with registry_session() as session:
        if image is not None:
            try:
                data = image.read_bytes()
            except OSError as exc:
                raise NotFound(f"cannot read {image}: {exc.strerror or exc}") from None
            answers = lookup_image(session, data, cache, model)
            subject = str(image)
        else:
            answers = lookup_artist(session, artist, cache, model)
            subject = f"the works of {artist}"
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "model": a.model.model_id,
                        "dataset_id": a.model.dataset_id,
                        "found": a.found,
                        "problem": a.problem,
                        "matches": [{"how": e.how, "row": e.row} for e in a.matches],
                    }
                    for a in answers
                ],
                indent=2,
            )
        )
        return
    if not answers:
        typer.echo(f"{subject}: not in any model (Easel knows no trained model yet)")
        return
    for a in answers:
        head = f"{a.model.model_id} (dataset {a.model.dataset_id[:12]}…)"
        if a.problem:
            typer.echo(f"{head}: could not check: {a.problem}")
        elif a.found:
            typer.echo(f"{head}: YES, {len(a.matches)} training row(s)")
            for e in a.matches:
                r = e.row
                typer.echo(
                    f"  {r['item_id']}  {e.how}; {r.get('rights_holder', '')}, {r.get('license_spdx', '')}, "
                    f"consent event {r.get('consent_event_id') or '-'}"
                )
        else:
            typer.echo(f"{head}: no")
    if not any(a.found for a in answers) and not any(a.problem for a in answers):
        typer.echo(f"{subject}: not in any model")


def register(root: typer.Typer) -> None:
    """Add ``easel dataset`` to the CLI."""
    root.add_typer(app, name="dataset")
