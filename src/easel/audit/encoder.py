"""The descriptor encoder: one compact CNN with three L2-normalised heads (copy, style, content).

``DescriptorEncoder`` is a diffusers ``ModelMixin``/``ConfigMixin``, so a folder saved with
``save_pretrained`` describes itself (``config.json`` + weights). The trunk is a stride-2 stem
and three stride-2 residual stages over an ``image_size``² RGB picture; its last feature map
is GeM-pooled for the copy and content heads (SSCD's pooling). The style head reads the pooled
features with colour and texture statistics, in the manner of Gram/AdaIN style features: the
mean and standard deviation of the second-to-last stage (``style_input="mid"``, encoder v3) or of
the stem and every stage (``"all"``), and optionally a colour histogram of the drawn (non-white)
pixels (``style_colour_levels``): the copy trunk is trained to ignore recolouring, so its
features alone lose the palette, which is much of what tells one set's drawings from another's.
Every head ends with L2 normalisation, so cosine similarity is a dot product.

- ``copy``: ``[N x copy_dim]``, instance discrimination under strong augmentation (SSCD-like);
- ``style``: ``[N x style_dim]``, supervised contrastive on the icon set (CSD-like);
- ``content``: ``[N x 384]``, aligned with frozen MiniLM caption embeddings (CLIP-like).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image
from torch import nn
from torch.nn import functional as F

from easel.images import rgb_on_white, square_on_white

COPY_KIND = "easel-copy-v3"
"""``WorkDescriptor.kind`` of copy descriptors made by the shipped encoder: one row per work
holding the descriptors of all its ``reference_views`` (v2 held the whole picture's only)."""
STYLE_KIND = "easel-style-v4"
"""``WorkDescriptor.kind`` of style descriptors made by the shipped encoder (v4: the style head
re-fitted on every stage's statistics and the colour histogram; the copy head is v3's)."""
WHITE_LEVEL = 245
"""A pixel whose every channel is at or above this (of 255) is background, not drawing."""


@dataclass
class Descriptors:
    """The three descriptors of a batch, each L2-normalised float32: copy ``[N x Dc]``,
    style ``[N x Ds]``, content ``[N x 384]``."""

    copy: torch.Tensor
    style: torch.Tensor
    content: torch.Tensor


class _Block(nn.Module):
    """Stride-2 3×3 conv, then a residual 3×3 conv; BatchNorm + ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
        self.res = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return F.relu(x + self.res(x))


def _gem(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling of ``[N x C x H x W]`` to ``[N x C]``."""
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def colour_histogram(pixels: torch.Tensor, levels: int) -> torch.Tensor:
    """Palette features of ``[N x 3 x H x W]`` pictures in [0, 1] on white: the square root of the
    share of drawn (non-white) pixels in each of ``levels``³ RGB cells, then the drawn share of
    the picture, the share of drawn pixels that are dark (grey < 60 of 255: outlines) and the
    spread of the drawn pixels' values. ``[N x (levels³ + 3)]``."""
    values = (pixels * 255.0).round().clamp(0, 255)
    cells = (values.long() * levels) // 256
    code = (cells[:, 0] * levels + cells[:, 1]) * levels + cells[:, 2]
    drawn = (values.amin(dim=1) < WHITE_LEVEL).float()  # [N x H x W]
    counts = drawn.flatten(1).sum(1).clamp(min=1.0)
    hist = torch.zeros(len(pixels), levels ** 3, dtype=pixels.dtype, device=pixels.device)
    hist.scatter_add_(1, code.flatten(1), drawn.flatten(1))
    grey = values.mean(dim=1)
    dark = ((grey < 60).float() * drawn).flatten(1).sum(1) / counts
    mean = (values * drawn[:, None]).flatten(2).sum((1, 2)) / (3 * counts)
    spread = (((values - mean[:, None, None, None]) ** 2) * drawn[:, None]).flatten(2).sum((1, 2))
    spread = (spread / (3 * counts)).sqrt() / 128.0
    share = drawn.flatten(1).mean(1)
    return torch.cat([(hist / counts[:, None]).sqrt(), share[:, None], dark[:, None], spread[:, None]], 1)


class DescriptorEncoder(ModelMixin, ConfigMixin):
    """Image ``[N x 3 x S x S]`` in [0, 1] → ``Descriptors`` (copy, style, content)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, image_size: int = 64, channels: tuple[int, ...] = (32, 64, 128, 192),
                 copy_dim: int = 128, style_dim: int = 64, content_dim: int = 384,
                 style_input: str = "mid", style_colour_levels: int = 0, style_hidden: int = 0) -> None:
        super().__init__()
        if style_input not in ("mid", "all"):
            raise ValueError(f"style_input must be 'mid' or 'all', not {style_input!r}")
        chans = list(channels)
        self.stem = nn.Sequential(nn.Conv2d(3, chans[0], 4, 2, 1, bias=False),
                                  nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True))
        self.stages = nn.ModuleList(
            _Block(c_in, c_out) for c_in, c_out in zip(chans[:-1], chans[1:], strict=True))
        final, mid = chans[-1], chans[-2]
        self.copy_head = nn.Sequential(nn.Linear(final, final), nn.ReLU(inplace=True),
                                       nn.Linear(final, copy_dim))
        stats = 2 * (mid if style_input == "mid" else sum(chans))
        colour = style_colour_levels ** 3 + 3 if style_colour_levels else 0
        hidden = style_hidden or final
        self.style_head = nn.Sequential(nn.Linear(final + stats + colour, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, style_dim))
        self.content_head = nn.Sequential(nn.Linear(final, final), nn.ReLU(inplace=True),
                                          nn.Linear(final, content_dim))

    def trunk(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixels`` → (GeM-pooled last feature map ``[N x C]``, style-head input: the pooled
        features with the mean and standard deviation of the second-to-last stage or of every
        stage, and the colour histogram when the config asks for one)."""
        x = self.stem(pixels - 0.5)
        maps = [x]
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        pooled = _gem(F.relu(x))
        chosen = maps[-2:-1] if self.config.style_input == "mid" else maps
        parts = [pooled] + [torch.cat([m.mean(dim=(2, 3)), m.std(dim=(2, 3))], dim=1) for m in chosen]
        if self.config.style_colour_levels:
            parts.append(colour_histogram(pixels, int(self.config.style_colour_levels)))
        return pooled, torch.cat(parts, dim=1)

    def forward(self, pixels: torch.Tensor) -> Descriptors:
        """``pixels`` float ``[N x 3 x S x S]`` in [0, 1] → L2-normalised descriptors."""
        pooled, style_input = self.trunk(pixels)
        return Descriptors(
            copy=F.normalize(self.copy_head(pooled), dim=-1),
            style=F.normalize(self.style_head(style_input), dim=-1),
            content=F.normalize(self.content_head(pooled), dim=-1),
        )


def to_square_rgb(image: Image.Image, size: int) -> np.ndarray:
    """The picture as the encoder sees it: composited on white, padded to a square with white,
    resized to ``size``² (Lanczos); uint8 ``[size x size x 3]``."""
    return np.asarray(square_on_white(image, size), dtype=np.uint8)


def to_tensor(arrays: np.ndarray) -> torch.Tensor:
    """uint8 ``[N x H x W x 3]`` → float ``[N x 3 x H x W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def describe(model: DescriptorEncoder, images: list[Image.Image], batch_size: int = 256) -> Descriptors:
    """Descriptors of PIL pictures (any mode/size), in eval mode, on the model's device."""
    model.eval()
    size = int(model.config.image_size)
    parts: list[Descriptors] = []
    for start in range(0, len(images), batch_size):
        arrays = np.stack([to_square_rgb(im, size) for im in images[start:start + batch_size]])
        out = model(to_tensor(arrays).to(model.device))
        parts.append(Descriptors(out.copy.float().cpu(), out.style.float().cpu(),
                                 out.content.float().cpu()))
    if not parts:
        cfg = model.config
        return Descriptors(torch.zeros(0, cfg.copy_dim), torch.zeros(0, cfg.style_dim),
                           torch.zeros(0, cfg.content_dim))
    return Descriptors(torch.cat([p.copy for p in parts]), torch.cat([p.style for p in parts]),
                       torch.cat([p.content for p in parts]))


REFERENCE_CROP_SIDE = 0.707
"""Side of the reference crops, as a fraction of the picture's side: half its area (the crop50
attack's size). Nine of them on a 3×3 grid cover every half-area window to within 7 % of a side."""
REFERENCE_CROP_GRID = 3
REFERENCE_ROTATION = 12.0
"""Degrees of the two rotated reference views (one each way)."""
REFERENCE_VIEWS = 1 + REFERENCE_CROP_GRID ** 2 + 2
"""Copy descriptors stored per registered work: the whole picture, 9 crops, 2 rotations."""


def reference_views(picture: Image.Image) -> list[Image.Image]:
    """The views of a *registered* work that the copy search holds: the whole picture, the nine
    half-area crops of a 3×3 grid and the picture rotated ±``REFERENCE_ROTATION``° (on white).

    A query is described once, as it is; its copy score with a work is the best over the
    work's views. A 50 % crop of a work then meets a view that nearly matches it, where the
    whole picture alone scored too low to be told from other drawings at a false-positive rate
    of 1e-4 (`easel audit eval`; BENCHMARKS.md, "Reference views"). Rotations do the same for
    turned copies. ``REFERENCE_VIEWS`` pictures, the whole one first.
    """
    image = rgb_on_white(picture)
    w, h = image.size
    cw, ch = max(1, round(w * REFERENCE_CROP_SIDE)), max(1, round(h * REFERENCE_CROP_SIDE))
    steps = REFERENCE_CROP_GRID - 1
    views = [image]
    for gy in range(REFERENCE_CROP_GRID):
        for gx in range(REFERENCE_CROP_GRID):
            x0, y0 = round((w - cw) * gx / steps), round((h - ch) * gy / steps)
            views.append(image.crop((x0, y0, x0 + cw, y0 + ch)))
    for degrees in (REFERENCE_ROTATION, -REFERENCE_ROTATION):
        views.append(image.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255)))
    return views


