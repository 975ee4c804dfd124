"""The Streamline experiment (issue 7): does a personal style learn a style the base never saw?

Streamline Emojis is held out of the base model. This script

1. registers 30 Streamline icons (train split, drawn at random with ``--seed``) to a new artist
   ``streamline`` in a scratch registry (``--home``, made fresh), through the ordinary ingest;
2. trains that artist's personal style with ``easel.style.training.train_style`` (LoRA on the
   shipped base model, one thread) and times it;
3. generates ``--concepts`` Streamline concepts that are NOT among the 30 (val/test split), two
   seeds each, with the base model and with the adapter, from the same prompt naming the style
   ("<concept>, streamline style") and the same seeds;
4. judges both: the evaluation style classifier (share judged ``streamline-emojis``; the judge
   of ``easel eval model``, whose top-1 on real held-out Streamline icons is 1.0), and the
   audit (``easel.audit``) against the registered 30: the copy check's verdicts and the style
   descriptor's "strong style match" share;
5. writes the figures as JSON and a contact sheet (``--sheet``).

Run (about 10 minutes on one core):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/style_streamline.py \\
        --home /tmp/style-streamline-home --out /tmp/style-streamline.json \\
        --sheet docs/style_streamline.png
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

CORPUS = Path("/tmp/eh/corpus")
JUDGES = Path("/tmp/eh/eval/1facb2e480eb218d")
SET = "streamline-emojis"
ARTIST = "streamline"


def _rows(size: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(CORPUS / size / "manifest.parquet")
    return sorted((r for r in table.to_pylist() if r["set_id"] == SET), key=lambda r: r["item_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/style-streamline-home"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/style-streamline.json"))
    parser.add_argument("--sheet", type=Path, default=None)
    parser.add_argument("--train-items", type=int, default=30)
    parser.add_argument("--concepts", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="adapter steps (default: the default)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import os

    import torch

    torch.set_num_threads(1)
    if args.home.exists():
        shutil.rmtree(args.home)
    os.environ["EASEL_HOME"] = str(args.home)
    os.environ.pop("EASEL_DATABASE_URL", None)
    os.environ.pop("EASEL_MODEL_DIR", None)
    from easel.config import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_home()

    from easel.diffusion.pipeline import SHIPPED_MODEL_DIR, load_pipeline
    from easel.registry.importer import save_key
    from easel.registry.service import add_artist, register_work
    from easel.registry.store import registry_session
    from easel.style.adapter import StyleTrainConfig, apply_style
    from easel.style.training import train_style

    rows256 = {r["item_id"]: r for r in _rows("256px")}
    rows64 = {r["item_id"]: r for r in _rows("64px")}
    rng = random.Random(args.seed)
    train_rows = rng.sample([r for r in rows64.values() if r["split"] == "train"], args.train_items)
    train_concepts = {r["concept"] for r in train_rows}
    held = [r for r in rows64.values()
            if r["split"] in ("val", "test") and r["concept"] not in train_concepts]
    eval_rows = rng.sample(held, min(args.concepts, len(held)))

    # 1. register the 30 icons to a new artist
    url = settings.db_url
    with registry_session(url) as session:
        _, key = add_artist(session, ARTIST, "Streamline")
    save_key(settings.keys_dir, ARTIST, key)
    t0 = time.perf_counter()
    for r in train_rows:
        png = CORPUS / "256px" / rows256[r["item_id"]]["png_path"]
        register_work(url, png.read_bytes(), ARTIST, key, r["caption"], r["license_spdx"],
                      attribution=r["attribution"], name=png.name, store_dir=settings.home / "works")
    register_s = time.perf_counter() - t0

    # 2. train the style
    defaults = StyleTrainConfig()
    config = StyleTrainConfig(steps=args.steps or defaults.steps,
                              batch_size=args.batch_size or defaults.batch_size,
                              learning_rate=args.lr or defaults.learning_rate,
                              rank=args.rank or defaults.rank, seed=args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    trained = train_style(ARTIST, config=config, url=url, progress=True, device="cpu")
    train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0

    # 3. generate: base vs adapter, same prompts and seeds
    prompts = [f"{r['caption']}, streamline style" for r in eval_rows for _ in range(args.seeds)]
    seeds = [1000 + i for i in range(len(prompts))]

    def sample(pipe: Any) -> list[Any]:
        images = []
        for i in range(0, len(prompts), 16):
            out = pipe(prompts[i:i + 16], seeds=seeds[i:i + 16], num_inference_steps=args.sample_steps,
                       guidance_scale=args.guidance, upscale=False)
            images += out.images
        return images

    base_pipe = load_pipeline(SHIPPED_MODEL_DIR, device="cpu")
    t0 = time.perf_counter()
    before = sample(base_pipe)
    base_s = time.perf_counter() - t0
    styled_pipe = load_pipeline(SHIPPED_MODEL_DIR, device="cpu")
    apply_style(styled_pipe, trained.adapter_dir, SHIPPED_MODEL_DIR)
    t0 = time.perf_counter()
    after = sample(styled_pipe)
    styled_s = time.perf_counter() - t0

    # 4. judge
    from easel.evaluation.judges import load_judge

    style_judge = load_judge(JUDGES, "style")
    concept_judge = load_judge(JUDGES, "concept")
    assert style_judge is not None and concept_judge is not None
    target = style_judge.classes.index(SET)

    def judged(images: list[Any]) -> dict[str, Any]:
        arr = np.stack([np.asarray(im.convert("RGB").resize((64, 64))) for im in images])
        logits, _ = style_judge.predict(arr)
        probs = logits.softmax(-1)
        top = logits.argmax(-1)
        counts = Counter(style_judge.classes[int(i)] for i in top)
        out: dict[str, Any] = {"streamline_share": round(float((top == target).float().mean()), 4),
                               "mean_p_streamline": round(float(probs[:, target].mean()), 4),
                               "predicted": dict(counts.most_common())}
        clogits, _ = concept_judge.predict(arr)
        want = [concept_judge.classes.index(r["concept"]) if r["concept"] in concept_judge.classes else -1
                for r in eval_rows for _ in range(args.seeds)]
        known = [i for i, w in enumerate(want) if w >= 0]
        if known:
            top5 = clogits[known].topk(5, dim=1).indices
            hits = (top5 == torch.tensor([want[i] for i in known])[:, None]).any(1)
            out["concept_top5"] = round(float(hits.float().mean()), 4)
            out["concept_n"] = len(known)
        return out

    from easel.audit.encoder import load_encoder
    from easel.audit.service import Auditor
    from easel.registry.store import index_dir

    encoder = load_encoder()

    def audited(images: list[Any]) -> dict[str, Any]:
        verdicts: Counter[str] = Counter()
        best_copy, best_style = [], []
        with registry_session(url) as session:
            auditor = Auditor(session, index_dir(url), encoder)
            for i, im in enumerate(images):
                result = auditor.audit(im.convert("RGB").resize((256, 256)), f"sample-{i}")
                verdicts[result.verdict] += 1
                best_copy.append(max((m.copy_score for m in result.matches), default=0.0))
                best_style.append(max((m.style_score for m in result.matches), default=0.0))
        return {"verdicts": dict(verdicts), "max_copy_score_mean": round(float(np.mean(best_copy)), 4),
                "max_copy_score_max": round(float(np.max(best_copy)), 4),
                "max_style_score_mean": round(float(np.mean(best_style)), 4)}

    from PIL import Image

    real = [Image.open(CORPUS / "64px" / r["png_path"]).convert("RGB") for r in eval_rows]
    results = {
        "command": "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/style_streamline.py "
                   + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "base_model": trained.manifest["base_model"],
        "style_id": trained.style_id,
        "train_items": [r["item_id"] for r in train_rows],
        "eval_concepts": [r["concept"] for r in eval_rows],
        "n_samples": len(prompts),
        "config": trained.manifest["config"],
        "register_seconds": round(register_s, 1),
        "train_seconds_wall": round(train_wall, 1),
        "train_seconds_cpu": round(train_cpu, 1),
        "loss_curve_mean_per_20_steps": trained.manifest["training"]["loss_curve_mean_per_20_steps"],
        "sample_seconds": {"base": round(base_s, 1), "styled": round(styled_s, 1)},
        "judge": {"before": judged(before), "after": judged(after), "real_heldout": judged(real)},
        "audit": {"before": audited(before), "after": audited(after), "real_heldout": audited(real)},
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k in ("judge", "audit", "train_seconds_wall")},
                     indent=2))

    # 5. contact sheet: six training icons, then per concept: the real icon (never trained on),
    #    the base model and the base model with the style, same prompt and seed
    if args.sheet is not None:
        from easel.evaluation.sheet import contact_sheet

        tiles, captions = [], []
        for r in train_rows[:6]:
            tiles.append(Image.open(CORPUS / "64px" / r["png_path"]).convert("RGB"))
            captions.append(f"train: {r['caption'][:14]}")
        for j, r in enumerate(eval_rows[:12]):
            tiles += [real[j], before[j * args.seeds], after[j * args.seeds]]
            captions += [f"real: {r['caption'][:15]}", "base model", "base + style"]
        sheet = contact_sheet(tiles, captions, columns=6, tile=96)
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.sheet)


if __name__ == "__main__":
    main()
