"""Retrieval benchmark: SkillMemory.retrieve vs bare FAISS vs LangGraph's InMemoryStore, same vectors.

    python -m eval.bench.retrieval [--sizes 1000,10000,100000] [--queries 200] [--store-queries 5]

For each size: lessons are generated and inserted with `add_lessons_bulk` (HashingEmbedder
vectors, computed once and given to all three contenders); then per-query latency (p50,
p99, qps) of
  - skillmem: `memory.retrieve(goal, k=5, record=False)`: embed the query, check the
    high-water mark in SQL, search, MMR, fetch the rows from SQL, render within the budget
    (and `recorded`, the same with the retrievals rows written);
  - bare FAISS: embed the query, `IndexFlatIP.search(k=5)`: the floor;
  - InMemoryStore with an embedding index (`embed` returns the precomputed vectors);
and the process RSS growth, the bulk insert and the index rebuild times. Prints JSON last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from eval.bench.embed_index import sentences
from skillmem import Lesson, SkillMemory
from skillmem.embed import HashingEmbedder
from skillmem.retrieve import lesson_text

K = 5


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def latency(fn: Any, queries: Sequence[str]) -> dict[str, float]:
    fn(queries[0])  # warm up
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1000
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p99_ms": round(float(np.percentile(t, 99)), 3),
            "qps": round(len(t) / (t.sum() / 1000), 1), "queries": len(t)}


def make_lessons(n: int) -> list[Lesson]:
    triggers = sentences(n, seed=1)
    fixes = sentences(n, seed=2)
    # All general scope: one partition, so skillmem and bare FAISS search the same n vectors.
    return [Lesson(trigger=t, fix=f, scope="general", task_type="") for t, f in zip(triggers, fixes)]


def bench_size(n: int, n_queries: int, store_queries: int, workdir: Path) -> dict[str, Any]:
    emb = HashingEmbedder()
    lessons = make_lessons(n)
    texts = [lesson_text(lesson) for lesson in lessons]
    t0 = time.perf_counter()
    vectors = emb.encode(texts)
    embed_s = time.perf_counter() - t0
    queries = [f"{s} (query {i})" for i, s in enumerate(sentences(n_queries, seed=3))]
    out: dict[str, Any] = {"lessons": n, "embed_s": round(embed_s, 2)}

    # -- skillmem
    rss0 = rss_mb()
    mem = SkillMemory(str(workdir / f"bench-{n}.db"), embedder=emb, save_interval=1e9)
    t0 = time.perf_counter()
    mem.add_lessons_bulk(lessons, vectors=vectors)
    out["bulk_insert_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    mem.index_rebuild()  # from SQL rows and the vectors cached in the embeddings table (then saved)
    out["index_rebuild_s"] = round(time.perf_counter() - t0, 2)
    out["skillmem_rss_growth_mb"] = round(rss_mb() - rss0, 1)
    ours = latency(lambda q: mem.retrieve(q, k=K, k_demos=0, record=False), queries)
    recorded = latency(lambda q: mem.retrieve(q, k=K, k_demos=0, episode_id="bench"), queries)
    assert len(mem.retrieve(queries[0], k=K, record=False).lessons) == K

    # -- bare FAISS: same vectors, same query embedding, exact inner product
    rss0 = rss_mb()
    flat = faiss.IndexFlatIP(emb.dim)
    flat.add(vectors)
    out["faiss_rss_growth_mb"] = round(rss_mb() - rss0, 1)
    bare = latency(lambda q: flat.search(emb.encode([q]), K), queries)

    # -- LangGraph InMemoryStore with an embedding index over the same vectors
    from langgraph.store.base import PutOp
    from langgraph.store.memory import InMemoryStore

    by_text = {t: v for t, v in zip(texts, vectors)}

    def embed(batch: list[str]) -> list[list[float]]:
        return [(by_text[t] if t in by_text else emb.encode([t])[0]).tolist() for t in batch]

    rss0 = rss_mb()
    store = InMemoryStore(index={"dims": emb.dim, "embed": embed, "fields": ["text"]})
    t0 = time.perf_counter()
    for i in range(0, n, 5000):
        store.batch([PutOp(("lessons",), str(j), {"text": texts[j]}) for j in range(i, min(i + 5000, n))])
    out["inmemorystore_insert_s"] = round(time.perf_counter() - t0, 2)
    out["inmemorystore_rss_growth_mb"] = round(rss_mb() - rss0, 1)
    lg = latency(lambda q: store.search(("lessons",), query=q, limit=K), queries[: max(store_queries, 2)])

    out.update(skillmem=ours, skillmem_recorded=recorded, bare_faiss=bare, inmemorystore=lg)
    out["skillmem_over_faiss_p50"] = round(ours["p50_ms"] / bare["p50_ms"], 2)
    out["inmemorystore_over_skillmem_p50"] = round(lg["p50_ms"] / ours["p50_ms"], 1)
    mem.close()
    del store, flat
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--store-queries", type=int, default=5, help="queries for InMemoryStore (slow at 100k)")
    p.add_argument("--threads", type=int, default=1,
                   help="FAISS OpenMP threads (1: a single query gains nothing from more, and on a busy "
                        "machine the OpenMP barrier turns into ms-long stalls)")
    a = p.parse_args(argv)
    faiss.omp_set_num_threads(a.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="skillmem-bench-") as d:
        for n in [int(s) for s in a.sizes.split(",")]:
            r = bench_size(n, a.queries, a.store_queries, Path(d))
            print(f"{n:>7} lessons: skillmem p50 {r['skillmem']['p50_ms']} ms, bare FAISS {r['bare_faiss']['p50_ms']} "
                  f"ms, InMemoryStore {r['inmemorystore']['p50_ms']} ms, rebuild {r['index_rebuild_s']} s",
                  file=sys.stderr)
            results.append(r)
    summary = {
        "benchmark": "retrieval",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "faiss": faiss.__version__,
                    "faiss_threads": faiss.omp_get_max_threads()},
        "k": K,
        "embedder": "hashing-384 (precomputed vectors shared by all three)",
        "results": results,
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
