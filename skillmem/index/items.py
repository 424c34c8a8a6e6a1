"""What a retrievable item is to the index: its kind, the text embedded, the partition searched.

`Item` is the compact in-process copy of an active lesson or demonstration that retrieval
renders from without reading SQL: only the fields the text, the partition and the
rendering need (the full row is loaded on demand, see `MemoryIndex.rows`).
"""

from __future__ import annotations

from typing import Any, Optional

from ..episode import Scope
from ..store import DemonstrationRow, LessonRow

LESSON, DEMO = "lesson", "demonstration"
KIND_TABLE = {LESSON: LessonRow, DEMO: DemonstrationRow}
# The columns an Item keeps, per kind (what the texts, partitions and renderers read).
ITEM_COLUMNS = {
    LESSON: ("id", "namespace", "scope", "task_type", "trigger", "bad_action", "fix"),
    DEMO: ("id", "namespace", "task_type", "goal_template", "plan"),
}


def lesson_text(row: Any) -> str:
    """The one-line form of a lesson: what is embedded, deduplicated and injected."""
    s = f"When {row.trigger.strip()}:"
    if row.bad_action.strip():
        s += f" avoid {row.bad_action.strip()};"
    return f"{s} instead {row.fix.strip()}"


def demo_text(row: Any) -> str:
    """The text a demonstration is embedded and deduplicated by: its goal and plan."""
    return "\n".join([row.goal_template.strip(), *[str(s).strip() for s in row.plan]])


def item_text(kind: str, row: Any) -> str:
    return lesson_text(row) if kind == LESSON else demo_text(row)


def partition_of(kind: str, row: Any) -> str:
    """The index partition an item is searched in: general lessons, task-type lessons, task-type demos."""
    if kind == LESSON:
        scope = row.scope.value if hasattr(row.scope, "value") else row.scope
        level = "general" if scope == Scope.general.value or not row.task_type else f"task:{row.task_type}"
        return f"{row.namespace}/lesson/{level}"
    return f"{row.namespace}/demo/task:{row.task_type}"


class Item:
    """An active item as retrieval needs it; `block`/`tokens` memoize its rendering."""

    __slots__ = ("kind", "id", "namespace", "scope", "task_type", "trigger", "bad_action", "fix",
                 "goal_template", "plan", "partition", "block", "tokens")

    def __init__(self, kind: str, row: Any):
        self.kind = kind
        self.id = int(row.id)
        self.namespace = row.namespace
        self.task_type = row.task_type or ""
        if kind == LESSON:
            scope = row.scope
            self.scope = scope.value if hasattr(scope, "value") else scope
            self.trigger, self.bad_action, self.fix = row.trigger, row.bad_action, row.fix
            self.goal_template, self.plan = "", ()
        else:
            self.scope, self.trigger, self.bad_action, self.fix = "", "", "", ""
            self.goal_template, self.plan = row.goal_template, tuple(row.plan or ())
        self.partition = partition_of(kind, self)
        self.block: Optional[str] = None
        self.tokens = 0
