"""The runner: conditions side by side on the same tasks and seeds, in rounds.

Each seed has its own store (`<run>/seed<N>.db`). A round gathers experience on the
train split (the base policy with the memory it has so far), writes memory from it
(lessons from failures, demonstrations from successes), optionally trains the policy, and
then evaluates every condition on the same held-out tasks. Each seed draws its own held-out
tasks (`held_out_tasks`: `eval_tasks` of them, none of them a game the seed trains on): on
household n seeds play n disjoint lists, on ALFWorld and TWX independent draws that mostly
differ (they can share a game); the manifest lists each seed's (`held_out`). Results go to
`<run>/results.jsonl`, one line per evaluated episode (with the experience episodes seen so
far), and what reflection wrote to `<run>/memory.jsonl`; a killed run started again with the
same directory skips what is already there. With `curve=True` the rounds are a learning curve:
evaluation after 0 experience episodes, then 1, 2, 4... up to `train_tasks`.

The `trained_lessons` condition measures lessons on a competent agent: after training, the
deployed (trained) policy plays train tasks itself (new ones, not those it was trained on:
`own_tasks`), without memory, into a memory
of its own (namespace `<env>.trained`, same store); its failures get the expert's directive
feedback and become lessons there, and it is evaluated with those lessons only. Memory is never written from an evaluation
split: :func:`write_memory` refuses, and the store marks evaluation episodes `skipped`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Optional

from tqdm import tqdm

from skillmem import SkillMemory
from skillmem.episode import EVAL_SPLITS
from skillmem.tokens import count_tokens

from .envs.base import TaskSpec, list_tasks, make_env

# name → (memory kinds retrieved, how the policy sees it, which policy)
CONDITIONS: dict[str, dict[str, Any]] = {
    "no_memory": dict(kinds=(), policy="base"),
    "demos_only": dict(kinds=("demonstration",), policy="base"),
    "lessons_only": dict(kinds=("lesson",), policy="base"),
    "memory": dict(kinds=("lesson", "demonstration"), policy="base"),
    "memory_text_only": dict(kinds=("lesson", "demonstration"), policy="base", view="text"),
    "memory_hints_only": dict(kinds=("lesson", "demonstration"), policy="base", view="hints"),
    "raw_trajectories": dict(kinds=("raw",), policy="base"),
    "trained": dict(kinds=(), policy="trained"),
    "trained_memory": dict(kinds=("lesson", "demonstration"), policy="trained"),
    # The trained policy with the lessons of its own train-split failures (the "own" memory).
    "trained_lessons": dict(kinds=("lesson",), policy="trained", memory="own"),
}
OWN_SUFFIX = ".trained"  # namespace of the deployed policy's own experience
DEFAULT_CONDITIONS = ("no_memory", "demos_only", "lessons_only", "memory", "raw_trajectories",
                      "trained", "trained_memory")


class EvalSplitWriteError(RuntimeError):
    pass


@dataclass
class RunConfig:
    """Every knob of a run; saved in the run's manifest."""

    out: str = "runs/demo"
    env: str = "household"  # where conditions are evaluated
    train_env: str = ""  # where experience is gathered (default: env); memory carries across
    train_split: str = "train"
    eval_split: str = "valid_unseen"
    train_tasks: int = 36  # experience episodes per round and seed
    eval_tasks: int = 30  # evaluation tasks per condition and seed (the same for every condition)
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 2
    conditions: tuple[str, ...] = DEFAULT_CONDITIONS
    policy: str = "cpu"  # cpu | random | openai (any OpenAI-compatible endpoint) | package.module:attr (a user's agent)
    base_url: str = ""  # openai: the endpoint, e.g. http://127.0.0.1:8080/v1 ("" = OpenAI; key from OPENAI_API_KEY)
    model: str = ""  # openai: the model name ("" = the endpoint's only model)
    llm_tools: bool = False  # openai: offer the act tool and read tool calls (needs a server with tool calling)
    llm_json: bool = False  # openai: ask for JSON answers (response_format json_object)
    llm_timeout: float = 120.0  # openai: seconds to wait for one answer
    llm_max_tokens: int = 256  # openai: tokens one answer may have (a thought and the action fit)
    # Retrieval: the harness's own choice over skillmem's RetrievalConfig (5 lessons, 1
    # demonstration): every household figure in the README was measured with 4 and 2.
    k: int = 4  # lessons retrieved (general and task-type), at most
    k_demos: int = 2  # demonstrations of the task type retrieved, at most
    token_budget: int = 400  # tokens of memory in the context, at most
    raw_k: int = 2  # failed trajectories pasted by the raw-trajectory baseline
    step_limit: int = 40
    expert_feedback: bool = True  # the env's expert gives directive feedback at the pivot of failures
    own_tasks: str = "new"  # trained_lessons: the deployed policy plays new train tasks ("new") or the round's ("same")
    train: bool = True  # train the policy after writing memory (conditions "trained*")
    train_steps: int = 150  # optimizer steps per training pass (1 + dagger_rounds passes per round)
    train_lr: float = 3e-3  # learning rate of training rounds
    rollouts: bool = True  # replay the train tasks with the policy+memory teacher for distillation
    dagger_rounds: int = 1  # times the trained student plays the train tasks to be labelled by the teacher
    gate_tasks: int = 12  # valid_seen tasks the eval gate plays with candidate and current policy
    workers: int = 1  # processes playing evaluation episodes at once
    executor: str = "local"  # local (processes on this machine) | ray (a Ray cluster)
    ray_address: str = ""  # "" starts a local Ray; "auto" or host:port joins a cluster
    embedder: str = "default"  # default (all-MiniLM-L6-v2) | hashing
    curve: bool = False  # rounds are a learning curve: 0, 1, 2, 4... up to train_tasks experience episodes
    # The Domain reflection, hints, policy features and training data read the world with:
    # "pack" = the household pack for household/alfworld, TextDomain elsewhere; "text" = TextDomain
    # only (what skillmem knows of a world it has no pack for: the gap is the pack's share of a win).
    domain: str = "pack"


