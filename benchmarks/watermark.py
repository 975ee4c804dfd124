"""Watermark robustness on real corpus icons: Easel's watermark and invisible-watermark's three.

Same images, same attacks, same run. For each size (256 and 512 px by default) it samples
``--per-set`` icons from every set of the built corpus (``easel corpus build --size N``),
embeds a random payload with each method, applies each attack, and counts exact payload
recoveries. Easel's payload is 48 bits (a generation id, CRC-checked); invisible-watermark's
is 32 bits (the size its RivaGAN model carries), so its task is the easier one.

It also measures false detections: Easel's decoder run on unmarked corpus icons (not the ones
marked) with ``--fp-keys`` different keys each, every run an independent chance to read a
CRC-valid payload out of nothing; and, with ``--overhead``, the provenance step's share of
generating one image with the embedded model.

    EASEL_HOME=/tmp/prov-home easel corpus fetch
    EASEL_HOME=/tmp/prov-home easel corpus build --size 256      # and --size 512
    EASEL_HOME=/tmp/prov-home nice -n 10 .venv/bin/python benchmarks/watermark.py

Needs the ``bench`` extra (``pip install -e .[bench]``: invisible-watermark, onnxruntime);
without it the invisible-watermark rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

Attack = Callable[[Image.Image, np.random.Generator], Image.Image]


def _jpeg(image: Image.Image, _: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=50)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _half(image: Image.Image, _: np.random.Generator) -> Image.Image:
    w, h = image.size
    return image.resize((w // 2, h // 2), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BICUBIC)


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep a random 90 % × 90 % window (19 % of the area gone), not resized back."""
    w, h = image.size
    cw, ch = round(w * 0.9), round(h * 0.9)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def _bc(image: Image.Image, _: np.random.Generator) -> Image.Image:
    """Brightness −15 %, then contrast +15 %."""
    return ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(0.85)).enhance(1.15)


def _brighten(image: Image.Image, _: np.random.Generator) -> Image.Image:
    """Brightness +20 % then contrast −20 %: saturates the white background (harsher)."""
    return ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(1.2)).enhance(0.8)


ATTACKS: dict[str, Attack] = {
    "none": lambda im, _: im,
    "jpeg q50": _jpeg,
    "resize 0.5x": _half,
    "crop 10%": _crop,
    "bright/contrast": _bc,
    "brighten +20% (extra)": _brighten,
}
TARGETS = {"none": 0.99, "jpeg q50": 0.95, "resize 0.5x": 0.95, "crop 10%": 0.95, "bright/contrast": 0.95}


def sample_icons(manifest: Path, per_set: int, seed: int,
                 skip: set[str] | None = None) -> list[tuple[str, str]]:
    """``per_set`` random (set id, icon name) items of every set in a corpus manifest."""
    import pyarrow.parquet as pq

    table = pq.read_table(manifest, columns=["set_id", "icon_name"]).to_pylist()
    by_set: dict[str, list[str]] = {}
    for row in table:
        if skip and f"{row['set_id']}:{row['icon_name']}" in skip:
            continue
        by_set.setdefault(row["set_id"], []).append(row["icon_name"])
    rng = random.Random(seed)
    picked: list[tuple[str, str]] = []
    for set_id in sorted(by_set):
        names = sorted(by_set[set_id])
        rng.shuffle(names)
        picked += [(set_id, name) for name in names[:per_set]]
    return picked


