"""The corpus as a registry query: import-corpus, build --purpose, withdrawal, ``affected``."""

from __future__ import annotations

from pathlib import Path

from easel.corpus.manifest import load_manifest
from easel.corpus.sources import fetch_sources
from easel.diffusion.pipeline import SHIPPED_MODEL_DIR
from easel.registry.lineage import record_model
from easel.registry.policy import disallowed_items, works_by_source
from easel.registry.store import registry_session
from tests.conftest import run_cli


def _manifest_rows(home: Path) -> dict[str, dict]:
    table = load_manifest(home / "corpus" / "32px")
    return {row["item_id"]: row for row in table.to_pylist()}


def test_import_build_withdraw_affected(db_url: str, easel_home: Path,
                                        fixture_packages: dict) -> None:
    fetch_sources(easel_home / "sources", list(fixture_packages.values()))
    proc = run_cli("registry", "import-corpus", check=True)
    # 'beta' holds the very same icons as 'alpha': another owner's works, so all refused.
    assert "alpha" in proc.stdout and "refused beta:fox-face" in proc.stdout
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line[:1].isalpha()}
    assert lines["alpha"][1:3] == ["registered", "6"] and lines["beta"][-1] == "6"
    assert (easel_home / "keys" / "artists" / "alpha.key").exists()
    # Each set's progress, on stderr (a full import takes minutes).
    assert "import alpha" in proc.stderr and "6/6" in proc.stderr

    build = run_cli("corpus", "build", "--size", "32", "--purpose", "train_base", check=True)
    assert "recorded in the registry" in build.stdout
    first = _manifest_rows(easel_home)
    assert sorted(first) == sorted(f"alpha:{n}" for n in (
        "blue-square", "fox-face", "green-circle", "red-heart", "waving-hand",
        "waving-hand-dark-skin-tone"))
    with registry_session(db_url) as session:
        works = works_by_source(session, list(first))
        events = {w.source: w for w in works.values()}
    assert all(row["consent_event_id"] for row in first.values())
    first_id = load_manifest(easel_home / "corpus" / "32px").schema.metadata[b"dataset_id"].decode()
    # An image's record names this dataset: verify can say whose works went into it.
    from easel.provenance.origin import model_origin

    origin = model_origin({"model_id": "base-v1", "dataset_id": first_id}, db_url)
    assert origin is not None and origin["registry"] == {
        "purpose": "train_base", "works": 6, "artists": [{"id": "alpha", "name": "Test Artist", "works": 6}]}

    # The owner withdraws: one work opted out, one revoked for train_base.
    fox, heart = works["alpha:fox-face"].id, works["alpha:red-heart"].id
    run_cli("registry", "optout", fox, "--as", "alpha", check=True)
    run_cli("registry", "consent", "revoke", heart, "-p", "train_base", "--as", "alpha", check=True)
    # Someone who is not the owner cannot undo it.
    sneaky = run_cli("registry", "consent", "grant", heart, "-p", "train_base", "--as", "beta")
    assert sneaky.returncode == 3 and "does not own" in sneaky.stderr
    with registry_session(db_url) as session:
        assert set(disallowed_items(session, list(first), "train_base")) == {
            "alpha:fox-face", "alpha:red-heart"}
        record_model(session, "base-v1", first_id, "base", "/models/base-v1")

    run_cli("corpus", "build", "--size", "32", "--purpose", "train_base", check=True)
    second = _manifest_rows(easel_home)
    assert set(first) - set(second) == {"alpha:fox-face", "alpha:red-heart"}
    assert second["alpha:blue-square"]["consent_event_id"] == first["alpha:blue-square"]["consent_event_id"]
    # train_style was not revoked for the heart, but the opted-out fox stays out of everything.
    run_cli("corpus", "build", "--size", "32", "--purpose", "train_style", check=True)
    style = _manifest_rows(easel_home)
    assert "alpha:red-heart" in style and "alpha:fox-face" not in style

    # Two images made by base-v1 and one by an unrecorded model name the first dataset.
    from PIL import Image

    from easel.provenance.publish import GenerationInfo, publish_image

    for model_id in ("base-v1", "base-v1", "other-model"):
        publish_image(Image.new("RGB", (96, 96), (200, 40, 40)),
                      GenerationInfo(prompt="x", mode="txt2img", model_id=model_id, dataset_id=first_id,
                                     seed=1, parameters={}), easel_home / "out")
    report = run_cli("registry", "affected", "--artist", "alpha", check=True).stdout
    assert f"dataset {first_id}" in report and "2 no longer allowed" in report
    assert f"withdrawn {fox}" in report and f"withdrawn {heart}" in report
    assert "model base-v1 (base)" in report
    assert "3 logged output(s) name it as their training data (2 by base-v1, 1 by other-model)" in report
    assert report.count("logged output(s)") == 1  # the later datasets have none
    assert report.count("dataset ") == 3
    assert events  # every manifest row maps to a registered work