def make_domain(cfg: "RunConfig") -> Any:
    """The Domain of this run, passed explicitly to reflection, policies and training (RunConfig.domain)."""
    from skillmem.domain import TextDomain

    if cfg.domain == "text":
        return TextDomain()
    if cfg.domain != "pack":
        raise ValueError(f"--domain must be 'pack' or 'text', got {cfg.domain!r}")
    envs = {cfg.env, cfg.train_env or cfg.env}
    if envs <= {"household", "alfworld"}:
        from skillmem.domains.alfworld import HouseholdDomain

        return HouseholdDomain()
    return TextDomain()


def write_memory(memory: SkillMemory, split: str, writer: Any = None, *, progress: bool = False,
                 domain: Any = None) -> dict[str, int]:
    """Reflect on the finished episodes of `split`: lessons from failures, demos from successes."""
    if split in EVAL_SPLITS:
        raise EvalSplitWriteError(f"refusing to write memory from evaluation split {split!r}: "
                                  "nothing learned on evaluation tasks may feed evaluation")
    from skillmem.reflect.queue import reflect_pending
    from skillmem.reflect.writers import OfflineWriter

    return reflect_pending(memory, writer or OfflineWriter(), progress=progress, domain=domain)


# ----------------------------------------------------------------------------- policies


def load_agent(spec: str) -> Any:
    """`package.module:attr` → the user's callable, Runnable or compiled graph."""
    if ":" not in spec:
        raise ValueError(f"--agent wants package.module:attr, got {spec!r}")
    mod, attr = spec.split(":", 1)
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def make_base_policy(cfg: RunConfig, seed: int) -> Any:
    if cfg.policy == "random":
        from skillmem.policy.random import RandomPolicy

        return RandomPolicy(seed)
    if cfg.policy == "openai":
        import os

        from skillmem.llm import LLMConfig
        from skillmem.policy.openai_policy import OpenAIPolicy

        # The key comes from the environment only: the run's manifest saves the config.
        key = os.environ.get("SKILLMEM_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
        return OpenAIPolicy(LLMConfig(base_url=cfg.base_url or None, api_key=key, model=cfg.model,
                                      timeout=cfg.llm_timeout, temperature=0.0, max_tokens=cfg.llm_max_tokens),
                            tools=cfg.llm_tools, json_mode=cfg.llm_json, domain=make_domain(cfg))
    if cfg.policy == "cpu":
        from skillmem.policy.cpu import CPUPolicy

        import torch

        torch.manual_seed(seed)
        return CPUPolicy(domain=make_domain(cfg))
    return load_agent(cfg.policy)


def as_agent(policy: Any, view: str = "both") -> Callable[[dict], Any]:
    """A built-in policy as a state → command function; a user's agent is passed the state as is."""
    if not hasattr(policy, "act"):
        return policy

    from skillmem.policy.base import context_view

    def agent(state: dict) -> str:
        # memory_text_only / memory_hints_only: the memory shown one way only (words, or hints)
        ctx = context_view(state.get("context_obj"), view)
        return policy.act(state["goal"], state.get("history", []), ctx, state["admissible"])

    return agent


# ----------------------------------------------------------------------------- retrieval


def raw_trajectory_context(memory: SkillMemory, task_type: str, k: int) -> SimpleNamespace:
    """Reflexion-style baseline: the last k failed train trajectories of the task type, pasted whole."""
    from sqlalchemy import text as sql

    with memory.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sql(
            "SELECT id FROM episodes WHERE namespace = :ns AND task_type = :tt AND outcome = 'failure' "
            "AND split NOT IN ('valid_seen', 'valid_unseen', 'test') ORDER BY started_at DESC, id LIMIT :k"),
            {"ns": memory.namespace, "tt": task_type, "k": k})]
    parts = []
    for i, ep_id in enumerate(ids):
        ep = memory.get_episode(ep_id)
        lines = [f"Failed attempt {i + 1}: {ep.goal}"]
        lines += [f"> {s.action}\n{s.feedback}" for s in memory.steps(ep_id)]
        parts.append("\n".join(lines))
    text = "\n\n".join(parts)
    return SimpleNamespace(text=text, lessons=[], demonstrations=[], tokens=count_tokens(text))


