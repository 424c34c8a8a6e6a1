"""`python -m eval report RUN`: Markdown, plots and JSON from a run's results.jsonl.

Success rate per condition (mean ± std over seeds, each seed's rate over the same
tasks), per task type, steps to success, tokens of memory injected per step and
memory size; a learning curve per round and per-task-type bars.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def load(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "results.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run directory (python -m eval run --out DIR)?")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a kill
    return rows


def _mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ev = [r for r in rows if r["phase"] == "eval"]
    if not ev:
        return {"conditions": {}, "rounds": [], "task_types": []}
    rounds = sorted({r["round"] for r in ev})
    last = rounds[-1]
    conds = list(dict.fromkeys(r["condition"] for r in ev))
    task_types = sorted({r["task_type"] for r in ev})
    out: dict[str, Any] = {"rounds": rounds, "task_types": task_types, "conditions": {}, "curve": {}}
    for c in conds:
        by_seed: dict[int, list[dict]] = defaultdict(list)
        for r in ev:
            if r["condition"] == c and r["round"] == last:
                by_seed[r["seed"]].append(r)
        rates = [sum(x["won"] for x in v) / len(v) for v in by_seed.values() if v]
        m, s = _mean_std(rates)
        wins = [x for v in by_seed.values() for x in v if x["won"]]
        allr = [x for v in by_seed.values() for x in v]
        tok = [x["context_tokens"] for x in allr]
        per_type = {}
        for tt in task_types:
            rt = []
            for v in by_seed.values():
                sub = [x for x in v if x["task_type"] == tt]
                if sub:
                    rt.append(sum(x["won"] for x in sub) / len(sub))
            per_type[tt] = _mean_std(rt)
        mem = [x.get("memory_size") or {} for x in allr]
        out["conditions"][c] = {
            "success_mean": m, "success_std": s, "seeds": len(rates), "episodes": len(allr),
            "steps_to_success": statistics.fmean([x["steps"] for x in wins]) if wins else None,
            "context_tokens_per_step": statistics.fmean(tok) if tok else 0.0,
            "memory_lessons": statistics.fmean([m.get("lessons", 0) for m in mem]) if mem else 0,
            "memory_demonstrations": statistics.fmean([m.get("demonstrations", 0) for m in mem]) if mem else 0,
            "per_task_type": {tt: {"mean": a, "std": b} for tt, (a, b) in per_type.items()},
        }
        curve = []
        for rd in rounds:
            rates_r = []
            for seed in sorted({r["seed"] for r in ev}):
                sub = [r for r in ev if r["condition"] == c and r["round"] == rd and r["seed"] == seed]
                if sub:
                    rates_r.append(sum(x["won"] for x in sub) / len(sub))
            curve.append(_mean_std(rates_r))
        out["curve"][c] = curve
    return out


def table(summary: dict[str, Any]) -> str:
    lines = ["| condition | success (mean ± std over seeds) | steps to success | memory tokens / step | lessons | demos |",
             "|---|---|---|---|---|---|"]
    for c, v in summary["conditions"].items():
        sts = f"{v['steps_to_success']:.1f}" if v["steps_to_success"] is not None else "–"
        lines.append(f"| {c} | {100 * v['success_mean']:.1f} % ± {100 * v['success_std']:.1f} (n={v['seeds']}) "
                     f"| {sts} | {v['context_tokens_per_step']:.0f} | {v['memory_lessons']:.0f} "
                     f"| {v['memory_demonstrations']:.0f} |")
    return "\n".join(lines)


def plots(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for c, curve in summary["curve"].items():
        xs = summary["rounds"]
        ax.errorbar(xs, [100 * m for m, _ in curve], yerr=[100 * s for _, s in curve], marker="o", capsize=3, label=c)
    ax.set_xlabel("round")
    ax.set_ylabel("success on held-out tasks (%)")
    ax.set_title("Learning curve")
    ax.set_xticks(summary["rounds"])
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "learning_curve.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    conds = list(summary["conditions"])
    tts = summary["task_types"]
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(tts) + 3), 4))
    width = 0.8 / max(1, len(conds))
    for i, c in enumerate(conds):
        pt = summary["conditions"][c]["per_task_type"]
        ax.bar([j + i * width for j in range(len(tts))], [100 * pt[t]["mean"] for t in tts], width,
               yerr=[100 * pt[t]["std"] for t in tts], label=c, capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tts))])
    ax.set_xticklabels([t.replace("_then_place_in_recep", "").replace("_and_place", "") for t in tts],
                       rotation=20, fontsize=8)
    ax.set_ylabel("success (%)")
    ax.set_title("Success per task type (last round)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "per_task_type.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    rows = load(run_dir)
    summary = summarize(rows)
    man_path = run_dir / "manifest.json"
    man = json.loads(man_path.read_text()) if man_path.exists() else {}
    (run_dir / "report.json").write_text(json.dumps({"summary": summary, "manifest": man}, indent=1))
    pngs = plots(summary, run_dir) if summary["conditions"] else []
    cfg = man.get("config", {})
    md = [f"# skillmem run: {run_dir.name}", "",
          f"env `{cfg.get('env')}`, evaluation on `{cfg.get('eval_split')}`, seeds {cfg.get('seeds')}, "
          f"{cfg.get('rounds')} round(s), policy `{cfg.get('policy')}`, git `{man.get('git_commit', '')[:10]}`", "",
          table(summary), ""]
    md += [f"![{p.stem}]({p.name})" for p in pngs]
    out = run_dir / "report.md"
    out.write_text("\n".join(md) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval report", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory")
    a = p.parse_args(argv)
    out = write_report(Path(a.run))
    print(table(summarize(load(Path(a.run)))))
    print(f"\nreport: {out}")
    return 0
