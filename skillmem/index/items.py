"""What a retrievable item is to the index: its kind, the text embedded, the partition searched.

`Item` is the compact in-process copy of an active lesson or demonstration that retrieval
renders from without reading SQL: only the fields the text, the partition and the
rendering need (the full row is loaded on demand, see `MemoryIndex.rows`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Optional
from urllib.parse import quote

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
    """The one-line form of a lesson that is embedded and deduplicated (the agent reads skillmem.retrieve.render_lesson)."""
    s = f"When {row.trigger.strip()}:"
    if row.bad_action.strip():
        s += f" avoid {row.bad_action.strip()};"
    return f"{s} instead {row.fix.strip()}"


def demo_text(row: Any) -> str:
    """The text a demonstration is embedded and deduplicated by: its goal and plan."""
    return "\n".join([row.goal_template.strip(), *[str(s).strip() for s in row.plan]])


def item_text(kind: str, row: Any) -> str:
    return lesson_text(row) if kind == LESSON else demo_text(row)


@lru_cache(maxsize=8192)  # quote() costs more than a search of a small partition; names repeat
def partition_name(namespace: str, kind: str, task_type: Optional[str] = None) -> str:
    """"ns/lesson/general", "ns/lesson/task:T" or "ns/demo/task:T", with ns and T percent-quoted.

    Quoting keeps "/" out of the names' parts, so a namespace or task type that contains
    "/lesson/" cannot make one partition read as another's (or as the other kind).
    """
    ns = quote(namespace, safe="")
    if kind == LESSON:
        return f"{ns}/lesson/general" if task_type is None else f"{ns}/lesson/task:{quote(task_type, safe='')}"
    return f"{ns}/demo/task:{quote(task_type or '', safe='')}"


def partition_prefix(namespace: str, kind: str) -> str:
    """The start every partition name of one kind in one namespace shares."""
    return f"{quote(namespace, safe='')}/{'lesson' if kind == LESSON else 'demo'}/"


def partition_kind(partition: str) -> str:
    """Which kind of item a partition named by `partition_name` holds."""
    return LESSON if partition.split("/", 2)[1] == "lesson" else DEMO


def partition_of(kind: str, row: Any) -> str:
    """The index partition an item is searched in: general lessons, task-type lessons, task-type demos."""
    if kind == LESSON:
        scope = row.scope.value if hasattr(row.scope, "value") else row.scope
        general = scope == Scope.general.value or not row.task_type
        return partition_name(row.namespace, LESSON, None if general else row.task_type)
    return partition_name(row.namespace, DEMO, row.task_type)


class Item:
    """An active item as retrieval needs it; `block`/`tokens` memoize its rendering, `parts` what a
    lesson says (skillmem.curate.lesson_parts, asked of near copies only)."""

    __slots__ = ("kind", "id", "namespace", "scope", "task_type", "trigger", "bad_action", "fix",
                 "goal_template", "plan", "partition", "block", "tokens", "parts")

    def __init__(self, kind: str, row: Any):
        self.kind = kind
        self.id = int(row.id)
        self.namespace = row.namespace
        self.task_type = row.task_type or ""
        if kind == LESSON:
            scope = row.scope
            self.scope = scope if type(scope) is str else scope.value
            self.trigger, self.bad_action, self.fix = row.trigger, row.bad_action, row.fix
            self.goal_template, self.plan = "", ()
        else:
            self.scope, self.trigger, self.bad_action, self.fix = "", "", "", ""
            plan = row.plan
            if isinstance(plan, str):  # a DBAPI cursor on SQLite gives the JSON column's text
                plan = json.loads(plan)
            self.goal_template, self.plan = row.goal_template, tuple(plan or ())
        self.partition = partition_of(kind, self)
        self.block: Optional[str] = None
        self.tokens = 0
        self.parts: Optional[tuple[str, ...]] = None

    @classmethod
    def from_values(cls, kind: str, v: Any) -> "Item":
        """An Item from a plain tuple of `ITEM_COLUMNS[kind]` (and anything after), as a DBAPI
        cursor gives: slots set straight from the positions (a rebuild makes a million)."""
        self = cls.__new__(cls)
        self.kind, self.id, self.namespace = kind, int(v[0]), v[1]
        if kind == LESSON:  # id, namespace, scope, task_type, trigger, bad_action, fix
            self.scope, self.task_type = v[2], v[3] or ""
            self.trigger, self.bad_action, self.fix = v[4], v[5], v[6]
            self.goal_template, self.plan = "", ()
            general = self.scope == _GENERAL or not self.task_type
            self.partition = partition_name(self.namespace, LESSON, None if general else self.task_type)
        else:  # id, namespace, task_type, goal_template, plan
            self.scope, self.trigger, self.bad_action, self.fix = "", "", "", ""
            self.task_type, self.goal_template = v[2] or "", v[3]
            plan = json.loads(v[4]) if isinstance(v[4], str) else v[4]
            self.plan = tuple(plan or ())
            self.partition = partition_name(self.namespace, DEMO, self.task_type)
        self.block, self.tokens, self.parts = None, 0, None
        return self


_GENERAL = Scope.general.value
assert ITEM_COLUMNS == {LESSON: ("id", "namespace", "scope", "task_type", "trigger", "bad_action", "fix"),
                        DEMO: ("id", "namespace", "task_type", "goal_template", "plan")}  # from_values' order
