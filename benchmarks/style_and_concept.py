"""Is a picture whose concept the judge names in the asked style less often? (BENCHMARKS.md, session 27)

Reads one JSON report of ``easel eval model --draws N --json`` (N ≥ 2) and, for the seen concepts'
pictures, sets style accuracy beside whether the concept judge put the prompt's concept in its top
5, three ways:

1. per set, pooled over the pictures;
2. within prompts: for each prompt whose draws include both a named and an unnamed picture, the
   style accuracy of its named draws minus that of its unnamed ones. The prompt (its concept and
   set) is then held fixed, so a set or a concept that is both easy to name and hard to draw in
   style cannot make the difference. An exact sign test over the prompts whose difference is not
   zero;
3. for the pictures drawn in another style than asked: where their nearest training icon (by
   pixels, the report's ``nearest_item``) lies: in the asked set, in the set the judge read, and
   whether it is the same concept there (a model drawing another set's version of the concept).

    python -m benchmarks.style_and_concept REPORT.json [--top 5]

Fast (reads the report only).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report of `easel eval model --draws N --json`")
    parser.add_argument("--top", type=int, default=5, help="a concept is named when its rank is at most this")
    args = parser.parse_args()

    from easel.evaluation.compare import concept_in_top, sign_test_p, style_right

    report = json.loads(args.report.read_text())
    items = [i for i in report.get("items", []) if i.get("seen")]
    if not items:
        parser.error(f"{args.report} has no seen-concept pictures "
                     "(is it a report of `easel eval model --json`?)")
    if int(report.get("draws", 1)) < 2:
        parser.error(f"{args.report} has one draw a prompt: "
                     "the within-prompt comparison needs --draws 2 or more")

    def rate(group: list[dict]) -> str:
        return f"{sum(style_right(i) for i in group) / len(group):.3f} ({len(group)})" if group else "—"

    print(f"{args.report.name}: {len(items)} seen-concept pictures, {report['draws']} draws a prompt")
    print(f"| set | style, concept in top {args.top} | style, not in top {args.top} |")
    print("| --- | --- | --- |")
    by_set: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_set[item["set_id"]].append(item)
    for name in sorted(by_set) + ["all"]:
        group = items if name == "all" else by_set[name]
        named = [i for i in group if concept_in_top(i, args.top)]
        unnamed = [i for i in group if not concept_in_top(i, args.top)]
        print(f"| {name} | {rate(named)} | {rate(unnamed)} |")

    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_prompt[item["prompt"]].append(item)
    diffs = []
    for draws in by_prompt.values():
        named = [style_right(i) for i in draws if concept_in_top(i, args.top)]
        unnamed = [style_right(i) for i in draws if not concept_in_top(i, args.top)]
        if named and unnamed:
            diffs.append(sum(named) / len(named) - sum(unnamed) / len(unnamed))
    if diffs:
        worse, better = sum(d < 0 for d in diffs), sum(d > 0 for d in diffs)
        print(f"within prompts ({len(diffs)} of {len(by_prompt)} prompts have both): named minus unnamed "
              f"style {sum(diffs) / len(diffs):+.3f} on average; named worse in {worse}, better in "
              f"{better} (sign test p {sign_test_p(better, worse):.3g})")

    wrong = [i for i in items if not style_right(i)]

    def where(item: dict) -> tuple[str, str]:
        set_id, _, concept = str(item["nearest_item"]).partition(":")
        return set_id, concept

    in_asked = sum(where(i)[0] == i["set_id"] for i in wrong)
    in_read = sum(where(i)[0] == i["style_predicted"] for i in wrong)
    read_version = sum(where(i) == (i["style_predicted"], i["concept"]) for i in wrong)
    own_icon = sum(i["nearest_item"] == i["item_id"] for i in wrong)
    print(f"pictures in another style than asked: {len(wrong)}; nearest training icon in the asked set "
          f"{in_asked} (the prompt's own icon {own_icon}), in the set the judge read {in_read} "
          f"(that set's icon of the same concept {read_version})")


if __name__ == "__main__":
    main()