class IconSource:
    """Corpus icons at a size: the PNG of a build at that size if there is one, else the same
    icon rendered from the fetched sources exactly as ``easel corpus build`` renders it."""

    def __init__(self, corpus: Path, sources: Path, size: int) -> None:
        self.build = corpus / f"{size}px"
        self.sources = sources
        self.size = size
        self.has_build = (self.build / "manifest.parquet").exists()
        self._icons: dict[str, dict] = {}

    def load(self, item: tuple[str, str]) -> Image.Image:
        set_id, name = item
        if self.has_build:
            return Image.open(self.build / "images" / set_id / f"{name}.png").convert("RGB")
        from easel.corpus.render import icon_svg, render_svg
        from easel.corpus.sources import load_set_json, resolve_sets

        if set_id not in self._icons:
            self._icons[set_id] = load_set_json(self.sources, resolve_sets([set_id])[0])[0]
        icons = self._icons[set_id]
        svg = icon_svg(icons["icons"][name], icons.get("width", 16), icons.get("height", 16))
        return render_svg(svg, self.size)


class Method:
    """One watermarking method: ``embed(image, payload) -> image``, ``decode(image) -> payload``."""

    name: str
    payload_bits: int

    def new_payload(self, rng: np.random.Generator) -> str:
        raise NotImplementedError

    def embed(self, image: Image.Image, payload: str) -> Image.Image:
        raise NotImplementedError

    def decode(self, image: Image.Image) -> str | None:
        raise NotImplementedError


class Easel(Method):
    name = "easel (ours)"
    payload_bits = 48

    def __init__(self, key: str | None = None) -> None:
        from easel.provenance import watermark

        self.wm = watermark
        self.key = key or watermark.DEFAULT_KEY

    def new_payload(self, rng: np.random.Generator) -> str:
        return f"{int(rng.integers(0, 2**48)):012x}"

    def embed(self, image: Image.Image, payload: str) -> Image.Image:
        return self.wm.embed(image, payload, key=self.key)

    def decode(self, image: Image.Image) -> str | None:
        return self.wm.detect(image, key=self.key).generation_id


class Invisible(Method):
    """invisible-watermark (``imwatermark``), 32-bit payload, BGR arrays as it expects."""

    payload_bits = 32

    def __init__(self, method: str) -> None:
        from imwatermark import WatermarkDecoder, WatermarkEncoder

        self.method = method
        self.name = f"invisible-watermark {method}"
        self.encoder = WatermarkEncoder()
        self.decoder = WatermarkDecoder("bytes", 32)
        if method == "rivaGan":
            WatermarkEncoder.loadModel()
            WatermarkDecoder.loadModel()

    def new_payload(self, rng: np.random.Generator) -> str:
        return f"{int(rng.integers(0, 2**32)):08x}"

    def embed(self, image: Image.Image, payload: str) -> Image.Image:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
        self.encoder.set_watermark("bytes", bytes.fromhex(payload))
        out = self.encoder.encode(bgr, self.method)
        return Image.fromarray(np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8)[..., ::-1]))

    def decode(self, image: Image.Image) -> str | None:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
        try:
            raw = self.decoder.decode(bgr, self.method)
        except Exception:  # noqa: BLE001  (its decoders raise on odd sizes; that is a miss)
            return None
        return bytes(raw).hex() if raw is not None else None


def _bit_accuracy(a: str, b: str | None, bits: int) -> float:
    if b is None or len(b) != len(a):
        return 0.5
    return 1.0 - bin(int(a, 16) ^ int(b, 16)).count("1") / bits


