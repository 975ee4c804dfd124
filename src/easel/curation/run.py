"""Run a curation: two passes over the manifest with one of two engines, resumable, into one folder.

Pass 1 runs ``stages.first_pass`` per batch and writes each finished batch as its own Parquet
part (atomically: a temporary name, then a rename), so a killed run resumes with only the items
no part holds. The global step (``duplicates.find_duplicates``) reads every part's fingerprints;
pass 2 applies its answer per batch. The output folder holds:

- ``curated.parquet`` — every input row with its decision, stage, reason and fingerprints;
- ``manifest.parquet`` — the kept rows as an ordinary corpus manifest (what a trainer reads),
  whose ``dataset_id`` follows ``easel.corpus.manifest.dataset_id_of``;
- ``datasheet.md`` and ``datasheet.png``; ``progress.json`` (the run's settings and state);
  ``parts/`` (pass-1 batches, kept so a finished run can be re-assembled).

Engines: ``local`` (in-process, a progress bar) and ``ray`` (Ray Data ``map_batches`` over
``read_parquet``, on a local Ray or the cluster at ``ray_address``); both call the same functions.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from easel import __version__
from easel.curation.duplicates import COLUMNS as DUP_COLUMNS
from easel.curation.duplicates import Duplicate, apply_duplicates, find_duplicates
from easel.curation.stages import STAGES, CurateConfig, first_pass
from easel.errors import BadInput, EaselError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
CURATED = "curated.parquet"
MANIFEST = "manifest.parquet"
PROGRESS = "progress.json"
PARTS = "parts"
MAX_BLOCKS = 10_000
"""At most this many blocks for Ray's first pass (one per batch below that)."""
ACTOR_CPUS = 0.5
"""CPUs a Ray worker of the first pass books; a node with C CPUs runs C workers and its reads."""
RAY_CONNECT_TIMEOUT_S = 5.0
RAY_START_WAIT_S = 180
"""Seconds a local Ray's raylet may take to start (Ray's default, 30 s, was too short here)."""
"""How long to try a ``--ray-address`` before saying it cannot be reached."""


@dataclass
class CurateResult:
    """What a curation produced: where, the kept rows' dataset id and the counts."""

    out_dir: Path
    dataset_id: str
    rows: int
    kept: int
    dropped_by_stage: dict[str, int]
    resumed_items: int
    seconds: float
    pass1_seconds: float


def input_digest(path: Path) -> str:
    """sha256 of the input manifest file (a resumed run must read the very same input)."""
    from easel.corpus.sources import sha256_file

    return sha256_file(path)


