"""How well reflection localizes the pivot of a failure, and how small its lessons and demos are.

    python -m eval.bench.reflection [--episodes 120] [--seed 0] [--alfworld 100] [--domain pack|text]

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
demonstrations written from the expert successes.

`--alfworld N` does the same on N real ALFWorld train games played by the game engine (the
`alfworld` package; without it, only their walkthrough files are read, see
alfworld_walkthroughs). Each game's walkthrough is played with one step replaced by a wrong
command, then the rest of the walkthrough until the step limit (the walkthrough's length), so
the feedback is the game's own ("Nothing happens.", a wrong place's contents). The replaced step
is the ground truth: the first step where the action left the walkthrough. Perturbations
(chosen per game by a seeded rng, position at random among the steps they apply to):
- wrong_object: a state-changing step (take, move, heat, ...) with another object number;
- wrong_place: a "go to" step going to another admissible place;
- admissible: any step replaced by another admissible command.
Games are list_tasks' balanced order (the six task types interleaved). Conditions as above;
same_task_success is the walkthrough of the same game played to its win, type_success that of
another game of the same type, expert_directive the env's expert (the walkthrough while on it).

`--agentlike` (on by default) scores the same games again as an LLM agent's log reads: `think:`
steps answered "OK." (recorded, never sent to the game) before a third of the commands and
before the mistake, and the mistakes such agents make: a look-alike object (wrong_object), a
wrong place, the older grammar ("put X in Y"), going back to a place already searched
(revisit), an object that is not there (hallucinated). The ground truth is the recorded index
of the replaced step.

`--domain` reads every episode with the household pack (default) or with the generic
TextDomain only: the difference is what the pack's knowledge adds to localizing mistakes.
`lessons_about_the_known_mistake` is the share of written lessons read at the true pivot or
whose bad action is the true pivot's action. Prints a JSON object last.
"""

from __future__ import annotations

