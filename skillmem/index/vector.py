"""The FAISS vector index over skill-memory embeddings: a cache of the SQL rows, never the truth.

Vectors are unit-norm, so inner product is cosine. Each partition (e.g.
"ns/lesson/general") is searched exactly (`IndexIDMap2(IndexFlatIP)`) while it holds up
to `exact_max` vectors (4,096 by default), and approximately above that, by an inverted
file (`IndexIVFScalarQuantizer`: about 4 sqrt(n) lists of 8-bit codes, `probes` of them
searched, an HNSW graph over the centroids choosing them from 1,024 lists up). The codes
choose candidates, a quarter of the bytes of float32 to stream through the cache; the best
`refine_k(k)` of them are re-scored with their float vectors, kept by id beside the lists
(`_float_store`), so scores and `vectors` are exact and recall@5 against exact search is
that of float lists (measured by `python -m eval bench retrieval`). Every partition is keyed
by the SQL rows' int64 ids and supports add, remove and reconstruct, so a new or retired
lesson is applied in place. An inverted file is retrained (its lists re-cut) when its
partition has grown `RETRAIN_GROWTH` times past the size it was trained at: amortized O(1)
per add.

When faiss sees a GPU, searches run on a GPU mirror of each partition (flat, or IVF
with the same lists); the CPU copy stays the truth for add/remove/reconstruct/save. The
GPU path cannot run on a faiss-cpu build and is untested here.

`save`/`load` persist the index with a checksummed manifest, and `load` raises
`IndexCorrupt` whenever the files cannot be trusted, so the caller rebuilds from SQL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class _LazyFaiss:
    """FAISS, imported on first use: `import skillmem` and recording alone never load it."""

    def __getattr__(self, name: str) -> Any:
        import faiss as module

        globals()["faiss"] = module
        return getattr(module, name)


faiss: Any = _LazyFaiss()

MANIFEST = "manifest.json"
FORMAT = "skillmem-vector-index"
# 3: approximate partitions are IndexIVFScalarQuantizer (8-bit); 2: IndexIVFFlat; 1: all flat.
# All three load (an older inverted file is searched as it was saved, until it is re-cut).
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# GPU flat search only supports k up to this (faiss GPU_MAX_SELECTION_K); larger k searches on CPU.
GPU_MAX_K = 2048
# Partitions up to this many vectors are searched exactly; larger ones by an inverted file.
# An exact scan streams every vector through the cache (6 MB here, 15 MB at 10k), and the
# retrieval's own work after it then runs on a cold cache: at 10k items the fixed cost around
# the search was 0.57 ms exact against 0.3 ms with the inverted file (measured by the benchmark).
EXACT_MAX = 4096
# An inverted file is re-cut when its partition has grown this many times past its training size.
RETRAIN_GROWTH = 4
# Lists probed per query (of about 4 sqrt(n)), at least: recall@5 0.97-0.99 at 100k (measured by
# the benchmark); a large file probes more (`VectorIndex.probes`).
DEFAULT_NPROBE = 40
KINDS = ("auto", "exact", "ivf")
# The last this-many vectors added to an inverted file are also kept in an exact buffer that
# every search scans: a new item is found at once even when it lies far from the lists the
# query probes (an outlier lesson, and its own text as the query, can fall in different lists).
FRESH_MAX = 4096
REFINE_MIN = 32  # an 8-bit inverted file re-scores at least this many candidates per query
FEW_QUERIES = 16  # searches of up to this many queries run on the calling thread alone
MIN_IVF = 64 * 40  # the fewest vectors an inverted file is trained on (64 lists x 40 points)


class IndexCorrupt(Exception):
    """A saved index cannot be trusted; rebuild it from the SQL store."""


def _gpus_available() -> int:
    # faiss-cpu builds have get_num_gpus() returning 0; very old builds may lack it.
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == "cpu":
        return "cpu"
    n = _gpus_available()
    if device == "gpu" and n == 0:
        raise RuntimeError(
            "device='gpu' but faiss sees no GPU (this is a faiss-cpu build or no device is visible); "
            "install a GPU build of faiss, or use device='auto' or 'cpu'"
        )
    return "gpu" if n > 0 else "cpu"


def _new_partition(dim: int) -> faiss.IndexIDMap2:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _float_store(dim: int) -> Any:
    """The float32 vectors of an 8-bit inverted file, by id: what its candidates are re-scored
    with and what `vectors` returns. One inverted list with a hashtable of ids: add, remove
    and reconstruct by id each cost O(1) per id (a flat id map's remove moves every vector
    after the removed one: ~1.5 GB at a million)."""
    one = faiss.IndexFlatIP(dim)
    one.add(np.zeros((1, dim), dtype=np.float32))
    store = faiss.IndexIVFFlat(one, dim, 1, faiss.METRIC_INNER_PRODUCT)
    store.is_trained = True
    store.set_direct_map_type(faiss.DirectMap.Hashtable)
    return store


def _is_ivf(index: Any) -> bool:
    # IndexIVFScalarQuantizer (8-bit codes, what is built now) or IndexIVFFlat (older saves).
    return isinstance(index, faiss.IndexIVF)


def _norms(x: np.ndarray) -> np.ndarray:
    # Row norms without an (n, dim) temporary: at a million rows np.linalg.norm took seconds.
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def _ids_selector(ids: np.ndarray) -> Any:
    # An inverted file's hashtable direct map removes by looking ids up, which faiss allows
    # only through an IDSelectorArray (the array must outlive the call: the caller keeps it).
    return faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids))


def _all_vectors(index: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of every item of a partition, in storage order."""
    if _is_ivf(index):
        inv = index.invlists
        ids, vecs = [], []
        for lst in range(index.nlist):
            size = inv.list_size(lst)
            if size:
                ids.append(faiss.rev_swig_ptr(inv.get_ids(lst), size).copy())
                codes = faiss.rev_swig_ptr(inv.get_codes(lst), size * index.code_size).copy()
                if isinstance(index, faiss.IndexIVFScalarQuantizer):
                    vecs.append(index.sq.decode(codes.reshape(size, index.code_size)))
                else:
                    vecs.append(codes.view(np.float32).reshape(size, dim))
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return np.concatenate(ids).astype(np.int64), np.concatenate(vecs)
    flat = faiss.downcast_index(index.index)
    n = int(index.ntotal)
    vecs = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim).copy() if n else np.zeros((0, dim), np.float32)
    return faiss.vector_to_array(index.id_map).astype(np.int64, copy=True), vecs


