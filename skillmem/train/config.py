"""TrainConfig: every knob of a training run, in a module that imports no torch.

`skillmem --help` and `skillmem sql` build the `train` subcommand's flags from these fields;
importing the trainer for that would load torch on every call.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every knob of a training run, with its default; saved as train_config.json next to the weights."""

    steps: int = _f(300, "optimizer steps in the run")
    batch_size: int = _f(32, "examples per step (per process under torchrun)")
    lr: float = _f(3e-3, "AdamW learning rate (1e-4..5e-4 suits LoRA on an LM)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    grad_clip: float = _f(1.0, "clip the gradient norm to this; 0 turns clipping off")
    positive_amplification: float = _f(2.0, "weight of demonstration (success) examples relative to others (R3L)")
    demo_coef: float = _f(1.0, "coefficient of demonstration SFT")
    negative_coef: float = _f(1.0, "coefficient of negative reinforcement on pivot bad actions")
    directive_coef: float = _f(1.0, "coefficient of SFT on directive feedback's corrected actions")
    distill_coef: float = _f(1.0, "coefficient of context distillation of lessons")
    withdraw_until: float = _f(0.5, "fraction of the run after which the student never sees the lessons")
    degenerate_weight: float = _f(0.5, "weight of examples from groups whose episodes all ended alike (0 drops)")
    min_group_size: int = _f(2, "a group needs this many episodes to count as degenerate")
    max_candidates: int = _f(32, "candidate actions scored per example (target always kept)")
    max_history: int = _f(6, "history steps kept in each example")
    heldout_fraction: float = _f(0.2, "task groups held out for the default eval gate")
    checkpoint_every: int = _f(50, "steps between checkpoints (resume continues from the last)")
    resume: bool = _f(True, "continue from out_dir/checkpoint.pt if it exists")
    every_episodes: int = _f(50, "trigger: train when this many new finished episodes exist (0: never by episodes)")
    every_lessons: int = _f(10, "trigger: train when this many new lessons exist (0: never by lessons)")
    seed: int = _f(0, "seed of example order and lesson withdrawal")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
