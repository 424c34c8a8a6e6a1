"""SkillStore: LangGraph's `BaseStore` contract over skill memory's SQL store.

    graph = builder.compile(store=SkillStore(memory))
    store.put(("users", "u1", "prefs"), "theme", {"theme": "dark"})      # any namespace, any dict
    store.search(("skillmem", "default", "lessons"), query="refund a duplicate charge")  # the curated lessons

Two kinds of namespace:

- **Curated**: `("skillmem", <memory namespace>, "lessons" | "demonstrations")` are the
  memory's own lessons and demonstrations. A `put` adds through curation (dedupe, merge,
  audit, index; a near-duplicate is merged into the lesson it repeats and the key then names
  that lesson); a `put` to a key it already holds edits the item (version + 1). The caller's
  key is kept (a lesson written by reflection has its id as key). Values must be lesson or
  demonstration fields: any other field is refused with the list of allowed ones, never
  dropped. `delete` retires the item: it disappears from get, search and list, and SQL keeps
  it and its audit rows (`skillmem lessons restore ID`). Retired items are not read back.
- **Everything else** is stored as given in the `store_items` table: the caller's key and
  value, `created_at`/`updated_at`, TTL (minutes; refreshed on read unless told otherwise),
  and a vector per indexed field (`index=` config `{"fields": [...]}`, default the whole
  value; `put(..., index=False)` or `index=["field"]` per item). `delete` deletes.

`search` takes LangGraph's filter language (exact values, nested dicts, `$eq $ne $gt $gte
$lt $lte`), `limit` and `offset`; with `query` it ranks by cosine similarity (a score per
item: its best indexed field), and puts items that have no vector after those that do.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from langgraph.store.base import (
    NOT_PROVIDED,
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from . import curate
from .episode import DemonstrationBase, LessonBase, utcnow
from .index.items import DEMO, KIND_TABLE, LESSON
from .index.memory import embed_texts, fetch_rows, load_vectors
from .retrieve import query_text, search_items
from .store import StoreItemRow

ROOT = "skillmem"
COLLECTIONS = {"lessons": LESSON, "demonstrations": DEMO}
SEP = "."  # LangGraph forbids it inside labels, so a joined namespace splits back unambiguously
READABLE = ("active", "quarantined")
# Row bookkeeping that `get` returns in a value and a caller may send back unchanged.
_ROW_FIELDS = {"id", "namespace", "version", "support", "text_hash", "embedding_model", "merged_into", "status",
               "created_at", "updated_at"}


def _curated(namespace: tuple[str, ...]) -> Optional[tuple[str, str]]:
    if len(namespace) == 3 and namespace[0] == ROOT and namespace[2] in COLLECTIONS:
        return namespace[1], COLLECTIONS[namespace[2]]
    return None


def _collection(kind: str) -> str:
    return "lessons" if kind == LESSON else "demonstrations"


def _aware(t: Optional[datetime]) -> Optional[datetime]:
    from datetime import timezone

    return t.replace(tzinfo=timezone.utc) if t is not None and t.tzinfo is None else t


def _compare(have: Any, want: Any) -> bool:
    """LangGraph's filter semantics for one field (as its stores document them)."""
    if isinstance(want, dict):
        if want and all(isinstance(k, str) and k.startswith("$") for k in want):
            return all(_operator(have, op, v) for op, v in want.items())
        return isinstance(have, dict) and all(_compare(have.get(k), v) for k, v in want.items())
    if isinstance(want, (list, tuple)):
        return (isinstance(have, (list, tuple)) and len(have) == len(want)
                and all(_compare(a, b) for a, b in zip(have, want)))
    return have == want


def _operator(have: Any, op: str, want: Any) -> bool:
    if op == "$eq":
        return have == want
    if op == "$ne":
        return have != want
    if op in ("$gt", "$gte", "$lt", "$lte"):
        try:
            a, b = float(have), float(want)
        except (TypeError, ValueError):
            return False
        return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
    raise ValueError(f"unsupported filter operator {op!r}; use $eq, $ne, $gt, $gte, $lt or $lte")


def _matches(value: dict[str, Any], flt: Optional[dict[str, Any]]) -> bool:
    return all(_compare(value.get(k), v) for k, v in (flt or {}).items())


