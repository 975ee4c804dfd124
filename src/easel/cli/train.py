"""``easel train autoencoder|base`` (and ``upscaler`` when that module is present)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from easel.config import get_settings

train_app = typer.Typer(help="Train Easel's models on a consented corpus manifest.",
                        no_args_is_help=True)


def _manifest(path: Path | None) -> Path:
    if path is not None:
        return path
    from easel.corpus.manifest import manifest_dir

    return manifest_dir(get_settings().corpus_dir, 64)


def _threads(threads: int) -> None:
    import os

    import torch

    # One thread per process is far faster than two when the cores are shared: measured
    # 1.25 s against 7.5 s per autoencoder step with other work on the machine.
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1)))


def consent_check(manifest: Path, purpose: str = "train_base") -> dict[str, str]:
    """Every manifest row must be allowed for ``purpose`` now; refuse naming those that are not."""
    from easel.corpus.consented import require_consent
    from easel.registry.store import upgrade

    url = get_settings().db_url
    upgrade(url)
    return require_consent(manifest, purpose, url)


def _record_lineage(model_dir: Path, dataset_id: str | None = None) -> str:
    """Record the model written at ``model_dir`` (its card's id) as trained on ``dataset_id``
    (default: the card's own), so that `easel registry affected` names it when consent is
    withdrawn; returns the model id. The lineage table holds one dataset per model."""
    from easel.db import session_scope
    from easel.diffusion.model_card import read_model_card
    from easel.registry.lineage import record_model

    card = read_model_card(model_dir)
    with session_scope(get_settings().db_url) as session:
        record_model(session, card["model_id"], dataset_id or card["dataset_id"], kind="base",
                     path=str(model_dir))
    return str(card["model_id"])


def _part_inputs(init_from: Path, manifest: Path | None) -> tuple[Path, dict[str, str]]:
    """For a command that adds a part to ``init_from``'s model: refuse a folder that is not an
    Easel model, then the manifest and its consent check (``consent_check``)."""
    from easel.errors import BadInput

    if not (init_from / "model_index.json").exists():
        raise BadInput(f"{init_from} is not an Easel model directory (no model_index.json)",
                       hint="give a directory written by `easel train base`, e.g. src/easel/models/embedded")
    path = _manifest(manifest)
    return path, consent_check(path)


@train_app.command("autoencoder")
def autoencoder(
    manifest: Path = typer.Option(None, help="Corpus manifest (64 px build); default: EASEL_HOME's."),
    out: Path = typer.Option(..., help="Directory to write the trained AutoencoderKL to."),
    checkpoint: Path = typer.Option(None, help="Checkpoint file to resume from and save to "
                                    "(default: <out>.ckpt.pt)."),
    minutes: float = typer.Option(10.0, help="Training time budget in minutes."),
    init_from: Path = typer.Option(None, "--init-from", help="Start from this trained autoencoder "
                                   "(an autoencoder directory, or a model directory's vae/)."),
    decoder_only: bool = typer.Option(False, "--decoder-only", help="With --init-from: train the "
                                      "decoder only. The encoder, the latent space and its scaling "
                                      "stay as they are, so a denoiser trained on them still works "
                                      "with the new decoder."),
    decay: bool = typer.Option(False, "--decay", help="Decay the learning rate linearly to 0 over "
                               "--minutes (resume with the same --minutes)."),
    install_into: Path = typer.Option(None, "--install-into", help="With --decoder-only: put the "
                                      "new autoencoder into this model directory in place of its own "
                                      "(the model id gains -d<steps>; the card is updated)."),
    threads: int = typer.Option(0, help="CPU threads (0: all cores)."),
    device: str = typer.Option(None, help="cuda or cpu (default: cuda when available)."),
) -> None:
    """Train the small autoencoder (64 px ↔ 16×16×4 latents) the denoiser works in.

    With --init-from MODEL --decoder-only it sharpens a trained model's decoder instead, keeping
    the latent space its denoiser was trained in (--install-into MODEL puts it in place).
    """
    from easel.errors import BadInput

    if minutes <= 0:
        raise BadInput(f"--minutes must be more than 0, got {minutes}")
    if decoder_only and init_from is None:
        raise BadInput("--decoder-only fine-tunes a trained autoencoder's decoder",
                       hint="give --init-from DIR (an autoencoder or a model directory)")
    if install_into is not None and not decoder_only:
        raise BadInput("--install-into takes a decoder only: a new encoder would change the latent "
                       "space the model's denoiser was trained in", hint="add --decoder-only")
    if install_into is not None and not (install_into / "model_card.json").exists():
        raise BadInput(f"{install_into} is not a model directory with a card (no model_card.json)",
                       hint="give a directory written by `easel train base`")
    init, init_dir = None, None
    if init_from is not None:
        init_dir = init_from / "vae" if (init_from / "vae" / "config.json").exists() else init_from
        if not (init_dir / "config.json").exists():
            raise BadInput(f"{init_from} is not an autoencoder directory (no config.json, no vae/)",
                           hint="give a directory written by `easel train autoencoder`, or a model directory")
        from diffusers import AutoencoderKL

        try:
            init = AutoencoderKL.from_pretrained(str(init_dir))
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"cannot load the autoencoder in {init_dir}: {exc}") from exc
        if install_into is not None:  # refuse now, not after the training
            from easel.diffusion.training import check_same_latent_space

            check_same_latent_space(AutoencoderKL.from_pretrained(str(install_into / "vae")), init,
                                    str(init_dir), str(install_into))
    path = _manifest(manifest)
    consent_check(path)  # before torch loads, unless the options needed it
    from easel.corpus.sources import HELD_OUT_SET
    from easel.diffusion.configs import AutoencoderTrainConfig
    from easel.diffusion.data import load_training_set
    from easel.diffusion.training import (
        autoencoder_psnr,
        pick_device,
        read_autoencoder_record,
        train_autoencoder,
        write_autoencoder_record,
    )

    _threads(threads)
    data = load_training_set(path, ("train",), (HELD_OUT_SET,))
    val = load_training_set(path, ("val",), (HELD_OUT_SET,), progress=False)
    ckpt = checkpoint or out.with_name(out.name + ".ckpt.pt")
    config = AutoencoderTrainConfig(minutes=minutes, decay=decay)
    fine_tuned = None
    if init is not None and init_dir is not None:
        before = autoencoder_psnr(init, val.images, pick_device(device))
        fine_tuned = {"from": str(init_dir), "decoder_only": decoder_only,
                      "val_psnr_before": round(before, 3), "previous": read_autoencoder_record(init_dir)}
        typer.echo(f"starting from {init_dir}: validation PSNR {before:.2f} dB")
    result = train_autoencoder(data, val.images, ckpt, config, device=device, init=init,
                               decoder_only=decoder_only)
    result.vae.save_pretrained(str(out))
    write_autoencoder_record(out, data, result.steps, result.seconds, result.val_psnr, config,
                             fine_tuned=fine_tuned)
    typer.echo(f"{'decoder' if decoder_only else 'autoencoder'}: {result.steps} steps in "
               f"{result.seconds / 60:.1f} min, validation PSNR {result.val_psnr:.2f} dB → {out}")
    if install_into is not None:
        from easel.diffusion.training import install_decoder

        install_decoder(install_into, out)
        # the denoiser's dataset (the card names both)
        model_id = _record_lineage(install_into)
        typer.echo(f"installed into {install_into} as {model_id}")


def _unet_layout(text: str | None, init_from: Path | None,
                 attention_16: bool = False) -> tuple[tuple[int, ...], bool]:
    """``--transformer-layers`` as three counts (by default the --init-from model's, or 1,1,1) and
    whether the UNet attends at 16x16 (``--attention-16x16``, or the --init-from model does)."""
    from easel.diffusion.configs import (
        TRANSFORMER_LAYERS,
        check_transformer_layers,
        has_attention_16,
        transformer_layers_of,
    )
    from easel.errors import BadInput

    current: tuple[int, ...] = TRANSFORMER_LAYERS
    if init_from is not None:
        config_path = init_from / "unet" / "config.json"
        if not config_path.is_file():
            raise BadInput(f"--init-from {init_from} has no unet/config.json: it is not a model directory",
                           hint="give a directory written by `easel train base` (or the shipped model)")
        config = json.loads(config_path.read_text())
        current = transformer_layers_of(config)
        attention_16 = attention_16 or has_attention_16(config)
    if text is None:
        return current, attention_16
    hint = "blocks per attention block at 16x16 (none there: 1), 8x8 and 4x4, each 1 to 8, e.g. 1,1,2"
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        raise BadInput(f"--transformer-layers: expected three whole numbers, got {text!r}",
                       hint=hint) from None
    try:
        layers = check_transformer_layers(counts)
    except ValueError as exc:
        raise BadInput(f"--{exc}".replace("_", "-", 1), hint=hint) from None
    if layers[0] != 1 and not attention_16:  # unet_config: no attention at 16x16 to deepen
        raise BadInput(f"--transformer-layers {text}: the 16x16 level has no attention block, so its "
                       "count must be 1 (a larger one would add nothing)",
                       hint=f"add --attention-16x16, or deepen 8x8 or 4x4: 1,{layers[1] + 1},{layers[2]}")
    if init_from is not None and any(n < c for n, c in zip(layers, current, strict=True)):
        raise BadInput(f"--transformer-layers {text}: the --init-from model has {list(current)}, and a "
                       "model can be grown, not shrunk", hint=f"give at least {','.join(map(str, current))}")
    return layers, attention_16


def _head_dim(asked: int | None, init_from: Path | None, width: int) -> int | None:
    """``--head-dim``: as asked (0: the legacy split, ``None``), else the --init-from model's;
    refused unless it divides the width."""
    from easel.diffusion.configs import check_head_dim, head_dim_of
    from easel.errors import BadInput

    if asked is None:
        config_path = None if init_from is None else init_from / "unet" / "config.json"
        return head_dim_of(json.loads(config_path.read_text())) if config_path else None
    if asked == 0:
        return None
    try:
        return check_head_dim(asked, width)
    except ValueError as exc:
        raise BadInput(f"--head-dim {asked}: {exc}".replace("head_dim ", "", 1),
                       hint="0 keeps the legacy split of 32 heads per block") from None


def _sigma_range(text: str | None) -> tuple[float, float]:
    """``--sigma-range LO,HI`` as floats with 0 ≤ LO < HI ≤ 1; the whole path when not given."""
    from easel.diffusion.defaults import check_guidance_interval
    from easel.errors import BadInput

    if text is None:
        return (0.0, 1.0)
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise BadInput(f"--sigma-range: expected two numbers LO,HI, got {text!r}",
                       hint="noise levels from 0 (the picture) to 1 (pure noise), "
                            "e.g. --sigma-range 0.6,1") from None
    return check_guidance_interval((lo, hi), "--sigma-range")  # the same noise-level bounds


def _kept_input(asked: bool | None, init_from: Path | None, has_it: Callable[[Any], bool],
                option: str, refusal: str) -> bool:
    """A ``--X/--no-X`` option for an input the UNet can be grown with but not stripped of: as
    asked, else as the --init-from model has it (``has_it`` of its UNet config); ``--no-X`` on a
    model that has it is refused with ``refusal``."""
    from easel.errors import BadInput

    has = False
    if init_from is not None and (init_from / "unet" / "config.json").exists():
        has = has_it(json.loads((init_from / "unet" / "config.json").read_text()))
    if asked is False and has:
        raise BadInput(f"--no-{option}: the --init-from model {init_from} {refusal}",
                       hint="leave the option out to keep it")
    return has if asked is None else asked


def _style_input(asked: bool | None, init_from: Path | None) -> bool:
    """``--style-input``: as asked, else as the --init-from model has it; a model that reads a
    style vector cannot be turned back into one without."""
    from easel.diffusion.configs import has_style_input

    return _kept_input(asked, init_from, has_style_input, "style-input",
                       "reads a style vector, and that input cannot be taken away")


def _self_condition(asked: bool | None, init_from: Path | None) -> bool:
    """``--self-condition``: as asked, else as the --init-from model has it; a self-conditioned
    model cannot be turned back into one without."""
    from easel.diffusion.configs import has_self_condition

    return _kept_input(asked, init_from, has_self_condition, "self-condition",
                       "is self-conditioned, and its input for the estimate cannot be taken away")


@train_app.command("base")
def base(
    manifest: Path = typer.Option(None, help="Corpus manifest (64 px build); default: EASEL_HOME's."),
    vae: Path = typer.Option(None, help="Trained autoencoder directory (`easel train autoencoder`); "
                             "default: the --init-from model's."),
    init_from: Path = typer.Option(None, "--init-from", help="Start from this model directory's "
                                   "weights (e.g. the shipped model) when there is no checkpoint."),
    out: Path = typer.Option(..., help="Model directory to write (a complete Easel pipeline)."),
    checkpoint: Path = typer.Option(None, help="Checkpoint to resume from and save to, kept outside "
                                    "the model directory (default: <out>.ckpt.pt)."),
    minutes: float = typer.Option(None, help="Stop after this many minutes of training."),
    steps: int = typer.Option(None, help="Stop at this total step count."),
    upscaler: Path = typer.Option(None, help="EaselUpscaler directory to include "
                                  "(default: the shipped model's)."),
    batch_size: int = typer.Option(32, help="Samples per step."),
    width: int = typer.Option(64, help="UNet base width (channels: w, 2w, 2w); a multiple "
                               "of 32."),
    transformer_layers: str = typer.Option(None, "--transformer-layers", help="Transformer blocks "
                                           "per attention block at 16x16, 8x8 and 4x4, e.g. 1,1,2; "
                                           "without --attention-16x16 the 16x16 level has no "
                                           "attention, so its count is 1 "
                                           "(default: the --init-from model's, else 1,1,1). More "
                                           "than the --init-from model has grows it: the new blocks "
                                           "start as the identity, so training starts from the "
                                           "same model, with more capacity."),
    attention_16: bool = typer.Option(False, "--attention-16x16", help="Attention blocks at the "
                                      "16x16 level too (down and up), where the latent's finest "
                                      "detail is. With --init-from a model without them they are "
                                      "added as the identity, so training starts from the same "
                                      "model. Default: as the --init-from model has it (the shipped "
                                      "model has none there)."),
    head_dim: int = typer.Option(None, "--head-dim", help="Channels per attention head, e.g. 32 "
                                 "(4 heads at 128 channels). 0: the legacy split, 32 heads in "
                                 "every attention block whatever its width, which makes the "
                                 "shipped model's heads 4 channels wide (diffusers reads "
                                 "its head setting as a count). With --init-from a model split "
                                 "otherwise, its weights are split anew: training starts from "
                                 "them but not from what they computed. Default: as the "
                                 "--init-from model has it, else 0."),
    self_condition: bool = typer.Option(None, "--self-condition/--no-self-condition", help="The "
                                        "UNet also reads its own previous estimate of the clean "
                                        "latent (self-conditioning); with --init-from a model "
                                        "without it, the new input starts at zero weight, so "
                                        "training starts from the same model. Default: as the "
                                        "--init-from model has it (the shipped model does not)."),
    style_input: bool = typer.Option(None, "--style-input/--no-style-input", help="Every "
                                     "residual block also hears the prompt's style tag on its own "
                                     "(the pooled embedding of \"twemoji style\" beside the "
                                     "prompt's, in the timestep embedding); with --init-from a "
                                     "model without it, the new input starts at zero weight, so "
                                     "training starts from the same model. Default: as the "
                                     "--init-from model has it (the shipped model does not)."),
    mirror: float = typer.Option(0.0, "--mirror", help="Share of training "
                                 "pictures mirrored left to right (never those whose caption "
                                 "names a side, such as \"left arrow\"). 0: none."),
    threads: int = typer.Option(0, help="CPU threads (0: all cores)."),
    device: str = typer.Option(None, help="cuda or cpu (default: cuda when available)."),
    cooldown_steps: int = typer.Option(0, "--cooldown-steps", help="Branch off a cool-down for "
                                       "shipping: decay the learning rate linearly to 0 over this "
                                       "many steps on a copy, <checkpoint>.cooldown.pt (resumed if "
                                       "there), leaving the main checkpoint to train on."),
    set_balance: float = typer.Option(0.0, "--set-balance", help="How batches share out the sets: "
                                      "each set is drawn in proportion to (its size)^(1 - B). 0 "
                                      "draws items uniformly, so the big sets dominate; 1 gives "
                                      "every set the same share; 0.5 is between."),
    style_dropout: float = typer.Option(0.1, "--style-dropout", help="Share of training prompts "
                                        "whose style tag is dropped (caption only), so that "
                                        "prompts without a style still work."),
    learning_rate: float = typer.Option(4e-4, "--learning-rate", help="Peak learning rate (after "
                                        "the warm-up). A lower one fine-tunes a trained model "
                                        "gently, e.g. a cool-down from --init-from."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="Decay of the weight average that is "
                                    "exported (each step keeps this share of it). It averages "
                                    "about 1/(1 - D) steps: scale it with --batch-size to average "
                                    "over the same pictures (0.996 at batch 128 is 0.999 at 32)."),
    sigma_range: str = typer.Option(None, "--sigma-range", metavar="LO,HI", help="Train on the "
                                    "noise levels in [LO, HI] only (1 = pure noise, 0 = the "
                                    "picture). LO,1 with --init-from MODEL trains a high-noise "
                                    "expert from MODEL's denoiser; --out is then MODEL with the "
                                    "expert beside its own denoiser, taking the steps above LO. "
                                    "Default: the whole path, 0,1."),
) -> None:
    """Train the text-to-image denoiser on a consented manifest and write a model directory.

    Refuses to start if any manifest item is not allowed for train_base at this moment.
    Holds the Streamline set out (for style personalisation). Resumes from the checkpoint.
    The learning rate warms up, then stays constant, so a run can go on across sessions;
    --cooldown-steps branches off a decayed copy to ship.
    """
    from easel.diffusion.configs import TrainConfig  # no torch: bad options are refused at once
    from easel.errors import BadInput

    if minutes is None and steps is None and not cooldown_steps:
        raise BadInput("give --minutes or --steps so training knows when to stop")
    if cooldown_steps < 0:
        raise BadInput(f"--cooldown-steps must be 0 or more, got {cooldown_steps}")
    if not 0.0 <= set_balance <= 1.0:
        raise BadInput(f"--set-balance must be between 0 and 1, got {set_balance}")
    if not 0.0 <= mirror <= 1.0:  # also refuses nan
        raise BadInput(f"--mirror must be between 0 and 1, got {mirror}",
                       hint="0.5 mirrors half of the pictures a batch draws")
    not_dropped = 1.0 - TrainConfig.cond_dropout  # the share of prompts guidance leaves whole
    if not 0.0 <= style_dropout <= not_dropped:
        raise BadInput(f"--style-dropout must be between 0 and {not_dropped:g}, got {style_dropout}",
                       hint=f"another {TrainConfig.cond_dropout:g} of prompts is already dropped "
                            "whole, for guidance")
    if not 0.0 < learning_rate <= 0.1:  # also refuses nan
        raise BadInput(f"--learning-rate must be above 0 and at most 0.1, got {learning_rate}",
                       hint="the default is 4e-4; 1e-4 fine-tunes a trained model gently")
    if not 0.0 <= ema_decay < 1.0:  # also refuses nan
        raise BadInput(f"--ema-decay must be at least 0 and below 1, got {ema_decay}",
                       hint="0.999 averages about the last 1,000 steps; 0 exports the raw weights")
    if width < 32 or width % 32:  # the UNet's group norms have 32 groups
        raise BadInput(f"--width must be a multiple of 32, got {width}",
                       hint="the default is 64; 96 or 128 make a bigger model")
    if vae is None and init_from is None:
        raise BadInput("give --vae (a trained autoencoder) or --init-from (a model directory)")
    layers, attention_16 = _unet_layout(transformer_layers, init_from, attention_16)
    heads = _head_dim(head_dim, init_from, width)
    self_condition = _self_condition(self_condition, init_from)
    style_input = _style_input(style_input, init_from)
    sigmas = _sigma_range(sigma_range)
    expert = sigmas != (0.0, 1.0)
    if expert and (sigmas[1] != 1.0 or init_from is None):
        raise BadInput(f"--sigma-range {sigma_range} trains part of the path: only a high-noise "
                       "expert (LO,1) beside an existing model can be exported",
                       hint="e.g. --init-from src/easel/models/embedded --sigma-range 0.6,1")
    if expert and init_from is not None and out.resolve() == init_from.resolve():
        raise BadInput("--out must differ from --init-from: the expert is written beside a copy "
                       "of that model, which stays as it is")
    path = _manifest(manifest)
    consent = consent_check(path)
    from diffusers import AutoencoderKL

    from easel.diffusion.data import load_training_set
    from easel.diffusion.training import (
        encode_training_set,
        export_base_model,
        read_autoencoder_record,
        train_denoiser,
    )

    _threads(threads)
    config = TrainConfig(batch_size=batch_size, unet_width=width, cooldown_steps=cooldown_steps,
                         unet_transformer_layers=list(layers), unet_attention_16=attention_16,
                         unet_head_dim=heads,
                         self_condition=self_condition, style_input=style_input, mirror=mirror,
                         set_balance=set_balance,
                         style_dropout=style_dropout, learning_rate=learning_rate,
                         ema_decay=ema_decay, sigma_range=sigmas)
    data = load_training_set(path, ("train",), tuple(config.held_out_sets))
    vae_model = AutoencoderKL.from_pretrained(str(vae) if vae else str(init_from / "vae"))
    ckpt = checkpoint or out.with_name(out.name + ".ckpt.pt")
    enc = encode_training_set(data, vae_model, ckpt.parent, mirror=mirror > 0.0,
                              style_input=style_input)
    if cooldown_steps:
        branch = ckpt.with_name(ckpt.stem + ".cooldown.pt")
        if not branch.exists() and ckpt.exists():
            shutil.copyfile(ckpt, branch)
        ckpt = branch
    state = train_denoiser(enc, ckpt, config, minutes=minutes, max_steps=steps, device=device,
                           init_from=init_from)
    from easel.diffusion.model_card import carried_lineage, read_model_card

    if expert and init_from is not None:
        from easel.diffusion.training import export_expert_model

        export_expert_model(out, init_from, state, state.config or config, data.dataset_id,
                            consent_events=len(consent), device=device)
    else:
        # Keep the learning curve `easel eval model --record` wrote into earlier exports of this
        # run, and name the models (and their datasets) these weights continue.
        previous = read_model_card(out) or (read_model_card(init_from) if init_from else {})
        export_base_model(out, state, vae_model, data, state.config or config, upscaler,
                          consent_events=len(consent), device=device,
                          autoencoder=read_autoencoder_record(vae or init_from / "vae"),
                          extra=carried_lineage(previous, data.dataset_id, state.step) or None)
    _record_lineage(out, data.dataset_id)
    typer.echo(f"trained {state.step} steps ({state.samples} samples, {state.seconds / 60:.1f} min) → {out}")


@train_app.command("style-guide")
def style_guide(
    init_from: Path = typer.Option(..., "--init-from", help="The model directory to guide (e.g. "
                                   "the shipped model): its autoencoder makes the latents."),
    out: Path = typer.Option(..., help="Model directory to write: --init-from's model with the "
                             "style classifier beside it (may be --init-from itself: replaced "
                             "atomically)."),
    manifest: Path = typer.Option(None, help="Corpus manifest (64 px build); default: EASEL_HOME's."),
    steps: int = typer.Option(3000, help="Training steps."),
    batch_size: int = typer.Option(128, help="Latents per step."),
    width: int = typer.Option(64, help="Classifier width (channels: w, 2w, 2w)."),
    scale: float = typer.Option(None, "--scale", help="Default classifier-guidance scale of the "
                                "written model (0 = off; `easel generate --classifier-guidance` "
                                "overrides it). Default: keep --init-from's."),
    discriminator: bool = typer.Option(False, "--discriminator", help="Train a discriminator "
                                       "instead: the real icons of each style against the model's own "
                                       "pictures for prompts of that style (discriminator guidance). "
                                       "Draws --fakes pictures with --init-from first."),
    fakes: int = typer.Option(3000, help="With --discriminator: how many pictures the model draws for "
                              "training-set prompts (about 0.5 s each on 2 cores at 64 px)."),
    threads: int = typer.Option(0, help="CPU threads (0: all cores)."),
) -> None:
    """Train a noise-aware style classifier on a model's latents and write the model with it.

    The classifier learns which base set's style tag a noised latent was drawn in (the
    consented train split, Streamline held out as for the base model); at sampling time its
    gradient moves each step towards the prompt's style (classifier guidance). With
    --discriminator it learns instead, for each style, to tell the real icons from the model's
    own pictures asked for in that style, and sampling climbs its log-ratio of real to fake
    (discriminator guidance). Refuses to start if any manifest item is not allowed for
    train_base at this moment.
    """
    from easel.diffusion.configs import TrainConfig  # no torch: bad options are refused at once
    from easel.diffusion.defaults import check_guidance
    from easel.errors import BadInput

    if steps < 1:
        raise BadInput(f"--steps must be at least 1, got {steps}")
    if batch_size < 2 or width < 8:
        raise BadInput(f"--batch-size must be at least 2 and --width at least 8, got "
                       f"{batch_size} and {width}")
    if scale is not None:
        check_guidance(scale, "--scale")
    if discriminator and fakes < batch_size:
        raise BadInput(f"--fakes must be at least one batch (--batch-size {batch_size}), got {fakes}")
    path, consent = _part_inputs(init_from, manifest)
    from easel.diffusion.data import load_training_set
    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.style_guide import (
        draw_fakes,
        encode_latents,
        export_style_guide,
        train_discriminator,
        train_style_classifier,
    )

    _threads(threads)
    held_out = tuple(TrainConfig().held_out_sets)
    data = load_training_set(path, ("train", "val"), held_out)
    in_train = [i for i, r in enumerate(data.rows) if r["split"] == "train"]
    in_val = [i for i, r in enumerate(data.rows) if r["split"] == "val"]
    if not in_train:
        raise BadInput(f"manifest {path} has no train-split rows outside {', '.join(held_out)}")
    pipe = load_pipeline(init_from, device="cpu")
    latents = encode_latents(data.images[in_train], pipe.vae)
    val_latents = encode_latents(data.images[in_val], pipe.vae) if in_val else None
    from easel.corpus.captions import split_style

    tags = [data.rows[i]["style_tag"] for i in in_train]
    val_tags = [data.rows[i]["style_tag"] for i in in_val]
    extra = {}
    if discriminator:
        fake_latents, fake_prompts = draw_fakes(pipe, [data.prompts[i] for i in in_train], fakes)
        result = train_discriminator(
            latents, tags, fake_latents, [split_style(p)[1] or "" for p in fake_prompts], steps=steps,
            batch_size=batch_size, width=width, val_real=val_latents, val_real_tags=val_tags)
        extra = {"fakes": fakes}
    else:
        result = train_style_classifier(latents, tags, steps=steps, batch_size=batch_size, width=width,
                                        val_latents=val_latents, val_tags=val_tags)
    export_style_guide(out, init_from, result, data.dataset_id, consent_events=len(consent),
                       guidance_scale=scale, **extra)
    _record_lineage(out, data.dataset_id)  # the classifier learned from this dataset
    said = ", ".join(f"{k} {v:.3f}" for k, v in result.accuracy.items()) or "not measured (no val split)"
    what = "discriminator" if discriminator else "style classifier"
    measure = "held-out balanced accuracy" if discriminator else "val accuracy"
    typer.echo(f"{what}: {result.steps} steps in {result.seconds / 60:.1f} min; {measure} {said} → {out}")


@train_app.command("palette")
def palette(
    init_from: Path = typer.Option(..., "--init-from", help="The model directory to paint with the "
                                   "palette (e.g. the shipped model)."),
    out: Path = typer.Option(..., help="Model directory to write: --init-from's model with the "
                             "palette beside it (may be --init-from itself: replaced atomically)."),
    manifest: Path = typer.Option(None, help="Corpus manifest (64 px build); default: EASEL_HOME's."),
    colours: int = typer.Option(16, help="Colours kept per style: the most frequent exact colours "
                                "of its training icons. The first is the canvas (white): pixels "
                                "nearest it stay as drawn."),
    strength: float = typer.Option(1.0, help="Default strength of the written model (0 = off, 1 = "
                                   "all the way onto the palette; `easel generate --palette-strength` "
                                   "overrides it)."),
    radius: float = typer.Option(60.0, help="A pixel moves only if a palette colour lies within this "
                                 "RGB distance (0-255 units)."),
) -> None:
    """Build each base style's palette from the consented training set and write the model with it.

    Every picture drawn in a base style then has its colours moved onto that style's own (see
    MODEL_CARD.md, "Style palette"). Takes seconds: it counts the colours of the train split's
    icons, Streamline held out as for the base model. Refuses to start if any manifest item is
    not allowed for train_base at this moment.
    """
    from easel.diffusion.configs import TrainConfig
    from easel.diffusion.palette import check_strength
    from easel.errors import BadInput

    if colours < 1 or colours > 4096:
        raise BadInput(f"--colours must be between 1 and 4096, got {colours}")
    check_strength(strength, "--strength")
    if not radius > 0.0:
        raise BadInput(f"--radius must be above 0, got {radius}")
    path, consent = _part_inputs(init_from, manifest)
    from easel.diffusion.data import load_training_set
    from easel.diffusion.palette import build_palette, export_palette

    data = load_training_set(path, ("train",), tuple(TrainConfig().held_out_sets))
    tags = [r["style_tag"] for r in data.rows]
    built = build_palette(data.images.permute(0, 2, 3, 1).numpy(), tags, colours=colours,
                          strength=strength, radius=radius)
    export_palette(out, init_from, built, data.dataset_id, items=len(tags), consent_events=len(consent))
    model_id = _record_lineage(out, data.dataset_id)  # the palette's colours come from this dataset
    typer.echo(f"palette: {colours} colours for each of {len(built.tags)} styles from {len(tags)} icons "
               f"→ {out} ({model_id})")


def register(app: typer.Typer) -> None:
    try:
        from easel.cli import upscale

        upscale.register_train(train_app)
    except (ImportError, AttributeError):
        pass
    app.add_typer(train_app, name="train")
