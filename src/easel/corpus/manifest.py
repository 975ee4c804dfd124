"""Build a corpus manifest: render every icon, one Parquet row per item, a dataset id.

The manifest's identity (the *dataset id*) is the sha256 over its rows in item-id order,
excluding file locations, so the same items rendered anywhere get the same id. Models and
generation records carry it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from easel import __version__
from easel.corpus.captions import caption_for, concept_for, split_for
from easel.corpus.render import icon_svg, png_bytes, render_svg
from easel.corpus.sources import IconSet, load_set_json
from easel.errors import BadInput, EaselError, NotFound

log = logging.getLogger(__name__)

SIZES = (32, 64, 128, 256, 512)
DEFAULT_SIZE = 64
DEFAULT_SEED = 0

MANIFEST_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("set_id", pa.string()),
    ("icon_name", pa.string()),
    ("concept", pa.string()),
    ("caption", pa.string()),
    ("style_tag", pa.string()),
    ("rights_holder", pa.string()),
    ("license_spdx", pa.string()),
    ("license_url", pa.string()),
    ("attribution", pa.string()),
    ("source", pa.string()),
    ("svg_sha256", pa.string()),
    ("png_sha256", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("split", pa.string()),
    ("consent_event_id", pa.string()),
    ("png_path", pa.string()),
])
# Columns that do not take part in the dataset id (where the files happen to be).
_LOCATION_COLUMNS = ("png_path",)


@dataclass
class RenderFailure:
    item_id: str
    reason: str


@dataclass
class BuildResult:
    manifest_path: Path
    dataset_id: str
    rows: int
    per_set: dict[str, int]
    failures: list[RenderFailure] = field(default_factory=list)
    seconds: float = 0.0


def manifest_dir(corpus_dir: Path, size: int) -> Path:
    return corpus_dir / f"{size}px"


def dataset_id_of(table: pa.Table) -> str:
    """sha256 over the rows (sorted by item id), location columns excluded."""
    cols = [c for c in table.column_names if c not in _LOCATION_COLUMNS]
    rows = table.select(cols).to_pylist()
    rows.sort(key=lambda r: r["item_id"])
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def attribution_for(title: str, icon_set: IconSet, info: dict) -> str:
    lic = info.get("license", {})
    return (f"\"{title}\" from {icon_set.title} by {icon_set.rights_holder}, "
            f"{lic.get('spdx', 'unknown licence')} ({lic.get('url', 'no URL')}), "
            f"via {icon_set.spec}")


def _render_one(task: tuple[str, str, str, int, str]) -> tuple[str, str | None, str | None]:
    """Worker: render one icon and write its PNG. Returns (item_id, png_sha256, error)."""
    item_id, svg, rel_path, size, root = task
    try:
        image = render_svg(svg, size)
    except BadInput as exc:
        return item_id, None, str(exc)
    data = png_bytes(image)
    out = Path(root) / rel_path
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return item_id, hashlib.sha256(data).hexdigest(), None


def _pool_tasks(tasks: list[tuple[str, str, str, int, str]], workers: int,
                progress: bool) -> Iterable[tuple[str, str | None, str | None]]:
    bar = tqdm(total=len(tasks), desc="render", unit="icon", disable=not progress)
    try:
        if workers <= 1:
            for task in tasks:
                yield _render_one(task)
                bar.update()
            return
        ctx = mp.get_context("fork")
        with ctx.Pool(workers) as pool:
            for result in pool.imap_unordered(_render_one, tasks, chunksize=64):
                yield result
                bar.update()
    finally:
        bar.close()


def build_corpus(
    sources_dir: Path,
    corpus_dir: Path,
    sets: list[IconSet],
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    workers: int | None = None,
    progress: bool = True,
    skip_failures: bool = False,
    allowed: Mapping[str, str] | None = None,
) -> BuildResult:
    """Render ``sets`` at ``size`` px and write ``corpus_dir/<size>px/manifest.parquet``.

    ``allowed`` maps item ids to the consent-event id that allows them (from the registry);
    when given, only those items are built. Icons that fail to render are reported; unless
    ``skip_failures`` they abort the build and nothing is written.
    """
    if size not in SIZES:
        raise BadInput(f"size {size} is not supported", hint=f"choose one of {SIZES}")
    if not sets:
        raise NotFound("no icon sets to build", hint="run `easel corpus fetch` first")
    started = time.perf_counter()
    corpus_dir.mkdir(parents=True, exist_ok=True)
    target = manifest_dir(corpus_dir, size)
    workers = workers or max(1, min(os.cpu_count() or 1, 8))

    rows: dict[str, dict] = {}
    tasks: list[tuple[str, str, str, int, str]] = []
    for icon_set in sets:
        icons_json, info = load_set_json(sources_dir, icon_set)
        default_w = icons_json.get("width", 16)
        default_h = icons_json.get("height", 16)
        lic = info.get("license", {})
        siblings = set(icons_json.get("icons", {}))
        for name, icon in sorted(icons_json.get("icons", {}).items()):
            item_id = f"{icon_set.set_id}:{name}"
            if allowed is not None and item_id not in allowed:
                continue
            if not isinstance(icon, dict) or "body" not in icon:
                raise BadInput(f"{item_id}: icon entry has no SVG body")
            svg = icon_svg(icon, default_w, default_h)
            caption = caption_for(name, siblings)
            concept = concept_for(name, siblings)
            rel = f"images/{icon_set.set_id}/{name}.png"
            rows[item_id] = {
                "item_id": item_id,
                "set_id": icon_set.set_id,
                "icon_name": name,
                "concept": concept,
                "caption": caption,
                "style_tag": icon_set.style_tag,
                "rights_holder": icon_set.rights_holder,
                "license_spdx": lic.get("spdx", ""),
                "license_url": lic.get("url", ""),
                "attribution": attribution_for(caption, icon_set, info),
                "source": icon_set.spec,
                "svg_sha256": hashlib.sha256(svg.encode()).hexdigest(),
                "png_sha256": "",
                "width": size,
                "height": size,
                "split": split_for(concept, seed),
                "consent_event_id": allowed.get(item_id) if allowed is not None else None,
                "png_path": rel,
            }
            tasks.append((item_id, svg, rel, size, ""))

    failures: list[RenderFailure] = []
    with tempfile.TemporaryDirectory(dir=corpus_dir, prefix=f".{size}px-") as tmp:
        staging = Path(tmp) / "build"
        staging.mkdir()
        tasks = [(i, s, r, z, str(staging)) for (i, s, r, z, _) in tasks]
        for item_id, sha, error in _pool_tasks(tasks, workers, progress):
            if error is not None:
                failures.append(RenderFailure(item_id, error))
                rows.pop(item_id, None)
            else:
                rows[item_id]["png_sha256"] = sha
        failures.sort(key=lambda f: f.item_id)
        if failures and not skip_failures:
            first = failures[0]
            raise EaselError(
                f"{len(failures)} icon(s) failed to render, first {first.item_id}: {first.reason}",
                hint="nothing was written; pass --skip-failures to build without them",
            )
        ordered = [rows[k] for k in sorted(rows)]
        table = pa.Table.from_pylist(ordered, schema=MANIFEST_SCHEMA)
        dataset_id = dataset_id_of(table)
        meta = {
            "dataset_id": dataset_id,
            "size": str(size),
            "seed": str(seed),
            "easel_version": __version__,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "sets": json.dumps([s.spec for s in sets]),
        }
        table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
        pq.write_table(table, staging / "manifest.parquet")
        (staging / "failures.json").write_text(json.dumps(
            [f.__dict__ for f in failures], indent=2))
        # Swap into place: the old build stays until the new one is complete.
        old = Path(tmp) / "old"
        if target.exists():
            target.rename(old)
        staging.rename(target)
    per_set: dict[str, int] = {}
    for row in ordered:
        per_set[row["set_id"]] = per_set.get(row["set_id"], 0) + 1
    return BuildResult(target / "manifest.parquet", dataset_id, len(ordered), per_set,
                       failures, time.perf_counter() - started)


def load_manifest(path: Path) -> pa.Table:
    """Read a manifest, checking its columns; a directory means its ``manifest.parquet``."""
    if path.is_dir():
        path = path / "manifest.parquet"
    if not path.exists():
        raise NotFound(f"no manifest at {path}", hint="run `easel corpus build` first")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise BadInput(f"{path} is not a readable Parquet manifest: {exc}") from exc
    missing = [c for c in MANIFEST_SCHEMA.names if c not in table.column_names]
    if missing:
        raise BadInput(f"manifest {path} lacks column(s) {', '.join(missing)}",
                       hint="rebuild it with `easel corpus build`")
    return table


def manifest_metadata(table: pa.Table) -> dict[str, str]:
    raw = table.schema.metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items()}


def remove_build(corpus_dir: Path, size: int) -> None:
    target = manifest_dir(corpus_dir, size)
    if target.exists():
        shutil.rmtree(target)
