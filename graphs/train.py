"""The training graph: one training round (trigger -> collect -> train -> register -> gate) as a LangGraph node.

    from graphs.train import graph
    graph.invoke({"db": "skillmem.db", "namespace": "default", "out_dir": "runs/p1"},
                 config={"configurable": {"evaluate": harness_score}})   # evaluate(policy) -> float

The round itself is :func:`skillmem.train.round.train_round` (the same one `skillmem train`
and the harness run). Without an `evaluate` in the config, the gate scores policies on
held-out task groups (:func:`skillmem.train.gate.heldout_evaluator`). `train_config` (a dict
of TrainConfig fields) tunes the run; `force` trains even when the trigger says there is too
little new data.
"""

from __future__ import annotations

from typing import Any, Optional, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from skillmem.store import init_schema, make_engine, resolve_url
from skillmem.train.round import train_round
from skillmem.train.trainer import TrainConfig


class TrainState(TypedDict, total=False):
    db: Optional[str]
    namespace: str
    out_dir: str
    train_config: dict[str, Any]
    force: bool
    # filled in by the round
    reason: str
    counts: dict[str, int]
    examples: int
    heldout: int
    version_id: Optional[str]
    status: str  # skipped | no_examples | stopped | promoted | rejected
    scores: dict[str, Any]


def round_node(state: TrainState, config: RunnableConfig) -> dict[str, Any]:
    """Run one round on the state's store and report what it did."""
    engine = make_engine(resolve_url(state.get("db")))
    init_schema(engine)
    evaluate = ((config or {}).get("configurable", {}) or {}).get("evaluate")
    try:
        r = train_round(engine, state.get("namespace", "default"), state["out_dir"],
                        TrainConfig(**state.get("train_config", {})), force=bool(state.get("force")),
                        evaluate=evaluate)
    finally:
        engine.dispose()
    out: dict[str, Any] = {"status": r.status, "reason": r.reason, "counts": r.counts, "examples": r.examples,
                           "heldout": r.heldout, "version_id": r.version_id}
    if r.decision is not None:
        d = r.decision
        out["scores"] = {"candidate": d.candidate_score, "current": d.current_score, "current_id": d.current_id}
    return out


builder = StateGraph(TrainState)
builder.add_node("round", round_node)
builder.add_edge(START, "round")
builder.add_edge("round", END)
graph = builder.compile()
