"""One training round: trigger -> collect -> train -> register -> gate. The one place a round happens.

`skillmem train` (every kind of policy), the training graph (`graphs/train.py`) and the
harness (`eval.runner.train_policy`) all call :func:`train_round`; a new trainer plugs in as
a :class:`Backend`, not as another copy of these steps. Two backends ship:
:class:`TorchBackend` (skillmem's own trainer: the CPU policy, `HFPolicy`) and
`skillmem.train.trl_backend.TRLBackend` (chat models through TRL: SFT, then DPO or KTO, LoRA).

    result = train_round(engine, "default", "runs/p1", TrainConfig(steps=300))
    result = train_round(engine, "default", "runs/c1", TrainConfig(), backend=TRLBackend(TRLConfig(base_model=...)))
    result.status      # skipped | no_examples | stopped | candidate | promoted | rejected
    result.version_id  # the policy_versions row the round registered (None if it trained nothing)

1. **trigger**: :func:`~skillmem.train.trainer.should_train` (enough new episodes or
   lessons since the last version's data), unless `force`;
2. **collect**: the store's examples (the backend's `collect`, split into train and held-out
   task groups when the gate scores held-out examples), or the caller's `collect()`;
3. **train**: the backend, from the current policy of its kind or a new one (TorchBackend:
   :class:`~skillmem.train.trainer.Trainer`, optionally against a `teacher`);
4. **register**: a `candidate` row in `policy_versions` with its parent (the current policy,
   which `rollback` brings back), the backend's config and the data counts; a run the NaN
   guard stopped is rejected at once;
5. **gate**: :func:`~skillmem.train.gate.gate` with the caller's `evaluate(policy) -> float`
   (default: held-out examples) against the current policy, or, when there is none, the
   backend's baseline (the policy as it was before this round's training).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

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


class Backend(Protocol):
    """How one kind of policy trains inside a round; the round does trigger, split, register and gate."""

    kind: str  # the policy_versions kind it registers (cpu, hf, hf-chat, ...), known after `start`

    def collect(self, engine: Any, namespace: str) -> list[Example]:
        """The store's training examples, as this trainer needs them."""

    def start(self, current: Any, out: Path, baseline: bool) -> Optional[Callable[[Callable[[str], Any]], Any]]:
        """Get ready to train from `current` (a policy_versions row or None); with `baseline`,
        return `get(load)`, which gives the policy a first candidate must beat (as it was before
        training), `load` being the round's way of loading a saved policy."""

    def train(self, engine: Any, namespace: str, examples: Sequence[Example], out: Path) -> TrainResult:
        """Train on `examples`; the policy goes to `result.path` (status `no_examples`: nothing to train on)."""

    def config_dict(self) -> dict[str, Any]:
        """The run's knobs, saved with the version."""


class TorchBackend:
    """skillmem's own trainer (:class:`~skillmem.train.trainer.Trainer`): any policy that scores candidate
    actions (CPUPolicy, HFPolicy), from `policy`, else the current version of `kind`, else `new_policy()`."""

    def __init__(self, config: TrainConfig, *, policy: Any = None, kind: Optional[str] = None,
                 new_policy: Optional[Callable[[], Any]] = None, teacher: Any = None):
        self.config, self.policy, self.teacher, self.new_policy = config, policy, teacher, new_policy
        self.kind = getattr(policy, "kind", None) or kind or "cpu"
        self._kind = kind

    def collect(self, engine: Any, namespace: str) -> list[Example]:
        c = self.config
        return collect_examples(engine, namespace, max_history=c.max_history, max_candidates=c.max_candidates,
                                min_group_size=c.min_group_size, seed=c.seed)

    def start(self, current: Any, out: Path, baseline: bool) -> Optional[Callable[[Callable[[str], Any]], Any]]:
        if self.policy is None:
            self.policy = starting_policy(current, self._kind, self.new_policy)
        self.kind = getattr(self.policy, "kind", None) or self.kind
        if not baseline:
            return None
        # Training changes the policy in place: the untrained one is saved first.
        saved = self.policy.save(out / "baseline")
        return lambda load: load(str(saved))

    def train(self, engine: Any, namespace: str, examples: Sequence[Example], out: Path) -> TrainResult:
        return Trainer(self.policy, examples, self.config, out, teacher=self.teacher).train()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def train_round(engine: Any, namespace: str, out_dir: str | Path, config: Optional[TrainConfig] = None, *,
                policy: Any = None, kind: Optional[str] = None, new_policy: Optional[Callable[[], Any]] = None,
                collect: Optional[Callable[[], Sequence[Example]]] = None, holdout: bool = True,
                teacher: Any = None, evaluate: Optional[Callable[[Any], float]] = None, baseline: Any = None,
                force: bool = False, gate: bool = True, version_id: Optional[str] = None,
                load: Optional[Callable[[str], Any]] = None, backend: Optional[Backend] = None) -> RoundResult:
    """Run one round for `namespace` (see the module's docstring); the weights go to `out_dir`/policy.

    `config`: the trigger's and the split's knobs (and TorchBackend's training ones).
    `backend`: the trainer (default: :class:`TorchBackend` with `policy`, `kind`, `new_policy`
    and `teacher`). `collect()`: the examples (default: the backend's). `holdout`: keep
    `config.heldout_fraction` of the task groups out of training for the default gate.
    `evaluate`: the gate's score (default: those held-out examples, or all of them when nothing
    is held out). `baseline`: what a first candidate must beat (default: the backend's, the
    policy as it was before training). `gate=False` leaves the version a candidate.
    `version_id`: the id to register (default: a new one), for an `evaluate` that records under it.
    `load(path)`: how the gate loads saved policies (default: :func:`skillmem.policy.load_policy`).
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    go, why, counts = should_train(engine, namespace, config)
    if not go and not force:
        return RoundResult("skipped", why, counts)
    if backend is None:
        backend = TorchBackend(config, policy=policy, kind=kind, new_policy=new_policy, teacher=teacher)

    examples = list(collect()) if collect is not None else backend.collect(engine, namespace)
    train, held = split_heldout(examples, config.heldout_fraction, config.seed) if holdout else (examples, [])
    if not train:
        return RoundResult("no_examples", "no training examples; record finished episodes with verified outcomes "
                           "first", counts)

    current = gates.current_version(engine, namespace)
    first_baseline = backend.start(current, out, current is None and baseline is None and gate)
    result = backend.train(engine, namespace, train, out)
    if result.status == "no_examples":
        return RoundResult("no_examples", result.reason or "the backend found nothing to train on", counts,
                           examples=len(train), heldout=len(held))
    metrics = {"data": counts, "train": {"status": result.status, "loss": result.loss, "steps": result.steps,
                                         "examples": len(train), **({"stages": result.stages} if result.stages else {})}}
    vid = gates.register(engine, namespace, result.path or out / "policy", kind=backend.kind,
                         parent_id=current.id if current else None, config=backend.config_dict(), metrics=metrics,
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
    if baseline is None and first_baseline is not None:
        baseline = first_baseline(load)
    done.decision = gates.gate(engine, vid, evaluate or gates.heldout_evaluator(held or train), baseline=baseline,
                               load=load)
    done.status = "promoted" if done.decision.promoted else "rejected"
    return done
