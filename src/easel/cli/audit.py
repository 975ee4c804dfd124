"""``easel audit IMAGE`` / ``easel audit --folder DIR``, and ``easel audit index|train|eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from easel.errors import BadInput


class _AuditGroup(TyperGroup):
    """``easel audit X.png`` and ``easel audit --folder D`` mean ``easel audit image …``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["image", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_AuditGroup, no_args_is_help=True, help=(
    "Did this image copy a registered work? Scores an image (or a folder) against every "
    "registered work: copy score, style score, PDQ distance and a verdict, with an evidence "
    "sheet. `easel audit IMAGE` is short for `easel audit image IMAGE`."))


def register(root: typer.Typer) -> None:
    """Add ``easel audit`` to the root CLI."""
    root.add_typer(app, name="audit")


def _corpus_manifest(size: int) -> Path:
    """EASEL_HOME's corpus manifest of the ``size`` px build."""
    from easel.config import get_settings
    from easel.corpus.manifest import manifest_dir

    return manifest_dir(get_settings().corpus_dir, size) / "manifest.parquet"


def _auditor(session: Any, url: str, encoder_dir: Path | None) -> Any:
    from easel.audit.encoder import load_encoder
    from easel.audit.service import Auditor
    from easel.registry.store import index_dir

    return Auditor(session, index_dir(url), load_encoder(str(encoder_dir) if encoder_dir else None))


def _pictures(session: Any, result: Any) -> list[Any]:
    from sqlalchemy import select

    from easel.audit.service import work_picture
    from easel.registry.models import Work

    out = []
    for match in result.matches:
        work = session.execute(select(Work).where(Work.id == match.work_id)).scalar_one()
        out.append(work_picture(work))
    return out


@app.command("image")
def audit_image(
    image: Path | None = typer.Argument(None, help="Image to audit (PNG, JPEG, WebP or SVG)."),
    folder: Path | None = typer.Option(None, "--folder", help="Audit every image in this folder."),
    artist: str | None = typer.Option(None, "--artist", help="Compare only with this artist's works."),
    k: int = typer.Option(10, "-k", help="How many matches to report per image."),
    sheet: Path | None = typer.Option(None, "--sheet", help="Evidence sheet PNG to write "
                                      "(default: EASEL_HOME/audits/<name>-evidence.png)."),
    csv_path: Path | None = typer.Option(None, "--csv", help="With --folder: the CSV to write "
                                         "(default: ./easel-audit.csv)."),
    as_json: bool = typer.Option(False, "--json", help="Print the matches as JSON."),
    encoder_dir: Path | None = typer.Option(None, "--encoder", help="Descriptor encoder folder "
                                            "(default: the shipped one)."),
) -> None:
    """Score an image (or every image of --folder) against the registered works."""
    from easel.audit.service import query_picture
    from easel.audit.sheet import evidence_sheet
    from easel.config import get_settings
    from easel.registry.store import registry_session, registry_url

    if (image is None) == (folder is None):
        raise BadInput("give exactly one of IMAGE or --folder DIR")
    settings = get_settings()
    url = registry_url()
    if image is not None:
        if not image.is_file():
            raise BadInput(f"{image} is not a file")
        picture = query_picture(image.read_bytes(), image.name)
        with registry_session(url) as session:
            result = _auditor(session, url, encoder_dir).audit(picture, image.name, k, artist)
            out = sheet or settings.home / "audits" / f"{image.stem}-evidence.png"
            evidence_sheet(picture, result, _pictures(session, result), out)
        if as_json:
            typer.echo(json.dumps({"image": str(image), "verdict": result.verdict, "sheet": str(out),
                                   "matches": [m.__dict__ | {"picture": str(m.picture or "")}
                                               for m in result.matches]}, indent=2))
            return
        typer.echo(f"{image.name}: {result.verdict}")
        typer.echo(f"{'work':26} {'owner':20} {'copy':>6} {'style':>6} {'PDQ':>4}  verdict")
        for m in result.matches:
            pdq = "-" if m.pdq_distance is None else str(m.pdq_distance)
            typer.echo(f"{m.work_id:26} {m.owner_id[:20]:20} {m.copy_score:6.3f} {m.style_score:6.3f} "
                       f"{pdq:>4}  {m.verdict}")
        typer.echo(f"evidence sheet: {out}")
        return
    assert folder is not None
    _audit_folder(folder, artist, k, csv_path or Path("easel-audit.csv"), encoder_dir)


