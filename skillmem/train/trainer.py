"""The periodic trainer: one config, one loop, checkpoints, resume after a kill, a NaN guard.

    config = TrainConfig(steps=300)
    result = Trainer(CPUPolicy(), examples, config, "runs/p2").train()   # -> runs/p2/policy/

Several GPUs: start the same script under torchrun (or `accelerate launch`), e.g.
``torchrun --nproc_per_node 4 -m skillmem.cli train ...``. Each process calls
:func:`init_distributed` (done by `Trainer` when WORLD_SIZE is set), takes its share of
every batch, and gradients are averaged across processes before each step; only rank 0
writes checkpoints and weights. With one process this is a no-op; the tests run it
with the gloo backend and world size 1 on CPU.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from .config import TrainConfig
from .data import KINDS, Example
from .objectives import (
    Batch,
    context_distillation,
    degenerate_weights,
    demo_sft,
    directive_sft,
    lesson_keep_probability,
    negative_reinforcement,
)


@dataclass
class TrainResult:
    """How a run ended: `finished`, `nan` (stopped by the guard; weights are the last good ones),
    or `no_examples` (a backend found nothing it can train on; `reason` says why)."""

    status: str
    steps: int  # optimizer steps done, resumed ones included
    start_step: int
    loss: float
    losses: dict[str, float]
    examples_per_s: float
    seconds: float
    path: Optional[Path]
    stages: dict[str, Any] = field(default_factory=dict)  # backends with stages (TRL: sft, dpo/kto): steps, losses
    reason: str = ""


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun/accelerate describe in the environment."""
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_batch(policy: Any, examples: Sequence[Example], *, step: int, config: TrainConfig,
               teacher: Any = None) -> Batch:
    """Score `examples` with `policy`: students without memory (distill rows: withdrawn over
    the run), teachers with it; negative rows exclude the prefix shared with the right action.

    The teacher is `teacher` (a frozen policy, e.g. the untrained one whose use of memory is
    what is distilled) or else `policy` itself, reading memory."""
    rng = random.Random(config.seed * 1_000_003 + step)
    keep = lesson_keep_probability(step, config.steps, config.withdraw_until)
    prompts = [e.prompt(with_memory=e.kind == "distill" and rng.random() < keep) for e in examples]
    cands = [e.candidates for e in examples]
    exclude = [[e.good_action if (e.kind == "negative" and c == e.target) else None for c in e.candidates]
               for e in examples]
    logp, mask = _batch_logprobs(policy, prompts, cands, exclude)
    teacher_logp = None
    distill_rows = [i for i, e in enumerate(examples) if e.kind == "distill"]
    if distill_rows:
        with torch.no_grad():
            t, _ = _batch_logprobs(teacher or policy, [examples[i].prompt(True) for i in distill_rows],
                                   [cands[i] for i in distill_rows], None)
        teacher_logp = torch.zeros_like(logp)
        teacher_logp[distill_rows, : t.shape[1]] = t
    degenerate = torch.tensor([e.degenerate for e in examples])
    return Batch(logp=logp, mask=mask,
                 target=torch.tensor([e.target_index for e in examples]),
                 kind=torch.tensor([KINDS.index(e.kind) for e in examples]),
                 weight=degenerate_weights(degenerate, config.degenerate_weight),
                 teacher_logp=teacher_logp)


