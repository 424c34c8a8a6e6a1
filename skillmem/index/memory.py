"""MemoryIndex: one store's retrievable items in process, kept exact by the audit high-water mark.

It holds, for every active lesson and demonstration, its vector (in a `VectorIndex`
partition) and a compact `Item` (the fields retrieval renders), so that a retrieval reads
no SQL unless memory changed. Whether it changed is one cheap read on a connection kept
open (`HeadProbe`: the largest `lesson_events.id` and the store's id), made by a retrieval
only when this process wrote to lesson_events since the last one or the last one is over
`PROBE_INTERVAL` (50 ms) old; the changes since the mark are then applied in place, by
any process's writes. So another process's change is retrievable within 50 ms plus the
sync, this process's own at once.

The index is saved next to the database with its mark, the store's identity and a
fingerprint of the event at the mark. A saved index is used only for the same store at
the same history: a replaced database file or a dump restored at the same URL (another
store id, a mark above the head, or another event at the mark) is rebuilt from SQL.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import logging
import os
import sqlite3
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
from sqlalchemy import create_engine, event, insert, select, text, update
from sqlalchemy.engine import Engine

from ..embed import Embedder, content_hash
from ..episode import ItemStatus, utcnow
from ..store import EmbeddingRow, keep_inherited, store_id
from .items import DEMO, ITEM_COLUMNS, KIND_TABLE, LESSON, Item, item_text, partition_kind, partition_of
from .vector import DEFAULT_NPROBE, EXACT_MAX, IndexCorrupt, VectorIndex

log = logging.getLogger(__name__)

# More new events than this since the saved mark: a rebuild is cheaper than applying them one by one.
REBUILD_AFTER_EVENTS = 5_000
ROW_CACHE = 20_000  # full rows kept for `Context.lessons` / `.demonstrations`
_SQL_CHUNK = 900  # under SQLite's bound-parameter limit on old builds
ENV_INDEX_KIND = "SKILLMEM_INDEX"  # auto | exact | ivf

# How long after one probe of the high-water mark the next retrieval trusts it without
# asking: another process's change is seen within this (plus the sync), this process's own
# changes at once (see `_note_local_write`). At an agent's step rate that is one SQL read in
# many retrievals instead of one in each (on PostgreSQL a read is a network round trip).
PROBE_INTERVAL = 0.05

_PROBE_SQL = ("SELECT (SELECT COALESCE(MAX(id), 0) FROM lesson_events), "
              "(SELECT value FROM skillmem_meta WHERE key = 'store_id')")


# --------------------------------------------------------------------------- SQL helpers


def head_event_id(conn: Any) -> int:
    """The high-water mark: every change to a lesson or demonstration is a lesson_events row."""
    return int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM lesson_events")).scalar() or 0)


def event_fingerprint(conn: Any, event_id: int) -> str:
    """What the event at `event_id` was: a restored dump has another event there, or none."""
    if event_id <= 0:
        return ""
    r = conn.execute(text("SELECT item_kind, item_id, action, created_at, after FROM lesson_events WHERE id = :i"),
                     {"i": int(event_id)}).first()
    if r is None:
        return ""
    # The time to the microsecond and what the item became: two histories agree on both only by copy.
    return f"{event_id}:" + hashlib.sha256(repr(tuple(str(x) for x in r)).encode()).hexdigest()[:32]


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


def fetch_all_active(conn: Any, kind: str) -> Iterator[Any]:
    model = KIND_TABLE[kind]
    t = model.__table__
    for r in conn.execute(select(t).where(t.c.status == ItemStatus.active.value).order_by(t.c.id)).mappings():
        yield model.model_validate(dict(r))


def fetch_active_items(conn: Any, kind: str) -> tuple[list[Item], list[tuple[str, str]]]:
    """Every active item of `kind` as a compact `Item` (only the columns it keeps: fast at 1M),
    and the (text_hash, embedding_model) each row records."""
    t = KIND_TABLE[kind].__table__
    cols = [t.c[c] for c in ITEM_COLUMNS[kind]] + [t.c.text_hash, t.c.embedding_model]
    q = select(*cols).where(t.c.status == ItemStatus.active.value).order_by(t.c.id)
    items, recorded = [], []
    for r in conn.execute(q):
        items.append(Item(kind, r))
        recorded.append((r.text_hash, r.embedding_model))
    return items, recorded


def fetch_active_with_vectors(conn: Any, kind: str, model: str, dim: int, chunk: int = 50_000
                              ) -> tuple[list[Item], list[tuple[str, str]], np.ndarray, np.ndarray]:
    """`fetch_active_items` with each row's cached vector joined in SQL: (items, recorded,
    vectors (n, dim), found (n,) bool). A row without a vector of `model` (or whose recorded
    hash names none) has found False and a zero row; the caller checks the hash against the
    text. One query, blobs decoded by numpy a chunk at a time: what a rebuild at 1M needs."""
    t = KIND_TABLE[kind].__table__
    e = EmbeddingRow.__table__
    cols = [t.c[c] for c in ITEM_COLUMNS[kind]] + [t.c.text_hash, t.c.embedding_model, e.c.vector]
    q = (select(*cols).select_from(t.outerjoin(e, (e.c.text_hash == t.c.text_hash) & (e.c.model == model)
                                               & (e.c.dim == dim)))
         .where(t.c.status == ItemStatus.active.value).order_by(t.c.id))
    items: list[Item] = []
    recorded: list[tuple[str, str]] = []
    vec_parts: list[np.ndarray] = []
    found_parts: list[np.ndarray] = []
    width = 4 * dim
    zero = bytes(width)
    ncols = len(ITEM_COLUMNS[kind])
    # On the DBAPI cursor, plain tuples: SQLAlchemy's rows cost ~10 us each, 10 s at 1M. The
    # statement is compiled with its few literals inline (the model name is ours, quoted).
    sql = str(q.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute(sql)
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                break
            blobs = []
            found = np.empty(len(rows), dtype=bool)
            for j, r in enumerate(rows):
                items.append(Item.from_values(kind, r))
                recorded.append((r[ncols], r[ncols + 1]))
                blob = r[ncols + 2]
                ok = blob is not None and len(blob) == width
                found[j] = ok
                blobs.append(bytes(blob) if ok else zero)
            vec_parts.append(np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), dim))
            found_parts.append(found)
    finally:
        cur.close()
    if not vec_parts:
        return items, recorded, np.zeros((0, dim), np.float32), np.zeros(0, bool)
    vecs = vec_parts[0].copy() if len(vec_parts) == 1 else np.concatenate(vec_parts)
    return items, recorded, vecs, np.concatenate(found_parts)


def reader_engine(engine: Engine) -> Engine:
    """An engine for reads only. On SQLite the store's engine starts every transaction with
    BEGIN IMMEDIATE (the write lock); retrieval's reads must not queue behind writers, and in
    WAL mode a deferred BEGIN never waits."""
    if engine.dialect.name != "sqlite":
        return engine
    from ..store import _sqlite_begin_read, _sqlite_pragmas

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


def default_index_dir(url: str, index_dir: Any = None) -> Path:
    """SQLite: `<db path>.index/`; PostgreSQL: `index_dir=`, else a cache dir keyed by the URL's hash."""
    if index_dir is not None:
        return Path(index_dir)
    if url.startswith("sqlite"):
        return Path(url.split("///", 1)[1] + ".index")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skillmem" / f"index-{hashlib.sha256(url.encode()).hexdigest()[:16]}"


