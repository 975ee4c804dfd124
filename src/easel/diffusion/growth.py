"""Growing a trained denoiser deeper without changing what it computes (Net2Net's "deeper").

A CPU-trained model cannot be retrained from scratch at every size: a run that does not beat
the shipped weights within one session is lost with its machine. So capacity is added to the
shipped weights instead: new transformer blocks are inserted after the existing ones with
their three residual branches (self-attention, cross-attention, feed-forward) ending in
zero-initialised projections, so each new block is the identity and the grown UNet's output
equals the original's exactly. Training then moves the new blocks away from zero.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock

from easel.diffusion.configs import (
    check_transformer_layers,
    has_attention_16,
    has_self_condition,
    has_style_input,
    transformer_layers_of,
)


def _zero_branch_outputs(block: BasicTransformerBlock) -> None:
    """Make a transformer block the identity: zero the last linear layer of each residual branch."""
    ff_out = [m for m in block.ff.net if isinstance(m, torch.nn.Linear)][-1]
    outs: list[Any] = [block.attn1.to_out[0], ff_out]
    if block.attn2 is not None:
        outs.append(block.attn2.to_out[0])
    with torch.no_grad():
        for linear in outs:
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()


def deepen_unet(unet: UNet2DConditionModel, layers: tuple[int, ...] | list[int]) -> UNet2DConditionModel:
    """A copy of ``unet`` with ``layers`` transformer blocks per attention block at each of its
    resolution levels (the embedded model's: 16×16, 8×8, 4×4), computing exactly what ``unet``
    computes.

    The existing blocks keep their weights and order; each added block follows them as an
    identity (zero-initialised branch outputs). Raises ``ValueError`` if ``layers`` would
    remove blocks.
    """
    current = transformer_layers_of(unet.config)
    target = check_transformer_layers(layers, levels=len(current))
    if any(n < c for n, c in zip(target, current, strict=True)):
        raise ValueError(f"transformer_layers: {list(target)} has fewer blocks than the model's "
                         f"{list(current)}; a model can only be grown")
    config = dict(unet.config)
    config["transformer_layers_per_block"] = 1 if all(n == 1 for n in target) else list(target)
    grown: UNet2DConditionModel = UNet2DConditionModel.from_config(config)
    missing, unexpected = grown.load_state_dict(unet.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"cannot grow this UNet: {len(unexpected)} of its weights have no place "
                         f"in the grown one (e.g. {unexpected[0]})")
    new_blocks = {name for name, module in grown.named_modules()
                  if isinstance(module, BasicTransformerBlock)
                  and any(key.startswith(name + ".") for key in missing)}
    stray = [k for k in missing if not any(k.startswith(b + ".") for b in new_blocks)]
    if stray:
        raise ValueError(f"cannot grow this UNet: {stray[0]} is new but not in a new transformer block")
    modules = dict(grown.named_modules())
    for name in new_blocks:
        block = modules[name]
        assert isinstance(block, BasicTransformerBlock)
        _zero_branch_outputs(block)
    return grown.to(unet.device)


def attend_at_16(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of ``unet`` (the embedded layout: no attention at 16×16) with attention blocks at
    its 16×16 level, down and up, computing exactly what ``unet`` computes.

    The resnets and samplers keep their weights (the cross-attention blocks name them as the
    plain ones do); each new attention block's output projection starts at zero, so it adds
    nothing until training moves it. Raises ``ValueError`` for a UNet that has attention there
    already or whose weights do not fit.
    """
    if has_attention_16(unet.config):
        raise ValueError("this UNet has attention at 16×16 already")
    config = dict(unet.config)
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    config["down_block_types"] = ["CrossAttn" + down[0], *down[1:]]
    config["up_block_types"] = [*up[:-1], "CrossAttn" + up[-1]]
    grown: UNet2DConditionModel = UNet2DConditionModel.from_config(config)
    missing, unexpected = grown.load_state_dict(unet.state_dict(), strict=False)
    new = ("down_blocks.0.attentions.", f"up_blocks.{len(up) - 1}.attentions.")
    stray = [k for k in [*missing, *unexpected] if not k.startswith(new)]
    if stray:
        raise ValueError(f"cannot add attention at 16×16 to this UNet: {stray[0]} does not fit")
    with torch.no_grad():
        for name, module in grown.named_modules():
            if name.startswith(new) and name.endswith(".proj_out"):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
    return grown.to(unet.device)


def _with_zero_inputs(unet: UNet2DConditionModel, width_key: str, weight_key: str) -> UNet2DConditionModel:
    """A copy of ``unet`` with the input width ``config[width_key]`` doubled, the layer
    ``weight_key`` reading the new inputs with zero weights: it computes exactly what ``unet``
    computes."""
    config = dict(unet.config)
    config[width_key] = 2 * int(config[width_key])
    grown: UNet2DConditionModel = UNet2DConditionModel.from_config(config)
    state = dict(unet.state_dict())
    old = state[weight_key]
    state[weight_key] = torch.cat([old, torch.zeros_like(old)], dim=1)
    grown.load_state_dict(state)
    return grown.to(unet.device)


def add_self_condition(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of ``unet`` that also reads a clean-latent estimate beside the latent
    (self-conditioning), computing exactly what ``unet`` computes: the input convolution's
    weights for the new channels start at zero. Raises ``ValueError`` for a UNet that reads one
    already."""
    if has_self_condition(unet.config):
        raise ValueError("this UNet is self-conditioned already")
    return _with_zero_inputs(unet, "in_channels", "conv_in.weight")


def add_style_input(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of ``unet`` whose timestep embedding also reads a style vector beside the pooled
    prompt embedding (``unet_config(style_input=True)``), computing exactly what ``unet``
    computes: the class-embedding projection's weights for the new inputs start at zero.
    Raises ``ValueError`` for a UNet that reads one already or has no pooled-prompt input."""
    if has_style_input(unet.config):
        raise ValueError("this UNet reads a style vector already")
    if dict(unet.config).get("class_embed_type") != "projection":
        raise ValueError("this UNet has no pooled-prompt input to put a style vector beside")
    return _with_zero_inputs(unet, "projection_class_embeddings_input_dim", "class_embedding.linear_1.weight")
