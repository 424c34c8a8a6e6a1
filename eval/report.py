"""`python -m eval report RUN`: Markdown, plots and JSON from a run's results.jsonl.

Success rate per condition (mean ± std over seeds, each seed's rate over its held-out
tasks), per task type, steps to success, tokens of memory retrieved per step (the whole
retrieved context: a policy that shows only the lessons speaking at the step, or only hints,
puts fewer in its prompt) and
memory size; lessons written and kept (`memory.jsonl`) and example lessons with the
failures they came from (read from the seed stores); a learning curve per condition —
held-out success against the experience episodes seen — as a table and a plot; per-task-type bars.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
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
            "llm": llm_usage([x["llm"] for x in allr if x.get("llm")]),
        }
        curve = []
        for rd in rounds:
            if c not in {r["condition"] for r in ev if r["round"] == rd}:
                curve.append((float("nan"), float("nan")))
                continue
            rates_r = []
            for seed in sorted({r["seed"] for r in ev}):
                sub = [r for r in ev if r["condition"] == c and r["round"] == rd and r["seed"] == seed]
                if sub:
                    rates_r.append(sum(x["won"] for x in sub) / len(sub))
            curve.append(_mean_std(rates_r))
        out["curve"][c] = curve
    # The x of the curve: experience episodes seen at each round's evaluation (older runs: the round).
    out["experience"] = [next((r["experience"] for r in ev if r["round"] == rd and "experience" in r), rd)
                         for rd in rounds]
    return out


def curve_table(summary: dict[str, Any]) -> str:
    """Held-out success per condition (columns) after each number of experience episodes (rows)."""
    conds = list(summary.get("curve", {}))
    if not conds:
        return ""
    lines = ["| experience episodes | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]
    for i, x in enumerate(summary["experience"]):
        cells = []
        for c in conds:
            m, sd = summary["curve"][c][i]
            cells.append("–" if m != m else f"{100 * m:.0f} ± {100 * sd:.0f}")
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_log(run_dir: Path) -> dict[str, Any]:
    """Lessons written (summed over rounds) and kept (active at the end), mean over seeds, per namespace."""
    path = Path(run_dir) / "memory.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    out: dict[str, Any] = {}
    for ns in dict.fromkeys(r["namespace"] for r in rows):
        by_seed: dict[int, list[dict]] = defaultdict(list)
        for r in rows:
            if r["namespace"] == ns:
                by_seed[r["seed"]].append(r)
        per = [(sum(x["lessons_written"] for x in v), max(v, key=lambda x: x["round"])) for v in by_seed.values()]
        out[ns] = {"seeds": len(per),
                   "lessons_written": statistics.fmean(w for w, _ in per),
                   "lessons_kept": statistics.fmean(last["lessons"] for _, last in per),
                   "demonstrations_written": statistics.fmean(
                       sum(x["demonstrations_written"] for x in by_seed[s]) for s in by_seed),
                   "demonstrations_kept": statistics.fmean(last["demonstrations"] for _, last in per),
                   "no_lesson": statistics.fmean(sum(x.get("no_lesson", 0) for x in by_seed[s]) for s in by_seed)}
    return out


def example_lessons(run_dir: Path, n: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Up to n active lessons per namespace of the first seed's store, each with the failure it came from:
    the episode's goal, the step at the pivot (action and feedback) and the expert's correction there."""
    stores = sorted(Path(run_dir).glob("seed*.db"))
    if not stores:
        return {}
    conn = sqlite3.connect(f"file:{stores[0]}?mode=ro", uri=True)
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        nss = [r[0] for r in conn.execute("SELECT DISTINCT namespace FROM lessons ORDER BY namespace")]
        for ns in nss:
            rows = conn.execute("SELECT trigger, bad_action, fix, pivot_step, source_episodes, support FROM lessons "
                                "WHERE namespace = ? AND status = 'active' ORDER BY support DESC, id LIMIT ?",
                                (ns, n)).fetchall()
            items = []
            for trigger, bad, fix, pivot, sources, support in rows:
                ids = json.loads(sources or "[]")
                # A merged lesson has several sources: show the one corrected at the lesson's pivot.
                ep_id = next((e for e in ids if pivot is not None and conn.execute(
                    "SELECT 1 FROM feedback WHERE episode_id = ? AND step_index = ?", (e, pivot)).fetchone()),
                    ids[0] if ids else None)
                item = {"trigger": trigger, "bad_action": bad, "fix": fix, "support": support, "pivot_step": pivot}
                if ep_id:
                    ep = conn.execute("SELECT goal, outcome, num_steps FROM episodes WHERE id = ?", (ep_id,)).fetchone()
                    if ep:
                        item["failure"] = {"goal": ep[0], "outcome": ep[1], "steps": ep[2]}
                    if pivot is not None:
                        st = conn.execute("SELECT action, feedback FROM steps WHERE episode_id = ? AND \"index\" = ?",
                                          (ep_id, pivot)).fetchone()
                        if st:
                            item["failure"] = {**item.get("failure", {}), "pivot_action": st[0],
                                               "pivot_feedback": (st[1] or "")[:200]}
                    fb = conn.execute("SELECT text FROM feedback WHERE episode_id = ? ORDER BY step_index = ? DESC, "
                                      "step_index LIMIT 1", (ep_id, pivot)).fetchone()
                    if fb:
                        item.setdefault("failure", {})["correction"] = fb[0]
                items.append(item)
            out[ns] = items
    except sqlite3.Error as e:
        out["error"] = [{"trigger": f"could not read {stores[0]}: {e}", "bad_action": "", "fix": ""}]
    finally:
        conn.close()
    return out


