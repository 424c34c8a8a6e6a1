"""Retrieval from skill memory: the FAISS cache kept in step with SQL, and the context it builds.

`MemoryIndex` owns the vector index of one database: which partition each retrievable
item lives in, the high-water mark (the largest `lesson_events.id` it reflects), loading
and saving next to the database, and catching up with changes other processes commit.
`retrieve` turns a goal and an observation into a `Context`: MMR-diverse lessons (general
and task-type, as in SkillRL) and task-type demonstrations, rendered within a token budget,
each recorded in the `retrievals` table.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
import warnings
from contextlib import contextmanager
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
from sqlalchemy import create_engine, event, insert, select, text, update
from sqlalchemy.engine import Engine

from .embed import Embedder, content_hash
from .episode import ItemStatus, Scope, utcnow
from .index import IndexCorrupt, VectorIndex
from .store import DemonstrationRow, EmbeddingRow, LessonRow, RetrievalRow
from .tokens import count_tokens

log = logging.getLogger(__name__)

LESSON, DEMO = "lesson", "demonstration"
KIND_TABLE = {LESSON: LessonRow, DEMO: DemonstrationRow}
# The query is cut here: embedding models read ~256 tokens anyway, and a 50,000-character
# observation must cost no more than a short one.
MAX_QUERY_CHARS = 4_000
# MMR trade-off between relevance and novelty (1.0 = relevance only).
MMR_LAMBDA = 0.7
# A candidate this close to an item already chosen adds nothing: never take it.
NEAR_COPY_COSINE = 0.95
# More new events than this since the saved mark: a rebuild is cheaper than applying them one by one.
REBUILD_AFTER_EVENTS = 5_000
ROW_CACHE = 20_000
_SQL_CHUNK = 900  # under SQLite's bound-parameter limit on old builds


# --------------------------------------------------------------------------- texts


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


def render_lesson(row: Any) -> str:
    """A lesson as the agent reads it: "- <situation>: <fix> (not <bad action>)"."""
    fix = " ".join(row.fix.split()).rstrip(".")
    bad = " ".join(row.bad_action.split())
    return f"- {' '.join(row.trigger.split())}: {fix}" + (f" (not {bad})" if bad and bad not in fix else "")


def render_demo(row: Any) -> str:
    goal = " ".join(row.goal_template.split()) or row.task_type or "this kind of task"
    steps = [f"  {i}. {' '.join(str(s).split())}" for i, s in enumerate(row.plan, 1)]
    return "\n".join([f"A plan that worked for: {goal}", *steps])


LESSON_HEADER = "Lessons from earlier attempts:"
DEMO_HEADER = "Demonstrations that succeeded:"


def partition_of(kind: str, row: Any) -> str:
    """The index partition an item is searched in: general lessons, task-type lessons, task-type demos."""
    if kind == LESSON:
        scope = row.scope.value if hasattr(row.scope, "value") else row.scope
        level = "general" if scope == Scope.general.value or not row.task_type else f"task:{row.task_type}"
        return f"{row.namespace}/lesson/{level}"
    return f"{row.namespace}/demo/task:{row.task_type}"


# --------------------------------------------------------------------------- SQL helpers


def head_event_id(conn: Any) -> int:
    """The high-water mark: every change to a lesson or demonstration is a lesson_events row."""
    return int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM lesson_events")).scalar() or 0)


def fetch_rows(conn: Any, kind: str, ids: Sequence[int], *, namespace: Optional[str] = None,
               active_only: bool = False) -> dict[int, Any]:
    """Rows of `kind` by id (optionally only one namespace's active ones), as model objects."""
    model = KIND_TABLE[kind]
    t = model.__table__
    out: dict[int, Any] = {}
    ids = sorted({int(i) for i in ids})
    for i in range(0, len(ids), _SQL_CHUNK):
        q = select(t).where(t.c.id.in_(ids[i:i + _SQL_CHUNK]))
        if namespace is not None:
            q = q.where(t.c.namespace == namespace)
        if active_only:
            q = q.where(t.c.status == ItemStatus.active.value)
        for r in conn.execute(q).mappings():
            out[int(r["id"])] = model.model_validate(dict(r))
    return out


def reader_engine(engine: Engine) -> Engine:
    """An engine for reads only. On SQLite the store's engine starts every transaction with
    BEGIN IMMEDIATE (the write lock); retrieval's reads must not queue behind writers, and in
    WAL mode a deferred BEGIN never waits."""
    if engine.dialect.name != "sqlite":
        return engine
    from .store import _sqlite_begin_read, _sqlite_pragmas

    reader = create_engine(engine.url, connect_args={"check_same_thread": False, "timeout": 60})
    event.listen(reader, "connect", _sqlite_pragmas)
    event.listen(reader, "begin", _sqlite_begin_read)
    return reader


def active_ids(conn: Any, kind: str, ids: Sequence[int], namespace: str) -> set[int]:
    """Which of `ids` are active items of `namespace` right now."""
    if not ids:
        return set()
    t = KIND_TABLE[kind].__table__
    q = select(t.c.id).where(t.c.id.in_(sorted(set(ids))), t.c.namespace == namespace,
                             t.c.status == ItemStatus.active.value)
    return {int(i) for (i,) in conn.execute(q)}


def insert_ignore(engine: Engine, table: Any) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table).on_conflict_do_nothing()
    return insert(table).prefix_with("OR IGNORE")


