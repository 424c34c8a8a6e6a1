"""LangGraph's BaseStore contract, written from its documentation, run on SkillStore and on
LangGraph's own InMemoryStore as the control (same embedding function for both).

What is checked is what `langgraph.store.base.BaseStore` documents: put/get/delete with any
namespace, key and JSON value; search under a namespace prefix with filters (exact, nested,
$eq $ne $gt $gte $lt $lte), limit and offset; vector search with scores, `index=False` and
field selection; list_namespaces with prefix/suffix/wildcards/max_depth/limit/offset;
batch and abatch; TTL (a store that does not support it raises NotImplementedError: the
control fails those tests by design, and the report counts them).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime

import pytest
from langgraph.store.base import GetOp, InvalidNamespaceError, ListNamespacesOp, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

from conftest import open_memory
from skillmem.embed import HashingEmbedder
from skillmem.lgstore import SkillStore

_EMB = HashingEmbedder(256)
THREADS: list[int] = []


def embed(texts: list[str]) -> list[list[float]]:
    THREADS.append(threading.get_ident())
    return _EMB.encode(texts).tolist()


INDEX = {"dims": 256, "embed": embed, "fields": ["$"], "name": "hashing-256-fn"}


@pytest.fixture(params=["InMemoryStore", "SkillStore-sqlite", "SkillStore-postgres"])
def store(request, tmp_path):
    if request.param == "InMemoryStore":
        yield InMemoryStore(index=dict(INDEX))
        return
    db = str(tmp_path / "s.db") if request.param.endswith("sqlite") else request.getfixturevalue("pg_url")
    m = open_memory(db, tmp_path)
    yield SkillStore(m, index=dict(INDEX))
    m.close()


# ---------------------------------------------------------------- put / get / delete


def test_put_get_round_trip(store):
    value = {"text": "dark mode", "n": 3, "ok": True, "none": None, "tags": ["a", "b"], "nested": {"x": {"y": 1.5}},
             "unicode": "café ☕ 日本"}
    store.put(("users", "u1", "prefs"), "theme", value)
    item = store.get(("users", "u1", "prefs"), "theme")
    assert item.value == value and item.key == "theme" and item.namespace == ("users", "u1", "prefs")
    assert isinstance(item.created_at, datetime) and isinstance(item.updated_at, datetime)


def test_get_missing_is_none(store):
    assert store.get(("users",), "nobody") is None
    store.put(("users",), "a", {"v": 1})
    assert store.get(("users", "a"), "a") is None  # namespaces are exact for get


def test_put_overwrites_and_updates_timestamp(store):
    ns = ("docs",)
    store.put(ns, "k", {"v": 1})
    first = store.get(ns, "k")
    time.sleep(0.01)
    store.put(ns, "k", {"v": 2})
    second = store.get(ns, "k")
    assert second.value == {"v": 2} and second.updated_at >= first.updated_at
    assert len(store.search(ns)) == 1


def test_keys_are_kept_as_given(store):
    ns = ("k",)
    keys = ["key1", "42", "with space", "a/b:c", "ünï", "x" * 300]
    for i, k in enumerate(keys):
        store.put(ns, k, {"i": i})
    assert [store.get(ns, k).value["i"] for k in keys] == list(range(len(keys)))
    assert sorted(i.key for i in store.search(ns, limit=100)) == sorted(keys)


def test_same_key_in_two_namespaces_is_two_items(store):
    store.put(("a",), "k", {"v": "a"})
    store.put(("b",), "k", {"v": "b"})
    assert store.get(("a",), "k").value == {"v": "a"} and store.get(("b",), "k").value == {"v": "b"}


def test_distinct_puts_are_all_kept(store):
    ns = ("notes",)
    for i in range(5):  # near-identical texts, distinct keys: five items, none merged or dropped
        store.put(ns, f"n{i}", {"text": f"remember to check the drawer {i}"})
    assert len(store.search(ns, limit=10)) == 5


def test_delete_deletes(store):
    ns = ("trash",)
    store.put(ns, "k", {"text": "delete me"})
    store.put(ns, "keep", {"text": "keep me"})
    store.delete(ns, "k")
    assert store.get(ns, "k") is None
    assert [i.key for i in store.search(ns)] == ["keep"]
    assert [i.key for i in store.search(ns, query="delete me")] == ["keep"]
    store.delete(ns, "never-existed")  # not an error


def test_deep_namespaces(store):
    ns = tuple(f"l{i}" for i in range(8))
    store.put(ns, "k", {"v": 1})
    assert store.get(ns, "k").value == {"v": 1}


@pytest.mark.parametrize("bad", [(), ("a.b",), ("langgraph", "x"), ("",)])
def test_invalid_namespaces_are_refused(store, bad):
    with pytest.raises(InvalidNamespaceError):
        store.put(bad, "k", {"v": 1})


# ---------------------------------------------------------------- search: prefix, filters, pages


def _fill(store):
    rows = [(("shop", "eu", "orders"), "o1", {"status": "paid", "total": 30, "cur": "EUR", "meta": {"ch": "web"}}),
            (("shop", "eu", "orders"), "o2", {"status": "refunded", "total": 12.5, "cur": "EUR", "meta": {"ch": "app"}}),
            (("shop", "us", "orders"), "o3", {"status": "paid", "total": 99, "cur": "USD", "meta": {"ch": "web"}}),
            (("shop", "usx"), "o4", {"status": "paid", "total": 5, "cur": "USD"}),
            (("other",), "o5", {"status": "paid", "total": 1})]
    for ns, k, v in rows:
        store.put(ns, k, v)


def test_search_under_a_prefix(store):
    _fill(store)
    assert sorted(i.key for i in store.search(("shop",))) == ["o1", "o2", "o3", "o4"]
    assert sorted(i.key for i in store.search(("shop", "us"))) == ["o3"]  # not "usx"
    assert sorted(i.key for i in store.search(("shop", "eu", "orders"))) == ["o1", "o2"]
    assert store.search(("nothing",)) == []
    assert len(store.search((), limit=100)) >= 5


def test_search_filters(store):
    _fill(store)
    keys = lambda f: sorted(i.key for i in store.search(("shop",), filter=f))  # noqa: E731
    assert keys({"status": "paid"}) == ["o1", "o3", "o4"]
    assert keys({"status": "paid", "cur": "EUR"}) == ["o1"]
    assert keys({"meta": {"ch": "web"}}) == ["o1", "o3"]
    assert keys({"total": {"$gt": 12.5}}) == ["o1", "o3"]
    assert keys({"total": {"$gte": 12.5}}) == ["o1", "o2", "o3"]
    assert keys({"total": {"$lt": 12.5}}) == ["o4"]
    assert keys({"total": {"$lte": 12.5, "$gt": 5}}) == ["o2"]
    assert keys({"status": {"$ne": "paid"}}) == ["o2"]
    assert keys({"status": {"$eq": "refunded"}}) == ["o2"]
    assert keys({"missing": "x"}) == []


def test_search_limit_and_offset(store):
    ns = ("page",)
    for i in range(7):
        store.put(ns, f"k{i}", {"i": i})
    pages = [store.search(ns, limit=3, offset=o) for o in (0, 3, 6)]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(i.key for p in pages for i in p) == [f"k{i}" for i in range(7)]
    assert len(store.search(ns)) == 7  # the default limit (10) is above 7
    assert store.search(ns, offset=7) == []


def test_search_without_query_has_no_score(store):
    _fill(store)
    assert all(i.score is None for i in store.search(("shop",)))


# ---------------------------------------------------------------- vector search


def _docs(store):
    ns = ("kb",)
    store.put(ns, "heat", {"text": "heat the mug in the microwave"})
    store.put(ns, "cool", {"text": "cool the apple in the fridge"})
    store.put(ns, "clean", {"text": "clean the plate in the sink basin"})
    return ns


def test_vector_search_ranks_by_similarity(store):
    ns = _docs(store)
    hits = store.search(ns, query="microwave heat mug")
    assert hits[0].key == "heat"
    assert all(isinstance(h.score, float) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_vector_search_with_filter_and_limit(store):
    ns = _docs(store)
    store.put(ns, "heat2", {"text": "heat the egg in the microwave", "lang": "en"})
    hits = store.search(ns, query="microwave heat", filter={"lang": "en"})
    assert [h.key for h in hits] == ["heat2"]
    assert len(store.search(ns, query="microwave", limit=2)) == 2
    page2 = store.search(ns, query="microwave", limit=2, offset=2)
    assert {h.key for h in page2}.isdisjoint(h.key for h in store.search(ns, query="microwave", limit=2))


def test_index_false_items_are_found_but_not_scored(store):
    ns = _docs(store)
    store.put(ns, "raw", {"text": "heat the mug in the microwave"}, index=False)
    hits = store.search(ns, query="heat the mug in the microwave", limit=10)
    assert hits[0].key == "heat" and hits[0].score is not None
    raw = [h for h in hits if h.key == "raw"]
    assert raw and raw[0].score is None
    assert store.get(ns, "raw").value == {"text": "heat the mug in the microwave"}


def test_field_selection(store):
    ns = ("fields",)
    store.put(ns, "by_title", {"title": "cooking pasta", "body": "quantum physics lecture notes"}, index=["title"])
    store.put(ns, "whole", {"title": "quantum physics lecture notes", "body": "x"})
    hits = store.search(ns, query="quantum physics lecture notes")
    assert hits[0].key == "whole" and hits[1].key == "by_title" and hits[1].score < hits[0].score


def test_updating_a_value_updates_its_vector(store):
    ns = ("upd",)
    store.put(ns, "k", {"text": "heat the mug in the microwave"})
    store.put(ns, "j", {"text": "the sink basin"})
    store.put(ns, "k", {"text": "clean the plate in the sink basin"})
    assert store.search(ns, query="plate sink basin clean")[0].key == "k"


# ---------------------------------------------------------------- list_namespaces


def test_list_namespaces(store):
    _fill(store)
    ns = set(store.list_namespaces(limit=100))
    assert {("shop", "eu", "orders"), ("shop", "us", "orders"), ("shop", "usx"), ("other",)} <= ns
    assert store.list_namespaces(prefix=("shop", "eu")) == [("shop", "eu", "orders")]
    assert store.list_namespaces(suffix=("orders",)) == [("shop", "eu", "orders"), ("shop", "us", "orders")]
    assert store.list_namespaces(prefix=("shop", "*", "orders")) == [("shop", "eu", "orders"), ("shop", "us", "orders")]
    assert store.list_namespaces(prefix=("shop",), max_depth=2) == [("shop", "eu"), ("shop", "us"), ("shop", "usx")]
    assert store.list_namespaces(prefix=("shop",), limit=1, offset=1) == [("shop", "us", "orders")]


# ---------------------------------------------------------------- batch, async


def test_batch_runs_mixed_operations_in_order(store):
    store.put(("b",), "x", {"v": 1})
    res = store.batch([GetOp(("b",), "x"), PutOp(("b",), "y", {"v": 2}), SearchOp(("b",), limit=10),
                       ListNamespacesOp(match_conditions=None, max_depth=None, limit=10, offset=0)])
    assert res[0].value == {"v": 1} and res[1] is None and isinstance(res[2], list) and ("b",) in res[3]
    assert store.get(("b",), "y").value == {"v": 2}


def test_async_api(store):
    async def main():
        await store.aput(("as",), "k", {"text": "heat the mug"})
        got = await store.aget(("as",), "k")
        hits = await store.asearch(("as",), query="heat mug")
        names = await store.alist_namespaces(prefix=("as",))
        await store.adelete(("as",), "k")
        return got, hits, names, await store.aget(("as",), "k")

    got, hits, names, gone = asyncio.run(main())
    assert got.value == {"text": "heat the mug"} and hits[0].key == "k" and names == [("as",)] and gone is None


def test_abatch_embeds_off_the_event_loop(store):
    async def main():
        loop_thread = threading.get_ident()
        THREADS.clear()
        await store.abatch([PutOp(("loop",), "k", {"text": "a text to embed"})])
        return loop_thread

    loop_thread = asyncio.run(main())
    assert THREADS and loop_thread not in THREADS


# ---------------------------------------------------------------- TTL


def _needs_ttl(store):
    if not store.supports_ttl:  # the control: LangGraph's InMemoryStore has no TTL
        pytest.xfail(f"{type(store).__name__} does not support TTL (put(ttl=...) raises NotImplementedError)")


def test_ttl_expires_items(store):
    _needs_ttl(store)
    ns = ("ttl",)
    store.put(ns, "short", {"v": 1}, ttl=1 / 30)  # minutes: 2 s
    store.put(ns, "long", {"v": 2}, ttl=60)
    assert store.get(ns, "short").value == {"v": 1}
    time.sleep(2.5)
    assert store.get(ns, "short") is None and store.get(ns, "long").value == {"v": 2}
    assert [i.key for i in store.search(ns)] == ["long"]


def test_ttl_refreshes_on_read(store):
    _needs_ttl(store)
    ns = ("ttl2",)
    store.put(ns, "k", {"v": 1}, ttl=1 / 30)  # 2 s
    for _ in range(3):
        time.sleep(1.0)
        assert store.get(ns, "k", refresh_ttl=True) is not None  # each read pushes expiry back
    time.sleep(2.5)
    assert store.get(ns, "k", refresh_ttl=False) is None
