"""The SQL store: tables, engine, schema version and read-only access. SQL is the truth.

SQLite file by default (WAL, busy timeout, `BEGIN IMMEDIATE` for writers so that
several processes never deadlock); PostgreSQL by URL with the same code. Every row
carries a namespace. The FAISS index (:mod:`skillmem.index`) is a cache rebuilt from
these rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
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

SCHEMA_VERSION = 3
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


class NamespaceRow(SQLModel, table=True):
    """What the store knows about a namespace: whether what is learned in it is trusted.

    Stored, not held by a process: every process that writes into an untrusted namespace
    (an agent, `skillmem reflect -n web`, a LangGraph store) quarantines what it writes.
    """

    __tablename__ = "namespaces"
    namespace: str = Field(primary_key=True, max_length=200)
    trusted: bool = True
    reason: str = ""
    updated_at: datetime = Field(default_factory=utcnow)


class StoreItemRow(SQLModel, table=True):
    """One item put through `SkillStore` (LangGraph's BaseStore) outside the curated namespaces.

    `namespace` is the LangGraph namespace tuple joined by "." (LangGraph forbids "." in its
    labels); `value` is the caller's dict as given; `vectors` maps each indexed path to the
    content hash of its text, whose vector lives in `embeddings`. For the curated namespaces
    (`("skillmem", ns, "lessons"|"demonstrations")`) a row only maps the caller's key to the
    lesson or demonstration it created (`item_kind`, `item_id`; `value` is NULL).
    """

    __tablename__ = "store_items"
    __table_args__ = (UniqueConstraint("namespace", "key", name="uq_store_items_namespace_key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    namespace: str = Field(index=True, max_length=1000)
    key: str = Field(max_length=1000)
    value: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))
    vectors: Optional[dict[str, str]] = Field(default=None, sa_column=Column(JSON))
    item_kind: Optional[str] = Field(default=None, max_length=20)
    item_id: Optional[int] = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    expires_at: Optional[datetime] = Field(default=None, index=True)
    ttl_minutes: Optional[float] = None


class MetaRow(SQLModel, table=True):
    __tablename__ = "skillmem_meta"
    key: str = Field(primary_key=True, max_length=100)
    value: str = ""


TABLES = [t.__tablename__ for t in (EpisodeRow, StepRow, FeedbackRow, LessonRow, DemonstrationRow,
                                     LessonEventRow, RetrievalRow, PolicyVersionRow, EmbeddingRow, NamespaceRow,
                                     StoreItemRow, MetaRow)]

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


# Connections a forked child inherited from its parent, kept referenced and never used,
# closed or returned to a pool: closing, resetting or pinging one talks on the parent's socket
# (on PostgreSQL two processes then read each other's replies and hang).
_INHERITED: list[Any] = []


def keep_inherited(conn: Any) -> None:
    """In a forked child: hold the parent's connection `conn` so nothing ever closes it here."""
    if conn is not None:
        _INHERITED.append(conn)


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
    3: [
        "ALTER TABLE steps ADD COLUMN tool_call_id VARCHAR(200)",
        "ALTER TABLE steps ADD COLUMN tool_args JSON",
        "ALTER TABLE steps ADD COLUMN call_group INTEGER",
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
        _ensure_store_id(conn)
        sqlite = engine.dialect.name == "sqlite"
        views = {name: SQLITE_VIEW_OVERRIDES.get(name, sql) if sqlite else sql for name, sql in VIEWS.items()}
        signature = hashlib.sha256(json.dumps(views, sort_keys=True).encode()).hexdigest()[:16]
        present = set(inspect(conn).get_view_names())
        # Dropping a view waits for every read of it: recreate only what is missing or changed,
        # so a long `skillmem sql` over a view never blocks a SkillMemory from opening.
        if _get_meta(conn, "views") != signature or not set(views) <= present:
            for name, sql in views.items():
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
                conn.exec_driver_sql(f"CREATE VIEW {name} AS {sql}")
            _set_meta(conn, "views", signature)
    return SCHEMA_VERSION


def _get_meta(conn: Any, key: str) -> Optional[str]:
    row = conn.execute(text("SELECT value FROM skillmem_meta WHERE key = :k"), {"k": key}).first()
    return row[0] if row else None


def _set_meta(conn: Any, key: str, value: str) -> None:
    conn.execute(text("DELETE FROM skillmem_meta WHERE key = :k"), {"k": key})
    conn.execute(text("INSERT INTO skillmem_meta (key, value) VALUES (:k, :v)"), {"k": key, "v": value})


def _get_version(conn: Any) -> Optional[int]:
    if not inspect(conn).has_table("skillmem_meta"):
        return None
    row = conn.execute(text("SELECT value FROM skillmem_meta WHERE key = 'schema_version'")).first()
    return int(row[0]) if row else None


STORE_ID_KEY = "store_id"


def _ensure_store_id(conn: Any) -> None:
    # A random id for this store, written once: an index cache saved for one store must never
    # be trusted for another (a replaced file, a dump restored at the same URL), and a URL or a
    # path says nothing about which store is there now. A dump carries its id along.
    if conn.execute(text("SELECT 1 FROM skillmem_meta WHERE key = :k"), {"k": STORE_ID_KEY}).first() is None:
        conn.execute(text("INSERT INTO skillmem_meta (key, value) VALUES (:k, :v)"),
                     {"k": STORE_ID_KEY, "v": uuid.uuid4().hex})


def store_id(conn: Any) -> str:
    """The store's random identity (see `_ensure_store_id`); '' for a store opened before it existed."""
    row = conn.execute(text("SELECT value FROM skillmem_meta WHERE key = :k"), {"k": STORE_ID_KEY}).first()
    return str(row[0]) if row else ""


def _set_version(conn: Any, version: int) -> None:
    conn.execute(text("DELETE FROM skillmem_meta WHERE key = 'schema_version'"))
    conn.execute(text("INSERT INTO skillmem_meta (key, value) VALUES ('schema_version', :v)"), {"v": str(version)})


# --------------------------------------------------------------------------- read-only SQL
#
# `skillmem sql` is how people read the store, so it must never change it, whatever the
# text says. Three locks, each enough on its own for what it covers:
#   1. the text is lexed (strings, dollar quotes, nested comments, quoted names) and must
#      be exactly one statement that starts as a read and names no writing word or function;
#   2. the connection cannot write: SQLite opens the file read-only with an authorizer that
#      allows only reads (no ATTACH, no PRAGMA writes); PostgreSQL gets
#      default_transaction_read_only, statement and lock timeouts in its startup packet
#      (server-side, for that connection), the statement goes through the extended
#      protocol (one statement, never a script) and the transaction is rolled back, so
#      even a function that ignores read-only mode (lo_from_bytea) leaves nothing behind;
#   3. the statement cannot end or change its transaction: COMMIT, SET, DO, CALL, LOCK are
#      refused by (1), and the extended protocol runs nothing after the first statement.

_READ_STARTS = {"SELECT", "WITH", "VALUES", "TABLE", "EXPLAIN", "SHOW", "PRAGMA"}
# Words that make a statement that starts as a read write anyway (a data-modifying CTE,
# SELECT INTO) or that have no place inside a read; statement-level words (BEGIN, SET,
# LOCK, DO, ...) are refused by the first-word check too.
_WRITE_WORDS = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|DROP|ALTER|CREATE|ATTACH|DETACH|VACUUM|REINDEX|TRUNCATE|GRANT|REVOKE|COPY|"
    r"COMMIT|ROLLBACK|SAVEPOINT|SET|DO|CALL|LOCK|INTO|EXECUTE|PREPARE|LISTEN|NOTIFY)\b",
    re.IGNORECASE,
)
# Functions that write, execute a query given as text (which the lexer cannot see into),
# signal other sessions, or hold locks beyond the statement.
_WRITE_FUNCTIONS = re.compile(
    r"\b(lo_\w+|lowrite|loread|set_config|nextval|setval|pg_terminate_backend|pg_cancel_backend|pg_reload_conf|"
    r"pg_rotate_logfile|pg_advisory\w*|pg_try_advisory\w*|pg_notify|pg_sleep\w*|pg_switch_wal|pg_create\w*|"
    r"pg_drop\w*|pg_replication\w*|pg_promote|pg_file_\w+|pg_read_\w*file|pg_ls_\w+|pg_stat_reset\w*|"
    r"pg_logical\w*|pg_import_system_collations|pg_log_backend_memory_contexts|dblink\w*|query_to_xml\w*|"
    r"cursor_to_xml\w*|database_to_xml\w*|schema_to_xml\w*|load_extension|readfile|writefile|"
    r"fts3_tokenizer)\s*\(",
    re.IGNORECASE,
)
# Read-only PRAGMAs a person inspecting the SQLite schema asks for.
_READ_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
                 "user_version", "schema_version", "compile_options", "database_list", "quick_check",
                 "integrity_check", "collation_list", "function_list", "table_list"}
