"""The periodic trainer: examples from the store, objectives, the training loop and the eval gate.

A whole round (trigger -> collect -> train -> register -> gate) is `train_round` (in
`skillmem.train.round`). The gate itself is `skillmem.train.gate.gate(...)` (the module
keeps its name here).
"""

from __future__ import annotations

from .data import Example, collect_examples, split_heldout
from .gate import current_version, heldout_evaluator, list_versions, register, rollback
from .round import RoundResult, train_round
from .trainer import Trainer, TrainConfig, TrainResult, should_train

__all__ = ["Example", "collect_examples", "split_heldout", "Trainer", "TrainConfig", "TrainResult",
           "should_train", "train_round", "RoundResult", "register", "rollback", "current_version", "list_versions",
           "heldout_evaluator"]
