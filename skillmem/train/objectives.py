"""The trainer's objectives, each one function over the same `Batch`.

A `Batch` holds, for B examples with up to C candidate actions each, the policy's
log-probabilities of the candidates (`logp`, from the student's prompt: no memory, or
memory being withdrawn), the teacher's (`teacher_logp`, prompt with memory, no gradient),
which candidate is the example's action, its kind and its weight. Every objective
returns a scalar: the sum of its per-example losses over the batch size, so objectives
add up in proportion to how much of the batch they own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .data import KINDS


@dataclass
class Batch:
    """Scores and labels of B examples, C candidates each (padded; `mask` marks real ones)."""

    logp: torch.Tensor  # [B, C] student log-probs; a negative row's target excludes the shared prefix
    mask: torch.Tensor  # [B, C] bool
    target: torch.Tensor  # [B] index of the example's action
    kind: torch.Tensor  # [B] index into data.KINDS
    weight: torch.Tensor  # [B] per-example weight (degenerate groups already down-weighted)
    teacher_logp: Optional[torch.Tensor] = None  # [B, C], distill rows only

    def rows(self, kind: str) -> torch.Tensor:
        return self.kind == KINDS.index(kind)

    def target_logp(self) -> torch.Tensor:
        return self.logp.gather(1, self.target[:, None]).squeeze(1)


def demo_sft(batch: Batch, positive_amplification: float = 2.0) -> torch.Tensor:
    """Imitate successful episodes' actions; positives weigh `positive_amplification` times (R3L)."""
    rows = batch.rows("demo").float()
    loss = -batch.target_logp() * rows * batch.weight * positive_amplification
    return loss.sum() / len(rows)


def negative_reinforcement(batch: Batch) -> torch.Tensor:
    """Push down the bad action at a failed episode's pivot: -log(1 - p(bad)).

    Only the pivot is penalized (the steps before it are the prefix the failure shares with
    a good run, and give no example); within the action, the policy has already left out
    the tokens it shares with the right action. The loss vanishes as p(bad) -> 0, so the
    mass moves to the other actions without blowing up their log-probs (negative samples
    alone keep the policy's diversity).
    """
    rows = batch.rows("negative").float()
    p_bad = batch.target_logp().clamp(max=-1e-6).exp()
    loss = -torch.log1p(-p_bad) * rows * batch.weight
    return loss.sum() / len(rows)


def directive_sft(batch: Batch) -> torch.Tensor:
    """Imitate the corrected actions of directive feedback."""
    rows = batch.rows("directive").float()
    loss = -batch.target_logp() * rows * batch.weight
    return loss.sum() / len(rows)


def _candidate_log_softmax(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logp.masked_fill(~mask, float("-inf")), dim=-1).masked_fill(~mask, 0.0)


def context_distillation(batch: Batch) -> torch.Tensor:
    """KL(teacher with memory || student without) over each state's candidate distribution."""
    rows = batch.rows("distill").float()
    if batch.teacher_logp is None or rows.sum() == 0:
        return batch.logp.sum() * 0.0
    t = _candidate_log_softmax(batch.teacher_logp.detach(), batch.mask)
    s = _candidate_log_softmax(batch.logp, batch.mask)
    kl = (t.exp() * (t - s) * batch.mask).sum(-1)
    return (kl * rows * batch.weight).sum() / len(rows)


def degenerate_weights(degenerate: torch.Tensor, factor: float) -> torch.Tensor:
    """Weight 1 for examples from informative groups, `factor` (0 filters) for groups whose
    episodes all ended the same way: they carry no contrast, and in group-relative RL they harm."""
    return torch.where(degenerate, torch.full_like(degenerate, factor, dtype=torch.float),
                       torch.ones_like(degenerate, dtype=torch.float))


def lesson_keep_probability(step: int, total_steps: int, withdraw_until: float) -> float:
    """Chance the student still sees the lessons at `step`: 1 at the start, 0 from
    `withdraw_until` of the run on (Skill0: withdraw the skills so the weights take them in)."""
    if withdraw_until <= 0:
        return 0.0
    return max(0.0, 1.0 - step / max(1.0, withdraw_until * total_steps))