@torch.no_grad()
def describe_references(model: DescriptorEncoder, images: list[Image.Image],
                        batch_size: int = 256) -> tuple[torch.Tensor, Descriptors]:
    """Descriptors of registered works: copy descriptors of every reference view
    ``[N x REFERENCE_VIEWS x Dc]`` (view 0 is the whole picture), and the whole pictures'
    ``Descriptors`` (style and content are of the whole picture only)."""
    views = [v for image in images for v in reference_views(image)]
    described = describe(model, views, batch_size=batch_size)
    n = len(images)
    copies = described.copy.reshape(n, REFERENCE_VIEWS, -1)
    whole = torch.arange(n) * REFERENCE_VIEWS
    return copies, Descriptors(described.copy[whole], described.style[whole], described.content[whole])


def best_view_scores(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Copy scores ``[Q x N]`` of query descriptors ``[Q x D]`` with works described by
    ``describe_references`` (``[N x V x D]``): each the best over the work's views."""
    n, v, d = references.shape
    return (queries @ references.reshape(n * v, d).T).reshape(len(queries), n, v).max(axis=2)


def shipped_path() -> Path:
    """Folder of the encoder shipped in the package (``easel/models/descriptors``)."""
    return Path(__file__).resolve().parent.parent / "models" / "descriptors"


def has_shipped() -> bool:
    """Whether shipped weights are present."""
    folder = shipped_path()
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


@lru_cache(maxsize=4)
def load_encoder(path: str | None = None) -> DescriptorEncoder:
    """The encoder saved at ``path`` (default: the shipped one), in eval mode, cached per path."""
    from easel.errors import NotFound

    folder = Path(path) if path else shipped_path()
    if not (folder / "config.json").exists():
        raise NotFound(f"no descriptor encoder at {folder}",
                       hint="train one with `easel audit train` or reinstall Easel")
    model = DescriptorEncoder.from_pretrained(str(folder))
    model.eval()
    return model
