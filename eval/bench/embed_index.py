"""Throughput check for embeddings and the vector index (a measurement to report, not a test).

    python -m eval.bench.embed_index [--sentences 2000] [--index-n 100000] [--skip-model]

Measures SentenceTransformerEmbedder.encode against a bare SentenceTransformer.encode
at the same batch size (their ratio is skillmem's overhead), a warm CachedEmbedder, the
HashingEmbedder, and exact-search latency of one query against a 100k x 384 partition.
Prints a JSON object last.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence

import faiss
import numpy as np

from skillmem.embed import CachedEmbedder, HashingEmbedder, SentenceTransformerEmbedder
from skillmem.index import VectorIndex

OBJECTS = ["apple", "mug", "cup", "knife", "pen", "book", "towel", "egg", "potato", "lettuce", "soapbar", "keychain"]
PLACES = ["fridge 1", "microwave 1", "sinkbasin 1", "drawer 3", "countertop 2", "cabinet 4", "shelf 1", "desk 1"]
VERBS = ["take the {o} from the {p}", "put a clean {o} in the {p}", "heat the {o} with the {p}",
         "go to the {p} and look for a {o}", "the {o} is not in the {p}; try another place",
         "cool some {o} and put it on the {p}", "examine the {o} under the desklamp near the {p}"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """`n` distinct household-task sentences of varied length (no download)."""
    rng = np.random.default_rng(seed)
    # Drawn in bulk (one rng call per column, not per word): a million sentences in seconds.
    verbs = rng.integers(0, len(VERBS), (n, 4))
    objs = rng.integers(0, len(OBJECTS), (n, 4))
    places = rng.integers(0, len(PLACES), (n, 4))
    out = []
    for i in range(n):
        parts = [VERBS[verbs[i, j]].format(o=OBJECTS[objs[i, j]], p=PLACES[places[i, j]]) for j in range(1 + i % 4)]
        out.append(f"step {i}: " + ", then ".join(parts))
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_embedder(n: int, batch_size: int, repeats: int) -> dict:
    texts = sentences(n)
    t0 = time.perf_counter()
    ours = SentenceTransformerEmbedder(batch_size=batch_size)
    load_s = time.perf_counter() - t0
    bare = ours.model
    ours.encode(texts[:batch_size])  # warm up both paths
    bare.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
    t_ours, t_bare = [], []
    for r in range(repeats):
        # Alternate the order so neither side always runs on a warmer machine.
        runs = [("ours", lambda: ours.encode(texts)),
                ("bare", lambda: bare.encode(texts, batch_size=batch_size, show_progress_bar=False))]
        for name, fn in runs if r % 2 == 0 else runs[::-1]:
            (t_ours if name == "ours" else t_bare).append(timed(fn))
    cached = CachedEmbedder(ours)
    cold = timed(lambda: cached.encode(texts))
    warm = timed(lambda: cached.encode(texts))
    return {
        "model": ours.name,
        "sentences": n,
        "batch_size": batch_size,
        "model_load_s": round(load_s, 2),
        "ours_s": round(min(t_ours), 3),
        "bare_s": round(min(t_bare), 3),
        "ratio_ours_over_bare": round(min(t_ours) / min(t_bare), 3),
        "ours_sentences_per_s": round(n / min(t_ours), 1),
        "cached_cold_s": round(cold, 3),
        "cached_warm_s": round(warm, 4),
    }


def bench_hashing(n: int, dim: int) -> dict:
    texts = sentences(n, seed=1)
    emb = HashingEmbedder(dim)
    secs = timed(lambda: emb.encode(texts))
    return {"texts": n, "dim": dim, "s": round(secs, 2), "texts_per_s": round(n / secs, 1)}


def bench_index(n: int, dim: int, queries: int) -> dict:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(dim)
    add_s = timed(lambda: index.add("bench/lesson/general", np.arange(n), vecs))
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    index.search("bench/lesson/general", q[:5], 10)  # warm up
    lat = []
    for i in range(queries):
        t0 = time.perf_counter()
        index.search("bench/lesson/general", q[i : i + 1], 10)
        lat.append(time.perf_counter() - t0)
    batch_s = timed(lambda: index.search("bench/lesson/general", q, 10))
    lat_ms = np.array(lat) * 1000
    return {
        "n": n,
        "dim": dim,
        "device": index.device,
        "k": 10,
        "add_s": round(add_s, 3),
        "single_query_p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
        "single_query_p95_ms": round(float(np.percentile(lat_ms, 95)), 3),
        "batched_queries_per_s": round(queries / batch_s, 1),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=2000, help="sentences to embed")
    ap.add_argument("--batch-size", type=int, default=64, help="batch size for both encoders")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each encoder; the fastest counts")
    ap.add_argument("--hashing-texts", type=int, default=20_000, help="texts for the hashing embedder")
    ap.add_argument("--index-n", type=int, default=100_000, help="vectors in the searched partition")
    ap.add_argument("--dim", type=int, default=384, help="vector dimension for the index check")
    ap.add_argument("--queries", type=int, default=200, help="single queries timed")
    ap.add_argument("--skip-model", action="store_true", help="skip the sentence-transformers part")
    args = ap.parse_args(argv)
    result = {
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
    }
    if not args.skip_model:
        import torch

        result["torch_threads"] = torch.get_num_threads()
        result["embed"] = bench_embedder(args.sentences, args.batch_size, args.repeats)
    result["hashing"] = bench_hashing(args.hashing_texts, args.dim)
    result["index"] = bench_index(args.index_n, args.dim, args.queries)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
