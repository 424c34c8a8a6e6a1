"""Reflection: failed episodes become lessons, successes become demonstrations, through a durable queue.

    from skillmem.reflect import reflect_pending, OfflineWriter
    reflect_pending(memory, OfflineWriter())     # or LLMWriter(LLMClient(LLMConfig(...)))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Names are loaded on first use (PEP 562): `from skillmem.reflect.safety import ...`, which every
# lesson write does, must not pull in the LLM writer and with it the openai SDK (seconds of import
# on a busy machine, for a memory that may never call a model).
_WHERE = {
    "compaction": "demos", "demo_from_trace": "demos",
    "DrainReport": "queue", "ReflectionWorker": "queue", "approve_lesson": "queue",
    "reflect_episode": "queue", "reflect_pending": "queue", "retry_failed": "queue",
    "SafetyConfig": "safety", "UnsafeLesson": "safety", "check_lesson": "safety", "redact": "safety",
    "Analysis": "trace", "Pivot": "trace", "SlotMap": "trace", "Trace": "trace", "TraceStep": "trace",
    "analyse": "trace", "load_trace": "trace", "localize_pivot": "trace", "nearest_success": "trace",
    "LLMWriter": "writers", "OfflineWriter": "writers", "Writer": "writers", "default_writer": "writers",
}

if TYPE_CHECKING:
    from .demos import compaction, demo_from_trace
    from .queue import DrainReport, ReflectionWorker, approve_lesson, reflect_episode, reflect_pending, retry_failed
    from .safety import SafetyConfig, UnsafeLesson, check_lesson, redact
    from .trace import (Analysis, Pivot, SlotMap, Trace, TraceStep, analyse, load_trace, localize_pivot,
                        nearest_success)
    from .writers import LLMWriter, OfflineWriter, Writer, default_writer


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())


__all__ = [
    "Analysis", "DrainReport", "LLMWriter", "OfflineWriter", "Pivot", "ReflectionWorker", "SafetyConfig", "SlotMap",
    "Trace", "TraceStep", "UnsafeLesson", "Writer", "analyse", "approve_lesson", "check_lesson", "compaction",
    "default_writer", "demo_from_trace", "load_trace", "localize_pivot", "nearest_success", "redact",
    "reflect_episode", "reflect_pending", "retry_failed",
]
