"""Which weights made an image: one digest of a model folder's weight files.

A model id names a model, but two trainings can carry one id (two branches of one run have
done so); the digest names the weights themselves. It is the sha256 of the listing that
``sha256sum`` prints for the folder's weight files (``*.safetensors``, ``*.bin``, ``*.ckpt``,
``*.pt``, ``*.pth``, at any depth), sorted by path, so anyone holding the folder can recompute
it without Easel::

    cd MODEL_DIR && find -L . -type f \\( -name '*.safetensors' -o -name '*.bin' -o -name '*.ckpt' \\
        -o -name '*.pt' -o -name '*.pth' \\) -printf '%P\\n' | LC_ALL=C sort \\
        | xargs -d '\\n' sha256sum | sha256sum

Big files (a Stable Diffusion UNet is gigabytes) are hashed once: their digests are kept under
``EASEL_HOME/cache/weights-sha256.json`` by path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from easel.corpus.sources import sha256_file
from easel.errors import BadInput

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
CACHE_MIN_BYTES = 64 << 20  # smaller files hash faster than a cache look-up is worth


def weight_files(folder: Path) -> list[str]:
    """The folder's weight files as paths relative to it, sorted as ``LC_ALL=C sort`` sorts."""
    found = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
             if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    return sorted(found, key=lambda rel: rel.encode())


def _cache_path(cache_dir: Path | None) -> Path | None:
    if cache_dir is not None:
        return cache_dir / "weights-sha256.json"
    from easel.config import get_settings

    return get_settings().home / "cache" / "weights-sha256.json"


def _read_cache(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache is only a slower hash
    return data if isinstance(data, dict) else {}


def _file_digest(path: Path, cache: dict[str, str]) -> tuple[str, bool]:
    """(sha256 of ``path``, whether ``cache`` gained an entry)."""
    stat = path.stat()
    if stat.st_size < CACHE_MIN_BYTES:
        return sha256_file(path), False
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key in cache:
        return cache[key], False
    log.info("hashing %s (%.1f GB, once)", path, stat.st_size / 1e9)
    cache[key] = sha256_file(path)
    return cache[key], True


def weights_digest(folder: Path, cache_dir: Path | None = None) -> str:
    """The digest of ``folder``'s weight files (see the module docstring for its definition).

    Raises ``BadInput`` when the folder holds no weight file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder} is not a folder" if folder.exists() else f"{folder} does not exist",
                       hint="give a model folder (an Easel model or a diffusers checkpoint)")
    files = weight_files(folder)
    if not files:
        raise BadInput(f"{folder} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})",
                       hint="give a model folder (an Easel model or a diffusers checkpoint)")
    cache_file = _cache_path(cache_dir)
    cache = _read_cache(cache_file)
    listing = []
    grew = False
    for rel in files:
        digest, added = _file_digest(folder / rel, cache)
        grew = grew or added
        listing.append(f"{digest}  {rel}\n")
    if grew and cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=0))
            os.replace(tmp, cache_file)
        except OSError as exc:  # an unwritable home costs a re-hash next time, not the image
            log.warning("could not keep the weights digest cache %s: %s", cache_file, exc)
    return hashlib.sha256("".join(listing).encode()).hexdigest()


def checkpoint_folder(path_or_id: str) -> Path | None:
    """The local folder of a diffusers checkpoint given as a folder or as a model id already in
    the Hugging Face cache (no network); None when it cannot be found."""
    local = Path(path_or_id)
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path_or_id, local_files_only=True))
    except (OSError, ValueError):  # not in the local cache, or not a valid model id
        return None


__all__ = ["checkpoint_folder", "weight_files", "weights_digest"]
