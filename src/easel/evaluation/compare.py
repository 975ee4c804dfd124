"""Paired comparison of two evaluation reports on the same prompts and seeds.

Two models scored on one prompt set differ by less than the set's sampling error more often than
not (±0.035 of style accuracy on 134 prompts), so a difference of means says little. Pairing does
better: for each prompt, only the prompts one model gets right and the other wrong carry
information, and under "no difference" each of those falls either way with probability ½. The
exact two-sided sign test on those counts is what BENCHMARKS.md quotes as "8 against 18 (p 0.08)".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from easel.errors import BadInput

ITEM_FIELDS = ("prompt", "seed", "set_id", "style_predicted", "concept_rank")

Key = tuple[str, int]


def style_right(item: dict[str, Any]) -> bool:
    """Whether the style judge read a report item's picture as the set its prompt asked for."""
    return bool(item["style_predicted"] == item["set_id"])


def concept_in_top(item: dict[str, Any], k: int) -> bool:
    """Whether the concept judge ranked a report item's asked concept among its first ``k``."""
    return int(item["concept_rank"]) <= k


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this uneven between ``wins`` and
    ``losses`` when each discordant pair falls either way with probability ½ (1.0 for none)."""
    if wins < 0 or losses < 0:
        raise ValueError("counts must be non-negative")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2 ** n)


@dataclass(frozen=True)
class Paired:
    """One measure over the shared prompts: how often only the new model or only the base is right."""

    measure: str
    prompts: int
    base_right: int
    new_right: int
    only_new: int
    only_base: int
    p: float


def load_report(path: Path) -> dict[Key, dict[str, Any]]:
    """A report's per-prompt items by (prompt, seed); ``BadInput`` says what is wrong with a file."""
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file",
                       hint="write reports with `easel eval model --json FILE`") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a JSON report ({exc})",
                       hint="write reports with `easel eval model --json FILE`") from None
    items = report.get("items") if isinstance(report, dict) else None
    if not isinstance(items, list) or not items:
        raise BadInput(f"{path}: the report has no per-prompt items",
                       hint="reports of `easel eval model --json FILE` hold them under \"items\"")
    out: dict[Key, dict[str, Any]] = {}
    for i, item in enumerate(items):
        missing = [f for f in ITEM_FIELDS if not isinstance(item, dict) or f not in item]
        if missing:
            raise BadInput(f"{path}: item {i} lacks {', '.join(missing)}")
        out[(str(item["prompt"]), int(item["seed"]))] = item
    return out


def _pair(measure: str, keys: list[Key], base: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]],
          right: Callable[[dict[str, Any]], bool]) -> Paired:
    b = [right(base[k]) for k in keys]
    n = [right(new[k]) for k in keys]
    only_new = sum(1 for x, y in zip(b, n, strict=True) if y and not x)
    only_base = sum(1 for x, y in zip(b, n, strict=True) if x and not y)
    return Paired(measure, len(keys), sum(b), sum(n), only_new, only_base, sign_test_p(only_new, only_base))


def compare(base: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]]) -> dict[str, Any]:
    """Paired style, concept top-1 and top-5 over the prompts both reports hold, overall, on seen
    concepts (where the items say which are seen) and per set (style)."""
    keys = sorted(k for k in base if k in new)
    if not keys:
        raise BadInput("the two reports share no (prompt, seed)",
                       hint="score both with the same --split, -n and --seed")
    clash = [k for k in keys if base[k]["set_id"] != new[k]["set_id"]]
    if clash:
        raise BadInput(f"the reports disagree on the set of {clash[0][0]!r}: "
                       "they come from different corpora")

    def measures(subset: list[Key]) -> list[dict[str, Any]]:
        return [asdict(_pair(name, subset, base, new, fn)) for name, fn in (
            ("style", style_right),
            ("concept top-1", lambda item: concept_in_top(item, 1)),
            ("concept top-5", lambda item: concept_in_top(item, 5)))]

    result: dict[str, Any] = {"prompts": len(keys), "all": measures(keys)}
    if all("seen" in base[k] for k in keys):
        seen = [k for k in keys if base[k]["seen"]]
        if seen:
            result["seen"] = measures(seen)
    sets = sorted({base[k]["set_id"] for k in keys})
    result["per_set_style"] = {s: asdict(_pair("style", [k for k in keys if base[k]["set_id"] == s], base,
                                               new, style_right)) for s in sets}
    return result


def format_comparison(base_name: str, new_name: str, result: dict[str, Any]) -> str:
    """The comparison as a plain-text table."""

    def line(group: str, row: dict[str, Any]) -> str:
        n = row["prompts"]
        return (f"{group + ' (' + str(n) + ')':<22} {row['measure']:<14} {row['base_right'] / n:>6.3f} "
                f"{row['new_right'] / n:>6.3f} {row['only_new']:>9} {row['only_base']:>10} {row['p']:>6.2f}")

    lines = [f"{new_name} against {base_name}: {result['prompts']} shared prompts",
             f"{'group':<22} {'measure':<14} {'base':>6} {'new':>6} {'only new':>9} {'only base':>10} "
             f"{'p':>6}"]
    lines += [line(group, row) for group in ("all", "seen") for row in result.get(group, [])]
    lines += [line(set_id, row) for set_id, row in result["per_set_style"].items()]
    lines.append("only new / only base: prompts one model gets right and the other wrong; "
                 "p: exact two-sided sign test on those")
    return "\n".join(lines)


__all__ = ["Paired", "compare", "format_comparison", "load_report", "sign_test_p"]
