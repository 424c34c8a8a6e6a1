"""The SQL store: tables, engine, schema version and read-only access. SQL is the truth.

SQLite file by default (WAL, busy timeout, `BEGIN IMMEDIATE` for writers so that
several processes never deadlock); PostgreSQL by URL with the same code. Every row
carries a namespace. The FAISS index (:mod:`skillmem.index`) is a cache rebuilt from
these rows.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from sqlalchemy import (
    JSON,
    Column,
    Index,
    LargeBinary,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Field, SQLModel

from .episode import (
    DEFAULT_NAMESPACE,
    DemonstrationBase,
    EpisodeBase,
    FeedbackBase,
    LessonBase,
    ReflectionStatus,
    StepBase,
    utcnow,
)

SCHEMA_VERSION = 2
ENV_DB = "SKILLMEM_DB"


def default_db_path() -> Path:
    """Where the store lives when neither an argument nor SKILLMEM_DB says: the user's data dir."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "skillmem" / "skillmem.db"


def resolve_url(db: str | os.PathLike[str] | None = None) -> str:
    """A SQLAlchemy URL from a path, a URL, SKILLMEM_DB or the default path."""
    db = db if db is not None else os.environ.get(ENV_DB) or default_db_path()
    s = str(db)
    if "://" in s:
        if s.startswith("postgresql://") or s.startswith("postgres://"):
            # The psycopg 3 driver is the one the `postgres` extra installs.
            s = "postgresql+psycopg://" + s.split("://", 1)[1]
        return s
    Path(s).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(s).expanduser()}"


# --------------------------------------------------------------------------- tables


