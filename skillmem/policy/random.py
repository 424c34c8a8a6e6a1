"""The uniform random baseline: every admissible action equally likely."""

from __future__ import annotations

import math
import random
from typing import Any, Optional, Sequence

import torch

from .base import HistoryItem, Prompt


class RandomPolicy:
    """Picks uniformly among the admissible actions; ignores goal, history and memory."""

    kind = "random"

    def __init__(self, seed: Optional[int] = 0):
        self.rng = random.Random(seed)

    def act(self, goal: str, history: Sequence[HistoryItem], context: Any, admissible: Sequence[str]) -> str:
        if not admissible:
            raise ValueError("act() needs at least one admissible action")
        return self.rng.choice(list(admissible))

    def action_logprobs(self, prompt: Prompt, candidates: Sequence[str], **_: Any) -> torch.Tensor:
        return torch.full((len(candidates),), -math.log(max(1, len(candidates))))