import argparse
import importlib.util
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
from skillmem.reflect import OfflineWriter, UnsafeLesson, analyse, compaction, demo_from_trace, load_trace
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

    The fallback when the `alfworld` package is not installed: no next-state feedback is real. What is
    measured: goal-template parsing and slot abstraction over the real vocabulary (share of
    plan steps left with a concrete "name N"), demonstration size, and the pivot found by
    divergence from the walkthrough of the same game when one walkthrough step is replaced by
    another action of that game (the same-task-success rule; exact by construction unless the
    replacement is ambiguous).
    """
    from skillmem.domains.alfworld import HouseholdDomain, HouseholdSlots as SlotMap
    from skillmem.reflect.trace import Trace, TraceStep, localize_pivot

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
        d = HouseholdDomain()
        hits += localize_pivot(bad.read_with(d), ok.read_with(d), domain=d).step == k
    return {"games": len(games), "goal_template_parsed": round(parsed / len(games), 3),
            "plan_steps_with_concrete_names": round(leftover / max(1, steps), 4),
            "demo_tokens_mean": round(statistics.mean(demo_tokens), 1),
            "pivot_accuracy_same_task_divergence": round(hits / len(games), 3),
            "note": "walkthroughs only: no real next-state feedback without the alfworld package"}


CONDITIONS = ("trace_only", "type_success", "same_task_success", "expert_directive")


def make_domain(name: str):
    """The Domain the analysis reads episodes with: the household pack, or TextDomain only."""
    if name == "text":
        from skillmem.domain import TextDomain

        return TextDomain()
    from skillmem.domains.alfworld import HouseholdDomain

    return HouseholdDomain()


def score_failures(memory: SkillMemory, cases: Sequence[tuple[str, int, list[str | None], str | None, str | None]],
                   groups: Sequence[str] | None = None, domain=None) -> dict:
    """Pivot accuracy per condition and lesson size, over (episode, true pivot, expert per step,
    same-task success, same-type success) cases; directive feedback is added to the episodes.
    With `groups` (a label per case), exact accuracy is also broken down by label."""
    d = domain if domain is not None else make_domain("pack")
    writer = OfflineWriter(domain=d)
    hits: Counter[str] = Counter()
    at_mistake = 0
    reasons: dict[str, Counter[str]] = {c: Counter() for c in CONDITIONS}
    off_by: dict[str, list[int]] = {c: [] for c in CONDITIONS}
    lesson_tok, raw_tok, ratios, concrete, no_lesson, refused = [], [], [], 0, 0, 0
    for ep, truth, experts, same_ok, type_ok in cases:
        trace = load_trace(memory, ep, d)
        conds = {
            "trace_only": analyse(trace, None, d),
            "type_success": analyse(trace, load_trace(memory, type_ok, d) if type_ok else None, d),
            "same_task_success": analyse(trace, load_trace(memory, same_ok, d) if same_ok else None, d),
        }
        for i, s in enumerate(trace.steps):  # the expert corrects every non-optimal step it has an action for
            if i < len(experts) and experts[i] is not None and i >= truth and s.action != experts[i]:
                memory.feedback(ep, i, corrected_action=experts[i], source="expert", text="")
        conds["expert_directive"] = analyse(load_trace(memory, ep, d), None, d)
        for c, a in conds.items():
            hits[c] += a.pivot.step == truth
            reasons[c][a.pivot.reason] += 1
            off_by[c].append((a.pivot.step if a.pivot.step is not None else -1) - truth)
        raw_tok.append(trace.raw_tokens)
        try:
            lesson = writer.write_lesson(conds["type_success"])
        except UnsafeLesson:  # the safety check refused it: the queue would leave the episode in error
            refused += 1
            continue
        if lesson is None:  # the correction did not transfer: nothing is written
            no_lesson += 1
            continue
        text = " ".join([lesson.trigger, lesson.bad_action, lesson.fix])
        concrete += bool(_ENTITY.search(text))
        # Correct when it is about the known mistake: read at the true pivot, or its bad action is that step's.
        a = conds["type_success"]
        truth_action = a.slots.abstract(d.written(trace.steps[truth].action)) if truth < len(trace.steps) else ""
        step = lesson.provenance.get("rule_step", lesson.pivot_step)
        at_mistake += step == truth or (bool(lesson.bad_action) and lesson.bad_action == truth_action)
        lt = count_tokens(text)
        lesson_tok.append(lt)
        ratios.append(lt / max(1, trace.raw_tokens))
    n = len(cases)
    by_group = {}
    for g in sorted(set(groups or ())):
        idx = [i for i, x in enumerate(groups) if x == g]
        by_group[g] = {"n": len(idx), **{c: round(sum(off_by[c][i] == 0 for i in idx) / len(idx), 3)
                                         for c in CONDITIONS}}
    return {
        "pivot_accuracy": {c: round(hits[c] / max(1, n), 3) for c in CONDITIONS},
        **({"pivot_accuracy_by_group": by_group} if groups else {}),
        "pivot_within_1": {c: round(sum(abs(d) <= 1 for d in off_by[c]) / max(1, n), 3) for c in CONDITIONS},
        "pivot_early_late": {c: {"early": sum(d < 0 for d in off_by[c]), "late": sum(d > 0 for d in off_by[c])}
                             for c in CONDITIONS},
        "pivot_reasons": {c: dict(reasons[c]) for c in CONDITIONS},
        "domain": d.name,
        "lessons_written": len(lesson_tok), "no_transferable_lesson": no_lesson,
        "lessons_about_the_known_mistake": round(at_mistake / max(1, len(lesson_tok)), 3),
        "lessons_refused_by_safety_check": refused,
        "lessons_with_concrete_names": concrete,
        "lesson_tokens_mean": round(statistics.mean(lesson_tok), 1) if lesson_tok else None,
        "raw_failed_trajectory_tokens_mean": round(statistics.mean(raw_tok), 1) if raw_tok else None,
        "lesson_over_raw_tokens_mean": round(statistics.mean(ratios), 4) if ratios else None,
    }


PERTURBATIONS = ("wrong_object", "wrong_place", "admissible")
_STATE_VERBS = ("take", "move", "put", "heat", "cool", "clean", "slice", "use", "open", "close", "toggle")


def perturbation(walk: Sequence[str], rng: random.Random) -> tuple[str, int]:
    """A perturbation kind and the walkthrough step it replaces, at random among the steps it applies to."""
    kind = rng.choice(PERTURBATIONS)
    where = {"wrong_object": [i for i, a in enumerate(walk) if a.split()[0] in _STATE_VERBS and _ENTITY.search(a)],
             "wrong_place": [i for i, a in enumerate(walk) if a.startswith("go to ")],
             "admissible": list(range(len(walk)))}[kind]
    if not where:
        kind, where = "admissible", list(range(len(walk)))
    return kind, rng.choice(where)


def wrong_command(planned: str, kind: str, admissible: Sequence[str], rng: random.Random) -> str:
    """A command other than the planned one: another object number, another place, or any admissible one."""
    if kind == "wrong_object":
        cmd = garble(planned, rng)
        if cmd != planned:
            return cmd
    others = [c for c in admissible if c != planned and (kind != "wrong_place" or c.startswith("go to "))]
    others = others or [c for c in admissible if c != planned] or ["look"]
    return rng.choice(others)


# What LLM agents get wrong on these games (besides look-alike objects and wrong places): the older
# grammar ("put X in Y"), going back to a place already searched, an object that is not there.
AGENT_PERTURBATIONS = ("wrong_object", "wrong_place", "old_grammar", "revisit", "hallucinated")
THOUGHTS = ("think: I need to find the {o} first.", "think: Now I take it to the right place.",
            "think: Let me check where I have not looked yet.", "think: The task is to {g}")


def agent_perturbation(walk: Sequence[str], rng: random.Random) -> tuple[str, int]:
    """An agent-like mistake and the walkthrough step it replaces."""
    kind = rng.choice(AGENT_PERTURBATIONS)
    gos = [i for i, a in enumerate(walk) if a.startswith("go to ")]
    where = {"old_grammar": [i for i, a in enumerate(walk) if a.startswith("move ")],
             "revisit": gos[1:], "hallucinated": list(range(len(walk)))}.get(kind)
    if where is None:
        return perturbation(walk, rng)
    if not where:
        kind, where = "hallucinated", list(range(len(walk)))
    return kind, rng.choice(where)


def agent_wrong(planned: str, kind: str, admissible: Sequence[str], visited: Sequence[str], rng: random.Random) -> str:
    if kind == "old_grammar":
        return re.sub(r"^move (.+) to (.+)$", r"put \1 in \2", planned)
    if kind == "revisit" and visited:
        return "go to " + rng.choice(sorted(set(visited)))
    if kind == "hallucinated":
        here = next((v for v in reversed(visited)), "countertop 1")
        return f"take {rng.choice(['spoon', 'keychain', 'ladle'])} 9 from {here}"
    return wrong_command(planned, kind, admissible, rng)


def play_walkthrough(memory: SkillMemory, env, perturb: tuple[str, int] | None, rng: random.Random,
                     *, agentlike: bool = False) -> tuple[str, bool, int | None, list[str | None], list[str]]:
    """One recorded real ALFWorld game: its walkthrough, with step `perturb[1]` replaced by a wrong command.

    The step limit is the walkthrough's length, so after the wrong step the rest of the walkthrough
    is played as is. `agentlike`: as a ReAct agent's log reads: `think:` steps answered "OK."
    (recorded, never sent to the game) before about a third of the commands and before the
    mistake. Returns (episode id, won, true pivot (a recorded step index), the env's expert
    action per recorded step, the game's feedback per recorded step)."""
    obs, info = env.reset()
    walk = env.walkthrough
    env.step_limit = len(walk)
    rec = memory.start_episode(goal=info["goal"], task_type=info["task_type"], task_id=info["task_id"],
                               split=info["split"], environment="alfworld")
    truth, experts, feedback, done = None, [], [], False
    visited: list[str] = []
    obj = (re.findall(r"\b(?:a|an|some|two) (?:clean |hot |cool )?(\w+)", info["goal"]) or ["object"])[0]
    for i, planned in enumerate(walk):
        action = planned
        wrong = perturb is not None and i == perturb[1]
        if wrong:
            action = agent_wrong(planned, perturb[0], info["admissible_commands"], visited, rng) if agentlike \
                else wrong_command(planned, perturb[0], info["admissible_commands"], rng)
        if agentlike and (wrong or rng.random() < 0.33):
            thought = rng.choice(THOUGHTS).format(o=obj, g=info["goal"].rstrip("."))
            rec.step(observation=obs, action=thought, feedback="OK.")
            experts.append(None)
            feedback.append("OK.")
        if truth is None and action != planned:
            truth = len(experts)
        if action.startswith("go to "):
            visited.append(action[6:])
        experts.append(info["expert_action"])
        fb, reward, done, info = env.step(action)
        rec.step(observation=obs, action=action, feedback=fb, reward=reward)
        feedback.append(fb)
        obs = fb
        if done:
            break
    rec.finish(success=info["won"], source="environment")
    return rec.id, bool(info["won"]), truth, experts, feedback


def alfworld_games(n: int, seed: int = 0, root: Path | None = None, max_games: int | None = None,
                   *, agentlike: bool = False, domain=None) -> dict:
    """Pivot accuracy and lesson size on n failed real ALFWorld train games (module doc)."""
    from eval.envs.alfworld_env import AlfworldEnv, list_tasks

    t0 = time.time()
    specs = list_tasks("train", min(max_games or 2 * n, 480), seed=seed, root=root)
    kinds: Counter[str] = Counter()
    won_anyway = 0
    with tempfile.TemporaryDirectory() as tmp:
        memory = SkillMemory(Path(tmp) / "alfworld.db")
        played: list[tuple[str, int, list[str | None], str, str]] = []  # (failure, truth, experts, success, type)
        labels: list[str] = []  # the perturbation of each failure
        for spec in specs:
            if len(played) >= n:
                break
            rng = random.Random(f"{seed}:{spec.task_id}")
            env = AlfworldEnv(spec.task_id, root=root)
            try:
                env.reset()
                kind, k = (agent_perturbation if agentlike else perturbation)(env.walkthrough, rng)
                ep, won, truth, experts, _ = play_walkthrough(memory, env, (kind, k), rng, agentlike=agentlike)
                ok_id, ok_won, _, _, _ = play_walkthrough(memory, env, None, rng)
            finally:
                env.close()
            if not ok_won:
                continue  # a walkthrough that does not win cannot be the expert plan
            if won or truth is None:
                won_anyway += 1
                continue
            kinds[kind] += 1
            labels.append(kind)
            played.append((ep, truth, experts, ok_id, spec.task_type))
        # The same-type success is the walkthrough of the next game of that type (cyclic): another room.
        by_type: dict[str, list[str]] = {}
        for _, _, _, ok_id, tt in played:
            by_type.setdefault(tt, []).append(ok_id)
        cases = []
        for ep, truth, experts, ok_id, tt in played:
            oks = by_type[tt]
            other = oks[(oks.index(ok_id) + 1) % len(oks)]
            cases.append((ep, truth, experts, ok_id, other if other != ok_id else None))
        scores = score_failures(memory, cases, labels, domain)
        memory.close()
    return {"environment": "alfworld (real games, train)" + (", agent-like traces" if agentlike else ""),
            "failed_episodes": len(cases),
            "task_types": dict(Counter(tt for *_, tt in played)), "perturbations": dict(kinds),
            "perturbed_but_won": won_anyway,
            "policy": ("walkthrough with one step replaced (" + " | ".join(AGENT_PERTURBATIONS if agentlike else
                                                                         PERTURBATIONS) + "), then the rest of the "
                       "walkthrough; step limit = walkthrough length" +
                       ("; think: steps answered 'OK.' before a third of the commands and the mistake"
                        if agentlike else "")),
            **scores, "seconds": round(time.time() - t0, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=120, help="failed episodes to analyse")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps", type=float, default=0.25, help="chance of a random admissible action per step")
    p.add_argument("--garble", type=float, default=0.1, help="chance of a refused command per step")
    p.add_argument("--slack", type=float, default=1.3, help="step limit = slack x expert plan length")
    p.add_argument("--alfworld", type=int, default=100, help="failed real ALFWorld train games to analyse (0: none)")
    p.add_argument("--alfworld-dir", default=str(Path(__file__).resolve().parents[3] / "shared" / "alfworld" / "train"))
    p.add_argument("--domain", choices=("pack", "text"), default="pack",
                   help="read episodes with the household pack, or with the generic TextDomain only")
    p.add_argument("--agentlike", action=argparse.BooleanOptionalAction, default=True,
                   help="also score agent-like real ALFWorld traces (think: steps, old grammar, revisits, ...)")
    args = p.parse_args(argv)
    domain = make_domain(args.domain)
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
            d = demo_from_trace(load_trace(memory, ok_id, domain))
            demos.append(compaction(d))

        cases = [(ep, truth, experts, same_task[ep], type_success[ALFWORLD_TASK_TYPES[sd % 6]])
                 for ep, truth, experts, sd in failures]
        scores = score_failures(memory, cases, domain=domain)
        memory.close()
    result = {
        "bench": "reflection", "environment": "household", "failed_episodes": len(failures),
        "policy": f"perturbed expert eps={args.eps} garble={args.garble} step_limit={args.slack}x plan",
        **scores,
        "demo_compaction_mean": round(statistics.mean(demos), 4) if demos else None,
        "seconds": round(time.time() - t0, 1),
    }
    if args.alfworld:
        if importlib.util.find_spec("alfworld") is None:  # the game engine is optional
            result["alfworld"] = alfworld_walkthroughs(Path(args.alfworld_dir), args.alfworld, rng)
        else:
            root = Path(args.alfworld_dir).parent
            result["alfworld"] = alfworld_games(args.alfworld, seed=args.seed, root=root, domain=domain)
            if args.agentlike:
                result["alfworld_agentlike"] = alfworld_games(args.alfworld, seed=args.seed, root=root,
                                                              agentlike=True, domain=domain)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
