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


@app.command()
def curate(
    manifest: Path = typer.Argument(None, help="Manifest file or build directory; "
                                    "default: the 64 px build under EASEL_HOME."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder; default: "
                             "EASEL_HOME/curated/<purpose>-<size>px."),
    purpose: str = typer.Option("train_base", help="Purpose consent is checked for."),
    engine: str = typer.Option("local", help="local (in-process, progress bar) or ray (Ray Data)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Join this Ray cluster (host:port "
                                    "or ray://host:port) instead of starting a local Ray."),
    ray_cpus: int = typer.Option(0, help="CPUs of a local Ray; 0 means all."),
    batch_size: int = typer.Option(256, min=1, help="Items per batch (the unit of resume)."),
    skip: list[str] = typer.Option(None, "--skip-stage", help="Leave out a stage (safety, duplicates, "
                                   "attribution; repeatable). Consent and integrity always run."),
    descriptors: bool = typer.Option(True, help="Also match duplicates by the shipped copy descriptor."),
    at: str = typer.Option(None, help="Consent snapshot time (ISO 8601); default: now."),
    fresh: bool = typer.Option(False, help="Discard a previous, unfinished run in --out."),
    record: bool = typer.Option(True, help="Record the kept manifest in the registry as a dataset."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Curate a manifest: consent, integrity, safety, duplicates and attribution per item.

    Writes curated.parquet (every row with its decision and reason), manifest.parquet (the kept
    rows; its dataset id is printed), datasheet.md and datasheet.png. A killed run resumes where
    it stopped when run again with the same arguments.
    """
    from datetime import datetime

    from easel.corpus.manifest import manifest_dir
    from easel.curation.run import curate as run_curate
    from easel.curation.stages import STAGES, CurateConfig
    from easel.errors import BadInput
    from easel.registry.policy import check_purpose
    from easel.registry.store import registry_url

    settings = get_settings()
    check_purpose(purpose)
    skipped = set(skip or [])
    bad = skipped - {"safety", "duplicates", "attribution"}
    if bad:
        raise BadInput(f"cannot skip stage(s) {', '.join(sorted(bad))}",
                       hint="only safety, duplicates and attribution may be skipped")
    if at is not None:
        try:
            datetime.fromisoformat(at)
        except ValueError:
            raise BadInput(f"--at {at!r} is not an ISO 8601 time",
                           hint="e.g. 2026-11-23T20:00:00+00:00") from None
    source = manifest or manifest_dir(settings.corpus_dir, 64)
    target = out or settings.home / "curated" / f"{purpose}-{source.name if source.is_dir() else source.stem}"
    from easel.audit.encoder import has_shipped

    config = CurateConfig(db_url=registry_url(), base_dir="", purpose=purpose, consent_at=at or "",
                          safety_threshold=settings.curation_safety_threshold,
                          stages=tuple(s for s in STAGES if s not in skipped),
                          encoder="" if descriptors and has_shipped() else None, batch_size=batch_size)
    result = run_curate(source, target, config, engine=engine, ray_address=ray_address,
                        ray_cpus=ray_cpus or None, progress=progress, fresh=fresh)
    if result.resumed_items:
        typer.echo(f"resumed: {result.resumed_items} items were already curated")
    for stage, count in sorted(result.dropped_by_stage.items()):
        typer.echo(f"dropped {stage:12s} {count:7d}")
    rate = result.rows / result.seconds if result.seconds else 0.0
    typer.echo(f"kept {result.kept} of {result.rows} in {result.seconds:.1f} s "
               f"({rate:.0f} items/s, {engine})")
    typer.echo(f"curated    {target / 'curated.parquet'}")
    typer.echo(f"datasheet  {target / 'datasheet.md'}")
    typer.echo(f"dataset id {result.dataset_id}")
    if record and "consent" in config.stages and result.kept:
        from easel.corpus.consented import record_build

        record_build(target / "manifest.parquet", purpose)
        typer.echo(f"recorded in the registry as a {purpose} dataset")
