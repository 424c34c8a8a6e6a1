"""Reflection: failed episodes become lessons, successes become demonstrations, through a durable queue.

    from skillmem.reflect import reflect_pending, OfflineWriter
    reflect_pending(memory, OfflineWriter())     # or LLMWriter(LLMClient(LLMConfig(...)))
"""

from __future__ import annotations

from .demos import compaction, demo_from_trace
from .queue import (
    DrainReport,
    ReflectionWorker,
    approve_lesson,
    reflect_episode,
    reflect_pending,
    retry_failed,
)
from .safety import SafetyConfig, UnsafeLesson, check_lesson, redact
from .trace import Analysis, Pivot, SlotMap, Trace, TraceStep, analyse, load_trace, localize_pivot, nearest_success
from .writers import LLMWriter, OfflineWriter, Writer, default_writer

__all__ = [
    "Analysis", "DrainReport", "LLMWriter", "OfflineWriter", "Pivot", "ReflectionWorker", "SafetyConfig", "SlotMap",
    "Trace", "TraceStep", "UnsafeLesson", "Writer", "analyse", "approve_lesson", "check_lesson", "compaction",
    "default_writer", "demo_from_trace", "load_trace", "localize_pivot", "nearest_success", "redact",
    "reflect_episode", "reflect_pending", "retry_failed",
]
