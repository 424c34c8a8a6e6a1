"""The periodic trainer: examples from the store, objectives, the training loop and the eval gate.

A whole round (trigger -> collect -> train -> register -> gate) is `train_round` (in
`skillmem.train.round`). The gate itself is `skillmem.train.gate.gate(...)` (the module
keeps its name here).

Each name below is imported when first used: `skillmem.train.config` (and so the CLI's
parser) must not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# public name -> module
_EXPORTS = {
    "Example": "data", "collect_examples": "data", "split_heldout": "data",
    "current_version": "gate", "heldout_evaluator": "gate", "list_versions": "gate", "register": "gate",
    "rollback": "gate",
    "RoundResult": "round", "train_round": "round",
    "TrainConfig": "config",
    "Trainer": "trainer", "TrainResult": "trainer", "should_train": "trainer",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import Example, collect_examples, split_heldout
    from .gate import current_version, heldout_evaluator, list_versions, register, rollback
    from .round import RoundResult, train_round
    from .trainer import Trainer, TrainResult, should_train
