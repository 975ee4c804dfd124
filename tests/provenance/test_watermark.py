"""The watermark on its own: round trip, PSNR, attacks, unmarked images, the code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from easel.errors import BadInput
from easel.provenance import watermark as wm

GID = "5eed0123abcd"


@pytest.fixture(scope="module")
def marked(face: Image.Image) -> Image.Image:
    return wm.embed(face, GID)


def test_round_trip_and_psnr(face: Image.Image, marked: Image.Image) -> None:
    assert wm.psnr(np.asarray(marked), np.asarray(face)) >= 38.0
    assert wm.detect(marked).generation_id == GID


@pytest.mark.parametrize("attack", ["jpeg50", "half", "crop", "brightness"])
def test_survives_attacks(marked: Image.Image, attack: str) -> None:
    if attack == "jpeg50":
        buf = io.BytesIO()
        marked.save(buf, "JPEG", quality=50)
        attacked = Image.open(buf)
    elif attack == "half":
        attacked = marked.resize((128, 128), Image.Resampling.BILINEAR).resize((256, 256))
    elif attack == "crop":
        attacked = marked.crop((13, 7, 13 + 230, 7 + 230))  # 10 % off each side, off-grid
    else:
        attacked = ImageEnhance.Contrast(ImageEnhance.Brightness(marked).enhance(0.85)).enhance(1.15)
    assert wm.detect(attacked).generation_id == GID


def test_unmarked_and_flat_images_carry_nothing(face: Image.Image, house: Image.Image) -> None:
    assert wm.detect(face).generation_id is None
    assert wm.detect(house).generation_id is None
    assert wm.detect(Image.new("RGB", (128, 128), "white")).generation_id is None
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    assert wm.detect(Image.fromarray(noise)).generation_id is None


def test_another_key_reads_nothing(marked: Image.Image) -> None:
    assert wm.detect(marked, key="someone-else").generation_id is None


def test_rgba_keeps_alpha(face: Image.Image) -> None:
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    out = wm.embed(rgba, GID)
    assert out.mode == "RGBA" and set(np.asarray(out)[..., 3].ravel()) == {200}
    assert wm.detect(out).generation_id == GID


def test_viterbi_corrects_flipped_soft_bits() -> None:
    coded = wm._conv_encode(np.concatenate([wm._id_bits(GID), wm._crc16(wm._id_bits(GID))]))
    soft = 1.0 - 2.0 * coded
    soft[[3, 20, 41, 77, 110]] *= -1  # five hard errors, spread out
    word = wm._viterbi(soft)
    assert wm._bits_id(word[: wm.PAYLOAD_BITS]) == GID


def test_bad_ids_and_small_images_are_refused(face: Image.Image) -> None:
    with pytest.raises(BadInput, match="hex digits"):
        wm.embed(face, "not-hex")
    with pytest.raises(BadInput, match="at least 64x64"):
        wm.embed(face.resize((40, 40)), GID)
