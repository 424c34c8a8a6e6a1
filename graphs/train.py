"""The training graph: collect examples from the store -> train a candidate -> eval gate -> promote or reject.

    from graphs.train import graph
    graph.invoke({"db": "skillmem.db", "namespace": "default", "out_dir": "runs/p1"},
                 config={"configurable": {"evaluate": harness_score}})   # evaluate(policy) -> float

Without an `evaluate` in the config, the gate scores policies on held-out task groups
(:func:`skillmem.train.gate.heldout_evaluator`). `train_config` (a dict of TrainConfig
fields) tunes the run; `force` trains even when the trigger says there is too little new data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from skillmem.policy import CPUPolicy, load_policy
from skillmem.store import init_schema, make_engine, resolve_url
from skillmem.train import gate as gates
from skillmem.train.data import Example, collect_examples, split_heldout
from skillmem.train.trainer import Trainer, TrainConfig, should_train


class TrainState(TypedDict, total=False):
    db: Optional[str]
    namespace: str
    out_dir: str
    train_config: dict[str, Any]
    force: bool
    # filled in by the nodes
    reason: str
    counts: dict[str, int]
    examples: list[Example]
    heldout: list[Example]
    version_id: Optional[str]
    status: str  # skipped | promoted | rejected
    scores: dict[str, Any]


def _engine(state: TrainState) -> Any:
    engine = make_engine(resolve_url(state.get("db")))
    init_schema(engine)
    return engine


def _config(state: TrainState) -> TrainConfig:
    return TrainConfig(**state.get("train_config", {}))


def collect(state: TrainState) -> dict[str, Any]:
    """Read examples if the trigger fires (or `force`)."""
    engine, cfg, ns = _engine(state), _config(state), state.get("namespace", "default")
    go, why, counts = should_train(engine, ns, cfg)
    if not go and not state.get("force"):
        return {"reason": why, "counts": counts, "examples": [], "status": "skipped"}
    examples = collect_examples(engine, ns, max_history=cfg.max_history, max_candidates=cfg.max_candidates,
                                min_group_size=cfg.min_group_size, seed=cfg.seed)
    train, held = split_heldout(examples, cfg.heldout_fraction, cfg.seed)
    return {"reason": why, "counts": counts, "examples": train, "heldout": held or train,
            "status": "collected" if train else "skipped"}


def train(state: TrainState) -> dict[str, Any]:
    """Train from the current policy (or a fresh CPU policy) and register the candidate."""
    engine, cfg, ns = _engine(state), _config(state), state.get("namespace", "default")
    current = gates.current_version(engine, ns)
    policy = load_policy(current.path) if current else CPUPolicy()
    result = Trainer(policy, state["examples"], cfg, Path(state["out_dir"])).train()
    vid = gates.register(engine, ns, result.path, kind=getattr(policy, "kind", "cpu"),
                         parent_id=current.id if current else None, config=cfg.__dict__,
                         metrics={"data": state.get("counts", {}),
                                  "train": {"status": result.status, "loss": result.loss, "steps": result.steps}})
    if result.status != "finished":
        gates._set(engine, vid, status="rejected")
        return {"version_id": vid, "status": "rejected"}
    return {"version_id": vid, "status": "candidate"}


def gate(state: TrainState, config: RunnableConfig) -> dict[str, Any]:
    """Compare the candidate with the current policy (or the untrained one) on the same evaluation."""
    engine = _engine(state)
    evaluate = ((config or {}).get("configurable", {}) or {}).get("evaluate") or \
        gates.heldout_evaluator(state.get("heldout") or state["examples"])
    baseline = None if gates.current_version(engine, state.get("namespace", "default")) else CPUPolicy()
    d = gates.gate(engine, state["version_id"], evaluate, baseline=baseline)
    return {"status": "promoted" if d.promoted else "rejected",
            "scores": {"candidate": d.candidate_score, "current": d.current_score, "current_id": d.current_id}}


def _after_collect(state: TrainState) -> str:
    return "train" if state.get("status") == "collected" else END


def _after_train(state: TrainState) -> str:
    return "gate" if state.get("status") == "candidate" else END


builder = StateGraph(TrainState)
builder.add_node("collect", collect)
builder.add_node("train", train)
builder.add_node("gate", gate)
builder.add_edge(START, "collect")
builder.add_conditional_edges("collect", _after_collect, ["train", END])
builder.add_conditional_edges("train", _after_train, ["gate", END])
builder.add_edge("gate", END)
graph = builder.compile()
