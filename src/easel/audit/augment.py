"""Augmentations: the batched training views (torch) and the named evaluation attacks (PIL).

Training views are made on whole batches with tensor operations (one affine resample for flip,
rotation, crop and border; a colour matrix for recolouring; a depthwise blur; text overlays
drawn once into a bank of masks; JPEG through PIL for a fraction), because per-image PIL work
would cost more CPU than the encoder itself. The evaluation attacks are the issue's list, each
applied on its own to a full-size picture with PIL, as a copier would.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from torch.nn import functional as F

_WORDS = ("sale", "LOL", "meme", "wow", "copy", "free", "2024", "art", "mine", "#1", "hello",
          "NEW", "hot", "@user", "ok", "yes", "fake", "cute", "love", "best")


def text_bank(size: int, count: int = 128, seed: int = 0) -> torch.Tensor:
    """``count`` text masks ``[count x 1 x size x size]`` in [0, 1] (white text = 1)."""
    rng = random.Random(seed)
    masks = []
    for _ in range(count):
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=rng.randint(size // 8, size // 3))
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 2)))
        draw.text((rng.randint(-size // 8, size // 2), rng.randint(0, size * 3 // 4)), text,
                  fill=255, font=font)
        masks.append(np.asarray(canvas, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(masks))[:, None]


def _hue_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[B x 3 x 3]`` about the grey axis (a hue shift) by ``angles`` radians."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    k = 1.0 / 3.0
    s3 = math.sqrt(k)
    a = cos + (1 - cos) * k
    b = k * (1 - cos) - s3 * sin
    c = k * (1 - cos) + s3 * sin
    rows = [torch.stack([a, b, c], -1), torch.stack([c, a, b], -1), torch.stack([b, c, a], -1)]
    return torch.stack(rows, 1)


def _jpeg(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    array = (pixels.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(out / 255.0).permute(2, 0, 1)


def train_view(x: torch.Tensor, texts: torch.Tensor, generator: torch.Generator,
               jpeg_fraction: float = 0.15) -> torch.Tensor:
    """One strongly augmented view of ``x`` (float ``[B x 3 x S x S]`` in [0, 1]).

    Flip (p 0.5); rotation ±25° (p 0.7); crop to 35–100 % area (p 0.75) or shrink into a white
    margin (p 0.2); a coloured border that shrinks the picture into it, 2–16 % of the side on
    each edge (p 0.3, as ``ATTACKS['border']`` does); a coloured frame over the edge (p 0.15);
    hue rotation (p 0.5), grey, channel gains, contrast (p 0.8); blur (p 0.2); text overlay
    (p 0.3); noise (p 0.2); JPEG q 30–90 (``jpeg_fraction``). The ranges reach past the
    evaluation's attacks (50 % crops, 20°).
    """
    b, _, s, _ = x.shape
    g = generator

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    flip = (rand(b) < 0.5).float() * -2 + 1
    angle = torch.where(rand(b) < 0.7, (rand(b) * 2 - 1) * math.radians(25), torch.zeros(b))
    area = torch.where(rand(b) < 0.75, 0.35 + 0.65 * rand(b), torch.ones(b))
    scale = area.sqrt()  # the sampled window spans this fraction of the picture
    shrink = rand(b) < 0.2
    scale = torch.where(shrink, 1.0 / (0.65 + 0.35 * rand(b)), scale)
    slack = (1 - scale).abs()
    tx, ty = (rand(b) * 2 - 1) * slack, (rand(b) * 2 - 1) * slack
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], -1),
                         torch.stack([sin * flip, cos, ty], -1)], 1)
    grid = F.affine_grid(theta, [b, 3, s, s], align_corners=False)
    out = F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1

    expand = rand(b) < 0.3
    if expand.any():
        out = out.clone()
        for i in torch.nonzero(expand).flatten().tolist():
            pad = max(1, int(round(s * (0.02 + 0.14 * float(rand(1))))))
            inner = F.interpolate(out[i:i + 1], size=(s - 2 * pad, s - 2 * pad), mode="bilinear",
                                  antialias=True, align_corners=False)
            colour = rand(3, 1, 1)
            framed = colour.expand(3, s, s).clone()
            framed[:, pad:s - pad, pad:s - pad] = inner[0]
            out[i] = framed

    border = rand(b) < 0.15
    if border.any():
        width = torch.randint(2, max(3, s // 8), (b,), generator=g)
        idx = torch.arange(s)
        edge = (idx[None, :] < width[:, None]) | (idx[None, :] >= s - width[:, None])  # [b x s]
        frame = edge[:, :, None] | edge[:, None, :]
        colour = rand(b, 3, 1, 1)
        mask = (frame & border[:, None, None])[:, None].float()
        out = out * (1 - mask) + colour * mask

    recolour = rand(b) < 0.8
    hue = torch.where(rand(b) < 0.6, (rand(b) * 2 - 1) * math.pi, torch.zeros(b))
    matrix = _hue_matrix(hue) * (0.8 + 0.4 * rand(b, 3, 1))  # channel gains
    grey = rand(b) < 0.1
    matrix = torch.where(grey[:, None, None], torch.full((b, 3, 3), 1.0 / 3.0), matrix)
    matrix = torch.where(recolour[:, None, None], matrix, torch.eye(3).expand(b, 3, 3))
    out = torch.einsum("bij,bjhw->bihw", matrix, out)
    contrast = torch.where(recolour, 0.7 + 0.6 * rand(b), torch.ones(b))[:, None, None, None]
    bright = torch.where(recolour, (rand(b) - 0.5) * 0.3, torch.zeros(b))[:, None, None, None]
    out = (out - 0.5) * contrast + 0.5 + bright

    blur = rand(b) < 0.2
    if blur.any():
        sigma = 0.5 + float(rand(1)) * 1.2
        taps = torch.arange(-2, 3, dtype=torch.float32)
        kernel = torch.exp(-taps**2 / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        k2 = (kernel[:, None] * kernel[None, :]).expand(3, 1, 5, 5)
        blurred = F.conv2d(F.pad(out[blur], (2, 2, 2, 2), mode="replicate"), k2, groups=3)
        out = out.clone()
        out[blur] = blurred

    overlay = rand(b) < 0.3
    if overlay.any():
        pick = torch.randint(0, len(texts), (int(overlay.sum()),), generator=g)
        alpha = texts[pick]
        colour = rand(len(pick), 3, 1, 1).round()
        out = out.clone()
        out[overlay] = out[overlay] * (1 - alpha) + colour * alpha

    noise = rand(b) < 0.2
    out = out + noise[:, None, None, None].float() * torch.randn(out.shape, generator=g) * 0.03
    out = out.clamp(0, 1)

    jpeg = rand(b) < jpeg_fraction
    for i in torch.nonzero(jpeg).flatten().tolist():
        out[i] = _jpeg(out[i], int(30 + 60 * float(rand(1))))
    return out



def mild_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A lightly augmented view of ``x`` that keeps its colours and drawing: flip (p 0.5) and a
    small zoom (90–100 % of the side, p 0.3). It stands for the registered original (the
    reference side of a copy search) and is the view the style objective sees."""
    b, _, s, _ = x.shape
    g = generator
    flip = (torch.rand(b, generator=g) < 0.5).float() * -2 + 1
    scale = torch.where(torch.rand(b, generator=g) < 0.3, 0.9 + 0.1 * torch.rand(b, generator=g),
                        torch.ones(b))
    slack = 1 - scale
    tx = (torch.rand(b, generator=g) * 2 - 1) * slack
    ty = (torch.rand(b, generator=g) * 2 - 1) * slack
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([scale * flip, zero, tx], -1),
                         torch.stack([zero, scale, ty], -1)], 1)
    grid = F.affine_grid(theta, [b, 3, s, s], align_corners=False)
    out = F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
    return out.clamp(0, 1)

