"""SkillMemory's memory half: embeddings cache, index kept in step with SQL, retrieval into context."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Optional, TypedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from conftest import open_memory
from skillmem import Demonstration, Lesson, SkillMemory, wrap
from skillmem.embed import HashingEmbedder
from skillmem.prompt import retrieval_node
from skillmem.retrieve import RetrievalConfig
from skillmem.tokens import count_tokens

ROOT = Path(__file__).resolve().parents[1]


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting the texts it is asked to encode."""

    def __init__(self, dim: int = 384):
        super().__init__(dim)
        self.encoded = 0

    def encode(self, texts):
        self.encoded += len(texts)
        return super().encode(texts)



def lesson(trigger: str, fix: str = "try something else", task_type: str = "heat", scope: str = "task",
           bad: str = "") -> Lesson:
    return Lesson(trigger=trigger, fix=fix, bad_action=bad, task_type=task_type, scope=scope)


def fill(m: SkillMemory, ns: Optional[str] = None) -> list[int]:
    ids = [
        m.add_lesson(lesson("the microwave is closed", "open microwave 1 before heating", bad="heat egg with microwave 1"),
                     namespace=ns)[0],
        m.add_lesson(lesson("an object must be hot", "use the microwave, not the fridge", bad="heat egg with fridge 1"),
                     namespace=ns)[0],
        m.add_lesson(lesson("looking for a small object", "check drawers and cabinets first", scope="general",
                            task_type=""), namespace=ns)[0],
        m.add_lesson(lesson("cleaning a mug", "go to the sinkbasin", task_type="clean"), namespace=ns)[0],
    ]
    m.add_demonstration(Demonstration(task_type="heat", goal_template="heat some [object] and put it in [receptacle]",
                                      plan=["go to [object]", "take [object]", "go to microwave 1",
                                            "heat [object] with microwave 1", "put [object] in [receptacle]"]),
                        namespace=ns)
    return ids


# --------------------------------------------------------------------------- retrieval


def test_retrieve_two_levels_and_demonstrations(mem):
    ids = fill(mem)
    ctx = mem.retrieve("heat an egg and put it in the fridge", "the microwave 1 is closed", task_type="heat", k=5)
    got = {r.id for r in ctx.lessons}
    assert {ids[0], ids[1], ids[2]} <= got  # task-type lessons and the general lesson
    assert ids[3] not in got  # another task type's lesson is never offered
    assert len(ctx.demonstrations) == 1
    assert "- the microwave is closed: open microwave 1 before heating (not heat egg with microwave 1)" in ctx.text
    assert "  4. heat [object] with microwave 1" in ctx.text
    assert ctx.tokens == count_tokens(ctx.text) <= 400
    assert set(ctx.scores) == {(k, i) for k, i, _, _ in ctx.items}


def test_every_retrieved_item_is_recorded(mem):
    fill(mem)
    ctx = mem.retrieve("heat an egg", task_type="heat", episode_id="ep-1", step_index=3)
    with mem.engine.connect() as c:
        rows = c.execute(text("SELECT episode_id, step_index, item_kind, item_id, rank, score, tokens "
                              "FROM retrievals ORDER BY rank")).fetchall()
    assert [(r[2], r[3]) for r in rows] == [(k, i) for k, i, _, _ in ctx.items]
    assert all(r[0] == "ep-1" and r[1] == 3 and r[6] > 0 for r in rows)
    assert [r[4] for r in rows] == list(range(len(rows)))
    mem.retrieve("heat an egg", task_type="heat", record=False)
    with mem.engine.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM retrievals")).scalar() == len(rows)


@pytest.mark.parametrize("budget", [1, 5, 12, 20, 40, 80, 400])
def test_token_budget_is_never_exceeded(sqlite_url, tmp_path, budget):
    m = open_memory(sqlite_url, tmp_path)
    fill(m)
    ctx = m.retrieve("heat an egg", "microwave closed", task_type="heat", token_budget=budget)
    assert count_tokens(ctx.text) == ctx.tokens <= budget
    if budget < 10:  # smaller than the header plus one lesson
        assert ctx.text == "" and not ctx.items
    m.close()