def robustness(methods: list[Method], images: list[Image.Image], seed: int) -> dict[str, dict[str, object]]:
    """Per method: mean PSNR, encode/decode ms, and per attack the exact-recovery rate and bit accuracy."""
    from easel.provenance.watermark import psnr

    out: dict[str, dict[str, object]] = {}
    for method in methods:
        rng = np.random.default_rng(seed)
        exact = {a: 0 for a in ATTACKS}
        bits = {a: 0.0 for a in ATTACKS}
        psnrs, enc_ms, dec_ms, enc_cpu, dec_cpu = [], [], [], [], []
        for image in images:
            payload = method.new_payload(rng)
            start, cpu = time.perf_counter(), time.process_time()
            marked = method.embed(image, payload)
            enc_ms.append((time.perf_counter() - start) * 1000)
            enc_cpu.append((time.process_time() - cpu) * 1000)
            psnrs.append(psnr(np.asarray(marked.convert("RGB")), np.asarray(image)))
            for name, attack in ATTACKS.items():
                attacked = attack(marked, rng)
                start, cpu = time.perf_counter(), time.process_time()
                got = method.decode(attacked)
                dec_ms.append((time.perf_counter() - start) * 1000)
                dec_cpu.append((time.process_time() - cpu) * 1000)
                exact[name] += got == payload
                bits[name] += _bit_accuracy(payload, got, method.payload_bits)
        n = len(images)
        out[method.name] = {
            "payload_bits": method.payload_bits, "psnr_mean": float(np.mean(psnrs)),
            "psnr_min": float(np.min(psnrs)), "encode_ms": float(np.mean(enc_ms)),
            "decode_ms": float(np.mean(dec_ms)), "encode_cpu_ms": float(np.mean(enc_cpu)),
            "decode_cpu_ms": float(np.mean(dec_cpu)),
            "exact": {a: exact[a] / n for a in ATTACKS}, "bit_acc": {a: bits[a] / n for a in ATTACKS},
        }
    return out


def false_detections(images: list[Image.Image], keys: int) -> dict[str, float]:
    """Decode unmarked icons with ``keys`` different keys each; count CRC-valid payloads."""
    trials = hits = 0
    start = time.perf_counter()
    for image in images:
        for k in range(keys):
            trials += 1
            hits += Easel(key=f"fp-probe-{k}").decode(image) is not None
    return {"trials": trials, "false": hits, "rate": hits / max(trials, 1),
            "seconds": time.perf_counter() - start}


def overhead(runs: int, sample: Image.Image) -> dict[str, float]:
    """Median seconds to publish one image (watermark, PNG, C2PA, log) and, when the embedded
    model loads here, to generate one with it (same run): their ratio is the overhead."""
    import tempfile

    import torch

    from easel.config import Settings
    from easel.errors import EaselError
    from easel.provenance.publish import GenerationInfo, publish_image

    torch.set_num_threads(2)
    pipe = None
    try:
        from easel.diffusion.pipeline import load_pipeline

        pipe = load_pipeline()
    except (EaselError, ImportError, OSError) as exc:
        print(f"overhead: the embedded model does not load here ({exc}); timing publish alone")
    info = GenerationInfo(prompt="fox face", mode="txt2img", model_id="easel-embedded",
                          dataset_id=None, seed=0, parameters={})
    gen: list[float] = []
    pub: list[float] = []
    pub_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        publish_image(sample, info, Path(tmp) / "out", settings=settings)  # first run: keys, schema
        if pipe is not None:
            pipe(["fox face"], seeds=[0])  # warm-up
        for i in range(runs):
            image = sample
            if pipe is not None:
                start = time.perf_counter()
                image = pipe(["fox face"], seeds=[i]).images[0]
                gen.append(time.perf_counter() - start)
            start, cpu = time.perf_counter(), time.process_time()
            publish_image(image, info, Path(tmp) / "out", settings=settings)
            pub.append(time.perf_counter() - start)
            pub_cpu.append(time.process_time() - cpu)
    result = {"publish_s": float(np.median(pub)), "publish_cpu_s": float(np.median(pub_cpu)),
              "size": float(image.width)}
    if gen:
        result["generate_s"] = float(np.median(gen))
        result["ratio"] = result["publish_s"] / result["generate_s"]
    return result


