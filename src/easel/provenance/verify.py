"""``verify``: where did this image come from? Manifest, else watermark, else fingerprint.

1. **Content credentials**: the C2PA manifest and its validation state (trusted under the
   local CA and ``EASEL_TRUST_ANCHORS``). An intact manifest is the strongest answer.
2. **Watermark**: if the manifest is absent or broken, decode the watermark; a payload whose
   CRC matches is an Easel generation id, which is then looked up in the generation log.
3. **Fingerprint**: if that fails too, the image's PDQ hash (and its 7 rotations/mirrors) is
   compared with every logged output; the nearest within ``FINGERPRINT_MATCH_DISTANCE`` is
   reported with its distance, as a likeness, not as proof.

Nothing is claimed that the evidence does not show: a decoded id absent from this database's
log is reported as such, and an image with none of the three is "nothing found".
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from easel.config import Settings, get_settings
from easel.errors import BadInput, NotFound

FINGERPRINT_MATCH_DISTANCE = 31
"""PDQ Hamming distance at or below which a logged output counts as the same picture:
ThreatExchange's recommended threshold, the registry's ``PDQ_MATCH_DISTANCE``. It survives
JPEG q50 and 0.5x resizing on 256 px icons (DESIGN.md); crops, borders and rotations by
other than 90° defeat it — the watermark covers those."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024


@dataclass
class Verification:
    """The answer: ``found`` is "credentials", "watermark", "fingerprint" or None."""

    found: str | None
    generation_id: str | None = None
    provenance: dict[str, Any] | None = None
    credentials_state: str | None = None  # Trusted / Valid / Invalid / None (no manifest)
    credentials_failures: list[str] = field(default_factory=list)
    watermark_id: str | None = None  # what the watermark decoder read (CRC-checked)
    watermark_in_log: bool = False
    fingerprint_id: str | None = None
    fingerprint_distance: int | None = None
    exact_file: bool = False  # the file's sha256 equals the logged one
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dict(self.__dict__)


def _load(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise BadInput("the file is not an image Easel can read",
                       hint="give a PNG, JPEG or WebP file") from exc
    return image


def read_image_file(path: Path) -> bytes:
    """The bytes of ``path``, refusing what is missing, not a file or over 64 MiB."""
    if not path.exists():
        raise NotFound(f"no such file: {path}")
    if not path.is_file():
        raise BadInput(f"{path} is not a file", hint="give the path of an image file")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise BadInput(f"{path} is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    return path.read_bytes()


def verify_bytes(data: bytes, settings: Settings | None = None, exhaustive: bool = False) -> Verification:
    """Verify an image file's bytes. With ``exhaustive`` all three checks run even after one
    succeeds (``found`` still names the strongest)."""
    from easel.provenance import watermark
    from easel.provenance.credentials import read_credentials
    from easel.provenance.keys import trust_anchors_pem
    from easel.provenance.log import all_pdq, by_id, by_sha256
    from easel.registry.fingerprint import dihedral_arrays, pdq_of_array, prepare
    from easel.registry.store import registry_session

    settings = settings or get_settings()
    image = _load(data)
    result = Verification(found=None)
    sha256 = hashlib.sha256(data).hexdigest()

    # 1. content credentials
    creds = read_credentials(data, trust_anchors_pem(settings))
    with registry_session(settings.db_url) as session:
        if creds is not None:
            result.credentials_state = creds.state
            result.credentials_failures = creds.failures
            if creds.intact:
                gen = creds.generation or {}
                result.found = "credentials"
                result.generation_id = gen.get("generation_id")
                result.provenance = dict(gen) if gen else {"manifest": creds.manifest.get("label")}
                result.provenance["signer"] = creds.signer
                if creds.state != "Trusted":
                    result.notes.append("the signature holds but its signer is not in the trust list "
                                        "(local CA or EASEL_TRUST_ANCHORS)")
                else:
                    result.notes.append("manifests signed without a time-stamp authority validate only "
                                        "while the signing certificate does (Easel's local one: 25 years)")
            else:
                result.notes.append("a C2PA manifest is present but does not validate: the file was "
                                    "changed after signing")
        result.exact_file = by_sha256(session, sha256) is not None
        if result.found and not exhaustive:
            if result.generation_id and (logged := by_id(session, result.generation_id)) is not None:
                result.provenance = {**logged.provenance(), **(result.provenance or {})}
            return result

        # 2. watermark
        detection = watermark.detect(image)
        if detection.generation_id is not None:
            result.watermark_id = detection.generation_id
            logged = by_id(session, detection.generation_id)
            result.watermark_in_log = logged is not None
            if logged is None:
                result.notes.append(f"an Easel watermark reads {detection.generation_id}, but this "
                                    "database's generation log has no such id")
            if result.found is None and logged is not None:
                result.found = "watermark"
                result.generation_id = logged.id
                result.provenance = logged.provenance()
        if result.found and not exhaustive:
            return result

        # 3. fingerprint
        pixels = prepare(image)
        queries = [pdq_of_array(v)[0] for v in dihedral_arrays(pixels)]
        best = _nearest(queries, all_pdq(session))
        if best is not None and best[0] <= FINGERPRINT_MATCH_DISTANCE:
            result.fingerprint_id = best[1]
            result.fingerprint_distance = best[0]
            if result.found is None:
                logged = by_id(session, best[1])
                result.found = "fingerprint"
                result.generation_id = best[1]
                result.provenance = logged.provenance() if logged else None
                result.notes.append(f"looks like logged output {best[1]} (PDQ distance {best[0]} of 256 "
                                    f"bits, match threshold {FINGERPRINT_MATCH_DISTANCE}): a likeness, "
                                    "not proof of origin")
                if best[2] > 1:
                    result.notes.append(f"{best[2]} logged outputs lie within the match distance; "
                                        "the fingerprint cannot tell them apart")
    return result


def _nearest(queries: list[bytes], rows: list[tuple[str, str]]) -> tuple[int, str, int] | None:
    """(distance, id, how many rows lie within the match distance) of the logged PDQ hash
    nearest to any of ``queries``; None if there are no rows."""
    import numpy as np

    if not rows:
        return None
    stored = np.frombuffer(b"".join(bytes.fromhex(h) for _, h in rows), np.uint8).reshape(len(rows), -1)
    query = np.frombuffer(b"".join(queries), np.uint8).reshape(len(queries), -1)
    distances = np.unpackbits(query[:, None, :] ^ stored[None, :, :], axis=-1).sum(axis=-1).min(axis=0)
    best = int(np.argmin(distances))
    return int(distances[best]), rows[best][0], int(np.sum(distances <= FINGERPRINT_MATCH_DISTANCE))


def verify_image(path: Path, settings: Settings | None = None, exhaustive: bool = False) -> Verification:
    """Verify the image file at ``path`` (see the module docstring for the order of checks)."""
    return verify_bytes(read_image_file(Path(path)), settings=settings, exhaustive=exhaustive)
