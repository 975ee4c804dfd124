"""The weights digest that provenance records: its definition (reproduced with ``sha256sum``),
what changes it and what does not, the cache of big files' digests, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from easel.diffusion import identity
from easel.diffusion.identity import checkpoint_folder, weight_files, weights_digest
from easel.errors import BadInput


def _model(root: Path) -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "vae").mkdir()
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"unet weights " * 100)
    (root / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"vae weights " * 50)
    (root / "text.bin").write_bytes(b"\x00\x01\x02")
    (root / "model_card.json").write_text(json.dumps({"model_id": "m"}))
    (root / "unet" / "config.json").write_text("{}")
    return root


def test_the_digest_is_sha256sum_of_the_sorted_weight_files(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    assert weight_files(model) == ["text.bin", "unet/diffusion_pytorch_model.safetensors",
                                   "vae/diffusion_pytorch_model.safetensors"]
    listing = "".join(f"{hashlib.sha256((model / rel).read_bytes()).hexdigest()}  {rel}\n"
                      for rel in weight_files(model))
    expected = hashlib.sha256(listing.encode()).hexdigest()
    assert weights_digest(model, tmp_path / "cache") == expected
    if shutil.which("sha256sum") and shutil.which("find"):  # the recipe the docstring gives
        shell = ("find -L . -type f \\( -name '*.safetensors' -o -name '*.bin' -o -name '*.ckpt' "
                 "-o -name '*.pt' -o -name '*.pth' \\) -printf '%P\\n' | LC_ALL=C sort "
                 "| xargs -d '\\n' sha256sum | sha256sum")
        out = subprocess.run(["bash", "-c", shell], cwd=model, capture_output=True, text=True, check=True)
        assert out.stdout.split()[0] == expected


def test_weights_change_the_digest_and_cards_do_not(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    first = weights_digest(model, tmp_path / "cache")
    (model / "model_card.json").write_text(json.dumps({"model_id": "renamed"}))
    (model / "unet" / "config.json").write_text('{"a": 1}')
    assert weights_digest(model, tmp_path / "cache") == first
    twin = shutil.copytree(model, tmp_path / "twin")
    assert weights_digest(twin, tmp_path / "cache") == first  # same weights elsewhere: same digest
    blob = twin / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(blob.read_bytes())
    data[5] ^= 1
    blob.write_bytes(bytes(data))
    assert weights_digest(twin, tmp_path / "cache") != first
    (model / "vae" / "diffusion_pytorch_model.safetensors").rename(model / "vae" / "other.safetensors")
    assert weights_digest(model, tmp_path / "cache") != first  # the paths are part of it


def test_big_files_are_hashed_once_and_again_when_they_change(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "CACHE_MIN_BYTES", 0)
    model = _model(tmp_path / "m")
    cache_dir = tmp_path / "cache"
    honest = weights_digest(model, cache_dir)
    cache_file = cache_dir / "weights-sha256.json"
    cache = json.loads(cache_file.read_text())
    assert len(cache) == 3
    # The cache is what is read: a planted entry for the unchanged file is used...
    blob = model / "unet" / "diffusion_pytorch_model.safetensors"
    key = next(k for k in cache if k.startswith(f"{blob.resolve()}|"))
    cache[key] = "0" * 64
    cache_file.write_text(json.dumps(cache))
    assert weights_digest(model, cache_dir) != honest
    # ...and a file whose modification time changed is hashed again.
    stat = blob.stat()
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert weights_digest(model, cache_dir) == honest
    cache_file.write_text("not json")  # a damaged cache costs a re-hash, not an error
    assert weights_digest(model, cache_dir) == honest


def test_a_folder_without_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model_card.json").write_text("{}")
    with pytest.raises(BadInput, match="holds no weight files"):
        weights_digest(tmp_path / "empty", tmp_path / "cache")
    with pytest.raises(BadInput, match="does not exist"):
        weights_digest(tmp_path / "missing", tmp_path / "cache")
    with pytest.raises(BadInput, match="is not a folder"):
        weights_digest(tmp_path / "empty" / "model_card.json", tmp_path / "cache")


def test_checkpoint_folder_is_local_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert checkpoint_folder(str(tmp_path)) == tmp_path
    assert checkpoint_folder("no-such-org/no-such-model") is None  # not cached, and no network


def test_the_verify_verdict_says_what_the_record_rests_on(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from easel.cli.provenance import _weights_check

    def check(found: str | None, state: str | None, recorded: str | None, folder: str) -> dict:
        provenance = {"model_id": "m", "model_sha256": recorded} if found else None
        result = SimpleNamespace(found=found, credentials_state=state, provenance=provenance)
        out = _weights_check(result, tmp_path, folder)
        assert out is not None
        return out

    assert _weights_check(SimpleNamespace(found=None, provenance=None), None, None) is None
    trusted = check("credentials", "Trusted", "a" * 64, "a" * 64)
    assert trusted["match"] is True and trusted["verdict"].endswith("made this image")
    claimed = check("credentials", "Valid", "a" * 64, "a" * 64)
    assert claimed["match"] is True and "signer is not in the trust list" in claimed["verdict"]
    likeness = check("fingerprint", None, "a" * 64, "a" * 64)
    assert likeness["match"] is True and "found by fingerprint only" in likeness["verdict"]
    assert check("watermark", None, "a" * 64, "b" * 64)["match"] is False
    assert check("watermark", None, None, "b" * 64)["match"] is None  # logged before the digest
    assert check(None, None, None, "b" * 64)["verdict"].startswith("not compared")