def test_edge_cases_give_sensible_answers(mem):
    empty = mem.retrieve("anything", task_type="heat")
    assert empty.text == "" and empty.tokens == 0 and empty.lessons == [] and empty.demonstrations == []
    fill(mem)
    assert len(mem.retrieve("heat", task_type="heat", k=1000).lessons) == 3
    assert mem.retrieve("", "", task_type="heat").lessons  # empty query: still the best guess
    assert mem.retrieve("x" * 50_000, "y " * 25_000, task_type="heat").tokens <= 400
    assert mem.retrieve("heat", task_type="heat", k=0, k_demos=0).text == ""
    assert mem.retrieve("heat", task_type="no-such-type").demonstrations == []
    assert mem.retrieve("heat", task_type="heat", kinds=("lesson",)).demonstrations == []


def test_retrieval_is_deterministic(sqlite_url, tmp_path):
    m = open_memory(sqlite_url, tmp_path)
    # Exact ties (the same vector twice) must come out by id.
    m.add_lessons_bulk([lesson(f"rule {i % 3}", f"fix {i % 3}") for i in range(12)])
    a = m.retrieve("rule 1 fix", task_type="heat", k=6, record=False)
    b = m.retrieve("rule 1 fix", task_type="heat", k=6, record=False)
    assert a.items == b.items and a.text == b.text
    m.close()
    m2 = open_memory(str(tmp_path / "other.db"), tmp_path / "o")
    m2.add_lessons_bulk([lesson(f"rule {i % 3}", f"fix {i % 3}") for i in range(12)])
    assert m2.retrieve("rule 1 fix", task_type="heat", k=6, record=False).items == a.items
    m2.close()


def test_near_copies_never_fill_the_context(sqlite_url, tmp_path):
    m = open_memory(sqlite_url, tmp_path)
    copies = [lesson("the microwave is closed", f"open the microwave first{'!' * i}") for i in range(5)]
    others = [lesson("the egg is not hot", "heat it longer"), lesson("the microwave is busy", "wait")]
    m.add_lessons_bulk(copies + others)  # no dedupe on this path
    ctx = m.retrieve("the microwave is closed: open the microwave first", task_type="heat", k=5, k_demos=0)
    vecs = m.embedder.encode([f"When {r.trigger}: instead {r.fix}" for r in ctx.lessons])
    sims = vecs @ vecs.T
    assert (sims[np.triu_indices(len(vecs), 1)] < RetrievalConfig().near_copy_cosine).all()
    assert sum(r.trigger == "the microwave is closed" for r in ctx.lessons) == 1
    assert len(ctx.lessons) == 3
    m.close()


def test_only_active_items_are_retrieved(mem):
    ids = fill(mem)
    mem.retire_lesson(ids[0], reason="test")
    got = {r.id for r in mem.retrieve("microwave closed heat egg", task_type="heat").lessons}
    assert ids[0] not in got and ids[1] in got
    with mem.engine.begin() as c:  # a row marked merged by someone else (with its event)
        c.execute(text("UPDATE lessons SET status = 'merged', merged_into = :a WHERE id = :b"), {"a": ids[0], "b": ids[1]})
        c.execute(text("INSERT INTO lesson_events (namespace, item_kind, item_id, action, reason, created_at) "
                       "VALUES ('default', 'lesson', :b, 'merge', 'test', CURRENT_TIMESTAMP)"), {"b": ids[1]})
    assert ids[1] not in {r.id for r in mem.retrieve("microwave closed heat egg", task_type="heat").lessons}
    mem.restore_lesson(ids[0], reason="test")
    assert ids[0] in {r.id for r in mem.retrieve("microwave closed heat egg", task_type="heat").lessons}


def test_lessons_and_demonstrations_listing(mem):
    ids = fill(mem)
    mem.retire_lesson(ids[3], "x")
    assert [r.id for r in mem.lessons()] == ids
    assert [r.id for r in mem.lessons(status="retired")] == [ids[3]]
    assert len(mem.demonstrations(task_type="heat")) == 1 and mem.lessons(namespace="other") == []


# --------------------------------------------------------------------------- namespaces


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=200), task_type=st.sampled_from(["heat", "clean", "", "cool"]),
       k=st.integers(0, 20))
def test_namespace_isolation_property(isolated_memory, query, task_type, k):
    m, a_ids = isolated_memory
    ctx = m.retrieve(query, query[::-1], namespace="B", task_type=task_type, k=k, record=False, k_demos=3)
    assert all(r.namespace == "B" for r in ctx.lessons + ctx.demonstrations)
    assert not ({r.id for r in ctx.lessons} & a_ids)
    assert "secret" not in ctx.text


