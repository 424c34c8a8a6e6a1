"""The periodic trainer: examples from the store, objectives, the training loop and the eval gate.

A whole round (trigger -> collect -> train -> register -> gate) is `train_round` (in
`skillmem.train.round`). The gate itself is `skillmem.train.gate.gate(...)` (the module
keeps its name here).

Each name below is imported when first used: `skillmem.train.config` (and so the CLI's
parser) must not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'skillmem.train' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import Example, collect_examples, split_heldout
    from .gate import current_version, heldout_evaluator, list_versions, register, rollback
    from .round import RoundResult, train_round
    from .trainer import Trainer, TrainResult, should_train