def embed_texts(engine: Engine, embedder: Embedder, texts: Sequence[str],
                read_engine: Optional[Engine] = None) -> tuple[np.ndarray, list[str]]:
    """Vectors of `texts` and their content hashes; each text is encoded at most once per model, ever.

    Looks in the `embeddings` table first, encodes only what is missing (in one batch) and
    stores it. Must not be called inside another write transaction (SQLite has one writer).
    """
    keys = [content_hash(t, embedder.name) for t in texts]
    found = load_vectors(read_engine or engine, embedder, keys)
    missing = {k: t for k, t in zip(keys, texts) if k not in found}
    if missing:
        new = np.asarray(embedder.encode(list(missing.values())), dtype=np.float32)
        rows = [dict(text_hash=k, model=embedder.name, dim=embedder.dim, vector=v.tobytes(), created_at=utcnow())
                for k, v in zip(missing, new)]
        with engine.begin() as conn:
            for i in range(0, len(rows), _SQL_CHUNK):
                conn.execute(insert_ignore(engine, EmbeddingRow.__table__), rows[i:i + _SQL_CHUNK])
        found.update(zip(missing, new))
    vecs = np.stack([found[k] for k in keys]) if keys else np.zeros((0, embedder.dim), np.float32)
    return np.ascontiguousarray(vecs, dtype=np.float32), keys


def load_vectors(engine: Engine, embedder: Embedder, keys: Sequence[str]) -> dict[str, np.ndarray]:
    t = EmbeddingRow.__table__
    out: dict[str, np.ndarray] = {}
    uniq = sorted(set(keys))
    with engine.connect() as conn:
        for i in range(0, len(uniq), _SQL_CHUNK):
            q = select(t.c.text_hash, t.c.vector).where(t.c.text_hash.in_(uniq[i:i + _SQL_CHUNK]),
                                                        t.c.model == embedder.name, t.c.dim == embedder.dim)
            for h, blob in conn.execute(q):
                out[h] = np.frombuffer(blob, dtype=np.float32)
    return out


# --------------------------------------------------------------------------- the index cache


def default_index_dir(url: str, index_dir: Any = None) -> Path:
    """SQLite: `<db path>.index/`; PostgreSQL: `index_dir=`, else a cache dir keyed by the URL's hash."""
    if index_dir is not None:
        return Path(index_dir)
    if url.startswith("sqlite"):
        return Path(url.split("///", 1)[1] + ".index")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skillmem" / f"index-{hashlib.sha256(url.encode()).hexdigest()[:16]}"


