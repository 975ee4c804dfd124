"""One table of defaults for the embedded model: architecture and training (sampling: ``defaults``).

Training, the pipeline and the CLI all read these, so a setting lives in one place
(improved-diffusion's habit). Each trained model directory saves the values it used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

EMBED_DIM = 384  # MiniLM's width: the prompt embeddings' size (here, so that this module needs no torch)
BASE_RESOLUTION = 64  # pixels the autoencoder decodes to
LATENT_RESOLUTION = 16  # 64 px / 4
LATENT_CHANNELS = 4


def vae_config(latent_channels: int = LATENT_CHANNELS) -> dict[str, Any]:
    """A small ``AutoencoderKL``: 64×64×3 ↔ 16×16×4 (two down-samplings), 0.65 M parameters.

    Measured on one contended CPU thread: (16, 32, 64) trains at 17 img/s, (32, 64, 128)
    with mid-block attention at 3 img/s; flat emoji need little capacity.
    """
    return dict(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64), layers_per_block=1, mid_block_add_attention=False,
        latent_channels=latent_channels, norm_num_groups=8, sample_size=BASE_RESOLUTION,
    )


# Transformer blocks per attention block at each resolution level (16×16, 8×8, 4×4; the middle
# block takes the last level's, the up blocks mirror the down blocks). 16×16 has no attention.
TRANSFORMER_LAYERS = (1, 1, 1)


LEGACY_HEADS = 32
"""What ``UNet2DConditionModel`` makes of ``attention_head_dim=32``: 32 heads in every attention
block, whatever its width (diffusers reads that setting as a head count, a naming slip it keeps
for old checkpoints). So the shipped model's heads are 4 channels wide (its attention blocks
have 128 channels), not 32. ``unet_config(head_dim=…)`` asks for the width instead."""


def check_head_dim(head_dim: int, width: int) -> int:
    """``head_dim`` if it divides every level's channels (``width``, ``2·width``), else a
    ``ValueError`` saying what would."""
    if head_dim < 1 or width % head_dim:
        fits = [d for d in (8, 16, 32, 64) if width % d == 0]
        raise ValueError(f"head_dim {head_dim} does not divide the UNet's width {width}; "
                         f"it could be one of {fits}")
    return head_dim


def heads_setting(channels: list[int] | tuple[int, ...], head_dim: int | None) -> int | list[int]:
    """The ``attention_head_dim`` a ``UNet2DConditionModel`` with these ``block_out_channels``
    needs for heads ``head_dim`` channels wide (a head count per level); ``LEGACY_HEADS`` for
    ``None``."""
    if head_dim is None:
        return LEGACY_HEADS
    return [c // check_head_dim(head_dim, channels[0]) for c in channels]


def head_dim_of(config: Any) -> int | None:
    """The channels per attention head of a ``UNet2DConditionModel`` config: ``None`` for the
    legacy split (a head count of ``LEGACY_HEADS`` in every block, as the shipped model has),
    else the width of its heads at the first level."""
    config = dict(config)
    heads = config.get("attention_head_dim", 8)  # diffusers' defaults where the config says nothing
    first = int(config.get("block_out_channels", (320,))[0])
    if isinstance(heads, int):
        return None if heads == LEGACY_HEADS else first // heads
    return first // int(heads[0])


def unet_config(width: int = 64, layers_per_block: int = 1, cross_attention: bool = True,
                transformer_layers: tuple[int, ...] | list[int] = TRANSFORMER_LAYERS,
                attention_16: bool = False, self_condition: bool = False,
                style_input: bool = False, head_dim: int | None = None) -> dict[str, Any]:
    """A small ``UNet2DConditionModel`` over 16×16 latents.

    Conditioning: MiniLM token embeddings through cross-attention at 8×8 and 4×4 (and 16×16
    with ``attention_16``), and the pooled prompt embedding added to the timestep embedding
    (``class_embed_type="projection"``).
    ``cross_attention=False`` keeps only the pooled embedding (an ablation: no attention blocks).
    ``transformer_layers``: transformer blocks per attention block at 16×16, 8×8 and 4×4
    (``(1, 1, 2)`` doubles them at 4×4 and in the middle block: +1.6 M parameters at width
    64 for about a tenth more CPU per sample). ``attention_16`` adds attention blocks at 16×16
    too (down and up), where the latent's finest detail is; without it that level has none and
    its count is 1. ``self_condition`` doubles the input channels: the latent, then the model's
    own previous estimate of the clean latent (self-conditioning, Chen et al. 2022; zeros when
    there is none). ``style_input`` doubles the pooled input of the timestep embedding: the
    prompt's pooled embedding, then the pooled embedding of its style tag alone ("twemoji
    style"; zeros for a prompt without one), so that every residual block, the 16×16 ones
    included, hears the style apart from the concept
    (:func:`easel.diffusion.text_encoder.with_style_vectors`). ``head_dim``: the channels of
    each attention head (heads = channels // head_dim at each level); ``None`` keeps the legacy
    split of ``LEGACY_HEADS`` heads per block.
    """
    layers = check_transformer_layers(transformer_layers)
    channels = (width, 2 * width, 2 * width)
    heads = heads_setting(channels, head_dim)
    if cross_attention:
        first = "CrossAttn" if attention_16 else ""
        down = (f"{first}DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
        up = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", f"{first}UpBlock2D")
        mid = "UNetMidBlock2DCrossAttn"
    else:
        down, up, mid = ("DownBlock2D",) * 3, ("UpBlock2D",) * 3, "UNetMidBlock2D"
    return dict(
        sample_size=LATENT_RESOLUTION, out_channels=LATENT_CHANNELS,
        in_channels=(2 if self_condition else 1) * LATENT_CHANNELS,
        down_block_types=down, up_block_types=up, mid_block_type=mid,
        block_out_channels=channels, layers_per_block=layers_per_block,
        cross_attention_dim=EMBED_DIM, attention_head_dim=heads, norm_num_groups=32,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=(2 if style_input else 1) * EMBED_DIM,
        # A plain 1 (every level one block) keeps the config diffusers writes for such a UNet.
        transformer_layers_per_block=1 if all(n == 1 for n in layers) else list(layers),
    )


def has_self_condition(config: Any) -> bool:
    """Whether a ``UNet2DConditionModel`` config reads its own previous clean-latent estimate
    beside the latent (twice as many input channels as output channels)."""
    config = dict(config)  # diffusers' defaults where a config leaves them out: 4 in, 4 out
    return int(config.get("in_channels", 4)) == 2 * int(config.get("out_channels", 4))


def has_style_input(config: Any) -> bool:
    """Whether a ``UNet2DConditionModel`` config reads a style vector beside the pooled prompt
    embedding (``unet_config(style_input=True)``: twice the text encoder's width there)."""
    config = dict(config)
    return int(config.get("projection_class_embeddings_input_dim") or 0) == 2 * EMBED_DIM


def check_transformer_layers(layers: tuple[int, ...] | list[int], levels: int = 3) -> tuple[int, ...]:
    """``layers`` as a tuple of ``levels`` counts from 1 to 8, or a ``ValueError`` saying what
    is wrong."""
    out = tuple(int(n) for n in layers)
    if len(out) != levels or any(n < 1 or n > 8 for n in out):
        where = " (16×16, 8×8, 4×4)" if levels == 3 else ""
        raise ValueError(f"transformer_layers: expected {levels} counts from 1 to 8{where}, "
                         f"got {list(layers)}")
    return out


def has_attention_16(config: Any) -> bool:
    """Whether a ``UNet2DConditionModel`` config has attention blocks at its first (16×16) level."""
    return str(dict(config)["down_block_types"][0]).startswith("CrossAttn")


def transformer_layers_of(config: Any) -> tuple[int, ...]:
    """The per-level transformer block counts of a ``UNet2DConditionModel`` config (one count
    per down block, attention or not)."""
    config = dict(config)
    layers = config.get("transformer_layers_per_block", 1)
    if isinstance(layers, int):
        return (layers,) * len(config["down_block_types"])
    return tuple(int(n) for n in layers)


@dataclass
class TrainConfig:
    """Training settings for ``easel train base`` (saved into the model directory)."""

    unet_width: int = 64
    unet_layers_per_block: int = 1
    unet_transformer_layers: list[int] = field(default_factory=lambda: list(TRANSFORMER_LAYERS))
    unet_attention_16: bool = False  # attention blocks at 16×16 too (`unet_config`)
    # Channels per attention head (`unet_config`); None: the legacy 32 heads per block.
    unet_head_dim: int | None = None
    cross_attention: bool = True  # False: pooled prompt embedding only (ablation)
    # The UNet also reads its own estimate of the clean latent (`unet_config`); in training half
    # of each batch gets one from a first, gradient-free pass, the other half zeros.
    self_condition: bool = False
    # The timestep embedding also reads the pooled embedding of the prompt's style tag alone
    # (`unet_config`); zeros where the tag is dropped or absent.
    style_input: bool = False
    # Share of training pictures mirrored left to right (their own latents, encoded once), the
    # pictures whose caption names a side or a turning direction never (`mirrorable`).
    mirror: float = 0.0
    batch_size: int = 32
    learning_rate: float = 4e-4
    warmup_steps: int = 200
    # The step the warm-up counts from: 0 for a new run; the starting step for a run that
    # starts from a model directory's weights (`--init-from`) with a fresh optimiser, whose
    # first Adam steps at the full rate would otherwise jolt the trained weights.
    warmup_start: int = 0
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # prompt replaced by "" (classifier-free guidance)
    style_dropout: float = 0.1  # style tag dropped (prompts without a style still work)
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    # The noise levels trained on: the logit-normal draw is mapped onto [lo, hi]. (0, 1) is the
    # whole path; (0.6, 1) trains a high-noise expert (`easel train base --sigma-range`), the
    # part of the path where a picture's style and layout are decided (BENCHMARKS.md, session 16).
    sigma_range: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    checkpoint_minutes: float = 5.0
    held_out_sets: list[str] = field(default_factory=lambda: ["streamline-emojis"])
    # Learning-rate schedule: warm-up, then constant; a cool-down branch (for shipping) decays
    # it linearly to 0 over ``cooldown_steps`` steps from ``cooldown_start`` (a step count).
    cooldown_steps: int = 0
    cooldown_start: int | None = None
    # How batches share out the sets: each set is drawn in proportion to (its size)^(1 - b).
    # 0 draws items uniformly, so the big sets dominate; 1 gives every set the same share.
    set_balance: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sigma_range"] = list(self.sigma_range)
        return out

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based)."""
        lr = self.learning_rate * min(1.0, max(0, step - self.warmup_start + 1) / self.warmup_steps)
        if self.cooldown_steps and self.cooldown_start is not None:
            done = (step - self.cooldown_start) / self.cooldown_steps
            lr *= min(1.0, max(0.0, 1.0 - done))
        return lr


@dataclass
class AutoencoderTrainConfig:
    batch_size: int = 32
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    minutes: float = 6.0
    seed: int = 0
    decay: bool = False  # learning rate linearly to 0 over the time budget

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
