"""Tiny random-weight pipelines built from the real diffusers classes, for tests and benchmarks.

They are kilobytes in size and generate noise; they prove plumbing, not quality.
"""

from __future__ import annotations

import json
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


def save_tiny_sd(path: Path) -> Path:
    """A tiny random-weight Stable Diffusion 1.x pipeline with a character-level CLIP tokenizer."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = path.parent / "tok"
    tok_dir.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]  # printable ASCII maps to itself in byte-level BPE
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                                num_attention_heads=4, num_hidden_layers=2,
                                                max_position_embeddings=77, projection_dim=32))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=32, layers_per_block=1, norm_num_groups=8,
                                attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(path))
    return path
