"""The SQL store: schema, views, upgrades, read-only SQL, namespaces."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import text

from skillmem import SkillMemory
from skillmem.cli import main as cli
from skillmem.store import (
    SCHEMA_VERSION,
    ReadOnlyError,
    check_read_only,
    init_schema,
    make_engine,
    resolve_url,
    run_sql,
)


def _record(mem: SkillMemory, ns: str, n: int, success: bool) -> list[str]:
    ids = []
    for i in range(n):
        with mem.episode(task=f"task {i}", task_type="pick_and_place_simple", namespace=ns, split="train") as ep:
            ep.step(observation="You are in the middle of a room.", action="go to desk 1", feedback="You arrive at desk 1.")
            ep.finish(success=success, source="environment")
        ids.append(ep.id)
    return ids


def test_views_answer_the_first_questions(db_url):
    mem = SkillMemory(db_url)
    _record(mem, "default", 3, success=False)
    _record(mem, "default", 2, success=True)
    url = resolve_url(db_url)
    cols, rows = run_sql(url, "SELECT task_type, episodes, failures, successes FROM failures_by_task_type")
    assert rows == [("pick_and_place_simple", 5, 3, 2)]
    cols, rows = run_sql(url, "SELECT episodes, steps FROM episodes_per_day")
    assert rows == [(5, 5)]
    cols, rows = run_sql(url, "SELECT * FROM lesson_usage")
    assert "episodes_used" in cols and rows == []


def test_schema_version_and_upgrade_from_v1(tmp_path):
    path = tmp_path / "old.db"
    url = resolve_url(path)
    init_schema(make_engine(url))
    # Make it look like a version-1 store: no retrievals.tokens column yet.
    con = sqlite3.connect(path)
    con.execute("DROP VIEW IF EXISTS lesson_usage")
    con.execute("ALTER TABLE retrievals DROP COLUMN tokens")
    con.execute("UPDATE skillmem_meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    assert init_schema(make_engine(url)) == SCHEMA_VERSION
    cols, rows = run_sql(url, "SELECT value FROM skillmem_meta WHERE key = 'schema_version'")
    assert rows == [(str(SCHEMA_VERSION),)]
    cols, _ = run_sql(url, "SELECT tokens FROM retrievals")
    assert cols == ["tokens"]


def test_newer_schema_is_refused_clearly(tmp_path):
    url = resolve_url(tmp_path / "new.db")
    init_schema(make_engine(url))
    run_sql(url, f"UPDATE skillmem_meta SET value = '{SCHEMA_VERSION + 5}'", write=True)
    with pytest.raises(RuntimeError, match="newer than this skillmem"):
        init_schema(make_engine(url))


@pytest.mark.parametrize("stmt", [
    "DELETE FROM episodes",
    "DROP TABLE episodes",
    "UPDATE episodes SET outcome = 'success'",
    "ATTACH DATABASE '/tmp/x.db' AS x",
    "PRAGMA journal_mode = DELETE",
    "select 1; delete from steps",
    "/* harmless */ insert into skillmem_meta values ('a', 'b')",
])
def test_sql_refuses_writes(db_url, stmt, capsys):
    SkillMemory(db_url)
    with pytest.raises(ReadOnlyError):
        check_read_only(stmt)
    assert cli(["--db", db_url, "sql", stmt]) == 3
    assert "read-only" in capsys.readouterr().err


def test_sql_allows_reads_that_mention_write_words_in_strings(db_url):
    SkillMemory(db_url)
    check_read_only("SELECT * FROM episodes WHERE goal = 'delete the file'")
    cols, rows = run_sql(resolve_url(db_url), "SELECT * FROM episodes WHERE goal = 'delete the file'")
    assert rows == []


def test_database_itself_is_read_only_under_the_filter(db_url):
    """Even a statement the keyword filter missed cannot write: the connection is read-only."""
    SkillMemory(db_url)
    engine = make_engine(resolve_url(db_url), read_only=True)
    with pytest.raises(Exception) as info:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO skillmem_meta (key, value) VALUES ('x', 'y')"))
    assert "read" in str(info.value).lower()


def test_sql_cli_formats(db_url, capsys):
    mem = SkillMemory(db_url)
    _record(mem, "default", 2, success=True)
    assert cli(["--db", db_url, "sql", "SELECT task_type, outcome FROM episodes", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"task_type": "pick_and_place_simple", "outcome": "success"}] * 2
    assert cli(["--db", db_url, "sql", "SELECT outcome FROM episodes", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["outcome", "success", "success"]
    assert cli(["--db", db_url, "sql", "SELECT nosuchcolumn FROM episodes"]) == 1
    assert "refused" in capsys.readouterr().err


def test_namespaces_never_leak(db_url, capsys):
    mem = SkillMemory(db_url)
    a = _record(mem, "tenant-a", 3, success=True)
    b = _record(mem, "tenant-b", 2, success=False)
    assert {e.id for e in mem.episodes(namespace="tenant-a")} == set(a)
    assert {e.id for e in mem.episodes(namespace="tenant-b")} == set(b)
    cli(["--db", db_url, "episodes", "-n", "tenant-b", "--format", "json"])
    listed = {r["id"] for r in json.loads(capsys.readouterr().out)}
    assert listed == set(b)
    # Steps carry their episode's namespace, so a query by namespace alone is enough.
    _, rows = run_sql(resolve_url(db_url), "SELECT DISTINCT namespace FROM steps WHERE episode_id IN "
                      f"({', '.join(repr(i) for i in a)})")
    assert rows == [("tenant-a",)]


def test_missing_database_for_sql_is_a_clear_error(tmp_path, capsys):
    assert cli(["--db", str(tmp_path / "nothing.db"), "sql", "SELECT 1"]) == 4
    assert "no skillmem database" in capsys.readouterr().err
