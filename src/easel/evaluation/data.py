"""The real images the judges learn from, the hold-outs that keep them honest, and the prompts.

Everything here is deterministic: the same manifest gives the same hold-outs and prompts on
every machine, so evaluation figures from different sessions are comparable.

Hold-outs (both are over *real* corpus images; the generator's own split is the manifest's
``split`` column, by concept):

* **style judge** — trained on images of ``train``-split concepts (all sets), measured on
  ``val``/``test``-split images, whose concepts it never saw.
* **concept judge** — for every concept drawn by two or more sets, some sets' drawings are left
  out of its training: one set for ``train``-split concepts, half of the sets (rounded down) for
  ``val``/``test`` concepts, so that there are enough left-out unseen-concept prompts. It is
  measured on exactly those left-out drawings ("name this concept as drawn by an artist whose
  drawing of it you never saw"). Concepts drawn by one set only are trained on.

Evaluation prompts are drawn from the left-out (concept, set) pairs, so the real icons of the
prompts — the ``real`` reference generator — were never seen by the concept judge either.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from easel.corpus.captions import prompt_for
from easel.corpus.manifest import load_manifest, manifest_metadata
from easel.errors import BadInput

# Sets kept out of the base model (learned later by style personalisation); prompts for the
# base model are drawn from the other sets.
HELD_OUT_SETS = ("streamline-emojis",)
SPLITS = ("train", "val", "test")
JUDGE_SIZE = 64  # judges take 64x64 RGB; every image is resized to it
DEFAULT_N_PROMPTS = 140
DEFAULT_SEED = 0

# The fixed contact-sheet prompts (issue 11): the same 16 prompts and seeds every time.
# (caption, style tag); all six base styles, 14 train-split concepts, "banana" (val split)
# and "red heart" (test split) in the corpus built with seed 0.
CONTACT_SHEET_PROMPTS: tuple[tuple[str, str], ...] = (
    ("grinning face", "twemoji style"), ("pizza", "noto style"), ("rocket", "openmoji style"),
    ("sun", "fluent style"), ("cat face", "emojione style"), ("ghost", "fxemoji style"),
    ("red apple", "twemoji style"), ("birthday cake", "noto style"), ("house", "openmoji style"),
    ("crown", "fluent style"), ("umbrella", "emojione style"), ("watermelon", "fxemoji style"),
    ("smiling face with sunglasses", "twemoji style"), ("fire", "noto style"),
    ("banana", "fluent style"), ("red heart", "openmoji style"),
)
CONTACT_SHEET_SEEDS: tuple[int, ...] = tuple(range(16))


def _h(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def _holdout_key(concept: str, set_id: str) -> str:
    return _h("concept-holdout", concept, set_id)


@dataclass(frozen=True)
class PromptRow:
    """One evaluation prompt: the corpus row it names, its prompt text and its fixed seed."""

    item_id: str
    set_id: str
    concept: str
    caption: str
    style_tag: str
    split: str
    prompt: str
    seed: int
    draw: int = 0  # which of a prompt's pictures this is (``with_draws``)

    @property
    def seen(self) -> bool:
        """True when the concept is in the generator's training split."""
        return self.split == "train"


@dataclass
class EvalCorpus:
    """A manifest's rows and (lazily) its images as ``uint8 [N x 64 x 64 x 3]`` RGB on white."""

    manifest_path: Path
    dataset_id: str
    rows: list[dict]
    _images: np.ndarray | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return self.manifest_path.parent

    @property
    def set_ids(self) -> list[str]:
        """All sets in the manifest, sorted (the style judge's classes)."""
        return sorted({r["set_id"] for r in self.rows})

    @property
    def base_sets(self) -> list[str]:
        """Sets the base model is trained on (all but ``HELD_OUT_SETS``)."""
        return [s for s in self.set_ids if s not in HELD_OUT_SETS]

    @property
    def concepts(self) -> list[str]:
        """All concepts in the manifest, sorted (the concept judge's classes)."""
        return sorted({r["concept"] for r in self.rows})

    def images(self, progress: bool = False) -> np.ndarray:
        """Every row's image, ``uint8 [N x 64 x 64 x 3]`` (read once, then kept)."""
        if self._images is None:
            from PIL import Image
            from tqdm import tqdm

            out = np.empty((len(self.rows), JUDGE_SIZE, JUDGE_SIZE, 3), np.uint8)
            for i, row in enumerate(tqdm(self.rows, desc="read icons", unit="icon",
                                         disable=not progress)):
                with Image.open(self.root / row["png_path"]) as im:
                    out[i] = to_rgb_array(im)
            self._images = out
        return self._images

    def index_where(self, *, splits: tuple[str, ...] | None = None,
                    sets: list[str] | None = None) -> np.ndarray:
        """Row indices whose split is in ``splits`` and set in ``sets`` (None = any)."""
        keep = [i for i, r in enumerate(self.rows)
                if (splits is None or r["split"] in splits) and (sets is None or r["set_id"] in sets)]
        return np.asarray(keep, dtype=np.int64)


