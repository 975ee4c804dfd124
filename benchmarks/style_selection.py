"""Choosing among several starts by the latent style classifier (BENCHMARKS.md, session 21).

Each prompt is sampled from ``--candidates`` N noise seeds: candidate 0 is the prompt's own seed
(the picture the pipeline draws), candidate j is seed + j·1,000,003 (the seeds of ``easel eval
model --draws N``). All N run the pipeline's
sampler (Euler, classifier-free guidance ``--guidance``, ``--steps`` steps). After every step the
latent style classifier (``--classifier``, made by ``easel train style-guide``) reads each
candidate's noised latent at its noise level and gives the log-probability of the prompt's style
tag. Every candidate is finished and scored by the shipped judges, as ``easel eval model``
scores pictures; the report then says, for each step k, how often the judges read the asked
style (and the concept in the top 5) when the candidate the classifier liked best after step k
is kept, against candidate 0 alone, the mean candidate (the fair baseline: a random one of the
N) and the best of the N by the judge (an oracle). Two more
selectors read the finished pictures with the audit encoder's style head (``easel.audit``): the
candidate closest to the asked set's centroid of training icons (against the nearest other
set's), and the one with most training icons of the asked set among its 20 nearest; the
encoder's own accuracy at naming the set of held-out real icons both ways is printed beside.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.style_selection \\
        --classifier <model dir>/style_classifier --candidates 4 [--model DIR] [--json F]

Slow (N times an evaluation, about 6 minutes for N = 4 on one core): not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.judged import (
    add_candidate_options,
    add_prompt_options,
    check_candidate_options,
    eval_corpus,
    sample_guided,
    score,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", type=Path, required=True, help="a style_classifier/ directory")
    add_candidate_options(parser)
    parser.add_argument("--cache", type=Path, default=None,
                        help="an .npz of the candidates' pictures and traces: read if it exists, "
                             "else written (so selection rules can be scored without resampling)")
    add_prompt_options(parser)
    args = parser.parse_args()
    check_candidate_options(parser, args)

    import torch

    from easel.corpus.captions import split_style
    from easel.diffusion.data import to_pil
    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.style_guide import LatentStyleClassifier
    from easel.evaluation.compare import concept_in_top, style_right
    from easel.evaluation.data import DRAW_SEED_STRIDE

    pipe = load_pipeline(args.model)
    clf = LatentStyleClassifier.from_pretrained(str(args.classifier)).eval()
    n_cand = args.candidates
    images: dict[tuple[str, int], list[Any]] = {}
    logps: dict[tuple[str, int], list[list[float]]] = {}

    @torch.no_grad()
    def sample(prompts: list[str], seeds: list[int]) -> None:
        todo = [(p, s) for p, s in zip(prompts, seeds, strict=True) if (p, s) not in images]
        if not todo:
            return
        ps = [p for p, _ in todo for _ in range(n_cand)]
        ss = [s + j * DRAW_SEED_STRIDE for _, s in todo for j in range(n_cand)]
        n = len(ps)
        labels = clf.labels_for([split_style(p)[1] for p in ps])
        trace = []

        def read(i: int, sigma: float, lat: torch.Tensor) -> None:
            lp = clf(lat, torch.full((n,), sigma)).float().log_softmax(dim=1)
            trace.append(lp.gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
                         .masked_fill(labels < 0, 0.0))

        lat = sample_guided(pipe, ps, ss, args.steps, args.guidance, after_step=read)
        pics = to_pil(pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample.float())
        per_step = torch.stack(trace, dim=1)  # [n x steps]
        for k, key in enumerate(todo):
            images[key] = pics[k * n_cand:(k + 1) * n_cand]
            logps[key] = per_step[k * n_cand:(k + 1) * n_cand].tolist()

    def candidate(j: int) -> Any:
        def generate(prompts: list[str], seeds: list[int]) -> list[Any]:
            sample(prompts, seeds)
            return [images[(p, s)][j] for p, s in zip(prompts, seeds, strict=True)]
        return generate

    if args.cache and args.cache.exists():
        import numpy as np

        saved = np.load(args.cache, allow_pickle=False)
        from PIL import Image

        for key, pics, lp in zip(saved["keys"].tolist(), saved["pictures"], saved["logp"], strict=True):
            p, s = key.rsplit("|", 1)
            images[(p, int(s))] = [Image.fromarray(a) for a in pics]
            logps[(p, int(s))] = lp.tolist()

    corpus = eval_corpus()
    json_path, args.json = args.json, None
    reports = [score(candidate(j), args, f"candidate {j}", {"candidate": j}, corpus=corpus)
               for j in range(n_cand)]

    if args.cache and not args.cache.exists():
        import numpy as np

        np.savez_compressed(args.cache, keys=np.asarray([f"{p}|{s}" for p, s in images]),
                            pictures=np.stack([np.stack([np.asarray(im.convert("RGB")) for im in v])
                                               for v in images.values()]),
                            logp=np.asarray([logps[k] for k in images], dtype=np.float32))

    # per prompt: was candidate j right (style; concept in the top 5)?
    by_key = [{(it["prompt"], it["seed"]): it for it in rep["items"]} for rep in reports]
    keys = [(it["prompt"], it["seed"]) for it in reports[0]["items"]]
    seen = {k: by_key[0][k]["seen"] for k in keys}

    def style_ok(j: int, k: tuple[str, int]) -> bool:
        return style_right(by_key[j][k])

    def top5(j: int, k: tuple[str, int]) -> bool:
        return concept_in_top(by_key[j][k], 5)

    def rate(pick: dict[tuple[str, int], int], ok: Any, only_seen: bool = True) -> float:
        ks = [k for k in keys if seen[k] or not only_seen]
        return round(sum(ok(pick[k], k) for k in ks) / len(ks), 4)

    rows = []
    for step in range(args.steps):
        pick = {k: max(range(n_cand), key=lambda j, k=k: logps[k][j][step]) for k in keys}
        rows.append({"after_step": step + 1, "style": rate(pick, style_ok), "top5": rate(pick, top5),
                     "style_all": rate(pick, style_ok, only_seen=False)})
    desc = descriptor_scores(corpus, {k: by_key[0][k]["set_id"] for k in keys}, images, n_cand)
    for name in ("centroid", "knn"):
        pick = {k: max(range(n_cand), key=lambda j, k=k: desc[name][k][j]) for k in keys}
        rows.append({"selector": f"descriptor {name}", "style": rate(pick, style_ok),
                     "top5": rate(pick, top5), "style_all": rate(pick, style_ok, only_seen=False)})

    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=lambda j: values[j])
        return [order.index(j) for j in range(len(values))]

    for step in (5, 10, args.steps):  # both readers: the sum of each candidate's two ranks
        pick = {k: max(range(n_cand), key=lambda j, k=k: (
            ranks([lp[step - 1] for lp in logps[k]])[j] + ranks(desc["centroid"][k])[j],
            desc["centroid"][k][j])) for k in keys}
        rows.append({"selector": f"latent classifier after step {step} + descriptor centroid (ranks)",
                     "style": rate(pick, style_ok), "top5": rate(pick, top5),
                     "style_all": rate(pick, style_ok, only_seen=False)})
    per_candidate = [rate({k: j for k in keys}, style_ok) for j in range(n_cand)]
    mean = round(sum(per_candidate) / n_cand, 4)
    # the two style readers side by side, on every seen candidate picture
    pairs = [(by_key[j][k], desc["verdict"][k][j]) for k in keys if seen[k] for j in range(n_cand)]
    def share(hits: Any) -> float:
        return round(sum(hits) / len(pairs), 4)

    agreement = {
        "pictures": len(pairs),
        "judge_reads_asked_set": share(style_right(it) for it, _ in pairs),
        "descriptor_reads_asked_set": share(v == it["set_id"] for it, v in pairs),
        "both_read_asked_set": share(v == it["set_id"] == it["style_predicted"] for it, v in pairs),
        "same_set": share(v == it["style_predicted"] for it, v in pairs),
    }
    first = {k: 0 for k in keys}
    oracle = {k: next((j for j in range(n_cand) if style_ok(j, k)), 0) for k in keys}
    summary = {
        "candidates": n_cand, "classifier": str(args.classifier), "model": str(args.model or "shipped"),
        "candidate_0": {"style": rate(first, style_ok), "top5": rate(first, top5)},
        "per_candidate_style": per_candidate,
        "oracle_style": rate(oracle, style_ok),
        "mean_candidate_style": mean,
        "descriptor_centroid": {f"{p}|{s}": v for (p, s), v in desc["centroid"].items()},
        "selected": rows,
        "descriptor_real_accuracy": desc["real_accuracy"],
        "agreement": agreement,
        "logp": {f"{p}|{s}": v for (p, s), v in logps.items()},
        "items": [[by_key[j][k] for j in range(n_cand)] for k in keys],
    }
    print(f"candidate 0: style {summary['candidate_0']['style']}, top-5 {summary['candidate_0']['top5']}; "
          f"each candidate: {summary['per_candidate_style']} (mean {mean}); "
          f"oracle style {summary['oracle_style']}")
    print(f"descriptor style head on held-out real icons: {desc['real_accuracy']}")
    print(f"on the generated pictures (seen concepts): {agreement}")
    for row in rows:
        by = f"after step {row['after_step']:2d}" if "after_step" in row else f"by {row['selector']}"
        print(f"  chosen {by}: style {row['style']:.3f}  top-5 {row['top5']:.3f}")
    if json_path:
        json_path.write_text(json.dumps(summary, indent=1, default=str))


def descriptor_scores(corpus: Any, asked: dict[tuple[str, int], str], images: dict, n_cand: int,
                      per_set: int = 800, k_nn: int = 20) -> dict[str, Any]:
    """How much each candidate looks like its asked set by the audit encoder's style head: the
    cosine to the set's centroid minus the best other set's (``centroid``), and the share of its
    ``k_nn`` nearest training icons that are in the set (``knn``). The encoder's own accuracy
    at naming the set of held-out (val/test) real icons both ways is returned beside them."""
    import numpy as np
    import torch
    from PIL import Image

    from easel.audit.encoder import describe, load_encoder

    enc = load_encoder()
    rng = np.random.default_rng(0)
    pixels = corpus.images()
    sets = corpus.set_ids

    def sample(splits: tuple[str, ...], cap: int) -> np.ndarray:
        idx = [corpus.index_where(splits=splits, sets=[s]) for s in sets]
        return np.concatenate([np.sort(rng.choice(i, min(cap, len(i)), replace=False)) for i in idx])

    def style_of(arrays: Any) -> torch.Tensor:
        return describe(enc, [Image.fromarray(np.asarray(a)) for a in arrays]).style

    ref_idx = sample(("train",), per_set)
    ref = style_of(pixels[ref_idx])
    ref_set = np.asarray([sets.index(corpus.rows[i]["set_id"]) for i in ref_idx])
    cents = torch.nn.functional.normalize(torch.stack([ref[torch.from_numpy(ref_set == c)].mean(0)
                                                       for c in range(len(sets))]), dim=1)

    def centroid_margin(d: torch.Tensor, label: int) -> torch.Tensor:
        cos = d @ cents.T
        other = cos.clone()
        other[:, label] = -2.0
        return cos[:, label] - other.max(1).values

    def knn_share(d: torch.Tensor, label: int) -> torch.Tensor:
        near = (d @ ref.T).topk(k_nn, dim=1).indices.numpy()
        return torch.from_numpy((ref_set[near] == label).mean(1))

    held_idx = sample(("val", "test"), 150)
    held = style_of(pixels[held_idx])
    held_set = np.asarray([sets.index(corpus.rows[i]["set_id"]) for i in held_idx])
    by_centroid = (held @ cents.T).argmax(1).numpy()
    near = (held @ ref.T).topk(k_nn, dim=1).indices.numpy()
    by_knn = np.asarray([np.bincount(ref_set[row], minlength=len(sets)).argmax() for row in near])
    out: dict[str, Any] = {"centroid": {}, "knn": {}, "real_accuracy": {
        "centroid": round(float((by_centroid == held_set).mean()), 4),
        "knn": round(float((by_knn == held_set).mean()), 4), "n": int(len(held_idx))}}
    from easel.config import get_settings
    from easel.evaluation.judges import ensure_judges

    style_judge = ensure_judges(corpus, get_settings().home).style
    judge_says = [style_judge.classes[i] for i in style_judge.predict(pixels[held_idx])[0].argmax(1).tolist()]
    out["real_accuracy"]["judge"] = round(float(np.mean([j == sets[h] for j, h in zip(judge_says, held_set,
                                                                                        strict=True)])), 4)
    out["real_accuracy"]["same_set_as_judge"] = round(float(np.mean([j == sets[c] for j, c in zip(
        judge_says, by_centroid, strict=True)])), 4)
    out["verdict"] = {}
    for key, set_id in asked.items():
        d = style_of(images[key])
        label = sets.index(set_id)
        out["verdict"][key] = [sets[i] for i in (d @ cents.T).argmax(1).tolist()]
        out["centroid"][key] = centroid_margin(d, label).tolist()
        out["knn"][key] = (knn_share(d, label) + 1e-3 * centroid_margin(d, label)).tolist()
    return out


if __name__ == "__main__":
    main()
