"""The index cache bound to its store: a replaced database file, a restored dump, another history.

Issue 12's "a stale index is trusted": an index saved for one store, whose high-water mark
is not above the new head, must never serve the items of another store (or of another
history of the same store). And retrieval reads no SQL unless memory changed.
"""

from __future__ import annotations

import os
import shutil

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from conftest import PG_URL, open_memory
from skillmem import Lesson
from skillmem.retrieve import lesson_text


HEAT = ["a raw egg must be heated", "the potato is still frozen", "cold soup in a bowl",
        "the mug of coffee went cold", "bread that needs toasting"]
COOL = ["a hot apple must be cooled", "the lettuce wilts in the heat", "warm milk in a jug",
        "the tomato sits by the oven", "a cup of tea is too hot", "wine at room temperature"]
QUERY = "egg potato soup coffee bread apple lettuce milk tomato tea wine hot cold heated cooled"


def heat(m, n: int = 3) -> set[str]:
    triggers = HEAT[:n]
    for t in triggers:
        m.add_lesson(Lesson(trigger=t, fix="heat it with the microwave", task_type="heat", scope="task"))
    return set(triggers)


def cool(m, n: int = 6) -> set[str]:
    # Another store, another task type, more events than the first: its head is above the saved mark.
    triggers = COOL[:n]
    for t in triggers:
        m.add_lesson(Lesson(trigger=t, fix="cool it with the fridge", task_type="cool", scope="task"))
    return set(triggers)


def served(m, task_type: str) -> set[str]:
    return {r.trigger for r in m.retrieve(QUERY, task_type=task_type, k=10, record=False).lessons}


def test_replaced_sqlite_file_is_not_served_from_the_old_index(tmp_path):
    db, other = tmp_path / "skillmem.db", tmp_path / "other.db"
    a = open_memory(str(db), tmp_path)
    heated = heat(a)
    assert served(a, "heat") == heated
    a.close()  # saves the index of store A under tmp_path/index, mark 3
    b = open_memory(str(other), tmp_path / "other-index")
    cooled = cool(b)
    b.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"skillmem.db{suffix}").unlink(missing_ok=True)
    shutil.copy(other, db)  # the file at the path is another store now (closed: its WAL is checkpointed)
    m = open_memory(str(db), tmp_path)
    assert served(m, "heat") == set()  # store B has no heat lessons: nothing of A's may come back
    assert served(m, "cool") == cooled
    assert m.index_check()["ok"]
    m.close()


def test_file_replaced_under_a_running_process_is_noticed(tmp_path):
    db, other = tmp_path / "skillmem.db", tmp_path / "other.db"
    a = open_memory(str(db), tmp_path)
    heated = heat(a)
    assert served(a, "heat") == heated
    b = open_memory(str(other), tmp_path / "other-index")
    cooled = cool(b)
    b.close()
    os.replace(other, db)  # a new inode at the same path, while `a` is open
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"skillmem.db{suffix}").unlink(missing_ok=True)
    assert served(a, "heat") == set() and served(a, "cool") == cooled
    a.close()


def test_same_store_restored_to_an_older_point_then_written_is_rebuilt(tmp_path):
    """A backup of the same store (same id) restored, then more writes than were lost: the head
    passes the saved mark, but the event at the mark is another one."""
    db = tmp_path / "skillmem.db"
    a = open_memory(str(db), tmp_path)
    a.add_lesson(Lesson(trigger="a steak must be cooked", fix="use the stove", task_type="heat"))
    a.close()
    shutil.copy(db, tmp_path / "backup.db")
    a = open_memory(str(db), tmp_path)
    lost = heat(a, 3)
    assert lost <= served(a, "heat")
    a.close()  # index saved at mark 4
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"skillmem.db{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", db)
    m = open_memory(str(db), tmp_path)
    kept = {"the kettle must boil", "a pan of rice is cold", "frozen peas in the bag", "stale coffee in a cup",
            "the oven is off"}
    # Written through another index dir, so ours is not touched: head 6 > mark 4.
    other = open_memory(str(db), tmp_path / "elsewhere")
    for t in sorted(kept):
        other.add_lesson(Lesson(trigger=t, fix="use the stove", task_type="heat"))
    other.close()
    got = served(m, "heat")
    assert not (got & lost)  # the lost history is never served
    assert got == kept | {"a steak must be cooked"}
    # ...and every score is the item's own text's: ids 2-4 exist in both histories, and an
    # index of the lost one would rank today's rows by yesterday's vectors.
    ctx = m.retrieve(QUERY, task_type="heat", k=10, record=False)
    q = m.embedder.encode([QUERY])[0]
    for row in ctx.lessons:
        want = float(m.embedder.encode([lesson_text(row)])[0] @ q)
        assert ctx.scores[("lesson", row.id)] == pytest.approx(want, abs=1e-5), row.trigger
    m.close()


