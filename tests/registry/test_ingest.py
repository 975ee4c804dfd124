"""Ingest: owner A registers; B's copies of A's work are refused; bad input changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from easel.errors import BadInput, NotFound, PermissionDenied
from easel.registry.index import forget_cache
from easel.registry.models import Work
from easel.registry.policy import may_use
from easel.registry.service import Ingestor, authenticate, change_consent, get_artist, set_optout
from easel.registry.store import index_dir, registry_session
from tests.registry.conftest import artwork, encode, png_bomb, snapshot


def _ingest(url: str, artist: str, data: bytes, title: str = "work",
            license_spdx: str = "CC-BY-4.0") -> str:
    with registry_session(url) as session:
        ingestor = Ingestor(session, index_dir(url))
        work = ingestor.ingest(data, get_artist(session, artist), title, license_spdx)
        work_id = work.id
    ingestor.finish()
    return work_id


COPIES = {
    "identical": lambda im: encode(im),
    "jpeg-q50": lambda im: encode(im, "JPEG", quality=50),
    "half-size": lambda im: encode(im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)),
    "horizontal-flip": lambda im: encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    "flip-jpeg-q50": lambda im: encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG",
                                       quality=50),
    "rotated-90": lambda im: encode(im.transpose(Image.Transpose.ROTATE_90)),
}


def test_another_owners_copies_are_refused(db_url: str, two_artists: dict[str, str]) -> None:
    original = artwork(1)
    work_id = _ingest(db_url, "alice", encode(original), "original")
    before = snapshot(db_url)
    for name, make in COPIES.items():
        with pytest.raises(PermissionDenied) as caught:
            _ingest(db_url, "bob", make(original), f"bob's {name}")
        message = str(caught.value)
        assert work_id in message and "PDQ distance" in message and "alice" in message, name
        distance = int(message.split("PDQ distance ")[1].split()[0])
        assert distance <= 31, (name, distance)
    assert snapshot(db_url) == before
    # A different picture by Bob is accepted; so is a new picture by Alice.
    _ingest(db_url, "bob", encode(artwork(2)), "bob's own")
    _ingest(db_url, "alice", encode(artwork(3)), "alice's second")
    assert snapshot(db_url).works == before.works + 2


def test_own_duplicate_is_bad_input_and_variants_are_fine(db_url: str,
                                                          two_artists: dict[str, str]) -> None:
    original = artwork(4)
    first = _ingest(db_url, "alice", encode(original))
    before = snapshot(db_url)
    with pytest.raises(BadInput, match=first):
        _ingest(db_url, "alice", encode(original))
    assert snapshot(db_url) == before
    # The owner may register a re-encoding of their own (not opted-out) work.
    _ingest(db_url, "alice", encode(original, "JPEG", quality=80), "jpeg edition")
    assert snapshot(db_url).works == before.works + 1


def test_copies_of_an_opted_out_work_are_refused_even_for_its_owner(
        db_url: str, two_artists: dict[str, str]) -> None:
    original = artwork(5)
    work_id = _ingest(db_url, "alice", encode(original))
    with registry_session(db_url) as session:
        set_optout(session, authenticate(session, "alice", two_artists["alice"]), work_id)
    with registry_session(db_url) as session:
        assert not may_use(session, work_id, "train_base").allowed
    before = snapshot(db_url)
    with pytest.raises(PermissionDenied, match=f"opted-out work {work_id}"):
        _ingest(db_url, "alice", encode(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    assert snapshot(db_url) == before


def test_index_is_rebuilt_when_missing_or_stale(db_url: str, two_artists: dict[str, str]) -> None:
    original = artwork(6)
    work_id = _ingest(db_url, "alice", encode(original))
    folder = index_dir(db_url)
    assert (folder / "pdq.faiss").exists()
    # Missing: delete the files (and the in-process copy); the next check rebuilds them.
    for path in folder.iterdir():
        path.unlink()
    forget_cache()
    with pytest.raises(PermissionDenied, match=work_id):
        _ingest(db_url, "bob", encode(original, "JPEG", quality=50))
    assert (folder / "pdq.faiss").exists()
    # Stale: a work committed without updating the index (as if another process crashed).
    second = artwork(7)
    with registry_session(db_url) as session:
        Ingestor(session, folder).ingest(encode(second), get_artist(session, "alice"), "b", "MIT")
    forget_cache()
    with pytest.raises(PermissionDenied, match="alice"):
        _ingest(db_url, "bob", encode(second.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def _jpeg_truncated() -> bytes:
    data = encode(artwork(8), "JPEG", quality=90)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "not an image": (b"this is a text file, not a picture\n" * 20, "not an image"),
    "png bomb 30000x30000": (png_bomb(), "bomb|megapixels"),
    "truncated jpeg": (_jpeg_truncated(), "truncated"),
    "svg with script": (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
                        b'<script>alert(1)</script><rect width="16" height="16"/></svg>', "script"),
    "svg with onload": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)" viewBox="0 0 16 16">'
                        b'<rect width="16" height="16"/></svg>', "event handler"),
    "svg with external image": (b'<svg xmlns="http://www.w3.org/2000/svg" '
                                b'xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 16 16">'
                                b'<image xlink:href="http://example.org/x.png"/></svg>', "external"),
    "svg with entity": (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]>'
                        b'<svg xmlns="http://www.w3.org/2000/svg">&a;</svg>', "DOCTYPE"),
    "empty": (b"", "empty"),
}


def test_bad_input_is_refused_and_nothing_changes(db_url: str, two_artists: dict[str, str],
                                                  tmp_path: Path) -> None:
    _ingest(db_url, "alice", encode(artwork(9)))
    before = snapshot(db_url)
    for name, (data, pattern) in BAD_INPUTS.items():
        with pytest.raises(BadInput, match=pattern):
            _ingest(db_url, "alice", data, name)
    with registry_session(db_url) as session:
        alice = authenticate(session, "alice", two_artists["alice"])
        with pytest.raises(NotFound, match="wk_does_not_exist"):
            change_consent(session, alice, "revoke", ["train_base"], "wk_does_not_exist")
    with registry_session(db_url) as session:
        bob = authenticate(session, "bob", two_artists["bob"])
        work = session.query(Work).filter(Work.owner_id == "alice").one()
        with pytest.raises(PermissionDenied, match="does not own"):
            change_consent(session, bob, "revoke", ["train_base"], work.id)
        with pytest.raises(PermissionDenied, match="does not own"):
            set_optout(session, bob, work.id)
    with registry_session(db_url) as session, pytest.raises(PermissionDenied, match="API key"):
        authenticate(session, "alice", two_artists["bob"])
    assert snapshot(db_url) == before


def test_a_clean_svg_is_accepted(db_url: str, two_artists: dict[str, str]) -> None:
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
           '<defs><linearGradient id="g"><stop offset="0" stop-color="#f90"/>'
           '<stop offset="1" stop-color="#09f"/></linearGradient></defs>'
           '<rect x="1" y="2" width="9" height="11" fill="url(#g)"/>'
           '<circle cx="11" cy="5" r="4" fill="#c22"/><path d="M2 14L14 9L9 15z" fill="#2a4"/></svg>')
    work_id = _ingest(db_url, "alice", svg.encode(), "svg")
    with registry_session(db_url) as session:
        work = session.query(Work).filter(Work.id == work_id).one()
        assert work.media_type == "image/svg+xml" and len(work.pdq) == 64
        assert len(work.pdq_dihedral.split(",")) == 8


def test_simultaneous_uploads_of_one_picture_register_once(db_url: str,
                                                          two_artists: dict[str, str]) -> None:
    import threading

    from easel.registry.service import register_work

    data = encode(artwork(30))
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def upload(artist: str) -> None:
        barrier.wait()
        try:
            outcomes[artist] = register_work(db_url, data, artist, two_artists[artist],
                                             "same picture", "CC-BY-4.0").id
        except PermissionDenied as exc:
            outcomes[artist] = f"refused: {exc}"

    threads = [threading.Thread(target=upload, args=(a,)) for a in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [a for a, o in outcomes.items() if o.startswith("refused")]
    assert len(refused) == 1, outcomes
    winner = next(a for a in outcomes if a not in refused)
    assert outcomes[winner] in outcomes[refused[0]]
    assert snapshot(db_url).works == 1


def test_descriptors_prepared_for_a_batch_are_those_of_one_at_a_time(
        db_url: str, two_artists: dict[str, str]) -> None:
    """``IngestDescriptors.prepare`` (the corpus import's one encoder pass per batch) stores the
    same copy and style descriptors as describing each work alone, and a copy later in the same
    prepared batch is still refused by the works registered before it."""
    import numpy as np

    from easel.audit.encoder import COPY_KIND, STYLE_KIND, describe_references, load_encoder
    from easel.registry.descriptors import load_descriptors
    from easel.registry.validate import load_image

    pictures = [encode(artwork(30)), encode(artwork(31))]
    copy = encode(artwork(30).transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG", quality=50)
    loaded = [load_image(data, "x") for data in [*pictures, copy]]
    with registry_session(db_url) as session:
        ingestor = Ingestor(session, index_dir(db_url))
        ingestor.descriptors.prepare([(im.sha256, im.image) for im in loaded])
        assert len(ingestor.descriptors._references) == 3
        for i, data in enumerate(pictures):
            ingestor.ingest(data, get_artist(session, "alice"), f"work {i}", "CC-BY-4.0")
        with pytest.raises(PermissionDenied):
            ingestor.ingest(copy, get_artist(session, "bob"), "bob's copy", "CC-BY-4.0")
    ingestor.finish()
    views, whole = describe_references(load_encoder(), [im.image for im in loaded[:2]])
    with registry_session(db_url) as session:
        _, stored_views = load_descriptors(session, COPY_KIND)
        _, stored_styles = load_descriptors(session, STYLE_KIND)
    assert stored_views.shape == views.shape and stored_styles.shape == whole.style.shape
    assert np.abs(stored_views - views.numpy()).max() < 1e-5
    assert np.abs(stored_styles - whole.style.numpy()).max() < 1e-5
