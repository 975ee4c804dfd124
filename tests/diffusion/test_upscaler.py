"""The learned upscaler: tiny random-weight networks, real renders, and the shipped weights."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from easel.corpus.render import render_svg
from easel.diffusion.upscaler import (
    Degradation,
    EaselUpscaler,
    default_upscaler_dir,
    load_upscaler,
    prepare_input,
    psnr,
    upscale_images,
    upscaler_loss,
)
from easel.errors import BadInput, NotFound
from tests.conftest import run_cli

# Icons drawn for this test (not from any set): hard edges, outlines, small features.
TEST_SVGS = {
    "face": '<circle cx="8" cy="8" r="7" fill="#ffcc4d" stroke="#664500" stroke-width="0.6"/>'
            '<circle cx="5.5" cy="6.5" r="1" fill="#664500"/>'
            '<circle cx="10.5" cy="6.5" r="1" fill="#664500"/>'
            '<path d="M4.5 10 Q8 13 11.5 10" fill="none" stroke="#664500" stroke-width="0.7"/>',
    "heart": '<path d="M8 14L2 8a3 3 0 0 1 6-4a3 3 0 0 1 6 4z" fill="#dd2e44" stroke="#7a1020" '
             'stroke-width="0.5"/>',
    "star": '<polygon points="8,1 10,6 15,6 11,9.5 12.5,15 8,11.5 3.5,15 5,9.5 1,6 6,6" fill="#ffac33" '
            'stroke="#c1694f" stroke-width="0.4"/>',
    "flag": '<rect x="2" y="3" width="12" height="9" fill="#fff" stroke="#222" stroke-width="0.5"/>'
            '<rect x="2" y="3" width="4" height="9" fill="#009246"/><rect x="10" y="3" width="4" '
            'height="9" fill="#ce2b37"/><rect x="1.5" y="2" width="0.6" height="13" fill="#444"/>',
}


def _svg(body: str) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16" width="16" height="16">{body}</svg>'


def _tiny() -> EaselUpscaler:
    torch.manual_seed(0)
    model = EaselUpscaler(channels=4, num_blocks=1)
    # Give the zero-initialised tail some weight so outputs depend on it.
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    return model.eval()


def test_tiny_model_is_small_and_maps_64_to_256() -> None:
    model = _tiny()
    params = sum(p.numel() for p in model.parameters())
    assert params < 3000  # about 9 KB of weights
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 256, 256)
    assert torch.isfinite(y).all()


def test_fresh_model_is_exactly_bicubic() -> None:
    """The residual branch starts at zero, so an untrained network is a bicubic upscaler."""
    model = EaselUpscaler(channels=4, num_blocks=1).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        y = model(x)
    ref = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(y, ref, atol=1e-6)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = _tiny()
    model.save_pretrained(tmp_path / "up")
    assert (tmp_path / "up" / "config.json").is_file()
    assert (tmp_path / "up" / "diffusion_pytorch_model.safetensors").stat().st_size < 20_000
    loaded = EaselUpscaler.from_pretrained(tmp_path / "up").eval()
    assert loaded.config.channels == 4 and loaded.config.num_blocks == 1
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert load_upscaler(tmp_path / "up").config.channels == 4


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(1)
    model = EaselUpscaler(channels=8, num_blocks=1).train()
    torch.nn.init.normal_(model.tail.weight, std=0.05)  # start away from the bicubic optimum
    high_img = render_svg(_svg(TEST_SVGS["star"]), 128)
    low_img = render_svg(_svg(TEST_SVGS["star"]), 32)
    to_t = lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 127.5 - 1  # noqa: E731
    low, high = to_t(low_img), to_t(high_img)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = upscaler_loss(model, low, high, edge_weight=0.1).item()
    for _ in range(10):
        loss = upscaler_loss(model, low, high, edge_weight=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = upscaler_loss(model, low, high, edge_weight=0.1).item()
    assert last < 0.7 * first


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    model = _tiny()
    with pytest.raises(ValueError, match="sample must be"):
        model(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match="sample must be"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(BadInput, match="not a PIL image"):
        upscale_images(model, [np.zeros((64, 64, 3))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not 4"):
        upscaler_loss(model, torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 16, 16))
    with pytest.raises(NotFound, match="no upscaler weights"):
        load_upscaler(tmp_path)
    assert upscale_images(model, []) == []


def test_any_input_becomes_256_rgb() -> None:
    model = _tiny()
    rgba = Image.new("RGBA", (100, 40), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (10, 10, 30, 30))
    outs = upscale_images(model, [rgba, Image.new("L", (64, 64), 128), Image.new("RGB", (300, 300))])
    assert [o.size for o in outs] == [(256, 256)] * 3
    assert all(o.mode == "RGB" for o in outs)
    prepared = prepare_input(rgba)
    assert prepared.size == (64, 64)
    # Transparent areas become white; the wide picture is padded, not stretched.
    assert prepared.getpixel((0, 0)) == (255, 255, 255)
    assert prepared.getpixel((32, 2)) == (255, 255, 255)


def test_degradation_changes_pixels_but_keeps_shape() -> None:
    clean = np.asarray(render_svg(_svg(TEST_SVGS["face"]), 64))
    degraded = Degradation(p_roundtrip=1, p_blur=1, p_jpeg=1, p_noise=1).apply(clean, random.Random(0))
    assert degraded.shape == clean.shape and degraded.dtype == np.uint8
    assert 15.0 < psnr(degraded, clean) < 40.0


def test_cli_refuses_bad_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    proc = run_cli("upscale", str(text))
    assert proc.returncode == 2 and "not an image" in proc.stderr
    huge = tmp_path / "huge.png"
    Image.new("RGB", (5000, 10)).save(huge)
    proc = run_cli("upscale", str(huge))
    assert proc.returncode == 2 and "largest side" in proc.stderr
    proc = run_cli("upscale", str(tmp_path / "missing.png"))
    assert proc.returncode == 2 and "no such file" in proc.stderr


@pytest.mark.skipif(not (default_upscaler_dir() / "config.json").is_file(), reason="no shipped upscaler")
def test_shipped_upscaler_beats_bicubic() -> None:
    model = load_upscaler()
    assert sum(p.numel() for p in model.parameters()) <= 2_000_000
    lows = [render_svg(_svg(body), 64) for body in TEST_SVGS.values()]
    highs = [np.asarray(render_svg(_svg(body), 256)) for body in TEST_SVGS.values()]
    ours = upscale_images(model, lows)
    ours_psnr = np.mean([psnr(np.asarray(o), h) for o, h in zip(ours, highs, strict=True)])
    bicubic = np.mean([psnr(np.asarray(lo.resize((256, 256), Image.Resampling.BICUBIC)), h)
                       for lo, h in zip(lows, highs, strict=True)])
    assert ours_psnr > bicubic + 0.5, (ours_psnr, bicubic)


def test_cli_upscale_publishes_through_the_provenance_door(easel_home: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from easel.cli.main import app
    from easel.provenance.credentials import read_credentials

    _tiny().save_pretrained(tmp_path / "up")
    source = tmp_path / "icon.png"
    render_svg(_svg(TEST_SVGS["heart"]), 48).save(source)
    result = CliRunner().invoke(app, ["upscale", str(source), "--model", str(tmp_path / "up"),
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = list((tmp_path / "out").glob("*.png"))
    assert len(written) == 1 and str(written[0]) in result.output
    assert Image.open(written[0]).size == (256, 256)
    credentials = read_credentials(written[0].read_bytes())
    assert credentials is not None and credentials.intact
    from easel.diffusion.identity import weights_digest

    generation = credentials.generation
    assert generation is not None and generation["mode"] == "upscale"
    assert generation["model_sha256"] == weights_digest(tmp_path / "up", tmp_path / "c")


def _with_size(manifest: Path, root: Path, size: int) -> Path:
    """The synthetic corpus of ``manifest`` drawn again at ``size`` px, as a second build."""
    import pyarrow.parquet as pq

    table = pq.read_table(manifest)
    rows = table.to_pylist()
    for row in rows:
        picture = Image.open(manifest.parent / row["png_path"]).resize((size, size), Image.Resampling.LANCZOS)
        (root / row["png_path"]).parent.mkdir(parents=True, exist_ok=True)
        picture.save(root / row["png_path"])
        row["width"] = row["height"] = size
    out = root / "manifest.parquet"
    pq.write_table(table.from_pylist(rows, schema=table.schema), out)
    return out


def test_training_pauses_without_counting_it_stops_on_ctrl_c_with_its_checkpoint_and_resumes(
        tmp_path: Path) -> None:
    """`easel upscaler train`: a Ctrl-Z pause spends none of --minutes; Ctrl-C saves the
    checkpoint and ends with `Interrupted`, writing no model; the same call goes on from it."""
    from easel.diffusion.upscaler import TrainConfig, train_upscaler
    from tests.evaluation.conftest import write_synthetic_corpus
    from tests.signalling import paused_then_stopped

    low = write_synthetic_corpus(tmp_path / "64px")
    high = _with_size(low, tmp_path / "256px", 256)
    checkpoints, out = tmp_path / "ck", tmp_path / "upscaler"
    config = TrainConfig(batch_size=4, channels=4, num_blocks=1, warmup_steps=2, checkpoint_every_s=0.0)
    saved = paused_then_stopped(
        lambda: train_upscaler(low.parent, high.parent, out, minutes=1.0, checkpoint_dir=checkpoints,
                               progress=False, config=config),
        checkpoints / "upscaler-ckpt.pt")
    assert saved["step"] >= 1 and not out.exists()
    result = train_upscaler(low.parent, high.parent, out, minutes=(saved["elapsed"] + 0.5) / 60,
                            checkpoint_dir=checkpoints, progress=False, config=config)
    assert result.steps > saved["step"]
    assert (out / "training.json").exists()