@pytest.fixture(scope="module")
def isolated_memory(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iso")
    m = open_memory(str(tmp / "iso.db"), tmp)
    a_ids = {m.add_lesson(lesson(f"secret rule {i} for heat", "secret fix", task_type=tt, scope=sc),
                          namespace="A")[0]
             for i, (tt, sc) in enumerate([("heat", "task"), ("", "general"), ("clean", "task")] * 3)}
    m.add_demonstration(Demonstration(task_type="heat", goal_template="secret plan", plan=["secret step"]),
                        namespace="A")
    fill(m, ns="B")
    yield m, a_ids
    m.close()


# --------------------------------------------------------------------------- embeddings


def test_vectors_are_persisted_and_never_embedded_twice(sqlite_url, tmp_path):
    e1 = CountingEmbedder()
    m = open_memory(sqlite_url, tmp_path, embedder=e1)
    fill(m)
    m.close()
    n_first = e1.encoded
    import shutil
    shutil.rmtree(tmp_path / "index")  # force a rebuild from SQL in the next process
    e2 = CountingEmbedder()
    m2 = open_memory(sqlite_url, tmp_path, embedder=e2)
    assert len(m2.retrieve("heat an egg", task_type="heat", record=False).lessons) == 3
    assert e2.encoded == 1  # only the query: every item vector came from the embeddings table
    assert n_first >= 5
    m2.close()


def test_changing_the_model_reembeds(sqlite_url, tmp_path):
    m = open_memory(sqlite_url, tmp_path)
    ids = fill(m)
    m.close()
    m2 = open_memory(sqlite_url, tmp_path, embedder=HashingEmbedder(64))
    ctx = m2.retrieve("microwave closed", task_type="heat")
    assert ctx.lessons and all(r.embedding_model == "hashing-64" for r in m2.lessons())
    assert m2.index_check()["ok"] or m2.index_rebuild()
    with m2.engine.connect() as c:
        models = {r[0] for r in c.execute(text("SELECT DISTINCT model FROM embeddings"))}
    assert models == {"hashing-384", "hashing-64"}
    assert len(ids) == 4
    m2.close()


# --------------------------------------------------------------------------- index vs SQL


def test_another_process_change_is_seen_before_the_next_retrieve(db_url, tmp_path):
    a = open_memory(db_url, tmp_path)
    b = open_memory(db_url, tmp_path)
    fill(a)
    assert len(b.retrieve("heat egg", task_type="heat").lessons) == 3
    new_id, _ = a.add_lesson(lesson("the egg is frozen", "thaw it in the microwave"))
    assert new_id in {r.id for r in b.retrieve("egg frozen thaw", task_type="heat").lessons}
    a.retire_lesson(new_id, "test")
    assert new_id not in {r.id for r in b.retrieve("egg frozen thaw", task_type="heat").lessons}
    a.close()
    b.close()


CRASH = textwrap.dedent("""
    import os, sys
    from skillmem import SkillMemory, Lesson
    from skillmem.embed import HashingEmbedder
    m = SkillMemory(sys.argv[1], index_dir=sys.argv[2], embedder=HashingEmbedder(), save_interval=1e9)
    m.retrieve("warm up", task_type="heat")  # loads (and saves) the index
    for i in range(5):
        m.add_lesson(Lesson(trigger=f"crash case {i} with the toaster", fix=f"unplug it {i}", task_type="heat"))
    os._exit(0)  # killed: the SQL rows are committed, the index file is not written
""")


def insert_lesson_by_sql(conn, trigger: str) -> int:
    """A lesson row written around skillmem (plain SQL, no event); its id."""
    conn.execute(text("INSERT INTO lessons (namespace, scope, task_type, trigger, bad_action, fix, source_episodes, "
                      "provenance, status, grounded_on_feedback, version, support, text_hash, embedding_model, "
                      "created_at, updated_at) VALUES ('default', 'task', 'heat', :t, '', 'fix', "
                      "'[]', '{}', 'active', false, 1, 1, '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"t": trigger})
    return conn.execute(text("SELECT MAX(id) FROM lessons")).scalar()


def test_crash_between_sql_commit_and_index_write(db_url, tmp_path):
    m = open_memory(db_url, tmp_path)
    fill(m)
    m.close()
    subprocess.run([sys.executable, "-c", CRASH, db_url, str(tmp_path / "index")], check=True, cwd=ROOT,
                   timeout=120)
    # Another writer that bypasses skillmem entirely: a row and its event by plain SQL.
    with m.engine.begin() as c:
        lid = insert_lesson_by_sql(c, "raw sql toaster")
        c.execute(text("INSERT INTO lesson_events (namespace, item_kind, item_id, action, reason, created_at) "
                       "VALUES ('default', 'lesson', :i, 'create', 'sql', CURRENT_TIMESTAMP)"), {"i": lid})
    m2 = open_memory(db_url, tmp_path)
    report = m2.index_check()
    # The saved index is behind, and says so: the six rows came after its mark, with their events,
    # so the next start applies them in place (as the retrieval below shows): behind, not wrong.
    assert len(report["missing"]) == 6 and report["behind_by_events"] >= 6 and report["unexplained"] == []
    assert report["ok"] and report["status"].startswith("behind")
    got = {r.trigger for r in m2.retrieve("toaster crash case", task_type="heat", k=20).lessons}
    assert {f"crash case {i} with the toaster" for i in range(5)} | {"raw sql toaster"} <= got
    m2.close()
    m3 = open_memory(db_url, tmp_path)
    assert m3.index_check()["ok"]
    m3.close()


def test_index_check_tells_an_index_behind_from_one_that_disagrees(sqlite_url, tmp_path):
    m = open_memory(sqlite_url, tmp_path)
    fill(m)
    m.close()
    m2 = open_memory(sqlite_url, tmp_path)
    assert m2.index_check()["status"] == "current"
    # A row that no event announces (written around skillmem, audit and all): the saved index is at
    # the store's mark and still lacks it, which no catching up would mend.
    with m2.engine.begin() as c:
        lid = insert_lesson_by_sql(c, "unannounced")
    report = m2.index_check()
    assert not report["ok"] and report["status"] == "disagrees"
    assert report["behind_by_events"] == 0 and report["unexplained"] == [["lesson", lid]]
    m2.close()


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_corrupted_index_is_rebuilt_with_a_warning(sqlite_url, tmp_path, damage):
    m = open_memory(sqlite_url, tmp_path)
    ids = fill(m)
    m.close()
    d = tmp_path / "index"
    part = sorted(d.glob("part-*.faiss"))[0]
    if damage == "truncate":
        part.write_bytes(part.read_bytes()[:50])
    elif damage == "flip":
        data = bytearray(part.read_bytes())
        data[-5] ^= 0xFF
        part.write_bytes(bytes(data))
    else:
        (d / "manifest.json").write_text("{not json")
    m2 = open_memory(sqlite_url, tmp_path)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        ctx = m2.retrieve("heat egg microwave", task_type="heat")
    assert {ids[0], ids[1], ids[2]} <= {r.id for r in ctx.lessons}
    assert m2.index_check()["ok"]
    m2.close()


def test_writer_and_reader_threads(db_url, tmp_path):
    m = open_memory(db_url, tmp_path)
    fill(m)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(40):
                m.add_lesson(lesson(f"threaded rule {i} about the stove burner", f"turn off stove burner {i}"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                ctx = m.retrieve("stove burner threaded rule", task_type="heat", k=8, record=False)
                for r in ctx.lessons:  # every lesson seen is whole: its row is committed and complete
                    assert r.id is not None and r.trigger and r.fix and r.status.value == "active"
                    assert r.text_hash and r.embedding_model == "hashing-384"
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(m.lessons()) == 44
    m.close()
    m2 = open_memory(db_url, tmp_path)
    assert m2.index_check()["ok"]
    m2.close()


# --------------------------------------------------------------------------- into the agent's context


class AgentState(TypedDict, total=False):
    goal: str
    observation: str
    task_type: str
    episode_id: str
    context: str
    context_tokens: int
    action: str
    done: bool
    won: bool
    seen_context: str


def test_retrieval_node_feeds_wrap(sqlite_url, tmp_path):
    from langgraph.graph import END, START, StateGraph

    m = open_memory(sqlite_url, tmp_path)
    fill(m)
    seen: list[str] = []

    def agent(state: dict) -> str:
        seen.append(state["context"])
        return "go to microwave 1"

    g = StateGraph(AgentState)
    g.add_node("retrieve", retrieval_node(m, k=3, token_budget=200))
    g.add_node("agent", wrap(agent, m))
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "agent")
    g.add_edge("agent", END)
    out = g.compile().invoke({"goal": "heat an egg", "observation": "the microwave is closed", "task_type": "heat"})
    assert "microwave" in seen[0] and out["context_tokens"] == count_tokens(out["context"]) <= 200
    ep = out["episode_id"]
    with m.engine.connect() as c:
        n = c.execute(text("SELECT COUNT(*) FROM retrievals WHERE episode_id = :e AND step_index = 0"),
                      {"e": ep}).scalar()
    assert n == sum(line.startswith(("- ", "A plan")) for line in out["context"].splitlines()) >= 3
    assert m.get_episode(ep).id == ep  # the recorder used the episode id the retrieval node made
    m.close()


def test_retrieval_node_as_system_message(sqlite_url, tmp_path):
    from langchain_core.messages import SystemMessage

    m = open_memory(sqlite_url, tmp_path)
    fill(m)
    node = retrieval_node(m, k=2, token_budget=100, key="memory", as_system_message=True)
    out = node({"goal": "heat an egg", "task_type": "heat", "episode_id": "e9"})
    assert isinstance(out["messages"][0], SystemMessage) and out["messages"][0].content == out["memory"]
    assert out["episode_id"] == "e9"
    m.close()


# --------------------------------------------------------------------------- CLI


def test_cli_index_check_and_rebuild(sqlite_url, tmp_path, capsys):
    from skillmem.cli import main

    m = SkillMemory(sqlite_url, embedder=HashingEmbedder())  # default index dir: next to the file
    fill(m)
    m.close()
    assert Path(sqlite_url + ".index", "manifest.json").is_file()
    assert main(["--db", sqlite_url, "index", "check"]) == 0
    with m.engine.begin() as c:
        c.execute(text("INSERT INTO lesson_events (namespace, item_kind, item_id, action, reason, created_at) "
                       "VALUES ('default', 'lesson', 1, 'retire', 'sql', CURRENT_TIMESTAMP)"))
        c.execute(text("UPDATE lessons SET status = 'retired' WHERE id = 1"))
    capsys.readouterr()
    # Retired by plain SQL with its event: the saved index still holds it, behind (the next start
    # drops it), not wrong; exit 0 and the difference shown.
    assert main(["--db", sqlite_url, "index", "check"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["extra"] == [["lesson", 1]] and report["status"].startswith("behind")
    assert report["behind_by_events"] == 1 and report["unexplained"] == []
    # Retired without an event: nothing would ever tell the index; that disagrees, exit 1.
    with m.engine.begin() as c:
        c.execute(text("UPDATE lessons SET status = 'retired' WHERE id = 2"))
    assert main(["--db", sqlite_url, "index", "check"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "disagrees" and report["unexplained"] == [["lesson", 2]]
    assert main(["--db", sqlite_url, "index", "rebuild"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "hashing-384"
    assert main(["--db", sqlite_url, "index", "check"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "current"


# --------------------------------------------------------------------------- semantic (real model)


@pytest.fixture(scope="module")
def st_embedder():
    from skillmem.embed import default_embedder

    return default_embedder()


def test_semantic_retrieval_with_sentence_transformers(tmp_path, st_embedder):
    m = SkillMemory(str(tmp_path / "s.db"), embedder=st_embedder)
    m.add_lesson(lesson("the mug has to be cleaned before use", "rinse the mug at the sinkbasin", task_type="clean"))
    m.add_lesson(lesson("you cannot find the keys anywhere", "look inside drawers", task_type="clean"))
    m.add_lesson(lesson("a plate is dirty", "wash the plate in the sink basin", task_type="clean"))
    m.add_lesson(lesson("the lamp is off", "switch on the desklamp", task_type="clean"))
    ctx = m.retrieve("clean a cup and put it in the coffee machine", task_type="clean", k=4)
    # "cup" and "mug" share no word: only a semantic model ranks this lesson first.
    assert ctx.lessons[0].trigger == "the mug has to be cleaned before use"
    scores = {r.trigger: ctx.scores[("lesson", r.id)] for r in ctx.lessons}
    assert scores["a plate is dirty"] > scores["the lamp is off"]
    m.close()
