"""Training on a tiny made-up set: it learns, checkpoints, resumes, and exports a model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from easel import __version__
from easel.diffusion.configs import AutoencoderTrainConfig, TrainConfig
from easel.diffusion.data import TrainingSet
from easel.diffusion.pipeline import load_pipeline
from easel.diffusion.tiny import tiny_vae
from easel.diffusion.training import (
    BaseTrainState,
    encode_training_set,
    export_base_model,
    read_autoencoder_record,
    train_denoiser,
    weights_tag,
    write_autoencoder_record,
)

COLOURS = {"red square": (220, 30, 30), "blue square": (30, 60, 220), "green square": (30, 180, 60)}


def tiny_set() -> TrainingSet:
    images, prompts, captions, ids, rows = [], [], [], [], []
    for i, (caption, rgb) in enumerate(COLOURS.items()):
        img = torch.full((3, 64, 64), 255, dtype=torch.uint8)
        img[:, 16:48, 16:48] = torch.tensor(rgb, dtype=torch.uint8)[:, None, None]
        images.append(img)
        captions.append(caption)
        prompts.append(f"{caption}, test style")
        ids.append(f"test:{i}")
        rows.append({"set_id": "test", "rights_holder": "Test Artist", "license_spdx": "CC-BY-4.0",
                     "license_url": "https://creativecommons.org/licenses/by/4.0/",
                     "source": "@easel-test/test@1.0.0"})
    return TrainingSet(torch.stack(images), prompts, captions, ids, ["test"] * 3, "d" * 64,
                       Path("manifest.parquet"), rows)


def test_encoding_another_dataset_removes_the_old_datasets_caches(tmp_path: Path) -> None:
    """A dataset rebuilt after a withdrawal has another id: training on it removes the cached
    encodings of the old one (which hold the withdrawn works), and leaves files it did not
    write alone."""
    import dataclasses

    old = tiny_set()
    vae = tiny_vae()
    assert encode_training_set(old, vae, tmp_path, progress=False, mirror=True).mirrorable is not None
    old_files = sorted(p.name for p in tmp_path.iterdir())
    assert len(old_files) == 3 and all(name.split("-")[1] == "d" * 12 for name in old_files)
    legacy = tmp_path / "latents-0123456789abcdef.pt"  # an older version's name: no dataset in it
    legacy.write_bytes(b"")
    mine = tmp_path / "latents-notes.pt"
    mine.write_text("not a cache")
    new = dataclasses.replace(old, images=old.images[:2], prompts=old.prompts[:2], captions=old.captions[:2],
                              item_ids=old.item_ids[:2], set_ids=old.set_ids[:2], dataset_id="e" * 64)
    assert encode_training_set(new, vae, tmp_path, progress=False).latents.shape[0] == 2
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not set(old_files) & set(left) and not legacy.exists() and mine.exists()
    assert sorted(name.split("-")[1] for name in left if name != mine.name) == ["e" * 12] * 2
    # The current dataset's caches stay: encoding again reads them back.
    encode_training_set(new, vae, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_train_resume_export(tmp_path: Path, monkeypatch) -> None:
    import easel.diffusion.training as training
    from easel.diffusion import tiny

    monkeypatch.setattr(training, "unet_config", lambda *_a, **_k: tiny.tiny_unet().config)
    data = tiny_set()
    vae = tiny_vae()
    enc = encode_training_set(data, vae, tmp_path, progress=False)
    assert enc.latents.shape == (3, 4, 16, 16) and enc.full.tokens.shape[0] == 3
    assert list(tmp_path.glob("prompts-*.pt")), "prompt embeddings are cached"
    (cached,) = tmp_path.glob("latents-*.pt")  # and the latents: a resumed run reads them back
    assert torch.equal(encode_training_set(data, vae, tmp_path, progress=False).latents, enc.latents)
    other = tiny_vae()
    with torch.no_grad():
        other.encoder.conv_in.weight.add_(0.05)
    assert not torch.equal(encode_training_set(data, other, tmp_path, progress=False).latents, enc.latents)
    assert len(list(tmp_path.glob("latents-*.pt"))) == 2  # another autoencoder, another file

    config = TrainConfig(batch_size=8, warmup_steps=1, learning_rate=2e-3, checkpoint_minutes=100)
    ckpt = tmp_path / "ckpt.pt"
    first: BaseTrainState = train_denoiser(enc, ckpt, config, max_steps=40, progress=False)
    assert first.step == 40 and ckpt.exists() and len(first.losses) == 2
    resumed = train_denoiser(enc, ckpt, config, max_steps=80, progress=False)
    assert resumed.step == 80 and resumed.samples == 80 * 8
    assert resumed.losses[:2] == first.losses  # the curve carries over the resume
    # It learns: the smoothed loss at the end is below the start.
    assert resumed.losses[-1] < resumed.losses[0]

    out = tmp_path / "model"
    vae_dir = tmp_path / "vae"
    vae.save_pretrained(str(vae_dir))
    assert read_autoencoder_record(vae_dir) is None
    write_autoencoder_record(vae_dir, data, 12, 30.0, 21.5, AutoencoderTrainConfig())
    export_base_model(out, resumed, vae, data, config, autoencoder=read_autoencoder_record(vae_dir))
    card = json.loads((out / "model_card.json").read_text())
    # The card names the autoencoder's data too, and the model directory keeps its record.
    assert card["autoencoder"]["dataset_id"] == "d" * 64 and card["training"]["vae_val_psnr"] == 21.5
    assert "same manifest as the denoiser" in (out / "MODEL_CARD.md").read_text()
    assert read_autoencoder_record(out / "vae") == card["autoencoder"]
    assert card["dataset_id"] == "d" * 64 and card["training"]["steps"] == 80
    # The id names the step count and the weights (other weights at 80 steps: another id).
    assert card["model_id"] == f"easel-embedded-{__version__}-s80-w{weights_tag(resumed.ema)}"
    assert weights_tag(first.ema) != weights_tag(resumed.ema)
    # and anyone holding the folder can recompute it from the saved denoiser
    from diffusers import UNet2DConditionModel
    assert weights_tag(UNet2DConditionModel.from_pretrained(str(out / "unet"))) == weights_tag(resumed.ema)
    assert card["sources"][0]["license_spdx"] == "CC-BY-4.0"
    assert "Test Artist" in (out / "MODEL_CARD.md").read_text()
    pipe = load_pipeline(out, device="cpu")
    images = pipe("red square, test style", seeds=[0], num_inference_steps=2, upscale=False).images
    assert images[0].size == (64, 64)

    # A new machine without the checkpoint continues from the exported model's weights and counters.
    config = replace(config, warmup_steps=10)
    fresh = train_denoiser(enc, tmp_path / "other.pt", config, max_steps=85, progress=False, init_from=out)
    assert fresh.step == 85 and fresh.samples == 85 * 8
    assert fresh.losses[:4] == resumed.losses[:4]
    # Its fresh optimiser warms up again from the step it started at, and a resume keeps that.
    assert fresh.config.warmup_start == 80 and fresh.config.lr_at(80) < fresh.config.learning_rate
    again = train_denoiser(enc, tmp_path / "other.pt", config, max_steps=86, progress=False)
    assert again.config.warmup_start == 80


def test_pooled_only_unet_has_no_attention() -> None:
    """The ablation switch really removes cross-attention, and the model still takes the prompt."""
    from diffusers import UNet2DConditionModel

    from easel.diffusion.configs import unet_config

    for cross_attention in (True, False):
        unet = UNet2DConditionModel(**unet_config(width=32, cross_attention=cross_attention))
        has_attention = any("attn2" in name for name, _ in unet.named_modules())
        assert has_attention == cross_attention
        pooled = torch.randn(1, 384)
        x = torch.randn(1, 4, 16, 16)
        kwargs = dict(encoder_hidden_states=torch.randn(1, 28, 384), encoder_attention_mask=torch.ones(1, 28))
        with torch.no_grad():
            a = unet(x, torch.tensor([500.0]), class_labels=pooled, **kwargs).sample
            b = unet(x, torch.tensor([500.0]), class_labels=-pooled, **kwargs).sample
        assert not torch.allclose(a, b)  # the pooled prompt embedding reaches the output


def test_cooldown_schedule() -> None:
    """Warm-up, constant, then a linear cool-down to 0 that starts where the branch begins."""
    config = TrainConfig(learning_rate=1e-3, warmup_steps=10, cooldown_steps=100, cooldown_start=500)
    assert config.lr_at(0) == 1e-4 and config.lr_at(9) == 1e-3 and config.lr_at(499) == 1e-3
    assert abs(config.lr_at(550) - 5e-4) < 1e-12 and config.lr_at(600) == 0.0
    assert TrainConfig(learning_rate=1e-3, warmup_steps=10).lr_at(10_000) == 1e-3
    restarted = TrainConfig(learning_rate=1e-3, warmup_steps=10, warmup_start=1000)
    assert restarted.lr_at(1000) == 1e-4 and restarted.lr_at(1009) == 1e-3


def test_cooldown_branch_resumes_and_stops(tmp_path: Path, monkeypatch) -> None:
    import easel.diffusion.training as training
    from easel.diffusion import tiny

    monkeypatch.setattr(training, "unet_config", lambda *_a, **_k: tiny.tiny_unet().config)
    enc = encode_training_set(tiny_set(), tiny_vae(), tmp_path, progress=False)
    main = tmp_path / "main.pt"
    stable = TrainConfig(batch_size=4, warmup_steps=1, checkpoint_minutes=100)
    train_denoiser(enc, main, stable, max_steps=10, progress=False)
    branch = tmp_path / "branch.pt"
    branch.write_bytes(main.read_bytes())
    cool = TrainConfig(batch_size=4, warmup_steps=1, checkpoint_minutes=100, cooldown_steps=12)
    part = train_denoiser(enc, branch, cool, max_steps=16, progress=False)
    assert part.step == 16 and part.config.cooldown_start == 10
    # Resumed with no step limit, the branch keeps its start and stops where the decay ends.
    done = train_denoiser(enc, branch, cool, progress=False)
    assert done.step == 22 and done.config.cooldown_start == 10
    assert done.config.lr_at(done.step) == 0.0
    assert torch.load(main, weights_only=False)["step"] == 10  # the main checkpoint is untouched


def test_a_run_paused_by_sigtstp_leaves_the_pause_out_of_its_time(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-Z or `kill -TSTP` pauses a training run until SIGCONT; neither the run's seconds nor
    its --minutes budget count the pause. Another process pauses this one once training has
    written its first checkpoint, and continues it 1.5 s later."""
    import time

    import easel.diffusion.training as training
    from easel.diffusion import tiny
    from tests.signalling import signaller

    monkeypatch.setattr(training, "unet_config", lambda *_a, **_k: tiny.tiny_unet().config)
    enc = encode_training_set(tiny_set(), tiny_vae(), tmp_path, progress=False)
    ckpt = tmp_path / "paused.pt"
    waker = signaller(ckpt, 1.5)
    config = TrainConfig(batch_size=4, warmup_steps=1, checkpoint_minutes=0.01)
    started = time.monotonic()
    state = train_denoiser(enc, ckpt, config, minutes=3 / 60, progress=False)
    wall = time.monotonic() - started
    assert waker.wait(timeout=10) == 0
    assert wall >= 3 + 1.4, wall  # the pause did not spend the 3 s budget
    # the run's seconds count its steps only, so they are a little under the 3 s
    assert 1.5 <= state.seconds <= wall - 1.4, (state.seconds, wall)
    assert torch.load(ckpt, weights_only=False)["seconds"] == state.seconds


