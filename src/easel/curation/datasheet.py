"""A datasheet for every curated manifest, after Gebru et al., "Datasheets for Datasets" (2018).

``datasheet.md`` answers the paper's sections (motivation, composition, collection, cleaning,
uses, distribution, maintenance) from the curated rows themselves: sources with licences and
rights holders, counts kept and dropped by reason and by set, the consent snapshot time and the
dataset id. ``datasheet.png`` charts the same counts (one bar per set: kept, then each drop stage).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from easel.curation.stages import STAGES

DATASHEET_MD = "datasheet.md"
DATASHEET_PNG = "datasheet.png"
COLOURS = {
    "kept": (60, 150, 80),
    "consent": (200, 50, 50),
    "integrity": (120, 120, 120),
    "safety": (150, 60, 160),
    "attribution": (230, 150, 30),
    "duplicates": (60, 110, 200),
}


def _reason_kind(stage: str, reason: str) -> str:
    """A reason without its item-specific parts, so like reasons count together."""
    if stage == "duplicates":
        if "identical file" in reason:
            kind = "exact copy"
        elif "PDQ" in reason:
            kind = "near copy (PDQ)"
        else:
            kind = "near copy (copy descriptor)"
        return kind + (" of a refused work" if "refused" in reason else " of an earlier work")
    if stage == "consent":
        for key, text in (
            ("opted out", "opted out"),
            ("revoked", "revoked by the owner"),
            ("registered", "not a registered work"),
            ("could not be checked", "check failed"),
            ("does not allow", "licence does not allow it"),
        ):
            if key in reason:
                return text
    if stage == "integrity":
        for key in ("missing", "does not decode", "sha256", "blank"):
            if key in reason:
                return {
                    "missing": "file missing",
                    "does not decode": "corrupt file",
                    "sha256": "sha256 mismatch",
                    "blank": "blank image",
                }[key]
    if stage == "safety":
        return "NudeNet score over threshold"
    return reason


def counts(curated: pa.Table) -> dict[str, Any]:
    """Counts by set and stage, and by stage and reason kind."""
    rows = curated.select(["set_id", "decision", "stage", "reason"]).to_pylist()
    by_set: dict[str, Counter[str]] = {}
    by_reason: Counter[tuple[str, str]] = Counter()
    for r in rows:
        by_set.setdefault(r["set_id"], Counter())[r["stage"] or "kept"] += 1
        if r["stage"]:
            by_reason[(r["stage"], _reason_kind(r["stage"], r["reason"]))] += 1
    return {"by_set": by_set, "by_reason": by_reason}


def chart(by_set: dict[str, Counter[str]], path: Path) -> None:
    """A horizontal stacked bar per set: kept, then items dropped by each stage."""
    from PIL import Image, ImageDraw

    sets = sorted(by_set)
    width, label_w, bar_h, top = 900, 170, 26, 50
    height = top + bar_h * len(sets) + 16 * len(sets) + 70
    image = Image.new("RGB", (width, max(height, 160)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), "Items kept and dropped by stage, per set", fill="black")
    most = max((sum(c.values()) for c in by_set.values()), default=1) or 1
    scale = (width - label_w - 80) / most
    y = top
    for set_id in sets:
        c = by_set[set_id]
        draw.text((10, y + 7), set_id[:24], fill="black")
        x = float(label_w)
        for key in ("kept",) + STAGES:
            n = c.get(key, 0)
            if n:
                draw.rectangle([x, y, x + max(1.0, n * scale), y + bar_h], fill=COLOURS[key])
                x += n * scale
        draw.text((x + 6, y + 7), f"{sum(c.values())}", fill="black")
        y += bar_h + 16
    x = 10
    for key in ("kept",) + STAGES:
        draw.rectangle([x, y + 10, x + 14, y + 24], fill=COLOURS[key])
        draw.text((x + 20, y + 11), key, fill="black")
        x += 120
    image.save(path)


def write_datasheet(out_dir: Path, curated: pa.Table, meta: dict[str, str]) -> Path:
    """Write ``datasheet.md`` and ``datasheet.png`` for a curated manifest into ``out_dir``."""
    c = counts(curated)
    chart(c["by_set"], out_dir / DATASHEET_PNG)
    sources: dict[str, dict[str, str]] = {}
    for r in curated.select(["set_id", "rights_holder", "license_spdx", "license_url", "source"]).to_pylist():
        sources.setdefault(r["set_id"], r)
    total = curated.num_rows
    kept = sum(s.get("kept", 0) for s in c["by_set"].values())
    lines = [
        f"# Datasheet: dataset `{meta['dataset_id']}`",
        "",
        "After Gebru et al., *Datasheets for Datasets* (2018). Written by `easel corpus curate`.",
        "",
        "## Motivation",
        "",
        f"- Purpose: **{meta['purpose']}** — a training set of works whose owners allow that use.",
        "- Created by Easel's curation pipeline from a corpus manifest; every decision below is "
        "recorded per item in `curated.parquet` (column `reason`).",
        "",
        "## Composition",
        "",
        f"- Dataset id (sha256 over the kept rows, file locations excluded): `{meta['dataset_id']}`",
        f"- Items: **{kept} kept** of {total} curated ({total - kept} dropped).",
        f"- Input manifest: `{meta['input']}` "
        f"(dataset id `{meta.get('input_dataset_id') or 'not recorded'}`), "
        f"{meta.get('size') or '?'} px images.",
        "",
        "![kept and dropped by set](datasheet.png)",
        "",
        "| set | rights holder | licence | source | kept | " + " | ".join(STAGES) + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in STAGES) + " |",
    ]
    for set_id in sorted(c["by_set"]):
        s, n = sources[set_id], c["by_set"][set_id]
        lines.append(
            f"| {set_id} | {s['rights_holder']} | [{s['license_spdx']}]({s['license_url']}) "
            f"| {s['source']} | {n.get('kept', 0)} | " + " | ".join(str(n.get(st, 0)) for st in STAGES) + " |"
        )
    lines += [
        "",
        "## Collection process",
        "",
        f"- Consent snapshot: the registry's consent ledger as of **{meta['consent_at']}** "
        "(`easel.registry.policy`, the one consent function; an error there is a refusal).",
        "- Each kept row's `consent_event_id` is the ledger event that allowed it.",
        "",
        "## Preprocessing and cleaning",
        "",
        f"- Stages run: {meta['stages']}; copy descriptors: {meta['descriptors']}; "
        f"safety threshold (NudeNet): {meta['safety_threshold']}.",
        "",
        "| stage | reason | items |",
        "| --- | --- | --- |",
    ]
    for (stage, kind), n in sorted(c["by_reason"].items(), key=lambda kv: (STAGES.index(kv[0][0]), -kv[1])):
        lines.append(f"| {stage} | {kind} | {n} |")
    if not c["by_reason"]:
        lines.append("| — | nothing dropped | 0 |")
    lines += [
        "",
        "Duplicates: of every cluster of identical or near-identical pictures (sha256, PDQ "
        "within the registry's match distance, or copy descriptors at the audit's copy "
        "threshold) the earliest registered work is kept; each dropped item names the item it "
        "duplicated (`duplicate_of`). A near-copy of a work whose owner refused is dropped too.",
        "",
        "## Uses",
        "",
        f"- Intended: {meta['purpose']} by Easel's trainers, which check consent again before reading.",
        "- Not intended: any use the owners did not allow; the consent of every item can change — "
        "`easel registry affected --artist A` names the datasets and models a withdrawal touches.",
        "",
        "## Distribution",
        "",
        "- Each kept item keeps its licence and attribution text (columns `license_spdx`, "
        "`attribution`); share-alike and attribution duties travel with it.",
        "",
        "## Maintenance",
        "",
        "- Re-run `easel corpus curate` after consent changes: a new snapshot yields a new dataset id. "
        f"Curated with easel {meta['easel_version']} at {meta['curated_at']}.",
        "",
    ]
    path = out_dir / DATASHEET_MD
    path.write_text("\n".join(lines))
    return path
