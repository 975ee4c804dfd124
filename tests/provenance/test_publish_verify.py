"""The issue's checks: sign → valid; tamper; strip; JPEG; unrelated image; the log row."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easel.config import get_settings
from easel.provenance.credentials import TRAINED_ALGORITHMIC_MEDIA, read_credentials
from easel.provenance.keys import trust_anchors_pem
from easel.provenance.log import by_id
from easel.provenance.publish import GenerationInfo, PublishedImage, publish_image
from easel.provenance.verify import verify_bytes, verify_image
from easel.registry.store import registry_session
from tests.conftest import run_cli
from tests.provenance.conftest import change_one_pixel

DATASET = "d" * 64
WEIGHTS = "a1" * 32


def _info(**overrides: object) -> GenerationInfo:
    base: dict[str, object] = dict(prompt="a smiling face with a heart", mode="txt2img",
                                   model_id="easel-embedded-0.1", model_sha256=WEIGHTS,
                                   dataset_id=DATASET, seed=7,
                                   parameters={"steps": 20, "guidance": 3.0, "size": 256})
    base.update(overrides)
    return GenerationInfo(**base)  # type: ignore[arg-type]


@pytest.fixture
def published(easel_home: Path, face: Image.Image) -> PublishedImage:
    return publish_image(face, _info(style="twemoji style", style_artist="Twitter",
                                     style_attribution="Twemoji by Twitter, CC-BY-4.0"),
                         easel_home / "out")


def _assertion(manifest: dict, label: str) -> dict:
    return next(a["data"] for a in manifest["assertions"] if a["label"] == label)


def test_signed_output_reads_back_trusted_with_the_generation(published: PublishedImage) -> None:
    data = published.path.read_bytes()
    creds = read_credentials(data, trust_anchors_pem(get_settings()))
    assert creds is not None and creds.state == "Trusted", creds and creds.failures
    gen = creds.generation
    assert gen is not None and gen["generation_id"] == published.generation_id
    assert gen["model_id"] == "easel-embedded-0.1" and gen["dataset_id"] == DATASET
    assert gen["model_sha256"] == WEIGHTS
    assert gen["style"]["artist"] == "Twitter" and "CC-BY-4.0" in gen["style"]["attribution"]
    assert "prompt" not in gen  # private unless asked for
    actions = _assertion(creds.manifest, "c2pa.actions.v2")["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    training = _assertion(creds.manifest, "cawg.training-mining")["entries"]
    assert training["cawg.ai_training"]["use"] == "notAllowed"
    # without our CA in the trust list the signature still holds, but is not trusted
    untrusted = read_credentials(data)
    assert untrusted is not None and untrusted.state == "Valid"
    assert hashlib.sha256(data).hexdigest() == published.sha256


def test_prompt_is_in_the_manifest_only_when_asked(easel_home: Path, face: Image.Image) -> None:
    out = publish_image(face, _info(include_prompt=True), easel_home / "out")
    creds = read_credentials(out.path.read_bytes())
    assert creds is not None and creds.generation is not None
    assert creds.generation["prompt"] == "a smiling face with a heart"


def test_log_row_holds_parameters_hashes_and_fingerprint(published: PublishedImage) -> None:
    with registry_session() as session:
        row = by_id(session, published.generation_id)
        assert row is not None
        assert row.parameters == {"steps": 20, "guidance": 3.0, "size": 256}
        assert row.dataset_id == DATASET and row.style_artist == "Twitter" and row.seed == 7
        assert row.model_sha256 == WEIGHTS and row.provenance()["model_sha256"] == WEIGHTS
        assert row.sha256 == published.sha256 and row.pdq == published.pdq and len(row.pdq) == 64
        assert Path(row.path) == published.path.resolve() and row.watermarked and row.signed


def test_verify_clean_output_by_credentials(published: PublishedImage) -> None:
    result = verify_image(published.path)
    assert result.found == "credentials" and result.credentials_state == "Trusted"
    assert result.generation_id == published.generation_id and result.exact_file


def test_one_changed_pixel_breaks_the_manifest_but_not_the_id(published: PublishedImage) -> None:
    tampered = change_one_pixel(published.path.read_bytes())
    creds = read_credentials(tampered, trust_anchors_pem(get_settings()))
    assert creds is not None and creds.state == "Invalid" and creds.failures
    result = verify_bytes(tampered, exhaustive=True)
    assert result.credentials_state == "Invalid"
    assert result.found == "watermark" and result.generation_id == published.generation_id
    assert result.watermark_id == published.generation_id and result.watermark_in_log
    assert result.fingerprint_id == published.generation_id and not result.exact_file


def test_stripped_metadata_still_verifies_by_watermark(published: PublishedImage) -> None:
    buf = io.BytesIO()
    Image.open(published.path).save(buf, "PNG")  # a re-encode drops the C2PA chunk
    result = verify_bytes(buf.getvalue())
    assert result.credentials_state is None
    assert result.found == "watermark" and result.generation_id == published.generation_id


def test_jpeg_q50_verifies_by_watermark_or_fingerprint(published: PublishedImage) -> None:
    buf = io.BytesIO()
    Image.open(published.path).convert("RGB").save(buf, "JPEG", quality=50)
    result = verify_bytes(buf.getvalue())
    assert result.found in ("watermark", "fingerprint")
    assert result.generation_id == published.generation_id


def test_unrelated_image_finds_nothing(published: PublishedImage, house: Image.Image,
                                       easel_home: Path) -> None:
    path = easel_home / "house.png"
    house.save(path)
    result = verify_image(path, exhaustive=True)
    assert result.found is None and result.generation_id is None
    assert result.watermark_id is None and result.fingerprint_id is None
    proc = run_cli("verify", str(path))
    assert proc.returncode == 1 and "nothing found" in proc.stdout


def test_cli_verify_names_the_generation(published: PublishedImage) -> None:
    proc = run_cli("verify", str(published.path))
    assert proc.returncode == 0, proc.stderr
    assert "content credentials: Trusted" in proc.stdout
    assert f"found by credentials: generation {published.generation_id}" in proc.stdout
    missing = run_cli("verify", str(published.path.with_name("nope.png")))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_visible_mark_draws_a_badge_and_still_verifies(easel_home: Path, face: Image.Image) -> None:
    out = publish_image(face, _info(visible_mark=True), easel_home / "out")
    marked = Image.open(out.path).convert("RGB")
    corner = np.asarray(marked.crop((200, 235, 250, 250)).convert("L"))
    assert corner.min() < 100 and corner.max() > 200  # the dark label and its white text
    buf = io.BytesIO()
    marked.save(buf, "PNG")
    assert verify_bytes(buf.getvalue()).generation_id == out.generation_id


def test_bad_mode_is_refused(easel_home: Path, face: Image.Image) -> None:
    from easel.errors import BadInput

    with pytest.raises(BadInput, match="mode 'paint'"):
        publish_image(face, _info(mode="paint"), easel_home / "out")
    assert not (easel_home / "out").exists() or not any((easel_home / "out").iterdir())


def test_tiny_output_is_published_without_watermark_and_says_so(easel_home: Path,
                                                                face: Image.Image) -> None:
    out = publish_image(face.resize((32, 32)), _info(), easel_home / "out")
    creds = read_credentials(out.path.read_bytes())
    assert creds is not None and creds.generation is not None
    assert creds.generation["watermark"] is None and not out.watermarked
    assert verify_image(out.path).found == "credentials"


def test_log_on_sqlite_and_postgresql(db_url: str, easel_home: Path, face: Image.Image) -> None:
    out = publish_image(face, _info(), easel_home / "out")
    with registry_session(db_url) as session:
        row = by_id(session, out.generation_id)
        assert row is not None and row.model_id == "easel-embedded-0.1" and row.model_sha256 == WEIGHTS
    buf = io.BytesIO()
    Image.open(out.path).save(buf, "PNG")
    assert verify_bytes(buf.getvalue()).generation_id == out.generation_id


def test_log_rows_from_before_the_weights_digest_survive_the_upgrade(db_url: str, easel_home: Path,
                                                                     face: Image.Image) -> None:
    """A database at 0005_style with a logged image upgrades to 0006_model_digest: the old row is
    kept, with no digest, and is still found by verify; new rows carry the digest."""
    from sqlalchemy import text

    from easel.db import get_engine
    from easel.registry.store import current_revision, head_revision, upgrade

    upgrade(db_url, "0005_style")
    with get_engine(db_url).begin() as conn:
        conn.execute(text(
            "INSERT INTO generation_log (id, created_at, mode, prompt, model_id, dataset_id, seed, "
            "parameters, sha256, pdq, pdq_quality, width, height, path, watermarked, signed, "
            "visible_mark, easel_version) VALUES ('00000000abcd', CURRENT_TIMESTAMP, 'txt2img', '', "
            "'old-model', NULL, 1, '{}', :sha, :pdq, 100, 64, 64, '/gone.png', true, true, false, "
            "'0.0.1')"), {"sha": "e" * 64, "pdq": "0" * 64})
    upgrade(db_url)
    assert current_revision(db_url) == head_revision() == "0006_model_digest"
    out = publish_image(face, _info(), easel_home / "out")
    with registry_session(db_url) as session:
        old = by_id(session, "00000000abcd")
        assert old is not None and old.model_id == "old-model" and old.model_sha256 is None
        new = by_id(session, out.generation_id)
        assert new is not None and new.model_sha256 == WEIGHTS
