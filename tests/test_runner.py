"""The harness: the agent graph, conditions side by side, resume, report, the eval-split guard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from eval.runner import EvalSplitWriteError, RunConfig, run, write_memory
from eval.report import summarize, load
from skillmem import SkillMemory


def keyword_agent(state: dict) -> str:
    """A user's own agent: prefers commands that share words with the goal, else the first."""
    goal = set(state["goal"].lower().replace(".", "").split())
    best = max(state["admissible"], key=lambda a: (len(goal & set(a.split())), -len(a)))
    return best


def _cfg(tmp_path, **kw) -> RunConfig:
    base = dict(out=str(tmp_path / "run"), train_tasks=6, eval_tasks=4, seeds=(0,), rounds=1,
                conditions=("no_memory", "memory", "raw_trajectories"), policy="random", step_limit=15,
                embedder="hashing", train=False)
    base.update(kw)
    return RunConfig(**base)


def test_memory_is_never_written_from_an_evaluation_split(tmp_path):
    mem = SkillMemory(tmp_path / "m.db")
    for split in ("valid_seen", "valid_unseen", "test"):
        with pytest.raises(EvalSplitWriteError, match="refusing"):
            write_memory(mem, split)
    # And episodes recorded on evaluation splits never enter the reflection queue.
    with mem.episode(task="x", split="valid_unseen") as ep:
        ep.step(action="look", feedback="Nothing happens.")
        ep.finish(success=False, source="environment")
    assert mem.get_episode(ep.id).reflection_status.value == "skipped"


def test_run_side_by_side_and_report(tmp_path):
    cfg = _cfg(tmp_path)
    out = run(cfg, progress=False, log=lambda s: None)
    rows = load(out)
    ev = [r for r in rows if r["phase"] == "eval"]
    assert {r["condition"] for r in ev} == set(cfg.conditions)
    # the same tasks under every condition
    tasks = {c: sorted(r["task_id"] for r in ev if r["condition"] == c) for c in cfg.conditions}
    assert len({tuple(v) for v in tasks.values()}) == 1 and len(tasks["memory"]) == 4
    s = summarize(rows)
    assert set(s["conditions"]) == set(cfg.conditions)
    from eval.report import write_report

    md = write_report(out)
    assert "| no_memory |" in md.read_text()
    assert (out / "learning_curve.png").exists() and (out / "report.json").exists()
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["seeds"] == [0] and "git_commit" in man
    assert sorted(man["held_out"]["0"]) == tasks["memory"]
    # evaluation episodes are in the store, marked as never to be reflected on
    mem = SkillMemory(out / "seed0.db", namespace="household")
    assert all(e.reflection_status.value == "skipped" for e in mem.episodes(split="valid_unseen"))


def test_each_seed_plays_its_own_held_out_tasks_none_of_them_trained_on(tmp_path):
    from eval.runner import held_out_tasks, train_specs

    cfg = _cfg(tmp_path, seeds=(0, 1), conditions=("no_memory", "memory"), train_tasks=3, eval_tasks=3,
               step_limit=8)
    out = run(cfg, progress=False, log=lambda s: None)
    rows = load(out)
    man = json.loads((out / "manifest.json").read_text())
    played = {}
    for seed in (0, 1):
        ev = [r for r in rows if r["phase"] == "eval" and r["seed"] == seed]
        by_cond = {c: sorted(r["task_id"] for r in ev if r["condition"] == c) for c in cfg.conditions}
        assert by_cond["no_memory"] == by_cond["memory"]  # every condition on the seed's same tasks
        played[seed] = by_cond["memory"]
        assert len(played[seed]) == 3  # --eval-tasks is per seed
        assert sorted(man["held_out"][str(seed)]) == played[seed]
        trained_on = {r["task_id"] for r in rows if r["phase"] == "train" and r["seed"] == seed}
        assert trained_on and not trained_on & set(played[seed])
        assert {s.task_id for s in train_specs(cfg, seed)} == trained_on
    assert not set(played[0]) & set(played[1])  # two seeds, six games
    # The same seed always draws the same tasks (a resumed run plays what it started with).
    assert [s.task_id for s in held_out_tasks(cfg, 1)] == man["held_out"]["1"]


def test_memory_hints_only_shows_no_lesson_text_and_memory_text_only_gives_no_hints():
    """memory_hints_only once rendered the lessons into the prompt anyway (context_text fell back on
    the rows when the text was empty); memory_text_only pasted every lesson, speaking or not."""
    from types import SimpleNamespace as NS

    from eval.runner import as_agent
    from skillmem.domain import TextDomain
    from skillmem.policy import make_prompt
    from skillmem.retrieve import render_memory

    d = TextDomain()
    start = NS(trigger="at the start", bad_action="open door 1", fix="open box 2", provenance={})
    later = NS(trigger="the last action failed", bad_action="open door 3", fix="open box 4", provenance={})
    ctx = NS(lessons=[start, later], demonstrations=[], text=render_memory([start, later], [])[0], tokens=30)
    admissible = ["open box 2", "open door 1", "open box 4", "look"]
    seen = {}

    class Recorder:  # a policy that keeps the prompt it was given
        def act(self, goal, history, context, admissible):
            seen["prompt"] = make_prompt(goal, history, context, admissible, domain=d)
            return admissible[0]

    state = {"goal": "find the coin", "history": [], "admissible": admissible, "context_obj": ctx}
    as_agent(Recorder(), "hints")(state)
    assert seen["prompt"].memory == "" and seen["prompt"].hints, "hints only: no word of memory, its hints"
    assert seen["prompt"].hints.bonus.get("open box 2", 0) > 0 and "open box 4" not in seen["prompt"].hints.bonus
    as_agent(Recorder(), "text")(state)
    assert seen["prompt"].hints is None, "text only: no hints"
    assert "open box 2" in seen["prompt"].memory and "open box 4" not in seen["prompt"].memory
    as_agent(Recorder(), "both")(state)
    assert "open box 2" in seen["prompt"].memory and seen["prompt"].hints


