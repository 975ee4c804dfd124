"""The learned ×4 upscaler: 64 px generated images to 256 px, and its training.

``EaselUpscaler`` is a compact residual CNN (an EDSR-style body without batch norm) that works
entirely at the input resolution and up-samples once with a pixel shuffle; a bicubic skip
carries the low frequencies, so the network only predicts the missing detail. Its settings
live in ``config.json`` beside ``diffusion_pytorch_model.safetensors`` (diffusers'
``save_pretrained``/``from_pretrained``), so the folder describes itself; it is the
``upscaler`` component of the shipped pipeline directory ``easel/models/embedded/``.

Training (``train_upscaler``) reads two builds of the same corpus — 64 px inputs and 256 px
targets, each rendered from the SVG — keeps only the train split of the sets the base model
may use, and degrades the inputs (blur, noise, JPEG, a 64→32→64 round trip) because at
inference the inputs are *generated* 64 px images, which are softer than renders.
``evaluate_upscaler`` measures PSNR against the real 256 px renders of held-out icons beside
bicubic and Lanczos enlargements of the same inputs.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from PIL import Image, ImageFilter
from torch import nn

from easel.errors import BadInput, Interrupted, NotFound
from easel.images import square_on_white
from easel.runs import atomic_save, stop_on_signal

log = logging.getLogger(__name__)

#: Side of the images the upscaler reads (the base model's decoder output).
INPUT_SIZE = 64
#: Enlargement factor; outputs are ``INPUT_SIZE * SCALE`` = 256 px.
SCALE = 4
#: The set kept out of the base model (and so out of this network's training data) so that
#: style personalization can be shown learning a style the base model never saw.
BASE_EXCLUDED_SETS: tuple[str, ...] = ("streamline-emojis",)
#: Largest batch ``upscale_images`` sends through the network at once (bounds memory).
MAX_BATCH = 32


def default_upscaler_dir() -> Path:
    """The shipped weights: ``easel/models/embedded/upscaler`` inside the package."""
    from easel.diffusion.defaults import SHIPPED_MODEL_DIR

    return SHIPPED_MODEL_DIR / "upscaler"


class _ResBlock(nn.Module):
    """conv3×3 → ReLU → conv3×3, added back to the input with a fixed residual scale."""

    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x), inplace=True))


class EaselUpscaler(ModelMixin, ConfigMixin):
    """×4 super-resolution: ``[N x 3 x H x W]`` in [-1, 1] → ``[N x 3 x 4H x 4W]`` in about [-1, 1].

    Trained for H = W = 64 (the base model's output); being fully convolutional it accepts any
    size, but use ``upscale_images`` for pictures, which brings them to 64 px first.

    Args:
        in_channels: Colour channels of input and output (3, RGB).
        channels: Feature width of the body.
        num_blocks: Residual blocks in the body (two 3×3 convolutions each).
        scale: Enlargement factor, done by one pixel shuffle at the end.
        res_scale: Multiplier on each block's residual (stabilises training from scratch).
        sample_size: The input side the network was trained at (informative).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, in_channels: int = 3, channels: int = 32, num_blocks: int = 4,
                 scale: int = SCALE, res_scale: float = 0.2, sample_size: int = INPUT_SIZE) -> None:
        super().__init__()
        if channels < 1 or num_blocks < 0 or scale < 1:
            raise ValueError(f"bad upscaler config: channels={channels}, num_blocks={num_blocks}, "
                             f"scale={scale}")
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(channels, res_scale) for _ in range(num_blocks)])
        self.body_out = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, in_channels * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        # Start as plain bicubic: the residual branch begins at zero.
        nn.init.zeros_(self.tail.weight)
        if self.tail.bias is not None:
            nn.init.zeros_(self.tail.bias)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        """Upscale a batch.

        Args:
            sample: ``[N x 3 x H x W]`` float in [-1, 1].

        Returns:
            ``[N x 3 x (scale*H) x (scale*W)]`` float, about [-1, 1] (not clamped; clamp before
            turning it into pixels).
        """
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(f"sample must be [N x {self.config.in_channels} x H x W], "
                             f"got {list(sample.shape)}")
        scale = self.config.scale
        base = F.interpolate(sample, scale_factor=scale, mode="bicubic", align_corners=False)
        feat = self.head(sample)
        feat = feat + self.body_out(self.body(feat))
        return base + self.shuffle(self.tail(feat))


# ----------------------------------------------------------------------------- images ↔ tensors