class MemoryIndex:
    """The vector index of one database, kept in step with SQL through the lesson_events mark.

    Holds only retrievable (active) items. Every method takes one re-entrant lock, so a
    reader never sees a half-applied change; SQL stays the truth and retrieval re-checks
    each hit against it.
    """

    def __init__(self, engine: Engine, embedder: Callable[[], Embedder], directory: Path,
                 *, save_interval: float = 30.0, read_engine: Optional[Engine] = None):
        self.engine = engine
        self.read_engine = read_engine or engine
        self._get_embedder = embedder
        self.directory = Path(directory)
        self.save_interval = save_interval
        self.index: Optional[VectorIndex] = None
        self.mark = 0  # largest lesson_events.id the index reflects
        self._where: dict[tuple[str, int], str] = {}  # (kind, id) -> partition
        # Row objects by (kind, id), dropped when an event names the item: building a
        # SQLModel row costs ~150 µs, more than the search itself at 10k items.
        self._rows: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.RLock()
        self._dirty = False
        self._saved_at = 0.0

    @property
    def embedder(self) -> Embedder:
        return self._get_embedder()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        # Two processes saving into one directory must not delete each other's partition files.
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- start

    def ensure_loaded(self) -> None:
        """Load the saved index, or rebuild it from SQL when missing, stale in model, or unreadable."""
        if self.index is not None:
            return
        with self._lock:
            if self.index is not None:
                return
            emb = self.embedder
            loaded = self._load_saved()
            if loaded is None:
                self.rebuild()
                return
            index, meta = loaded
            if meta.get("model") != emb.name or index.dim != emb.dim:
                log.info("skillmem index at %s was built with %r; rebuilding for %r",
                         self.directory, meta.get("model"), emb.name)
                self.rebuild()
                return
            with self.read_engine.connect() as conn:
                head = head_event_id(conn)
            if int(meta.get("high_water", -1)) > head:
                # The saved index has seen changes the database has not: a restored backup. Never trust it.
                self.rebuild()
                return
            self.index, self.mark = index, int(meta["high_water"])
            self._where = {(kind, int(i)): p for p in index.partitions()
                           for kind in [LESSON if "/lesson/" in p else DEMO] for i in index.ids(p)}
            self._saved_at = time.monotonic()
            self.sync()

    def _load_saved(self) -> Optional[tuple[VectorIndex, dict[str, Any]]]:
        if not (self.directory / "manifest.json").exists():
            return None
        try:
            with self._file_lock():
                return VectorIndex.load(self.directory)
        except IndexCorrupt as exc:
            warnings.warn(f"skillmem: the saved index is unreadable and is rebuilt from SQL: {exc}",
                          RuntimeWarning, stacklevel=3)
            log.warning("skillmem index unreadable, rebuilding: %s", exc)
            return None

    # -- rebuild and catch up

    def rebuild(self) -> dict[str, int]:
        """Rebuild the whole index from SQL rows and cached vectors, then save it."""
        with self._lock:
            emb = self.embedder
            with self.read_engine.connect() as conn:
                head = head_event_id(conn)
                items = {kind: list(fetch_all_active(conn, kind)) for kind in KIND_TABLE}
            index = VectorIndex(emb.dim)
            where: dict[tuple[str, int], str] = {}
            counts: dict[str, int] = {}
            for kind, rows in items.items():
                self._add_rows(index, where, kind, rows)
                counts[kind] = len(rows)
            self.index, self.mark, self._where = index, head, where
            self._rows.clear()
            self._dirty = True
            self.save()
            return counts

    def _add_rows(self, index: VectorIndex, where: dict[tuple[str, int], str], kind: str, rows: list[Any]) -> None:
        if not rows:
            return
        vecs, keys = embed_texts(self.engine, self.embedder, [item_text(kind, r) for r in rows], self.read_engine)
        self._note_model(kind, rows, keys)
        by_part: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            p = partition_of(kind, r)
            old = where.get((kind, r.id))
            if old is not None and old != p:
                index.remove(old, [r.id])
            by_part.setdefault(p, []).append(i)
            where[(kind, r.id)] = p
        for p, pos in by_part.items():
            index.add(p, [rows[i].id for i in pos], vecs[pos])

    def _note_model(self, kind: str, rows: list[Any], keys: list[str]) -> None:
        """Rows record the model (and hash) their vector comes from; a model change rewrites them."""
        name = self.embedder.name
        stale = [(r.id, k) for r, k in zip(rows, keys) if r.embedding_model != name or r.text_hash != k]
        if not stale:
            return
        t = KIND_TABLE[kind].__table__
        with self.engine.begin() as conn:
            for rid, k in stale:
                conn.execute(update(t).where(t.c.id == rid).values(text_hash=k, embedding_model=name))

    def sync(self) -> int:
        """Catch up with changes committed since the mark (by any process); returns events applied."""
        self.ensure_loaded()
        with self.read_engine.connect() as conn:
            head = head_event_id(conn)
        if head == self.mark:
            return 0
        with self._lock:
            with self.read_engine.connect() as conn:
                head = head_event_id(conn)
                if head == self.mark:
                    return 0
                if head < self.mark or head - self.mark > REBUILD_AFTER_EVENTS:
                    self.rebuild()
                    return head
                changed = conn.execute(text(
                    "SELECT DISTINCT item_kind, item_id FROM lesson_events WHERE id > :m AND id <= :h"),
                    {"m": self.mark, "h": head}).fetchall()
                rows: dict[str, list[Any]] = {}
                for kind in KIND_TABLE:
                    ids = [int(i) for k, i in changed if k == kind]
                    rows[kind] = list(fetch_rows(conn, kind, ids).values()) if ids else []
                    for i in ids:  # out first; active ones go back in below, in their current partition
                        self._rows.pop((kind, i), None)
                        p = self._where.pop((kind, i), None)
                        if p is not None:
                            self.index.remove(p, [i])
            for kind, rs in rows.items():
                self._add_rows(self.index, self._where, kind,
                               [r for r in rs if r.status == ItemStatus.active])
            self.mark = head
            self._dirty = True
            self.maybe_save()
            return len(changed)

    def sync_if_loaded(self) -> None:
        """Catch up only if this process already uses the index (a status change must not load a model)."""
        if self.index is not None:
            self.sync()

    # -- persistence

    def maybe_save(self) -> None:
        if self._dirty and time.monotonic() - self._saved_at >= self.save_interval:
            self.save()

    def save(self) -> None:
        """Write the index and its mark. A crash before this leaves an older mark: the next start catches up."""
        with self._lock:
            if self.index is None:
                return
            with self._file_lock():
                self.index.save(self.directory, meta={"high_water": self.mark, "model": self.embedder.name})
            self._dirty = False
            self._saved_at = time.monotonic()

    def close(self) -> None:
        if self.index is not None and self._dirty:
            try:
                self.save()
            except OSError as exc:  # a read-only disk: the next start rebuilds, nothing is lost
                log.warning("skillmem: could not save the index to %s: %s", self.directory, exc)

    # -- reading

    def candidates(self, partitions: Sequence[str], query: np.ndarray, n: int
                   ) -> list[tuple[str, int, float, np.ndarray]]:
        """Top-`n` of each partition: (partition, id, cosine, vector), sorted by score then id."""
        out: list[tuple[str, int, float, np.ndarray]] = []
        with self._lock:
            for p in partitions:
                scores, ids = self.index.search(p, query, n)
                keep = ids[0] >= 0
                if not keep.any():
                    continue
                ids_p, s_p = ids[0][keep], scores[0][keep]
                vecs = self.index.vectors(p, ids_p)
                out.extend((p, int(i), float(s), v) for i, s, v in zip(ids_p, s_p, vecs))
        # Rounding makes ties exact, so equal inputs give the same order whatever the float noise.
        out.sort(key=lambda c: (-round(c[2], 6), c[1]))
        return out

    def rows(self, conn: Any, kind: str, ids: Sequence[int]) -> dict[int, Any]:
        """Rows by id through the cache (callers treat them as read-only snapshots)."""
        out, missing = {}, []
        with self._lock:
            mark = self.mark  # a row read before a sync must not be cached after it
            for i in ids:
                row = self._rows.get((kind, i))
                if row is None:
                    missing.append(i)
                else:
                    out[i] = row
        if missing:
            fetched = fetch_rows(conn, kind, missing)
            with self._lock:
                for i, row in fetched.items():
                    if self.mark == mark:
                        self._rows[(kind, i)] = row
                while len(self._rows) > ROW_CACHE:
                    self._rows.popitem(last=False)
            out.update(fetched)
        return out

    def partitions(self, prefix: str) -> list[str]:
        with self._lock:
            return [p for p in self.index.partitions() if p.startswith(prefix)]

    def check(self) -> dict[str, Any]:
        """Compare the saved index (what the next start would load) with SQL; nothing is changed."""
        report: dict[str, Any] = {"directory": str(self.directory)}
        with self.read_engine.connect() as conn:
            head = head_event_id(conn)
            want = {(kind, r.id): partition_of(kind, r) for kind in KIND_TABLE for r in fetch_all_active(conn, kind)}
        report.update(sql_high_water=head, sql_items=len(want))
        try:
            with self._file_lock():
                index, meta = VectorIndex.load(self.directory)
        except IndexCorrupt as exc:
            report.update(ok=False, readable=False, error=str(exc))
            return report
        have = {(LESSON if "/lesson/" in p else DEMO, int(i)): p for p in index.partitions() for i in index.ids(p)}
        missing = sorted(k for k in want if k not in have)
        extra = sorted(k for k in have if k not in want)
        misplaced = sorted(k for k in want if k in have and have[k] != want[k])
        report.update(
            readable=True, index_high_water=int(meta.get("high_water", -1)), index_model=meta.get("model"),
            index_items=len(have), missing=[list(k) for k in missing], extra=[list(k) for k in extra],
            misplaced=[list(k) for k in misplaced],
        )
        report["ok"] = not (missing or extra or misplaced) and report["index_high_water"] == head
        return report


