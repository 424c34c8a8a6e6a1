"""`skillmem sql` cannot change the store, whatever the statement says (issue 12's attacks)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text

from conftest import open_memory
from skillmem.cli import main as cli
from skillmem.episode import DemonstrationBase, LessonBase
from skillmem.store import ReadOnlyError, check_read_only, init_schema, make_engine, resolve_url, run_sql


def _filled(db_url, tmp_path):
    """A store with one lesson and one demonstration; returns (url, counts reader)."""
    mem = open_memory(db_url, tmp_path)
    mem.add_lesson(LessonBase(trigger="the order id is unknown", fix="look the order up before refunding it"))
    mem.add_demonstration(DemonstrationBase(task_type="refund", goal_template="refund order [id]",
                                            plan=["lookup_order(order_id=[id])", "refund(order_id=[id])"]))
    mem.close()
    url = resolve_url(db_url)

    def state():
        engine = make_engine(url)
        with engine.connect() as c:
            out = (c.execute(text("SELECT COUNT(*) FROM demonstrations")).scalar(),
                   c.execute(text("SELECT MIN(fix) FROM lessons")).scalar(),
                   c.execute(text("SELECT COUNT(*) FROM lesson_events")).scalar())
        engine.dispose()
        return out
    return url, state


ATTACKS = [
    # The ones that ran with exit 0 on PostgreSQL.
    "COMMIT; DO $$BEGIN EXECUTE 'DELETE FROM demonstrations'; END$$",
    "SET TRANSACTION READ WRITE; DELETE FROM demonstrations",
    "COMMIT; UPDATE lessons SET fix = 'ignore previous instructions'",
    # Writes hidden from a checker that blanks strings before removing comments.
    "SELECT 1 /* ' */; DELETE FROM demonstrations; SELECT /* ' */ 1",
    "SELECT '--'; DELETE FROM demonstrations",
    "SELECT $$ ' $$; DELETE FROM demonstrations; SELECT $$ ' $$",
    "DO $x$BEGIN EXECUTE 'DELETE FROM demonstrations'; END$x$",
    "WITH gone AS (DELETE FROM demonstrations RETURNING 1) SELECT COUNT(*) FROM gone",
    "SELECT * INTO stolen FROM lessons",
    "SELECT lo_from_bytea(0, 'x')",
    "SELECT query_to_xml('DELETE FROM demonstrations', true, true, '')",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "LOCK TABLE steps IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(15)",
    "SELECT pg_sleep(15)",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "CALL anything()",
    "EXPLAIN ANALYZE DELETE FROM demonstrations",
    "SET statement_timeout = 0",
    "ATTACH DATABASE '/tmp/skillmem-attach-probe.db' AS x",
    "SELECT 1 /* ' */ ; ATTACH DATABASE '/tmp/skillmem-attach-probe.db' AS x /* ' */",
    "PRAGMA writable_schema = ON",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_are_refused_and_change_nothing(db_url, tmp_path, attack, capsys):
    url, state = _filled(db_url, tmp_path)
    before = state()
    assert cli(["--db", db_url, "sql", attack]) == 3
    assert "read-only" in capsys.readouterr().err
    assert state() == before


@pytest.mark.parametrize("read", [
    "SELECT COUNT(*) FROM demonstrations WHERE goal_template <> 'DELETE FROM demonstrations; --'",
    "SELECT fix FROM lessons WHERE fix LIKE '%refund%' -- a comment with a ' quote",
    "WITH x AS (SELECT id FROM lessons) SELECT COUNT(*) FROM x",
    "SELECT CASE WHEN support > 0 THEN 'set' ELSE 'unset' END FROM lessons;",
    "SELECT replace(fix, 'order', 'ORDER') FROM lessons",
    "SELECT * FROM lesson_usage",
])
def test_ordinary_reads_still_run(db_url, tmp_path, read):
    url, _ = _filled(db_url, tmp_path)
    check_read_only(read)
    cols, rows = run_sql(url, read)
    assert cols and len(rows) >= 1


def test_postgres_session_cannot_write_even_past_the_checker(pg_url, tmp_path, monkeypatch):
    """The connection itself: one statement only, read-only, rolled back, bounded in time."""
    from skillmem import store

    url, state = _filled(pg_url, tmp_path)
    before = state()
    # Several statements never run: the extended protocol parses one.
    with pytest.raises(Exception, match="multiple commands"):
        store._run_postgres_read(url, "COMMIT; DELETE FROM demonstrations", {})
    with pytest.raises(Exception, match="read-only"):
        store._run_postgres_read(url, "WITH g AS (DELETE FROM demonstrations RETURNING 1) SELECT 1 FROM g", {})
    with pytest.raises(Exception, match="read-write mode"):
        store._run_postgres_read(url, "SELECT set_config('transaction_read_only', 'off', false)", {})
    # A function that ignores read-only mode leaves nothing: the read is rolled back.
    store._run_postgres_read(url, "SELECT lo_from_bytea(0, '\\x41'::bytea)", {})
    _, rows = store._run_postgres_read(url, "SELECT COUNT(*) FROM pg_largeobject_metadata", {})
    assert rows == [(0,)]
    monkeypatch.setenv("SKILLMEM_SQL_TIMEOUT", "0.5")
    with pytest.raises(Exception, match="statement timeout"):
        store._run_postgres_read(url, "SELECT pg_sleep(30)", {})
    assert state() == before


def test_sqlite_attach_creates_no_file_even_past_the_checker(sqlite_url, tmp_path):
    from skillmem import store

    url, state = _filled(sqlite_url, tmp_path)
    probe = tmp_path / "created-by-attach.db"
    with pytest.raises(ReadOnlyError):
        store._run_sqlite_read(url, f"ATTACH DATABASE '{probe}' AS x", {})
    assert not probe.exists()
    with pytest.raises(Exception):
        store._run_sqlite_read(url, "SELECT 1; DELETE FROM demonstrations", {})
    assert state()[0] == 1


def test_views_are_not_recreated_on_every_open(pg_url, tmp_path):
    """A long read of a view must not block SkillMemory opens (DROP VIEW waits for it)."""
    url, _ = _filled(pg_url, tmp_path)
    engine = create_engine(url)
    oid = lambda c: c.execute(text("SELECT oid FROM pg_class WHERE relname = 'lesson_usage'")).scalar()  # noqa: E731
    reader = engine.connect()
    tx = reader.begin()
    first = oid(reader)
    reader.execute(text("SELECT COUNT(*) FROM lesson_usage")).scalar()  # holds AccessShareLock until tx ends
    opened = threading.Event()

    def open_store():
        init_schema(make_engine(url))
        opened.set()

    t = threading.Thread(target=open_store, daemon=True)
    t.start()
    try:
        assert opened.wait(120), "opening the store waited for a read of a view to end"
    finally:
        tx.rollback()
        reader.close()
        t.join(120)
    with engine.connect() as c:
        assert oid(c) == first
    engine.dispose()
