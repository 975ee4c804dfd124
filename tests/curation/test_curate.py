"""Curation: decisions with reasons, both engines alike, bad input, a killed run resumed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easel.corpus.manifest import dataset_id_of, load_manifest
from easel.curation.duplicates import find_duplicates
from easel.curation.run import curate
from easel.curation.stages import CurateConfig, attribution_problem
from easel.errors import BadInput, EaselError
from tests.conftest import run_cli


def _config(home: Path, **kw: object) -> CurateConfig:
    from easel.config import get_settings

    base = {
        "db_url": get_settings().db_url,
        "base_dir": "",
        "batch_size": 8,
        "consent_at": "2100-01-01T00:00:00+00:00",
        "encoder": "",
    }
    base.update(kw)
    return CurateConfig(**base)  # type: ignore[arg-type]


def _rows(out: Path) -> dict[str, dict]:
    return {r["item_id"]: r for r in pq.read_table(out / "curated.parquet").to_pylist()}


@pytest.fixture(scope="session")
def local_ray() -> object:
    """One local Ray with 2 CPUs for the whole test session."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
    )
    yield ray
    ray.shutdown()


def test_decisions_reasons_and_outputs(curation_home: Path) -> None:
    corpus = curation_home / "corpus" / "64px"
    out = curation_home / "curated"
    result = curate(corpus, out, _config(curation_home), progress=False)
    rows = _rows(out)
    assert len(rows) == load_manifest(corpus).num_rows == 34
    fox = rows["alpha:fox-face"]
    assert (fox["decision"], fox["stage"]) == ("drop", "consent") and "opted out" in fox["reason"]
    blank = rows["alpha:white-square"]
    assert (blank["stage"], blank["decision"]) == ("integrity", "drop") and "blank" in blank["reason"]
    # Skin-tone variants of one drawing are one cluster: the earlier-registered one is kept.
    dark = rows["alpha:waving-hand-dark-skin-tone"]
    assert (dark["stage"], dark["duplicate_of"]) == ("duplicates", "alpha:waving-hand")
    assert "PDQ distance" in dark["reason"] or "copy score" in dark["reason"]
    assert rows["alpha:waving-hand"]["decision"] == "keep"
    kept = {k for k, r in rows.items() if r["decision"] == "keep"}
    assert len(kept) == result.kept == 31
    assert all(rows[k]["consent_event_id"] and rows[k]["reason"] == "kept" for k in kept)
    assert all(r["reason"] != "kept" for r in rows.values() if r["decision"] == "drop")
    manifest = load_manifest(out)
    assert set(manifest.column("item_id").to_pylist()) == kept
    assert dataset_id_of(manifest) == result.dataset_id == manifest.schema.metadata[b"dataset_id"].decode()
    sheet = (out / "datasheet.md").read_text()
    assert result.dataset_id in sheet and "| alpha | Test Artist |" in sheet and "opted out" in sheet
    assert (out / "datasheet.png").read_bytes()[:4] == b"\x89PNG"


def test_gone_and_corrupt_files_are_dropped_and_the_run_goes_on(curation_home: Path) -> None:
    corpus = curation_home / "corpus" / "64px"
    (corpus / "images" / "alpha" / "shape-03.png").unlink()
    (corpus / "images" / "beta" / "beta-2.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a picture")
    (corpus / "images" / "alpha" / "shape-05.png").write_bytes(
        (corpus / "images" / "alpha" / "shape-06.png").read_bytes()
    )
    curate(
        corpus, curation_home / "out", _config(curation_home, stages=("consent", "integrity")), progress=False
    )
    rows = _rows(curation_home / "out")
    assert "missing" in rows["alpha:shape-03"]["reason"]
    assert "does not decode" in rows["beta:beta-2"]["reason"]
    assert "differs from the manifest" in rows["alpha:shape-05"]["reason"]
    assert rows["alpha:shape-04"]["decision"] == "keep"


def test_missing_column_is_refused_before_anything_is_written(curation_home: Path) -> None:
    table = load_manifest(curation_home / "corpus" / "64px").drop_columns(["attribution"])
    bad = curation_home / "bad.parquet"
    pq.write_table(table, bad)
    with pytest.raises(BadInput, match="lacks column"):
        curate(bad, curation_home / "nothing", _config(curation_home), progress=False)
    assert not (curation_home / "nothing").exists()


def test_consent_fails_closed(curation_home: Path) -> None:
    config = _config(
        curation_home, db_url="postgresql+psycopg://nobody@127.0.0.1:1/none", stages=("consent", "integrity")
    )
    result = curate(curation_home / "corpus" / "64px", curation_home / "out", config, progress=False)
    assert result.kept == 0
    assert all("consent could not be checked" in r["reason"] for r in _rows(curation_home / "out").values())


