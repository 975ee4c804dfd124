"""A tiny random-weight descriptor encoder and pictures the audit tests draw themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from easel.audit.encoder import DescriptorEncoder
from tests.pictures import artwork, encode

__all__ = ["artwork", "encode"]


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
