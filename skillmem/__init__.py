"""skillmem: LangGraph agents that learn from their own experience, above all from failure.

    from skillmem import SkillMemory, wrap, memory_prompt
    memory = SkillMemory()                      # SQLite file; SkillMemory("postgresql://...") for PostgreSQL
    agent = create_agent(model, tools, middleware=[memory_prompt(memory, "You are ...").middleware()])
    agent = wrap(agent, memory, verifier=check_answer)   # every run recorded, tool call by tool call

`import skillmem` is light: each name below is imported when first used (FAISS when the
index is first searched, torch when the embedder is first loaded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "SkillMemory": ("memory", "SkillMemory"),
    "wrap": ("record", "wrap"),
    "record_messages": ("record", "record_messages"),
    "EpisodeRecorder": ("record", "EpisodeRecorder"),
    "MalformedInput": ("record", "MalformedInput"),
    "RecordedNode": ("record", "RecordedNode"),
    "RecordedAgent": ("messages", "RecordedAgent"),
    "RecordedChatModel": ("messages", "RecordedChatModel"),
    "RecordingCallback": ("messages", "RecordingCallback"),
    "memory_prompt": ("prompt", "memory_prompt"),
    "MemoryPrompt": ("prompt", "MemoryPrompt"),
    "retrieval_node": ("prompt", "retrieval_node"),
    "Context": ("retrieve", "Context"),
    "RetrievalConfig": ("retrieve", "RetrievalConfig"),
    "SkillStore": ("lgstore", "SkillStore"),
    "Episode": ("episode", "EpisodeBase"),
    "Step": ("episode", "StepBase"),
    "Feedback": ("episode", "FeedbackBase"),
    "FeedbackKind": ("episode", "FeedbackKind"),
    "Lesson": ("episode", "LessonBase"),
    "Demonstration": ("episode", "DemonstrationBase"),
    "Outcome": ("episode", "Outcome"),
    "OutcomeSource": ("episode", "OutcomeSource"),
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .episode import (DemonstrationBase as Demonstration, EpisodeBase as Episode, FeedbackBase as Feedback,
                          FeedbackKind, LessonBase as Lesson, Outcome, OutcomeSource, StepBase as Step)
    from .lgstore import SkillStore
    from .memory import SkillMemory
    from .messages import RecordedAgent, RecordedChatModel, RecordingCallback
    from .prompt import MemoryPrompt, memory_prompt, retrieval_node
    from .record import EpisodeRecorder, MalformedInput, RecordedNode, record_messages, wrap
    from .retrieve import Context, RetrievalConfig