def fetch_all_active(conn: Any, kind: str) -> Iterator[Any]:
    model = KIND_TABLE[kind]
    t = model.__table__
    for r in conn.execute(select(t).where(t.c.status == ItemStatus.active.value).order_by(t.c.id)).mappings():
        yield model.model_validate(dict(r))


# --------------------------------------------------------------------------- retrieval


@dataclass
class Context:
    """What retrieval puts into the agent's context: the chosen rows, their scores, the text."""

    lessons: list[LessonRow] = field(default_factory=list)
    demonstrations: list[DemonstrationRow] = field(default_factory=list)
    scores: dict[tuple[str, int], float] = field(default_factory=dict)  # (kind, id) -> cosine to the query
    text: str = ""
    tokens: int = 0
    items: list[tuple[str, int, float, int]] = field(default_factory=list)  # (kind, id, score, tokens) by rank

    def __bool__(self) -> bool:
        return bool(self.items)


def mmr(cands: list[tuple[str, int, float, np.ndarray]], k: int, lam: float = MMR_LAMBDA
        ) -> list[tuple[str, int, float, np.ndarray]]:
    """Maximal marginal relevance: relevant, and unlike what is already chosen; ties go to the lower id."""
    chosen: list[tuple[str, int, float, np.ndarray]] = []
    rest = list(cands)
    while rest and len(chosen) < k:
        if chosen:
            sel = np.stack([c[3] for c in chosen])
            sims = np.stack([c[3] for c in rest]) @ sel.T
            redundancy = sims.max(axis=1)
        else:
            redundancy = np.zeros(len(rest), dtype=np.float32)
        best, best_key = -1, None
        for i, c in enumerate(rest):
            if redundancy[i] >= NEAR_COPY_COSINE:
                continue
            key = (-round(lam * c[2] - (1 - lam) * float(redundancy[i]), 6), c[1])
            if best_key is None or key < best_key:
                best, best_key = i, key
        if best < 0:
            break
        chosen.append(rest.pop(best))
    return chosen


