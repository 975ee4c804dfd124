"""`easel generate` end to end on tiny random models: the Easel pipeline and a diffusers
Stable Diffusion checkpoint, outputs leaving through the provenance door, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easel.audit.encoder import has_shipped
from easel.diffusion.identity import weights_digest
from easel.diffusion.tiny import save_tiny_pipeline, save_tiny_sd
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")
    (path / "model_card.json").write_text(json.dumps({"model_id": "tiny-test-model",
                                                      "dataset_id": "e" * 64}))
    return path


def test_generate_with_provenance(tiny_model: Path, tmp_path: Path) -> None:
    env = {"EASEL_HOME": str(tmp_path / "home")}
    out = tmp_path / "out"
    proc = run_cli("generate", "fox face", "--style", "twemoji", "-n", "2", "--seed", "7",
                   "--steps", "2", "--model-dir", str(tiny_model), "-o", str(out), env=env, check=True)
    files = sorted(out.glob("*.png"))
    assert len(files) == 2, proc.stdout
    assert "seed=7" in proc.stdout and "seed=8" in proc.stdout and "tiny-test-model" in proc.stdout
    verified = run_cli("verify", str(files[0]), env=env, check=True)
    assert "credentials" in verified.stdout.lower() and "tiny-test-model" in verified.stdout
    assert f"model_sha256: {weights_digest(tiny_model, tmp_path / 'c')}" in verified.stdout
    # The same seed reproduces the same pixels (before the per-output watermark differs).
    again = tmp_path / "again"
    run_cli("generate", "fox face", "--style", "twemoji", "-n", "1", "--seed", "7", "--steps", "2",
            "--model-dir", str(tiny_model), "-o", str(again), env=env, check=True)
    by_seed = {line.split("seed=")[1]: line.split()[0]
               for line in proc.stdout.splitlines() if "seed=" in line}
    a = Image.open(by_seed["7"]).convert("RGB")
    b = Image.open(next(again.glob("*.png"))).convert("RGB")
    # Only the invisible watermarks differ: each is embedded at TARGET_PSNR_DB against the same
    # unmarked picture, so the two are at most twice that RMSE apart (plus 8-bit rounding).
    # (A mean-difference bound of 3.0 used here failed now and then: two independent marks are
    # ~4 RMSE apart.) Another seed's picture is far outside the bound.
    from easel.provenance.watermark import TARGET_PSNR_DB

    mark_rmse = 255.0 / 10 ** (TARGET_PSNR_DB / 20)

    def rmse(x: Image.Image, y: Image.Image) -> float:
        return float(np.sqrt(np.mean((np.asarray(x, np.float32) - np.asarray(y, np.float32)) ** 2)))

    assert rmse(a, b) <= 2 * mark_rmse + 0.5
    assert rmse(a, Image.open(by_seed["8"]).convert("RGB")) > 2 * mark_rmse + 0.5


def test_two_models_with_one_id_are_told_apart(tiny_model: Path, tmp_path: Path) -> None:
    """Model ids can collide (two trainings, one id); the log names the weights as well."""
    from safetensors.torch import load_file, save_file

    from easel.provenance.log import by_id
    from easel.registry.store import registry_session

    twin = Path(shutil.copytree(tiny_model, tmp_path / "twin"))
    weights = twin / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights)
    env = {"EASEL_HOME": str(tmp_path / "home")}
    rows, files = {}, {}
    for model in (tiny_model, twin):
        proc = run_cli("generate", "fox face", "-n", "1", "--seed", "1", "--steps", "1", "--no-upscale",
                       "--model-dir", str(model), "-o", str(tmp_path / model.name), env=env, check=True)
        generation_id = proc.stdout.split("id=")[1].split()[0]
        files[model] = Path(proc.stdout.split()[0])
        with registry_session(f"sqlite:///{tmp_path / 'home' / 'easel.db'}") as session:
            row = by_id(session, generation_id)
            assert row is not None
            rows[model] = (row.model_id, row.model_sha256)
    assert rows[tiny_model][0] == rows[twin][0] == "tiny-test-model"
    assert rows[tiny_model][1] == weights_digest(tiny_model, tmp_path / "c")
    assert rows[twin][1] == weights_digest(twin, tmp_path / "c") != rows[tiny_model][1]
    # `easel verify --model-dir` says which folder holds the weights that made an image.
    same = run_cli("verify", str(files[twin]), "--model-dir", str(twin), env=env, check=True)
    assert "weights:             match" in same.stdout
    assert f"model:               {twin} (matched by its weights)" in same.stdout  # what it learned from
    other = run_cli("verify", str(files[twin]), "--model-dir", str(tiny_model), "--json", env=env,
                    check=True)
    assert json.loads(other.stdout)["weights"]["match"] is False
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run_cli("verify", str(files[twin]), "--model-dir", str(empty), env=env)
    assert refused.returncode == 2 and "holds no weight files" in refused.stderr


def test_generate_img2img_and_inpaint(tiny_model: Path, tmp_path: Path) -> None:
    env = {"EASEL_HOME": str(tmp_path / "home")}
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)
    out = tmp_path / "out"
    run_cli("generate", "red heart", "-n", "1", "--steps", "2", "--init-image", str(init),
            "--strength", "0.5", "--mask", str(mask), "--model-dir", str(tiny_model), "-o", str(out),
            "--no-upscale", env=env, check=True)
    assert len(list(out.glob("*.png"))) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["", "-n", "1"], "prompt"),
    (["x" * 10_000, "-n", "1"], "characters long"),
    (["fox", "--style", "vangogh"], "unknown style 'vangogh'"),
    (["fox", "--steps", "0"], "--steps"),
    (["fox", "--steps", "10000"], "--steps"),
    (["fox", "--init-image", "INIT", "--strength", "-0.5"], "strength"),
    (["fox", "--init-image", "INIT", "--mask", "SMALLMASK"], "--mask is (32, 32)"),
    (["fox", "--init-image", "NOTIMAGE"], "--init-image"),
    (["fox", "--classifier-guidance", "-1"], "--classifier-guidance must be between 0 and"),
])
def test_generate_bad_input(tiny_model: Path, tmp_path: Path, args: list[str], message: str) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    small = tmp_path / "small.png"
    Image.new("L", (32, 32), 255).save(small)
    notimage = tmp_path / "notes.png"
    notimage.write_text("hello")
    subst = {"INIT": str(init), "SMALLMASK": str(small), "NOTIMAGE": str(notimage)}
    args = [subst.get(a, a) for a in args]
    out = tmp_path / "out"
    proc = run_cli("generate", *args, "--model-dir", str(tiny_model), "-o", str(out),
                   env={"EASEL_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not out.exists() or not list(out.iterdir())


def test_model_path_that_is_not_a_model(tmp_path: Path) -> None:
    env = {"EASEL_HOME": str(tmp_path / "home")}
    proc = run_cli("generate", "fox", "--model", str(tmp_path), env=env)
    assert proc.returncode == 2 and "not a diffusers model directory" in proc.stderr
    proc = run_cli("generate", "fox", "--model-dir", str(tmp_path), env=env)
    assert proc.returncode == 2 and "not an Easel model directory" in proc.stderr


def test_stable_diffusion_checkpoint_through_diffusers(tmp_path: Path) -> None:
    sd = save_tiny_sd(tmp_path / "tiny-sd")
    env = {"EASEL_HOME": str(tmp_path / "home")}
    out = tmp_path / "out"
    proc = run_cli("generate", "a fox", "--model", str(sd), "-n", "1", "--steps", "2", "--seed", "3",
                   "-o", str(out), env=env, check=True)
    files = list(out.glob("*.png"))
    assert len(files) == 1 and str(sd) in proc.stdout
    verified = run_cli("verify", str(files[0]), env=env, check=True)
    assert str(sd) in verified.stdout
    assert f"model_sha256: {weights_digest(sd, tmp_path / 'c')}" in verified.stdout


@pytest.mark.skipif(not has_shipped(), reason="no shipped descriptor encoder")
def test_a_near_copy_of_a_registered_work_is_regenerated_once_then_refused(tiny_model: Path,
                                                                           tmp_path: Path) -> None:
    from easel.registry.service import add_artist, register_work
    from easel.registry.store import registry_session

    home = tmp_path / "home"
    env = {"EASEL_HOME": str(home)}
    args = ["generate", "fox face", "-n", "1", "--steps", "2", "--model-dir", str(tiny_model)]
    first = tmp_path / "first"
    run_cli(*args, "--seed", "8", "-o", str(first), env=env, check=True)
    run_cli(*args, "--seed", "9", "-o", str(first / "nine"), env=env, check=True)
    eight, nine = next(first.glob("*.png")), next((first / "nine").glob("*.png"))
    # The premise: seed 9's picture is not a near-copy of seed 8's. (A random-weight model's
    # pictures look much alike to the copy head: seed 8's picture scores 0.95 against seed 7's.)
    from PIL import Image

    from easel.audit.encoder import best_view_scores, describe, describe_references, load_encoder
    from easel.audit.thresholds import NEAR_COPY_THRESHOLD

    encoder = load_encoder()
    views = describe_references(encoder, [Image.open(eight)])[0].numpy()
    assert best_view_scores(describe(encoder, [Image.open(nine)]).copy.numpy(), views)[0, 0] \
        < NEAR_COPY_THRESHOLD
    url = f"sqlite:///{home / 'easel.db'}"
    with registry_session(url) as session:
        ann = add_artist(session, "ann", "Ann")[1]
    # Ann's registered work is the very picture seed 8 draws: seed 8 is refused and redrawn
    # from seed 9 (the next seed after the batch), which is not a near-copy.
    register_work(url, eight.read_bytes(), "ann", ann, "eight", "CC-BY-4.0")
    out = tmp_path / "out"
    proc = run_cli(*args, "--seed", "8", "-o", str(out), env=env, check=True)
    assert "seed 8: output refused: it is a near-copy of registered work" in proc.stderr
    assert "regenerating once with seed 9" in proc.stderr and "seed=9" in proc.stdout
    assert len(list(out.glob("*.png"))) == 1
    # With seed 9's picture registered too, the second try is refused as well: nothing published.
    register_work(url, nine.read_bytes(), "ann", ann, "nine", "CC-BY-4.0")
    refused = tmp_path / "refused"
    proc = run_cli(*args, "--seed", "8", "-o", str(refused), env=env)
    assert proc.returncode != 0 and "near-copy" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(refused.glob("*.png"))