# Evaluation attacks (PIL, on a full-size picture) ---------------------------------------
def _crop(image: Image.Image, area: float, rng: random.Random) -> Image.Image:
    w, h = image.size
    side_w, side_h = int(w * math.sqrt(area)), int(h * math.sqrt(area))
    x0, y0 = rng.randint(0, w - side_w), rng.randint(0, h - side_h)
    return image.crop((x0, y0, x0 + side_w, y0 + side_h))


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))


def _border(image: Image.Image, fraction: float, colour: tuple[int, int, int]) -> Image.Image:
    return ImageOps.expand(image, border=max(1, int(image.width * fraction)), fill=colour)


def _recolour(image: Image.Image, rng: random.Random) -> Image.Image:
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + rng.randint(40, 215)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _jpeg_pil(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _text(image: Image.Image, rng: random.Random) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = out.width
    font = ImageFont.load_default(size=max(8, size // 6))
    for _ in range(2):
        draw.text((rng.randint(0, size // 2), rng.randint(0, size * 3 // 4)),
                  rng.choice(_WORDS), fill=(rng.randint(0, 255), 0, rng.randint(0, 255)), font=font)
    return out


def _combined(image: Image.Image, rng: random.Random) -> Image.Image:
    """The registry test's copy: 20 % cropped away, rotated 10°, a 5 % grey border."""
    return _border(_rotate(_crop(image, 0.8, rng), rng.choice((-10, 10))), 0.05, (128, 128, 128))


Attack = Callable[[Image.Image, random.Random], Image.Image]

ATTACKS: dict[str, Attack] = {
    "none": lambda im, rng: im,
    "crop50": lambda im, rng: _crop(im, 0.5, rng),
    "rotate20": lambda im, rng: _rotate(im, rng.choice((-20.0, 20.0))),
    "flip": lambda im, rng: ImageOps.mirror(im),
    "border": lambda im, rng: _border(im, 0.1, (rng.randint(0, 255), rng.randint(0, 255),
                                                 rng.randint(0, 255))),
    "recolour": _recolour,
    "jpeg30": lambda im, rng: _jpeg_pil(im, 30),
    "blur": lambda im, rng: im.filter(ImageFilter.GaussianBlur(radius=im.width / 128)),
    "text": _text,
    "crop80+rot10+border": _combined,
}
"""The evaluation's attack suite, by name: each maps (RGB picture, rng) → attacked picture."""
