"""SkillStore: skill memory behind LangGraph's BaseStore interface."""

from __future__ import annotations

import asyncio
from typing import TypedDict

import pytest
from langgraph.store.base import BaseStore, ListNamespacesOp, MatchCondition, SearchOp

from skillmem import Demonstration, Lesson, SkillMemory
from skillmem.embed import HashingEmbedder
from skillmem.lgstore import SkillStore

NS = ("skillmem", "default", "lessons")


@pytest.fixture
def store(db_url, tmp_path):
    m = SkillMemory(db_url, index_dir=tmp_path / "index", embedder=HashingEmbedder())
    m.add_lesson(Lesson(trigger="the microwave is closed", fix="open microwave 1 first", task_type="heat"))
    m.add_lesson(Lesson(trigger="looking for a key", fix="check the drawers", scope="general"))
    m.add_lesson(Lesson(trigger="the sink is full", fix="clean the mug elsewhere", task_type="clean"))
    m.add_lesson(Lesson(trigger="secret microwave trick", fix="other namespace", task_type="heat"), namespace="other")
    m.add_demonstration(Demonstration(task_type="heat", goal_template="heat [object]", plan=["take [object]"]))
    yield SkillStore(m)
    m.close()


def test_search_by_query_ranks_within_the_namespace(store):
    hits = store.search(NS, query="the microwave is closed, what now", limit=2)
    assert hits[0].value["trigger"] == "the microwave is closed" and hits[0].score > hits[1].score
    assert all(h.namespace == NS for h in hits)
    assert all(h.value["namespace"] == "default" for h in store.search(("skillmem", "default"), query="microwave"))
    assert {h.value["namespace"] for h in store.search(("skillmem",), query="microwave")} == {"default", "other"}
    assert store.search(("skillmem", "other", "lessons"), query="microwave")[0].value["fix"] == "other namespace"
    assert store.search(("elsewhere",), query="microwave") == []


def test_search_without_query_lists_and_filters(store):
    rows = store.search(NS, limit=10)
    assert [int(r.key) for r in rows] == [1, 2, 3] and rows[0].score is None
    assert [r.value["trigger"] for r in store.search(NS, filter={"task_type": "clean"})] == ["the sink is full"]
    assert [r.key for r in store.search(NS, filter={"support": {"$gte": 1}}, limit=1, offset=1)] == ["2"]
    assert len(store.search(("skillmem", "default"), limit=10)) == 4  # lessons and the demonstration


def test_get_put_delete_on_curated_lessons(store):
    item = store.get(NS, "1")
    assert item.value["fix"] == "open microwave 1 first" and item.key == "1"
    assert store.get(NS, "999") is None and store.get(NS, "not-an-id") is None
    assert store.get(("skillmem", "other", "lessons"), "1") is None  # id 1 lives in "default"
    store.put(NS, "1", {**item.value, "fix": "open the microwave door"})  # a round trip edits
    assert store.get(NS, "1").value["fix"] == "open the microwave door" and store.get(NS, "1").value["version"] == 2
    # The caller's key is kept: the new lesson is got back under it, through curation.
    store.put(NS, "my-key", {"trigger": "the egg is frozen", "fix": "thaw it", "task_type": "heat"})
    got = store.get(NS, "my-key")
    assert got.key == "my-key" and got.value["fix"] == "thaw it" and got.value["provenance"]["store_key"] == "my-key"
    assert store.search(NS, query="egg frozen thaw", limit=1)[0].key == "my-key"
    store.put(NS, "my-key", {"trigger": "the egg is frozen", "fix": "thaw it in the sink", "task_type": "heat"})
    assert store.get(NS, "my-key").value["version"] == 2  # the same lesson, edited
    # delete: gone from every read; SQL keeps the row and its audit trail.
    store.delete(NS, "1")
    assert store.get(NS, "1") is None
    assert "1" not in {h.key for h in store.search(NS, query="microwave closed", limit=10)}
    assert "1" not in {h.key for h in store.search(NS, limit=10)}
    assert store.memory.lessons(status="retired")[0].id == 1


def test_curated_values_are_checked_not_dropped(store):
    with pytest.raises(ValueError, match="not part of one"):
        store.put(NS, "k", {"trigger": "t", "fix": "f", "colour": "blue"})
    with pytest.raises(ValueError, match="without ttl"):
        store.put(NS, "k", {"trigger": "t", "fix": "f"}, ttl=5)
    with pytest.raises(ValueError, match="valid lesson"):
        store.put(NS, "k", {"fix": "no trigger"})
    assert store.get(NS, "k") is None


def test_other_namespaces_store_any_value(store):
    store.put(("skillmem", "default", "notes"), "n1", {"anything": [1, 2]})  # not a curated collection
    store.put(("users", "u1"), "prefs", {"theme": "dark"})
    assert store.get(("users", "u1"), "prefs").value == {"theme": "dark"}
    assert store.get(("skillmem", "default", "notes"), "n1").value == {"anything": [1, 2]}
    assert ("users", "u1") in store.list_namespaces()


def test_list_namespaces(store):
    assert store.list_namespaces() == [("skillmem", "default", "demonstrations"), ("skillmem", "default", "lessons"),
                                       ("skillmem", "other", "lessons")]
    store.delete(("skillmem", "other", "lessons"), "4")  # its only lesson: the namespace is gone from the list
    assert ("skillmem", "other", "lessons") not in store.list_namespaces()
    store.memory.restore_lesson(4)
    assert store.list_namespaces(suffix=("lessons",)) == [("skillmem", "default", "lessons"),
                                                          ("skillmem", "other", "lessons")]
    assert store.list_namespaces(prefix=("skillmem", "other")) == [("skillmem", "other", "lessons")]
    assert store.list_namespaces(max_depth=2) == [("skillmem", "default"), ("skillmem", "other")]
    [res] = store.batch([ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("skillmem", "*", "lessons")),))])
    assert len(res) == 2


def test_abatch(store):
    res = asyncio.run(store.abatch([SearchOp(NS, query="microwave", limit=1)]))
    assert res[0][0].value["trigger"] == "the microwave is closed"
    assert asyncio.run(store.aget(NS, "2")).value["scope"] == "general"


class S(TypedDict, total=False):
    goal: str
    hint: str


def test_graph_compiled_with_the_store(store):
    from langgraph.graph import END, START, StateGraph

    def node(state: S, *, store: BaseStore) -> dict:
        hits = store.search(("skillmem", "default", "lessons"), query=state["goal"], limit=1)
        return {"hint": hits[0].value["fix"]}

    g = StateGraph(S)
    g.add_node("n", node)
    g.add_edge(START, "n")
    g.add_edge("n", END)
    out = g.compile(store=store).invoke({"goal": "the microwave is closed"})
    assert out["hint"] == "open microwave 1 first"


def test_ttl_sweep_deletes_expired_rows(store):
    import time

    from skillmem.store import run_sql

    store.ttl_config = {"default_ttl": 1 / 60, "refresh_on_read": True}  # a 1 s default for puts without ttl=
    store.put(("cache",), "a", {"v": 1})
    store.put(("cache",), "b", {"v": 2}, ttl=None)  # None: never expires
    time.sleep(1.5)
    assert store.get(("cache",), "a") is None and store.get(("cache",), "b").value == {"v": 2}
    assert store.sweep_ttl() == 1
    url = store.memory.url
    assert run_sql(url, "SELECT key FROM store_items WHERE namespace = 'cache'")[1] == [("b",)]