def build_context(index: MemoryIndex, query: np.ndarray, *, namespace: str, task_type: Optional[str], k: int,
                  k_demos: int, token_budget: int, kinds: Sequence[str]) -> Context:
    """Choose and render items within the budget (no recording: see `record_retrievals`)."""
    ctx = Context()
    lesson_c: list[tuple[str, int, float, np.ndarray]] = []
    demo_c: list[tuple[str, int, float, np.ndarray]] = []
    if LESSON in kinds and k > 0:
        parts = [f"{namespace}/lesson/general"] + ([f"{namespace}/lesson/task:{task_type}"] if task_type else [])
        lesson_c = index.candidates(parts, query, max(4 * k, 32))
    if DEMO in kinds and k_demos > 0:
        demo_c = index.candidates([f"{namespace}/demo/task:{task_type or ''}"], query, max(4 * k_demos, 8))
    # SQL has the last word: only items of this namespace that are active now (a hit the index
    # still holds after another process retired it is dropped here).
    with index.read_engine.connect() as conn:
        ok_l = active_ids(conn, LESSON, [c[1] for c in lesson_c], namespace)
        ok_d = active_ids(conn, DEMO, [c[1] for c in demo_c], namespace)
        picks = {LESSON: mmr([c for c in lesson_c if c[1] in ok_l], k),
                 DEMO: mmr([c for c in demo_c if c[1] in ok_d], k_demos)}
        lesson_rows = index.rows(conn, LESSON, [c[1] for c in picks[LESSON]])
        demo_rows = index.rows(conn, DEMO, [c[1] for c in picks[DEMO]])
    # Greedy fill: lines are joined by newlines, so tokens add up part by part.
    lines: list[str] = []
    used = 0
    # Demonstrations first: a concrete plan is the most a small budget can carry.
    for kind, header, rows, render in ((DEMO, DEMO_HEADER, demo_rows, render_demo),
                                       (LESSON, LESSON_HEADER, lesson_rows, render_lesson)):
        header_tokens = count_tokens(header)
        started = False
        for _, item_id, score, _ in picks[kind]:
            row = rows[item_id]
            block = render(row)
            block_tokens = count_tokens(block)
            cost = block_tokens + (0 if started else header_tokens)
            if used + cost > token_budget:
                continue  # a shorter item further down may still fit
            if not started:
                lines.append(header)
                started = True
            lines.append(block)
            used += cost
            (ctx.lessons if kind == LESSON else ctx.demonstrations).append(row)
            ctx.scores[(kind, item_id)] = score
            ctx.items.append((kind, item_id, score, block_tokens))
    ctx.text = "\n".join(lines)
    ctx.tokens = count_tokens(ctx.text)
    assert ctx.tokens <= token_budget, (ctx.tokens, token_budget)  # additive by construction
    return ctx


