"""The style palette: it keeps each style's most frequent colours, paints only near pixels of
pictures in a style it knows, rides in the pipeline (inside the mask for inpainting), and
round-trips with the model, its consent check and its card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from easel.diffusion.palette import StylePalette, build_palette, export_palette, most_frequent_colours
from easel.diffusion.pipeline import load_pipeline
from easel.diffusion.tiny import tiny_pipeline
from easel.diffusion.training import weights_tag
from easel.errors import BadInput

RED, GREEN, BLUE, WHITE = (200, 30, 40), (30, 160, 60), (20, 40, 200), (255, 255, 255)


def _image(fills: list[tuple[tuple[int, int, int], int]], size: int = 8) -> np.ndarray:
    """``uint8 [size x size x 3]`` whose first pixels take each colour as many times as given,
    the rest white."""
    flat = np.full((size * size, 3), 255, np.uint8)
    start = 0
    for colour, count in fills:
        flat[start:start + count] = colour
        start += count
    return flat.reshape(size, size, 3)


def test_the_palette_keeps_each_styles_most_frequent_colours_in_order() -> None:
    noto = np.stack([_image([(RED, 20), (GREEN, 5)]), _image([(RED, 10), (BLUE, 8)])])
    twemoji = _image([(BLUE, 40)])[None]
    palette = build_palette(np.concatenate([noto, twemoji]), ["noto style", "noto style", "twemoji style"],
                            colours=3)
    assert palette.tags == ["noto style", "twemoji style"]
    # noto: white 103 pixels, red 30, blue 8 (green's 5 is fourth and left out)
    assert palette.colours_of("noto style").tolist() == [list(WHITE), list(RED), list(BLUE)]
    # twemoji has two colours: the most frequent one fills the third place
    assert palette.colours_of("twemoji style").tolist() == [list(BLUE), list(WHITE), list(BLUE)]
    # a tie goes to the smaller RGB value, so two builds from the same data agree
    tie = most_frequent_colours(_image([(RED, 32), (BLUE, 32)])[None], 2)
    assert tie.tolist() == [list(BLUE), list(RED)]


def _palette(strength: float = 1.0, radius: float = 60.0) -> StylePalette:
    data = np.stack([_image([(RED, 30)]), _image([(BLUE, 30)])])
    return build_palette(data, ["noto style", "twemoji style"], colours=2, strength=strength, radius=radius)


def test_painting_moves_near_pixels_onto_the_asked_styles_colours_and_nothing_else() -> None:
    near_red, far, off_white = (215, 45, 30), (120, 120, 120), (250, 250, 245)  # far: > 60 from all
    picture = _image([(near_red, 10), (far, 10), (off_white, 4)])
    pictures = np.stack([picture] * 4)
    palette = _palette()
    assert palette.colours_of("noto style")[0].tolist() == list(WHITE)  # the canvas comes first
    out = palette.paint(pictures, ["noto style", "twemoji style", None, "openmoji style"])
    # noto: the near-red pixels become red; the grey is left as drawn, and so is the off-white,
    # whose nearest colour is the canvas
    assert (out[0].reshape(-1, 3)[:10] == RED).all() and (out[0].reshape(-1, 3)[20:24] == off_white).all()
    assert (out[0].reshape(-1, 3)[10:20] == far).all()
    # twemoji's palette is blue and white: near-red is 60+ from both, so it stays
    assert (out[1].reshape(-1, 3)[:10] == near_red).all()
    # no tag, or a tag the palette does not know: untouched
    assert np.array_equal(out[2], picture) and np.array_equal(out[3], picture)
    half = palette.paint(pictures[:1], ["noto style"], strength=0.5)
    assert half[0].reshape(-1, 3)[0].tolist() == [208, 38, 35]  # halfway, rounded
    assert np.array_equal(palette.paint(pictures[:1], ["noto style"], strength=0.0)[0], picture)
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 0, :4] = True  # the first four pixels only
    masked = palette.paint(pictures[:1], ["noto style"], masks=mask)[0].reshape(-1, 3)
    assert (masked[:4] == RED).all() and (masked[4:10] == near_red).all()
    assert np.array_equal(pictures[0], picture)  # the input is not changed in place


def test_palette_refusals() -> None:
    with pytest.raises(BadInput, match="strength"):
        _palette().paint(np.zeros((1, 4, 4, 3), np.uint8), ["noto style"], strength=1.5)
    with pytest.raises(BadInput, match="1 style tags for 2 images"):
        _palette().paint(np.zeros((2, 4, 4, 3), np.uint8), ["noto style"])
    with pytest.raises(BadInput, match="uint8"):
        _palette().paint(np.zeros((1, 4, 4, 3), np.float32), ["noto style"])
    with pytest.raises(BadInput, match="none of the images has a style tag"):
        build_palette(np.zeros((1, 4, 4, 3), np.uint8), [""])
    with pytest.raises(BadInput, match="radius"):
        StylePalette(style_tags=["a style"], radius=0.0)


def test_the_pipeline_paints_styled_prompts_only_and_inside_the_mask() -> None:
    from PIL import Image

    pipe = tiny_pipeline()
    kwargs = {"seeds": [1, 2], "num_inference_steps": 2, "upscale": False}
    prompts = ["fox face, noto style", "fox face"]
    plain = pipe(prompts, **kwargs)
    # a palette of the colours the tiny model draws most, behind a canvas colour it does not
    # draw, so that painting moves many pixels
    drawn = np.stack([np.asarray(im) for im in plain.images])
    source = np.concatenate([drawn[:1] // 16 * 16, np.zeros((4, 64, 64, 3), np.uint8)])
    palette = build_palette(source, ["noto style"] * 5, colours=8, radius=80.0)
    assert palette.colours_of("noto style")[0].tolist() == [0, 0, 0]
    pipe.register_modules(style_palette=palette)
    painted = pipe(prompts, **kwargs)
    first = np.asarray(painted.images[0]).reshape(-1, 3).astype(int)
    assert not np.array_equal(first, drawn[0].reshape(-1, 3))
    colours = palette.colours_of("noto style").astype(int)
    dist = np.sqrt(((drawn[0].reshape(-1, 3)[:, None].astype(int) - colours[None]) ** 2).sum(-1))
    moved = (dist.min(1) < 80.0) & (dist.argmin(1) != 0)
    assert moved.any()
    # each near pixel is now a palette colour
    assert (first[moved][:, None] == colours[None]).all(-1).any(-1).all()
    assert np.array_equal(first[~moved], drawn[0].reshape(-1, 3)[~moved])  # far ones are as drawn
    assert np.array_equal(np.asarray(painted.images[1]), drawn[1])  # no style tag: as drawn
    assert painted.parameters["palette_strength"] == 1.0
    off = pipe(prompts, palette_strength=0.0, **kwargs)
    assert np.array_equal(np.asarray(off.images[0]), drawn[0]) and "palette_strength" not in off.parameters
    # inpainting: painted inside the mask only
    init = Image.fromarray(drawn[0])
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    kw = {"seeds": [1], "num_inference_steps": 2, "upscale": False, "image": init,
          "mask_image": Image.fromarray(mask)}
    inpaint_plain = np.asarray(pipe("fox face, noto style", palette_strength=0.0, **kw).images[0])
    inpaint = np.asarray(pipe("fox face, noto style", **kw).images[0])
    assert np.array_equal(inpaint[:, 32:], inpaint_plain[:, 32:])
    assert not np.array_equal(inpaint[:, :32], inpaint_plain[:, :32])
    with pytest.raises(BadInput, match="palette_strength"):
        pipe(prompts, palette_strength=2.0, **kwargs)


def _tiny_model_dir(path: Path) -> Path:
    from easel.diffusion.training import write_pipeline_dir

    card = {"model_id": "easel-embedded-test-s10-d5", "summary": "tiny", "easel_version": "test",
            "dataset_id": "d" * 64, "sources": [], "objective": "",
            "training": {"items": 3, "held_out_sets": [], "steps": 10, "samples": 40, "seconds": 1.0,
                         "cpu_seconds": 1.0, "device": "cpu", "final_loss": 0.5, "unet_parameters": 1,
                         "vae_parameters": 1, "vae_val_psnr": None, "config": {"batch_size": 4}},
            "evaluation": {"val": {"style": 0.5}}}
    return write_pipeline_dir(path, tiny_pipeline(), card, lambda staging: None)


def test_an_exported_palette_saves_loads_is_named_and_counts_in_the_weights_digest(tmp_path: Path) -> None:
    from easel.diffusion.identity import weights_digest
    from easel.diffusion.model_card import read_model_card

    base = _tiny_model_dir(tmp_path / "base")
    palette = _palette(strength=0.75)
    out = export_palette(tmp_path / "painted", base, palette, "e" * 64, items=2, consent_events=2)
    card = read_model_card(out)
    assert card["model_id"] == f"easel-embedded-test-s10-p2w{weights_tag(palette)}-d5"
    record = card["style_palette"]
    assert record["colours"] == 2 and record["strength"] == 0.75 and record["dataset_id"] == "e" * 64
    assert record["from_model"] == "easel-embedded-test-s10-d5" and "2 items" in record["consent"]
    assert card["evaluation"] == {}
    assert "## Style palette" in (out / "MODEL_CARD.md").read_text()
    pipe = load_pipeline(out, device="cpu")
    assert pipe.style_palette.tags == ["noto style", "twemoji style"]
    assert np.array_equal(pipe.style_palette.colours_of("noto style"), palette.colours_of("noto style"))
    assert pipe.palette_strength_in_force() == 0.75 and pipe.palette_strength_in_force(0.0) == 0.0
    assert load_pipeline(base, device="cpu").palette_strength_in_force(1.0) == 0.0
    assert weights_digest(out, tmp_path / "cache") != weights_digest(base, tmp_path / "cache")
    # exported again over itself: replaced, one palette part in the id
    export_palette(out, out, _palette(), "e" * 64, items=2)
    assert read_model_card(out)["model_id"] == f"easel-embedded-test-s10-p2w{weights_tag(_palette())}-d5"


def test_train_palette_refuses_bad_options_before_touching_anything(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    env = {"EASEL_HOME": str(tmp_path / "home")}
    model = _tiny_model_dir(tmp_path / "model")
    cases = [(["--init-from", str(model), "--colours", "0"], "--colours must be between"),
             (["--init-from", str(model), "--strength", "2"], "--strength"),
             (["--init-from", str(model), "--radius", "0"], "--radius must be above 0"),
             (["--init-from", str(tmp_path / "nothing")], "not an Easel model directory")]
    for args, message in cases:
        proc = run_cli("train", "palette", "--out", str(tmp_path / "out"), *args, env=env)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()
    proc = run_cli("generate", "fox face", "--palette-strength", "-0.5", env=env)
    assert proc.returncode == 2 and "--palette-strength" in proc.stderr, proc.stderr


def test_train_palette_on_a_consented_manifest_and_generate_records_the_strength(
        easel_home: Path, fixture_packages: dict, tmp_path: Path) -> None:
    from easel.corpus.manifest import load_manifest
    from easel.corpus.sources import fetch_sources
    from easel.diffusion.model_card import read_model_card
    from tests.conftest import run_cli

    fetch_sources(easel_home / "sources", [fixture_packages["alpha"]])
    run_cli("registry", "import-corpus", check=True)
    run_cli("corpus", "build", "--size", "64", "--purpose", "train_base", check=True)
    dataset_id = load_manifest(easel_home / "corpus" / "64px").schema.metadata[b"dataset_id"].decode()
    model = _tiny_model_dir(tmp_path / "model")
    out = tmp_path / "painted"
    proc = run_cli("train", "palette", "--init-from", str(model), "--out", str(out), "--colours", "4",
                   check=True)
    assert "palette: 4 colours for each of 1 styles" in proc.stdout, proc.stdout
    card = read_model_card(out)
    assert card["style_palette"]["style_tags"] == ["alpha style"]
    assert card["style_palette"]["dataset_id"] == dataset_id
    assert "easel-embedded-test-s10-p4w" in card["model_id"]
    assert "easel-embedded-test-s10-p4w" in run_cli("registry", "affected", "--artist", "alpha",
                                                    check=True).stdout
    for extra, recorded in (([], '"palette_strength": 1.0'), (["--palette-strength", "0"], None)):
        gen_out = tmp_path / f"out{len(extra)}"
        run_cli("generate", "fox face, alpha style", "-n", "1", "--seed", "3", "--steps", "2",
                "--no-upscale", "--model-dir", str(out), "-o", str(gen_out), *extra, check=True)
        shown = run_cli("verify", str(next(gen_out.glob("*.png"))), check=True).stdout
        if recorded:
            assert recorded in shown, shown
        else:
            assert "palette_strength" not in shown, shown
