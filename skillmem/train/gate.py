"""The eval gate and policy versions: a candidate replaces the current policy only if it is at least as good.

Versions are `policy_versions` rows (status candidate | promoted | rejected | retired),
each with its parent (the policy it was trained from), its path and its metrics. The
current policy of a namespace is its newest promoted row; `rollback` retires it and
promotes its parent again.

    vid = register(engine, "default", result.path, kind="cpu", parent_id=current_id(...), config=...)
    decision = gate(engine, vid, evaluate=harness_score)   # evaluate(policy) -> float, higher is better
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from sqlalchemy import select, update

from ..episode import utcnow
from ..store import PolicyVersionRow
from .data import Example

T = PolicyVersionRow.__table__


def new_version_id(kind: str) -> str:
    """A fresh policy version id: kind, time, a random suffix."""
    return f"{kind}-{utcnow().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def register(engine: Any, namespace: str, path: str | Path, *, kind: str, parent_id: Optional[str] = None,
             config: Optional[dict[str, Any]] = None, metrics: Optional[dict[str, Any]] = None,
             version_id: Optional[str] = None) -> str:
    """A new `candidate` row for the policy saved at `path`; returns its id."""
    vid = version_id or new_version_id(kind)
    with engine.begin() as conn:
        # An absolute path: the row is read by processes started anywhere. Non-finite numbers
        # become null: PostgreSQL's JSON has no NaN, and a NaN loss must not fail the round.
        conn.execute(T.insert().values(id=vid, namespace=namespace, kind=kind, parent_id=parent_id,
                                       status="candidate", path=str(Path(path).expanduser().resolve()),
                                       config=finite_json(config or {}), metrics=finite_json(metrics or {}),
                                       created_at=utcnow()))
    return vid


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def get_version(engine: Any, version_id: str) -> PolicyVersionRow:
    with engine.connect() as conn:
        row = conn.execute(select(T).where(T.c.id == version_id)).mappings().first()
    if row is None:
        raise KeyError(f"no policy version {version_id!r}; see `skillmem policy list`")
    return PolicyVersionRow.model_validate(dict(row))


def list_versions(engine: Any, namespace: str) -> list[PolicyVersionRow]:
    with engine.connect() as conn:
        rows = conn.execute(select(T).where(T.c.namespace == namespace).order_by(T.c.created_at, T.c.id)).mappings()
        return [PolicyVersionRow.model_validate(dict(r)) for r in rows]


def current_version(engine: Any, namespace: str) -> Optional[PolicyVersionRow]:
    """The policy in use: the newest promoted version, or None (the untrained default)."""
    promoted = [v for v in list_versions(engine, namespace) if v.status == "promoted"]
    return promoted[-1] if promoted else None


def latest_version(engine: Any, namespace: str) -> Optional[PolicyVersionRow]:
    versions = list_versions(engine, namespace)
    return versions[-1] if versions else None


def _set(engine: Any, version_id: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(T).where(T.c.id == version_id).values(**values))


def reject(engine: Any, version_id: str, reason: str) -> None:
    """Reject a candidate without gating it (e.g. its training stopped); the reason goes into its metrics."""
    cand = get_version(engine, version_id)
    if cand.status != "candidate":
        raise ValueError(f"policy version {version_id} is {cand.status}, not a candidate")
    _set(engine, version_id, status="rejected", metrics={**(cand.metrics or {}), "rejected_because": reason})


@dataclass
class GateDecision:
    """What the gate decided and on which scores."""

    version_id: str
    promoted: bool
    candidate_score: float
    current_score: Optional[float]
    current_id: Optional[str]


def gate(engine: Any, version_id: str, evaluate: Callable[[Any], float], *,
         load: Optional[Callable[[str], Any]] = None, baseline: Any = None) -> GateDecision:
    """Score the candidate and the current policy with the same `evaluate`; promote the
    candidate if its score is at least the current one's, reject it otherwise.

    With no promoted version yet, the candidate is compared with `baseline` (e.g. the
    untrained policy) when given, else promoted.
    """
    if load is None:
        from ..policy import load_policy as load
    cand = get_version(engine, version_id)
    if cand.status != "candidate":
        raise ValueError(f"policy version {version_id} is {cand.status}, not a candidate; train a new one")
    cur = current_version(engine, cand.namespace)
    candidate_score = float(evaluate(load(cand.path)))
    current_score: Optional[float] = None
    if cur is not None:
        current_score = float(evaluate(load(cur.path)))
    elif baseline is not None:
        current_score = float(evaluate(baseline))
    promoted = current_score is None or candidate_score >= current_score
    metrics = dict(cand.metrics or {})
    metrics.update(score=candidate_score, compared_with=cur.id if cur else ("baseline" if baseline is not None else None),
                   compared_score=current_score, gated_at=utcnow().isoformat())
    _set(engine, version_id, status="promoted" if promoted else "rejected", metrics=metrics)
    return GateDecision(version_id, promoted, candidate_score, current_score, cur.id if cur else None)


def rollback(engine: Any, namespace: str) -> Optional[str]:
    """Retire the current policy and promote its parent again; returns the new current id
    (None: back to the untrained default)."""
    cur = current_version(engine, namespace)
    if cur is None:
        raise ValueError(f"namespace {namespace!r} has no promoted policy to roll back")
    _set(engine, cur.id, status="retired")
    parent = cur.parent_id
    if parent:
        _set(engine, parent, status="promoted")
        return parent
    now = current_version(engine, namespace)
    return now.id if now else None


# --------------------------------------------------------------------------- default evaluation


def heldout_evaluator(examples: Sequence[Example]) -> Callable[[Any], float]:
    """The offline gate when no harness is given: on held-out states, the share of decisions
    where the policy (without memory) picks the demonstrated or corrected action, minus the
    share where it repeats a pivot's bad action."""
    pos = [e for e in examples if e.kind in ("demo", "directive")]
    neg = [e for e in examples if e.kind == "negative"]

    def evaluate(policy: Any) -> float:
        def pick(e: Example) -> str:
            with torch.no_grad():
                return e.candidates[int(torch.argmax(policy.action_logprobs(e.prompt(False), e.candidates)))]

        good = sum(pick(e) == e.target for e in pos) / max(1, len(pos))
        bad = sum(pick(e) == e.target for e in neg) / max(1, len(neg))
        return good - bad

    return evaluate
