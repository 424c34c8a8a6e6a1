"""Curation on insert: are lessons with differing advice kept apart, and repeats still folded together?

    python -m eval bench curation [--db PATH_OR_URL] [--pairs all|tuned|heldout]

Each pair of lessons (:mod:`eval.bench.curation_pairs`: household, support agent with
tools, coding, web navigation, SQL, operations, assistant, ...) is added through
`SkillMemory.add_lesson` into a namespace of its own, with the real default embedder
(all-MiniLM-L6-v2), on a fresh SQLite file unless `--db` names another store. A DIFFERENT
pair that ends as one lesson was wrongly merged; a SAME pair that ends as two was missed.
The "tuned" pairs are the ones the checks in skillmem.curate were written against; the
"heldout" pairs were written afterwards and never used to tune them.

Uses only the public API (`SkillMemory`, `Lesson`), so the same file measures an older
checkout: `PYTHONPATH=/path/to/checkout python eval/bench/curation.py`. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a file against another checkout: find the pairs beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from curation_pairs import DIFFERENT, HELDOUT_DIFFERENT, HELDOUT_SAME, SAME  # type: ignore[no-redef]
else:
    from .curation_pairs import DIFFERENT, HELDOUT_DIFFERENT, HELDOUT_SAME, SAME


def measure(memory: Any, pairs: Sequence[tuple], prefix: str) -> list[dict[str, Any]]:
    """Add each pair into its own namespace; one row per pair: was it folded into one lesson?"""
    from skillmem import Lesson

    rows = []
    for i, (domain, why, a, b) in enumerate(pairs):
        ns = f"{prefix}-{i}"
        first, _ = memory.add_lesson(Lesson(trigger=a[0], bad_action=a[1], fix=a[2], task_type="t"),
                                     namespace=ns, episode_id=f"{ns}-a")
        second, action = memory.add_lesson(Lesson(trigger=b[0], bad_action=b[1], fix=b[2], task_type="t"),
                                           namespace=ns, episode_id=f"{ns}-b")
        rows.append({"domain": domain, "why": why, "folded": first == second, "action": action})
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    folded = [r for r in rows if r["folded"]]
    return {"pairs": len(rows), "folded": len(folded),
            "by_domain": {d: sum(r["folded"] for r in rows if r["domain"] == d)
                          for d in sorted({r["domain"] for r in rows})}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=None, help="store to measure in (default: a fresh SQLite file)")
    p.add_argument("--pairs", choices=["all", "tuned", "heldout"], default="all")
    p.add_argument("--verbose", action="store_true", help="print every pair")
    a = p.parse_args(argv)

    import skillmem
    from skillmem import SkillMemory

    tmp = Path(tempfile.mkdtemp(prefix="bench-curation-"))
    db = a.db or str(tmp / "bench.db")
    memory = SkillMemory(db, index_dir=tmp / "index")
    try:  # a shell agent's lessons name shell commands; the safety check refuses them by default
        from skillmem.reflect.safety import SafetyConfig

        memory.safety = SafetyConfig(allow_code=True)
    except (ImportError, TypeError):  # an older checkout: no such check on insert
        pass
    sets = {"tuned": (DIFFERENT, SAME), "heldout": (HELDOUT_DIFFERENT, HELDOUT_SAME)}
    if a.pairs != "all":
        sets = {a.pairs: sets[a.pairs]}
    run = f"r{int(time.time())}"  # namespaces of their own, so a shared --db can be reused
    result: dict[str, Any] = {"bench": "curation", "embedder": memory.embedder.name,
                              "code": str(Path(skillmem.__file__).resolve().parent.parent)}
    t0 = time.perf_counter()
    try:
        for name, (different, same) in sets.items():
            d_rows = measure(memory, different, f"{run}-{name}-diff")
            s_rows = measure(memory, same, f"{run}-{name}-same")
            for label, rows in (("different", d_rows), ("same", s_rows)):
                for r in rows:
                    wrong = r["folded"] if label == "different" else not r["folded"]
                    if a.verbose or wrong:
                        print(f"{name:7s} {label:9s} {'WRONG' if wrong else 'ok   '} {r['action']:9s} "
                              f"{r['domain']:10s} {r['why']}", flush=True)
            d, s = _summary(d_rows), _summary(s_rows)
            result[name] = {"different_pairs": d["pairs"], "different_merged": d["folded"],
                            "different_merged_by_domain": d["by_domain"],
                            "same_pairs": s["pairs"], "same_caught": s["folded"],
                            "same_caught_by_domain": s["by_domain"]}
            print(f"{name}: {d['folded']}/{d['pairs']} pairs with differing advice merged; "
                  f"{s['folded']}/{s['pairs']} repeats and paraphrases caught", flush=True)
    finally:
        memory.close()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
