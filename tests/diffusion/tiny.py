"""Tiny random-weight Easel pipelines, built from the real diffusers classes."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from easel.diffusion.pipeline import EaselPipeline
from easel.diffusion.text_encoder import EMBED_DIM
from easel.diffusion.training import new_scheduler


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8),
                         layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=64,
                         mid_block_add_attention=False)


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=EMBED_DIM,
        attention_head_dim=8, norm_num_groups=8, class_embed_type="projection",
        projection_class_embeddings_input_dim=EMBED_DIM)


def tiny_pipeline(upscaler: object = None) -> EaselPipeline:
    return EaselPipeline(unet=tiny_unet(), vae=tiny_vae(), scheduler=new_scheduler(), upscaler=upscaler)


def save_tiny_pipeline(path: Path) -> Path:
    tiny_pipeline().save_pretrained(str(path), safe_serialization=True)
    return path
