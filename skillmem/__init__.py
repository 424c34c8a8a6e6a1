"""skillmem: LangGraph agents that learn from their own experience, above all from failure.

    from skillmem import SkillMemory, wrap
    memory = SkillMemory()                      # SQLite file; SkillMemory("postgresql://...") for PostgreSQL
    with memory.episode(task="put a mug in the fridge", task_type="pick_and_place_simple") as ep:
        ep.step(observation=obs, action="go to fridge 1", feedback="You arrive at fridge 1. ...")
        ep.finish(success=True, source="environment")
"""

from .episode import (
    DemonstrationBase as Demonstration,
    EpisodeBase as Episode,
    FeedbackBase as Feedback,
    FeedbackKind,
    LessonBase as Lesson,
    Outcome,
    OutcomeSource,
    StepBase as Step,
)
from .memory import SkillMemory
from .record import EpisodeRecorder, MalformedInput, RecordedNode, record_messages, wrap
from .retrieve import Context, retrieval_node
from .lgstore import SkillStore

__version__ = "0.1.0"

__all__ = [
    "SkillMemory", "wrap", "retrieval_node", "Context", "SkillStore", "RecordedNode", "record_messages", "EpisodeRecorder", "MalformedInput",
    "Episode", "Step", "Feedback", "FeedbackKind", "Lesson", "Demonstration", "Outcome", "OutcomeSource",
]