def lessons_markdown(mem: dict[str, Any], examples: dict[str, list[dict[str, Any]]]) -> list[str]:
    md: list[str] = []
    if mem:
        md += ["## Memory written and kept (mean over seeds)", "",
               "| namespace | lessons written | lessons kept | demonstrations written | kept | failures with no lesson |",
               "|---|---|---|---|---|---|"]
        for ns, v in mem.items():
            md.append(f"| {ns} | {v['lessons_written']:.1f} | {v['lessons_kept']:.1f} | "
                      f"{v['demonstrations_written']:.1f} | {v['demonstrations_kept']:.1f} | {v['no_lesson']:.1f} |")
        md.append("")
    for ns, items in examples.items():
        md += [f"## Example lessons in `{ns}` (first seed), with the failure each came from", ""]
        for i, it in enumerate(items, 1):
            md.append(f"{i}. **when** {it['trigger']} — **avoid** `{it['bad_action']}` — **do** {it['fix']} "
                      f"(support {it.get('support')})")
            f = it.get("failure") or {}
            if f:
                md.append(f"   - from a failed episode ({f.get('steps')} steps) of: {f.get('goal', '')[:160]}")
                if "pivot_action" in f:
                    md.append(f"   - at step {it['pivot_step']}: `{f['pivot_action']}` → {f['pivot_feedback']!r}")
                if "correction" in f:
                    md.append(f"   - correction given there: {f['correction']}")
        md.append("")
    return md


def table(summary: dict[str, Any]) -> str:
    lines = ["| condition | success (mean ± std over seeds) | steps to success | retrieved memory tokens / step | lessons | demos |",
             "|---|---|---|---|---|---|"]
    for c, v in summary["conditions"].items():
        sts = f"{v['steps_to_success']:.1f}" if v["steps_to_success"] is not None else "–"
        lines.append(f"| {c} | {100 * v['success_mean']:.1f} % ± {100 * v['success_std']:.1f} (n={v['seeds']}) "
                     f"| {sts} | {v['context_tokens_per_step']:.0f} | {v['memory_lessons']:.0f} "
                     f"| {v['memory_demonstrations']:.0f} |")
    return "\n".join(lines)