def _audit_folder(folder: Path, artist: str | None, k: int, csv_path: Path,
                  encoder_dir: Path | None) -> None:
    import csv

    from tqdm import tqdm

    from easel.audit.service import query_picture
    from easel.registry.store import registry_session, registry_url

    if not folder.is_dir():
        raise BadInput(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    url = registry_url()
    counts: dict[str, int] = {}
    with registry_session(url) as session, csv_path.open("w", newline="") as fh:
        auditor = _auditor(session, url, encoder_dir)
        writer = csv.writer(fh)
        writer.writerow(["image", "rank", "work_id", "owner_id", "copy_score", "style_score",
                         "pdq_distance", "verdict", "error"])
        for path in tqdm(files, desc="audit", unit="image"):
            try:
                picture = query_picture(path.read_bytes(), path.name)
            except BadInput as exc:  # one bad file is reported in its row, not fatal
                writer.writerow([path.name, "", "", "", "", "", "", "refused", exc.message])
                counts["refused"] = counts.get("refused", 0) + 1
                continue
            result = auditor.audit(picture, path.name, k, artist)
            counts[result.verdict] = counts.get(result.verdict, 0) + 1
            for rank, m in enumerate(result.matches, 1):
                writer.writerow([path.name, rank, m.work_id, m.owner_id, f"{m.copy_score:.4f}",
                                 f"{m.style_score:.4f}", "" if m.pdq_distance is None else m.pdq_distance,
                                 m.verdict, ""])
            if not result.matches:
                writer.writerow([path.name, "", "", "", "", "", "", "none", ""])
    summary = ", ".join(f"{v}: {n}" for v, n in sorted(counts.items()))
    typer.echo(f"{len(files)} images audited ({summary}); CSV: {csv_path}")


@app.command("index")
def audit_index(
    encoder_dir: Path | None = typer.Option(None, "--encoder", help="Descriptor encoder folder."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the copy and style indexes from "
                                 "the database instead of extending the saved ones."),
) -> None:
    """Describe every registered work that has no descriptors yet and bring the indexes up to date
    (exact up to 600,000 rows, an approximate IVF index above; see `easel.audit.index`)."""
    from easel.audit.encoder import COPY_KIND, STYLE_KIND, load_encoder
    from easel.audit.index import descriptor_index, forget_cache, index_name
    from easel.audit.service import describe_works
    from easel.registry.store import index_dir, registry_session, registry_url

    url = registry_url()
    encoder = load_encoder(str(encoder_dir) if encoder_dir else None)
    with registry_session(url) as session:
        done, skipped = describe_works(session, encoder)
    forget_cache()
    if rebuild:
        for kind in (COPY_KIND, STYLE_KIND):
            (index_dir(url) / f"{index_name(kind)}.json").unlink(missing_ok=True)
    with registry_session(url) as session:
        n = descriptor_index(session, index_dir(url), COPY_KIND, int(encoder.config.copy_dim)).key_count
        descriptor_index(session, index_dir(url), STYLE_KIND, int(encoder.config.style_dim))
    typer.echo(f"described {done} works ({skipped} without a stored picture); {n} works indexed")


@app.command("train")
def audit_train(
    manifest: Path | None = typer.Option(None, "--manifest", help="Corpus manifest (64 px build) to "
                                         "train on (train split); default: EASEL_HOME's."),
    checkpoints: Path = typer.Option(Path.home() / ".cache" / "easel" / "descriptors", "--checkpoints",
                                     help="Checkpoint folder (outside the work tree); resumed."),
    out: Path = typer.Option(Path("descriptors-model"), "--out", help="Where to save the model."),
    steps: int = typer.Option(400, "--steps", help="Total optimiser steps (cosine schedule)."),
    minutes: float = typer.Option(30.0, "--minutes", help="Stop after this much training wall time "
                                 "(summed over resumed runs; the cosine schedule ends there too)."),
    batch_size: int = typer.Option(96, "--batch-size", help="Icons per step (two views each)."),
    threads: int = typer.Option(1, "--threads", help="Torch threads (1 on a shared machine)."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (AdamW, warm-up then cosine)."),
    init_from: Path | None = typer.Option(None, "--init-from", help="Start from this encoder folder "
                                          "(e.g. the shipped one, easel/models/descriptors)."),
    style_head_steps: int = typer.Option(0, "--style-head-steps", help="Then fit the style head "
                                         "afresh on the frozen trunk for this many steps (seconds each "
                                         "100); with --steps 0 only the style head changes."),
    style_input: str = typer.Option("all", "--style-input", help="The style head's trunk statistics: "
                                    "all (every stage, encoder v4) or mid (one stage, encoder v3)."),
    style_colour_levels: int = typer.Option(8, "--style-colour-levels", help="Levels per RGB channel "
                                            "of the style head's colour histogram (0: none)."),
    style_hidden: int = typer.Option(512, "--style-hidden", help="Hidden width of the style head "
                                     "(0: the trunk's last width)."),
) -> None:
    """Train the descriptor encoder (copy, style, content heads) with resumable checkpoints.

    Like every trainer, refuses to start if any manifest item is not allowed for train_base now.
    Ctrl-Z pauses it (not counted against --minutes); Ctrl-C saves the checkpoint and stops; the
    same command goes on from it.
    """
    import torch

    from easel.audit.training import TrainConfig, train
    from easel.cli.train import consent_check

    if style_input not in ("all", "mid"):
        raise BadInput(f"--style-input must be all or mid, not {style_input!r}")
    if not 0 <= style_colour_levels <= 16 or style_hidden < 0 or steps < 0 or style_head_steps < 0:
        raise BadInput("--style-colour-levels must be 0–16 and --style-hidden, --steps and "
                       "--style-head-steps at least 0")
    if steps == 0 and style_head_steps == 0:
        raise BadInput("nothing to train: give --steps or --style-head-steps")
    torch.set_num_threads(threads)
    manifest = manifest or _corpus_manifest(64)
    if not manifest.exists():
        raise BadInput(f"no manifest at {manifest}", hint="build one with `easel corpus build --size 64`")
    if init_from is not None and not (init_from / "config.json").exists():
        raise BadInput(f"no encoder at {init_from}", hint="pass a folder saved by `easel audit train`")
    consent_check(manifest)
    cfg = TrainConfig(manifest=str(manifest), batch_size=batch_size, max_steps=steps, minutes=minutes,
                      lr=lr, init_from=str(init_from) if init_from else None,
                      style_head_steps=style_head_steps, style_input=style_input,
                      style_colour_levels=style_colour_levels, style_hidden=style_hidden)
    train(cfg, checkpoints, out)
    typer.echo(f"saved {out}")


@app.command("eval")
def audit_eval(
    manifest: Path | None = typer.Option(None, "--manifest", help="Corpus manifest whose split is "
                                         "evaluated (256 px build); default: EASEL_HOME's."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: test (report) or val "
                              "(threshold calibration)."),
    limit: int = typer.Option(0, "--limit", help="Use only this many icons of the split (0: all)."),
    encoder_dir: Path | None = typer.Option(None, "--encoder", help="Descriptor encoder folder."),
    out: Path | None = typer.Option(None, "--json", help="Write the figures to this JSON file."),
    quick: bool = typer.Option(False, "--quick", help="Copy and style only: skip PDQ of the queries "
                               "and the text-to-image figure (a fraction of the time)."),
    card: bool = typer.Option(False, "--card", help="Write these figures into the encoder folder's "
                              "model card (card.json, README.md); needs --encoder and a full run."),
    registry_background: bool = typer.Option(False, "--registry-background", help="Also report the "
                                             "copy figures for scores normalised by each query's "
                                             "background in EASEL_HOME's registry (its works must "
                                             "be described by this encoder's copy head)."),
) -> None:
    """Copy detection per attack (recall at FPR 1e-4, µAP; PDQ beside it), style mAP@10 and
    recall@1, text-to-image recall@5, on a split the encoder never trained on."""
    import torch

    from easel.audit.encoder import load_encoder
    from easel.audit.evaluate import evaluate, format_report

    torch.set_num_threads(1)
    manifest = manifest or _corpus_manifest(256)
    if not manifest.exists():
        raise BadInput(f"no manifest at {manifest}", hint="build one with `easel corpus build --size 256`")
    if card and (encoder_dir is None or quick):
        raise BadInput("--card writes into an encoder folder's card from a full run",
                       hint="pass --encoder DIR and leave out --quick")
    encoder = load_encoder(str(encoder_dir) if encoder_dir else None)
    index = None
    if registry_background:
        from easel.audit.encoder import COPY_KIND
        from easel.audit.index import descriptor_index
        from easel.registry.store import index_dir, registry_session, registry_url

        url = registry_url()
        with registry_session(url) as session:
            index = descriptor_index(session, index_dir(url), COPY_KIND, int(encoder.config.copy_dim))
        if len(index) == 0:
            raise BadInput("--registry-background: the registry has no copy descriptors",
                           hint="register works and run `easel audit index` first")
    report = evaluate(encoder, manifest, split, limit, pdq=not quick, text=not quick, registry_index=index)
    typer.echo(format_report(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    if card and encoder_dir is not None:
        from easel.audit.model_card import write_card

        training = json.loads((encoder_dir / "training.json").read_text())
        previous = encoder_dir / "card.json"  # its notes are kept
        notes = json.loads(previous.read_text()).get("notes", "") if previous.exists() else ""
        write_card(encoder_dir, training, report, notes)
        typer.echo(f"model card written to {encoder_dir / 'README.md'}")
