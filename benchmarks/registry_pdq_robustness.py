"""Calibrating ``PDQ_MATCH_DISTANCE`` on real emoji: which copies PDQ catches, which different
icons it confuses, and what hashing costs.

    EASEL_HOME=… nice -n 10 .venv/bin/python -m benchmarks.registry_pdq_robustness [--per-set 300]

Needs fetched sets (``easel corpus fetch``). For each sampled icon, the registered fingerprint
is made as ``import-corpus`` makes it (the SVG rendered at ``SVG_RENDER_SIDE``); a copier's
picture is the icon rendered at 256 px PNG, then attacked. A copy is caught when any of its 8
rotated/mirrored hashes lies within the threshold of the original's hash — the upload check.
False matches: for each icon, the nearest *other* sampled icon (any set) over the same 8
variants; counted when within the threshold.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from easel.config import get_settings
from easel.corpus.render import icon_svg, render_svg
from easel.corpus.sources import fetched_sets, load_set_json
from easel.registry.fingerprint import PDQ_MATCH_DISTANCE, fingerprint
from easel.registry.index import BinaryIndex
from easel.registry.validate import SVG_RENDER_SIDE


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(image: Image.Image, share: float) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * share / 2), int(h * share / 2)
    return image.crop((dx, dy, w - dx, h - dy))


def _border(image: Image.Image) -> Image.Image:
    w, h = image.size
    canvas = Image.new("RGB", (int(w * 1.2), int(h * 1.2)), (30, 30, 30))
    canvas.paste(image, (int(w * 0.1), int(h * 0.1)))
    return canvas


ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "png 256 px": lambda im: im,
    "jpeg q50": lambda im: _jpeg(im, 50),
    "half size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "horizontal flip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "flip + jpeg q50": lambda im: _jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 50),
    "rotate 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "crop 10 %": lambda im: _crop(im, 0.10),
    "border 10 %": _border,
    "rotate 10°": lambda im: im.rotate(10, resample=Image.Resampling.BICUBIC, fillcolor="white"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-set", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = get_settings()
    rng = random.Random(args.seed)
    icons: list[tuple[str, str]] = []
    for icon_set in fetched_sets(settings.sources_dir):
        data, _ = load_set_json(settings.sources_dir, icon_set)
        names = sorted(data["icons"])
        for name in rng.sample(names, min(args.per_set, len(names))):
            svg = icon_svg(data["icons"][name], data.get("width", 16), data.get("height", 16))
            icons.append((f"{icon_set.set_id}:{name}", svg))
    print(f"{len(icons)} icons from {len(fetched_sets(settings.sources_dir))} sets", flush=True)

    registered = []
    t0 = time.perf_counter()
    for _, svg in icons:
        registered.append(fingerprint(render_svg(svg, SVG_RENDER_SIDE)))
    hash_s = (time.perf_counter() - t0) / len(icons)
    usable = [fp.usable for fp in registered]
    index = BinaryIndex()
    keys = [i for i, ok in enumerate(usable) if ok]
    index.add(keys, np.frombuffer(b"".join(registered[i].pdq for i in keys), np.uint8))
    copiers = [render_svg(svg, 256) for _, svg in icons]

    results: dict[str, object] = {
        "icons": len(icons), "usable_quality": round(sum(usable) / len(icons), 3),
        "render_and_fingerprint_ms": round(hash_s * 1e3, 2), "threshold": PDQ_MATCH_DISTANCE}
    caught: dict[str, float] = {}
    for attack, make in ATTACKS.items():
        hits = total = 0
        for i in keys:
            copy = fingerprint(make(copiers[i]))
            queries = np.frombuffer(b"".join(copy.dihedral), np.uint8).reshape(8, 32)
            found = index.search(queries, PDQ_MATCH_DISTANCE)
            hits += any(h.key == i for h in found)
            total += 1
        caught[attack] = round(hits / total, 3)
        print(f"{attack:18s} caught {hits}/{total}", flush=True)
    results["caught"] = caught
    # False matches: the nearest icon of *another set* (another owner: that would refuse an
    # upload) and of the same set (a skin-tone variant, say: allowed, same owner).
    sets = [item.split(":")[0] for item, _ in icons]
    cross = same = 0
    distances = []
    for i in keys:
        queries = np.frombuffer(b"".join(registered[i].dihedral), np.uint8).reshape(8, 32)
        hits = [h for h in index.search(queries, PDQ_MATCH_DISTANCE) if h.key != i]
        cross += any(sets[h.key] != sets[i] for h in hits)
        same += any(sets[h.key] == sets[i] for h in hits)
        others = [h for h in index.nearest(queries, k=40) if sets[h.key] != sets[i]]
        if others:
            distances.append(others[0].distance)
    results["another_sets_icon_within_threshold"] = round(cross / len(keys), 4)
    results["same_sets_icon_within_threshold"] = round(same / len(keys), 4)
    results["nearest_other_set_distance_p1_p5_p50"] = [
        int(np.percentile(distances, q)) for q in (1, 5, 50)]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