def prepare_input(image: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """Bring any picture to the upscaler's input: RGB on white, square, ``size``×``size``.

    Transparency is composited on white; a non-square picture is centred on a white square
    (never stretched); a picture of another size is resized to ``size`` px with Lanczos
    (so a larger picture loses detail: the network only ever sees 64 px).
    """
    return square_on_white(image, size)


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size → ``[N x 3 x H x W]`` float32 in [-1, 1]."""
    arrays = np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8) for img in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def tensor_to_images(batch: torch.Tensor) -> list[Image.Image]:
    """``[N x 3 x H x W]`` in [-1, 1] (clamped here) → RGB PIL images."""
    pixels = ((batch.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arrays]


@torch.no_grad()
def upscale_images(model: EaselUpscaler, images: list[Image.Image]) -> list[Image.Image]:
    """Upscale pictures ×4 with ``model``: each becomes ``256×256`` RGB.

    Every input first goes through ``prepare_input``: RGB on white, padded to a square, and
    **resized to 64×64 if it is any other size** — the network was trained on 64 px inputs, so
    a larger picture is shrunk (and loses detail) before being enlarged. Runs on the model's
    device in batches of at most ``MAX_BATCH``.
    """
    if not images:
        return []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise BadInput(f"images[{i}] is a {type(image).__name__}, not a PIL image")
        if image.width < 1 or image.height < 1:
            raise BadInput(f"images[{i}] is empty ({image.width}×{image.height})")
    size = int(model.config.sample_size)
    prepared = [prepare_input(img, size) for img in images]
    was_training = model.training
    model.eval()
    outputs: list[Image.Image] = []
    try:
        for start in range(0, len(prepared), MAX_BATCH):
            batch = images_to_tensor(prepared[start:start + MAX_BATCH])
            batch = batch.to(device=model.device, dtype=model.dtype)
            outputs.extend(tensor_to_images(model(batch)))
    finally:
        model.train(was_training)
    return outputs


_CACHE: dict[tuple[str, str], EaselUpscaler] = {}


def load_upscaler(path: Path | None = None, device: str | torch.device | None = None) -> EaselUpscaler:
    """Load (once per path and device) an upscaler folder; default: the shipped one.

    Raises ``NotFound`` when the folder holds no upscaler.
    """
    folder = Path(path) if path is not None else default_upscaler_dir()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = (str(folder.resolve()), str(dev))
    if key in _CACHE:
        return _CACHE[key]
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise NotFound(f"no upscaler weights in {folder}",
                       hint="train them with `easel train upscaler` or pass --model PATH")
    try:
        model = EaselUpscaler.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BadInput(f"{folder} is not an Easel upscaler: {exc}") from exc
    model = model.to(dev).eval()
    _CACHE[key] = model
    return model


# ----------------------------------------------------------------------------- data

@dataclass
class PairSet:
    """Aligned 64 px inputs and 256 px targets of one corpus selection.

    ``low`` is ``[N x 64 x 64 x 3]`` uint8; ``high`` keeps the 256 px PNG bytes (decoded per
    batch: 3 GB as arrays, a tenth of that as PNG).
    """

    item_ids: list[str]
    low: np.ndarray
    high: list[bytes]

    def __len__(self) -> int:
        return len(self.item_ids)

    def high_image(self, index: int) -> np.ndarray:
        """The 256 px target ``index`` as ``[256 x 256 x 3]`` uint8."""
        with Image.open(io.BytesIO(self.high[index])) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_pairs(manifest_dir_64: Path, manifest_dir_256: Path, split: str,
               exclude_sets: Sequence[str] = BASE_EXCLUDED_SETS, limit: int | None = None,
               seed: int = 0) -> PairSet:
    """Pair the items present in both builds, of ``split``, outside ``exclude_sets``.

    The two manifests must come from the same icons: pairs are joined on ``item_id`` and
    their ``svg_sha256`` must agree. ``limit`` picks a seeded random subset (for quick
    evaluations); otherwise the order is by item id.
    """
    from easel.corpus.manifest import load_manifest

    low_dir, high_dir = Path(manifest_dir_64), Path(manifest_dir_256)
    rows_low = {r["item_id"]: r for r in load_manifest(low_dir).to_pylist()}
    rows_high = {r["item_id"]: r for r in load_manifest(high_dir).to_pylist()}
    for rows, directory, want in ((rows_low, low_dir, INPUT_SIZE), (rows_high, high_dir, INPUT_SIZE * SCALE)):
        sizes = {r["width"] for r in rows.values()}
        if sizes and sizes != {want}:
            raise BadInput(f"manifest {directory} holds {sorted(sizes)} px images, expected {want} px",
                           hint=f"build it with `easel corpus build --size {want}`")
    ids = sorted(i for i, r in rows_low.items()
                 if r["split"] == split and r["set_id"] not in exclude_sets and i in rows_high)
    for item_id in ids:
        if rows_low[item_id]["svg_sha256"] != rows_high[item_id]["svg_sha256"]:
            raise BadInput(f"{item_id} differs between {low_dir} and {high_dir}",
                           hint="build both sizes from the same fetched sources")
    if not ids:
        raise NotFound(f"no {split!r} items common to {low_dir} and {high_dir}")
    if limit is not None and limit < len(ids):
        ids = sorted(random.Random(seed).sample(ids, limit))
    low = np.empty((len(ids), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    high: list[bytes] = []
    for k, item_id in enumerate(ids):
        with Image.open(low_dir / rows_low[item_id]["png_path"]) as img:
            low[k] = np.asarray(img.convert("RGB"), dtype=np.uint8)
        high.append((high_dir / rows_high[item_id]["png_path"]).read_bytes())
    return PairSet(item_ids=ids, low=low, high=high)


@dataclass
class Degradation:
    """How training inputs are spoiled so the network sharpens rather than copies artefacts.

    Each effect is applied independently with its probability, in this order: a 64→32→64
    round trip, a Gaussian blur, JPEG compression, Gaussian noise.
    """

    p_roundtrip: float = 0.25
    p_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (50, 95)
    p_noise: float = 0.4
    noise_sigma: tuple[float, float] = (0.0, 0.03)  # in [0, 1] pixel units

    def apply(self, pixels: np.ndarray, rng: random.Random) -> np.ndarray:
        """``[H x W x 3]`` uint8 → degraded ``[H x W x 3]`` uint8."""
        image = Image.fromarray(pixels, mode="RGB")
        size = image.size
        if rng.random() < self.p_roundtrip:
            small = image.resize((size[0] // 2, size[1] // 2), Image.Resampling.BILINEAR)
            image = small.resize(size, rng.choice([Image.Resampling.BILINEAR, Image.Resampling.BICUBIC]))
        if rng.random() < self.p_blur:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur_sigma)))
        if rng.random() < self.p_jpeg:
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=rng.randint(*self.jpeg_quality))
            buf.seek(0)
            image = Image.open(buf).convert("RGB")
        out = np.asarray(image, dtype=np.float32)
        if rng.random() < self.p_noise:
            sigma = rng.uniform(*self.noise_sigma) * 255.0
            noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, sigma, out.shape)
            out = out + noise.astype(np.float32)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _batch(pairs: PairSet, indices: Sequence[int], patch: int, degrade: Degradation | None,
           rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[B x 3 x patch x patch]`` and targets ``[B x 3 x 4patch x 4patch]`` in [-1, 1].

    Each item is degraded at full size, then an aligned random crop is taken from input and
    target, and the pair is mirrored left–right with probability 1/2.
    """
    lows, highs = [], []
    for index in indices:
        low = pairs.low[index]
        if degrade is not None:
            low = degrade.apply(low, rng)
        high = pairs.high_image(index)
        if patch < INPUT_SIZE:
            # Of two random crops keep the busier one: icons sit on much white background.
            candidates = [(rng.randint(0, INPUT_SIZE - patch), rng.randint(0, INPUT_SIZE - patch))
                          for _ in range(2)]
            y, x = max(candidates, key=lambda c: float(pairs.low[index][c[0]:c[0] + patch,
                                                                        c[1]:c[1] + patch].std()))
            low = low[y:y + patch, x:x + patch]
            high = high[SCALE * y:SCALE * (y + patch), SCALE * x:SCALE * (x + patch)]
        if rng.random() < 0.5:
            low, high = low[:, ::-1], high[:, ::-1]
        lows.append(np.ascontiguousarray(low))
        highs.append(np.ascontiguousarray(high))

    def to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)

    return to_tensor(lows), to_tensor(highs)


