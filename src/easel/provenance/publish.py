"""The one door every generated image leaves through (STYLE.md rule 4).

``publish_image`` runs, in order: (1) check inputs, (2) the output guard (the plagiarism
guard's place), (3) the optional visible badge, (4) the invisible watermark carrying the
generation id, (5) the final PNG encoding, (6) the C2PA signature over those final bytes,
(7) the file write and (8) the generation-log row, in one transaction. No other function
writes a generated image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from easel import __version__
from easel.config import Settings, get_settings
from easel.errors import BadInput, EaselError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

MODES = ("txt2img", "img2img", "inpaint", "upscale")
WATERMARK_SCHEME = "easel-ss-v1"
"""Name of the watermark design (``easel.provenance.watermark``) recorded in each manifest."""


@dataclass
class GenerationInfo:
    """What made an image: the generator fills this in and hands it to ``publish_image``."""

    prompt: str
    mode: str  # "txt2img" | "img2img" | "inpaint" | "upscale"
    model_id: str  # e.g. "easel-embedded-0.1" or a checkpoint path
    dataset_id: str | None  # the training manifest hash the model card names
    seed: int | None
    parameters: dict[str, Any]  # steps, guidance, strength, size, scheduler, ...
    style: str | None = None  # e.g. "twemoji style" or "artist:alice"
    # easel.diffusion.identity.weights_digest of the model folder: names the weights, which an
    # id alone does not (two trainings can share one id); None where no folder is known.
    model_sha256: str | None = None
    style_artist: str | None = None
    style_attribution: str | None = None
    include_prompt: bool = False  # prompt goes into the C2PA manifest only if True
    visible_mark: bool = False
    allow_training: bool = False  # the cawg.training-mining assertion: notAllowed unless True
    # Called inside the generation-log transaction with (session, generation id), e.g. to add a
    # personal style's credit row; raising there publishes nothing.
    on_log: Callable[[Session, str], None] | None = None


@dataclass
class PublishedImage:
    """The written file, its generation id (= watermark payload), content hash and fingerprint."""

    path: Path
    generation_id: str
    sha256: str
    pdq: str
    watermarked: bool
    manifest_label: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)


def _check(image: Image.Image, info: GenerationInfo) -> None:
    if not isinstance(image, Image.Image):
        raise BadInput(f"publish_image needs a PIL image, got {type(image).__name__}")
    if info.mode not in MODES:
        raise BadInput(f"mode {info.mode!r} is not one of {', '.join(MODES)}")
    if not info.model_id:
        raise BadInput("model_id is empty: every output must name the model that made it")
    if min(image.size) < 1:
        raise BadInput(f"image is {image.width}x{image.height}: nothing to publish")


def _output_guard(image: Image.Image, info: GenerationInfo, settings: Settings) -> Image.Image:
    """The plagiarism guard: compare ``image`` with the registry (one copy-descriptor pass and
    one FAISS search, ``easel.audit.guard.output_guard``) and raise ``PermissionDenied`` naming
    the matched work for a near-copy, or return the image. Skips, logging why, when there is
    no encoder or no registered work to compare with."""
    from easel.audit.guard import output_guard

    return output_guard(image, settings.db_url)


def new_generation_id() -> str:
    """A fresh 48-bit id as 12 hex digits (the watermark payload)."""
    return secrets.token_hex(6)


def generation_record(generation_id: str, info: GenerationInfo, watermarked: bool) -> dict[str, Any]:
    """The ``org.easel.generation`` assertion: the prompt only when ``include_prompt``."""
    from easel.provenance import watermark

    record: dict[str, Any] = {
        "generation_id": generation_id,
        "mode": info.mode,
        "model_id": info.model_id,
        "model_sha256": info.model_sha256,
        "dataset_id": info.dataset_id,
        "seed": info.seed,
        "parameters": info.parameters,
        "watermark": ({"scheme": WATERMARK_SCHEME, "payload": generation_id,
                       "payload_bits": watermark.PAYLOAD_BITS} if watermarked else None),
        "visible_mark": info.visible_mark,
        "generator": {"name": "Easel", "version": __version__},
    }
    if info.style or info.style_artist:
        record["style"] = {"name": info.style, "artist": info.style_artist,
                           "attribution": info.style_attribution}
    if info.include_prompt:
        record["prompt"] = info.prompt
    return record


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def publish_image(image: Image.Image, info: GenerationInfo, out_dir: Path,
                  settings: Settings | None = None) -> PublishedImage:
    """Watermark, sign and log ``image``; write ``<out_dir>/<generation id>.png`` and return it.

    ``image``: any PIL image (RGB or RGBA; other modes are converted to RGB). Images smaller
    than the watermark's 64 px minimum are published without a watermark, which the manifest
    and the log record (``watermark: null``) and a warning says.
    Raises ``BadInput`` for a bad mode or image, ``EaselError`` if signing or the database fails.
    """
    from easel.provenance import watermark
    from easel.provenance.credentials import build_manifest, read_credentials, sign_png
    from easel.provenance.keys import signing_identity
    from easel.provenance.log import GenerationRecord, by_id
    from easel.registry.fingerprint import pdq_of_array, prepare
    from easel.registry.store import registry_session

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = (now - clock) * 1000.0
        clock = now

    # 1. check inputs
    settings = settings or get_settings()
    _check(image, info)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = signing_identity(settings)
    db_url = settings.db_url
    lap("setup")

    # 2. the output guard (plagiarism check; audit issue)
    image = _output_guard(image, info, settings)

    # 3. optional visible badge, under the watermark so the badge area carries it too
    if info.visible_mark:
        from easel.provenance.badge import add_badge

        image = add_badge(image)

    # 4. the invisible watermark (payload: the generation id)
    generation_id = new_generation_id()  # 48 random bits; checked against the log before writing
    watermarked = min(image.size) >= watermark.MIN_SIDE
    if watermarked:
        image = watermark.embed(image, generation_id)
    else:
        log.warning("image is %dx%d, below the watermark's %d px minimum: published without a "
                    "watermark (recorded in its manifest and the log)", image.width, image.height,
                    watermark.MIN_SIDE)
    lap("watermark")

    # 5. the final encoding (zlib level 3: 40 % faster than level 6 for 13 % more bytes)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=3)
    png = buf.getvalue()
    lap("encode")

    # 6. sign the final bytes (any re-encode after this would drop the manifest)
    record = generation_record(generation_id, info, watermarked)
    name = f"{generation_id}.png"
    signed = sign_png(png, build_manifest(name, record, allow_training=info.allow_training), identity)
    check = read_credentials(signed)  # read our own signature back before anything is written
    if check is None or not check.intact:
        raise EaselError("the signed image does not validate: "
                         + "; ".join(check.failures if check else ["no manifest found"]))
    manifest_label = check.manifest.get("label")
    lap("sign")

    # 7. write the file and (8.) its generation-log row, in one transaction
    path = out_dir / name
    sha256 = hashlib.sha256(signed).hexdigest()
    digest, quality = pdq_of_array(prepare(image))
    with registry_session(db_url) as session:
        if by_id(session, generation_id) is not None or path.exists():  # p ≈ n / 2^48
            raise EaselError(f"generation id {generation_id} is already taken", hint="publish again")
        session.add(GenerationRecord(
            id=generation_id, mode=info.mode, prompt=info.prompt, model_id=info.model_id,
            model_sha256=info.model_sha256, dataset_id=info.dataset_id, seed=info.seed,
            parameters=dict(info.parameters),
            style=info.style, style_artist=info.style_artist, style_attribution=info.style_attribution,
            sha256=sha256, pdq=digest.hex(), pdq_quality=quality, width=image.width, height=image.height,
            path=str(path.resolve()), watermarked=watermarked, signed=True,
            visible_mark=info.visible_mark, manifest_label=manifest_label, easel_version=__version__))
        if info.on_log is not None:
            info.on_log(session, generation_id)
        session.flush()
        _write_atomic(path, signed)  # a failed commit after this leaves a file with no row: removed
        try:
            session.commit()
        except Exception:
            path.unlink(missing_ok=True)
            raise
    lap("write+log")
    log.info("published %s (%s) in %.0f ms", path, generation_id, sum(timings.values()))
    return PublishedImage(path=path, generation_id=generation_id, sha256=sha256, pdq=digest.hex(),
                          watermarked=watermarked, manifest_label=manifest_label, timings_ms=timings)


__all__ = ["GenerationInfo", "PublishedImage", "generation_record", "new_generation_id", "publish_image"]