def llm_usage(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A model-backed policy's usage over a condition's episodes: tokens, answers, retries, latency."""
    if not rows:
        return None
    tot = {k: sum(r.get(k, 0) for r in rows) for k in ("decisions", "valid_first", "retries", "invalid",
                                                      "prompt_tokens", "completion_tokens", "calls", "seconds")}
    n = tot["decisions"]
    return {**tot, "episodes": len(rows),
            "valid_first_share": tot["valid_first"] / n if n else None,
            "retries_per_decision": tot["retries"] / n if n else None,
            "tokens_per_episode": (tot["prompt_tokens"] + tot["completion_tokens"]) / len(rows),
            "seconds_per_call": tot["seconds"] / tot["calls"] if tot["calls"] else None,
            "seconds_per_decision": tot["seconds"] / n if n else None}


def llm_table(summary: dict[str, Any]) -> str:
    """Token usage and answer quality per condition ("" when no model-backed policy played)."""
    rows = [(c, v["llm"], v["success_mean"]) for c, v in summary["conditions"].items() if v.get("llm")]
    if not rows:
        return ""
    lines = ["| condition | success | decisions | valid first time | retries / decision | invalid | prompt tokens | "
             "completion tokens | tokens / episode | s / call | s / decision |", "|---" * 11 + "|"]

    def num(x: Any, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    for c, u, won in rows:
        share = f"{100 * u['valid_first_share']:.0f} %" if u["valid_first_share"] is not None else "–"
        lines.append(f"| {c} | {100 * won:.0f} % | {u['decisions']} | {share} | "
                     f"{num(u['retries_per_decision'], '.2f')} | {u['invalid']} | {u['prompt_tokens']:.0f} | "
                     f"{u['completion_tokens']:.0f} | {u['tokens_per_episode']:.0f} | "
                     f"{num(u['seconds_per_call'], '.2f')} | {num(u.get('seconds_per_decision'), '.2f')} |")
    return "\n".join(lines)


def plots(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = summary.get("experience") or summary["rounds"]
    # Curves that coincide would hide one another: each condition is nudged a little sideways.
    span = (max(xs) - min(xs)) or 1
    n = max(1, len(summary["curve"]))
    for i, (c, curve) in enumerate(summary["curve"].items()):
        dx = (i - (n - 1) / 2) * 0.008 * span
        ax.errorbar([x + dx for x in xs], [100 * m for m, _ in curve], yerr=[100 * s for _, s in curve], marker="o",
                    capsize=3, label=c, alpha=0.85)
    ax.set_xlabel("experience episodes seen (train split)" if summary.get("experience") else "round")
    ax.set_ylabel("success on held-out tasks (%)")
    ax.set_title("Learning curve")
    if len(xs) > 2 and min(xs) >= 0 and max(xs) > 4 * max(1, sorted(xs)[1]):
        ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
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
    mem, examples = memory_log(run_dir), example_lessons(run_dir)
    (run_dir / "report.json").write_text(json.dumps({"summary": summary, "manifest": man, "memory": mem,
                                                     "example_lessons": examples}, indent=1))
    pngs = plots(summary, run_dir) if summary["conditions"] else []
    cfg = man.get("config", {})
    rounds = (f"a learning curve (evaluated after {summary.get('experience')} experience episodes)"
              if cfg.get("curve") else f"{cfg.get('rounds')} round(s)")
    md = [f"# skillmem run: {run_dir.name}", "",
          f"env `{cfg.get('env')}`, evaluation on `{cfg.get('eval_split')}`, seeds {cfg.get('seeds')}, "
          f"{rounds}, policy `{cfg.get('policy')}`, git `{man.get('git_commit', '')[:10]}`", "",
          table(summary), ""]
    if summary.get("curve"):
        md += ["## Learning curve: held-out success (%, mean ± std over seeds) after each number of experience "
               "episodes", "", curve_table(summary), ""]
    md += lessons_markdown(mem, examples)
    if llm_table(summary):
        md += ["Model usage per condition (last round, all seeds):", "", llm_table(summary), ""]
    md += [f"![{p.stem}]({p.name})" for p in pngs]
    out = run_dir / "report.md"
    out.write_text("\n".join(md) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval report", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory")
    a = p.parse_args(argv)
    out = write_report(Path(a.run))
    summary = summarize(load(Path(a.run)))
    print(table(summary))
    if llm_table(summary):
        print("\n" + llm_table(summary))
    print(f"\nreport: {out}")
    return 0