def test_near_copy_of_a_refused_work_is_dropped() -> None:
    code = "ab" * 32
    near = "ab" * 31 + "a8"  # one byte differs by one bit
    rows = [
        {
            "item_id": "a:opted",
            "decision": "drop",
            "stage": "consent",
            "consent_rule": "optout",
            "work_seq": 1,
            "file_sha256": "x",
            "pdq": code,
            "pdq_quality": 100,
            "copy_descriptor": b"",
        },
        {
            "item_id": "a:variant",
            "decision": "keep",
            "stage": None,
            "consent_rule": "licence",
            "work_seq": 2,
            "file_sha256": "y",
            "pdq": near,
            "pdq_quality": 100,
            "copy_descriptor": b"",
        },
        {
            "item_id": "b:copy",
            "decision": "keep",
            "stage": None,
            "consent_rule": "licence",
            "work_seq": 3,
            "file_sha256": "z",
            "pdq": "00" * 32,
            "pdq_quality": 100,
            "copy_descriptor": b"",
        },
        {
            "item_id": "b:same-file",
            "decision": "keep",
            "stage": None,
            "consent_rule": "licence",
            "work_seq": 4,
            "file_sha256": "z",
            "pdq": "",
            "pdq_quality": 0,
            "copy_descriptor": b"",
        },
    ]
    dups = find_duplicates(pa.Table.from_pylist(rows))
    assert dups["a:variant"].of == "a:opted" and "refused" in dups["a:variant"].reason
    assert dups["b:same-file"].of == "b:copy" and "identical file" in dups["b:same-file"].reason
    assert "b:copy" not in dups


@pytest.mark.parametrize(
    ("spdx", "text", "problem"),
    [
        ("CC-BY-4.0", '"x" by Y', None),
        ("CC-BY-4.0", "", "requires attribution"),
        ("CC0-1.0", "", None),
        ("", "by Y", "no licence id"),
        ("MIT", "  ", "requires attribution"),
    ],
)
def test_attribution_rule(spdx: str, text: str, problem: str | None) -> None:
    found = attribution_problem(spdx, text)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_ray_engine_gives_the_same_manifest(curation_home: Path, local_ray: object) -> None:
    corpus = curation_home / "corpus" / "64px"
    local = curate(corpus, curation_home / "local", _config(curation_home), progress=False)
    on_ray = curate(corpus, curation_home / "ray", _config(curation_home), engine="ray", progress=False)
    assert on_ray.dataset_id == local.dataset_id
    a = pq.read_table(curation_home / "local" / "curated.parquet")
    b = pq.read_table(curation_home / "ray" / "curated.parquet")
    assert a.to_pylist() == b.select(a.column_names).to_pylist()


def test_unreachable_ray_address_is_a_clear_error(curation_home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = curation_home / "never"
    proc = run_cli(
        "corpus",
        "curate",
        str(curation_home / "corpus" / "64px"),
        "--out",
        str(out),
        "--engine",
        "ray",
        "--ray-address",
        f"127.0.0.1:{port}",
    )
    assert proc.returncode != 0 and "cannot reach the Ray cluster" in proc.stderr
    assert not out.exists()
    with pytest.raises(EaselError):
        curate(
            curation_home / "corpus" / "64px",
            out,
            _config(curation_home),
            engine="ray",
            ray_address=f"127.0.0.1:{port}",
        )
    assert not out.exists()


def test_killed_run_resumes_to_the_same_result(curation_home: Path) -> None:
    corpus = curation_home / "corpus" / "64px"
    out = curation_home / "killed"
    args = [
        sys.executable,
        "-m",
        "easel.cli.main",
        "corpus",
        "curate",
        str(corpus),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--at",
        "2100-01-01T00:00:00+00:00",
        "--no-progress",
        "--no-record",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "parts").glob("pass1-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name for p in (out / "parts").glob("pass1-*.parquet")}
    assert 3 <= len(before) < 17 and not (out / "curated.parquet").exists()
    resumed = run_cli(*args[3:], check=True)
    assert "resumed:" in resumed.stdout
    assert before <= {p.name for p in (out / "parts").glob("pass1-*.parquet")}
    reference = curate(corpus, curation_home / "whole", _config(curation_home), progress=False)
    assert f"dataset id {reference.dataset_id}" in resumed.stdout
    a = pq.read_table(out / "curated.parquet").drop_columns(["png_path"]).to_pylist()
    b = pq.read_table(curation_home / "whole" / "curated.parquet").drop_columns(["png_path"]).to_pylist()
    assert a == b
