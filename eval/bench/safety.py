"""Benchmark of the memory safety check: precision and recall on two written corpora.

    python -m eval.bench.safety                          # the check in this checkout
    python -m eval.bench.safety --baseline /path/to/old  # and an older checkout's, side by side

A line counts as refused when the check would refuse it as any field of a memory item
(lesson trigger/fix, a demonstration's goal or plan step): injection patterns, URLs, code.
Recall is attacks refused / attacks; precision is attacks refused / lines refused;
benign_refused lists the ordinary lines the check would keep out of memory. The corpora
are eval/bench/safety_corpus.py (hand-written: 60 benign lines from six domains, 61
attacks of seven kinds, written beside the patterns; and a held-out 20 + 20 written after
the patterns were frozen, reported apart as *_heldout). Prints one line per miss and a JSON object as the last line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Callable

from eval.bench.safety_corpus import ATTACKS, BENIGN, HELDOUT_ATTACKS, HELDOUT_BENIGN


def current_checker() -> Callable[[str], bool]:
    from skillmem.reflect.safety import text_is_safe

    return lambda line: not text_is_safe(line)


def checker_from(root: Path) -> Callable[[str], bool]:
    """The refusal rule of another checkout's skillmem/reflect/safety.py, loaded by path.

    A checkout without `text_is_safe` (the first landing) checked each lesson field with
    has_injection, URL_PATTERN and CODE_PATTERN: that is what is applied to the line.
    """
    path = Path(root) / "skillmem" / "reflect" / "safety.py"
    spec = importlib.util.spec_from_file_location("baseline_safety", path)
    mod = importlib.util.module_from_spec(spec)
    # Its relative imports (`from ..episode import LessonBase`) resolve against this skillmem:
    # the models it validates with have not changed shape.
    mod.__package__ = "skillmem.reflect"
    sys.modules["baseline_safety"] = mod
    spec.loader.exec_module(mod)
    if hasattr(mod, "text_is_safe"):
        return lambda line: not mod.text_is_safe(line)
    return lambda line: bool(mod.has_injection(line) or mod.URL_PATTERN.search(line) or mod.CODE_PATTERN.search(line))


def measure(refuses: Callable[[str], bool], ATTACKS=ATTACKS, BENIGN=BENIGN) -> dict[str, Any]:
    caught = [(k, t) for k, t in ATTACKS if refuses(t)]
    missed = [(k, t) for k, t in ATTACKS if not refuses(t)]
    wrongly = [(d, t) for d, t in BENIGN if refuses(t)]
    refused = len(caught) + len(wrongly)
    by_kind: dict[str, list[int]] = {}
    for k, t in ATTACKS:
        by_kind.setdefault(k, [0, 0])[1] += 1
        by_kind[k][0] += refuses(t)
    return {
        "attacks": len(ATTACKS), "benign": len(BENIGN),
        "recall": round(len(caught) / len(ATTACKS), 4),
        "precision": round(len(caught) / refused, 4) if refused else 1.0,
        "benign_refused": len(wrongly),
        "recall_by_kind": {k: f"{c}/{n}" for k, (c, n) in by_kind.items()},
        "missed_attacks": [t for _, t in missed],
        "refused_benign": [t for _, t in wrongly],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=None, help="another checkout whose check is measured beside this one")
    args = ap.parse_args(argv)
    now = current_checker()
    result: dict[str, Any] = {"corpus": "eval/bench/safety_corpus.py", "after": measure(now),
                              "after_heldout": measure(now, HELDOUT_ATTACKS, HELDOUT_BENIGN)}
    if args.baseline:
        old = checker_from(Path(args.baseline))
        result["before"] = measure(old)
        result["before_heldout"] = measure(old, HELDOUT_ATTACKS, HELDOUT_BENIGN)
        result["checkout_before"] = str(args.baseline)
    for name in ("before", "after", "before_heldout", "after_heldout"):
        if name in result:
            r = result[name]
            print(f"{name}: recall {r['recall']:.3f}  precision {r['precision']:.3f}  "
                  f"benign refused {r['benign_refused']}/{r['benign']}")
            for t in r["missed_attacks"]:
                print(f"  {name} missed attack: {t!r}")
            for t in r["refused_benign"]:
                print(f"  {name} refused benign: {t!r}")
    print(json.dumps(result, ensure_ascii=True))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
