"""How well reflection localizes the pivot of a failure, and how small its lessons and demos are.

    python -m eval.bench.reflection [--episodes 120] [--seed 0]

Plays household tasks with a perturbed expert (the expert's action, or with probability
`--eps` a random admissible command, or with probability `--garble` a command the world refuses),
records every episode with SkillMemory in a temporary SQLite file, and for each *failed*
episode compares the analysis's pivot with the ground truth: the first step whose action was
not in the env's `optimal_actions()` (the step where the trace first left every optimal plan).

Conditions (the same failed episodes each time):
- trace_only: no success to contrast with, no directive feedback;
- type_success: the nearest success is an expert episode of the same task type (another task);
- same_task_success: an expert episode of the same task exists in memory;
- expert_directive: the env's expert gives directive feedback (its action) at every step where
  the agent's action was not optimal (pivot is then exact by construction: a sanity check).

Also: tokens of the offline lesson vs tokens of the raw failed trajectory, and the compaction of
demonstrations written from the expert successes. Prints a JSON object last.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from eval.envs.base import ALFWORLD_TASK_TYPES
from eval.envs.household import HouseholdEnv
from skillmem import SkillMemory
from skillmem.reflect import OfflineWriter, analyse, compaction, demo_from_trace, load_trace
from skillmem.tokens import count_tokens

_ENTITY = re.compile(r"\b([a-z]+) (\d+)\b")


def garble(cmd: str, rng: random.Random) -> str:
    """A plausible command the world refuses: the same words with another object number."""
    return _ENTITY.sub(lambda m: f"{m.group(1)} {int(m.group(2)) + rng.randint(1, 3)}", cmd, count=1)


def play(memory: SkillMemory, env: HouseholdEnv, rng: random.Random, eps: float, p_garble: float,
         *, perturb: bool = True) -> tuple[str, bool, int | None, list[str | None]]:
    """One recorded episode; returns (episode id, won, ground-truth pivot, expert action per step)."""
    obs, info = env.reset()
    rec = memory.start_episode(goal=info["goal"], task_type=info["task_type"], task_id=info["task_id"],
                               split="train", environment="household")
    truth, experts, done = None, [], False
    while not done:
        optimal = env.optimal_actions()
        expert = min(optimal) if optimal else None
        r = rng.random()
        if not perturb or r >= eps + p_garble:
            action = expert
        elif r < eps:
            action = rng.choice(info["admissible_commands"])
        else:
            action = garble(rng.choice(info["admissible_commands"]), rng)
        if truth is None and action not in optimal:
            truth = env.steps
        experts.append(expert)
        fb, reward, done, info = env.step(action)
        rec.step(observation=obs, action=action, feedback=fb, reward=reward)
        obs = fb
    rec.finish(success=info["won"], source="environment")
    return rec.id, bool(info["won"]), truth, experts


def alfworld_walkthroughs(root: Path, n: int, rng: random.Random) -> dict:
    """Real ALFWorld train games without the game engine: walkthroughs and perturbed walkthroughs.

    The `alfworld` package is not installed, so no next-state feedback is real here. What is
    measured: goal-template parsing and slot abstraction over the real vocabulary (share of
    plan steps left with a concrete "name N"), demonstration size, and the pivot found by
    divergence from the walkthrough of the same game when one walkthrough step is replaced by
    another action of that game (the same-task-success rule; exact by construction unless the
    replacement is ambiguous).
    """
    from skillmem.reflect.trace import SlotMap, Trace, TraceStep, localize_pivot

    games = sorted(root.glob("*/*/game.tw-pddl"))
    if not games:
        return {"error": f"no games under {root}"}
    games = games[:: max(1, len(games) // n)][:n]
    parsed, leftover, steps, hits, demo_tokens = 0, 0, 0, 0, []
    for i, f in enumerate(games):
        g = json.loads(f.read_text())
        goal = re.search(r"Your task is to: ([^\"\\]*)", g["grammar"]).group(1)
        task_type = f.parent.parent.name.split("-")[0]
        walk = g["walkthrough"]
        slots = SlotMap.from_goal(goal)
        parsed += "[object]" in slots.slots
        plan = [slots.abstract(a) for a in walk]
        steps += len(plan)
        leftover += sum(bool(_ENTITY.search(a)) for a in plan)
        demo_tokens.append(count_tokens("; ".join(plan)))
        ok = Trace(f"ok{i}", goal, task_type, f"alf{i}", "success", [TraceStep(j, "", a, "") for j, a in enumerate(walk)])
        k = rng.randrange(len(walk))
        wrong = next((b for b in reversed(walk) if b != walk[k]), "look")
        bad = Trace(f"bad{i}", goal, task_type, f"alf{i}", "failure",
                    [TraceStep(j, "", a, "") for j, a in enumerate(walk[:k] + [wrong])])
        hits += localize_pivot(bad, ok).step == k
    return {"games": len(games), "goal_template_parsed": round(parsed / len(games), 3),
            "plan_steps_with_concrete_names": round(leftover / max(1, steps), 4),
            "demo_tokens_mean": round(statistics.mean(demo_tokens), 1),
            "pivot_accuracy_same_task_divergence": round(hits / len(games), 3),
            "note": "walkthroughs only: no real next-state feedback without the alfworld package"}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=120, help="failed episodes to analyse")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps", type=float, default=0.25, help="chance of a random admissible action per step")
    p.add_argument("--garble", type=float, default=0.1, help="chance of a refused command per step")
    p.add_argument("--slack", type=float, default=1.3, help="step limit = slack x expert plan length")
    p.add_argument("--alfworld", type=int, default=120, help="real ALFWorld train games to use (0: none)")
    p.add_argument("--alfworld-dir", default=str(Path(__file__).resolve().parents[3] / "shared" / "alfworld" / "train"))
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        memory = SkillMemory(Path(tmp) / "bench.db")
        failures: list[tuple[str, int, list[str | None], int]] = []  # (episode, truth, experts, seed)
        demos, seed = [], 0
        type_success: dict[str, str] = {}
        while len(failures) < args.episodes and seed < 20 * args.episodes:
            task_type = ALFWORLD_TASK_TYPES[seed % len(ALFWORLD_TASK_TYPES)]
            env = HouseholdEnv(split="train", seed=seed, task_type=task_type)
            env.reset()  # the expert plans from the start state
            plan_len = len(env.expert_plan())
            env.step_limit = max(plan_len + 2, int(plan_len * args.slack))
            ep, won, truth, experts = play(memory, env, rng, args.eps, args.garble)
            if not won and truth is not None:
                failures.append((ep, truth, experts, seed))
            seed += 1
        # Expert successes: one per failed task (same task) and per type (other tasks, earlier seeds).
        same_task: dict[str, str] = {}
        for ep, _, _, s in failures:
            tt = ALFWORLD_TASK_TYPES[s % len(ALFWORLD_TASK_TYPES)]
            env = HouseholdEnv(split="train", seed=s, task_type=tt, step_limit=200)
            ok_id, won, _, _ = play(memory, env, rng, 0, 0, perturb=False)
            assert won, "the expert must win"
            same_task[ep] = ok_id
        for i, tt in enumerate(ALFWORLD_TASK_TYPES):
            env = HouseholdEnv(split="train", seed=10**6 + i, task_type=tt, step_limit=200)
            type_success[tt], _, _, _ = play(memory, env, rng, 0, 0, perturb=False)
        for ok_id in list(same_task.values())[:60] + list(type_success.values()):
            d = demo_from_trace(load_trace(memory, ok_id))
            demos.append(compaction(d))

        writer = OfflineWriter()
        hits: Counter[str] = Counter()
        reasons: dict[str, Counter[str]] = {c: Counter() for c in ("trace_only", "type_success", "same_task_success",
                                                                  "expert_directive")}
        off_by: dict[str, list[int]] = {c: [] for c in reasons}
        lesson_tok, raw_tok, ratios = [], [], []
        for ep, truth, experts, _ in failures:
            trace = load_trace(memory, ep)
            conds = {
                "trace_only": analyse(trace, None),
                "type_success": analyse(trace, load_trace(memory, type_success[trace.task_type])),
                "same_task_success": analyse(trace, load_trace(memory, same_task[ep])),
            }
            for i, s in enumerate(trace.steps):  # the expert corrects every non-optimal step
                if experts[i] is not None and i >= truth and s.action != experts[i]:
                    memory.feedback(ep, i, corrected_action=experts[i], source="expert", text="")
            conds["expert_directive"] = analyse(load_trace(memory, ep), None)
            for c, a in conds.items():
                hits[c] += a.pivot.step == truth
                reasons[c][a.pivot.reason] += 1
                off_by[c].append((a.pivot.step if a.pivot.step is not None else -1) - truth)
            lesson = writer.write_lesson(conds["type_success"])
            lt = count_tokens(" ".join([lesson.trigger, lesson.bad_action, lesson.fix]))
            lesson_tok.append(lt)
            raw_tok.append(trace.raw_tokens)
            ratios.append(lt / max(1, trace.raw_tokens))
        memory.close()
    n = len(failures)
    result = {
        "bench": "reflection", "environment": "household", "failed_episodes": n,
        "policy": f"perturbed expert eps={args.eps} garble={args.garble} step_limit={args.slack}x plan",
        "pivot_accuracy": {c: round(hits[c] / max(1, n), 3) for c in reasons},
        "pivot_within_1": {c: round(sum(abs(d) <= 1 for d in off_by[c]) / max(1, n), 3) for c in reasons},
        "pivot_early_late": {c: {"early": sum(d < 0 for d in off_by[c]), "late": sum(d > 0 for d in off_by[c])}
                             for c in reasons},
        "pivot_reasons": {c: dict(reasons[c]) for c in reasons},
        "lesson_tokens_mean": round(statistics.mean(lesson_tok), 1) if lesson_tok else None,
        "raw_failed_trajectory_tokens_mean": round(statistics.mean(raw_tok), 1) if raw_tok else None,
        "lesson_over_raw_tokens_mean": round(statistics.mean(ratios), 4) if ratios else None,
        "demo_compaction_mean": round(statistics.mean(demos), 4) if demos else None,
        "seconds": round(time.time() - t0, 1),
    }
    if args.alfworld:
        result["alfworld"] = alfworld_walkthroughs(Path(args.alfworld_dir), args.alfworld, rng)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
