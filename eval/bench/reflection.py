"""How well reflection localizes the pivot of a failure, and how small its lessons and demos are.

    nice -n 10 python -m eval.bench.reflection [--episodes 30] [--seed 0] [--alfworld 24] [--domain pack,text]

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

`--domain pack,text` (default both) reads the same recorded episodes with the household pack and
with the generic TextDomain only: the difference is what the pack's knowledge adds to localizing
mistakes. Lessons are written (offline writer) under every condition and scored against the known
mistake: `at_mistake` (read at the true pivot, or its bad action is the true pivot's action),
`names_kind` (its words name the kind of mistake injected, where the kind is known: see
MISTAKE_WORDS) and `concrete` (it quotes an instance name like "apple 1": it would not transfer).
Real games cost about 3 s to load and 1-3 s per play here: `--alfworld N` bounds the run to N
failed games (each game is loaded once and played three times: its walkthrough, one perturbed
copy, one agent-like copy). Prints markdown tables, then a JSON object last.
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
         *, perturb: bool = True, kind_out: list[str] | None = None) -> tuple[str, bool, int | None, list[str | None]]:
    """One recorded episode; returns (episode id, won, ground-truth pivot, expert action per step).
    `kind_out` gets the kind of the first mistake appended: "admissible" (a random admissible
    command) or "garbled" (a command naming an object number that is not there)."""
    obs, info = env.reset()
    rec = memory.start_episode(goal=info["goal"], task_type=info["task_type"], task_id=info["task_id"],
                               split="train", environment="household")
    truth, experts, done = None, [], False
    while not done:
        optimal = env.optimal_actions()
        expert = min(optimal) if optimal else None
        r = rng.random()
        kind = "garbled"
        if not perturb or r >= eps + p_garble:
            action = expert
        elif r < eps:
            action, kind = rng.choice(info["admissible_commands"]), "admissible"
        else:
            action = garble(rng.choice(info["admissible_commands"]), rng)
        if truth is None and action not in optimal:
            truth = env.steps
            if kind_out is not None:
                kind_out.append(kind)
        experts.append(expert)
        admissible = list(info["admissible_commands"])
        fb, reward, done, info = env.step(action)
        rec.step(observation=obs, action=action, feedback=fb, reward=reward, admissible=admissible)
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


# Words a lesson uses when it names the kind of mistake injected (None: the kind is any admissible
# command, which has no name; such lessons are scored only on where they are read).
MISTAKE_WORDS = {
    "wrong_object": r"look-alike|resembl|wrong object|never (?:seen|shown)|not (?:there|present|in view)|"
                    r"does not exist|hallucinat",
    "garbled": r"look-alike|resembl|wrong object|never (?:seen|shown)|not (?:there|present|in view)|"
               r"does not exist|hallucinat",
    "lookalike": r"look-alike|resembl",
    "wrong_place": r"wrong place|not where|where .{0,40} is in view|went (?:somewhere|elsewhere)",
    "revisit": r"already (?:seen|visited|searched)|searched again|revisit|same result|repeated an earlier",
    "hallucinated": r"never (?:seen|shown|appeared)|not (?:there|present|in view)|does not exist|hallucinat",
    "old_grammar": r"not an admissible|not among the commands|not offered|not understood|invalid|no-op|refused",
    "admissible": None,
}


def lesson_text(lesson) -> str:
    return " ".join([lesson.trigger, lesson.bad_action, lesson.fix, str(lesson.provenance.get("mistake") or "")])


def score_failures(memory: SkillMemory, cases: Sequence[tuple[str, int, list[str | None], str | None, str | None]],
                   groups: Sequence[str] | None = None, domain=None) -> dict:
    """Pivot accuracy and lesson correctness per condition, over (episode, true pivot, expert per step,
    same-task success, same-type success) cases. With `groups` (the kind of mistake of each case),
    both are also broken down by kind.

    The expert's corrections are stored as directive feedback once (a second domain scoring the
    same memory finds them there); the conditions without a teacher read the trace without them."""
    d = domain if domain is not None else make_domain("pack")
    writer = OfflineWriter(domain=d)
    groups = list(groups) if groups is not None else ["all"] * len(cases)
    reasons: dict[str, Counter[str]] = {c: Counter() for c in CONDITIONS}
    off_by: dict[str, list[int]] = {c: [] for c in CONDITIONS}
    # per condition, per case: None (no lesson), "refused", or (at_mistake, names_kind or None, concrete)
    graded: dict[str, list] = {c: [] for c in CONDITIONS}
    lesson_tok, raw_tok, ratios = [], [], []
    for (ep, truth, experts, same_ok, type_ok), kind in zip(cases, groups):
        def bare(episode: str) -> "object":
            t = load_trace(memory, episode, d)
            t.directives = []  # no teacher in this condition
            return t

        trace = bare(ep)
        conds = {
            "trace_only": analyse(trace, None, d),
            "type_success": analyse(bare(ep), bare(type_ok) if type_ok else None, d),
            "same_task_success": analyse(bare(ep), bare(same_ok) if same_ok else None, d),
        }
        if not any(f.source == "expert" for f in memory.feedback_for(ep)):
            for i, s in enumerate(trace.steps):  # the expert corrects every non-optimal step it has an action for
                if i < len(experts) and experts[i] is not None and i >= truth and s.action != experts[i]:
                    memory.feedback(ep, i, corrected_action=experts[i], source="expert", text="")
        conds["expert_directive"] = analyse(load_trace(memory, ep, d), None, d)
        raw_tok.append(trace.raw_tokens)
        truth_action = ""
        words = MISTAKE_WORDS.get(kind)
        for c, a in conds.items():
            reasons[c][a.pivot.reason] += 1
            off_by[c].append((a.pivot.step if a.pivot.step is not None else -1) - truth)
            try:
                lesson = writer.write_lesson(a)
            except UnsafeLesson:  # the safety check refused it: the queue would leave the episode in error
                graded[c].append("refused")
                continue
            if lesson is None:  # no mistake the analysis can name: nothing is written
                graded[c].append(None)
                continue
            text = lesson_text(lesson)
            truth_action = a.slots.abstract(d.written(trace.steps[truth].action)) if truth < len(trace.steps) else ""
            step = lesson.provenance.get("rule_step", lesson.pivot_step)
            at = step == truth or (bool(lesson.bad_action) and lesson.bad_action == truth_action)
            named = bool(re.search(words, text, re.IGNORECASE)) if words else None
            graded[c].append((at, named, bool(_ENTITY.search(text))))
            if c == "type_success":
                lt = count_tokens(text)
                lesson_tok.append(lt)
                ratios.append(lt / max(1, trace.raw_tokens))
    n = len(cases)

    def lessons(idx: Sequence[int]) -> dict:
        out = {}
        for c in CONDITIONS:
            rows = [graded[c][i] for i in idx]
            done = [r for r in rows if isinstance(r, tuple)]
            named = [r[1] for r in done if r[1] is not None]
            out[c] = {"written": len(done), "none": sum(r is None for r in rows),
                      "refused": sum(r == "refused" for r in rows),
                      "at_mistake": round(sum(r[0] for r in done) / len(done), 3) if done else None,
                      "names_kind": round(sum(named) / len(named), 3) if named else None,
                      "concrete": sum(r[2] for r in done)}
        return out

    def pivots(idx: Sequence[int]) -> dict:
        return {c: {"exact": round(sum(off_by[c][i] == 0 for i in idx) / max(1, len(idx)), 3),
                    "within_1": round(sum(abs(off_by[c][i]) <= 1 for i in idx) / max(1, len(idx)), 3)}
                for c in CONDITIONS}

    by_group = {}
    if len(set(groups)) > 1 or groups[:1] != ["all"]:
        for g in sorted(set(groups)):
            idx = [i for i, x in enumerate(groups) if x == g]
            by_group[g] = {"n": len(idx), "pivot": pivots(idx), "lessons": lessons(idx)}
    everything = range(n)
    return {
        "pivot_accuracy": {c: v["exact"] for c, v in pivots(everything).items()},
        "pivot_within_1": {c: v["within_1"] for c, v in pivots(everything).items()},
        **({"by_kind": by_group} if by_group else {}),
        "pivot_early_late": {c: {"early": sum(x < 0 for x in off_by[c]), "late": sum(x > 0 for x in off_by[c])}
                             for c in CONDITIONS},
        "pivot_reasons": {c: dict(reasons[c]) for c in CONDITIONS},
        "domain": d.name,
        "lessons": lessons(everything),
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
             "wrong_object": [i for i, a in enumerate(walk) if a.startswith("take ")],
             "revisit": gos[1:], "hallucinated": list(range(len(walk)))}.get(kind)
    if where is None:
        return perturbation(walk, rng)
    if not where:
        kind, where = "hallucinated", list(range(len(walk)))
    return kind, rng.choice(where)


def _object_of(cmd: str) -> str:
    m = re.match(r"^\w+ ([a-z]+) \d+", cmd)
    return m.group(1) if m else ""


def lookalike(planned: str, admissible: Sequence[str], rng: random.Random) -> tuple[str, bool]:
    """Another object the same verb can act on here, one whose name resembles the planned one's when
    there is such (butterknife for knife, peppershaker for saltshaker): (command, resembles)."""
    verb, obj = (planned.split() or [""])[0], _object_of(planned)
    others = [c for c in admissible if c.startswith(verb + " ") and _object_of(c) not in ("", obj)]
    near = [c for c in others if _resembles(_object_of(c), obj)]
    if near:
        return rng.choice(near), True
    return (rng.choice(others), False) if others else (garble(planned, rng), False)


def _resembles(a: str, b: str) -> bool:
    return a != b and (a in b or b in a or (len(a) > 5 and len(b) > 5 and a[-5:] == b[-5:]))


def agent_wrong(planned: str, kind: str, admissible: Sequence[str], visited: Sequence[str], rng: random.Random) -> str:
    if kind == "wrong_object" and planned.startswith("take "):
        return lookalike(planned, admissible, rng)[0]
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
        admissible = list(info["admissible_commands"])
        fb, reward, done, info = env.step(action)
        rec.step(observation=obs, action=action, feedback=fb, reward=reward, admissible=admissible)
        feedback.append(fb)
        obs = fb
        if done:
            break
    rec.finish(success=info["won"], source="environment")
    return rec.id, bool(info["won"]), truth, experts, feedback


def alfworld_games(n: int, seed: int = 0, root: Path | None = None, max_games: int | None = None,
                   *, domains: Sequence[str] = ("pack",), agentlike: bool = True, plain: bool = True,
                   log=None) -> dict:
    """Pivot accuracy and lessons on n failed real ALFWorld train games (module doc), per domain.

    Each game is loaded once and played: its walkthrough to the win (the same-task success), a
    perturbed copy (`plain`), an agent-like copy (`agentlike`). Returns {"alfworld": ...,
    "alfworld_agentlike": ...}, each with the scores of every domain on the same episodes."""
    from eval.envs.alfworld_env import AlfworldEnv, list_tasks

    t0 = time.time()
    specs = list_tasks("train", min(max_games or 3 * n, 480), seed=seed, root=root)
    sets = [k for k, on in (("alfworld", plain), ("alfworld_agentlike", agentlike)) if on]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        memory = SkillMemory(Path(tmp) / "alfworld.db")
        played: dict[str, list] = {k: [] for k in sets}  # (failure, truth, experts, success, type, kind)
        won_anyway: Counter[str] = Counter()
        for spec in specs:
            if all(len(played[k]) >= n for k in sets):
                break
            env = AlfworldEnv(spec.task_id, root=root)
            try:
                env.reset()
                ok_id, ok_won, _, _, _ = play_walkthrough(memory, env, None, random.Random(0))
                if not ok_won:
                    continue  # a walkthrough that does not win cannot be the expert plan
                for k in sets:
                    if len(played[k]) >= n:
                        continue
                    like = k == "alfworld_agentlike"
                    rng = random.Random(f"{seed}:{spec.task_id}:{k}")
                    kind, at = (agent_perturbation if like else perturbation)(env.walkthrough, rng)
                    ep, won, truth, experts, _ = play_walkthrough(memory, env, (kind, at), rng, agentlike=like)
                    if won or truth is None:
                        won_anyway[k] += 1
                        continue
                    if like and kind == "wrong_object":
                        step = memory.steps(ep)[truth]
                        kind = "lookalike" if _resembles(_object_of(step.action), _object_of(env.walkthrough[at])) \
                            else kind
                    played[k].append((ep, truth, experts, ok_id, spec.task_type, kind))
            finally:
                env.close()
            if log:
                log(f"  {spec.task_id}: " + ", ".join(f"{k} {len(played[k])}/{n}" for k in sets)
                    + f" ({time.time() - t0:.0f} s)")
        for k in sets:
            # The same-type success is the walkthrough of the next game of that type (cyclic): another room.
            by_type: dict[str, list[str]] = {}
            for _, _, _, ok_id, tt, _ in played[k]:
                by_type.setdefault(tt, []).append(ok_id)
            cases = []
            for ep, truth, experts, ok_id, tt, _ in played[k]:
                oks = by_type[tt]
                other = oks[(oks.index(ok_id) + 1) % len(oks)]
                cases.append((ep, truth, experts, ok_id, other if other != ok_id else None))
            labels = [p[-1] for p in played[k]]
            like = k == "alfworld_agentlike"
            out[k] = {"environment": "alfworld (real games, train)" + (", agent-like traces" if like else ""),
                      "failed_episodes": len(cases),
                      "task_types": dict(Counter(p[4] for p in played[k])), "perturbations": dict(Counter(labels)),
                      "perturbed_but_won": won_anyway[k],
                      "policy": ("walkthrough with one step replaced (" + " | ".join(
                          AGENT_PERTURBATIONS if like else PERTURBATIONS) + "), then the rest of the "
                          "walkthrough; step limit = walkthrough length" +
                          ("; think: steps answered 'OK.' before a third of the commands and the mistake"
                           if like else "")),
                      "by_domain": {name: score_failures(memory, cases, labels, make_domain(name))
                                    for name in domains}}
        memory.close()
    for k in out:
        out[k]["seconds_all_sets"] = round(time.time() - t0, 1)
    return out


def table(title: str, res: dict) -> str:
    """A result's per-domain scores as markdown: pivot exact / within 1 and lessons, per evidence and per kind."""
    doms = list(res["by_domain"])
    lines = [f"### {title}: {res['failed_episodes']} failed episodes", "",
             "| evidence | " + " | ".join(f"{d}: pivot exact / within 1 | {d}: lessons at mistake / name kind"
                                         for d in doms) + " |",
             "|---|" + "---|---|" * len(doms)]

    def f(x) -> str:
        return "-" if x is None else f"{x:.2f}"

    for c in CONDITIONS:
        row = [c]
        for d in doms:
            r = res["by_domain"][d]
            les = r["lessons"][c]
            row += [f"{f(r['pivot_accuracy'][c])} / {f(r['pivot_within_1'][c])}",
                    f"{f(les['at_mistake'])} / {f(les['names_kind'])} (n={les['written']}, concrete {les['concrete']})"]
        lines.append("| " + " | ".join(row) + " |")
    kinds = sorted(next(iter(res["by_domain"].values())).get("by_kind", {}))
    if kinds:
        lines += ["", "| kind (n) | evidence | " + " | ".join(f"{d}: exact / within 1 | {d}: at mistake / name kind"
                                                           for d in doms) + " |",
                  "|---|---|" + "---|---|" * len(doms)]
        for k in kinds:
            for c in CONDITIONS:
                row = [f"{k} ({res['by_domain'][doms[0]]['by_kind'][k]['n']})", c]
                for d in doms:
                    g = res["by_domain"][d]["by_kind"][k]
                    les = g["lessons"][c]
                    row += [f"{f(g['pivot'][c]['exact'])} / {f(g['pivot'][c]['within_1'])}",
                            f"{f(les['at_mistake'])} / {f(les['names_kind'])}"]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=30, help="failed household episodes to analyse (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps", type=float, default=0.25, help="chance of a random admissible action per step")
    p.add_argument("--garble", type=float, default=0.1, help="chance of a refused command per step")
    p.add_argument("--slack", type=float, default=1.3, help="step limit = slack x expert plan length")
    p.add_argument("--alfworld", type=int, default=24,
                   help="failed real ALFWorld train games to analyse per trace style (0: none); about 10 s a game")
    p.add_argument("--alfworld-dir", default=str(Path(__file__).resolve().parents[3] / "shared" / "alfworld" / "train"))
    p.add_argument("--domain", default="pack,text",
                   help="comma-separated: pack (the household pack), text (the generic TextDomain only)")
    p.add_argument("--agentlike", action=argparse.BooleanOptionalAction, default=True,
                   help="also score agent-like real ALFWorld traces (think: steps, old grammar, revisits, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    domains = [x.strip() for x in args.domain.split(",") if x.strip()]
    bad = [x for x in domains if x not in ("pack", "text")]
    if bad or not domains:
        p.error(f"--domain takes pack, text or pack,text; got {args.domain!r}")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    rng = random.Random(args.seed)
    t0 = time.time()
    result: dict = {"bench": "reflection"}
    if args.episodes:
        result["household"] = household(args, domains, rng)
        log(f"household: {result['household']['failed_episodes']} failures ({time.time() - t0:.0f} s)")
    if args.alfworld:
        if importlib.util.find_spec("alfworld") is None:  # the game engine is optional
            result["alfworld"] = alfworld_walkthroughs(Path(args.alfworld_dir), args.alfworld, rng)
        else:
            result.update(alfworld_games(args.alfworld, seed=args.seed, root=Path(args.alfworld_dir).parent,
                                         domains=domains, agentlike=args.agentlike, log=log))
    result["seconds"] = round(time.time() - t0, 1)
    for k in ("household", "alfworld", "alfworld_agentlike"):
        if isinstance(result.get(k), dict) and "by_domain" in result[k]:
            print(table(k, result[k]) + "\n")
    print(json.dumps(result))
    return 0


def household(args, domains: Sequence[str], rng: random.Random) -> dict:
    """Failed household episodes of a perturbed expert, scored with each domain (module doc)."""
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        memory = SkillMemory(Path(tmp) / "bench.db")
        failures: list[tuple[str, int, list[str | None], int]] = []  # (episode, truth, experts, seed)
        kinds: list[str] = []
        demos, seed = [], 0
        type_success: dict[str, str] = {}
        while len(failures) < args.episodes and seed < 20 * args.episodes:
            task_type = ALFWORLD_TASK_TYPES[seed % len(ALFWORLD_TASK_TYPES)]
            env = HouseholdEnv(split="train", seed=seed, task_type=task_type)
            env.reset()  # the expert plans from the start state
            plan_len = len(env.expert_plan())
            env.step_limit = max(plan_len + 2, int(plan_len * args.slack))
            kind: list[str] = []
            ep, won, truth, experts = play(memory, env, rng, args.eps, args.garble, kind_out=kind)
            if not won and truth is not None:
                failures.append((ep, truth, experts, seed))
                kinds.append(kind[0] if kind else "admissible")
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
        demo_domain = make_domain(domains[0])
        for ok_id in list(same_task.values())[:60] + list(type_success.values()):
            d = demo_from_trace(load_trace(memory, ok_id, demo_domain))
            demos.append(compaction(d))
        cases = [(ep, truth, experts, same_task[ep], type_success[ALFWORLD_TASK_TYPES[sd % 6]])
                 for ep, truth, experts, sd in failures]
        by_domain = {name: score_failures(memory, cases, kinds, make_domain(name)) for name in domains}
        memory.close()
    return {"environment": "household", "failed_episodes": len(failures), "perturbations": dict(Counter(kinds)),
            "policy": f"perturbed expert eps={args.eps} garble={args.garble} step_limit={args.slack}x plan",
            "by_domain": by_domain,
            "demo_compaction_mean": round(statistics.mean(demos), 4) if demos else None,
            "seconds": round(time.time() - t0, 1)}


if __name__ == "__main__":
    sys.exit(main())
