"""The Policy protocol, the prompt every policy reads, and structured hints from memory.

Retrieved memory reaches a policy two ways:

* as **text** in its prompt (`Prompt.memory`), which only a policy that reads can use;
* as **hints** (`Hints`): the retrieved lessons and demonstrations matched against the
  admissible actions — a lesson's bad action becomes a penalty on the actions it names,
  its fix and a demonstration's next plan step (slots filled from the goal and the
  history) become bonuses. Hints steer even a policy that cannot read.

The trainer's objectives are written once over `Policy.action_logprobs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence, runtime_checkable

import torch

from .hints import Hints, hints_from_context, history_pairs, situated_lessons  # noqa: F401  (re-exported)

# A history item: (action, observation) pair, a mapping with "action" and
# "observation"/"feedback", or a plain string (an observation with no action).
HistoryItem = Any


@dataclass
class Prompt:
    """What a policy sees at one decision: goal, recent history, memory as text and as hints."""

    goal: str
    history: list[tuple[str, str]] = field(default_factory=list)  # (action, observation), oldest first
    memory: str = ""  # retrieved lessons and demonstrations as text (render_memory); "" = without memory
    hints: Optional[Hints] = None

    def without_memory(self) -> "Prompt":
        return Prompt(self.goal, self.history, "", None)


@runtime_checkable
class Policy(Protocol):
    """Chooses an action among the admissible ones; scores candidates for training."""

    def act(self, goal: str, history: Sequence[HistoryItem], context: Any, admissible: Sequence[str]) -> str:
        """One action from `admissible`, given the goal, the history and retrieved memory (or None)."""
        ...

    def action_logprobs(self, prompt: Prompt, candidates: Sequence[str]) -> torch.Tensor:
        """Log-probability of each candidate as the next action, shape [len(candidates)], differentiable."""
        ...


# --------------------------------------------------------------------------- history and context


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def context_view(context: Any, view: str = "both") -> Any:
    """The retrieved context shown one way only, for measuring each way apart: "text" (its words,
    no hints), "hints" (hints on actions, no words: 0 tokens in the prompt) or "both" (as it is).

    The rows stay in every view: the text view still shows only the lessons that speak at the
    step (`memory_text` reads them), the hints view still matches them against the actions."""
    if context is None or view == "both":
        return context
    if view not in ("text", "hints"):
        raise ValueError(f"view must be 'both', 'text' or 'hints', got {view!r}")
    from types import SimpleNamespace

    lessons = _get(context, "lessons", None) or []
    demos = _get(context, "demonstrations", None) or []
    if view == "hints":
        return SimpleNamespace(text="", tokens=0, lessons=lessons, demonstrations=demos, show_text=False)
    return SimpleNamespace(text=context_text(context), tokens=_get(context, "tokens", 0), lessons=lessons,
                           demonstrations=demos, show_hints=False)


def context_text(context: Any) -> str:
    """The retrieved context as prompt text: its `.text`, a string as is, or its rows rendered
    as the agent is shown them (skillmem.retrieve.render_memory); "" for a context that shows
    no text (`show_text` False: `context_view(ctx, "hints")`)."""
    if context is None:
        return ""
    if isinstance(context, str):
        return context
    if _get(context, "show_text", True) is False:
        return ""
    text = _get(context, "text")
    if text:
        return str(text)
    from ..retrieve import render_memory

    return render_memory(_get(context, "lessons", None) or [], _get(context, "demonstrations", None) or [])[0]


def memory_text(context: Any, goal: str, history: Sequence[HistoryItem] | None, admissible: Sequence[str],
                domain: Any = None, hints: Optional[Hints] = None) -> str:
    """The memory text a policy reads at one step: `context_text`, with only the lessons that speak
    here (:func:`~skillmem.policy.hints.situated_lessons`): their situation holds, and one whose
    trigger names a step situation (``after `X` succeeded``) gave `hints` here, when the hints say
    which lessons did.

    A lesson for a later step, or one that does not transfer, would otherwise sit in every
    prompt of the episode and move a policy's choices where it says nothing (a trained policy
    that never read memory text moved most). A context of plain text, or without lesson rows,
    is read as it is."""
    lessons = _get(context, "lessons", None) if context is not None and not isinstance(context, str) else None
    text = context_text(context)
    if not lessons or not text:
        return text  # no lesson rows to choose from, or a context that shows no text (hints only)
    keep = situated_lessons(context, goal, history, admissible, domain,
                            hinted=hints.lessons if hints is not None else None)
    if len(keep) == len(lessons):
        return text
    from ..retrieve import render_memory

    # A part of what retrieval fitted in its budget: it fits too.
    return render_memory(keep, _get(context, "demonstrations", None) or [])[0]


def make_prompt(goal: str, history: Sequence[HistoryItem] | None, context: Any, admissible: Sequence[str],
                *, use_text: bool = True, use_hints: bool = True, domain: Any = None) -> Prompt:
    """The prompt for one decision, with memory as text and/or hints (read by `domain`) as asked;
    a context that shows no hints (`show_hints` False: `context_view(ctx, "text")`) gives none."""
    pairs = history_pairs(history)
    hints = hints_from_context(context, goal, pairs, admissible, domain) \
        if (use_hints and context is not None) else None
    text = memory_text(context, goal, pairs, admissible, domain, hints) if use_text else ""
    if context is not None and _get(context, "show_hints", True) is False:
        hints = None  # computed all the same: they say which lessons speak here, for the text
    return Prompt(goal=goal, history=pairs, memory=text, hints=hints)