class EpisodeRow(EpisodeBase, table=True):
    __tablename__ = "episodes"
    reflection_status: ReflectionStatus = Field(default=ReflectionStatus.pending, index=True)
    reflection_attempts: int = 0
    reflection_error: Optional[str] = None
    owner: str = Field(default="", max_length=300)  # host:pid of the recording process
    updated_at: datetime = Field(default_factory=utcnow)  # heartbeat: last step or change
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class StepRow(StepBase, table=True):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("episode_id", "index", name="uq_steps_episode_index"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    namespace: str = Field(default=DEFAULT_NAMESPACE, index=True, max_length=200)
    episode_id: str = Field(foreign_key="episodes.id", index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class FeedbackRow(FeedbackBase, table=True):
    __tablename__ = "feedback"
    id: Optional[int] = Field(default=None, primary_key=True)
    namespace: str = Field(default=DEFAULT_NAMESPACE, index=True, max_length=200)
    episode_id: str = Field(foreign_key="episodes.id", index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class LessonRow(LessonBase, table=True):
    __tablename__ = "lessons"
    id: Optional[int] = Field(default=None, primary_key=True)
    namespace: str = Field(default=DEFAULT_NAMESPACE, index=True, max_length=200)
    version: int = 1
    support: int = 1  # how many episodes back it (grows on merge)
    text_hash: str = Field(default="", max_length=64)
    embedding_model: str = Field(default="", max_length=200)
    merged_into: Optional[int] = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class DemonstrationRow(DemonstrationBase, table=True):
    __tablename__ = "demonstrations"
    id: Optional[int] = Field(default=None, primary_key=True)
    namespace: str = Field(default=DEFAULT_NAMESPACE, index=True, max_length=200)
    version: int = 1
    support: int = 1
    text_hash: str = Field(default="", max_length=64)
    embedding_model: str = Field(default="", max_length=200)
    merged_into: Optional[int] = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class LessonEventRow(SQLModel, table=True):
    """Append-only audit of every change to a lesson or demonstration."""

    __tablename__ = "lesson_events"
    id: Optional[int] = Field(default=None, primary_key=True)
    namespace: str = Field(default=DEFAULT_NAMESPACE, index=True, max_length=200)
    item_kind: str = Field(default="lesson", max_length=20)  # lesson | demonstration
    item_id: int = Field(index=True)
    action: str = Field(max_length=20)  # create | merge | edit | retire | restore | approve | quarantine
    before: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))
    after: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))
    reason: str = ""
    episode_id: Optional[str] = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class RetrievalRow(SQLModel, table=True):
    """One item put into an agent's context: which, where, at what rank and score."""

    __tablename__ = "retrievals"
    __table_args__ = (Index("ix_retrievals_item", "item_kind", "item_id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    namespace: str = Field(default=DEFAULT_NAMESPACE, index=True, max_length=200)
    episode_id: Optional[str] = Field(default=None, index=True, max_length=64)
    step_index: Optional[int] = None
    item_kind: str = Field(max_length=20)
    item_id: int
    rank: int
    score: float
    tokens: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class PolicyVersionRow(SQLModel, table=True):
    __tablename__ = "policy_versions"
    id: str = Field(primary_key=True, max_length=200)
    namespace: str = Field(default=DEFAULT_NAMESPACE, index=True, max_length=200)
    kind: str = Field(default="", max_length=100)
    parent_id: Optional[str] = Field(default=None, max_length=200)
    status: str = Field(default="candidate", max_length=20)  # candidate | promoted | rejected | retired
    path: str = ""
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class EmbeddingRow(SQLModel, table=True):
    """Vectors by content hash and model: the index is rebuilt from here without re-encoding."""

    __tablename__ = "embeddings"
    text_hash: str = Field(primary_key=True, max_length=64)
    model: str = Field(max_length=200)
    dim: int
    vector: bytes = Field(sa_column=Column(LargeBinary))
    created_at: datetime = Field(default_factory=utcnow)


class MetaRow(SQLModel, table=True):
    __tablename__ = "skillmem_meta"
    key: str = Field(primary_key=True, max_length=100)
    value: str = ""


TABLES = [t.__tablename__ for t in (EpisodeRow, StepRow, FeedbackRow, LessonRow, DemonstrationRow,
                                     LessonEventRow, RetrievalRow, PolicyVersionRow, EmbeddingRow, MetaRow)]

# Views for the questions people ask first. Plain SQL that runs on SQLite and PostgreSQL.
VIEWS = {
    "lesson_usage": """
        SELECT l.id, l.namespace, l.scope, l.task_type, l.status, l.version, l.support,
               l.trigger, l.fix,
               COUNT(DISTINCT r.episode_id) AS episodes_used,
               COUNT(DISTINCT CASE WHEN e.outcome = 'success' THEN r.episode_id END) AS successes,
               COUNT(DISTINCT CASE WHEN e.outcome = 'failure' THEN r.episode_id END) AS failures
        FROM lessons l
        LEFT JOIN retrievals r ON r.item_kind = 'lesson' AND r.item_id = l.id AND r.namespace = l.namespace
        LEFT JOIN episodes e ON e.id = r.episode_id
        GROUP BY l.id, l.namespace, l.scope, l.task_type, l.status, l.version, l.support, l.trigger, l.fix
    """,
    "failures_by_task_type": """
        SELECT namespace, task_type,
               COUNT(*) AS episodes,
               SUM(CASE WHEN outcome = 'failure' THEN 1 ELSE 0 END) AS failures,
               SUM(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END) AS successes,
               SUM(CASE WHEN outcome = 'unknown' THEN 1 ELSE 0 END) AS unknown
        FROM episodes GROUP BY namespace, task_type
    """,
    "episodes_per_day": """
        SELECT namespace, CAST(started_at AS DATE) AS day, COUNT(*) AS episodes,
               SUM(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END) AS successes,
               SUM(num_steps) AS steps
        FROM episodes GROUP BY namespace, CAST(started_at AS DATE)
    """,
}
# SQLite has no DATE type: CAST(x AS DATE) gives a number there, so its view uses date().
SQLITE_VIEW_OVERRIDES = {
    "episodes_per_day": VIEWS["episodes_per_day"].replace("CAST(started_at AS DATE)", "date(started_at)"),
}


# --------------------------------------------------------------------------- engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # isolation_level=None hands transaction control to us (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout = 60000")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")  # durable at each commit's WAL append; fast
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Writers take the lock up front: a deferred transaction that reads then writes can
    # fail with "database is locked" at once, without waiting, when another process wrote.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_read(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for the store: SQLite with WAL and immediate write locks, or PostgreSQL."""
    if url.startswith("sqlite"):
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": 60}
        if read_only:
            path = url.split("///", 1)[1]
            if not Path(path).exists():
                raise FileNotFoundError(f"no skillmem database at {path}; set SKILLMEM_DB or pass --db")
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        engine = create_engine(url, connect_args=connect_args, poolclass=NullPool if read_only else None)
        event.listen(engine, "connect", _sqlite_pragmas if not read_only else _sqlite_ro_connect)
        event.listen(engine, "begin", _sqlite_begin_read if read_only else _sqlite_begin)
        return engine
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if read_only:
        kwargs["execution_options"] = {"postgresql_readonly": True}
    return create_engine(url, **kwargs)


def _sqlite_ro_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout = 60000")
    cur.execute("PRAGMA query_only = ON")  # a second lock on top of mode=ro
    cur.close()


class SchemaError(RuntimeError):
    pass


# Each upgrade takes the schema from version N-1 to N. Additive changes only, so a newer
# reader never breaks an older writer's rows. Create-if-missing covers new tables.
UPGRADES: dict[int, list[str]] = {
    2: [
        "ALTER TABLE retrievals ADD COLUMN tokens INTEGER DEFAULT 0",
    ],
}


def init_schema(engine: Engine) -> int:
    """Create missing tables and views, run pending upgrades; returns the schema version."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Several processes may open a new store at once; DDL is not safe to race.
            conn.execute(text("SELECT pg_advisory_xact_lock(7214391)"))
        existing = _get_version(conn)
        SQLModel.metadata.create_all(conn, tables=[SQLModel.metadata.tables[t] for t in TABLES])
        if existing is None:
            _set_version(conn, SCHEMA_VERSION)
            existing = SCHEMA_VERSION
        elif existing > SCHEMA_VERSION:
            raise SchemaError(
                f"the database has schema version {existing}, newer than this skillmem "
                f"({SCHEMA_VERSION}); upgrade skillmem (pip install -U skillmem)"
            )
        for version in range(existing + 1, SCHEMA_VERSION + 1):
            for stmt in UPGRADES.get(version, []):
                try:
                    conn.exec_driver_sql(stmt)
                except Exception as exc:  # a column create_all already made is fine
                    if "duplicate" not in str(exc).lower() and "already exists" not in str(exc).lower():
                        raise
            _set_version(conn, version)
        sqlite = engine.dialect.name == "sqlite"
        for name, sql in VIEWS.items():
            sql = SQLITE_VIEW_OVERRIDES.get(name, sql) if sqlite else sql
            conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE VIEW {name} AS {sql}")
    return SCHEMA_VERSION


def _get_version(conn: Any) -> Optional[int]:
    if not inspect(conn).has_table("skillmem_meta"):
        return None
    row = conn.execute(text("SELECT value FROM skillmem_meta WHERE key = 'schema_version'")).first()
    return int(row[0]) if row else None


def _set_version(conn: Any, version: int) -> None:
    conn.execute(text("DELETE FROM skillmem_meta WHERE key = 'schema_version'"))
    conn.execute(text("INSERT INTO skillmem_meta (key, value) VALUES ('schema_version', :v)"), {"v": str(version)})


# --------------------------------------------------------------------------- read-only SQL

_WRITE_WORDS = re.compile(
    r"\b(INSERT|UPDATE|DELETE|DROP|ALTER|CREATE|REPLACE|ATTACH|DETACH|VACUUM|REINDEX|TRUNCATE|GRANT|REVOKE|COPY)\b",
    re.IGNORECASE,
)


class ReadOnlyError(PermissionError):
    pass


def check_read_only(sql: str) -> None:
    """Refuse statements that could write, before the database's own read-only mode does."""
    stripped = re.sub(r"'(?:[^']|'')*'", "''", sql)  # string literals may say anything
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", " ", stripped, flags=re.S)
    m = _WRITE_WORDS.search(stripped)
    if m or re.search(r"\bPRAGMA\b[^;]*=", stripped, re.I):
        word = m.group(1).upper() if m else "PRAGMA assignment"
        raise ReadOnlyError(
            f"refused: {word} would change the store; `skillmem sql` is read-only "
            "(use the Python API, or `--write` if you really mean it)"
        )


def run_sql(url: str, sql: str, params: Optional[dict[str, Any]] = None, *, write: bool = False
            ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement; read-only unless `write`. Returns (columns, rows)."""
    if not write:
        check_read_only(sql)
    engine = make_engine(url, read_only=not write)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params or {})
            if not result.returns_rows:
                return [], []
            return list(result.keys()), [tuple(r) for r in result.fetchall()]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- liveness


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_interrupted(engine: Engine, *, stale_after: timedelta = timedelta(hours=1)) -> int:
    """Mark `running` episodes whose recording process is gone as `interrupted`; returns how many.

    A process on this host is checked directly; one elsewhere counts as gone when its
    episode has had no step for `stale_after`.
    """
    host = socket.gethostname()
    now = utcnow()
    dead: list[str] = []
    with engine.begin() as conn:
        # The last step is the heartbeat: steps do not touch the episode row while it runs.
        rows = conn.execute(text(
            "SELECT e.id, e.owner, COALESCE((SELECT MAX(s.created_at) FROM steps s WHERE s.episode_id = e.id), "
            "e.updated_at) FROM episodes e WHERE e.status = 'running'")).fetchall()
        for ep_id, owner, updated in rows:
            h, _, pid = (owner or "").rpartition(":")
            if h == host and pid.isdigit():
                gone = not _pid_alive(int(pid))
            else:
                if isinstance(updated, str):
                    updated = datetime.fromisoformat(updated)
                if updated is not None and updated.tzinfo is None:  # SQLite hands back naive UTC
                    updated = updated.replace(tzinfo=timezone.utc)
                gone = updated is None or now - updated > stale_after
            if gone:
                dead.append(ep_id)
        for ep_id in dead:
            conn.execute(
                text("UPDATE episodes SET status = 'interrupted', ended_at = :t, "
                     "num_steps = (SELECT COUNT(*) FROM steps s WHERE s.episode_id = episodes.id), "
                     "total_reward = COALESCE((SELECT SUM(s.reward) FROM steps s WHERE s.episode_id = episodes.id), 0) "
                     "WHERE id = :id AND status = 'running'"),
                {"t": now, "id": ep_id},
            )
    return len(dead)


def iter_rows(engine: Engine, sql: str, params: Optional[dict[str, Any]] = None) -> Iterator[Any]:
    with engine.connect() as conn:
        yield from conn.execute(text(sql), params or {})


def namespaces(engine: Engine) -> Sequence[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT DISTINCT namespace FROM episodes ORDER BY 1"))]
