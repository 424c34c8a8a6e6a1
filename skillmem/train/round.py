"""One training round: trigger -> collect -> train -> register -> gate. The one place a round happens.

`skillmem train`, the training graph (`graphs/train.py`) and the harness
(`eval.runner.train_policy`) all call :func:`train_round`; a new backend (another trainer,
another kind of policy) plugs in by the policy it passes, not by another copy of these steps.

    result = train_round(engine, "default", "runs/p1", TrainConfig(steps=300))
    result.status      # skipped | no_examples | stopped | candidate | promoted | rejected
    result.version_id  # the policy_versions row the round registered (None if it trained nothing)

1. **trigger**: :func:`~skillmem.train.trainer.should_train` (enough new episodes or
   lessons since the last version's data), unless `force`;
2. **collect**: the store's examples (:func:`~skillmem.train.data.collect_examples`, split into
   train and held-out task groups when the gate scores held-out examples), or the caller's
   `collect()`;
3. **train**: :class:`~skillmem.train.trainer.Trainer` from the current policy of the same kind
   (or a new one), or from the caller's `policy`, optionally against a `teacher`;
4. **register**: a `candidate` row in `policy_versions` with its parent, config and data counts;
   a run the NaN guard stopped is rejected at once;
5. **gate**: :func:`~skillmem.train.gate.gate` with the caller's `evaluate(policy) -> float`
   (default: held-out examples) against the current policy, or, when there is none, the
   policy as it was before this round's training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import gate as gates
from .data import Example, collect_examples, split_heldout
from .trainer import Trainer, TrainConfig, TrainResult, should_train


@dataclass
class RoundResult:
    """What one round did, and why."""

    status: str  # skipped (trigger) | no_examples | stopped (training did not finish) | candidate | promoted | rejected
    reason: str  # the trigger's reason, or why the round stopped
    counts: dict[str, int] = field(default_factory=dict)  # the store's data counts the trigger saw
    examples: int = 0  # examples trained on
    heldout: int = 0  # examples held out for the default gate
    version_id: Optional[str] = None
    train: Optional[TrainResult] = None
    decision: Optional[gates.GateDecision] = None

    @property
    def promoted(self) -> bool:
        return self.status == "promoted"


def starting_policy(current: Any, kind: Optional[str] = None, new: Optional[Callable[[], Any]] = None) -> Any:
    """The policy a round trains: the current version when it is of `kind` (any kind when None),
    else `new()` (default: CPUPolicy())."""
    from ..policy import CPUPolicy, load_policy

    if current is not None and kind in (None, current.kind):
        return load_policy(current.path)
    return new() if new is not None else CPUPolicy()


def train_round(engine: Any, namespace: str, out_dir: str | Path, config: Optional[TrainConfig] = None, *,
                policy: Any = None, kind: Optional[str] = None, new_policy: Optional[Callable[[], Any]] = None,
                collect: Optional[Callable[[], Sequence[Example]]] = None, holdout: bool = True,
                teacher: Any = None, evaluate: Optional[Callable[[Any], float]] = None, baseline: Any = None,
                force: bool = False, gate: bool = True, version_id: Optional[str] = None,
                load: Optional[Callable[[str], Any]] = None) -> RoundResult:
    """Run one round for `namespace` (see the module's docstring); the weights go to `out_dir`/policy.

    `policy`: the policy to train (default: :func:`starting_policy` of the current version,
    `kind` and `new_policy`). `collect()`: the examples (default: the store's, by `config`).
    `holdout`: keep `config.heldout_fraction` of the task groups out of training for the
    default gate. `evaluate`: the gate's score (default: those held-out examples, or all of
    them when nothing is held out). `baseline`: what a first candidate must beat (default:
    the policy as it was before training). `gate=False` leaves the version a candidate.
    `version_id`: the id to register (default: a new one), for an `evaluate` that records under it.
    `load(path)`: how the gate loads saved policies (default: :func:`skillmem.policy.load_policy`).
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    go, why, counts = should_train(engine, namespace, config)
    if not go and not force:
        return RoundResult("skipped", why, counts)

    examples = list(collect()) if collect is not None else collect_examples(
        engine, namespace, max_history=config.max_history, max_candidates=config.max_candidates,
        min_group_size=config.min_group_size, seed=config.seed)
    train, held = split_heldout(examples, config.heldout_fraction, config.seed) if holdout else (examples, [])
    if not train:
        return RoundResult("no_examples", "no training examples; record finished episodes with verified outcomes "
                           "first", counts)

    current = gates.current_version(engine, namespace)
    if policy is None:
        policy = starting_policy(current, kind, new_policy)
    kind = getattr(policy, "kind", None) or kind or "cpu"
    baseline_dir = None
    if current is None and baseline is None and gate:
        # The untrained policy is what a first candidate must beat; saved before training changes it.
        baseline_dir = policy.save(out / "baseline")
    result = Trainer(policy, train, config, out, teacher=teacher).train()
    metrics = {"data": counts, "train": {"status": result.status, "loss": result.loss, "steps": result.steps,
                                         "examples": len(train)}}
    vid = gates.register(engine, namespace, result.path or out / "policy", kind=kind,
                         parent_id=current.id if current else None, config=asdict(config), metrics=metrics,
                         version_id=version_id)
    done = RoundResult("candidate", why, counts, examples=len(train), heldout=len(held), version_id=vid, train=result)
    if result.status != "finished" or result.path is None:
        gates.reject(engine, vid, f"training stopped: {result.status}")
        done.status, done.reason = "stopped", f"training stopped: {result.status}"
        return done
    if not gate:
        return done
    if load is None:
        from ..policy import load_policy as load
    if baseline is None and baseline_dir is not None:
        baseline = load(str(baseline_dir))
    done.decision = gates.gate(engine, vid, evaluate or gates.heldout_evaluator(held or train), baseline=baseline,
                               load=load)
    done.status = "promoted" if done.decision.promoted else "rejected"
    return done