def _batch_logprobs(policy: Any, prompts: list[Any], cands: list[list[str]], exclude: Any
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(policy, "batch_logprobs"):
        return policy.batch_logprobs(prompts, cands, exclude_prefix=exclude)
    C = max(len(c) for c in cands)
    rows = [torch.nn.functional.pad(policy.action_logprobs(p, c), (0, C - len(c))) for p, c in zip(prompts, cands)]
    mask = torch.arange(C)[None, :] < torch.tensor([len(c) for c in cands])[:, None]
    return torch.stack(rows), mask


def objective_losses(batch: Batch, config: TrainConfig) -> dict[str, torch.Tensor]:
    """Each objective's weighted loss on `batch`; the training loss is their sum."""
    return {
        "demo": config.demo_coef * demo_sft(batch, config.positive_amplification),
        "negative": config.negative_coef * negative_reinforcement(batch),
        "directive": config.directive_coef * directive_sft(batch),
        "distill": config.distill_coef * context_distillation(batch),
    }


class Trainer:
    """Trains `policy` on `examples` into `out_dir`: checkpoint.pt while running, policy/ at the end."""

    def __init__(self, policy: Any, examples: Sequence[Example], config: Optional[TrainConfig] = None,
                 out_dir: str | Path = "skillmem-train", *, teacher: Any = None):
        if not examples:
            raise ValueError("no training examples: record finished episodes with verified outcomes "
                             "(and lessons or feedback) in a train or live split first")
        self.policy = policy
        self.teacher = teacher  # None: the policy itself reads memory as the teacher
        self.examples = list(examples)
        self.config = config or TrainConfig()
        self.out_dir = Path(out_dir)
        self.rank, self.world = init_distributed()
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        self._perms: dict[int, list[int]] = {}
        self._last: tuple[float, dict[str, float]] = (float("nan"), {})  # the last step's loss and parts

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def _indices(self, step: int) -> list[int]:
        """This process's examples for `step`: a fixed function of (seed, step), so a resumed run
        sees exactly the batches the killed one would have."""
        n, bs = len(self.examples), self.config.batch_size * self.world
        out = []
        for k in range(step * bs, (step + 1) * bs):
            epoch = k // n
            if epoch not in self._perms:
                perm = list(range(n))
                random.Random(self.config.seed + epoch).shuffle(perm)
                self._perms = {epoch: perm}  # only the current epoch is needed
            out.append(self._perms[epoch][k % n])
        return out[self.rank:: self.world]

    def save_checkpoint(self, step: int) -> None:
        if self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save({"step": step, "policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "config": asdict(self.config), "loss": self._last[0], "losses": self._last[1]}, tmp)
        os.replace(tmp, self.checkpoint_path)  # atomic: a kill leaves the old or the new, never half

    def load_checkpoint(self) -> int:
        state = torch.load(self.checkpoint_path, weights_only=False)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        # A run resumed at (or near) its end reports the loss it had, not NaN for "no step taken".
        self._last = (float(state.get("loss", float("nan"))), dict(state.get("losses") or {}))
        return int(state["step"])

    def _params_with_grad(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]

    def train(self) -> TrainResult:
        """Run to `config.steps` (from the last checkpoint if resuming); save policy/ and train_config.json."""
        cfg = self.config
        start = self.load_checkpoint() if (cfg.resume and self.checkpoint_path.exists()) else 0
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out_dir / "train_config.json")
        status, (loss_value, parts) = "finished", self._last
        seen, t0 = 0, time.perf_counter()
        self.policy.train()
        step = start
        for step in range(start, cfg.steps):
            batch_examples = [self.examples[i] for i in self._indices(step)]
            batch = make_batch(self.policy, batch_examples, step=step, config=cfg, teacher=self.teacher)
            losses = objective_losses(batch, cfg)
            loss = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                status = "nan"
                break
            loss.backward()
            grads = self._params_with_grad()
            if self.world > 1:
                for g in grads:
                    dist.all_reduce(g.grad)
                    g.grad /= self.world
            if not all(torch.isfinite(g.grad).all() for g in grads):
                status = "nan"  # the update is never applied: the weights stay the last good ones
                break
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(grads, cfg.grad_clip)
            self.optimizer.step()
            seen += len(batch_examples)
            loss_value, parts = float(loss.detach()), {k: float(v.detach()) for k, v in losses.items()}
            self._last = (loss_value, parts)
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                self.save_checkpoint(step + 1)
        else:
            step = cfg.steps
        self.optimizer.zero_grad(set_to_none=True)
        self.policy.eval()
        seconds = time.perf_counter() - t0
        path = None
        if self.rank == 0:
            if status == "finished":
                self.save_checkpoint(step)
            path = self.policy.save(self.out_dir / "policy")
            cfg.save(path / "train_config.json")
            (path / "train_result.json").write_text(json.dumps(
                {"status": status, "steps": step, "loss": loss_value, "losses": parts}, indent=1))
        return TrainResult(status=status, steps=step, start_step=start, loss=loss_value, losses=parts,
                           examples_per_s=seen / seconds if seconds > 0 else 0.0, seconds=seconds, path=path)


def policy_run_dir(url: str, namespace: str, run: str) -> Path:
    """The absolute folder of one training run: unique to the store, the namespace and the version.

    SQLite: beside the database file; another store: under $SKILLMEM_POLICY_DIR (default
    the user's data dir), in a folder named after the server and database (never the
    password). Namespaces are percent-quoted so no name can climb out or share a folder.
    """
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    if url.startswith("sqlite"):
        base = Path(url.split("///", 1)[1]).expanduser().resolve().parent / "policies"
    else:
        from ..store import default_db_path
        import hashlib

        u = make_url(url)
        ident = f"{u.get_backend_name()}-{u.host or 'local'}-{u.port or ''}-{u.database or ''}"
        tag = hashlib.sha256(ident.encode()).hexdigest()[:10]
        root = os.environ.get("SKILLMEM_POLICY_DIR") or default_db_path().parent / "policies"
        base = Path(root).expanduser().resolve() / f"{quote(u.database or 'db', safe='')}-{tag}"
    return base / quote(namespace, safe="") / quote(run, safe="")


# --------------------------------------------------------------------------- trigger


def data_counts(engine: Any, namespace: str) -> dict[str, int]:
    """How much there is to learn from: finished train/live episodes and lessons."""
    from sqlalchemy import text

    with engine.connect() as conn:
        episodes = conn.execute(text("SELECT COUNT(*) FROM episodes WHERE namespace = :ns AND status = 'finished' "
                                     "AND split IN ('train', 'live')"), {"ns": namespace}).scalar() or 0
        lessons = conn.execute(text("SELECT COUNT(*) FROM lessons WHERE namespace = :ns"), {"ns": namespace}).scalar() or 0
    return {"episodes": int(episodes), "lessons": int(lessons)}


def should_train(engine: Any, namespace: str, config: TrainConfig) -> tuple[bool, str, dict[str, int]]:
    """Whether enough is new since the last policy version's data: (yes?, why, counts now)."""
    from .gate import latest_version

    now = data_counts(engine, namespace)
    last = latest_version(engine, namespace)
    before = (last.metrics or {}).get("data", {}) if last else {}
    new_eps = now["episodes"] - int(before.get("episodes", 0))
    new_les = now["lessons"] - int(before.get("lessons", 0))
    if config.every_episodes and new_eps >= config.every_episodes:
        return True, f"{new_eps} new episodes (every {config.every_episodes})", now
    if config.every_lessons and new_les >= config.every_lessons:
        return True, f"{new_les} new lessons (every {config.every_lessons})", now
    return False, (f"only {new_eps} new episodes and {new_les} new lessons since the last version "
                   f"(train every {config.every_episodes} episodes or {config.every_lessons} lessons; --force trains now)"), now
