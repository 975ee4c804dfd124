"""Shared by the curation benchmarks: run one engine, time it, and track peak memory.

Peak memory is the largest sum of resident set sizes of this process and all its descendants
(a local Ray's raylet, GCS and workers are children of the driver), sampled every 0.5 s.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


class PeakMemory:
    """Samples the RSS of this process tree in a thread; ``peak`` is the largest sum seen (bytes)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def run_engine(source: Path, out: Path, config: Any, engine: str, ray_cpus: int) -> dict[str, Any]:
    """Curate ``source`` into ``out`` afresh with ``engine``; figures as a dict."""
    import os
    import resource

    from easel.curation.run import curate

    started_cpu = os.times()
    with PeakMemory() as mem:
        result = curate(source, out, config, engine=engine, ray_cpus=ray_cpus, progress=False, fresh=True)
    cpu = os.times()
    own_cpu = (cpu.user - started_cpu.user) + (cpu.system - started_cpu.system)
    return {
        "engine": engine,
        "items": result.rows,
        "kept": result.kept,
        "dataset_id": result.dataset_id,
        "dropped_by_stage": result.dropped_by_stage,
        "seconds": round(result.seconds, 1),
        "pass1_seconds": round(result.pass1_seconds, 1),
        "items_per_s": round(result.rows / result.seconds, 1),
        "driver_cpu_s": round(own_cpu, 1),
        "peak_rss_mib": round(mem.peak / 2**20),
        "driver_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def compare_engines(source: Path, root: Path, config: Any, engines: list[str], ray_cpus: int,
                    report: dict[str, Any], json_path: Path | None,
                    extra: tuple[str, ...] = ()) -> None:
    """Curate ``source`` with each engine into ``root/curated/<engine>``, then print (and write to
    ``json_path``) ``report`` with every run, the drop reasons, ``extra`` summaries
    (``"skin_tones"``) and whether all engines gave the same dataset id."""
    runs = []
    for engine in engines:
        out = root / "curated" / engine
        figures = run_engine(source, out, config, engine, ray_cpus)
        print(json.dumps(figures), flush=True)
        runs.append(figures)
        report["reasons"] = reasons(out)
        if "skin_tones" in extra:
            report["skin_tones"] = tone_variants(out)
    report["runs"] = runs
    report["same_dataset_id"] = len({r["dataset_id"] for r in runs}) == 1
    print(json.dumps(report, indent=2))
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")


def reasons(out: Path) -> dict[str, int]:
    """Counts of dropped items by stage and reason kind (as the datasheet groups them)."""
    from easel.curation.datasheet import counts

    table = pq.read_table(out / "curated.parquet", columns=["set_id", "decision", "stage", "reason"])
    by_reason = counts(table)["by_reason"]
    return {f"{stage}: {kind}": n for (stage, kind), n in sorted(by_reason.items())}


def tone_variants(out: Path) -> dict[str, Any]:
    """What the duplicate rule did with skin-tone variants (items whose caption names a tone)."""
    from easel.audit.evaluate import variant_key

    rows = pq.read_table(
        out / "curated.parquet",
        columns=["item_id", "set_id", "caption", "decision", "stage", "duplicate_of", "reason"],
    ).to_pylist()
    by_id = {r["item_id"]: r for r in rows}
    toned = [r for r in rows if "skin tone" in r["caption"]]
    dropped = [r for r in toned if r["stage"] == "duplicates"]
    same_drawing = sum(
        1
        for r in dropped
        if r["duplicate_of"] in by_id
        and variant_key(r["set_id"], r["caption"])
        == variant_key(r["set_id"], by_id[r["duplicate_of"]]["caption"])
    )
    kept = [r for r in toned if r["decision"] == "keep"]
    groups: Counter[str] = Counter(variant_key(r["set_id"], r["caption"]) for r in kept)
    return {
        "tone_items": len(toned),
        "dropped_as_duplicates": len(dropped),
        "of_which_duplicate_of_same_drawing": same_drawing,
        "kept": len(kept),
        "drawings_with_more_than_one_kept_tone": sum(1 for v in groups.values() if v > 1),
        "dropped_by_other_stages": sum(1 for r in toned if r["stage"] not in (None, "duplicates")),
        "examples": [(r["item_id"], r["duplicate_of"]) for r in dropped[:5]],
    }