def write_part(table: pa.Table, parts_dir: Path) -> Path:
    """Write one finished batch atomically as ``parts/pass1-<id>.parquet``."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    name = f"pass1-{uuid.uuid4().hex}.parquet"
    tmp = parts_dir / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, parts_dir / name)
    return parts_dir / name


def read_parts(parts_dir: Path, columns: list[str] | None = None) -> pa.Table | None:
    """Every finished part (unreadable ones are removed: their items are redone), or ``None``."""
    tables = []
    for part in sorted(parts_dir.glob("pass1-*.parquet")):
        try:
            tables.append(pq.read_table(part, columns=columns))
        except (OSError, pa.ArrowInvalid):
            log.warning("removing unreadable part %s; its items are curated again", part.name)
            part.unlink()
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


class FirstPass:
    """Pass 1 for one batch, writing it as a part: the callable both engines map over batches."""

    def __init__(self, config: CurateConfig, parts_dir: str) -> None:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        self.config = config
        self.parts_dir = Path(parts_dir)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = first_pass(batch, self.config)
        write_part(out, self.parts_dir)
        return pa.table({"rows": pa.array([out.num_rows], pa.int64())})


def check_ray_address(address: str) -> None:
    """Raise ``EaselError`` unless ``host:port`` (or ``ray://host:port``) accepts a connection."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise BadInput(
            f"--ray-address {address!r} is not host:port", hint="e.g. 10.0.0.5:6379 or ray://head:10001"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise EaselError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})",
            hint="check the address and that the head node is running; nothing was written",
        ) from None


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at ``address`` or start a local Ray (reusing one this process started)."""
    # On a busy machine a local raylet needs more than Ray's default 30 s to register
    # (measured here: a start at nice 10 beside a training run timed out). Ray reads it on import.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", str(RAY_START_WAIT_S))
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    try:
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=env, log_to_driver=False)
    except Exception as exc:  # Ray raises plain Exception on start-up timeouts: report, never continue
        raise EaselError(
            f"could not start or join Ray: {exc}", hint="check --ray-address, or run without --engine ray"
        ) from None


def _run_local(pending: pa.Table, first: FirstPass, progress: bool) -> None:
    from tqdm import tqdm

    size = first.config.batch_size
    with tqdm(total=pending.num_rows, desc="curate", unit="item", disable=not progress) as bar:
        for start in range(0, pending.num_rows, size):
            batch = pending.slice(start, size)
            first(batch)
            bar.update(batch.num_rows)


def _ray_pass1(
    source: Path, config: CurateConfig, parts_dir: Path, concurrency: int, progress: bool, total: int
) -> None:
    import ray.data
    from tqdm import tqdm

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.read_parquet(str(source))
    # A manifest is often one row group, which Ray reads as one block that only one worker
    # would then see: split it so that every worker gets batches.
    ds = ds.repartition(max(1, min(MAX_BLOCKS, -(-total // config.batch_size))))
    ds = ds.map_batches(
        FirstPass,
        fn_constructor_kwargs={"config": config, "parts_dir": str(parts_dir)},
        batch_size=config.batch_size,
        batch_format="pyarrow",
        # Each worker books half a CPU, so the Parquet read tasks always find a free one
        # (with whole CPUs, workers on every CPU starve the reads and the run never starts).
        num_cpus=ACTOR_CPUS,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
    )
    with tqdm(total=total, desc="curate (ray)", unit="item", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            bar.update(int(pc.sum(batch["rows"]).as_py() or 0))  # type: ignore[call-overload]


def _ray_pass2(parts: list[Path], duplicates: dict[str, Duplicate], out: Path) -> pa.Table:
    import shutil

    import ray.data

    if out.exists():
        shutil.rmtree(out)
    # The folder, not a list of files: Ray 2.60 lists many paths through fsspec's HTTP module,
    # which the installed fsspec lacks. Temporary files (".…tmp") are not read.
    ds = ray.data.read_parquet(str(parts[0].parent), file_extensions=["parquet"])
    ds = ds.map_batches(
        apply_duplicates,  # type: ignore[arg-type]
        fn_kwargs={"duplicates": duplicates},
        batch_format="pyarrow",
    )
    ds.write_parquet(str(out))
    table = pq.read_table(out)
    shutil.rmtree(out)
    return table


def _settings_key(config: CurateConfig, digest: str) -> dict[str, Any]:
    return {
        "input_sha256": digest,
        "purpose": config.purpose,
        "stages": list(config.stages),
        "safety_threshold": config.safety_threshold,
        "descriptors": config.encoder is not None,
        "db_url": config.db_url,
    }


def curate(
    input_path: Path,
    out_dir: Path,
    config: CurateConfig,
    engine: str = "local",
    ray_address: str | None = None,
    ray_cpus: int | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> CurateResult:
    """Curate the manifest at ``input_path`` into ``out_dir`` (see the module docstring).

    ``config.consent_at`` empty means "now", frozen at the first run so a resumed run asks the
    registry about the same moment. ``fresh`` discards a previous run's parts.
    """
    from easel.corpus.manifest import load_manifest

    started = time.perf_counter()
    if engine not in ENGINES:
        raise BadInput(f"unknown engine {engine!r}", hint=f"choose one of {', '.join(ENGINES)}")
    unknown = [s for s in config.stages if s not in STAGES]
    if unknown:
        raise BadInput(f"unknown stage(s) {', '.join(unknown)}", hint=f"stages are {', '.join(STAGES)}")
    source = input_path / "manifest.parquet" if input_path.is_dir() else input_path
    table = load_manifest(source)  # raises on a missing column, before anything is written
    ids = table.column("item_id")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        raise BadInput(f"manifest {source} repeats item ids", hint="item ids must be unique")
    if engine == "ray":
        if ray_address:
            check_ray_address(ray_address)
        start_ray(ray_address, ray_cpus)
    digest = input_digest(source)
    config = replace(config, base_dir=config.base_dir or str(source.parent.resolve()))
    out_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = out_dir / PARTS
    state_path = out_dir / PROGRESS
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() and not fresh else {}
    key = _settings_key(config, digest)
    if state and state.get("settings") != key:
        raise BadInput(
            f"{out_dir} holds a curation of other input or settings",
            hint="pass --fresh to start over there, or choose another --out",
        )
    if fresh or not state:
        import shutil

        if parts_dir.exists():
            shutil.rmtree(parts_dir)
        for name in (CURATED, MANIFEST):
            (out_dir / name).unlink(missing_ok=True)
        consent_at = config.consent_at or datetime.now(UTC).isoformat(timespec="seconds")
        state = {
            "settings": key,
            "consent_at": consent_at,
            "input": str(source.resolve()),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "runs": [],
        }
    config = replace(config, consent_at=state["consent_at"])
    state["runs"].append({"engine": engine, "at": datetime.now(UTC).isoformat(timespec="seconds")})
    state["finished"] = False
    state_path.write_text(json.dumps(state, indent=2))

    done = read_parts(parts_dir, ["item_id"])
    done_ids = pa.array([], pa.string()) if done is None else done.column("item_id").combine_chunks()
    pending = table.filter(pc.invert(pc.is_in(ids, value_set=done_ids)))
    resumed = table.num_rows - pending.num_rows
    if resumed:
        log.info("resuming: %d of %d items already curated", resumed, table.num_rows)
    t1 = time.perf_counter()
    if pending.num_rows:
        first = FirstPass(config, str(parts_dir))
        if engine == "local":
            _run_local(pending, first, progress)
        else:
            feed = source
            if resumed:
                feed = out_dir / ".pending.parquet"
                pq.write_table(pending, feed)
            import ray

            cpus = int(ray.cluster_resources().get("CPU", 1))
            _ray_pass1(feed, config, parts_dir, max(1, cpus), progress, pending.num_rows)
            if feed != source:
                feed.unlink(missing_ok=True)
    pass1_seconds = time.perf_counter() - t1

    fingerprints = read_parts(parts_dir, list(DUP_COLUMNS))
    if fingerprints is None or set(fingerprints.column("item_id").to_pylist()) != set(ids.to_pylist()):
        raise EaselError(
            "the first pass did not cover every item", hint="run the same command again to resume"
        )
    duplicates = find_duplicates(fingerprints) if "duplicates" in config.stages else {}
    part_files = sorted(parts_dir.glob("pass1-*.parquet"))
    if engine == "ray":
        curated = _ray_pass2(part_files, duplicates, out_dir / ".pass2")
    else:
        curated = pa.concat_tables(
            [apply_duplicates(pq.read_table(p), duplicates) for p in part_files], promote_options="default"
        )
    result = _write_outputs(curated, source, out_dir, config, state, duplicates)
    result.resumed_items, result.pass1_seconds = resumed, pass1_seconds
    result.seconds = time.perf_counter() - started
    state["finished"] = True
    state["result"] = {
        "dataset_id": result.dataset_id,
        "rows": result.rows,
        "kept": result.kept,
        "dropped_by_stage": result.dropped_by_stage,
    }
    state_path.write_text(json.dumps(state, indent=2))
    return result


def _dedupe_sorted(curated: pa.Table) -> pa.Table:
    curated = curated.sort_by("item_id")
    ids = curated.column("item_id").to_pylist()
    keep = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]]
    return curated.take(pa.array(keep)) if len(keep) != len(ids) else curated


def _write_outputs(
    curated: pa.Table,
    source: Path,
    out_dir: Path,
    config: CurateConfig,
    state: dict[str, Any],
    duplicates: dict[str, Duplicate],
) -> CurateResult:
    from easel.corpus.manifest import MANIFEST_SCHEMA, dataset_id_of, load_manifest, manifest_metadata
    from easel.curation.datasheet import write_datasheet

    curated = _dedupe_sorted(curated.replace_schema_metadata(None))
    base = Path(config.base_dir)
    paths = [p if Path(p).is_absolute() else str(base / p) for p in curated.column("png_path").to_pylist()]
    curated = curated.set_column(
        curated.schema.get_field_index("png_path"), "png_path", pa.array(paths, pa.string())
    )
    kept = curated.filter(pc.equal(curated.column("decision"), "keep"))
    dataset = kept.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    dataset_id = dataset_id_of(dataset)
    input_meta = manifest_metadata(load_manifest(source))
    stages = [s for s in STAGES if s in config.stages]
    meta = {
        "dataset_id": dataset_id,
        "input_dataset_id": input_meta.get("dataset_id", ""),
        "input": str(source.resolve()),
        "purpose": config.purpose,
        "consent_at": config.consent_at,
        "stages": ",".join(stages),
        "safety_threshold": str(config.safety_threshold),
        "descriptors": "yes" if config.encoder is not None else "no",
        "size": input_meta.get("size", ""),
        "seed": input_meta.get("seed", ""),
        "easel_version": __version__,
        "curated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    encoded = {k.encode(): v.encode() for k, v in meta.items()}
    for name, tab in ((CURATED, curated), (MANIFEST, dataset)):
        tmp = out_dir / f".{name}.tmp"
        pq.write_table(tab.replace_schema_metadata(encoded), tmp)
        os.replace(tmp, out_dir / name)
    dropped: dict[str, int] = {}
    for stage in curated.column("stage").to_pylist():
        if stage:
            dropped[stage] = dropped.get(stage, 0) + 1
    write_datasheet(out_dir, curated, meta)
    return CurateResult(out_dir, dataset_id, curated.num_rows, kept.num_rows, dropped, 0, 0.0, 0.0)


def load_curated(out_dir: Path) -> pa.Table:
    """The ``curated.parquet`` of a curation folder (every row with its decision)."""
    from easel.errors import NotFound

    path = out_dir / CURATED if out_dir.is_dir() else out_dir
    if not path.exists():
        raise NotFound(f"no curated manifest at {path}", hint="run `easel corpus curate` first")
    return pq.read_table(path)
