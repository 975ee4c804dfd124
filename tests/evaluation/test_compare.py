"""`easel eval compare`: the exact sign test, the paired counts, and bad reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from easel.errors import BadInput
from easel.evaluation.compare import compare, load_report, sign_test_p
from tests.conftest import run_cli


def test_sign_test_values() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(3, 3) == 1.0
    assert sign_test_p(0, 5) == sign_test_p(5, 0) == pytest.approx(2 / 32)  # 2 · ½⁵
    assert sign_test_p(0, 1) == 1.0
    stats = pytest.importorskip("scipy.stats")
    for wins, losses in ((8, 18), (6, 16), (12, 12), (34, 56), (1, 9)):
        assert sign_test_p(wins, losses) == pytest.approx(stats.binomtest(wins, wins + losses).pvalue)
    with pytest.raises(ValueError):
        sign_test_p(-1, 2)


def _report(path: Path, verdicts: list[tuple[str, str, int, bool]]) -> Path:
    """A report whose items are (set, predicted set, concept rank, seen)."""
    items = [{"prompt": f"thing {i}, {s} style", "seed": i, "set_id": s, "style_predicted": p,
              "concept_rank": r, "seen": seen} for i, (s, p, r, seen) in enumerate(verdicts)]
    path.write_text(json.dumps({"items": items}))
    return path


def test_paired_counts_overall_seen_and_per_set(tmp_path: Path) -> None:
    base = _report(tmp_path / "base.json", [("a", "a", 1, True), ("a", "b", 9, True), ("b", "b", 3, True),
                                            ("b", "b", 1, False), ("a", "a", 2, True)])
    new = _report(tmp_path / "new.json", [("a", "b", 1, True), ("a", "a", 1, True), ("b", "b", 9, True),
                                          ("b", "a", 1, False), ("a", "b", 2, True)])
    result = compare(load_report(base), load_report(new))
    style, top1, top5 = result["all"]
    assert (style["base_right"], style["new_right"], style["only_new"], style["only_base"]) == (4, 2, 1, 3)
    assert (top1["only_new"], top1["only_base"]) == (1, 0)
    assert (top5["only_new"], top5["only_base"]) == (1, 1)
    assert style["p"] == pytest.approx(sign_test_p(1, 3))
    seen_style = result["seen"][0]
    assert seen_style["prompts"] == 4 and (seen_style["only_new"], seen_style["only_base"]) == (1, 2)
    assert result["per_set_style"]["a"]["only_base"] == 2 and result["per_set_style"]["b"]["only_base"] == 1


def test_only_shared_prompts_are_paired(tmp_path: Path) -> None:
    base = _report(tmp_path / "base.json", [("a", "a", 1, True)] * 3)
    new = _report(tmp_path / "new.json", [("a", "b", 1, True)] * 2)
    assert compare(load_report(base), load_report(new))["prompts"] == 2


@pytest.mark.parametrize("content, says", [
    (None, "no such file"),
    ("not json", "not a JSON report"),
    (json.dumps({"generated": {}}), "no per-prompt items"),
    (json.dumps({"items": [{"prompt": "x", "seed": 0}]}), "lacks set_id"),
])
def test_bad_reports_are_refused_with_what_is_wrong(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInput, match=says):
        load_report(path)


def test_reports_on_other_prompts_are_refused(tmp_path: Path) -> None:
    base = _report(tmp_path / "base.json", [("a", "a", 1, True)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"items": [{"prompt": "else", "seed": 5, "set_id": "a",
                                            "style_predicted": "a", "concept_rank": 1}]}))
    proc = run_cli("eval", "compare", str(base), str(other), env={"EASEL_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2 and "share no (prompt, seed)" in proc.stderr
    assert "Traceback" not in proc.stderr