def test_postgres_database_recreated_at_the_same_url_is_not_served_from_the_old_index(pg_url, tmp_path):
    a = open_memory(pg_url, tmp_path)
    heated = heat(a)
    assert served(a, "heat") == heated
    a.close()
    name = pg_url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:  # what a restore of another dump at this URL leaves behind
        c.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    b = open_memory(pg_url, tmp_path / "other-index")
    cooled = cool(b)
    b.close()
    m = open_memory(pg_url, tmp_path)  # the index dir still holds store A's index, mark 3 < head 6
    assert served(m, "heat") == set()
    assert served(m, "cool") == cooled
    assert m.index_check()["ok"]
    m.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_retrieval_reads_no_sql_unless_memory_changed(backend, tmp_path, request):
    db = str(tmp_path / "skillmem.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    m = open_memory(db, tmp_path)
    heat(m)
    m.retrieve("egg heated", task_type="heat", record=False)
    statements: list[str] = []
    event.listen(m.read_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    event.listen(m.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for _ in range(20):
        ctx = m.retrieve(QUERY, task_type="heat", record=False)
        assert ctx.text and len(ctx.items) == 3
    assert statements == []  # only the probe's own connection was read
    other = open_memory(db, tmp_path / "other-index")
    other.add_lesson(Lesson(trigger="the kettle is empty", fix="fill it at the sink", task_type="heat"))
    other.close()
    assert "the kettle is empty" in {r.trigger for r in m.retrieve("kettle empty", task_type="heat",
                                                                   record=False).lessons}
    assert statements  # a change was read, once
    m.close()


def test_probe_is_skipped_within_its_interval_and_another_process_is_seen_after_it(tmp_path):
    import subprocess
    import sys
    import time

    db = str(tmp_path / "skillmem.db")
    m = open_memory(db, tmp_path)
    heat(m)
    m.retrieve(QUERY, task_type="heat", record=False)
    reads = []
    real_read = m.index._probe.read
    m.index._probe.read = lambda: reads.append(1) or real_read()
    m.index.probe_interval = 3600.0
    for _ in range(20):
        m.retrieve(QUERY, task_type="heat", record=False)
    assert reads == []  # no SQL at all: the last probe is trusted for its interval
    # This process's own write is seen at once, whatever the interval.
    m.add_lesson(Lesson(trigger="the oven is cold", fix="turn the oven on", task_type="heat", scope="task"))
    assert "the oven is cold" in served(m, "heat")
    # Another process's write: not read while the probe is trusted, read once the interval is over.
    code = ("import sys; from skillmem import SkillMemory, Lesson; from skillmem.embed import HashingEmbedder; "
            "m = SkillMemory(sys.argv[1], embedder=HashingEmbedder(), index_dir=sys.argv[2]); "
            "m.add_lesson(Lesson(trigger='the kettle is empty', fix='fill it at the sink', task_type='heat', "
            "scope='task')); m.close()")
    subprocess.run([sys.executable, "-c", code, db, str(tmp_path / "other-index")], check=True, timeout=600,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert "the kettle is empty" not in served(m, "heat")
    m.index.probe_interval = 0.05
    time.sleep(0.06)
    assert "the kettle is empty" in served(m, "heat")
    m.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rebuild_reads_rows_and_vectors_in_bulk_and_renders_them_as_before(backend, tmp_path, request):
    from skillmem import Demonstration

    db = str(tmp_path / "skillmem.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    m = open_memory(db, tmp_path)
    heat(m)
    m.add_demonstration(Demonstration(task_type="heat", goal_template="heat some egg",
                                      plan=["take egg 1 from fridge 1", "heat egg 1 with microwave 1"]))
    before = m.retrieve(QUERY, task_type="heat", record=False)
    assert "heat egg 1 with microwave 1" in before.text
    m.index_rebuild()  # the bulk path: one joined query on the DBAPI cursor
    after = m.retrieve(QUERY, task_type="heat", record=False)
    assert after.text == before.text and after.items == before.items
    assert m.index_check()["ok"]
    m.close()


_EDIT_AND_RETIRE = (
    "import sys; from skillmem import SkillMemory; from skillmem.embed import HashingEmbedder; "
    "m = SkillMemory(sys.argv[1], embedder=HashingEmbedder(), index_dir=sys.argv[2]); "
    "m.edit_lesson(int(sys.argv[3]), fix='warm it on the stove', reason='test'); "
    "m.retire_lesson(int(sys.argv[4]), 'test'); m.close()")


def test_another_process_edit_and_retirement_reach_the_cached_rendering(db_url, tmp_path):
    """The text retrieval renders from its cache is what the rows say after another
    process edited one lesson and retired another; then no SQL is read again."""
    import subprocess
    import sys
    import time

    from skillmem.retrieve import render_memory

    m = open_memory(db_url, tmp_path)
    heat(m)
    before = m.retrieve(QUERY, task_type="heat", k=10, record=False)
    assert before.text.count("heat it with the microwave") == 3
    edited, retired = [i for _, i, _, _ in before.items][:2]
    subprocess.run([sys.executable, "-c", _EDIT_AND_RETIRE, db_url, str(tmp_path / "other-index"),
                    str(edited), str(retired)], check=True, timeout=600,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    time.sleep(m.index.probe_interval + 0.01)
    after = m.retrieve(QUERY, task_type="heat", k=10, record=False)
    ids = [i for _, i, _, _ in after.items]
    assert retired not in ids and edited in ids and len(ids) == 2
    assert after.text.count("warm it on the stove") == 1 and after.text.count("heat it with the microwave") == 1
    # The cached rendering is the rendering of the rows as SQL has them now.
    rows = {r.id: r for r in m.lessons(status="active")}
    assert after.text == render_memory([rows[i] for i in ids], [], token_budget=400)[0]
    statements: list[str] = []
    event.listen(m.read_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    event.listen(m.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    time.sleep(m.index.probe_interval + 0.01)
    for _ in range(5):
        assert m.retrieve(QUERY, task_type="heat", k=10, record=False).text == after.text
    assert statements == []  # nothing changed: only the probe's own connection was read
    m.close()


class _SyncingItems(dict):
    """The item cache as a retrieval sees it while another thread's sync applies changes: `gone`
    was dropped before the retrieval read it, and every other item right after (read again by
    key, each would be missing)."""

    gone = None

    def get(self, key, default=None):
        return default if key == self.gone else super().get(key, default)

    def __getitem__(self, key):
        raise KeyError(key)


def test_a_retrieval_renders_the_items_it_read_while_a_sync_drops_others(tmp_path):
    m = open_memory(str(tmp_path / "m.db"), tmp_path)
    heat(m)
    first = m.retrieve(QUERY, task_type="heat", k=10, record=False)
    assert len(first.items) == 3
    racing = _SyncingItems(m.index.items)
    racing.gone = (first.items[0][0], first.items[0][1])
    m.index.items = racing
    again = m.retrieve(QUERY, task_type="heat", k=10, record=False)
    assert sorted(i for _, i, _, _ in again.items) == sorted(i for _, i, _, _ in first.items[1:])
    m.close()


def test_an_item_rendered_on_another_thread_meanwhile_is_never_read_with_no_tokens(tmp_path, monkeypatch):
    """A retrieval that runs while another is rendering an item for the first time (here: from
    inside its token count) reads the item's block with its tokens, or renders it itself."""
    import skillmem.retrieve as retrieve

    m = open_memory(str(tmp_path / "m.db"), tmp_path)
    heat(m)
    expected = m.retrieve(QUERY, task_type="heat", k=10, record=False)
    for it in m.index.items.values():
        it.block, it.tokens = None, 0  # as if never rendered
    count, inner, started = retrieve.count_tokens, [], []

    def count_while_another_retrieves(text: str) -> int:
        if not started:
            started.append(True)
            inner.append(m.retrieve(QUERY, task_type="heat", k=10, record=False))
        return count(text)

    monkeypatch.setattr(retrieve, "count_tokens", count_while_another_retrieves)
    outer = m.retrieve(QUERY, task_type="heat", k=10, record=False)
    assert inner[0].tokens == outer.tokens == expected.tokens and inner[0].text == expected.text


def test_every_cached_item_has_its_tokens_counted_as_it_enters(tmp_path):
    """Rebuilt, loaded from the saved index (counted on first use) or synced in from another
    writer (counted as it enters): each cached item's tokens are those of its rendering, and
    retrieval renders the same text and counts."""
    from skillmem import Demonstration
    from skillmem.retrieve import _rendered, render_memory
    from skillmem.tokens import count_tokens

    def check(m):
        assert m.index.items
        for it in m.index.items.values():
            assert it.block is None or it.tokens == count_tokens(it.block)
            assert not it.tokens or it.tokens == count_tokens(_rendered(it)[0])
            want = count_tokens(render_memory([it], [])[0] if it.kind == "lesson" else render_memory([], [it])[0])
            header = count_tokens("Lessons from earlier attempts:" if it.kind == "lesson"
                                  else "Demonstrations that succeeded:")
            assert _rendered(it)[1] == it.tokens == want - header

    db = str(tmp_path / "skillmem.db")
    m = open_memory(db, tmp_path)
    heat(m)
    m.add_demonstration(Demonstration(goal_template="heat the [object]", task_type="heat",
                                      plan=["take [object]", "heat [object] with microwave 1"]))
    m.index_rebuild()
    check(m)
    ctx = m.retrieve(QUERY, task_type="heat", record=False)
    m.close()
    m = open_memory(db, tmp_path)  # the saved index
    again = m.retrieve(QUERY, task_type="heat", record=False)
    assert m.index.rebuilds == 0 and (again.text, again.tokens) == (ctx.text, ctx.tokens)
    check(m)
    other = open_memory(db, tmp_path / "other-index")
    other.add_lesson(Lesson(trigger="the kettle is empty", fix="fill it at the sink", task_type="heat", scope="task"))
    other.close()
    m.index.sync()
    new = [it for it in m.index.items.values() if it.trigger == "the kettle is empty"]
    assert len(new) == 1 and new[0].tokens and new[0].block is None  # counted as it entered, not rendered
    check(m)
    m.close()