@contextmanager
def _one_thread() -> Iterator[None]:
    """FAISS on one OpenMP thread for this thread's block. A bulk build on a shared machine
    is ten times faster so: at 100k, cutting and filling the lists took 3.2 s on one thread
    and 34.5 s on two at load 10, the threads spinning at every barrier for a core."""
    from .vector import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# --------------------------------------------------------------------------- the change probe

# Writes to lesson_events committed in this process through a store's engine (every
# SkillMemory's, see `_listen_for_local_writes`): a retrieval that sees this counter move
# probes at once instead of trusting its last probe.
_local_writes = [0]
_FLAG = "skillmem_lesson_events_written"


def _mark_write(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    if "lesson_events" in statement and statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
        conn.info[_FLAG] = True
        _local_writes[0] += 1


def _bump_on_commit(conn: Any) -> None:
    if conn.info.get(_FLAG):
        _local_writes[0] += 1


def _bump_on_checkin(dbapi_connection: Any, record: Any) -> None:
    # After the commit: a probe that raced the commit above is followed by another.
    if record is not None and record.info.pop(_FLAG, None):
        _local_writes[0] += 1


def _listen_for_local_writes(engine: Engine) -> None:
    """Count `engine`'s lesson_events writes (only the store's own engines: never every
    engine of the host application)."""
    if not event.contains(engine, "before_cursor_execute", _mark_write):
        event.listen(engine, "before_cursor_execute", _mark_write)
        event.listen(engine, "commit", _bump_on_commit)
        event.listen(engine, "checkin", _bump_on_checkin)


class HeadProbe:
    """(high-water mark, store id) in one read on a connection it keeps open.

    Through the pool a read costs ~100-200 µs of checkout, transaction and result handling;
    on a DBAPI connection held in autocommit it is ~10 µs on SQLite and one round trip on
    PostgreSQL. On SQLite the file's inode is checked too: a connection to a replaced
    file would keep reading the old one.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sqlite_path = engine.url.database if engine.dialect.name == "sqlite" else None
        self._conn: Any = None
        self._inode: Optional[tuple[int, int]] = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        if self._sqlite_path is not None:
            conn = sqlite3.connect(self._sqlite_path, check_same_thread=False, isolation_level=None, timeout=60)
            conn.execute("PRAGMA query_only = ON")
            st = os.stat(self._sqlite_path)
            self._inode = (st.st_dev, st.st_ino)
            return conn
        raw = self.engine.raw_connection()
        driver = raw.driver_connection
        driver.autocommit = True  # no transaction left open: it would hold locks and old snapshots
        return raw

    def _replaced(self) -> bool:
        try:
            st = os.stat(self._sqlite_path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._inode

    def read(self) -> tuple[int, str]:
        with self._lock:
            for attempt in (0, 1):
                if self._conn is not None and self._sqlite_path is not None and self._replaced():
                    self.close()
                if self._conn is None:
                    self._conn = self._open()
                try:
                    if self._sqlite_path is not None:
                        head, sid = self._conn.execute(_PROBE_SQL).fetchone()
                    else:
                        cur = self._conn.driver_connection.cursor()
                        try:
                            cur.execute(_PROBE_SQL, prepare=True)
                            head, sid = cur.fetchone()
                        finally:
                            cur.close()
                    return int(head or 0), str(sid or "")
                except Exception:
                    self.close()  # a dropped connection (server restart): one fresh try
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    def after_fork(self) -> None:
        """In a forked child: the connection is the parent's session (kept, never used or
        closed here), and the lock may be held by a thread that does not exist here."""
        keep_inherited(self._conn)
        self._conn = None
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass
            self._conn = None


# --------------------------------------------------------------------------- the index

_open_indexes: "weakref.WeakSet[MemoryIndex]" = weakref.WeakSet()


def _reset_indexes_in_child() -> None:
    for index in list(_open_indexes):
        index.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_indexes_in_child)


def index_kind_setting(kind: Optional[str]) -> str:
    kind = kind or os.environ.get(ENV_INDEX_KIND) or "auto"
    if kind not in ("auto", "exact", "ivf"):
        raise ValueError(f"index kind must be 'auto', 'exact' or 'ivf' (argument or {ENV_INDEX_KIND}), got {kind!r}")
    return kind


class MemoryIndex:
    """The vector index and item cache of one database, kept in step with SQL through the
    lesson_events mark.

    Holds only retrievable (active) items. Every method takes one re-entrant lock, so a
    reader never sees a half-applied change. `kind`, `exact_max`, `nprobe`: see VectorIndex.
    """

    def __init__(self, engine: Engine, embedder: Callable[[], Embedder], directory: Path,
                 *, save_interval: float = 30.0, read_engine: Optional[Engine] = None,
                 kind: Optional[str] = None, exact_max: int = EXACT_MAX, nprobe: int = DEFAULT_NPROBE,
                 count_tokens: Optional[Callable[[Item], None]] = None):
        self.engine = engine
        # Called on each item a sync brings in (skillmem.retrieve.count_item_tokens): a new or
        # changed item is counted once, off the retrieval that first chooses it. Not on a load
        # or rebuild: ~7-19 us an item at every process start (19 s at 1M) for what each
        # retrieval pays once per item it chooses (review R18).
        self._count_tokens = count_tokens
        self.read_engine = read_engine or engine
        self._get_embedder = embedder
        self.directory = Path(directory)
        self.save_interval = save_interval
        self.settings = dict(kind=index_kind_setting(kind), exact_max=exact_max, nprobe=nprobe)
        self.index: Optional[VectorIndex] = None
        self.mark = 0  # largest lesson_events.id the index reflects
        self.store_id = ""  # the store it reflects (skillmem_meta.store_id)
        self.items: dict[tuple[str, int], Item] = {}  # every active item, by (kind, id)
        # Full row objects by (kind, id), dropped when an event names the item: building a
        # SQLModel row costs ~150 µs, more than the search itself at 10k items.
        self._rows: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.RLock()
        self._probe = HeadProbe(self.read_engine)
        self._dirty = False
        self._saved_at = 0.0
        self.rebuilds = 0  # full rebuilds this process did (the multi-process test counts them)
        self.probe_interval = PROBE_INTERVAL
        self._probed_at = -1e18  # monotonic time of the last probe `refresh` trusts
        self._probed_writes = -1  # _local_writes when it was taken
        _listen_for_local_writes(engine)
        _open_indexes.add(self)

    def after_fork(self) -> None:
        """In a forked child (gunicorn --preload, Celery prefork, multiprocessing's fork): the
        probe's connection and the engines' pooled ones are the parent's sessions, and a lock
        may be held by a thread that does not exist here. New locks, a new probe connection,
        new pools (`dispose(close=False)`: the parent's connections are left alone, SQLAlchemy's
        advice); the cache and the index are the parent's as of the fork, and the next
        retrieval probes the mark at once."""
        self._lock = threading.RLock()
        if self.index is not None:
            self.index._lock = threading.RLock()
        self._probe.after_fork()
        for engine in {id(e): e for e in (self.engine, self.read_engine)}.values():
            engine.dispose(close=False)
        self._probed_at = -1e18

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
        """Load the saved index if it is this store's at this history, else rebuild it from SQL."""
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
            with self.read_engine.connect() as conn:
                head, sid = head_event_id(conn), store_id(conn)
                mark = int(meta.get("high_water", -1))
                reason = None
                if meta.get("model") != emb.name or index.dim != emb.dim:
                    reason = f"it was built with {meta.get('model')!r}, the memory uses {emb.name!r}"
                elif meta.get("store_id") != sid:
                    # Another store's index at this path: a replaced file, a dump restored at the URL.
                    reason = f"it belongs to store {meta.get('store_id')!r}, the database is store {sid!r}"
                elif mark > head:
                    reason = f"it has seen event {mark}, the database ends at {head} (a restored backup)"
                elif meta.get("mark_event", "") != event_fingerprint(conn, mark):
                    reason = f"event {mark} in the database is not the one it was built at (another history)"
                if reason is None:
                    items = {(kind, it.id): it for kind in KIND_TABLE for it in fetch_active_items(conn, kind)[0]}
                    # Items are read at the head, the vectors are as of the mark: an item an event
                    # after the mark names is left out here, and the sync below applies it.
                    for kind, i in conn.execute(text("SELECT DISTINCT item_kind, item_id FROM lesson_events "
                                                     "WHERE id > :m"), {"m": mark}):
                        items.pop((kind, int(i)), None)
            if reason is not None:
                log.info("skillmem: the saved index at %s is not used (%s); rebuilding from SQL",
                         self.directory, reason)
                self.rebuild()
                return
            self.index, self.mark, self.store_id, self.items = index, mark, sid, items
            self._saved_at = time.monotonic()
            self.sync()

    def _load_saved(self) -> Optional[tuple[VectorIndex, dict[str, Any]]]:
        if not (self.directory / "manifest.json").exists():
            return None
        try:
            with self._file_lock():
                return VectorIndex.load(self.directory, **self.settings)
        except IndexCorrupt as exc:
            warnings.warn(f"skillmem: the saved index is unreadable and is rebuilt from SQL: {exc}",
                          RuntimeWarning, stacklevel=3)
            log.warning("skillmem index unreadable, rebuilding: %s", exc)
            return None

    # -- rebuild and catch up

    def rebuild(self) -> dict[str, int]:
        """Rebuild the whole index from SQL rows and cached vectors, then save it."""
        # A million small objects: the cyclic GC would rescan the growing heap again and again
        # (Item creation took ~40 us each at 100k with it on); nothing built here is cyclic.
        gc_was = gc.isenabled()
        gc.disable()
        try:
            return self._rebuild()
        finally:
            if gc_was:
                gc.enable()

    def _rebuild(self) -> dict[str, int]:
        with self._lock:
            emb = self.embedder
            index = VectorIndex(emb.dim, **self.settings)
            cache: dict[tuple[str, int], Item] = {}
            counts: dict[str, int] = {}
            with self.read_engine.connect() as conn:
                head, sid = head_event_id(conn), store_id(conn)
                loaded = {kind: fetch_active_with_vectors(conn, kind, emb.name, emb.dim) for kind in KIND_TABLE}
            for kind, (its, recorded, vecs, found) in loaded.items():
                self._bulk_add(index, cache, kind, its, recorded, vecs, found)
                counts[kind] = len(its)
            del loaded
            self.index, self.mark, self.store_id, self.items = index, head, sid, cache
            self._rows.clear()
            self.rebuilds += 1
            self._dirty = True
            self.save()
            return counts

    def _add_items(self, index: VectorIndex, cache: dict[tuple[str, int], Item], kind: str,
                   items: list[Item], recorded: list[tuple[str, str]]) -> None:
        if not items:
            return
        vecs, keys = embed_texts(self.engine, self.embedder, [item_text(kind, it) for it in items],
                                 self.read_engine)
        self._note_model(kind, items, keys, recorded)
        self._counted(items)
        by_part: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            old = cache.get((kind, it.id))
            if old is not None and old.partition != it.partition:
                index.remove(old.partition, [it.id])
            by_part.setdefault(it.partition, []).append(i)
            cache[(kind, it.id)] = it
        for p, pos in by_part.items():
            index.add(p, [items[i].id for i in pos], vecs[pos])

    def _counted(self, items: Any) -> None:
        if self._count_tokens is not None:
            for it in items:
                self._count_tokens(it)

    def _bulk_add(self, index: VectorIndex, cache: dict[tuple[str, int], Item], kind: str, items: list[Item],
                  recorded: list[tuple[str, str]], vecs: np.ndarray, found: np.ndarray) -> None:
        """Add a rebuild's items: joined vectors are used where the row's hash is its text's
        (checked here: a hash is never trusted blind), the rest are looked up or encoded."""
        if not items:
            return
        name = self.embedder.name
        keys = [content_hash(item_text(kind, it), name) for it in items]
        redo = [j for j, (k, (h, m), ok) in enumerate(zip(keys, recorded, found.tolist())) if not ok or h != k]
        if redo:
            fixed, _ = embed_texts(self.engine, self.embedder, [item_text(kind, items[j]) for j in redo],
                                   self.read_engine)
            vecs[redo] = fixed
        self._note_model(kind, items, keys, recorded)
        by_part: dict[str, list[int]] = {}
        for j, it in enumerate(items):
            by_part.setdefault(it.partition, []).append(j)
            cache[(kind, it.id)] = it
        ids = np.fromiter((it.id for it in items), dtype=np.int64, count=len(items))
        for p, pos in by_part.items():
            sel = np.asarray(pos, dtype=np.int64)
            with _one_thread():
                index.add(p, ids[sel], vecs[sel] if len(pos) < len(items) else vecs)

    def _note_model(self, kind: str, items: list[Item], keys: list[str], recorded: list[tuple[str, str]]) -> None:
        """Rows record the model (and hash) their vector comes from; a model change rewrites them."""
        name = self.embedder.name
        stale = [(it.id, k) for it, k, (h, m) in zip(items, keys, recorded) if m != name or h != k]
        if not stale:
            return
        t = KIND_TABLE[kind].__table__
        with self.engine.begin() as conn:
            for rid, k in stale:
                conn.execute(update(t).where(t.c.id == rid).values(text_hash=k, embedding_model=name))

    def sync(self) -> int:
        """Catch up with changes committed since the mark (by any process); returns events applied.

        The check is one read on the probe's open connection; nothing else is read unless
        the mark or the store changed.
        """
        self.ensure_loaded()
        head, sid = self._probe.read()
        if head == self.mark and sid == self.store_id:
            return 0
        with self._lock:
            head, sid = self._probe.read()
            if head == self.mark and sid == self.store_id:
                return 0
            if sid != self.store_id:
                log.warning("skillmem: the database is another store now (%r, was %r): rebuilding the index",
                            sid, self.store_id)
                self.engine.dispose()  # pooled connections may still read the replaced file
                self.read_engine.dispose()
                self.rebuild()
                return head
            if head < self.mark or head - self.mark > REBUILD_AFTER_EVENTS:
                self.rebuild()
                return head
            with self.read_engine.connect() as conn:
                changed = conn.execute(text(
                    "SELECT DISTINCT item_kind, item_id FROM lesson_events WHERE id > :m AND id <= :h"),
                    {"m": self.mark, "h": head}).fetchall()
                rows: dict[str, list[Any]] = {}
                for kind in KIND_TABLE:
                    ids = [int(i) for k, i in changed if k == kind]
                    rows[kind] = list(fetch_rows(conn, kind, ids).values()) if ids else []
                    for i in ids:  # out first; active ones go back in below, in their current partition
                        self._rows.pop((kind, i), None)
                        old = self.items.pop((kind, i), None)
                        if old is not None:
                            self.index.remove(old.partition, [i])
                        else:  # loaded from a saved index: the item may be there without a cache entry
                            for p in self.index.partitions():
                                if partition_kind(p) == kind:
                                    self.index.remove(p, [i])
            for kind, rs in rows.items():
                live = [r for r in rs if r.status == ItemStatus.active]
                self._add_items(self.index, self.items, kind, [Item(kind, r) for r in live],
                                [(r.text_hash, r.embedding_model) for r in live])
            self.mark = head
            self._dirty = True
            self.maybe_save()
            return len(changed)

    def refresh(self) -> None:
        """`sync` for a retrieval: skipped while the last probe is under `probe_interval` old
        and no write to lesson_events was committed in this process since."""
        writes = _local_writes[0]
        now = time.monotonic()
        if writes == self._probed_writes and now - self._probed_at < self.probe_interval and self.index is not None:
            return
        self.sync()
        self._probed_at, self._probed_writes = now, writes

    def sync_if_loaded(self) -> None:
        """Catch up only if this process already uses the index (a status change must not load a model)."""
        if self.index is not None:
            self.sync()

    # -- persistence

    def maybe_save(self) -> None:
        if self._dirty and time.monotonic() - self._saved_at >= self.save_interval:
            self.save()

    def save(self) -> None:
        """Write the index, its mark and the store it belongs to. A crash before this leaves an
        older mark: the next start catches up."""
        with self._lock:
            if self.index is None:
                return
            with self.read_engine.connect() as conn:
                fingerprint = event_fingerprint(conn, self.mark)
            with self._file_lock():
                self.index.save(self.directory, meta={"high_water": self.mark, "model": self.embedder.name,
                                                      "store_id": self.store_id, "mark_event": fingerprint})
            self._dirty = False
            self._saved_at = time.monotonic()

    def close(self) -> None:
        if self.index is not None and self._dirty:
            try:
                self.save()
            except OSError as exc:  # a read-only disk: the next start rebuilds, nothing is lost
                log.warning("skillmem: could not save the index to %s: %s", self.directory, exc)
        self._probe.close()

    # -- reading

    def candidates(self, partitions: Sequence[str], query: np.ndarray, n: int
                   ) -> list[tuple[str, int, float, np.ndarray]]:
        """Top-`n` of each partition: (partition, id, cosine, vector), sorted by score then id."""
        out: list[tuple[str, int, float, np.ndarray]] = []
        keys: list[tuple[float, int]] = []
        with self._lock:
            for p in partitions:
                scores, ids = self.index.search(p, query, n)
                keep = ids[0] >= 0
                if not keep.any():
                    continue
                ids_p, s_p = ids[0][keep], scores[0][keep]
                vecs = self.index.vectors(p, ids_p)
                ids_l = ids_p.tolist()
                out.extend(zip([p] * len(ids_l), ids_l, s_p.tolist(), vecs))
                # Rounding makes ties exact, so equal inputs give the same order whatever the float noise.
                keys.extend(zip((-np.round(s_p.astype(np.float64), 6)).tolist(), ids_l))
        if len(partitions) == 1 and not keys:
            return out
        return [out[i] for i in sorted(range(len(out)), key=keys.__getitem__)]

    def candidate_arrays(self, partitions: Sequence[str], query: np.ndarray, n: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-`n` of each partition as arrays, for retrieval: (ids, cosines, vectors), in no
        set order (MMR orders them by id itself; a sort here would cost more than MMR)."""
        with self._lock:
            if len(partitions) == 1:
                scores, ids, vecs = self.index.search_one(partitions[0], query, n)
                return ids, scores, vecs
            hits = [self.index.search_one(p, query, n) for p in partitions]
        hits = [h for h in hits if len(h[1])]
        if not hits:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, self.index.dim), np.float32)
        if len(hits) == 1:
            return hits[0][1], hits[0][0], hits[0][2]
        return (np.concatenate([h[1] for h in hits]), np.concatenate([h[0] for h in hits]),
                np.concatenate([h[2] for h in hits]))

    def item(self, kind: str, item_id: int) -> Optional[Item]:
        """The cached active item, or None if it is not retrievable (as of the mark)."""
        return self.items.get((kind, item_id))

    def rows(self, conn: Any, kind: str, ids: Sequence[int]) -> dict[int, Any]:
        """Full rows by id through the cache (callers treat them as read-only snapshots).

        `conn` may be None: a connection is opened only if a row is not cached."""
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
            if conn is None:
                with self.read_engine.connect() as c:
                    fetched = fetch_rows(c, kind, missing)
            else:
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
            head, sid = head_event_id(conn), store_id(conn)
            want = {(kind, it.id): it.partition for kind in KIND_TABLE for it in fetch_active_items(conn, kind)[0]}
        report.update(sql_high_water=head, sql_items=len(want), store_id=sid)
        try:
            with self._file_lock():
                index, meta = VectorIndex.load(self.directory, **self.settings)
        except IndexCorrupt as exc:
            report.update(ok=False, readable=False, error=str(exc))
            return report
        have = {(partition_kind(p), int(i)): p for p in index.partitions() for i in index.ids(p)}
        missing = sorted(k for k in want if k not in have)
        extra = sorted(k for k in have if k not in want)
        misplaced = sorted(k for k in want if k in have and have[k] != want[k])
        report.update(
            readable=True, index_high_water=int(meta.get("high_water", -1)), index_model=meta.get("model"),
            index_store_id=meta.get("store_id"), index_items=len(have), missing=[list(k) for k in missing],
            extra=[list(k) for k in extra], misplaced=[list(k) for k in misplaced],
        )
        mark = report["index_high_water"]
        # An index saved before the last changes is behind, not wrong: the next start applies the
        # events after its mark in place. Only a difference no such event explains is a disagreement.
        touched: set[tuple[str, int]] = set()
        if meta.get("store_id") == sid and 0 <= mark < head:
            with self.read_engine.connect() as conn:
                touched = {(str(k), int(i)) for k, i in conn.execute(
                    text("SELECT item_kind, item_id FROM lesson_events WHERE id > :m AND item_id IS NOT NULL"),
                    {"m": mark})}
        unexplained = [k for k in (*missing, *extra, *misplaced) if k not in touched]
        report.update(behind_by_events=max(0, head - mark), unexplained=[list(k) for k in unexplained])
        report["ok"] = meta.get("store_id") == sid and 0 <= mark <= head and not unexplained
        report["status"] = ("disagrees" if not report["ok"] else "current" if mark == head
                            else "behind (the next start applies the changes since its mark)")
        return report


__all__ = ["MemoryIndex", "HeadProbe", "PROBE_INTERVAL", "head_event_id", "fetch_rows", "fetch_all_active", "fetch_active_items",
           "reader_engine", "active_ids", "insert_ignore", "embed_texts", "load_vectors", "default_index_dir",
           "partition_of", "REBUILD_AFTER_EVENTS", "ROW_CACHE"]