def to_rgb_array(image: object, size: int = JUDGE_SIZE) -> np.ndarray:
    """A PIL image as ``uint8 [size x size x 3]`` RGB: transparency composited on white,
    resized with a box/bilinear filter (any input size is accepted)."""
    from PIL import Image

    from easel.images import rgb_on_white

    if not isinstance(image, Image.Image):
        raise BadInput(f"expected a PIL image, got {type(image).__name__}")
    image = rgb_on_white(image)
    if image.size != (size, size):
        smaller = image.size[0] > size
        image = image.resize((size, size), Image.Resampling.BOX if smaller else Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_eval_corpus(manifest: Path) -> EvalCorpus:
    """Read a corpus manifest (file or its directory) for the judges and the prompts."""
    table = load_manifest(manifest)
    path = manifest / "manifest.parquet" if manifest.is_dir() else manifest
    meta = manifest_metadata(table)
    columns = ["item_id", "set_id", "icon_name", "concept", "caption", "style_tag", "split", "png_path"]
    rows = table.select(columns).to_pylist()
    if not rows:
        raise BadInput(f"manifest {path} has no rows", hint="build a corpus with `easel corpus build`")
    rows.sort(key=lambda r: r["item_id"])
    dataset_id = meta.get("dataset_id")
    if not dataset_id:
        from easel.corpus.manifest import dataset_id_of

        dataset_id = dataset_id_of(table)
    return EvalCorpus(path, dataset_id, rows)


def concept_holdout(corpus: EvalCorpus) -> set[tuple[str, str]]:
    """The (concept, set) pairs whose drawings the concept judge never trains on.

    For concepts drawn by >= 2 sets: one set (by a fixed hash order) for ``train``-split
    concepts, half of the sets (rounded down) for ``val``/``test`` concepts.
    """
    sets_of: dict[str, set[str]] = defaultdict(set)
    split_of: dict[str, str] = {}
    for row in corpus.rows:
        sets_of[row["concept"]].add(row["set_id"])
        split_of[row["concept"]] = row["split"]
    held: set[tuple[str, str]] = set()
    for concept, sets in sets_of.items():
        if len(sets) < 2:
            continue
        order = sorted(sets, key=partial(_holdout_key, concept))
        chosen = order[:1] if split_of[concept] == "train" else order[:len(order) // 2]
        held.update((concept, s) for s in chosen)
    return held


def parse_splits(split: str) -> tuple[str, ...]:
    """``"val"`` or a comma list ``"train,val"`` → a tuple of known split names."""
    parts = tuple(p.strip() for p in split.split(",") if p.strip())
    unknown = [p for p in parts if p not in SPLITS]
    if not parts or unknown:
        raise BadInput(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)} or a comma list")
    return parts


DRAW_SEED_STRIDE = 1_000_003
"""Seed offset between two draws of one prompt: draw ``r`` of the prompt with seed ``s`` uses
``s + r·DRAW_SEED_STRIDE`` (a prime well past any prompt count, so no two pictures share a seed)."""
MAX_DRAWS = 64


def check_draws(draws: int) -> None:
    """``BadInput`` unless ``draws`` is a usable number of pictures per prompt."""
    if not 1 <= draws <= MAX_DRAWS:
        raise BadInput(f"--draws must be between 1 and {MAX_DRAWS}, got {draws}",
                       hint="1 is one picture per prompt; 4 averages out most of the seeds' luck")


def with_draws(rows: list[PromptRow], draws: int) -> list[PromptRow]:
    """``rows`` repeated ``draws`` times, draw by draw, each draw with its own seeds; draw 0 is
    ``rows`` itself, so a one-draw evaluation and the first draw of a longer one are the same
    pictures."""
    check_draws(draws)
    return [replace(r, seed=r.seed + d * DRAW_SEED_STRIDE, draw=d) for d in range(draws) for r in rows]


def select_prompts(corpus: EvalCorpus, split: str = "val", n: int = DEFAULT_N_PROMPTS,
                   seed: int = DEFAULT_SEED, sets: list[str] | None = None) -> list[PromptRow]:
    """Choose ``n`` evaluation prompts from ``split`` (deterministic).

    Candidates are the real icons of the concept judge's left-out (concept, set) pairs in the
    base sets (or ``sets``), one icon per (concept, set) — the one without a skin-tone
    qualifier when there is one. They are ordered by a seeded hash within each set and taken
    round-robin across sets, so the prompts spread evenly over the styles. Seed ``i`` is
    ``seed + i``.
    """
    splits = parse_splits(split)
    if n < 1:
        raise BadInput(f"-n must be at least 1, got {n}")
    sets = sets if sets is not None else corpus.base_sets
    unknown = [s for s in sets if s not in corpus.set_ids]
    if unknown:
        raise BadInput(f"unknown set(s) {', '.join(unknown)}", hint=f"sets: {', '.join(corpus.set_ids)}")
    held = concept_holdout(corpus)
    best: dict[tuple[str, str], dict] = {}
    for row in corpus.rows:
        key = (row["concept"], row["set_id"])
        if row["split"] not in splits or row["set_id"] not in sets or key not in held:
            continue
        # prefer the plain variant (icon name == concept), then the smallest item id
        rank = (row["icon_name"] != row["concept"], row["item_id"])
        if key not in best or rank < (best[key]["icon_name"] != best[key]["concept"], best[key]["item_id"]):
            best[key] = row
    per_set: dict[str, list[dict]] = defaultdict(list)
    for (_, set_id), row in best.items():
        per_set[set_id].append(row)
    if not per_set:
        raise BadInput(f"split {split!r} has no evaluation prompts in sets {', '.join(sets)}",
                       hint="choose another --split, or a corpus with more sets per concept")
    for set_id in per_set:
        per_set[set_id].sort(key=lambda r: _h("prompt", str(seed), r["item_id"]))
    chosen: list[dict] = []
    queues = [per_set[s] for s in sorted(per_set)]
    depth = 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < n:
                chosen.append(q[depth])
        depth += 1
    return [PromptRow(item_id=r["item_id"], set_id=r["set_id"], concept=r["concept"],
                      caption=r["caption"], style_tag=r["style_tag"], split=r["split"],
                      prompt=prompt_for(r["caption"], r["style_tag"]), seed=seed + i)
            for i, r in enumerate(chosen)]