def test_decoder_only_fine_tune_keeps_the_latent_space(tmp_path: Path) -> None:
    """`easel train autoencoder --init-from DIR --decoder-only`: the encoder, and so every
    latent a denoiser was trained on, is unchanged; the decoder learns."""
    from easel.diffusion.training import train_autoencoder

    data = tiny_set()
    start = tiny_vae()
    start.register_to_config(scaling_factor=0.5)
    config = AutoencoderTrainConfig(batch_size=3, learning_rate=2e-3, minutes=100, decay=True)
    result = train_autoencoder(data, data.images, tmp_path / "dec.pt", config, progress=False,
                               max_steps=60, init=start, decoder_only=True)
    tuned = result.vae
    assert result.steps == 60 and tuned.config.scaling_factor == 0.5
    before, after = start.state_dict(), tuned.state_dict()
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same == (name.startswith(("encoder.", "quant_conv."))), name
    with torch.no_grad():
        x = data.images.float() / 127.5 - 1
        lat = start.encode(x).latent_dist.mode()
        assert torch.equal(lat, tuned.encode(x).latent_dist.mode())
        err_before = (start.decode(lat).sample - x).abs().mean()
        err_after = (tuned.decode(lat).sample - x).abs().mean()
    assert err_after < 0.7 * err_before, (err_before, err_after)
    # resumed from its checkpoint, it goes on from step 60
    again = train_autoencoder(data, data.images, tmp_path / "dec.pt", config, progress=False,
                              max_steps=70, init=start, decoder_only=True)
    assert again.steps == 70