SQL_TIMEOUT_ENV = "SKILLMEM_SQL_TIMEOUT"  # seconds a `skillmem sql` read may run (default 30)


class ReadOnlyError(PermissionError):
    pass


def _refuse(what: str) -> ReadOnlyError:
    return ReadOnlyError(f"refused: {what}; `skillmem sql` is read-only and runs one SELECT "
                         "(use the Python API, or `--write` if you really mean it)")


def lex_sql(sql: str) -> tuple[str, int]:
    """The statement's code with strings blanked and comments removed, and how many statements it holds.

    One left-to-right pass: a quote inside a comment, or a comment marker inside a string,
    never hides what follows (PostgreSQL's E'' escapes, $tag$ quotes and nested comments too).
    """
    out: list[str] = []
    i, n, statements, code_since_semicolon = 0, len(sql), 0, False
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            out.append(" ")
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            if depth:
                raise _refuse("an unterminated /* comment")
            out.append(" ")
        elif c in "'\"":
            backslash = c == "'" and i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum()
                                                                                   or sql[i - 2] == "_"))
            j = i + 1
            while True:
                if j >= n:
                    raise _refuse(f"an unterminated {c}quoted{c} text")
                if backslash and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            out.append("''" if c == "'" else '"x"')
            code_since_semicolon = True
            i = j + 1
        elif c == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])) and not (
                i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            tag = m.group(0)
            j = sql.find(tag, i + len(tag))
            if j < 0:
                raise _refuse(f"an unterminated {tag} quote")
            out.append("''")
            code_since_semicolon = True
            i = j + len(tag)
        elif c == ";":
            if code_since_semicolon:
                statements += 1
            code_since_semicolon = False
            out.append(" ; ")
            i += 1
        else:
            if not c.isspace():
                code_since_semicolon = True
            out.append(c)
            i += 1
    if code_since_semicolon:
        statements += 1
    return "".join(out), statements


def check_read_only(sql: str) -> None:
    """Refuse anything but one read statement, before the database's own read-only mode does."""
    code, statements = lex_sql(sql)
    if statements != 1:
        raise _refuse(f"{statements} statements given, exactly one is run")
    body = code.strip().rstrip(";").strip()
    if ";" in body:
        raise _refuse("a statement after the first one")
    first = re.match(r"[\s(]*([A-Za-z_]+)", body)
    word = first.group(1).upper() if first else ""
    if word not in _READ_STARTS:
        raise _refuse(f"{word or 'the statement'} is not a read (start with SELECT, WITH, VALUES or EXPLAIN)")
    if word == "EXPLAIN" and re.search(r"\bANALY[SZ]E\b", body, re.I):
        raise _refuse("EXPLAIN ANALYZE runs the statement")
    if word == "PRAGMA":
        m = re.match(r"\s*PRAGMA\s+(?:\w+\s*\.\s*)?(\w+)\s*(\(\s*[\w\"' ]*\s*\))?\s*$", body, re.I)
        if m is None or m.group(1).lower() not in _READ_PRAGMAS:
            raise _refuse("PRAGMA assignment or a PRAGMA that changes the database")
        return
    m = _WRITE_WORDS.search(body)
    if m:
        raise _refuse(f"{m.group(1).upper()} would change the store or its transaction")
    m = _WRITE_FUNCTIONS.search(body)
    if m:
        raise _refuse(f"{m.group(1)}() writes, runs a query given as text, or acts beyond this read")


def sql_timeout() -> float:
    raw = os.environ.get(SQL_TIMEOUT_ENV, "30")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SQL_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{SQL_TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


_SQLITE_READ_ACTIONS = None


def _sqlite_authorizer(action: int, arg1: Any, arg2: Any, _db: Any, _trigger: Any) -> int:
    import sqlite3

    global _SQLITE_READ_ACTIONS
    if _SQLITE_READ_ACTIONS is None:
        _SQLITE_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                                getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
    if action in _SQLITE_READ_ACTIONS:
        if action == sqlite3.SQLITE_FUNCTION and arg2 and _WRITE_FUNCTIONS.match(f"{arg2}("):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and str(arg1).lower() in _READ_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _run_sqlite_read(url: str, sql: str, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    import sqlite3

    path = url.split("///", 1)[1]
    if not Path(path).exists():
        raise FileNotFoundError(f"no skillmem database at {path}; set SKILLMEM_DB or pass --db")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60, check_same_thread=False)
    try:
        con.execute("PRAGMA query_only = ON")
        con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)  # ATTACH would create a file at any writable path
        con.set_authorizer(_sqlite_authorizer)
        deadline = time.monotonic() + sql_timeout()
        con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cur = con.execute(sql, params)  # sqlite3 refuses a second statement itself
        except sqlite3.DatabaseError as exc:
            if "not authorized" in str(exc) or "interrupted" in str(exc):
                raise _refuse(f"SQLite denied it ({exc}); after {sql_timeout():g} s a read is stopped "
                              f"(set {SQL_TIMEOUT_ENV})") from exc
            raise
        cols = [d[0] for d in cur.description or []]
        return cols, [tuple(r) for r in cur.fetchall()]
    finally:
        con.close()


def _run_postgres_read(url: str, sql: str, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    timeout_ms = int(sql_timeout() * 1000)
    options = (f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms} "
               f"-c lock_timeout={min(timeout_ms, 2000)} -c idle_in_transaction_session_timeout={timeout_ms * 2}")
    engine = create_engine(url, poolclass=NullPool, connect_args={"options": options})
    try:
        compiled = text(sql).compile(dialect=engine.dialect)
        values = compiled.construct_params(params)
        query = str(compiled)
        raw = engine.raw_connection()
        try:
            dbapi = raw.driver_connection
            dbapi.rollback()
            dbapi.autocommit, dbapi.read_only = False, True  # psycopg opens it with BEGIN READ ONLY
            with dbapi.cursor() as cur:
                # A prepared statement goes through the extended protocol: the server parses
                # exactly one statement and refuses a script ("cannot insert multiple commands").
                cur.execute(query, values, prepare=True)
                cols = [d.name for d in cur.description or []]
                rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
            return cols, rows
        finally:
            try:
                dbapi.rollback()  # nothing a read did (a large object, a sequence) is kept
            finally:
                raw.invalidate()  # never back into a pool: the session ends with the read
    finally:
        engine.dispose()


def run_sql(url: str, sql: str, params: Optional[dict[str, Any]] = None, *, write: bool = False
            ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement; read-only unless `write`. Returns (columns, rows)."""
    if not write:
        check_read_only(sql)
        if url.startswith("sqlite"):
            return _run_sqlite_read(url, sql, params or {})
        if url.startswith("postgresql"):
            return _run_postgres_read(url, sql, params or {})
        raise ValueError(f"read-only SQL supports SQLite and PostgreSQL, not {url.split(':', 1)[0]}")
    engine = make_engine(url)
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


def set_trust(engine: Engine, namespace: str, trusted: bool, reason: str = "") -> None:
    """Mark a namespace trusted or untrusted, for every process that opens this store."""
    with engine.begin() as conn:
        n = conn.execute(text("UPDATE namespaces SET trusted = :t, reason = :r, updated_at = :now WHERE namespace = :ns"),
                         {"t": trusted, "r": reason, "now": utcnow(), "ns": namespace}).rowcount
        if n == 0:
            conn.execute(text("INSERT INTO namespaces (namespace, trusted, reason, updated_at) VALUES "
                              "(:ns, :t, :r, :now)"), {"t": trusted, "r": reason, "now": utcnow(), "ns": namespace})


def untrusted_namespaces(engine: Engine) -> frozenset[str]:
    """The namespaces the store marks untrusted (their new items are quarantined)."""
    with engine.connect() as conn:
        return frozenset(r[0] for r in conn.execute(text("SELECT namespace FROM namespaces WHERE trusted = :f"),
                                                    {"f": False}))


def namespaces(engine: Engine) -> Sequence[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT DISTINCT namespace FROM episodes ORDER BY 1"))]