def test_icons_are_prepared_in_worker_processes_in_order() -> None:
    from easel.registry.importer import _prepared

    def svg(i: int) -> bytes:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect x="{i % 9}" '
                f'y="2" width="5" height="{3 + i % 11}" fill="#a{i % 10}4"/></svg>').encode()

    tasks = [(f"set:icon-{i}", svg(i)) for i in range(70)]
    tasks[5] = ("set:bad", b"<svg xmlns='http://www.w3.org/2000/svg'><script>x()</script></svg>")
    serial = list(_prepared(tasks, workers=1))
    parallel = list(_prepared(tasks, workers=2))
    assert [p[0] for p in parallel] == [t[0] for t in tasks]
    assert parallel[5][4] is not None and "script" in parallel[5][4]
    assert [p[3].pdq if p[3] else None for p in parallel] == [p[3].pdq if p[3] else None for p in serial]


def test_every_trainer_refuses_a_manifest_that_lost_consent(easel_home: Path, fixture_packages: dict) -> None:
    """`easel train autoencoder|base|upscaler|style-guide` and `easel audit train` check the manifest
    against the registry *now*."""
    fetch_sources(easel_home / "sources", list(fixture_packages.values()))
    run_cli("registry", "import-corpus", check=True)
    for size in ("64", "256"):
        run_cli("corpus", "build", "--size", size, "--purpose", "train_base", check=True)
    with registry_session() as session:
        heart = works_by_source(session, ["alpha:red-heart"])["alpha:red-heart"].id
    run_cli("registry", "consent", "revoke", heart, "-p", "train_base", "--as", "alpha", check=True)

    out = easel_home / "runs"
    for args in (["train", "autoencoder", "--out", str(out / "vae"), "--minutes", "0.01"],
                 ["train", "base", "--vae", str(out / "vae"), "--out", str(out / "model"), "--steps", "1"],
                 ["train", "upscaler", "--out", str(out / "up"), "--minutes", "0.01"],
                 ["audit", "train", "--out", str(out / "desc"), "--checkpoints", str(out / "desc-ckpt"),
                  "--steps", "1"],
                 ["train", "style-guide", "--init-from", str(SHIPPED_MODEL_DIR), "--out", str(out / "guided"),
                  "--steps", "1"],
                 ["train", "palette", "--init-from", str(SHIPPED_MODEL_DIR), "--out", str(out / "painted")]):
        proc = run_cli(*args)
        assert proc.returncode != 0, args
        assert "1 of 6 items" in proc.stderr and "alpha:red-heart" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not out.exists()  # refused before anything was written


def test_retraining_after_a_withdrawal_records_a_second_model(easel_home: Path,
                                                              fixture_packages: dict) -> None:
    """Two runs that stop at the same step count, before and after a withdrawal, are two models:
    each export's id names its weights, and `easel registry affected` lists both, each under the
    dataset it learned from (one id per step count used to make the second record fail)."""
    import json

    fetch_sources(easel_home / "sources", list(fixture_packages.values()))
    run_cli("registry", "import-corpus", check=True)
    # A small denoiser from scratch, two steps. (Two steps on from the shipped model would export
    # its very weights both times: its EMA moves by under a float's resolution.)
    step = 2
    out = easel_home / "runs"
    ids = []
    for name in ("before", "after"):
        run_cli("corpus", "build", "--size", "64", "--purpose", "train_base", check=True)
        run_cli("train", "base", "--vae", str(SHIPPED_MODEL_DIR / "vae"), "--width", "32",
                "--out", str(out / name), "--steps", str(step), "--threads", "1", check=True)
        ids.append(json.loads((out / name / "model_card.json").read_text())["model_id"])
        if name == "before":
            with registry_session() as session:
                fox = works_by_source(session, ["alpha:fox-face"])["alpha:fox-face"].id
            run_cli("registry", "consent", "revoke", fox, "-p", "train_base", "--as", "alpha", check=True)
    assert ids[0] != ids[1] and all(f"-s{step}-w" in i for i in ids), ids
    report = run_cli("registry", "affected", "--artist", "alpha", check=True).stdout
    blocks = report.split("dataset ")[1:]
    assert len(blocks) == 2, report
    assert f"model {ids[0]} (base) {out / 'before'}" in blocks[0] and ids[1] not in blocks[0], report
    assert f"model {ids[1]} (base) {out / 'after'}" in blocks[1], report
    assert f"withdrawn {fox}" in blocks[0], report  # a train-split work: the data differ
