"""The judges: small CNNs trained on real corpus images only, which score generated images.

Two judges share one architecture (:class:`IconJudge`): a *style* judge over the corpus's sets
and a *concept* judge over its concept names. They are trained on the CPU (about half an hour each) with
augmentation (small shifts and scales, slight blur, a 64→32→64 down/up-sample so that images
generated at 32 px are judged fairly) and measured on real images they never saw (see
:mod:`easel.evaluation.data` for the hold-outs). Each is saved as safetensors + a JSON config
under ``EASEL_HOME/eval/<dataset id>/`` and reused when the manifest is the same.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from easel import __version__
from easel.errors import BadInput, EaselError
from easel.evaluation.data import JUDGE_SIZE, EvalCorpus, concept_holdout

log = logging.getLogger(__name__)

JUDGE_KINDS = ("style", "concept")
# Judges trained by `easel eval classifiers` on the plain 64 px build of the seven pinned emoji
# sets (a dataset id every machine rebuilds to the byte), shipped so that a new machine scores
# models without an hour of judge training and every session's figures come from the same
# judges. A home's own judges for the same dataset win over them.
SHIPPED_JUDGES_DIR = Path(__file__).resolve().parent.parent / "models" / "judges"
# Number of CPU threads the judges use (the machine's two cores are shared; see STYLE/DESIGN).
JUDGE_THREADS = 1


@contextmanager
def judge_threads() -> Iterator[None]:
    """Run the judges on ``JUDGE_THREADS`` threads, restoring the caller's setting after (so a
    generator evaluated in the same process keeps its own threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(JUDGE_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class JudgeTrainConfig:
    """How a judge is trained. Part of its saved config: a change retrains it."""

    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    width: int = 32
    seed: int = 0
    # loss weight of a class ∝ (its training images) ** -class_balance: 0 = plain, 1 = balanced
    class_balance: float = 0.0


# Defaults for the 64 px seven-set corpus (1 thread; ~150-300 img/s on the shared 2 cores):
# style: 32 epochs of the ~17k train-split images, classes balanced (fxemoji and emojione have
# 4x fewer icons than openmoji); concept: 32 epochs of ~16k images over ~4,300 names. About
# 30-40 minutes each. Chosen by accuracy on the held-out real images only (BENCHMARKS.md,
# "stronger judges"): 10-12 epochs left both judges underfitting their own training images.
DEFAULT_TRAIN = {
    "style": JudgeTrainConfig(epochs=32, class_balance=1.0),
    "concept": JudgeTrainConfig(epochs=32),
}


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class IconJudge(nn.Module):
    """A small CNN: ``[N x 3 x 64 x 64]`` RGB in [0, 1] → features ``[N x 8w]`` → logits.

    Stem: 4x4 stride-2 conv (64→32 px); then strided 3x3 conv stages to 16, 8 and 4 px;
    global average pooling gives the feature vector used for Fréchet distances.
    """

    def __init__(self, n_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            _conv(w, 2 * w, 2), _conv(2 * w, 2 * w, 1),
            _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w, 1),
            _conv(4 * w, 8 * w, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, n_classes)
        self.feature_dim = 8 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N x 3 x 64 x 64]`` in [0, 1] → ``[N x 8w]`` pooled features."""
        return self.body((x - 0.5) / 0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N x 3 x 64 x 64]`` in [0, 1] → logits ``[N x n_classes]``."""
        return self.head(self.features(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 [N x H x W x 3]`` → float ``[N x 3 x 64 x 64]`` in [0, 1]."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise BadInput(f"expected images shaped [N x H x W x 3], got {list(images.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != JUDGE_SIZE or x.shape[-2] != JUDGE_SIZE:
        x = F.interpolate(x, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


def down_up(x: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Shrink ``[N x 3 x 64 x 64]`` to ``size`` px (area) and enlarge it again (bilinear)."""
    small = F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random mirror (p=0.5: sets draw animals facing either way), shift (±3 px), scale
    (0.85–1.1), slight blur (p=0.3) and a 64→32→64 down/up-sample (p=0.5) of a batch
    ``[N x 3 x 64 x 64]`` in [0, 1]; padding is white."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    scale = torch.empty(n).uniform_(0.85, 1.1, generator=gen)
    shift = torch.empty(n, 2).uniform_(-0.1, 0.1, generator=gen)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    blur = torch.rand(n, generator=gen) < 0.3
    if blur.any():
        sigma = float(torch.empty(1).uniform_(0.4, 1.0, generator=gen))
        k = torch.exp(-torch.tensor([-1.0, 0.0, 1.0]) ** 2 / (2 * sigma**2))
        k2 = (k[:, None] * k[None, :]) / k.sum() ** 2
        weight = k2.expand(3, 1, 3, 3).contiguous()
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), weight, groups=3)
    low = torch.rand(n, generator=gen) < 0.5
    if low.any():
        x[low] = down_up(x[low])
    return x.clamp_(0.0, 1.0)


@dataclass
class Judge:
    """A trained judge: the network, its class names and its saved config (with metrics)."""

    kind: str
    model: IconJudge
    classes: list[str]
    config: dict = field(default_factory=dict)
    source: Path | None = None  # the directory it was loaded from (None: trained in this process)

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 256,
                degrade: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``uint8 [N x H x W x 3]`` → (logits ``[N x C]``, features ``[N x F]``).

        ``degrade`` passes the images through 64→32→64 first (the low-resolution view)."""
        self.model.eval()
        logits, feats = [], []
        with judge_threads():
            for start in range(0, len(images), batch_size):
                x = to_tensor(images[start:start + batch_size])
                if degrade:
                    x = down_up(x)
                f = self.model.features(x)
                feats.append(f)
                logits.append(self.model.head(f))
        if not feats:
            return torch.zeros(0, len(self.classes)), torch.zeros(0, self.model.feature_dim)
        return torch.cat(logits), torch.cat(feats)


@dataclass
class Judges:
    """The style judge and the concept judge for one corpus."""

    style: Judge
    concept: Judge
    directory: Path | None = None  # where they are saved


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``[N]``: is ``targets[i]`` among the ``k`` highest ``logits[i]``?"""
    if len(targets) == 0:
        return torch.zeros(0, dtype=torch.bool)
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)


def _labels(corpus: EvalCorpus, kind: str) -> tuple[list[str], np.ndarray]:
    key = "set_id" if kind == "style" else "concept"
    classes = corpus.set_ids if kind == "style" else corpus.concepts
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.asarray([index[r[key]] for r in corpus.rows], dtype=np.int64)


def judge_split(corpus: EvalCorpus, kind: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(train indices, held-out indices, a sentence saying how they were held out)."""
    if kind == "style":
        train = corpus.index_where(splits=("train",))
        held = corpus.index_where(splits=("val", "test"))
        how = ("trained on the real images of train-split concepts (all sets); measured on the "
               "real images of val- and test-split concepts, which it never saw")
        return train, held, how
    if kind == "concept":
        out = concept_holdout(corpus)
        is_held = np.asarray([(r["concept"], r["set_id"]) in out for r in corpus.rows])
        how = ("trained on real images with some sets' drawings of each concept left out "
               "(for concepts drawn by 2+ sets: one set for train-split concepts, half of the sets "
               "for val/test-split concepts); measured on those left-out drawings")
        return np.flatnonzero(~is_held), np.flatnonzero(is_held), how
    raise BadInput(f"unknown judge kind {kind!r}", hint=f"use one of {', '.join(JUDGE_KINDS)}")


def train_judge(corpus: EvalCorpus, kind: str, cfg: JudgeTrainConfig | None = None,
                progress: bool = True) -> Judge:
    """Train one judge on the corpus's real images and measure it on its held-out images."""

    if kind not in JUDGE_KINDS:
        raise BadInput(f"unknown judge kind {kind!r}", hint=f"use one of {', '.join(JUDGE_KINDS)}")
    cfg = cfg or DEFAULT_TRAIN[kind]
    with judge_threads():
        return _train_judge(corpus, kind, cfg, progress)


def _train_judge(corpus: EvalCorpus, kind: str, cfg: JudgeTrainConfig, progress: bool) -> Judge:
    from tqdm import tqdm

    started = time.perf_counter()
    classes, labels = _labels(corpus, kind)
    train_idx, held_idx, how = judge_split(corpus, kind)
    if len(train_idx) == 0:
        raise EaselError(f"the {kind} judge has no training images in {corpus.manifest_path}",
                         hint="use a corpus with train-split concepts drawn by two or more sets")
    images = corpus.images(progress=progress)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = IconJudge(len(classes), cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, -(-len(train_idx) // cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 2),
                                                pct_start=0.15)
    y_all = torch.from_numpy(labels)
    counts = np.bincount(labels[train_idx], minlength=len(classes)).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -cfg.class_balance, 0.0)
    weights = weights / (weights[labels[train_idx]].mean() or 1.0)
    class_weight = torch.tensor(weights, dtype=torch.float32) if cfg.class_balance else None
    bar = tqdm(total=total, desc=f"train {kind} judge", unit="step", disable=not progress)
    model.train()
    for _epoch in range(cfg.epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            x = augment(to_tensor(images[idx]), gen)
            loss = F.cross_entropy(model(x), y_all[idx], weight=class_weight,
                                   label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    seconds = time.perf_counter() - started
    judge = Judge(kind, model.eval(), classes)
    metrics = measure_judge(judge, corpus, held_idx, labels)
    judge.config = {
        "kind": kind, "classes": classes, "width": cfg.width, "image_size": JUDGE_SIZE,
        "dataset_id": corpus.dataset_id, "manifest": str(corpus.manifest_path),
        "train_config": asdict(cfg), "holdout": how, "n_train": int(len(train_idx)),
        "n_heldout": int(len(held_idx)), "metrics": metrics, "train_seconds": round(seconds, 1),
        "easel_version": __version__, "torch_version": torch.__version__,
    }
    return judge


def measure_judge(judge: Judge, corpus: EvalCorpus, held_idx: np.ndarray,
                  labels: np.ndarray) -> dict:
    """A judge's accuracy on its held-out real images: as they are and via 32 px."""
    images = corpus.images()
    y = torch.from_numpy(labels[held_idx])
    out: dict = {"chance_top1": round(1 / len(judge.classes), 4), "n": int(len(held_idx))}
    for tag, degrade in (("", False), ("_via_32px", True)):
        logits, _ = judge.predict(images[held_idx], degrade=degrade)
        out[f"top1{tag}"] = _mean(topk_hits(logits, y, 1))
        out[f"top5{tag}"] = _mean(topk_hits(logits, y, 5))
        if judge.kind == "style" and not degrade:
            pred = logits.argmax(1)
            per_set = {}
            for ci, name in enumerate(judge.classes):
                sel = y == ci
                if sel.any():
                    per_set[name] = _mean(pred[sel] == ci)
            out["per_set"] = per_set
        if judge.kind == "concept":
            hits1, hits5 = topk_hits(logits, y, 1), topk_hits(logits, y, 5)
            seen = torch.from_numpy(np.asarray([corpus.rows[i]["split"] == "train" for i in held_idx]))
            for group, sel in (("train_concepts", seen), ("val_test_concepts", ~seen)):
                out[f"{group}{tag}"] = {"n": int(sel.sum()), "top1": _mean(hits1[sel]),
                                        "top5": _mean(hits5[sel])}
    return out


def _mean(t: torch.Tensor) -> float:
    return round(float(t.float().mean()), 4) if len(t) else float("nan")


def judge_dir(home: Path, dataset_id: str) -> Path:
    """Where the judges of one dataset live: ``EASEL_HOME/eval/<dataset id[:16]>``."""
    return home / "eval" / dataset_id[:16]


def save_judge(judge: Judge, directory: Path) -> Path:
    """Write ``<kind>.safetensors`` and ``<kind>.json``; returns the weights path."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{judge.kind}.safetensors"
    state = {k: v.contiguous() for k, v in judge.model.state_dict().items()}
    save_file(state, str(weights), metadata={"config": json.dumps({k: v for k, v in judge.config.items()
                                                                     if k != "classes"})})
    (directory / f"{judge.kind}.json").write_text(json.dumps(judge.config, indent=2))
    return weights


def load_judge(directory: Path, kind: str) -> Judge | None:
    """Load a saved judge, or None when there is none."""
    from safetensors.torch import load_file

    cfg_path, weights = directory / f"{kind}.json", directory / f"{kind}.safetensors"
    if not cfg_path.exists() or not weights.exists():
        return None
    config = json.loads(cfg_path.read_text())
    model = IconJudge(len(config["classes"]), config["width"])
    model.load_state_dict(load_file(str(weights)))
    return Judge(kind, model.eval(), list(config["classes"]), config, source=directory)


def ensure_judges(corpus: EvalCorpus, home: Path, retrain: bool = False,
                  train: dict[str, JudgeTrainConfig] | None = None, progress: bool = True,
                  allow_training: bool = True, shipped_dir: Path = SHIPPED_JUDGES_DIR) -> Judges:
    """The corpus's judges: loaded from ``EASEL_HOME/eval/``, else from the judges shipped in
    the package (``SHIPPED_JUDGES_DIR``), when built from the same manifest (dataset id) — and,
    for kinds named in ``train``, with that training config — otherwise trained now (``train``
    or the defaults) and saved under ``EASEL_HOME/eval/``. ``retrain`` ignores both."""
    directory = judge_dir(home, corpus.dataset_id)
    wanted = train or {}
    found: dict[str, Judge] = {}
    for kind in JUDGE_KINDS:
        judge = None
        for place in () if retrain else (directory, shipped_dir):
            candidate = load_judge(place, kind)
            if candidate is not None and candidate.config.get("dataset_id") == corpus.dataset_id and (
                    kind not in wanted or candidate.config.get("train_config") == asdict(wanted[kind])):
                judge = candidate
                break
        if judge is not None and judge.source == shipped_dir:
            log.info("using the %s judge shipped in %s (dataset %s)", kind, shipped_dir,
                     corpus.dataset_id[:16])
        if judge is not None and kind not in wanted and \
                judge.config.get("train_config") != asdict(DEFAULT_TRAIN[kind]):
            # Kept (a home's judges are what its figures were scored by), but said out loud.
            log.warning("the saved %s judge in %s was trained with %s, not today's default %s; "
                        "`easel eval classifiers --retrain` rebuilds it", kind, judge.source,
                        judge.config.get("train_config"), asdict(DEFAULT_TRAIN[kind]))
        if judge is None:
            if not allow_training:
                raise EaselError(f"no {kind} judge for dataset {corpus.dataset_id[:16]} in {directory}",
                                 hint="run `easel eval classifiers` first")
            log.info("training the %s judge", kind)
            judge = train_judge(corpus, kind, wanted.get(kind, DEFAULT_TRAIN[kind]), progress=progress)
            save_judge(judge, directory)
        found[kind] = judge
    return Judges(style=found["style"], concept=found["concept"], directory=directory)
