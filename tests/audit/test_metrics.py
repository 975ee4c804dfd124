"""The evaluation's threshold and µAP arithmetic on cases worked by hand."""

from __future__ import annotations

import numpy as np

from easel.audit.evaluate import micro_ap, threshold_at
from easel.audit.thresholds import NEAR_COPY_THRESHOLD, STYLE_THRESHOLD, verdict


def test_threshold_at_lets_through_at_most_the_rate() -> None:
    negatives = np.arange(10_000, dtype=np.float32)
    t = threshold_at(negatives, 1e-3)
    assert (negatives > t).sum() <= 10 and (negatives >= t).sum() == 11


def test_micro_ap_is_one_when_every_original_ranks_first_and_lower_otherwise() -> None:
    eye = np.eye(3, dtype=bool)
    valid = np.ones((3, 3), dtype=bool)
    perfect = np.eye(3) + 0.1
    assert micro_ap(perfect, eye, valid) == 1.0
    wrong = perfect.copy()
    wrong[0] = [0.0, 0.9, 0.1]  # query 0's original is last; its distractor outranks everything
    assert micro_ap(wrong, eye, valid) < 0.9


def test_verdicts_follow_the_thresholds() -> None:
    assert verdict(0.0, 0.0, 0) == "copy"
    assert verdict(NEAR_COPY_THRESHOLD, 0.0, 200) == "near-copy"
    assert verdict(0.0, STYLE_THRESHOLD, None) == "strong style match"
    assert verdict(0.0, 0.0, None) == "none"


def test_skin_tone_variants_share_a_variant_key_only_within_a_set() -> None:
    from easel.audit.evaluate import variant_key

    a = variant_key("openmoji", "people holding hands, medium skin tone and dark skin tone")
    assert a == variant_key("openmoji", "people holding hands")
    assert a != variant_key("noto", "people holding hands")
    assert variant_key("noto", "man guard") != variant_key("noto", "woman guard")


def test_a_variant_of_a_variant_is_one_drawing_and_an_unrelated_icon_stays_a_negative() -> None:
    """Noto's case: ``men wrestling`` and ``people wrestling`` are one picture (PDQ twins), each
    with skin-tone variants. Pairwise, a toned ``men wrestling`` and a toned ``people wrestling``
    are neither twins nor tone variants; the chain makes them one drawing. A third icon with a
    hash of its own stays apart from all four."""
    from easel.audit.evaluate import one_drawing, same_drawing, variant_key

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 256)
    bits = np.stack([base, base, rng.integers(0, 2, 256), rng.integers(0, 2, 256), rng.integers(0, 2, 256)])
    captions = ["men wrestling", "people wrestling", "men wrestling, dark skin tone",
                "people wrestling, medium skin tone", "cat face"]
    keys = np.array([variant_key("noto", c) for c in captions])
    pairwise = same_drawing(bits, keys, bits, keys)
    assert pairwise[0, 1] and pairwise[0, 2] and pairwise[1, 3]
    assert not pairwise[2, 3]
    closed = one_drawing(pairwise)
    assert closed[2, 3] and closed[3, 2] and closed[:4, :4].all()
    assert not closed[4, :4].any() and not closed[:4, 4].any() and closed[4, 4]
    assert np.array_equal(one_drawing(np.zeros((3, 3), dtype=bool)), np.eye(3, dtype=bool))


def test_pixel_twins_are_the_same_picture_at_any_size_and_not_a_redrawing() -> None:
    from PIL import Image, ImageDraw

    from easel.audit.evaluate import pixel_twins

    def square(colour: tuple[int, int, int], size: int, inset: int) -> Image.Image:
        im = Image.new("RGB", (size, size), "white")
        ImageDraw.Draw(im).rectangle([inset, inset, size - inset, size - inset], fill=colour)
        return im

    pictures = [square((0, 0, 0), 256, 40), square((0, 0, 0), 128, 20),  # one picture, two sizes
                square((0, 0, 0), 256, 80), square((200, 0, 0), 256, 40)]  # smaller; recoloured
    twins = pixel_twins(pictures)
    assert twins[0, 1] and twins[1, 0] and twins.diagonal().all()
    assert not twins[0, 2] and not twins[0, 3] and not twins[2, 3]