def test_decoder_only_needs_a_trained_autoencoder(tmp_path: Path) -> None:
    import pytest

    from easel.diffusion.training import train_autoencoder

    with pytest.raises(ValueError, match="give init"):
        train_autoencoder(tiny_set(), tiny_set().images, tmp_path / "x.pt", AutoencoderTrainConfig(),
                          progress=False, max_steps=1, decoder_only=True)


def test_train_autoencoder_cli_refuses_bad_fine_tune_options(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    env = {"EASEL_HOME": str(tmp_path / "home")}
    out = tmp_path / "out"
    for args, says in ((["--decoder-only"], "give --init-from"),
                       (["--init-from", str(tmp_path)], "not an autoencoder directory"),
                       (["--minutes", "0"], "--minutes must be more than 0"),
                       (["--install-into", str(tmp_path)], "add --decoder-only")):
        proc = run_cli("train", "autoencoder", "--out", str(out), *args, env=env)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_install_decoder_replaces_the_models_autoencoder_only_when_the_encoder_is_its_own(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest

    import easel.diffusion.training as training
    from easel.diffusion import tiny
    from easel.diffusion.model_card import read_model_card
    from easel.diffusion.training import install_decoder, train_autoencoder
    from easel.errors import BadInput

    monkeypatch.setattr(training, "unet_config", lambda *_a, **_k: tiny.tiny_unet().config)
    data, vae = tiny_set(), tiny_vae()
    enc = encode_training_set(data, vae, tmp_path, progress=False)
    config = TrainConfig(batch_size=4, warmup_steps=1, checkpoint_minutes=100)
    state = train_denoiser(enc, tmp_path / "ckpt.pt", config, max_steps=2, progress=False)
    model = tmp_path / "model"
    export_base_model(model, state, vae, data, config)
    first_id = read_model_card(model)["model_id"]

    ae_config = AutoencoderTrainConfig(batch_size=3, minutes=100)
    tuned = train_autoencoder(data, data.images, tmp_path / "d.pt", ae_config, progress=False,
                              max_steps=5, init=vae, decoder_only=True)
    tuned.vae.save_pretrained(str(tmp_path / "dec"))
    write_autoencoder_record(tmp_path / "dec", data, 5, 1.0, 30.5, ae_config,
                             fine_tuned={"from": "x", "decoder_only": True, "val_psnr_before": 20.0})
    assert install_decoder(model, tmp_path / "dec") == f"{first_id}-d5"
    card = read_model_card(model)
    assert card["training"]["vae_val_psnr"] == 30.5 and card["autoencoder"]["fine_tuned"]["decoder_only"]
    assert "decoder only (encoder and latent space frozen)" in (model / "MODEL_CARD.md").read_text()
    installed = load_pipeline(model, device="cpu").vae.state_dict()
    assert all(torch.equal(installed[k], v) for k, v in tuned.vae.state_dict().items())
    assert not list(model.glob(".vae-*"))  # no staging left behind
    # a second round from the first: the id counts the decoder steps of both
    write_autoencoder_record(tmp_path / "dec", data, 7, 1.0, 31.5, ae_config,
                             fine_tuned={"from": "dec", "decoder_only": True, "val_psnr_before": 30.5,
                                         "previous": read_autoencoder_record(tmp_path / "dec")})
    assert install_decoder(model, tmp_path / "dec") == f"{first_id}-d12"
    # Training on from that model keeps the decoder in the id (its export carries the record).
    export_base_model(tmp_path / "again", state, vae, data, config,
                      autoencoder=read_autoencoder_record(model / "vae"))
    assert read_model_card(tmp_path / "again")["model_id"] == f"{first_id}-d12"

    whole = train_autoencoder(data, data.images, tmp_path / "w.pt", ae_config, progress=False,
                              max_steps=3, init=vae)  # the encoder moved too
    whole.vae.save_pretrained(str(tmp_path / "whole"))
    write_autoencoder_record(tmp_path / "whole", data, 3, 1.0, 31.0, ae_config)
    with pytest.raises(BadInput, match="not configured like"):  # its latents were re-scaled
        install_decoder(model, tmp_path / "whole")
    whole.vae.register_to_config(scaling_factor=vae.config.scaling_factor)
    whole.vae.save_pretrained(str(tmp_path / "whole"))
    with pytest.raises(BadInput, match="another encoder"):
        install_decoder(model, tmp_path / "whole")
    assert read_model_card(model)["model_id"] == f"{first_id}-d12"  # untouched by the refusal


def test_install_into_refuses_another_encoder_before_training(tmp_path: Path) -> None:
    from easel.diffusion import tiny
    from tests.conftest import run_cli

    model = tiny.save_tiny_pipeline(tmp_path / "model")
    (model / "model_card.json").write_text(json.dumps({"model_id": "tiny-s1", "dataset_id": "d" * 64}))
    other = tiny_vae()
    with torch.no_grad():
        other.encoder.conv_in.weight.add_(0.01)
    other.save_pretrained(str(tmp_path / "other"))
    out = tmp_path / "out"
    proc = run_cli("train", "autoencoder", "--init-from", str(tmp_path / "other"), "--decoder-only",
                   "--install-into", str(model), "--out", str(out), "--minutes", "1",
                   env={"EASEL_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2 and "another encoder" in proc.stderr, proc.stderr
    assert not out.exists() and not (tmp_path / "home" / "easel.db").exists()  # refused first


def _unet_inputs(n: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return dict(sample=torch.randn(n, 4, 16, 16, generator=gen),
                timestep=torch.tensor([20.0, 500.0, 950.0][:n]),
                encoder_hidden_states=torch.randn(n, 9, 384, generator=gen),
                class_labels=torch.randn(n, 384, generator=gen))


def _after_two_sgd_steps(unet: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``unet``'s weights after two SGD steps on a made-up loss (it is trained in place)."""
    opt = torch.optim.SGD(unet.parameters(), lr=0.1)
    unet.train()
    for _ in range(2):
        loss = unet(**inputs).sample.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return unet.state_dict()


def test_a_deepened_unet_computes_what_it_was_grown_from() -> None:
    """Growing adds transformer blocks that start as the identity: same outputs, more weights,
    and the grown model trains (its new blocks get gradients once their outputs move)."""
    from diffusers import UNet2DConditionModel

    from easel.diffusion.configs import transformer_layers_of, unet_config
    from easel.diffusion.growth import deepen_unet

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(width=32)).eval()
    inputs = _unet_inputs()
    with torch.no_grad():
        before = unet(**inputs).sample
    for layers in ((1, 1, 2), (1, 3, 2)):
        grown = deepen_unet(unet, layers).eval()
        assert transformer_layers_of(grown.config) == layers
        assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in unet.parameters())
        with torch.no_grad():
            assert torch.equal(grown(**inputs).sample, before)
        # Saved and loaded like any diffusers UNet.
        again = UNet2DConditionModel.from_config(grown.config)
        assert transformer_layers_of(again.config) == layers
    # The original's weights are where they were; the new block is not a copy of them.
    grown = deepen_unet(unet, (1, 1, 2))
    old = unet.state_dict()
    new = {k: v.clone() for k, v in grown.state_dict().items()}
    assert all(torch.equal(old[k], new[k]) for k in old)
    added = [k for k in new if k not in old]
    assert added and all(".transformer_blocks.1." in k for k in added)
    # A few optimiser steps move the added blocks (they are trainable, not dead).
    moved = _after_two_sgd_steps(grown, inputs)
    assert any(not torch.equal(moved[k], new[k]) for k in added if "attn1.to_q" in k)


def test_attention_added_at_16x16_starts_as_the_identity_and_trains() -> None:
    """`--attention-16x16`: the grown UNet has attention blocks at its first level, down and up,
    computes what it was grown from, keeps every old weight, and its new blocks learn."""
    import pytest
    from diffusers import UNet2DConditionModel

    from easel.diffusion.configs import has_attention_16, unet_config
    from easel.diffusion.growth import attend_at_16, deepen_unet

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(width=32, transformer_layers=(1, 2, 2))).eval()
    inputs = _unet_inputs()
    with torch.no_grad():
        before = unet(**inputs).sample
    grown = attend_at_16(unet).eval()
    assert has_attention_16(grown.config) and not has_attention_16(unet.config)
    same_layout = UNet2DConditionModel(**unet_config(width=32, transformer_layers=(1, 2, 2),
                                                     attention_16=True))
    assert json.dumps(dict(grown.config), default=list) == json.dumps(dict(same_layout.config), default=list)
    with torch.no_grad():
        assert torch.allclose(grown(**inputs).sample, before, atol=1e-6)
    old, new = unet.state_dict(), {k: v.clone() for k, v in grown.state_dict().items()}
    assert all(torch.equal(old[k], new[k]) for k in old)
    added = [k for k in new if k not in old]
    assert added and all(k.startswith(("down_blocks.0.attentions.", "up_blocks.2.attentions."))
                         for k in added)
    deeper = deepen_unet(grown, (2, 2, 2)).eval()  # the new level can be deepened like the others
    with torch.no_grad():
        assert torch.allclose(deeper(**inputs).sample, before, atol=1e-6)
    moved = _after_two_sgd_steps(grown, inputs)
    assert any(not torch.equal(moved[k], new[k]) for k in added if k.endswith("proj_out.weight"))
    with pytest.raises(ValueError, match="already"):
        attend_at_16(grown)


def test_a_unet_is_grown_not_shrunk() -> None:
    import pytest
    from diffusers import UNet2DConditionModel

    from easel.diffusion.configs import unet_config
    from easel.diffusion.growth import deepen_unet

    unet = UNet2DConditionModel(**unet_config(width=32, transformer_layers=(1, 2, 2)))
    with pytest.raises(ValueError, match="can only be grown"):
        deepen_unet(unet, (1, 1, 2))
    for bad in ((1, 2), (1, 2, 0), (1, 2, 9)):
        with pytest.raises(ValueError, match="expected 3 counts from 1 to 8"):
            deepen_unet(unet, bad)


def test_training_from_a_model_grows_it_first(tmp_path: Path) -> None:
    """`train_denoiser(init_from=…)` with more transformer blocks than the model has starts from
    exactly that model's function, and a resumed run keeps the grown shape."""
    from diffusers import UNet2DConditionModel

    from easel.diffusion.configs import transformer_layers_of, unet_config

    torch.manual_seed(0)
    start_dir = tmp_path / "shipped"
    UNet2DConditionModel(**unet_config(width=32)).save_pretrained(str(start_dir / "unet"))
    start = UNet2DConditionModel.from_pretrained(str(start_dir / "unet")).eval()
    enc = encode_training_set(tiny_set(), tiny_vae(), tmp_path, progress=False)
    config = TrainConfig(unet_width=32, unet_transformer_layers=[1, 1, 2], batch_size=4, warmup_steps=1,
                         checkpoint_minutes=100)
    ckpt = tmp_path / "grown.pt"
    state = train_denoiser(enc, ckpt, config, max_steps=0, progress=False, init_from=start_dir)
    assert transformer_layers_of(state.ema.config) == (1, 1, 2)
    inputs = _unet_inputs()
    with torch.no_grad():
        assert torch.equal(state.ema.eval()(**inputs).sample, start(**inputs).sample)
    resumed = train_denoiser(enc, ckpt, config, max_steps=2, progress=False)
    assert resumed.step == 2 and transformer_layers_of(resumed.unet.config) == (1, 1, 2)
    # --attention-16x16: attention added at 16x16 (and a block at 4x4), from the same function
    from easel.diffusion.configs import has_attention_16

    config = replace(config, unet_attention_16=True)
    state = train_denoiser(enc, tmp_path / "attends.pt", config, max_steps=0, progress=False,
                           init_from=start_dir)
    assert has_attention_16(state.ema.config) and transformer_layers_of(state.ema.config) == (1, 1, 2)
    with torch.no_grad():
        assert torch.allclose(state.ema.eval()(**inputs).sample, start(**inputs).sample, atol=1e-6)
    resumed = train_denoiser(enc, tmp_path / "attends.pt", config, max_steps=2, progress=False)
    assert resumed.step == 2 and has_attention_16(resumed.unet.config)
    # --self-condition: the UNet also reads a clean-latent estimate; from the same function
    from easel.diffusion.configs import has_self_condition

    config = replace(config, unet_attention_16=False, self_condition=True)
    state = train_denoiser(enc, tmp_path / "selfcond.pt", config, max_steps=0, progress=False,
                           init_from=start_dir)
    assert has_self_condition(state.ema.config)
    estimate = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        wide = dict(inputs, sample=torch.cat([inputs["sample"], estimate], dim=1))
        assert torch.allclose(state.ema.eval()(**wide).sample, start(**inputs).sample, atol=1e-6)
    resumed = train_denoiser(enc, tmp_path / "selfcond.pt", config, max_steps=3, progress=False)
    assert resumed.step == 3 and has_self_condition(resumed.unet.config)
    moved = resumed.unet.state_dict()["conv_in.weight"][:, 4:]
    assert moved.abs().sum() > 0  # the estimate's input weights learn (they started at zero)
    # --style-input: the timestep embedding also reads the style tag's vector; same function
    from easel.diffusion.configs import has_style_input

    config = replace(config, self_condition=False, style_input=True)
    try:
        train_denoiser(enc, tmp_path / "style.pt", config, max_steps=0, progress=False, init_from=start_dir)
    except ValueError as err:
        assert "style_input" in str(err)
    else:
        raise AssertionError("style_input without the style vectors was accepted")
    styled = encode_training_set(tiny_set(), tiny_vae(), tmp_path, progress=False, style_input=True)
    assert styled.full.pooled.shape == (3, 768) and styled.empty.pooled[:, 384:].abs().sum() == 0
    assert styled.caption_only.pooled[:, 384:].abs().sum() == 0
    assert styled.full.pooled[:, 384:].abs().sum() > 0
    state = train_denoiser(styled, tmp_path / "style.pt", config, max_steps=0, progress=False,
                           init_from=start_dir)
    assert has_style_input(state.ema.config)
    with torch.no_grad():
        style = torch.randn(3, 384, generator=torch.Generator().manual_seed(6))
        wide = dict(inputs, class_labels=torch.cat([inputs["class_labels"], style], dim=1))
        assert torch.allclose(state.ema.eval()(**wide).sample, start(**inputs).sample, atol=1e-6)
    resumed = train_denoiser(styled, tmp_path / "style.pt", config, max_steps=3, progress=False)
    assert resumed.step == 3 and has_style_input(resumed.unet.config)
    moved = resumed.unet.state_dict()["class_embedding.linear_1.weight"][:, 384:]
    assert moved.abs().sum() > 0  # the style vector's weights learn (they started at zero)
    out = tmp_path / "styled"  # its model directory: the card says so, and the pipeline reads it
    export_base_model(out, resumed, tiny_vae(), tiny_set(), replace(resumed.config, mirror=0.5))
    text = (out / "MODEL_CARD.md").read_text()
    assert "style tag alone" in text and "50% of training pictures mirrored" in text
    pipe = load_pipeline(out, device="cpu")
    image = pipe("red square, test style", seeds=[0], num_inference_steps=2, upscale=False).images[0]
    assert image.size == (64, 64)


def test_mirrored_training_pictures(tmp_path: Path) -> None:
    """--mirror: the mirrored pictures' latents are encoded once (cached beside the others), a
    caption that names a side is never mirrored, and a mirroring run draws the same batches
    as a plain one (its own random stream) but learns from other latents."""
    from easel.diffusion.training import mirrorable

    assert mirrorable(["left arrow", "fox face", "clockwise vertical arrows", "rightwards hand",
                       "copyright", "Right-facing fist"]).tolist() == [False, True, False, False, True, False]
    data, vae = tiny_set(), tiny_vae()
    data.images[0, :, 16:48, 16:32] = 0  # a picture whose mirror image differs
    plain = encode_training_set(data, vae, tmp_path, progress=False)
    assert plain.mirrored is None
    enc = encode_training_set(data, vae, tmp_path, progress=False, mirror=True)
    assert len(list(tmp_path.glob("latents-*-mirrored.pt"))) == 1
    with torch.no_grad():
        flipped = vae.encode(data.images[:1].flip(-1).float() / 127.5 - 1.0).latent_dist.mode()
    assert torch.allclose(enc.mirrored[:1], flipped * vae.config.scaling_factor, atol=1e-5)
    assert not torch.allclose(enc.mirrored[0], enc.latents[0], atol=1e-3)
    assert torch.equal(enc.latents, plain.latents) and enc.mirrorable.all()
    config = TrainConfig(unet_width=32, batch_size=4, warmup_steps=1, checkpoint_minutes=100)
    try:
        train_denoiser(plain, tmp_path / "m.pt", replace(config, mirror=0.5), max_steps=1, progress=False)
    except ValueError as err:
        assert "mirrored latents" in str(err)
    else:
        raise AssertionError("mirror without the mirrored latents was accepted")
    still = train_denoiser(enc, tmp_path / "a.pt", config, max_steps=2, progress=False)
    mirrored = train_denoiser(enc, tmp_path / "b.pt", replace(config, mirror=1.0), max_steps=2,
                              progress=False)
    again = train_denoiser(plain, tmp_path / "c.pt", config, max_steps=2, progress=False)
    weights = [s.unet.state_dict()["conv_in.weight"] for s in (still, mirrored, again)]
    assert torch.equal(weights[0], weights[2])  # --mirror 0 is the plain run, step for step
    assert not torch.equal(weights[0], weights[1])


def test_train_base_refuses_bad_transformer_layers(tmp_path: Path) -> None:
    """`--transformer-layers` is checked before any data is read: a clear message, exit 2 (bad input)."""
    from tests.conftest import run_cli

    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "config.json").write_text(json.dumps(
        {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
         "transformer_layers_per_block": [1, 1, 2]}))
    env = {"EASEL_HOME": str(tmp_path / "home")}
    cases = [("1,1", "expected 3 counts"), ("1,x,2", "three whole numbers"), ("1,1,0", "from 1 to 8"),
             ("1,1,1", "grown, not shrunk"), ("2,2,2", "add --attention-16x16")]
    for value, message in cases:
        proc = run_cli("train", "base", "--init-from", str(model), "--out", str(tmp_path / "out"),
                       "--steps", "1", "--transformer-layers", value, env=env)
        assert proc.returncode == 2, (value, proc.stderr)
        assert message in proc.stderr and "--transformer-layers" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    (model / "unet" / "config.json").write_text(json.dumps(
        {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
         "in_channels": 8, "out_channels": 4}))
    proc = run_cli("train", "base", "--init-from", str(model), "--out", str(tmp_path / "out"),
                   "--steps", "1", "--no-self-condition", env=env)
    assert proc.returncode == 2 and "is self-conditioned" in proc.stderr, proc.stderr
    (model / "unet" / "config.json").write_text(json.dumps(
        {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
         "class_embed_type": "projection", "projection_class_embeddings_input_dim": 768}))
    proc = run_cli("train", "base", "--init-from", str(model), "--out", str(tmp_path / "out"),
                   "--steps", "1", "--no-style-input", env=env)
    assert proc.returncode == 2 and "reads a style vector" in proc.stderr, proc.stderr
    for bad in ("1.5", "-0.1", "nan"):
        proc = run_cli("train", "base", "--init-from", str(model), "--out", str(tmp_path / "out"),
                       "--steps", "1", "--mirror", bad, env=env)
        assert proc.returncode == 2 and "--mirror must be between 0 and 1" in proc.stderr, proc.stderr
    proc = run_cli("train", "base", "--init-from", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"),
                   "--steps", "1", env=env)
    assert proc.returncode == 2 and "not a model directory" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home" / "easel.db").exists()


def test_head_dim_sets_how_wide_every_attention_head_is() -> None:
    """diffusers reads `attention_head_dim` as a head count, so the legacy config has 32 heads
    in every block, 2 channels wide at 64 channels; `head_dim=16` gives heads 16 channels wide
    in the down, middle and up blocks alike, and the config says which split it has."""
    import pytest
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    from easel.diffusion.configs import check_head_dim, head_dim_of, unet_config

    for head_dim, widths in ((None, {2}), (16, {16})):  # attention at 64 channels only
        config = unet_config(width=32, transformer_layers=(1, 1, 2), head_dim=head_dim)
        unet = UNet2DConditionModel(**config)
        attentions = [m for m in unet.modules() if isinstance(m, Attention)]
        assert len(attentions) == 2 * (2 + 3 + 2 + 2 + 2)  # self and cross, down 8x8 4x4 (x2), mid, up
        assert {m.inner_dim // m.heads for m in attentions} == widths
        assert head_dim_of(config) == head_dim == head_dim_of(unet.config)
    with pytest.raises(ValueError, match="could be one of \\[8, 16, 32, 64\\]"):
        check_head_dim(24, 64)


def test_a_model_split_into_wider_heads_starts_from_its_weights(tmp_path: Path, caplog) -> None:
    """`train_denoiser(init_from=…)` with another head width keeps every weight of the model (the
    shapes are the same), says that the function is not kept, and a resumed run keeps the split."""
    from diffusers import UNet2DConditionModel

    from easel.diffusion.configs import head_dim_of, unet_config

    torch.manual_seed(0)
    start_dir = tmp_path / "shipped"
    UNet2DConditionModel(**unet_config(width=32)).save_pretrained(str(start_dir / "unet"))
    start = UNet2DConditionModel.from_pretrained(str(start_dir / "unet"))
    enc = encode_training_set(tiny_set(), tiny_vae(), tmp_path, progress=False)
    config = TrainConfig(unet_width=32, unet_head_dim=16, batch_size=4, warmup_steps=1,
                         checkpoint_minutes=100)
    ckpt = tmp_path / "split.pt"
    state = train_denoiser(enc, ckpt, config, max_steps=0, progress=False, init_from=start_dir)
    assert head_dim_of(start.config) is None and head_dim_of(state.ema.config) == 16
    for name, tensor in start.state_dict().items():
        assert torch.equal(state.ema.state_dict()[name], tensor), name
    assert "split anew" in caplog.text
    inputs = _unet_inputs()
    with torch.no_grad():  # the same weights, another function
        assert not torch.allclose(state.ema.eval()(**inputs).sample, start.eval()(**inputs).sample)
    resumed = train_denoiser(enc, ckpt, config, max_steps=2, progress=False)
    assert resumed.step == 2 and head_dim_of(resumed.unet.config) == 16


def test_train_base_refuses_a_head_width_that_does_not_divide_the_unet(tmp_path: Path) -> None:
    from easel.diffusion.defaults import SHIPPED_MODEL_DIR
    from tests.conftest import run_cli

    env = {"EASEL_HOME": str(tmp_path / "home")}
    proc = run_cli("train", "base", "--init-from", str(SHIPPED_MODEL_DIR), "--out", str(tmp_path / "out"),
                   "--steps", "1", "--head-dim", "24", env=env)
    assert proc.returncode == 2 and "--head-dim 24: 24 does not divide the UNet's width 64" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home" / "easel.db").exists()


def test_set_balance_weights_share_out_the_sets() -> None:
    """A set of n items is drawn in proportion to n^(1 - b): b = 0 is uniform over items, b = 1
    gives every set the same share."""
    import pytest

    from easel.diffusion.training import set_balance_weights

    ids = ["big"] * 100 + ["small"] * 25
    for balance, small_share in ((0.0, 0.2), (0.5, 5 / 15), (1.0, 0.5)):
        w = set_balance_weights(ids, balance)
        assert abs(float(w.sum()) - 1.0) < 1e-9
        assert abs(float(w[100:].sum()) - small_share) < 1e-9, balance
        assert torch.all(w[:100] == w[0]) and torch.all(w[100:] == w[100])  # equal within a set
    with pytest.raises(ValueError, match="between 0 and 1"):
        set_balance_weights(ids, 1.5)


def test_training_with_set_balance_draws_the_small_set_more(tmp_path: Path, monkeypatch) -> None:
    """With --set-balance 1 the one-item set fills half of every batch; without, a third."""
    import easel.diffusion.training as training
    from easel.diffusion import tiny

    monkeypatch.setattr(training, "unet_config", lambda *_a, **_k: tiny.tiny_unet().config)
    data = tiny_set()
    data.set_ids = ["big", "big", "small"]
    enc = encode_training_set(data, tiny_vae(), tmp_path, progress=False)
    assert enc.set_ids == ["big", "big", "small"]
    real_loss = training.latent_velocity_loss
    drawn: list[torch.Tensor] = []

    def spy(unet, latents, *args, **kwargs):  # the real loss; it only notes which items came
        drawn.append(latents.detach().clone())
        return real_loss(unet, latents, *args, **kwargs)

    monkeypatch.setattr(training, "latent_velocity_loss", spy)
    small = enc.latents[2]
    shares = {}
    for balance in (0.0, 1.0):
        drawn.clear()
        config = TrainConfig(batch_size=8, warmup_steps=1, checkpoint_minutes=100, set_balance=balance)
        state = train_denoiser(enc, tmp_path / f"b{balance}.pt", config, max_steps=40, progress=False)
        assert state.config.set_balance == balance
        batch = torch.cat(drawn)
        shares[balance] = sum(torch.equal(x, small) for x in batch) / batch.shape[0]
    assert abs(shares[0.0] - 1 / 3) < 0.08 and abs(shares[1.0] - 0.5) < 0.08, shares


def test_train_base_refuses_bad_set_balance_style_dropout_learning_rate_ema_or_width(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    env = {"EASEL_HOME": str(tmp_path / "home")}
    cases = [("--set-balance", v, "--set-balance must be between 0 and 1") for v in ("-0.1", "1.5", "nan")]
    cases += [("--style-dropout", v, "--style-dropout must be between 0 and 0.9") for v in ("-0.1", "0.95")]
    cases += [("--learning-rate", v, "--learning-rate must be above 0") for v in ("0", "-1e-4", "nan", "2")]
    cases += [("--ema-decay", v, "--ema-decay must be at least 0 and below 1") for v in ("-0.1", "1", "nan")]
    cases += [("--width", v, "--width must be a multiple of 32") for v in ("16", "0", "-64", "48")]
    for option, value, message in cases:
        proc = run_cli("train", "base", "--init-from", str(tmp_path / "model"),
                       "--out", str(tmp_path / "out"), "--steps", "1", option, value, env=env)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home" / "easel.db").exists()


def test_the_weight_average_follows_the_configured_ema_decay(tmp_path: Path, monkeypatch) -> None:
    """Each update moves the average by ``1 - decay`` towards the weights, and the trainer uses
    ``TrainConfig.ema_decay`` (what `easel train base --ema-decay` sets): at 0 the average is the
    weights themselves, at 0.999 it lags behind them."""
    import copy

    import easel.diffusion.training as training
    from easel.diffusion import tiny
    from easel.diffusion.training import optimizer_step

    net = torch.nn.Linear(2, 1)
    avg = copy.deepcopy(net)
    before = avg.weight.detach().clone()
    optimizer_step(net, avg, torch.optim.SGD(net.parameters(), lr=0.5), net(torch.ones(1, 2)).sum(), 0.75)
    assert not torch.equal(net.weight, before)
    assert torch.allclose(avg.weight, before + 0.25 * (net.weight - before))

    monkeypatch.setattr(training, "unet_config", lambda *_a, **_k: tiny.tiny_unet().config)
    enc = encode_training_set(tiny_set(), tiny_vae(), tmp_path, progress=False)
    for decay, same in ((0.0, True), (0.999, False)):
        config = TrainConfig(batch_size=4, warmup_steps=1, learning_rate=2e-3, checkpoint_minutes=100,
                             ema_decay=decay)
        state = train_denoiser(enc, tmp_path / f"ema-{decay}.pt", config, max_steps=30, progress=False)
        assert state.config is not None and state.config.ema_decay == decay
        assert all(torch.equal(a, w) for a, w in zip(state.ema.parameters(), state.unet.parameters(),
                                                      strict=True)) == same, decay


def test_style_dropout_sets_the_share_of_caption_only_prompts(tmp_path: Path) -> None:
    """The batch's prompts are the full prompt, the caption alone (style dropout) or "" (condition
    dropout), in the configured shares."""
    from easel.diffusion.training import _batch_embeddings

    enc = encode_training_set(tiny_set(), tiny_vae(), tmp_path, progress=False)
    idx = torch.tensor([0, 1, 2] * 400)
    full = enc.full.index(idx).pooled
    caption = enc.caption_only.index(enc.caption_index[idx]).pooled
    empty = enc.empty.index([0]).pooled
    for cond, style in ((0.0, 0.0), (0.1, 0.1), (0.1, 0.5)):
        config = TrainConfig(cond_dropout=cond, style_dropout=style)
        pooled = _batch_embeddings(enc, idx, config, torch.Generator().manual_seed(0)).pooled
        n = idx.shape[0]
        is_full = (pooled == full).all(dim=1).float().mean().item()
        is_caption = (pooled == caption).all(dim=1).float().mean().item()
        is_empty = (pooled == empty).all(dim=1).float().mean().item()
        assert abs(is_caption - style) < 3 * (style * (1 - style) / n) ** 0.5 + 1e-9, (cond, style)
        assert abs(is_empty - cond) < 3 * (cond * (1 - cond) / n) ** 0.5 + 1e-9, (cond, style)
        assert abs(is_full - (1 - cond - style)) < 0.06


def test_atomic_save_from_two_processes_at_once(tmp_path: Path) -> None:
    """Two runs side by side write the same cache file (the prompt cache of one corpus): neither
    may rename the other's temporary file away, and the file is always whole."""
    import subprocess
    import sys

    target, go = tmp_path / "prompts.pt", tmp_path / "go"
    script = (
        "import sys, time, torch\nfrom pathlib import Path\n"
        "from easel.runs import atomic_save\n"
        "x = {'x': torch.full((200_000,), float(sys.argv[2]))}; print('ready', flush=True)\n"
        "while not Path(sys.argv[3]).exists(): time.sleep(0.01)\n"
        "for i in range(100): atomic_save(x, Path(sys.argv[1]))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(target), str(k), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    for proc in procs:  # both have imported torch: start them writing together
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    go.unlink()
    assert torch.load(target)["x"][0].item() in (1.0, 2.0)
    assert [p.name for p in tmp_path.iterdir()] == ["prompts.pt"]  # no temporary file left


def test_train_sigmas_stay_in_the_range_and_the_whole_path_is_unchanged() -> None:
    from easel.diffusion.training import train_sigmas

    whole = train_sigmas(TrainConfig(batch_size=4096), torch.Generator().manual_seed(3))
    # The whole path is the logit-normal draw of before, number for number.
    old = torch.sigmoid(torch.randn(4096, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(whole, old)
    high = train_sigmas(TrainConfig(batch_size=4096, sigma_range=(0.6, 1.0)),
                        torch.Generator().manual_seed(3))
    assert float(high.min()) >= 0.6 and float(high.max()) <= 1.0
    assert torch.allclose(high, 0.6 + 0.4 * old)


def test_a_high_noise_expert_is_trained_and_exported_beside_its_model(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """--sigma-range 0.6,1 from a model: the export is that model (its UNet weight for weight)
    with the trained expert beside it, a card that counts the expert's own steps, and an id
    that names it; the pair generates."""
    import easel.diffusion.training as training
    from easel.diffusion import tiny
    from easel.diffusion.model_card import read_model_card
    from easel.diffusion.training import export_expert_model

    monkeypatch.setattr(training, "unet_config", lambda *_a, **_k: tiny.tiny_unet().config)
    data = tiny_set()
    vae = tiny_vae()
    enc = encode_training_set(data, vae, tmp_path, progress=False)
    config = TrainConfig(batch_size=4, warmup_steps=1, checkpoint_minutes=100)
    state = train_denoiser(enc, tmp_path / "base.pt", config, max_steps=6, progress=False)
    base = tmp_path / "base"
    export_base_model(base, state, vae, data, config)
    seen: list[torch.Tensor] = []
    real_loss = training.latent_velocity_loss

    def spy(unet, latents, noise, sigmas, emb, *rest):  # the real loss; it notes the noise levels
        seen.append(sigmas.detach().clone())
        return real_loss(unet, latents, noise, sigmas, emb, *rest)

    monkeypatch.setattr(training, "latent_velocity_loss", spy)
    expert_config = replace(config, sigma_range=(0.6, 1.0))
    expert = train_denoiser(enc, tmp_path / "expert.pt", expert_config, max_steps=10,
                            progress=False, init_from=base)
    assert float(torch.cat(seen).min()) >= 0.6
    out = tmp_path / "pair"
    export_expert_model(out, base, expert, expert.config, data.dataset_id, consent_events=3)
    card = read_model_card(out)
    # The id names the expert's own weights, as saved.
    assert card["model_id"] == read_model_card(base)["model_id"] + f"-h4w{weights_tag(expert.ema)}"
    record = card["high_noise_expert"]
    assert record["steps"] == 4 and record["samples"] == 16 and record["sigma"] == 0.6
    assert record["config"]["sigma_range"] == [0.6, 1.0] and "3 items" in record["consent"]
    assert card["training"]["steps"] == 6 and card["evaluation"] == {}
    pipe = load_pipeline(out, device="cpu")
    assert weights_tag(pipe.unet_high_noise) == weights_tag(expert.ema)
    before = load_pipeline(base, device="cpu")
    assert pipe.config.high_noise_sigma == 0.6
    for (name, a), b in zip(pipe.unet.state_dict().items(), before.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(pipe.unet_high_noise.state_dict().values(),
                                                      before.unet.state_dict().values(), strict=True))
    images = pipe("red square, test style", seeds=[0], num_inference_steps=4, upscale=False).images
    assert images[0].size == (64, 64)
    assert "High-noise expert" in (out / "MODEL_CARD.md").read_text()
    # An expert trained beside a pair replaces its expert: the id names one expert, not two.
    again = export_expert_model(tmp_path / "pair2", out, expert, expert.config, data.dataset_id)
    assert read_model_card(again)["model_id"] == card["model_id"]


def test_train_base_refuses_a_bad_sigma_range(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    env = {"EASEL_HOME": str(tmp_path / "home")}
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "config.json").write_text(json.dumps(
        {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
         "transformer_layers_per_block": [1, 1, 2]}))
    cases = [("0.6", "two numbers"), ("a,b", "two numbers"), ("0.8,0.6", "need 0 ≤ LO < HI ≤ 1"),
             ("-0.1,1", "need 0 ≤ LO < HI ≤ 1"), ("nan,1", "need 0 ≤ LO < HI ≤ 1"),
             ("0.2,0.8", "only a high-noise expert (LO,1)")]
    for value, message in cases:
        proc = run_cli("train", "base", "--init-from", str(model), "--out", str(tmp_path / "out"),
                       "--steps", "1", "--sigma-range", value, env=env)
        assert proc.returncode == 2 and message in proc.stderr, (value, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = run_cli("train", "base", "--init-from", str(model), "--out", str(model), "--steps", "1",
                   "--sigma-range", "0.6,1", env=env)
    assert proc.returncode == 2 and "--out must differ from --init-from" in proc.stderr, proc.stderr
    proc = run_cli("train", "base", "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "out"),
                   "--steps", "1", "--sigma-range", "0.6,1", env=env)
    assert proc.returncode == 2 and "only a high-noise expert" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home" / "easel.db").exists()


def test_the_card_says_where_the_denoiser_attends() -> None:
    from easel.diffusion.model_card import _attention_text

    assert _attention_text({"unet_transformer_layers": [1, 2, 2]}).endswith(
        "at 8×8 / 4×4: 2 / 2 (no attention at 16×16)")
    assert _attention_text({"unet_transformer_layers": [1, 2, 2], "unet_attention_16": True}).endswith(
        "at 16×16 / 8×8 / 4×4: 1 / 2 / 2")
    assert _attention_text({"unet_transformer_layers": [1, 2, 2], "unet_head_dim": 32}).endswith(
        "(no attention at 16×16), attention heads 32 channels wide")
    assert _attention_text({}) == ""
