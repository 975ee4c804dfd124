"""The style palette measured: the style judge and the near-copy share on the same pictures
painted with palettes of several sizes, and the controls that say what the judge reads
(BENCHMARKS.md, session 30).

The pictures are drawn once with the model's pipeline with its palette off (``easel eval model``'s
prompts, seeds and draws; ``--cache`` keeps them), then painted by ``StylePalette.paint`` with
palettes of ``--colours`` sizes built from the train split of the evaluation build (the base sets'
icons, Streamline held out, as ``easel train palette`` does on the consented build). Controls,
each at the first size: every picture painted with the *next* set's palette (does the judge
follow the colours?), with one palette of the most frequent colours of all sets together (is it
set-specific colour, or any flattening?), and the prompts' own real icons painted with their own
and with the next set's palette.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=2 python -m benchmarks.style_palette \\
        --draws 4 --cache pictures.npz [--seed 1000] [--split val] [--colours 16,24,32,64]

About 6 minutes for 560 pictures on two cores; the painting and judging take seconds. Not a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.judged import add_prompt_options, eval_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_prompt_options(parser)
    parser.add_argument("--colours", default="16,24,32,64,128",
                        help="palette sizes, the first one for the controls")
    parser.add_argument("--radius", type=float, default=60.0)
    parser.add_argument("--cache", type=Path, default=None,
                        help="an .npz of the pictures: read if it exists, else written")
    args = parser.parse_args()
    sizes = [int(x) for x in args.colours.split(",")]

    from easel.config import get_settings
    from easel.diffusion.palette import build_palette
    from easel.evaluation.data import select_prompts, with_draws
    from easel.evaluation.judges import ensure_judges
    from easel.evaluation.metrics import MemorisationIndex
    from easel.evaluation.reference import PipelineGenerator
    from easel.evaluation.report import generate_images

    corpus = eval_corpus()
    rows = with_draws(select_prompts(corpus, split=args.split, n=args.n, seed=args.seed), args.draws)
    if args.cache is not None and args.cache.exists():
        pictures = np.load(args.cache)["images"]
        if len(pictures) != len(rows):
            parser.error(f"{args.cache} holds {len(pictures)} pictures, these options ask for {len(rows)}")
    else:
        pictures = generate_images(PipelineGenerator(args.model, palette_strength=0.0), rows)
        if args.cache is not None:
            np.savez(args.cache, images=pictures)
    real = corpus.images()
    judges = ensure_judges(corpus, get_settings().home)
    set_ids = corpus.set_ids
    base = corpus.base_sets
    train = corpus.index_where(splits=("train",), sets=base)
    train_tags = [corpus.rows[i]["style_tag"] for i in train]
    memo = MemorisationIndex.build([corpus.rows[i]["item_id"] for i in train], real[train])
    tag_of = {corpus.rows[i]["set_id"]: corpus.rows[i]["style_tag"] for i in train}
    seen = np.array([r.seen for r in rows])
    asked = [r.set_id for r in rows]
    nxt = [base[(base.index(s) + 1) % len(base)] for s in asked]

    def accuracy(images: np.ndarray, wanted: list[str], draws: int = args.draws,
                 copies: bool = True) -> dict[str, Any]:
        """The judge's style reading of ``images`` against ``wanted``: over all, over the seen
        concepts' pictures (the first ``len(images)`` of ``seen``), and per draw; with ``copies``
        how many are near-copies of a training icon (as ``easel eval model`` counts them)."""
        logits, _ = judges.style.predict(images)
        ok = np.array([set_ids[int(p)] == w for p, w in zip(logits.argmax(1).tolist(), wanted, strict=True)])
        out: dict[str, Any] = {"all": round(float(ok.mean()), 3)}
        mask = seen[:len(ok)]
        if mask.any():
            out["seen"] = round(float(ok[mask].mean()), 3)
        if draws > 1:
            out["by_draw"] = [round(float(d.mean()), 3) for d in ok.reshape(draws, -1)]
        if copies:
            out["near_copies"] = f"{sum(bool(x['near_copy']) for x in memo.nearest(images))}/{len(images)}"
        return out

    def show(name: str, result: dict[str, Any]) -> None:
        draws = f"  by draw {' '.join(f'{x:.3f}' for x in result['by_draw'])}" if "by_draw" in result else ""
        seen_text = f"  seen {result['seen']:.3f}" if "seen" in result else ""
        copies = f"  near-copies {result['near_copies']}" if "near_copies" in result else ""
        print(f"{name:58s} all {result['all']:.3f}{seen_text}{draws}{copies}")

    print(f"{len(rows)} pictures ({args.split}, seed {args.seed}, {args.draws} draw(s)); style judge, "
          "share read as the asked set unless said otherwise")
    show("as drawn (palette off)", accuracy(pictures, asked))
    palettes = {k: build_palette(real[train], train_tags, colours=k, radius=args.radius) for k in sizes}
    for k, palette in palettes.items():
        painted = palette.paint(pictures, [r.style_tag for r in rows])
        show(f"painted, {k} colours per style", accuracy(painted, asked))
    k = sizes[0]
    wrong = palettes[k].paint(pictures, [tag_of[s] for s in nxt])
    show(f"painted with the next set's {k} colours", accuracy(wrong, asked))
    show("  ... read as that next set", accuracy(wrong, nxt))
    common = build_palette(real[train], ["all"] * len(train), colours=k, radius=args.radius)
    flat = common.paint(pictures, ["all"] * len(rows))
    show(f"painted with the {k} commonest colours of all sets", accuracy(flat, asked))
    icons = real[[corpus.rows.index(next(c for c in corpus.rows if c["item_id"] == r.item_id))
                  for r in rows[:len(rows) // args.draws]]]
    first, first_next = asked[:len(icons)], nxt[:len(icons)]  # draw 0's prompts
    show("the prompts' real icons", accuracy(icons, first, 1, copies=False))
    own = palettes[k].paint(icons, [tag_of[s] for s in first])
    show(f"real icons painted with their own {k} colours", accuracy(own, first, 1, copies=False))
    repainted = palettes[k].paint(icons, [tag_of[s] for s in first_next])
    show(f"real icons painted with the next set's {k} colours", accuracy(repainted, first, 1, copies=False))
    show("  ... read as that next set", accuracy(repainted, first_next, 1, copies=False))


if __name__ == "__main__":
    main()