def _merge_hits(s1: np.ndarray, i1: np.ndarray, s2: np.ndarray, i2: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` of two result sets per query, each id once (the buffer repeats the inverted file)."""
    s_out = np.full((len(s1), k), -np.inf, dtype=np.float32)
    i_out = np.full((len(s1), k), -1, dtype=np.int64)
    for q in range(len(s1)):
        best: dict[int, float] = {}
        for sc, i in zip(np.concatenate([s1[q], s2[q]]).tolist(), np.concatenate([i1[q], i2[q]]).tolist()):
            if i >= 0 and sc > best.get(i, -np.inf):
                best[i] = sc
        top = sorted(best.items(), key=lambda x: (-x[1], x[0]))[:k]
        s_out[q, :len(top)] = [x[1] for x in top]
        i_out[q, :len(top)] = [x[0] for x in top]
    return s_out, i_out


def refine_k(k: int) -> int:
    """Candidates taken from an 8-bit inverted file's codes for `k` results, re-scored exactly
    (32 for the top 5, where recall is measured; 48 for retrieval's 32 MMR candidates)."""
    return max(int(k) + 16, REFINE_MIN)


def nlist_for(n: int) -> int:
    """Inverted lists for `n` vectors: about 4 sqrt(n). Four times more lists than sqrt(n)
    scan half as many vectors for the same recall (measured at 100k: 316 lists need 16
    probes, 5% of the vectors, for recall@5 0.97; 1,264 lists 32 probes, 2.5%)."""
    return int(min(4096, max(64, round(4 * math.sqrt(n)))))


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k unit centroids of unit vectors `x` (spherical k-means, 10 rounds: enough to place
    inverted lists, a tenth of faiss's default cost)."""
    km = faiss.Kmeans(x.shape[1], k, niter=10, seed=seed, spherical=True, min_points_per_centroid=1,
                      max_points_per_centroid=1 << 30)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.centroids


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    flat = faiss.IndexFlatIP(centroids.shape[1])
    flat.add(np.ascontiguousarray(centroids))
    out = np.empty(len(x), dtype=np.int64)
    for i in range(0, len(x), 100_000):  # in slices: the distance buffers stay small
        out[i:i + 100_000] = flat.search(np.ascontiguousarray(x[i:i + 100_000]), 1)[1][:, 0]
    return out


# From this many lists up, the lists are cut and filled in two levels (below).
TWO_LEVEL_FROM = 1024


def _two_level(sample: np.ndarray, vecs: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, the list of each vector) for `nlist` lists, cut in two levels: about
    sqrt(nlist) top groups, then each group's share of lists within it. A flat k-means (and
    a flat assignment) compares every point with every list: at 1M vectors and 4,096 lists
    that is ~1.5 TFLOP, minutes here; two levels compare with ~2 sqrt(nlist) of them."""
    top = int(round(math.sqrt(nlist)))
    groups = _kmeans(sample, top, seed=1234)
    of_sample = _nearest(sample, groups)
    sizes = np.bincount(of_sample, minlength=top)
    # Lists per group in proportion to its share of the sample, at most one per point, the
    # remainder to the largest groups.
    share = np.minimum(np.floor(sizes / max(sizes.sum(), 1) * nlist).astype(int), sizes)
    for g in np.argsort(-sizes, kind="stable"):
        if share.sum() >= nlist:
            break
        share[g] += min(nlist - share.sum(), sizes[g] - share[g])
    centroids, offset = [], np.zeros(top + 1, dtype=np.int64)
    for g in range(top):
        pts = sample[of_sample == g]
        c = pts[:share[g]] if share[g] >= len(pts) else _kmeans(pts, int(share[g]), seed=1234 + g)
        centroids.append(np.asarray(c, dtype=np.float32).reshape(-1, sample.shape[1]))
        offset[g + 1] = offset[g] + len(centroids[-1])
    of_vec = _nearest(vecs, groups)
    lists = np.empty(len(vecs), dtype=np.int64)
    for g in range(top):
        rows = np.flatnonzero(of_vec == g)
        if len(rows) == 0:
            continue
        if len(centroids[g]) == 0:  # a group the sample left without lists: its nearest group's
            lists[rows] = _nearest(vecs[rows], np.concatenate(centroids))
            continue
        lists[rows] = offset[g] + _nearest(vecs[rows], centroids[g])
    return np.concatenate(centroids), lists


def _train_ivf(dim: int, ids: np.ndarray, vecs: np.ndarray, *, graph_quantizer: bool = True
               ) -> faiss.IndexIVFScalarQuantizer:
    nlist = nlist_for(len(ids))
    # 32 points a list place the lists well enough for recall (measured by the benchmark);
    # a fixed seed makes a rebuild of the same rows give the same lists.
    rng = np.random.default_rng(0)
    per_list = 32
    sample = vecs if len(vecs) <= per_list * nlist else \
        vecs[np.sort(rng.choice(len(vecs), per_list * nlist, replace=False))]
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    lists = None
    if nlist >= TWO_LEVEL_FROM:
        centroids, lists = _two_level(sample, vecs, nlist)
    else:
        centroids = _kmeans(sample, nlist, seed=1234)
    nlist = len(centroids)
    if graph_quantizer and nlist >= TWO_LEVEL_FROM:
        # Which lists to probe (every search) and where a new vector goes (every add): a small
        # HNSW graph over the centroids finds them in ~50 us where a scan of 4,096 costs ~300.
        quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        quantizer.hnsw.efConstruction = 80
        quantizer.add(centroids)
        quantizer.hnsw.efSearch = 128
    else:
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(centroids)
    # 8-bit codes, one range per dimension (trained on the sample), of the vectors themselves
    # (not of their residuals, so a list's scan needs no per-list term): a search streams a
    # quarter of the bytes of float32 through the cache, which is what it costs; the cosines
    # come out within ~1e-3 and the best candidates are re-scored with the float vectors kept
    # beside the lists, so storage is about 1.25x float32, not less (recall@5: the benchmark).
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT, False)
    ivf.sq.train(sample)
    ivf.is_trained = True
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct and remove by id
    if lists is None:
        lists = _nearest(vecs, centroids)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    for i in range(0, len(ids), 200_000):
        x = np.ascontiguousarray(vecs[i:i + 200_000], dtype=np.float32)
        xi, li = ids[i:i + 200_000], np.ascontiguousarray(lists[i:i + 200_000])
        ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(xi), faiss.swig_ptr(li))
    return ivf


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: Any) -> None:
    """Write `data` to `path` so a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class VectorIndex:
    """Named partitions of cosine search over unit vectors with stable int64 ids.

    `kind`: "auto" (exact up to `exact_max` vectors a partition, an inverted file above),
    "exact" (always exact, whatever the size), or "ivf" (an inverted file from
    `MIN_IVF` vectors up: below that k-means cannot place 64 lists). `nprobe`: lists an
    inverted file searches per query (more: better recall, slower).

    Thread-safe: one re-entrant lock covers every mutation and search, so a reader never
    sees a half-added item.
    """

    def __init__(self, dim: int, device: str = "auto", *, kind: str = "auto", exact_max: int = EXACT_MAX,
                 nprobe: int = DEFAULT_NPROBE):
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if int(nprobe) < 1 or int(exact_max) < 0:
            raise ValueError(f"nprobe must be >= 1 and exact_max >= 0, got {nprobe}, {exact_max}")
        self.dim = int(dim)
        self.device = _resolve_device(device)  # "cpu" or "gpu"
        self.kind = kind
        # A partition with more vectors than this is an inverted file.
        self.approx_from = {"auto": int(exact_max), "exact": 1 << 62, "ivf": MIN_IVF}[kind]
        self.nprobe = int(nprobe)
        self._parts: dict[str, Any] = {}  # partition -> IndexIDMap2 (exact) or an inverted file
        self._trained: dict[str, int] = {}  # ivf partition -> vectors it was trained on
        self._fresh: dict[str, tuple[Any, dict[int, None]]] = {}  # ivf partition -> (exact buffer, ids by age)
        self._floats: dict[str, Any] = {}  # 8-bit ivf partition -> its float vectors (`_float_store`)
        # partition -> (GPU index, id of each row position or None); dropped on change, rebuilt on search.
        self._gpu: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.RLock()

    def probes(self, nlist: int) -> int:
        """Lists searched per query in a file of `nlist` lists: `nprobe`, or a 64th of the
        lists if that is more (at a million items, 4,096 lists: 40 probes give recall@5
        0.948 against exact search, 64 give 0.981; measured with the hashing embedder)."""
        return min(max(self.nprobe, nlist // 64), nlist)

    # --- validation ---

    def _as_vectors(self, x: Any, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1 and x.shape[0] == self.dim:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{what} must have shape (n, {self.dim}), got {x.shape}")
        return np.ascontiguousarray(x)

    @staticmethod
    def _as_ids(ids: Any) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim == 0:
            ids = ids[None]
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-d sequence of integers, got shape {ids.shape} dtype {ids.dtype}")
        return np.ascontiguousarray(ids, dtype=np.int64)

    # --- mutation ---

    def add(self, partition: str, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add unit `vectors` under `ids` to `partition`; an id already there is replaced."""
        ids = self._as_ids(ids)
        vectors = self._as_vectors(vectors, "vectors")
        if len(ids) != len(vectors):
            raise ValueError(f"got {len(ids)} ids for {len(vectors)} vectors")
        if len(ids) == 0:
            return
        if ids.min() < 0:
            raise ValueError("ids must be >= 0 (-1 marks a missing result in search)")
        norms = _norms(vectors)
        if np.abs(norms - 1.0).max() > 1e-2:
            raise ValueError(
                f"vectors must be L2-normalized so inner product is cosine; got norms from "
                f"{norms.min():.4f} to {norms.max():.4f} (use an Embedder from skillmem.embed, or divide by the norm)"
            )
        # The same id twice in one call: the last one wins, as if added one by one.
        _, last_rev = np.unique(ids[::-1], return_index=True)
        if len(last_rev) != len(ids):
            keep = np.sort(len(ids) - 1 - last_rev)
            ids, vectors = ids[keep], vectors[keep]
        with self._lock:
            index = self._parts.get(partition)
            if index is None and len(ids) > max(self.approx_from, MIN_IVF - 1):
                # A bulk load (a rebuild): cut the lists from these vectors at once, with no
                # exact copy first and no buffer (every vector was in view of the training).
                self._set_ivf(partition, ids, vectors)
                return
            if index is None:
                index = self._parts[partition] = _new_partition(self.dim)
            else:
                self._remove(partition, index, ids)
                self._unfresh(partition, ids)
            index.add_with_ids(vectors, ids)
            floats = self._floats.get(partition)
            if floats is not None:
                floats.add_with_ids(vectors, ids)
            if _is_ivf(index):
                self._add_fresh(partition, ids, vectors)
            self._gpu.pop(partition, None)
            self._reshape(partition)

    def _add_fresh(self, partition: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        buf, order = self._fresh.setdefault(partition, (_new_partition(self.dim), {}))
        ids, vectors = ids[-FRESH_MAX:], vectors[-FRESH_MAX:]
        buf.add_with_ids(vectors, ids)
        order.update(dict.fromkeys(ids.tolist()))
        if len(order) > FRESH_MAX:  # the oldest leave the buffer; the inverted file still holds them
            old = np.array(list(order)[: len(order) - FRESH_MAX], dtype=np.int64)
            buf.remove_ids(old)
            for i in old.tolist():
                del order[i]

    def _unfresh(self, partition: str, ids: np.ndarray) -> None:
        fresh = self._fresh.get(partition)
        if fresh is not None:
            fresh[0].remove_ids(ids)
            for i in ids.tolist():
                fresh[1].pop(i, None)

    def _remove(self, partition: str, index: Any, ids: np.ndarray) -> int:
        if _is_ivf(index):
            floats = self._floats.get(partition)
            if floats is not None:
                floats.remove_ids(_ids_selector(ids))
            return int(index.remove_ids(_ids_selector(ids)))  # absent ids are ignored
        return int(index.remove_ids(ids))

    def _stored(self, partition: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float vectors) of every item of a partition."""
        index = self._parts[partition]
        floats = self._floats.get(partition)
        return _all_vectors(index if floats is None else floats, self.dim)

    def _set_ivf(self, partition: str, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Make `partition` an 8-bit inverted file cut from (and holding) exactly these vectors."""
        ivf = _train_ivf(self.dim, ids, vecs, graph_quantizer=self.device == "cpu")
        floats = _float_store(self.dim)
        for i in range(0, len(ids), 200_000):
            floats.add_with_ids(np.ascontiguousarray(vecs[i:i + 200_000]), np.ascontiguousarray(ids[i:i + 200_000]))
        self._parts[partition], self._floats[partition] = ivf, floats
        self._trained[partition] = len(ids)
        self._fresh.pop(partition, None)  # the lists were just cut with every vector in view
        self._gpu.pop(partition, None)

    def _reshape(self, partition: str) -> None:
        """Switch a partition between exact and inverted file, or re-cut its lists, as its size asks."""
        index = self._parts[partition]
        n = int(index.ntotal)
        if not _is_ivf(index):
            if n > self.approx_from:
                self._to_ivf(partition, index)
        elif n < self.approx_from // 2:  # shrunk well below the line (hysteresis): exact again
            ids, vecs = self._stored(partition)
            flat = _new_partition(self.dim)
            flat.add_with_ids(vecs, ids)
            self._parts[partition] = flat
            self._trained.pop(partition, None)
            self._fresh.pop(partition, None)
            self._floats.pop(partition, None)
        elif n > RETRAIN_GROWTH * self._trained.get(partition, n):
            log.info("skillmem index: re-cutting %s (%d vectors, trained at %d)", partition, n,
                     self._trained[partition])
            self._to_ivf(partition, index)

    def _to_ivf(self, partition: str, index: Any) -> None:
        ids, vecs = self._stored(partition)
        self._set_ivf(partition, ids, vecs)

    def remove(self, partition: str, ids: Sequence[int] | np.ndarray) -> int:
        """Remove `ids` from `partition` (absent ids are ignored); returns how many were removed."""
        ids = self._as_ids(ids)
        with self._lock:
            index = self._parts.get(partition)
            if index is None or len(ids) == 0:
                return 0
            removed = self._remove(partition, index, ids)
            self._unfresh(partition, ids)
            if removed:
                self._gpu.pop(partition, None)
                self._reshape(partition)
            return removed

    def kind_of(self, partition: str) -> str:
        """"exact" or "ivf": how `partition` is searched now ("exact" if it does not exist)."""
        with self._lock:
            return "ivf" if _is_ivf(self._parts.get(partition)) else "exact"

    # --- reading ---

    def search(self, partition: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` cosine neighbours of each query: (scores (m, k) float32, ids (m, k) int64).

        Slots past the partition's size (or all, for an empty or unknown partition) hold
        id -1 and score -inf.
        """
        queries = self._as_vectors(queries, "queries")
        m, k = len(queries), max(int(k), 0)
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        ids = np.full((m, k), -1, dtype=np.int64)
        with self._lock:
            index = self._parts.get(partition)
            if index is None or index.ntotal == 0 or m == 0 or k == 0:
                return scores, ids
            if partition in self._floats:  # 8-bit codes: candidates, re-scored exactly
                for j in range(m):
                    s, found, _ = self._refined(partition, index, queries[j:j + 1], k)
                    scores[j, :len(found)], ids[j, :len(found)] = s, found
                return scores, ids
            kk = min(k, index.ntotal)
            ivf = _is_ivf(index)
            if ivf:
                index.nprobe = self.probes(index.nlist)
            if self.device == "gpu" and kk <= GPU_MAX_K:
                gpu_index, row_ids = self._gpu_mirror(partition)
                s, rows = gpu_index.search(queries, kk)
                found = rows if row_ids is None else np.where(rows >= 0, row_ids[np.maximum(rows, 0)], -1)
            elif m <= FEW_QUERIES:
                s, found = self._search_one_thread(index, queries, kk)
            else:
                s, found = index.search(queries, kk)
            fresh = self._fresh.get(partition) if ivf else None
            if fresh is not None and fresh[0].ntotal:
                s, found = _merge_hits(s, found, *self._search_one_thread(fresh[0], queries, min(kk, fresh[0].ntotal)),
                                       kk)
        scores[:, :kk] = s
        ids[:, :kk] = found
        scores[ids < 0] = -np.inf
        return scores, ids

    def _refined(self, partition: str, index: Any, q: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-`k` of one query in an 8-bit inverted file: its best `refine_k(k)` by codes and
        the fresh buffer's best, re-scored with their float vectors (scores, ids, vectors).

        The codes alone order near neighbours wrongly (recall@5 0.92 at 100k where the
        float lists have 0.975), but the true top five are among their top 32 as often as
        the float lists find them; re-scoring those costs ~20 us."""
        index.nprobe = self.probes(index.nlist)
        kc = min(refine_k(k), int(index.ntotal))
        if self.device == "gpu" and kc <= GPU_MAX_K:
            cand = self._gpu_mirror(partition)[0].search(q, kc)[1][0]
        else:
            cand = self._one_thread(index.search, q, kc)[1][0]
        fresh = self._fresh.get(partition)
        if fresh is not None and fresh[0].ntotal:
            recent = self._one_thread(fresh[0].search, q, min(k, fresh[0].ntotal))[1][0]
            cand = np.unique(np.concatenate([cand, recent]))  # the buffer repeats items of the lists
        cand = cand[cand >= 0]
        if len(cand) == 0:
            return np.zeros(0, np.float32), cand, np.zeros((0, self.dim), np.float32)
        vecs = self._floats[partition].reconstruct_batch(cand)
        s = vecs @ q[0]
        order = np.lexsort((cand, -s))[:k]  # best first, ties to the lower id
        return s[order], cand[order], vecs[order]

    def search_one(self, partition: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-`k` of one query with the hits' stored vectors: (scores (h,), ids (h,), vectors (h, dim)).

        Only real hits (h <= k), best first. The retrieval path: one call into faiss
        (search and reconstruct together) and no padding, since every microsecond here is
        paid at every agent step.
        """
        q = query if (query.dtype == np.float32 and query.ndim == 2 and query.flags.c_contiguous) else \
            self._as_vectors(query, "query")
        if q.shape != (1, self.dim):
            raise ValueError(f"query must have shape (1, {self.dim}), got {q.shape}")
        with self._lock:
            index = self._parts.get(partition)
            n = 0 if index is None else index.ntotal
            if n == 0 or k <= 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
            if partition in self._floats:
                return self._refined(partition, index, q, int(k))
            kk = min(int(k), n)
            ivf = _is_ivf(index)
            if self.device == "gpu" and kk <= GPU_MAX_K:
                s, found = self.search(partition, q, kk)
                s, found = s[0], found[0]
                keep = found >= 0
                s, found = s[keep], found[keep]
                return s, found, (index.reconstruct_batch(found) if len(found) else
                                  np.zeros((0, self.dim), np.float32))
            if ivf:
                index.nprobe = self.probes(index.nlist)
            s, found, vecs = self._one_thread(index.search_and_reconstruct, q, kk)
            s, found, vecs = s[0], found[0], vecs[0]
            fresh = self._fresh.get(partition) if ivf else None
            if fresh is not None and fresh[0].ntotal:
                fs, fi, fv = self._one_thread(fresh[0].search_and_reconstruct, q, min(kk, fresh[0].ntotal))
                s, found, vecs = np.concatenate([s, fs[0]]), np.concatenate([found, fi[0]]), np.concatenate([vecs, fv[0]])
                # The buffer repeats items of the inverted file: each id once, best first.
                order = np.lexsort((found, -s))
                s, found, vecs = s[order], found[order], vecs[order]
                _, first = np.unique(found, return_index=True)
                first.sort()
                s, found, vecs = s[first][:kk], found[first][:kk], vecs[first][:kk]
        keep = found >= 0
        if not keep.all():
            s, found, vecs = s[keep], found[keep], vecs[keep]
        return s, found, vecs

    @staticmethod
    def _one_thread(call: Any, q: np.ndarray, k: int) -> Any:
        threads = faiss.omp_get_max_threads()
        if threads == 1:
            return call(q, k)
        faiss.omp_set_num_threads(1)  # see _search_one_thread
        try:
            return call(q, k)
        finally:
            faiss.omp_set_num_threads(threads)

    @staticmethod
    def _search_one_thread(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # A few queries gain nothing from OpenMP threads, and on a busy machine their barrier
        # costs milliseconds (measured: 54 ms for one query over 200 vectors at load 40,
        # 0.05 ms on one thread). The setting is this thread's only.
        if len(queries) > FEW_QUERIES:
            return index.search(queries, k)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return index.search(queries, k)
        finally:
            faiss.omp_set_num_threads(threads)

    def _gpu_mirror(self, partition: str) -> tuple[Any, Any]:
        """The GPU copy of a partition used for search, rebuilt after any change.

        GPU builds do not support remove_ids/reconstruct on every index type, so the GPU
        holds only what search needs: a plain flat index of the rows (the id of each row
        comes from the CPU copy's id map), or the inverted file itself (its lists carry
        the ids), probing as many lists as the CPU copy would.
        """
        mirror = self._gpu.get(partition)
        if mirror is None:
            cpu = self._parts[partition]
            if _is_ivf(cpu):
                if not isinstance(faiss.downcast_index(cpu.quantizer), faiss.IndexFlat):
                    # Built on a CPU with a graph over the centroids (loaded from disk): the GPU
                    # inverted file wants a flat quantizer, so the mirror gets one, same lists.
                    flat_q = faiss.IndexFlatIP(self.dim)
                    flat_q.add(cpu.quantizer.reconstruct_n(0, cpu.nlist))
                    if isinstance(cpu, faiss.IndexIVFScalarQuantizer):
                        twin = faiss.IndexIVFScalarQuantizer(flat_q, self.dim, cpu.nlist, cpu.sq.qtype,
                                                             faiss.METRIC_INNER_PRODUCT, False)
                        twin.sq = cpu.sq
                    else:
                        twin = faiss.IndexIVFFlat(flat_q, self.dim, cpu.nlist, faiss.METRIC_INNER_PRODUCT)
                    twin.is_trained = True
                    twin.replace_invlists(cpu.invlists, False)
                    twin.ntotal = cpu.ntotal
                    cpu = twin
                gpu = faiss.index_cpu_to_all_gpus(cpu)
                space = getattr(faiss, "GpuParameterSpace", faiss.ParameterSpace)()  # absent from faiss-cpu
                space.set_index_parameter(gpu, "nprobe", self.probes(cpu.nlist))
                mirror = self._gpu[partition] = (gpu, None)
            else:
                flat = faiss.downcast_index(cpu.index)
                row_ids = faiss.vector_to_array(cpu.id_map).astype(np.int64, copy=True)
                mirror = self._gpu[partition] = (faiss.index_cpu_to_all_gpus(flat), row_ids)
        return mirror

    def vectors(self, partition: str, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored vectors of `ids`, shape (len(ids), dim); KeyError if one is not in `partition`."""
        ids = self._as_ids(ids)
        with self._lock:
            index = self._parts.get(partition)
            if index is None:
                if len(ids):
                    raise KeyError(f"partition {partition!r} does not exist")
                return np.zeros((0, self.dim), dtype=np.float32)
            if len(ids) == 0:
                return np.zeros((0, self.dim), dtype=np.float32)
            index = self._floats.get(partition, index)  # an 8-bit file's floats, not its codes
            try:  # one call into faiss: a loop of reconstruct() costs ~10 µs per id
                return index.reconstruct_batch(ids)
            except RuntimeError:
                pass  # an id is missing: find which, below
            out = np.empty((len(ids), self.dim), dtype=np.float32)
            for i, id_ in enumerate(ids):
                try:
                    out[i] = index.reconstruct(int(id_))
                except RuntimeError:
                    raise KeyError(f"id {int(id_)} is not in partition {partition!r}") from None
            return out

    def count(self, partition: str) -> int:
        """Number of vectors in `partition` (0 if it does not exist)."""
        with self._lock:
            index = self._parts.get(partition)
            return 0 if index is None else int(index.ntotal)

    def partitions(self) -> list[str]:
        """Names of all partitions, sorted (including ones emptied by remove)."""
        with self._lock:
            return sorted(self._parts)

    def ids(self, partition: str) -> np.ndarray:
        """The ids stored in `partition`, in storage order (empty if it does not exist)."""
        with self._lock:
            index = self._parts.get(partition)
            if index is None:
                return np.zeros(0, dtype=np.int64)
            if _is_ivf(index):
                return _all_vectors(self._floats.get(partition, index), self.dim)[0]
            return faiss.vector_to_array(index.id_map).astype(np.int64, copy=True)

    def __repr__(self) -> str:
        with self._lock:
            sizes = {p: int(ix.ntotal) for p, ix in sorted(self._parts.items())}
        return f"VectorIndex(dim={self.dim}, device={self.device!r}, kind={self.kind!r}, partitions={sizes})"

    # --- persistence ---

    def save(self, directory: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
        """Persist every partition and a manifest holding `meta`, counts and sha256 checksums.

        Partition files are written first under content-derived names, the manifest last;
        each with write-to-temp + os.replace. A crash mid-save leaves the previous manifest
        and its files intact, and stale partition files are deleted only after the new
        manifest is in place.
        """
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise TypeError(f"index meta must be JSON-serializable: {e}") from e
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        # Snapshot in memory under the lock (a memcpy), then write without blocking searches.
        # serialize_index produces exactly the bytes faiss.write_index would write (a numpy
        # array, hashed and written as it is: no second copy of a gigabyte).
        with self._lock:
            blobs = {p: (faiss.serialize_index(ix), int(ix.ntotal), self._trained.get(p),
                         faiss.serialize_index(self._floats[p]) if p in self._floats else None)
                     for p, ix in self._parts.items()}
        entries: dict[str, dict[str, Any]] = {}

        def write(i: int, data: np.ndarray, suffix: str = "") -> dict[str, Any]:
            digest = hashlib.sha256(data).hexdigest()
            fname = f"part-{i:04d}{suffix}-{digest[:16]}.faiss"
            _write_atomic(d / fname, data)
            return {"file": fname, "bytes": len(data), "sha256": digest}

        for i, (name, (data, count, trained, floats)) in enumerate(sorted(blobs.items())):
            entries[name] = {**write(i, data), "count": count}
            if trained is not None:
                entries[name]["trained"] = trained
            if floats is not None:
                entries[name]["floats"] = write(i, floats, "-floats")
        del blobs
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dim": self.dim,
            "meta": meta,
            "partitions": entries,
        }
        _write_atomic(d / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
        _fsync_dir(d)
        keep = {e["file"] for e in entries.values()} | {e["floats"]["file"] for e in entries.values() if "floats" in e}
        for f in d.glob("part-*.faiss"):
            if f.name not in keep:
                f.unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: str = "auto", **settings: Any
             ) -> tuple[VectorIndex, dict[str, Any]]:
        """Read an index written by `save`: (index, meta). Raises IndexCorrupt if anything is off."""
        d = Path(directory)
        hint = "rebuild the index from the SQL store"
        mpath = d / MANIFEST
        if not mpath.is_file():
            raise IndexCorrupt(f"no {MANIFEST} in {d}: the index was never saved or the save did not finish; {hint}")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise IndexCorrupt(f"{mpath} is unreadable ({e}); {hint}") from e
        try:
            if manifest["format"] != FORMAT or manifest["version"] not in READABLE_VERSIONS:
                raise IndexCorrupt(
                    f"{mpath} has format {manifest['format']!r} version {manifest['version']!r}, "
                    f"expected {FORMAT!r} version {' or '.join(map(str, READABLE_VERSIONS))}; {hint}"
                )
            dim = int(manifest["dim"])
            meta = manifest["meta"]
            entries = manifest["partitions"]
            if not isinstance(meta, dict) or not isinstance(entries, dict):
                raise TypeError("meta and partitions must be objects")
            index = cls(dim, device=device, **settings)
            for name, entry in entries.items():
                index._parts[name] = _read_partition(d, name, entry, dim, hint)
                if _is_ivf(index._parts[name]):
                    index._trained[name] = int(entry.get("trained", entry["count"]))
                if isinstance(index._parts[name], faiss.IndexIVFScalarQuantizer):
                    if "floats" not in entry:
                        raise IndexCorrupt(f"partition {name!r} has 8-bit codes but no float vectors file; {hint}")
                    index._floats[name] = _read_floats(d, name, entry["floats"], int(entry["count"]), dim, hint)
        except IndexCorrupt:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise IndexCorrupt(f"{mpath} is malformed ({type(e).__name__}: {e}); {hint}") from e
        return index, meta


def _read_blob(d: Path, name: str, entry: dict[str, Any], hint: str) -> Any:
    """Read and verify one file listed in the manifest, and deserialize it."""
    fname = str(entry["file"])
    if Path(fname).name != fname:
        raise IndexCorrupt(f"manifest lists file {fname!r} for partition {name!r} outside {d}; {hint}")
    path = d / fname
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IndexCorrupt(f"partition {name!r}: cannot read {path} ({e}); {hint}") from e
    if len(data) != int(entry["bytes"]):
        raise IndexCorrupt(
            f"partition {name!r}: {path} has {len(data)} bytes, manifest says {entry['bytes']} (truncated?); {hint}"
        )
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise IndexCorrupt(f"partition {name!r}: {path} does not match its sha256 in the manifest; {hint}")
    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)), path
    except RuntimeError as e:
        raise IndexCorrupt(f"partition {name!r}: faiss cannot read {path} ({e}); {hint}") from e


