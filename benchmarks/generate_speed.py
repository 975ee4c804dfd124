"""Seconds per image for the embedded model at default settings, the provenance step's share,
and the overhead of Easel's generate path over calling diffusers directly.

    .venv/bin/python benchmarks/generate_speed.py [--model-dir DIR] [--repeats 3]

Measured in one process, one run: (1) the embedded model, four 256 px images, default steps
and guidance, pipeline only; (2) the same four images published through the provenance door
(watermark, C2PA, log); (3) a tiny random-weight Stable Diffusion pipeline called through
diffusers directly and through Easel's external-model path, as a ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from easel.config import get_settings
    from easel.diffusion.model_card import read_model_card
    from easel.diffusion.pipeline import load_pipeline, resolve_model_dir
    from easel.provenance.publish import GenerationInfo, publish_image

    home = tempfile.mkdtemp(prefix="easel-bench-")
    os.environ["EASEL_HOME"] = home
    get_settings.cache_clear()
    path = resolve_model_dir(args.model_dir)
    pipe = load_pipeline(path, device="cpu")
    card = read_model_card(path)
    prompts = ["fox face, twemoji style", "red heart, noto style", "rocket, openmoji style",
               "grinning face, fluent style"]
    pipe(prompts[:1], seeds=[0], num_inference_steps=2)  # warm-up (loads the text encoder)
    gen, pub = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        out = pipe(prompts, seeds=[r * 4 + i for i in range(4)])
        t1 = time.perf_counter()
        for image, seed, prompt in zip(out.images, out.seeds, prompts, strict=True):
            info = GenerationInfo(prompt=prompt, mode="txt2img", model_id=card.get("model_id", "bench"),
                                  dataset_id=card.get("dataset_id"), seed=seed,
                                  parameters=dict(out.parameters))
            publish_image(image, info, Path(home) / "out")
        t2 = time.perf_counter()
        gen.append(t1 - t0)
        pub.append(t2 - t1)
    g, p = statistics.median(gen), statistics.median(pub)
    size = out.images[0].size
    print(f"embedded model: 4 images {size[0]}x{size[1]}, {out.parameters['steps']} steps, "
          f"guidance {out.parameters['guidance_scale']}, {args.threads} threads")
    print(f"  generate: {g:.2f} s for 4 images ({g / 4:.2f} s/image)")
    print(f"  provenance (watermark + C2PA + log): {p:.2f} s for 4 ({p / 4 * 1000:.0f} ms/image), "
          f"{100 * p / g:.1f} % of generation")
    print(f"  total: {g + p:.2f} s for 4 images")

    from easel.diffusion.external import load_external, run_external
    from easel.diffusion.tiny import save_tiny_sd

    sd_dir = save_tiny_sd(Path(home) / "tiny-sd")
    sd = load_external(str(sd_dir))
    direct, ours = [], []
    for r in range(args.repeats * 3):
        t0 = time.perf_counter()
        for i in range(4):
            sd(prompt="a fox", num_inference_steps=20, guidance_scale=3.0,
               generator=torch.Generator("cpu").manual_seed(r * 4 + i))
        t1 = time.perf_counter()
        run_external(sd, ["a fox"] * 4, [r * 4 + i for i in range(4)], 20, 3.0)
        t2 = time.perf_counter()
        direct.append(t1 - t0)
        ours.append(t2 - t1)
    d, o = statistics.median(direct), statistics.median(ours)
    print(f"tiny random SD, 4 images, 20 steps: diffusers directly {d:.3f} s, through Easel {o:.3f} s, "
          f"ratio {o / d:.3f}")


if __name__ == "__main__":
    main()