def test_killed_run_resumes_where_it_stopped(tmp_path):
    cfg = _cfg(tmp_path, conditions=("no_memory",))
    code = textwrap.dedent(f"""
        import os, json
        from eval import runner
        orig = runner.Run.record
        n = 0
        def record(self, row):
            global n
            orig(self, row)
            n += 1
            if n == 5:
                os._exit(9)   # killed mid-run
        runner.Run.record = record
        runner.run(runner.RunConfig(**json.loads({json.dumps(json.dumps(cfg.__dict__))})), progress=False)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 9, p.stderr[-2000:]
    assert len(load(tmp_path / "run")) == 5
    run(cfg, progress=False, log=lambda s: None)
    rows = load(tmp_path / "run")
    keys = [(r["phase"], r["condition"], r["task_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6 + 4  # nothing played twice, nothing missing


def test_a_users_own_agent_runs_under_every_memory_condition(tmp_path):
    from eval.run import main

    assert main(["--out", str(tmp_path / "run"), "--agent", "test_runner:keyword_agent", "--seeds", "0",
                 "--rounds", "1", "--train-tasks", "4", "--eval-tasks", "3", "--step-limit", "10",
                 "--embedder", "hashing", "--no-progress",
                 "--conditions", "no_memory", "memory", "trained"]) == 0
    rows = load(tmp_path / "run")
    # "trained" needs a trainable policy: a user's agent is evaluated as it is.
    assert {r["condition"] for r in rows if r["phase"] == "eval"} == {"no_memory", "memory"}


def _eval_rows(run_dir):
    return sorted((r["condition"], r["task_id"], r["won"], r["steps"]) for r in load(run_dir) if r["phase"] == "eval")


def test_parallel_local_workers_give_the_same_results(tmp_path):
    # The CPU policy decides deterministically, so where an episode is played changes nothing.
    one = run(_cfg(tmp_path / "a", conditions=("no_memory", "memory"), policy="cpu"), progress=False,
              log=lambda s: None)
    two = run(_cfg(tmp_path / "b", conditions=("no_memory", "memory"), policy="cpu", workers=2), progress=False,
              log=lambda s: None)
    assert _eval_rows(one) == _eval_rows(two)


def test_the_same_runner_on_a_local_ray(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = run(_cfg(tmp_path / "r", conditions=("no_memory", "memory"), policy="cpu", executor="ray",
                       workers=2), progress=False, log=lambda s: None)
        ref = run(_cfg(tmp_path / "l", conditions=("no_memory", "memory"), policy="cpu"), progress=False,
                  log=lambda s: None)
        assert _eval_rows(out) == _eval_rows(ref)
    finally:
        ray.shutdown()


def test_checkpoints_double_up_to_all_experience():
    from eval.runner import checkpoints

    assert checkpoints(RunConfig(train_tasks=20, curve=True)) == [0, 1, 2, 4, 8, 16, 20]
    assert checkpoints(RunConfig(train_tasks=8, curve=True)) == [0, 1, 2, 4, 8]
    assert checkpoints(RunConfig(train_tasks=6, rounds=2)) == [6, 12]


def test_learning_curve_and_trained_lessons_from_the_deployed_policys_own_failures(tmp_path):
    """A curve run evaluates after 0, 1, 2, 4 experience episodes; trained_lessons reads only the lessons
    written from the deployed policy's own train-split failures, kept in a namespace of their own."""
    from eval.report import write_report

    cfg = _cfg(tmp_path, policy="cpu", train=True, train_steps=5, rollouts=False, gate_tasks=2, train_tasks=4,
               eval_tasks=2, curve=True, conditions=("no_memory", "trained", "trained_lessons"))
    out = run(cfg, progress=False, log=lambda s: None)
    rows = load(out)
    ev = [r for r in rows if r["phase"] == "eval"]
    assert sorted({r["experience"] for r in ev}) == [0, 1, 2, 4]
    assert sorted({r["round"] for r in ev}) == [0, 1, 2, 3]
    own = [r for r in rows if r["condition"] == "own_experience"]
    assert len(own) == 4 and all(r["phase"] == "train" for r in own)  # each train task once, by the deployed policy
    mem = [json.loads(x) for x in (out / "memory.jsonl").read_text().splitlines()]
    assert {m["namespace"] for m in mem} == {"household", "household.trained"}
    own_mem = SkillMemory(out / "seed0.db", namespace="household.trained")
    own_eps = own_mem.episodes(split="train")
    failed = [e for e in own_eps if e.outcome.value == "failure" and not (e.meta or {}).get("guided_retry_of")]
    if failed:  # its lessons come from its own failures, never from the base policy's experience
        base_ids = {e.id for e in SkillMemory(out / "seed0.db", namespace="household").episodes(split="train")}
        for les in own_mem.lessons():
            assert set(les.source_episodes) <= {e.id for e in own_eps} and not set(les.source_episodes) & base_ids
    md = write_report(out).read_text()
    assert "| experience episodes | no_memory | trained | trained_lessons |" in md
    assert "lessons written" in md
