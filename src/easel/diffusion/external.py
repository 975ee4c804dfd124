"""Any diffusers Stable Diffusion checkpoint (SD 1.5, 2.x, XL, SD-Turbo) through diffusers'
own auto-pipelines, offline: a local directory, or a model id already in the local cache."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from easel.errors import BadInput, NotFound

log = logging.getLogger(__name__)


@dataclass
class ExternalOutput:
    images: list[Image.Image]
    seeds: list[int]
    parameters: dict[str, Any]


def load_external(path_or_id: str, mode: str = "txt2img", device: str | None = None) -> Any:
    """Load a diffusers checkpoint for ``mode`` (txt2img | img2img | inpaint), no network."""
    from diffusers import (
        AutoPipelineForImage2Image,
        AutoPipelineForInpainting,
        AutoPipelineForText2Image,
    )

    local = Path(path_or_id)
    if local.exists() and not (local / "model_index.json").exists():
        raise BadInput(f"{path_or_id} is not a diffusers model directory (no model_index.json)",
                       hint="give a folder saved with `save_pretrained` (e.g. Stable Diffusion 1.5)")
    cls = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
           "inpaint": AutoPipelineForInpainting}[mode]
    try:
        pipe = cls.from_pretrained(path_or_id, local_files_only=True, safety_checker=None)
    except (OSError, ValueError) as exc:
        raise NotFound(f"cannot load the diffusers model {path_or_id!r} offline: {str(exc).splitlines()[0]}",
                       hint="download it beforehand into a local folder and pass that path") from exc
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_external(pipe: Any, prompts: list[str], seeds: list[int], steps: int, guidance: float,
                 image: Image.Image | None = None, strength: float = 0.6,
                 mask_image: Image.Image | None = None, height: int | None = None,
                 width: int | None = None) -> ExternalOutput:
    """Generate one image per prompt with its own seed (reproducible)."""
    images: list[Image.Image] = []
    for prompt, seed in zip(prompts, seeds, strict=True):
        kwargs: dict[str, Any] = dict(prompt=prompt, num_inference_steps=steps, guidance_scale=guidance,
                                      generator=torch.Generator("cpu").manual_seed(seed))
        if image is not None:
            kwargs.update(image=image, strength=strength)
        if mask_image is not None:
            kwargs["mask_image"] = mask_image
        if height and width and image is None:
            kwargs.update(height=height, width=width)
        images.append(pipe(**kwargs).images[0])
    return ExternalOutput(images, seeds, {"steps": steps, "guidance_scale": guidance,
                                          "scheduler": type(pipe.scheduler).__name__})