def retrieval_config(cfg: RunConfig) -> Any:
    """skillmem's RetrievalConfig with the run's k, k_demos and token budget."""
    from skillmem.retrieve import RetrievalConfig

    return RetrievalConfig(k=cfg.k, k_demos=cfg.k_demos, token_budget=cfg.token_budget)


def make_retriever(memory: SkillMemory, cfg: RunConfig, kinds: tuple[str, ...], view: str = "both"
                   ) -> Optional[Callable]:
    """The condition's retrieval; with view="hints" nothing is put in the prompt (0 tokens)."""
    if not kinds:
        return None
    if kinds == ("raw",):
        return lambda state: raw_trajectory_context(memory, state["task_type"], cfg.raw_k)

    from skillmem.policy.base import context_view

    retrieval = retrieval_config(cfg)

    def retrieve(state: dict) -> Any:
        ctx = memory.retrieve(state["goal"], state.get("observation", ""), task_type=state["task_type"],
                              config=retrieval,
                              episode_id=state.get("episode_id"), step_index=state.get("step", 0), kinds=kinds)
        return context_view(ctx, "hints") if view == "hints" else ctx

    return retrieve


# ----------------------------------------------------------------------------- episodes


def llm_usage(policy: Any, before: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """What a model-backed policy spent since `before` (its stats then): None for other policies."""
    stats = getattr(policy, "stats", None)
    if stats is None or not hasattr(stats, "as_dict"):
        return None
    now = dataclasses.asdict(stats)
    return {k: round(v - (before or {}).get(k, 0), 4) for k, v in now.items()}


def _stats(policy: Any) -> Optional[dict[str, Any]]:
    stats = getattr(policy, "stats", None)
    return dataclasses.asdict(stats) if stats is not None and hasattr(stats, "as_dict") else None


def play(spec: TaskSpec, agent: Any, memory: SkillMemory, cfg: RunConfig, *, retriever: Optional[Callable],
         policy_version: str = "", expert_feedback: bool = False) -> dict[str, Any]:
    """One episode through the agent graph; returns its result row."""
    from graphs.agent import build_agent_graph, initial_state

    env = make_env(spec, step_limit=cfg.step_limit)
    graph = build_agent_graph(env, agent, memory, retriever=retriever, environment=spec.env,
                              step_limit=cfg.step_limit)
    state = initial_state(env, split=spec.split, policy_version=policy_version)
    expert_trace: list[Optional[str]] = []
    # An env that finds the pivot itself (TextWorld-Express: by replay, after the episode) is asked
    # once at the end; the others are watched step by step.
    env_pivot = callable(getattr(env, "pivot", None))
    if expert_feedback and hasattr(env, "optimal_actions") and not env_pivot:
        # Remember the expert's view at each step, to give directive feedback at the pivot. Only up
        # to the first step off its plan: that is the pivot, and an expert that replans (TextWorld-
        # Express replays the game) costs more than the step.
        inner_step = env.step

        def step(action: str):
            if not expert_trace or expert_trace[-1][0] in expert_trace[-1][1] or not expert_trace[-1][1]:
                expert_trace.append((action, sorted(env.optimal_actions()), env.expert_action()
                                     if callable(getattr(env, "expert_action", None)) else None))
            return inner_step(action)

        env.step = step  # type: ignore[method-assign]
    t0 = time.perf_counter()
    found = retry_prefix = None
    try:
        final = graph.invoke(state, {"recursion_limit": 4 * cfg.step_limit + 20})
        if expert_feedback and env_pivot and not final.get("won"):
            found = env.pivot()
            if found:
                expert_trace = [(a, [a], None) for a in env.actions[: found[0]]]
                expert_trace.append((env.actions[found[0]], [found[1]], found[1]))
                # The lesson's correction is at the first harmful step; the guided retry starts at the
                # first step off the plan, so its demonstration does not carry the detours before it.
                first = env.pivot(harmful_first=False)
                retry_prefix = list(env.actions[: first[0]]) if first else None
    finally:
        _close(env)
    row = {"task_id": spec.task_id, "task_type": final.get("task_type", ""), "won": bool(final.get("won")),
           "steps": int(final.get("step", 0)), "context_tokens": int(final.get("context_tokens") or 0),
           "episode_id": final.get("episode_id"), "seconds": time.perf_counter() - t0}
    if expert_feedback and not row["won"] and expert_trace:
        for i, (action, optimal, expert) in enumerate(expert_trace):
            if optimal and action not in optimal:
                memory.feedback(final["episode_id"], i, corrected_action=expert or optimal[0],
                                text=f"instead of '{action}', do '{expert or optimal[0]}'", source="expert")
                prefix = retry_prefix if retry_prefix is not None else [a for a, _, _ in expert_trace[:i]]
                row["guided"] = guided_retry(spec, prefix, memory, cfg, parent=final["episode_id"])
                break
    return row


def _close(env: Any) -> None:
    # A real game holds an interpreter's worth of state: free it as soon as the episode ends.
    if callable(getattr(env, "close", None)):
        env.close()


def guided_retry(spec: TaskSpec, prefix: list[str], memory: SkillMemory, cfg: RunConfig, *, parent: str) -> bool:
    """Retry a failed task with the teacher's guidance from the pivot on (R3L's reflect-then-retry).

    The agent's own actions up to the pivot are replayed, then the environment's expert
    takes over. The retry is its own train episode, verified by the environment like any
    other; a success becomes a demonstration, so even a policy that never wins alone
    gives memory something concrete to keep. Only for train splits: evaluation has no teacher.
    """
    env = make_env(spec, step_limit=cfg.step_limit)
    obs, info = env.reset()
    with memory.episode(goal=info["goal"], task_type=info["task_type"], task_id=info["task_id"], split=spec.split,
                        environment=spec.env, meta={"guided_retry_of": parent, "pivot": len(prefix)}) as ep:
        done, won = False, False
        for t in range(cfg.step_limit):
            action = prefix[t] if t < len(prefix) else env.expert_action()
            if action is None:
                break
            admissible = list(info["admissible_commands"])
            nxt, reward, done, info = env.step(action)
            ep.step(observation=obs, action=action, feedback=nxt, reward=reward, admissible=admissible)
            obs, won = nxt, bool(info.get("won"))
            if done:
                break
        ep.finish(success=won, source="environment")
    _close(env)
    return won


# ----------------------------------------------------------------------------- the run


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    except Exception:
        return ""


def manifest(cfg: RunConfig) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("skillmem", "torch", "langgraph", "faiss-cpu", "sentence-transformers", "sqlmodel"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    out = {"config": dataclasses.asdict(cfg), "versions": versions, "python": sys.version.split()[0],
           "platform": platform.platform(), "git_commit": _git_commit(), "started": time.time(),
           # each seed's own held-out tasks (held_out_tasks); before this field existed every seed
           # played one shared list, and those figures are not comparable with these
           "held_out": {str(s): [t.task_id for t in held_out_tasks(cfg, s)] for s in cfg.seeds}}
    from .envs.base import TWX_ENVS

    games = {e: dataclasses.asdict(_twx_game(e)) for e in {cfg.env, cfg.train_env or cfg.env} if e in TWX_ENVS}
    if games:
        out["twx_games"] = games  # the generation parameters and listing rule of each TextWorld-Express env
    return out


def _twx_game(env: str) -> Any:
    from .envs.twexpress import GAMES

    return GAMES[env]


class Run:
    """A run directory: manifest, results, and what has been done (for resuming)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.dir = Path(cfg.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.results_path = self.dir / "results.jsonl"
        self.done: set[tuple] = set()
        if self.results_path.exists():
            for line in self.results_path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that episode is played again
                self.done.add(_key(r))
        man = self.dir / "manifest.json"
        if not man.exists():
            man.write_text(json.dumps(manifest(cfg), indent=1))

    def record(self, row: dict[str, Any]) -> None:
        with open(self.results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.add(_key(row))


def _key(r: dict[str, Any]) -> tuple:
    return (r["seed"], r["round"], r["phase"], r["condition"], r["task_id"])


def own_tasks(cfg: RunConfig, seed: int, rnd: int, specs: list[TaskSpec], seen: list[TaskSpec]) -> list[TaskSpec]:
    """The train tasks the deployed policy plays for its own lessons (RunConfig.own_tasks).

    "new": as many train tasks as this round's, none of those it was trained on: on those it has
    learned its way, and its few failures there (mostly where to look first) are not the mistakes
    it makes on tasks it has not seen. "same": this round's experience tasks."""
    if cfg.own_tasks == "same":
        return specs
    if cfg.own_tasks != "new":
        raise ValueError(f"--own-tasks must be 'new' or 'same', got {cfg.own_tasks!r}")
    trained_on = {s.task_id for s in seen}
    pool = list_tasks(cfg.train_env or cfg.env, cfg.train_split, len(specs) + len(seen), seed=seed * 1000 + 500 + rnd)
    return [s for s in pool if s.task_id not in trained_on][: len(specs)]


def train_specs(cfg: RunConfig, seed: int) -> list[TaskSpec]:
    """Every train task the seed's rounds play as experience (the lists `run` draws)."""
    train_env = cfg.train_env or cfg.env
    if cfg.curve:
        return list_tasks(train_env, cfg.train_split, cfg.train_tasks, seed=seed * 1000 + 1)
    return [s for rnd in range(1, cfg.rounds + 1)
            for s in list_tasks(train_env, cfg.train_split, cfg.train_tasks, seed=seed * 1000 + rnd)]


def held_out_tasks(cfg: RunConfig, seed: int) -> list[TaskSpec]:
    """The seed's own held-out tasks: `eval_tasks` of the eval split, listed with seed 10_000 + seed.

    Household's lists for different seeds are disjoint (until the split runs out of them); ALFWorld's
    and TWX's are independent shuffles, which mostly differ but may share a game (valid_seen, 8 a
    seed: 21 distinct games of 24), and TWX repeats its list when asked for more games than it
    lists. The manifest's `held_out` says which. None is a game the seed trains on: a clash
    raises rather than measuring a game the memory was written from."""
    specs = list_tasks(cfg.env, cfg.eval_split, cfg.eval_tasks, seed=10_000 + seed)
    clash = {s.task_id for s in specs} & {s.task_id for s in train_specs(cfg, seed)}
    if clash:
        raise RuntimeError(f"held-out tasks of seed {seed} are also its train tasks: {sorted(clash)[:5]}")
    return specs


def memory_for(cfg: RunConfig, seed: int, own: bool = False) -> SkillMemory:
    """The seed's memory; `own`: the deployed policy's own experience (trained_lessons), same store."""
    embedder = None
    if cfg.embedder == "hashing":
        from skillmem.embed import HashingEmbedder

        embedder = HashingEmbedder()
    ns = (cfg.train_env or cfg.env) + (OWN_SUFFIX if own else "")
    return SkillMemory(Path(cfg.out) / f"seed{seed}.db", namespace=ns, embedder=embedder)


def checkpoints(cfg: RunConfig) -> list[int]:
    """Experience episodes seen at each round's evaluation (curve: 0, then doubling up to all)."""
    if not cfg.curve:
        return [cfg.train_tasks * r for r in range(1, cfg.rounds + 1)]
    out, n = [0], 1
    while n < cfg.train_tasks:
        out.append(n)
        n *= 2
    return out + [cfg.train_tasks] if cfg.train_tasks else out


def log_memory(r: "Run", row: dict[str, Any]) -> None:
    """One line of `<run>/memory.jsonl`: what a round's reflection wrote and what memory keeps."""
    with open(r.dir / "memory.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def run(cfg: RunConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) everything the config asks; returns the run directory."""
    import torch

    # Decisions are small: one thread each avoids oversubscribing a shared machine.
    torch.set_num_threads(1)
    if cfg.policy == "openai":
        # A hosted or served model acts as it is: this trainer does not train it (export its data
        # with `skillmem export` and train it with `skillmem train --policy trl` instead).
        dropped = [c for c in cfg.conditions if CONDITIONS.get(c, {}).get("policy") == "trained"]
        if dropped:
            log(f"policy openai is not trained by the runner: leaving out conditions {dropped}")
        cfg.conditions = tuple(c for c in cfg.conditions if c not in dropped)
        cfg.train = False
    r = Run(cfg)
    unknown = [c for c in cfg.conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {sorted(CONDITIONS)}")
    if cfg.eval_split not in EVAL_SPLITS:
        raise ValueError(f"eval split must be one of {sorted(EVAL_SPLITS)}, got {cfg.eval_split!r}")
    pool = make_pool(cfg)
    train_env = cfg.train_env or cfg.env
    wants_own = any(CONDITIONS[c].get("memory") == "own" for c in cfg.conditions)
    seen_at = checkpoints(cfg)
    for seed in cfg.seeds:
        eval_specs = held_out_tasks(cfg, seed)
        memory = memory_for(cfg, seed)
        own = memory_for(cfg, seed, own=True) if wants_own else None
        base = make_base_policy(cfg, seed)
        if isinstance(pool, InProcess):  # play in this process with this memory and policy
            _WORKER_STATE[(cfg.out, seed)] = (memory, base, {}, own)
        trained = None
        seen: list[TaskSpec] = []
        # A curve reveals one list of train tasks bit by bit; otherwise each round has new tasks.
        curve_specs = list_tasks(train_env, cfg.train_split, cfg.train_tasks, seed=seed * 1000 + 1) if cfg.curve else []
        for i_rnd, n_seen in enumerate(seen_at):
            rnd = i_rnd if cfg.curve else i_rnd + 1
            # 1. experience on train, with the memory so far
            if cfg.curve:
                specs = curve_specs[len(seen):n_seen]
            else:
                specs = list_tasks(train_env, cfg.train_split, cfg.train_tasks, seed=seed * 1000 + rnd)
            seen += specs
            retr = make_retriever(memory, cfg, ("lesson", "demonstration"))
            agent = as_agent(trained or base)
            todo = [s for s in specs if (seed, rnd, "train", "experience", s.task_id) not in r.done]
            for spec in tqdm(todo, desc=f"seed {seed} round {rnd}: experience", disable=not progress, leave=False):
                before = _stats(trained or base)
                row = play(spec, agent, memory, cfg, retriever=retr, expert_feedback=cfg.expert_feedback)
                if before is not None:
                    row["llm"] = llm_usage(trained or base, before)
                r.record({**row, "seed": seed, "round": rnd, "phase": "train", "condition": "experience"})
            # 2. write memory (idempotent: episodes already reflected on are not redone)
            stats = write_memory(memory, cfg.train_split, domain=make_domain(cfg))
            log_memory(r, {"seed": seed, "round": rnd, "experience": n_seen, "namespace": memory.namespace,
                           "reflected": stats.done, "lessons_written": stats.lessons,
                           "demonstrations_written": stats.demonstrations, "no_lesson": stats.no_lesson,
                           **memory_size(memory)})
            log(f"seed {seed} round {rnd}: reflected on {stats.done} episodes: {stats.lessons} lessons "
                f"(+{stats.more_lessons} more from the same failures), "
                f"{stats.demonstrations} demonstrations written (merged or skipped when near-duplicates)")
            # 3. train
            if (cfg.train and seen and any(CONDITIONS[c]["policy"] == "trained" for c in cfg.conditions)
                    and hasattr(base, "act")):
                trained = train_policy(memory, cfg, seed, rnd, parent=trained or base, specs=seen) or trained
            # 3b. the deployed policy's own failures on train tasks, for trained_lessons
            if own is not None and hasattr(base, "act") and specs:
                deployed = as_agent(trained or base)
                todo = [s for s in own_tasks(cfg, seed, rnd, specs, seen)
                        if (seed, rnd, "train", "own_experience", s.task_id) not in r.done]
                for spec in tqdm(todo, desc=f"seed {seed} round {rnd}: own experience", disable=not progress,
                                 leave=False):
                    row = play(spec, deployed, own, cfg, retriever=None, expert_feedback=cfg.expert_feedback,
                               policy_version=str(getattr(trained, "version_id", "") or ""))
                    r.record({**row, "seed": seed, "round": rnd, "phase": "train", "condition": "own_experience"})
                stats = write_memory(own, cfg.train_split, domain=make_domain(cfg))
                log_memory(r, {"seed": seed, "round": rnd, "experience": n_seen, "namespace": own.namespace,
                               "reflected": stats.done, "lessons_written": stats.lessons,
                               "demonstrations_written": stats.demonstrations, "no_lesson": stats.no_lesson,
                               **memory_size(own)})
            # 4. evaluate every condition on the seed's held-out tasks (the same for every condition)
            for cond in cfg.conditions:
                spec_c = CONDITIONS[cond]
                if spec_c["policy"] == "trained" and not hasattr(base, "act"):
                    continue  # a user's agent is evaluated as it is: no trainer touches it
                # A rejected candidate leaves the deployed policy as it was (the base one).
                ref = _policy_ref(trained, cfg, seed, rnd) if spec_c["policy"] == "trained" and trained else None
                todo = [s for s in eval_specs if (seed, rnd, "eval", cond, s.task_id) not in r.done]
                jobs = [(cfg, seed, cond, spec, ref) for spec in todo]
                for row in tqdm(pool.map(jobs), total=len(jobs), desc=f"seed {seed} round {rnd}: {cond}",
                                disable=not progress, leave=False):
                    r.record({**row, "seed": seed, "round": rnd, "phase": "eval", "experience": n_seen})
        _WORKER_STATE.pop((cfg.out, seed), None)
        memory.close()
        if own is not None:
            own.close()
    pool.close()
    return r.dir


# ----------------------------------------------------------------------------- workers
#
# Evaluation episodes are independent: each is a job (config, seed, condition, task,
# policy reference) that any process can play against the seed's store. A worker keeps
# its own SkillMemory (and embedder) per store for its life; policies travel as paths.

_WORKER_STATE: dict[Any, Any] = {}


def _policy_ref(policy: Any, cfg: RunConfig, seed: int, rnd: int) -> str:
    path = getattr(policy, "saved_path", None)
    if path is None:
        path = Path(cfg.out) / f"policy-seed{seed}-round{rnd}-eval"
        policy.save(path)
        policy.saved_path = path
    return str(path)


def play_job(job: tuple) -> dict[str, Any]:
    """Play one evaluation episode in whatever process runs this; returns its result row."""
    cfg, seed, cond, spec, policy_ref = job
    key = (cfg.out, seed)
    if key not in _WORKER_STATE:
        import torch

        torch.set_num_threads(1)
        _WORKER_STATE[key] = (memory_for(cfg, seed), make_base_policy(cfg, seed), {}, None)
    memory, base, loaded, own = _WORKER_STATE[key]
    spec_c = CONDITIONS[cond]
    if spec_c.get("memory") == "own":
        if own is None:
            own = memory_for(cfg, seed, own=True)
            _WORKER_STATE[key] = (memory, base, loaded, own)
        read_from = own
    else:
        read_from = memory
    policy = base
    if policy_ref:
        if policy_ref not in loaded:
            from skillmem.policy import load_policy

            loaded[policy_ref] = load_policy(policy_ref, make_domain(cfg))
            loaded[policy_ref].eval()
        policy = loaded[policy_ref]
    before = _stats(policy)
    row = play(spec, as_agent(policy, spec_c.get("view", "both")), read_from, cfg,
               retriever=make_retriever(read_from, cfg, spec_c["kinds"], spec_c.get("view", "both")))
    if before is not None:
        row["llm"] = llm_usage(policy, before)
    return {**row, "condition": cond, "memory_size": memory_size(read_from)}


class InProcess:
    """workers=1: play the jobs here, in order."""

    def map(self, jobs: list) -> Iterable[dict[str, Any]]:
        return (play_job(j) for j in jobs)

    def close(self) -> None:
        _WORKER_STATE.clear()


class LocalProcesses:
    """workers>1: a pool of local processes, kept for the whole run (models load once each)."""

    def __init__(self, workers: int):
        import multiprocessing as mp

        # spawn, not fork: torch, FAISS and SQLite connections do not survive a fork safely.
        self.pool = mp.get_context("spawn").Pool(workers)

    def map(self, jobs: list) -> Iterable[dict[str, Any]]:
        return self.pool.imap_unordered(play_job, jobs)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class RayWorkers:
    """executor="ray": the same jobs as Ray tasks, on the cluster `ray.init(address)` reaches.

    Every node must see the run directory (the seed's SQLite store) — a shared file
    system, or a PostgreSQL store for the memory.
    """

    def __init__(self, workers: int, address: Optional[str] = None):
        import ray

        if not ray.is_initialized():
            ray.init(address=address or None, num_cpus=None if address else workers,
                     include_dashboard=False, log_to_driver=False)
        self.ray = ray
        self.remote = ray.remote(num_cpus=1)(play_job)

    def map(self, jobs: list) -> Iterable[dict[str, Any]]:
        pending = [self.remote.remote(j) for j in jobs]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])

    def close(self) -> None:
        pass  # the caller owns the Ray runtime


def make_pool(cfg: RunConfig) -> Any:
    if cfg.executor == "ray":
        return RayWorkers(cfg.workers, cfg.ray_address)
    if cfg.executor != "local":
        raise ValueError(f"executor must be 'local' or 'ray', got {cfg.executor!r}")
    return LocalProcesses(cfg.workers) if cfg.workers > 1 else InProcess()


def memory_size(memory: SkillMemory) -> dict[str, int]:
    from sqlalchemy import text as sql

    with memory.engine.connect() as conn:
        les = conn.execute(sql("SELECT COUNT(*) FROM lessons WHERE namespace = :ns AND status = 'active'"),
                           {"ns": memory.namespace}).scalar()
        dem = conn.execute(sql("SELECT COUNT(*) FROM demonstrations WHERE namespace = :ns AND status = 'active'"),
                           {"ns": memory.namespace}).scalar()
    return {"lessons": int(les or 0), "demonstrations": int(dem or 0)}


def train_policy(memory: SkillMemory, cfg: RunConfig, seed: int, rnd: int, parent: Any,
                 specs: Optional[list[TaskSpec]] = None) -> Any:
    """Distill the policy-with-memory into a copy of the policy; keep it only if the gate says it is no worse.

    The teacher is the untrained policy reading retrieved memory as hints (what the
    `memory` condition plays); the student is the copy, without memory. Examples come from
    the store (demonstrations, directive feedback, pivots, distillation on recorded states)
    and from replaying this seed's train tasks so far (`specs`, `skillmem.train.rollouts`): the teacher
    plays (distillation on its states, imitation of its wins), the trained student plays
    (distillation on the states its own mistakes lead to, DAgger), and training continues
    on everything. The hint weight stays fixed, so the trained policy still follows memory.

    The gate plays `gate_tasks` valid_seen tasks without memory with the candidate and with
    the current policy (or the untrained one) and promotes the candidate if it wins at
    least as often. The round itself (register, gate) is skillmem's `train_round`, the same one
    `skillmem train` runs; this function only says what the harness adds (examples from
    replay, the teacher, the gate's games). Returns the promoted policy, or None.
    """
    import copy

    import torch

    from skillmem.policy import load_policy
    from skillmem.train import gate as gates
    from skillmem.train.data import collect_examples
    from skillmem.train.rollouts import rollout_examples
    from skillmem.train.round import train_round
    from skillmem.train.trainer import TrainConfig, Trainer

    contexts: dict[tuple[str, str], Any] = {}

    def context(goal: str, observation: str, task_type: str) -> Any:
        # Once per goal (with its first observation), not per step: an embedding per step
        # would cost more than the training itself.
        if (goal, task_type) not in contexts:
            contexts[goal, task_type] = memory.retrieve(goal, observation, task_type=task_type,
                                                        config=retrieval_config(cfg), record=False)
        return contexts[goal, task_type]

    out = Path(cfg.out) / f"policy-seed{seed}-round{rnd}"
    teacher = make_base_policy(cfg, seed)
    teacher.eval()
    policy = copy.deepcopy(parent)
    if isinstance(getattr(policy, "hint_weight", None), torch.nn.Parameter):
        policy.hint_weight.requires_grad_(False)  # memory keeps its say when it is there
    tcfg = TrainConfig(steps=cfg.train_steps, seed=seed, withdraw_until=0.0, lr=cfg.train_lr)

    def collect() -> list:
        examples = collect_examples(memory.engine, memory.namespace, seed=seed, max_history=cfg.step_limit,
                                    context_fn=lambda goal, tt: context(goal, "", tt), domain=make_domain(cfg))
        if not examples or not cfg.rollouts:
            return examples
        train_env = cfg.train_env or cfg.env
        tasks = specs if specs is not None else [
            s for r in range(1, rnd + 1)
            for s in list_tasks(train_env, cfg.train_split, cfg.train_tasks, seed=seed * 1000 + r)]
        envs = [lambda s=s: make_env(s, step_limit=cfg.step_limit) for s in tasks]

        played, _ = rollout_examples(envs, teacher, context, step_limit=cfg.step_limit, seed=seed)
        examples = examples + played
        for it in range(cfg.dagger_rounds):
            Trainer(policy, examples, tcfg, out / f"dagger{it}", teacher=teacher).train()
            played, _ = rollout_examples(envs, teacher, context, student=policy, step_limit=cfg.step_limit,
                                         seed=seed + it + 1)
            examples = examples + played
        return examples

    vid = gates.new_version_id("cpu")  # known before the gate: its episodes are recorded under it
    gate_env = cfg.train_env or cfg.env
    # The gate's tasks are held out from training and are never the evaluation tasks.
    gate_split = "valid_unseen" if (gate_env, "valid_seen") == (cfg.env, cfg.eval_split) else "valid_seen"
    gate_specs = list_tasks(gate_env, gate_split, cfg.gate_tasks, seed=20_000 + seed)

    def evaluate(policy: Any) -> float:
        policy.eval() if hasattr(policy, "eval") else None
        wins = [play(s, as_agent(policy), memory, cfg, retriever=None, policy_version=vid)["won"] for s in gate_specs]
        return sum(wins) / len(wins)

    # Every round trains (force): the harness decides when, not the store's trigger; the
    # whole training set is used, the gate plays held-out tasks instead.
    r = train_round(memory.engine, memory.namespace, out, tcfg, policy=policy, collect=collect, holdout=False,
                    teacher=teacher, evaluate=evaluate, baseline=parent, force=True, version_id=vid,
                    load=lambda path: load_policy(path, make_domain(cfg)))
    if not r.promoted:
        return None
    result = r.train
    policy = load_policy(result.path, make_domain(cfg))
    policy.eval()
    policy.version_id = vid
    return policy
