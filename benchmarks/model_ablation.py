"""Quality per CPU-minute of the embedded model's design choices (issue 11, point 2).

Every arm trains the denoiser from scratch on the same consented manifest and autoencoder,
for the same number of samples, then is scored by ``easel eval model`` on the same prompts
and seeds. Printed: a Markdown table (choice, parameters, CPU-minutes, samples/s of CPU time,
style accuracy, concept top-5, Fréchet distance) and a JSON file with everything.

    OMP_NUM_THREADS=1 EASEL_HOME=<home with judges> python benchmarks/model_ablation.py \\
        --manifest <consented 64 px manifest> --vae <autoencoder dir> --out <scratch dir>

Short budgets favour models that learn fast early; read the table as "what to run longer",
not as the final ranking. Slow (about 10–20 minutes per arm on one core): not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ARMS: dict[str, dict[str, object]] = {
    "baseline (w64, cross-attn + pooled, lr 4e-4, batch 32)": {},
    "lr 1e-3": {"learning_rate": 1e-3},
    "width 32": {"unet_width": 32},
    "pooled embedding only (no cross-attention)": {"cross_attention": False},
    "batch 64 (half the steps)": {"batch_size": 64},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--vae", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="scratch directory (outside the repo)")
    parser.add_argument("--samples", type=int, default=19_200, help="training samples per arm")
    parser.add_argument("--arms", default="", help="comma list of arm numbers (1-based); default all")
    parser.add_argument("--eval-split", default="train,val")
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL

    from easel.diffusion.configs import TrainConfig
    from easel.diffusion.data import load_training_set
    from easel.diffusion.training import (
        encode_training_set,
        export_base_model,
        read_autoencoder_record,
        train_denoiser,
    )

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    args.out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig()
    data = load_training_set(args.manifest, ("train",), tuple(base.held_out_sets), progress=False)
    vae = AutoencoderKL.from_pretrained(str(args.vae))
    enc = encode_training_set(data, vae, args.out, progress=False)
    chosen = [int(a) for a in args.arms.split(",") if a] or list(range(1, len(ARMS) + 1))
    record = args.out / "ablation.json"
    results = json.loads(record.read_text()) if record.exists() else {}
    for number, (name, change) in enumerate(ARMS.items(), start=1):
        if number not in chosen or name in results:
            continue
        config = replace(base, **change)  # type: ignore[arg-type]
        steps = args.samples // config.batch_size
        arm_dir = args.out / f"arm{number}"
        t0 = time.monotonic()
        state = train_denoiser(enc, arm_dir.with_suffix(".pt"), config, max_steps=steps, progress=False)
        export_base_model(arm_dir, state, vae, data, config, autoencoder=read_autoencoder_record(args.vae))
        report = args.out / f"arm{number}-eval.json"
        easel = str(Path(sys.executable).parent / "easel")
        subprocess.run([easel, "eval", "model", "--model", str(arm_dir),
                        "--split", args.eval_split, "--json", str(report)],
                       check=True, stdout=subprocess.DEVNULL)
        scores = json.loads(report.read_text())["generated"]["overall"]
        results[name] = {
            "change": change, "steps": state.step, "samples": state.samples,
            "parameters": sum(p.numel() for p in state.ema.parameters()),
            "cpu_minutes": round(state.cpu_seconds / 60, 2),
            "samples_per_cpu_second": round(state.samples / max(state.cpu_seconds, 1e-6), 1),
            "wall_minutes": round((time.monotonic() - t0) / 60, 1),
            "final_loss": state.losses[-1] if state.losses else None,
            "style_accuracy": scores.get("style_accuracy"), "concept_top5": scores.get("concept_top5"),
            "frechet": scores.get("frechet"),
        }
        record.write_text(json.dumps(results, indent=2) + "\n")
        print(f"arm {number} done: {results[name]}", flush=True)
    print("| choice | parameters | samples | CPU-min | samples/CPU-s | loss | style acc. | top-5 | Fréchet |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['parameters'] / 1e6:.1f} M | {r['samples']:,} | {r['cpu_minutes']} "
              f"| {r['samples_per_cpu_second']} | {r['final_loss']} | {r['style_accuracy']} "
              f"| {r['concept_top5']} | {r['frechet']} |")


if __name__ == "__main__":
    main()
