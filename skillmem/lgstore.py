"""SkillStore: skill memory as a LangGraph `BaseStore`, for graphs compiled with `store=`.

Namespaces are `("skillmem", <namespace>, "lessons")` and `("skillmem", <namespace>,
"demonstrations")`; keys are the rows' ids as strings; values are the rows as JSON.
The same SQL rows and vector index as `SkillMemory` back it, so curation applies:

- `put` with a new key adds the item through curation (dedupe/merge; the row's own id
  is its key from then on, the key given is kept in `provenance["store_key"]`); with an
  existing lesson id it edits that lesson (version + 1).
- `delete` retires (SQL keeps everything; `skillmem lessons restore ID` undoes it).
- `search` with `query` ranks active items by cosine similarity; without it lists rows
  by id (any status, so `filter={"status": "retired"}` finds retired ones).
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable, Optional

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from sqlalchemy import select

from . import curate
from .episode import DemonstrationBase, LessonBase
from .retrieve import DEMO, KIND_TABLE, LESSON, fetch_rows, query_text, search_items

ROOT = "skillmem"
COLLECTIONS = {"lessons": LESSON, "demonstrations": DEMO}


def _parse(namespace: tuple[str, ...]) -> tuple[str, str]:
    if len(namespace) != 3 or namespace[0] != ROOT or namespace[2] not in COLLECTIONS:
        raise ValueError(
            f"SkillStore namespaces look like ('skillmem', <namespace>, 'lessons'|'demonstrations'), got {namespace!r}")
    return namespace[1], COLLECTIONS[namespace[2]]


def _collection(kind: str) -> str:
    return "lessons" if kind == LESSON else "demonstrations"


def _item(row: Any, kind: str, score: Optional[float] = None, *, search: bool = False) -> Item:
    ns = (ROOT, row.namespace, _collection(kind))
    value = row.model_dump(mode="json", exclude={"created_at", "updated_at"})
    if search:
        return SearchItem(ns, str(row.id), value, row.created_at, row.updated_at, score=score)
    return Item(value=value, key=str(row.id), namespace=ns, created_at=row.created_at, updated_at=row.updated_at)


def _matches(value: dict[str, Any], flt: Optional[dict[str, Any]]) -> bool:
    """LangGraph's filter language: exact values, or {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": x}."""
    ops = {"$eq": lambda a, b: a == b, "$ne": lambda a, b: a != b, "$gt": lambda a, b: a is not None and a > b,
           "$gte": lambda a, b: a is not None and a >= b, "$lt": lambda a, b: a is not None and a < b,
           "$lte": lambda a, b: a is not None and a <= b}
    for key, want in (flt or {}).items():
        have = value.get(key)
        if isinstance(want, dict) and want and all(k in ops for k in want):
            if not all(ops[k](have, v) for k, v in want.items()):
                return False
        elif have != want:
            return False
    return True


class SkillStore(BaseStore):
    """A LangGraph store over skill memory's lessons and demonstrations."""

    supports_ttl = False

    def __init__(self, memory: Any):
        self.memory = memory

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run each operation in order against the SQL store and the index."""
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append(self._get(op))
            elif isinstance(op, SearchOp):
                results.append(self._search(op))
            elif isinstance(op, PutOp):
                results.append(self._put(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                raise TypeError(f"SkillStore cannot run {type(op).__name__}")
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """`batch` in a worker thread: SQL and FAISS calls block."""
        return await asyncio.to_thread(self.batch, list(ops))

    # -- operations

    def _get(self, op: GetOp) -> Optional[Item]:
        ns, kind = _parse(op.namespace)
        if not op.key.isdigit():
            return None
        with self.memory.read_engine.connect() as conn:
            row = fetch_rows(conn, kind, [int(op.key)], namespace=ns).get(int(op.key))
        return None if row is None else _item(row, kind)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        spaces = [(ns, kind) for ns, kind in self._namespaces()
                  if (ROOT, ns, _collection(kind))[: len(prefix)] == prefix]
        hits: list[tuple[Any, str, Optional[float]]] = []
        vec = self.memory.embedder.encode([query_text(op.query, "")]) if op.query and spaces else None
        if vec is not None:
            self.memory._index.sync()
        for ns, kind in spaces:
            if vec is not None:
                # Filters apply after ranking, so ask for enough to fill the page.
                want = op.offset + op.limit if not op.filter else max(op.offset + op.limit, 200)
                hits += [(r, kind, s) for r, s in search_items(self.memory._index, vec,
                                                               namespace=ns, kind=kind, limit=want)]
            else:
                hits += [(r, kind, None) for r in self.memory._rows(KIND_TABLE[kind], ns, None, None)]
        if vec is not None:
            hits.sort(key=lambda h: (-round(h[2], 6), h[1], h[0].id))
        items = [_item(r, kind, s, search=True) for r, kind, s in hits]
        items = [i for i in items if _matches(i.value, op.filter)]
        return items[op.offset: op.offset + op.limit]

    def _put(self, op: PutOp) -> None:
        ns, kind = _parse(op.namespace)
        existing = None
        if op.key.isdigit():
            with self.memory.read_engine.connect() as conn:
                existing = fetch_rows(conn, kind, [int(op.key)], namespace=ns).get(int(op.key))
        if op.value is None:
            if existing is not None and kind == LESSON and existing.status.value in ("active", "quarantined"):
                self.memory.retire_lesson(existing.id, reason="deleted through the LangGraph store")
            elif existing is not None and kind == DEMO and existing.status.value in ("active", "quarantined"):
                curate.set_status(self.memory, DEMO, existing.id, "retire", "deleted through the LangGraph store")
            return
        value = dict(op.value)
        if existing is not None:
            fields = curate.LESSON_FIELDS if kind == LESSON else curate.DEMO_FIELDS
            changes = {k: v for k, v in value.items() if k in fields and v != getattr(existing, k)}
            if changes:
                curate.edit(self.memory, kind, existing.id, changes, reason="put through the LangGraph store")
            return
        value["provenance"] = {**(value.get("provenance") or {}), "store_key": op.key}
        model = LessonBase if kind == LESSON else DemonstrationBase
        curate.add_item(self.memory, kind, model.model_validate(value), namespace=ns, episode_id=None)

    def _namespaces(self) -> list[tuple[str, str]]:
        out = set()
        with self.memory.read_engine.connect() as conn:
            for kind, model in KIND_TABLE.items():
                for (ns,) in conn.execute(select(model.__table__.c.namespace).distinct()):
                    out.add((ns, kind))
        return sorted(out)

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        names = [(ROOT, ns, _collection(kind)) for ns, kind in self._namespaces()]

        def ok(n: tuple[str, ...]) -> bool:
            for cond in op.match_conditions or ():
                path = tuple(cond.path)
                part = n[: len(path)] if cond.match_type == "prefix" else n[len(n) - len(path):]
                if len(path) > len(n) or any(p != "*" and p != x for p, x in zip(path, part)):
                    return False
            return True

        names = [n for n in names if ok(n)]
        if op.max_depth is not None:
            names = sorted(set(n[: op.max_depth] for n in names))
        return names[op.offset: op.offset + op.limit]