def _validate(namespace: tuple[str, ...], *, allow_empty: bool = False) -> None:
    if not namespace and allow_empty:
        return
    if not namespace:
        raise InvalidNamespaceError("Namespace cannot be empty.")
    for label in namespace:
        if not isinstance(label, str) or not label or SEP in label or "\x00" in label:
            raise InvalidNamespaceError(
                f"invalid namespace label {label!r} in {namespace!r}: labels are non-empty strings "
                f"without '.' or NUL")
    if namespace[0] == "langgraph":
        raise InvalidNamespaceError(f'the root label of a namespace cannot be "langgraph", got {namespace!r}')


class _EmbedAdapter:
    """A LangGraph `embed` (Embeddings or a function of texts) seen as skillmem's Embedder."""

    def __init__(self, embed: Any, dims: int, name: str):
        self.embed, self.dim, self.name = embed, dims, name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        f = getattr(self.embed, "embed_documents", self.embed)
        return np.asarray(f(list(texts)), dtype=np.float32)


class SkillStore(BaseStore):
    """A LangGraph store over skill memory: curated lessons and demonstrations, and any other item as given.

    `index`: `{"fields": ["$"]}` (the default: each value embedded whole with the memory's
    embedder), `{"fields": ["text", "tags[*]"]}`, optionally `"embed"` (a LangChain
    Embeddings or a function of texts) with `"dims"` and `"name"`; `index=None` keeps
    items without vectors. `ttl`: LangGraph's TTLConfig (`default_ttl` minutes,
    `refresh_on_read`, `sweep_interval_minutes`).
    """

    supports_ttl = True

    def __init__(self, memory: Any, *, index: Any = "default", ttl: Optional[TTLConfig] = None):
        self.memory = memory
        if index == "default":
            index = {"fields": ["$"]}
        self.index_config = dict(index) if index else None
        if self.index_config is not None:
            from langgraph.store.base.embed import tokenize_path

            self._fields = [(p, p if p == "$" else tokenize_path(p)) for p in self.index_config.get("fields") or ["$"]]
        self._embedder = None
        if self.index_config and self.index_config.get("embed") is not None:
            embed = self.index_config["embed"]
            name = self.index_config.get("name") or getattr(embed, "model", None) or type(embed).__name__
            self._embedder = _EmbedAdapter(embed, int(self.index_config["dims"]), f"store:{name}")
        self.ttl_config = ttl
        self._last_sweep = utcnow()
        self._sweep_lock = threading.Lock()

    @property
    def embedder(self) -> Any:
        return self._embedder or self.memory.embedder

    # ------------------------------------------------------------------ the one abstract method

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run each operation in order (a `get` after a `put` in the same batch sees the put)."""
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                _validate(tuple(op.namespace))
                results.append(self._get(op))
            elif isinstance(op, SearchOp):
                _validate(tuple(op.namespace_prefix), allow_empty=True)
                results.append(self._search(op))
            elif isinstance(op, PutOp):
                _validate(tuple(op.namespace))
                results.append(self._put(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                raise TypeError(f"SkillStore cannot run {type(op).__name__}")
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """`batch` in a worker thread: SQL, embedding and FAISS calls block, the event loop must not."""
        return await asyncio.to_thread(self.batch, list(ops))

    # ------------------------------------------------------------------ put: every write goes through here

    def _put(self, op: PutOp) -> None:
        """Every write of the store (put and delete, curated or not) passes through this one method."""
        ns = tuple(op.namespace)
        cur = _curated(ns)
        if cur is not None:
            return self._put_curated(ns, cur[0], cur[1], op)
        return self._put_item(ns, op)

    def _put_item(self, ns: tuple[str, ...], op: PutOp) -> None:
        t = StoreItemRow.__table__
        joined = SEP.join(ns)
        where = and_(t.c.namespace == joined, t.c.key == op.key)
        if op.value is None:
            with self.memory.engine.begin() as conn:
                conn.execute(delete(t).where(where))
            return
        if not isinstance(op.value, dict):
            raise TypeError(f"a store value is a dict, got {type(op.value).__name__}")
        value = dict(op.value)
        vectors = self._vectors(value, op.index)  # before the write transaction (SQLite: one writer)
        now = utcnow()
        ttl = None if op.ttl in (None, NOT_PROVIDED) else float(op.ttl)
        fields = dict(value=value, vectors=vectors, updated_at=now, ttl_minutes=ttl,
                      expires_at=None if ttl is None else now + timedelta(minutes=ttl))
        for _ in range(3):  # two writers inserting one new key: the loser updates instead
            try:
                with self.memory.engine.begin() as conn:
                    if conn.execute(update(t).where(where).values(**fields)).rowcount == 0:
                        conn.execute(insert(t).values(namespace=joined, key=op.key, created_at=now, **fields))
                break
            except IntegrityError:
                continue
        self._maybe_sweep()

    def _vectors(self, value: dict[str, Any], index: Any) -> Optional[dict[str, str]]:
        if self.index_config is None or index is False:
            return None
        from langgraph.store.base.embed import get_text_at_path, tokenize_path

        fields = self._fields if index is None else [(p, p if p == "$" else tokenize_path(p)) for p in index]
        paths: list[str] = []
        texts: list[str] = []
        for path, tokens in fields:
            found = get_text_at_path(value, tokens)
            for i, piece in enumerate(found):
                paths.append(path if len(found) == 1 else f"{path}.{i}")
                texts.append(piece)
        if not texts:
            return {}
        _, keys = embed_texts(self.memory.engine, self.embedder, texts, read_engine=self.memory.read_engine)
        return dict(zip(paths, keys))

    def _put_curated(self, ns: tuple[str, ...], space: str, kind: str, op: PutOp) -> None:
        if op.ttl not in (None, NOT_PROVIDED):
            raise ValueError(f"{ns!r} holds curated {_collection(kind)}: they are retired by delete, not expired "
                             "by a TTL; put them without ttl=")
        if op.index not in (None,):
            raise ValueError(f"{ns!r} holds curated {_collection(kind)}: they are always indexed by their text; "
                             "put them without index=")
        existing = self._resolve(ns, space, kind, op.key)
        if op.value is None:
            if existing is not None:
                if kind == LESSON:
                    self.memory.retire_lesson(existing.id, reason="deleted through the LangGraph store")
                else:
                    curate.set_status(self.memory.curator, DEMO, existing.id, "retire", "deleted through the LangGraph store")
            self._unmap(ns, op.key)
            return
        model, fields = (LessonBase, curate.LESSON_FIELDS) if kind == LESSON else (DemonstrationBase, curate.DEMO_FIELDS)
        value = dict(op.value)
        unknown = sorted(set(value) - set(fields) - _ROW_FIELDS)
        if unknown:
            raise ValueError(f"{ns!r} holds {_collection(kind)}; fields {unknown} are not part of one "
                             f"(allowed: {', '.join(fields)}). Put other data in a namespace of your own.")
        if existing is not None:
            changes = {k: v for k, v in value.items() if k in fields and v != getattr(existing, k)}
            if changes:
                curate.edit(self.memory.curator, kind, existing.id, changes, reason="put through the LangGraph store")
            return
        data = {k: v for k, v in value.items() if k in fields}
        data["provenance"] = {**(data.get("provenance") or {}), "store_key": op.key}
        try:
            item = model.model_validate(data)
        except Exception as exc:
            raise ValueError(f"not a valid {kind} for {ns!r}: {exc}") from exc
        item_id, _ = curate.add_item(self.memory.curator, kind, item, namespace=space, episode_id=None)
        self._map(ns, op.key, kind, item_id)

    # -- the caller's key for a curated item

    def _map(self, ns: tuple[str, ...], key: str, kind: str, item_id: int) -> None:
        t = StoreItemRow.__table__
        joined, now = SEP.join(ns), utcnow()
        with self.memory.engine.begin() as conn:
            where = and_(t.c.namespace == joined, t.c.key == key)
            if conn.execute(update(t).where(where).values(item_kind=kind, item_id=item_id, updated_at=now)).rowcount == 0:
                conn.execute(insert(t).values(namespace=joined, key=key, item_kind=kind, item_id=item_id,
                                              created_at=now, updated_at=now))

    def _unmap(self, ns: tuple[str, ...], key: str) -> None:
        t = StoreItemRow.__table__
        with self.memory.engine.begin() as conn:
            conn.execute(delete(t).where(and_(t.c.namespace == SEP.join(ns), t.c.key == key)))

    def _keys(self, ns: tuple[str, ...]) -> dict[int, str]:
        """item id -> the caller's key, for the items of a curated namespace put with a key of their own."""
        t = StoreItemRow.__table__
        with self.memory.read_engine.connect() as conn:
            rows = conn.execute(select(t.c.key, t.c.item_id).where(t.c.namespace == SEP.join(ns),
                                                                  t.c.item_id.is_not(None))).all()
        return {int(i): k for k, i in rows}

    def _resolve(self, ns: tuple[str, ...], space: str, kind: str, key: str) -> Optional[Any]:
        """The readable item a key names in a curated namespace (following merges), or None."""
        t = StoreItemRow.__table__
        with self.memory.read_engine.connect() as conn:
            mapped = conn.execute(select(t.c.item_id).where(t.c.namespace == SEP.join(ns), t.c.key == key,
                                                           t.c.item_id.is_not(None))).scalar()
            item_id = mapped if mapped is not None else (int(key) if key.isdigit() else None)
            if item_id is not None and mapped is None and int(item_id) in self._keys(ns):
                item_id = None  # that id was put under a key of its own; the id is not its key
            for _ in range(20):  # a merged item points at the one it was folded into
                if item_id is None:
                    return None
                row = fetch_rows(conn, kind, [int(item_id)], namespace=space).get(int(item_id))
                if row is None:
                    return None
                merged_into = getattr(row, "merged_into", None)
                if row.status.value == "merged" and merged_into:
                    item_id = merged_into
                    continue
                return row if row.status.value in READABLE else None
        return None

    # ------------------------------------------------------------------ reads

    def _live(self) -> Any:
        t = StoreItemRow.__table__
        return or_(t.c.expires_at.is_(None), t.c.expires_at > utcnow())

    def _item(self, row: Any, *, score: Optional[float] = None, search: bool = False) -> Item:
        ns = tuple(row.namespace.split(SEP))
        args = dict(namespace=ns, key=row.key, value=dict(row.value), created_at=_aware(row.created_at),
                    updated_at=_aware(row.updated_at))
        return SearchItem(**args, score=score) if search else Item(**args)

    def _curated_item(self, ns: tuple[str, ...], key: str, row: Any, *, score: Optional[float] = None,
                      search: bool = False) -> Item:
        value = row.model_dump(mode="json", exclude={"created_at", "updated_at"})
        args = dict(namespace=ns, key=key, value=value, created_at=_aware(row.created_at),
                    updated_at=_aware(row.updated_at))
        return SearchItem(**args, score=score) if search else Item(**args)

    def _refresh(self, ids: list[int], refresh: bool) -> None:
        if not refresh or not ids:
            return
        t = StoreItemRow.__table__
        now = utcnow()
        with self.memory.engine.begin() as conn:
            for row_id, ttl in conn.execute(select(t.c.id, t.c.ttl_minutes).where(t.c.id.in_(ids),
                                                                                  t.c.ttl_minutes.is_not(None))).all():
                conn.execute(update(t).where(t.c.id == row_id).values(expires_at=now + timedelta(minutes=ttl)))

    def _get(self, op: GetOp) -> Optional[Item]:
        ns = tuple(op.namespace)
        cur = _curated(ns)
        if cur is not None:
            row = self._resolve(ns, cur[0], cur[1], op.key)
            return None if row is None else self._curated_item(ns, op.key, row)
        t = StoreItemRow.__table__
        with self.memory.read_engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.namespace == SEP.join(ns), t.c.key == op.key,
                                               t.c.item_id.is_(None), self._live())).first()
        if row is None:
            return None
        self._refresh([row.id], bool(op.refresh_ttl))
        return self._item(row)

    def _generic_rows(self, prefix: tuple[str, ...]) -> list[Any]:
        t = StoreItemRow.__table__
        q = select(t).where(t.c.item_id.is_(None), self._live())
        if prefix:
            joined = SEP.join(prefix)
            escaped = joined.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(or_(t.c.namespace == joined, t.c.namespace.like(escaped + SEP + "%", escape="\\")))
        with self.memory.read_engine.connect() as conn:
            return list(conn.execute(q.order_by(t.c.id)).all())

    def _curated_spaces(self, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], str, str]]:
        out = []
        for space, kind in self._memory_namespaces():
            ns = (ROOT, space, _collection(kind))
            if ns[: len(prefix)] == prefix and len(prefix) <= 3:
                out.append((ns, space, kind))
        return out

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        want = max(op.offset, 0) + max(op.limit, 0)
        ranked = bool(op.query) and self.index_config is not None
        scored: list[tuple[float, Item]] = []
        plain: list[Item] = []
        rows = [r for r in self._generic_rows(prefix) if _matches(r.value or {}, op.filter)]
        if ranked and rows:
            q = self._query_vector(op.query)
            hashes = sorted({h for r in rows for h in (r.vectors or {}).values()})
            vecs = load_vectors(self.memory.read_engine, self.embedder, hashes) if hashes else {}
            for r in rows:
                vs = [vecs[h] for h in (r.vectors or {}).values() if h in vecs]
                if vs:
                    m = np.stack(vs)
                    sims = m @ q / (np.linalg.norm(m, axis=1) * (np.linalg.norm(q) or 1.0) + 1e-12)
                    scored.append((float(sims.max()), self._item(r, score=float(sims.max()), search=True)))
                else:
                    plain.append(self._item(r, search=True))
        else:
            plain = [self._item(r, search=True) for r in rows]
        for ns, space, kind in self._curated_spaces(prefix):
            keys = self._keys(ns)
            if op.query:
                self.memory.index.sync()
                # Filters apply after ranking: ask for enough to fill the page after filtering.
                limit = want if not op.filter else max(want, 200)
                for row, s in search_items(self.memory.index, self.memory.embedder.encode([query_text(op.query, "")]),
                                           namespace=space, kind=kind, limit=limit):
                    it = self._curated_item(ns, keys.get(row.id, str(row.id)), row, score=s, search=True)
                    if _matches(it.value, op.filter):
                        scored.append((s, it))
            else:
                for row in (self.memory.lessons if kind == LESSON else self.memory.demonstrations)(space):
                    if row.status.value in READABLE:
                        it = self._curated_item(ns, keys.get(row.id, str(row.id)), row, search=True)
                        if _matches(it.value, op.filter):
                            plain.append(it)
        scored.sort(key=lambda p: -p[0])
        items = [it for _, it in scored] + plain
        page = items[op.offset: op.offset + op.limit]
        self._refresh_items(page, bool(op.refresh_ttl))
        return page

    def _refresh_items(self, items: list[Item], refresh: bool) -> None:
        if not refresh:
            return
        t = StoreItemRow.__table__
        generic = [(SEP.join(i.namespace), i.key) for i in items if _curated(tuple(i.namespace)) is None]
        if not generic:
            return
        with self.memory.read_engine.connect() as conn:
            ids = [r[0] for ns, key in generic for r in conn.execute(
                select(t.c.id).where(t.c.namespace == ns, t.c.key == key)).all()]
        self._refresh(ids, True)

    def _query_vector(self, query: str) -> np.ndarray:
        return np.asarray(self.embedder.encode([query]), dtype=np.float32)[0]

    def _memory_namespaces(self) -> list[tuple[str, str]]:
        out = set()
        with self.memory.read_engine.connect() as conn:
            for kind, model in KIND_TABLE.items():
                t = model.__table__
                for (ns,) in conn.execute(select(t.c.namespace).where(t.c.status.in_(READABLE)).distinct()):
                    out.add((ns, kind))
        return sorted(out)

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        t = StoreItemRow.__table__
        with self.memory.read_engine.connect() as conn:
            generic = {tuple(r[0].split(SEP)) for r in conn.execute(
                select(t.c.namespace).where(t.c.item_id.is_(None), self._live()).distinct())}
        names = generic | {(ROOT, ns, _collection(kind)) for ns, kind in self._memory_namespaces()}

        def ok(n: tuple[str, ...]) -> bool:
            for cond in op.match_conditions or ():
                path = tuple(cond.path)
                if len(path) > len(n):
                    return False
                part = n[: len(path)] if cond.match_type == "prefix" else n[len(n) - len(path):]
                if any(p != "*" and p != x for p, x in zip(path, part)):
                    return False
            return True

        found = [n for n in names if ok(n)]
        if op.max_depth is not None:
            found = [n[: op.max_depth] for n in found]
        return sorted(set(found))[op.offset: op.offset + op.limit]

    # ------------------------------------------------------------------ TTL

    def sweep_ttl(self) -> int:
        """Delete expired items now; returns how many. Writes also sweep, at most every `sweep_interval_minutes`."""
        t = StoreItemRow.__table__
        with self.memory.engine.begin() as conn:
            n = conn.execute(delete(t).where(t.c.expires_at.is_not(None), t.c.expires_at <= utcnow())).rowcount
        self._last_sweep = utcnow()
        return int(n or 0)

    def _maybe_sweep(self) -> None:
        interval = (self.ttl_config or {}).get("sweep_interval_minutes")
        if not interval:
            return
        with self._sweep_lock:
            due = utcnow() - self._last_sweep >= timedelta(minutes=interval)
        if due:
            self.sweep_ttl()
