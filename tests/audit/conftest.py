"""A tiny random-weight descriptor encoder and pictures the audit tests draw themselves."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from easel.audit.encoder import DescriptorEncoder


def artwork(seed: int, size: int = 256) -> Image.Image:
    """A busy, asymmetric drawing (PDQ quality 100) unique to ``seed``."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x, y = rng.randint(0, size - 40), rng.randint(0, size - 40)
        w, h = rng.randint(size // 12, size // 3), rng.randint(size // 12, size // 3)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x, y, x + w, y + h], fill=colour)
        else:
            draw.rectangle([x, y, x + w, y + h], fill=colour)
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight encoder a few hundred kilobytes in size, saved like the shipped one."""
    torch.manual_seed(0)
    model = DescriptorEncoder(image_size=32, channels=(8, 16, 16, 32), copy_dim=16, style_dim=8,
                              content_dim=384)
    model.eval()
    folder = tmp_path_factory.mktemp("tiny-encoder")
    model.save_pretrained(str(folder))
    return folder