def _read_floats(d: Path, name: str, entry: dict[str, Any], count: int, dim: int, hint: str) -> Any:
    store, path = _read_blob(d, name, entry, hint)
    ok = (isinstance(store, faiss.IndexIVFFlat) and store.nlist == 1 and store.d == dim and store.ntotal == count
          and store.direct_map.type == faiss.DirectMap.Hashtable)
    if not ok:
        raise IndexCorrupt(f"partition {name!r}: {path} is not the float vectors of its {count} items "
                           f"({type(store).__name__} n={store.ntotal}); {hint}")
    return store


def _read_partition(d: Path, name: str, entry: dict[str, Any], dim: int, hint: str) -> Any:
    """Read and verify one partition file listed in the manifest."""
    index, path = _read_blob(d, name, entry, hint)
    ok_type = isinstance(index, faiss.IndexIDMap2) or (
        isinstance(index, (faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer)) and index.direct_map.type == faiss.DirectMap.Hashtable and index.metric_type == faiss.METRIC_INNER_PRODUCT)
    if not ok_type or index.d != dim or index.ntotal != int(entry["count"]):
        raise IndexCorrupt(
            f"partition {name!r}: {path} holds {type(index).__name__} d={index.d} n={index.ntotal}, "
            f"expected IndexIDMap2, IndexIVFScalarQuantizer or IndexIVFFlat (inner product, id map) d={dim} n={entry['count']}; {hint}"
        )
    return index
