"""``easel corpus fetch|build|show``: the consented emoji corpus."""

from __future__ import annotations

from pathlib import Path

import typer

from easel.config import get_settings

app = typer.Typer(help="Fetch the emoji sets, render them, and inspect corpus manifests.",
                  no_args_is_help=True)


@app.command()
def fetch(
    sets: list[str] = typer.Option(None, "--set", "-s",
                                   help="Set id to fetch (repeatable); default: all seven."),
    force: bool = typer.Option(False, help="Fetch again even if already present."),
) -> None:
    """Fetch the pinned emoji packages with `npm pack` into EASEL_HOME/sources.

    Each tarball's sha256 is checked against the value recorded in Easel; a set already
    present is not fetched again.
    """
    from easel.corpus.sources import fetch_sources, resolve_sets

    settings = get_settings()
    chosen = resolve_sets(sets)
    settings.ensure_home()
    for icon_set, state in fetch_sources(settings.sources_dir, chosen, settings.npm, force):
        typer.echo(f"{icon_set.set_id:20s} {icon_set.spec:40s} {state}")


@app.command()
def build(
    size: int = typer.Option(64, help="Render size in pixels: 32, 64, 128, 256 or 512."),
    sets: list[str] = typer.Option(None, "--set", "-s",
                                   help="Set id to include (repeatable); default: all fetched."),
    seed: int = typer.Option(0, help="Seed of the train/val/test split by concept."),
    workers: int = typer.Option(0, help="Render processes; 0 means one per core."),
    skip_failures: bool = typer.Option(False, help="Skip icons that fail to render "
                                       "(they are listed) instead of aborting."),
    purpose: str = typer.Option(None, "--purpose",
                                help="Build only the registered items allowed for this purpose "
                                "now (train_base, train_style, commercial_output), recording "
                                "each item's consent event; see `easel registry import-corpus`."),
) -> None:
    """Render every icon to RGB PNG on white and write a Parquet manifest.

    Prints the dataset id (sha256 over the manifest's rows) at the end.
    """
    from easel.corpus.manifest import build_corpus
    from easel.corpus.sources import fetched_sets, resolve_sets

    settings = get_settings()
    settings.ensure_home()
    available = {s.set_id: s for s in fetched_sets(settings.sources_dir)}
    chosen = resolve_sets(sets, available) if sets else list(available.values())
    allowed = None
    if purpose is not None:
        from easel.corpus.consented import allowed_items

        allowed = allowed_items(purpose)
        if not allowed:
            from easel.errors import NotFound

            raise NotFound(f"no registered corpus item is allowed for {purpose} now",
                           hint="run `easel registry import-corpus` first")
    result = build_corpus(settings.sources_dir, settings.corpus_dir, chosen, size=size,
                          seed=seed, workers=workers or None, skip_failures=skip_failures,
                          allowed=allowed)
    for failure in result.failures:
        typer.echo(f"skipped {failure.item_id}: {failure.reason}", err=True)
    for set_id, count in result.per_set.items():
        typer.echo(f"{set_id:20s} {count:6d}")
    rate = result.rows / result.seconds if result.seconds else 0.0
    typer.echo(f"{result.rows} items in {result.seconds:.1f} s ({rate:.0f}/s), "
               f"{len(result.failures)} skipped")
    typer.echo(f"manifest   {result.manifest_path}")
    typer.echo(f"dataset id {result.dataset_id}")
    if purpose is not None:
        from easel.corpus.consented import record_build

        record_build(result.manifest_path, purpose)
        typer.echo(f"recorded in the registry as a {purpose} dataset")


@app.command()
def show(
    manifest: Path = typer.Argument(None, help="Manifest file or build directory; "
                                    "default: the 64 px build under EASEL_HOME."),
    size: int = typer.Option(64, help="Which build to show when no path is given."),
    rows: int = typer.Option(5, help="How many example rows to print."),
) -> None:
    """Summarise a manifest: dataset id, items per set and split, licences, examples."""
    from collections import Counter

    from easel.corpus.manifest import load_manifest, manifest_dir, manifest_metadata

    settings = get_settings()
    path = manifest or manifest_dir(settings.corpus_dir, size)
    table = load_manifest(path)
    meta = manifest_metadata(table)
    typer.echo(f"dataset id {meta.get('dataset_id', '?')}  ({table.num_rows} items, "
               f"{meta.get('size', '?')} px, built {meta.get('built_at', '?')})")
    sets = table.column("set_id").to_pylist()
    splits = table.column("split").to_pylist()
    lic = dict(zip(sets, table.column("license_spdx").to_pylist(), strict=True))
    holders = dict(zip(sets, table.column("rights_holder").to_pylist(), strict=True))
    by = Counter(zip(sets, splits, strict=True))
    typer.echo(f"{'set':20s} {'holder':12s} {'licence':14s} {'train':>6s} {'val':>5s} "
               f"{'test':>5s}")
    for set_id in dict.fromkeys(sets):
        typer.echo(f"{set_id:20s} {holders[set_id]:12s} {lic[set_id]:14s} "
                   f"{by[(set_id, 'train')]:6d} {by[(set_id, 'val')]:5d} "
                   f"{by[(set_id, 'test')]:5d}")
    for row in table.slice(0, rows).to_pylist():
        typer.echo(f"  {row['item_id']:40s} {row['caption']!r}")