def _edge_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences (rewards crisp edges)."""
    dx = (pred[..., :, 1:] - pred[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def upscaler_loss(model: EaselUpscaler, low: torch.Tensor, high: torch.Tensor,
                  edge_weight: float = 0.0) -> torch.Tensor:
    """L1 between ``model(low)`` and ``high``, plus ``edge_weight`` × the edge L1.

    ``low`` is ``[N x 3 x h x w]`` and ``high`` ``[N x 3 x 4h x 4w]``, both in [-1, 1].
    """
    if high.shape[-2:] != (low.shape[-2] * model.config.scale, low.shape[-1] * model.config.scale):
        raise ValueError(f"target {list(high.shape)} is not {model.config.scale}× input {list(low.shape)}")
    pred = model(low)
    loss = F.l1_loss(pred, high)
    if edge_weight > 0:
        loss = loss + edge_weight * _edge_l1(pred, high)
    return loss


# ----------------------------------------------------------------------------- evaluation

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of one shape (peak 255); 100 dB when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return 100.0
    return 10.0 * math.log10(255.0 ** 2 / mse)


@dataclass
class UpscalerScores:
    """Mean per-image PSNR (dB) against the real 256 px renders, per method and input kind."""

    split: str
    images: int
    clean: dict[str, float] = field(default_factory=dict)
    degraded: dict[str, float] = field(default_factory=dict)
    ms_per_image: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_upscaler(model: EaselUpscaler, pairs: PairSet, seed: int = 0,
                      degrade: Degradation | None = None) -> UpscalerScores:
    """PSNR of ours, bicubic and Lanczos on the same 64 px inputs, against the 256 px renders.

    Two input kinds: the clean 64 px renders, and the same renders degraded with a fixed seed
    (``degrade``, default ``Degradation()``), which stand in for softer generated images.
    Also times the network (milliseconds per image, batches of 16, on the model's device).
    """
    degrade = degrade or Degradation()
    rng = random.Random(seed)
    size = INPUT_SIZE * SCALE
    sums: dict[str, dict[str, float]] = {"clean": {}, "degraded": {}}
    net_seconds = 0.0
    model.eval()
    for start in range(0, len(pairs), 16):
        idx = list(range(start, min(start + 16, len(pairs))))
        targets = [pairs.high_image(i) for i in idx]
        for kind in ("clean", "degraded"):
            lows = [pairs.low[i] if kind == "clean" else degrade.apply(pairs.low[i], rng) for i in idx]
            batch = torch.from_numpy(np.stack(lows)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            t0 = time.perf_counter()
            out = model(batch.to(device=model.device, dtype=model.dtype))
            ours = [np.asarray(img) for img in tensor_to_images(out)]
            net_seconds += time.perf_counter() - t0
            for j, low in enumerate(lows):
                img = Image.fromarray(low, mode="RGB")
                results = {
                    "ours": ours[j],
                    "bicubic": np.asarray(img.resize((size, size), Image.Resampling.BICUBIC)),
                    "lanczos": np.asarray(img.resize((size, size), Image.Resampling.LANCZOS)),
                }
                for name, arr in results.items():
                    sums[kind][name] = sums[kind].get(name, 0.0) + psnr(arr, targets[j])
    n = len(pairs)
    return UpscalerScores(
        split="", images=n,
        clean={k: round(v / n, 3) for k, v in sums["clean"].items()},
        degraded={k: round(v / n, 3) for k, v in sums["degraded"].items()},
        ms_per_image=round(1000.0 * net_seconds / (2 * n), 2),
    )


# ----------------------------------------------------------------------------- training

@dataclass
class TrainConfig:
    """Every knob of an upscaler training run; saved with checkpoints and the model."""

    minutes: float = 25.0
    batch_size: int = 16
    patch: int = 32
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    edge_weight: float = 0.1
    channels: int = 32
    num_blocks: int = 4
    seed: int = 0
    eval_images: int = 0  # 0 = every val item
    threads: int = 1
    checkpoint_every_s: float = 120.0
    exclude_sets: tuple[str, ...] = BASE_EXCLUDED_SETS


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    samples: int
    train_seconds: float
    scores: UpscalerScores


def _lr_at(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warm-up over steps, then cosine decay over the time budget."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, elapsed / (cfg.minutes * 60.0))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * frac))


def _pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_upscaler(manifest_dir_64: Path, manifest_dir_256: Path, out_dir: Path,
                   minutes: float = 25.0, checkpoint_dir: Path | None = None, resume: bool = True,
                   device: str | None = None, progress: bool = True,
                   config: TrainConfig | None = None) -> TrainResult:
    """Train an ``EaselUpscaler`` for ``minutes`` of training time and save it to ``out_dir``.

    Data: the train split of the sets the base model may use (all but ``BASE_EXCLUDED_SETS``),
    64 px renders degraded by ``Degradation`` as inputs, the 256 px renders as targets, random
    aligned crops of ``patch`` px. Adam, L1 (+ ``edge_weight`` × edge L1), warm-up then cosine
    decay over the time budget. ``minutes`` counts training time across resumes: a checkpoint
    in ``checkpoint_dir`` (written every ``checkpoint_every_s`` and on Ctrl-C or SIGTERM, which then
    end the run with ``Interrupted``; a Ctrl-Z pause is not counted) is picked up when
    ``resume``. At the end, PSNR on the val split (ours, bicubic, Lanczos) goes into
    ``out_dir/training.json`` beside the weights.
    """
    from tqdm import tqdm

    from easel import __version__
    from easel.corpus.manifest import dataset_id_of, load_manifest

    cfg = config or TrainConfig()
    cfg.minutes = minutes
    if minutes <= 0:
        raise BadInput(f"minutes must be positive, got {minutes}")
    if not 4 <= cfg.patch <= INPUT_SIZE:
        raise BadInput(f"patch must be between 4 and {INPUT_SIZE} px, got {cfg.patch}")
    torch.set_num_threads(cfg.threads)
    dev = _pick_device(device)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    log.info("loading training pairs")
    train = load_pairs(manifest_dir_64, manifest_dir_256, "train", cfg.exclude_sets)
    val = load_pairs(manifest_dir_64, manifest_dir_256, "val", cfg.exclude_sets,
                     limit=cfg.eval_images or None, seed=cfg.seed)
    model = EaselUpscaler(channels=cfg.channels, num_blocks=cfg.num_blocks).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, samples, elapsed = 0, 0, 0.0
    ckpt_path = Path(checkpoint_dir) / "upscaler-ckpt.pt" if checkpoint_dir else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if state["model_config"] != dict(model.config):
            raise BadInput(f"checkpoint {ckpt_path} is for another network shape",
                           hint="pass --no-resume or another --checkpoint-dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, samples, elapsed = state["step"], state["samples"], state["elapsed"]
        rng.setstate(state["rng"])
        log.info("resumed from %s at step %d (%.1f min)", ckpt_path, step, elapsed / 60)

    def save_checkpoint() -> None:
        if ckpt_path is None:
            return
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                     "samples": samples, "elapsed": elapsed, "rng": rng.getstate(),
                     "model_config": dict(model.config), "train_config": asdict(cfg)}, ckpt_path)

    budget = cfg.minutes * 60.0
    degrade = Degradation()
    order: list[int] = []
    model.train()
    bar = tqdm(total=round(budget), initial=min(round(elapsed), round(budget)), unit="s",
               desc="train upscaler", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s [{elapsed}<{remaining}{postfix}]")
    last_ckpt = time.perf_counter()
    running = None
    with stop_on_signal() as signals:
        while elapsed < budget and not signals.stop:
            t0 = signals.clock()
            if len(order) < cfg.batch_size:
                fresh = list(range(len(train)))
                rng.shuffle(fresh)
                order.extend(fresh)
            indices, order = order[:cfg.batch_size], order[cfg.batch_size:]
            low, high = _batch(train, indices, cfg.patch, degrade, rng)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, step, elapsed)
            loss = upscaler_loss(model, low.to(dev), high.to(dev), cfg.edge_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            samples += len(indices)
            dt = signals.clock() - t0  # a Ctrl-Z pause is not training
            elapsed += dt
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(min(dt, max(0.0, budget - bar.n)))
            bar.set_postfix(step=step, loss=f"{running:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}",
                            refresh=False)
            if time.perf_counter() - last_ckpt > cfg.checkpoint_every_s:
                save_checkpoint()
                last_ckpt = time.perf_counter()
    bar.close()
    save_checkpoint()
    if signals.stop:
        saved = f"the checkpoint {ckpt_path} is saved" if ckpt_path else "no checkpoint folder was given"
        raise Interrupted(f"stopped after {elapsed / 60:.1f} of {cfg.minutes:g} minutes (step {step}); "
                          f"{saved}",
                          hint="run the same command again to go on from the checkpoint")

    scores = evaluate_upscaler(model, val, seed=cfg.seed)
    scores.split = "val"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out)
    info = {
        "easel_version": __version__,
        "train_config": asdict(cfg),
        "steps": step,
        "samples": samples,
        "train_minutes": round(elapsed / 60.0, 2),
        "device": str(dev),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_items": len(train),
        "datasets": {
            "64px": dataset_id_of(load_manifest(Path(manifest_dir_64))),
            "256px": dataset_id_of(load_manifest(Path(manifest_dir_256))),
        },
        "val_psnr": scores.as_dict(),
    }
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return TrainResult(out_dir=out, steps=step, samples=samples, train_seconds=elapsed, scores=scores)