def test_audit_eval_sets_pixel_twins_aside_and_reports_the_earlier_rule_beside(
        tmp_path, tiny_encoder_dir) -> None:  # type: ignore[no-untyped-def]
    """The copy evaluation end to end on a tiny corpus to which two sets add the same plain
    square, one black, one a shade lighter: PDQ calls them different (a flat square's hash is
    unstable), pixels call them the same picture, and that pair is not a negative."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageDraw

    from easel.audit.encoder import load_encoder
    from easel.audit.evaluate import evaluate, format_report
    from easel.corpus.manifest import dataset_id_of
    from easel.registry.fingerprint import hamming, pdq_of_array, prepare
    from tests.evaluation.conftest import write_synthetic_corpus

    manifest = write_synthetic_corpus(tmp_path)
    table = pq.read_table(manifest)
    rows = table.to_pylist()
    template = next(r for r in rows if r["split"] == "val")
    squares = []
    for set_id, grey in (("alpha", 0), ("beta", 12)):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).rectangle([12, 12, 51, 51], fill=(grey, grey, grey))
        im.save(tmp_path / f"images/{set_id}/plain-square.png")
        squares.append(im)
        rows.append(dict(template, item_id=f"{set_id}:plain-square", set_id=set_id, icon_name="plain-square",
                         concept="plain-square", caption="plain square",
                         png_path=f"images/{set_id}/plain-square.png"))
    assert hamming(pdq_of_array(prepare(squares[0]))[0], pdq_of_array(prepare(squares[1]))[0]) > 31
    grown = pa.Table.from_pylist(sorted(rows, key=lambda r: r["item_id"]), schema=table.schema)
    meta = dict(table.schema.metadata)
    meta[b"dataset_id"] = dataset_id_of(grown).encode()
    pq.write_table(grown.replace_schema_metadata(meta), manifest)

    report = evaluate(load_encoder(str(tiny_encoder_dir)), manifest, split="val", progress=False, text=False)
    n = report["icons"]
    assert n == sum(r["split"] == "val" for r in rows)
    assert report["pixel_twin_pairs"] == ["alpha:plain square = beta:plain square"]
    assert 0.0 <= report["copy_recall_at_fpr_1e-4_pdq_tone_rule"] <= 1.0
    assert 0.0 <= report["copy_recall_at_fpr_1e-4_pairwise_rule"] <= 1.0
    assert report["chained_pairs"] == {}
    assert "1 pixel-twin pairs and 0 pairs chained through variants" in format_report(report)
    assert "copy_normalised_recall_at_fpr_1e-4" not in report  # no registry given


def test_audit_eval_normalises_copy_scores_by_each_querys_background_in_the_registry(
        tmp_path, tiny_encoder_dir) -> None:  # type: ignore[no-untyped-def]
    """With a registry index, the normalised score is the raw one less β × the mean of the
    query's best-view scores with its BACKGROUND_K best registered works; it keeps each query's
    ranking (top-1 unchanged) and is reported beside the raw figures."""
    import easel.audit.evaluate as ev
    from easel.audit.encoder import describe_references, load_encoder
    from easel.audit.index import FloatIndex, query_backgrounds
    from tests.evaluation.conftest import write_synthetic_corpus

    manifest = write_synthetic_corpus(tmp_path)
    encoder = load_encoder(str(tiny_encoder_dir))
    pictures, _, _ = ev._load(manifest, "train", 0)  # the registry: other works
    views, _ = describe_references(encoder, pictures)
    registry = FloatIndex(views.shape[-1])
    for key, work_views in enumerate(views.numpy()):
        registry.add([key] * len(work_views), work_views)
    report = ev.evaluate(encoder, manifest, split="val", progress=False, text=False, pdq=False,
                         registry_index=registry)
    assert report["background"] == {"k": ev.BACKGROUND_K, "weight": ev.BACKGROUND_WEIGHT,
                                    "registry_works": len(pictures)}
    for attack in report["attacks"].values():
        assert attack["copy_normalised"]["top1"] == attack["copy"]["top1"]
    assert 0.0 <= report["copy_normalised_recall_at_fpr_1e-4"] <= 1.0
    assert report["copy_normalised_threshold_fpr_1e-4"] < report["copy_threshold_fpr_1e-4"]
    assert "normalised (s − 0.5" in ev.format_report(report)
    assert len(pictures) > ev.BACKGROUND_K
    queries = views.numpy()[:3, 0]  # three registered works' whole pictures as queries
    scores = (queries @ views.numpy().reshape(-1, views.shape[-1]).T).reshape(3, len(pictures), -1).max(-1)
    top = np.sort(scores, axis=1)[:, ::-1][:, :ev.BACKGROUND_K]
    assert np.allclose(query_backgrounds(registry, queries, ev.BACKGROUND_K), top.mean(axis=1), atol=1e-5)
    small = FloatIndex(views.shape[-1])  # two works: the mean of the two
    for key in (0, 1):
        small.add([key] * views.shape[1], views.numpy()[key])
    assert np.allclose(query_backgrounds(small, queries, ev.BACKGROUND_K), scores[:, :2].mean(axis=1),
                       atol=1e-5)


def test_the_attacks_draw_the_same_way_in_every_process() -> None:
    """The suite's random choices are seeded by the attack's name in a way that does not change
    with Python's per-process string hashing, so two runs of `easel audit eval` attack alike."""
    import os
    import subprocess
    import sys

    code = ("from easel.audit.augment import ATTACKS; from easel.audit.evaluate import attack_seed; "
            "print([attack_seed(n) for n in ATTACKS])")
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(seen) == 1 and seen.pop().startswith("[")