def record_retrievals(engine: Engine, ctx: Context, *, namespace: str, episode_id: Optional[str],
                      step_index: Optional[int]) -> None:
    """Write every item of `ctx` to `retrievals` in one transaction."""
    if not ctx.items:
        return
    now = utcnow()
    rows = [dict(namespace=namespace, episode_id=episode_id, step_index=step_index, item_kind=kind,
                 item_id=item_id, rank=rank, score=float(score), tokens=tokens, created_at=now)
            for rank, (kind, item_id, score, tokens) in enumerate(ctx.items)]
    with engine.begin() as conn:
        conn.execute(insert(RetrievalRow.__table__), rows)


def query_text(goal: Any, observation: Any) -> str:
    parts = [str(p).strip() for p in (goal, observation) if p]
    return "\n".join(p for p in parts if p)[:MAX_QUERY_CHARS]


def search_items(index: MemoryIndex, query: np.ndarray, *, namespace: str, kind: str,
                 limit: int) -> list[tuple[Any, float]]:
    """Plain top-`limit` similarity search over every partition of one kind in a namespace (active only)."""
    prefix = f"{namespace}/{'lesson' if kind == LESSON else 'demo'}/"
    cands = index.candidates(index.partitions(prefix), query, limit)
    with index.read_engine.connect() as conn:
        rows = fetch_rows(conn, kind, [c[1] for c in cands], namespace=namespace, active_only=True)
    return [(rows[c[1]], c[2]) for c in cands if c[1] in rows][:limit]


# --------------------------------------------------------------------------- LangGraph node


def retrieval_node(memory: Any, *, k: int = 5, token_budget: int = 400, key: str = "context",
                   as_system_message: bool = False, namespace: Optional[str] = None,
                   k_demos: int = 1) -> Callable[..., dict[str, Any]]:
    """A LangGraph node that puts retrieved lessons and demonstrations into the state.

    Reads `goal` and `observation` (a messages state without them: the query comes from the
    messages, see :func:`skillmem.prompt.query_from_messages`), `task_type`, `episode_id`
    (else the episode `wrap()` is recording, else a new id, kept for the rest of the run) and
    `step_index` if present; writes `state[key]` (the text), `context_tokens` and `episode_id`.
    With `as_system_message` it also puts the text in `messages` as ONE SystemMessage whose id
    stays the same for the episode, so LangGraph's `add_messages` replaces it instead of
    appending another. (For create_react_agent, `skillmem.memory_prompt` is the simpler hook.)
    """
    from .episode import new_id
    from .prompt import current_config, query_from_messages, recorded_episode

    steps: dict[str, int] = {}
    by_task: dict[str, str] = {}

    def retrieve_context(state: dict[str, Any]) -> dict[str, Any]:
        messages = state.get("messages") or []
        goal = state.get("goal") or ""
        query_goal = goal or (query_from_messages(messages) if messages else "")
        episode_id = state.get("episode_id") or recorded_episode(current_config())
        if not episode_id:
            # A state without an episode_id channel never carries ours back: keep one per task.
            task = query_from_messages(messages, errors=0) if messages else goal
            episode_id = by_task.setdefault(task, new_id()) if task else new_id()
        step = state.get("step_index")
        if step is None:  # count the calls per episode: one retrieval per agent step
            step = steps.get(episode_id, 0)
            steps[episode_id] = step + 1
        ctx = memory.retrieve(query_goal, state.get("observation") or "", namespace=namespace,
                              task_type=state.get("task_type") or None, k=k, k_demos=k_demos,
                              token_budget=token_budget, episode_id=episode_id, step_index=step)
        out: dict[str, Any] = {key: ctx.text, "context_tokens": ctx.tokens, "episode_id": episode_id}
        if as_system_message and ctx.text:
            from langchain_core.messages import SystemMessage
            out["messages"] = [SystemMessage(content=ctx.text, id=f"skillmem-context-{episode_id}")]
        return out

    return retrieve_context