def _print_table(size: int, n: int, results: dict[str, dict[str, object]]) -> None:
    print(f"\n### {size} px, {n} corpus icons (exact payload recovery)\n")
    print("times: wall ms per image (CPU ms of this process); wall time counts waiting for the cores\n")
    header = ("| method | bits | PSNR dB | " + " | ".join(ATTACKS)
              + " | encode ms (CPU) | decode ms (CPU) |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name, r in results.items():
        exact = r["exact"]
        assert isinstance(exact, dict)
        cells = " | ".join(f"{exact[a]:.3f}" for a in ATTACKS)
        print(f"| {name} | {r['payload_bits']} | {r['psnr_mean']:.1f} (min {r['psnr_min']:.1f}) | {cells} | "
              f"{r['encode_ms']:.0f} ({r['encode_cpu_ms']:.0f}) | "
              f"{r['decode_ms']:.0f} ({r['decode_cpu_ms']:.0f}) |")
    print("\nbit accuracy (mean fraction of payload bits right; a miss counts 0.5):\n")
    for name, r in results.items():
        acc = r["bit_acc"]
        assert isinstance(acc, dict)
        print(f"- {name}: " + ", ".join(f"{a} {acc[a]:.3f}" for a in ATTACKS))


def main() -> None:
    """Run the benchmark and print Markdown tables (and write JSON with ``--json``)."""
    from easel.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=None, help="corpus dir (default EASEL_HOME/corpus)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--per-set", type=int, default=30, help="icons per set (7 sets)")
    parser.add_argument("--fp-images", type=int, default=2000,
                        help="unmarked icons per size for false detections")
    parser.add_argument("--fp-keys", type=int, default=5, help="keys per unmarked icon")
    parser.add_argument("--methods", default="ours,dwtDct,dwtDctSvd,rivaGan")
    parser.add_argument("--overhead", type=int, default=0, help="runs of generate+publish to time (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    settings = get_settings()
    corpus = args.corpus or settings.corpus_dir
    manifests = sorted(corpus.glob("*px/manifest.parquet"))
    if not manifests:
        raise SystemExit(f"no corpus build under {corpus}: run `easel corpus build --size 256` first")
    manifest = manifests[0]
    items = sample_icons(manifest, args.per_set, args.seed)
    marked = {f"{a}:{b}" for a, b in items}
    fp_items: list[tuple[str, str]] = []
    if args.fp_images:
        pool = sample_icons(manifest, 10**9, args.seed + 1, skip=marked)
        fp_items = random.Random(args.seed).sample(pool, min(args.fp_images, len(pool)))
    report: dict[str, object] = {}
    for size in args.sizes:
        source = IconSource(corpus, settings.sources_dir, size)
        origin = f"from {source.build}" if source.has_build else "rendered from the fetched sources"
        print(f"\n{size} px icons: {origin}")
        images = [source.load(item) for item in items]
        methods: list[Method] = []
        for m in args.methods.split(","):
            if m == "ours":
                methods.append(Easel())
                continue
            try:
                methods.append(Invisible(m))
            except ImportError:
                print(f"invisible-watermark is not installed (pip install -e .[bench]); {m} skipped")
        results = robustness(methods, images, args.seed)
        _print_table(size, len(images), results)
        entry: dict[str, object] = {"robustness": results}
        if fp_items:
            fp = false_detections([source.load(item) for item in fp_items], args.fp_keys)
            print(f"\nfalse detections (ours, {size} px): {fp['false']} in {fp['trials']} decodes of "
                  f"{len(fp_items)} unmarked icons x {args.fp_keys} keys "
                  f"({fp['seconds']:.0f} s); design rate 2^-16 = 1.5e-5 per decode")
            entry["false_detections"] = fp
        report[str(size)] = entry
    if args.overhead:
        for size in args.sizes:
            sample = IconSource(corpus, settings.sources_dir, size).load(items[0])
            ov = overhead(args.overhead, sample)
            line = (f"\nprovenance step: publish {ov['publish_s'] * 1000:.0f} ms wall "
                    f"({ov['publish_cpu_s'] * 1000:.0f} ms CPU) per {ov['size']:.0f} px image")
            if "ratio" in ov:
                line += (f"; generate {ov['generate_s']:.3f} s; ratio {ov['ratio']:.3f} (target < 0.15)")
            print(line)
            report[f"overhead_{size}"] = ov
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
