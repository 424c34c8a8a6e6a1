"""Tests for skillmem.index: exact cosine search with stable ids, persistence, corruption, threads."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from skillmem.index import vector as index_mod
from skillmem.embed import HashingEmbedder
from skillmem.index import IndexCorrupt, VectorIndex

DIM = 32
P = "ns/lesson/general"


def unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def filled() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    ix = VectorIndex(DIM, device="cpu")
    ids = np.arange(100, 150)
    vecs = unit(50)
    ix.add(P, ids, vecs)
    return ix, ids, vecs


def test_search_finds_exact_vector_with_cosine_score(filled):
    ix, ids, vecs = filled
    scores, found = ix.search(P, vecs[:5], k=3)
    assert scores.shape == found.shape == (5, 3) and found.dtype == np.int64
    np.testing.assert_array_equal(found[:, 0], ids[:5])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    np.testing.assert_allclose(scores[0], vecs[0] @ ix.vectors(P, found[0]).T, atol=1e-5)


def test_k_larger_than_partition_and_missing_partitions(filled):
    ix, ids, vecs = filled
    scores, found = ix.search(P, vecs[:2], k=60)
    assert found.shape == (2, 60)
    assert sorted(found[0, :50]) == sorted(ids) and (found[:, 50:] == -1).all()
    assert np.isneginf(scores[:, 50:]).all() and np.isfinite(scores[:, :50]).all()
    scores, found = ix.search("no/such/partition", vecs[:2], k=4)
    assert (found == -1).all() and np.isneginf(scores).all() and found.shape == (2, 4)
    assert ix.search(P, vecs[:2], k=0)[1].shape == (2, 0)
    assert ix.search(P, vecs[0], k=1)[1].shape == (1, 1)  # a single 1-d query is one row


def test_remove(filled):
    ix, ids, vecs = filled
    assert ix.remove(P, [100, 101, 999]) == 2
    assert ix.count(P) == 48
    assert not {100, 101} & set(ix.ids(P).tolist())
    _, found = ix.search(P, vecs[:2], k=48)
    assert not {100, 101} & set(found.ravel().tolist())
    assert ix.remove("no/such/partition", [1]) == 0
    ix.remove(P, ix.ids(P))
    assert ix.count(P) == 0 and P in ix.partitions()
    assert (ix.search(P, vecs[:1], k=3)[1] == -1).all()


def test_readd_replaces(filled):
    ix, ids, vecs = filled
    new = unit(1, seed=7)
    ix.add(P, [100], new)
    assert ix.count(P) == 50
    np.testing.assert_allclose(ix.vectors(P, [100]), new, atol=1e-6)
    scores, found = ix.search(P, new, k=1)
    assert found[0, 0] == 100 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    # the same id twice in one call: the last vector wins
    a, b = unit(2, seed=8)
    ix.add(P, [500, 500], np.stack([a, b]))
    assert ix.count(P) == 51
    np.testing.assert_allclose(ix.vectors(P, [500])[0], b, atol=1e-6)


def test_partitions_are_separate_and_listed(filled):
    ix, ids, vecs = filled
    ix.add("ns/demo/general", [100], vecs[10:11])
    assert ix.partitions() == ["ns/demo/general", P]
    assert ix.count("ns/demo/general") == 1 and ix.count("nothing") == 0
    _, found = ix.search("ns/demo/general", vecs[:1], k=5)
    assert found[0].tolist() == [100, -1, -1, -1, -1]
    assert ix.ids(P).tolist() == ids.tolist()  # storage order
    assert ix.ids("nothing").shape == (0,)


def test_vectors_reconstruct_and_missing_ids(filled):
    ix, ids, vecs = filled
    np.testing.assert_allclose(ix.vectors(P, ids[[3, 1]]), vecs[[3, 1]], atol=1e-6)
    with pytest.raises(KeyError, match="id 7 is not in partition"):
        ix.vectors(P, [100, 7])
    with pytest.raises(KeyError, match="does not exist"):
        ix.vectors("nothing", [1])


def test_bad_input_is_rejected_with_a_reason():
    ix = VectorIndex(DIM, device="cpu")
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        ix.add(P, [1], unit(1, dim=16))
    with pytest.raises(ValueError, match="L2-normalized"):
        ix.add(P, [1], 3 * unit(1))
    with pytest.raises(ValueError, match="ids must be >= 0"):
        ix.add(P, [-1], unit(1))
    with pytest.raises(ValueError, match="2 ids for 1 vectors"):
        ix.add(P, [1, 2], unit(1))
    with pytest.raises(ValueError, match="device"):
        VectorIndex(DIM, device="tpu")
    ix.add(P, [], np.zeros((0, DIM), np.float32))
    assert P not in ix.partitions()


def test_works_with_hashing_embedder():
    emb = HashingEmbedder(64)
    texts = ["take the apple", "open the drawer", "heat the mug in the microwave"]
    ix = VectorIndex(emb.dim, device="cpu")
    ix.add(P, [1, 2, 3], emb.encode(texts))
    _, found = ix.search(P, emb.encode(["heat a mug with the microwave"]), k=1)
    assert found[0, 0] == 3


# --- persistence ---


def test_save_load_roundtrip(filled, tmp_path):
    ix, ids, vecs = filled
    ix.add("ns/demo/general", [7], vecs[:1])
    ix.add("ns/empty", [1], vecs[:1])
    ix.remove("ns/empty", [1])
    meta = {"high_water": 149, "model": "all-MiniLM-L6-v2", "dim": DIM}
    ix.save(tmp_path, meta)
    loaded, got_meta = VectorIndex.load(tmp_path, device="cpu")
    assert got_meta == meta
    assert loaded.dim == DIM and loaded.partitions() == ix.partitions()
    for p in ix.partitions():
        assert loaded.count(p) == ix.count(p)
        assert loaded.ids(p).tolist() == ix.ids(p).tolist()
    for a, b in zip(ix.search(P, vecs[:5], 10), loaded.search(P, vecs[:5], 10)):
        np.testing.assert_array_equal(a, b)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["partitions"][P]["count"] == 50
    # the loaded index is fully usable: add, remove, save again; stale files are cleaned up
    loaded.add(P, [1000], unit(1, seed=3))
    loaded.remove("ns/demo/general", [7])
    loaded.save(tmp_path, {"high_water": 1000})
    files = {f.name for f in tmp_path.iterdir()}
    listed = {e["file"] for e in json.loads((tmp_path / "manifest.json").read_text())["partitions"].values()}
    assert files == listed | {"manifest.json"}
    again, meta2 = VectorIndex.load(tmp_path, device="cpu")
    assert meta2 == {"high_water": 1000} and again.count(P) == 51 and again.count("ns/demo/general") == 0


def test_save_empty_index_and_reject_bad_meta(tmp_path):
    VectorIndex(DIM, device="cpu").save(tmp_path / "empty")
    ix, meta = VectorIndex.load(tmp_path / "empty", device="cpu")
    assert ix.partitions() == [] and meta == {} and ix.dim == DIM
    with pytest.raises(TypeError, match="JSON-serializable"):
        VectorIndex(DIM, device="cpu").save(tmp_path / "bad", {"x": object()})


def _saved(filled, tmp_path: Path) -> tuple[Path, dict]:
    ix, _, _ = filled
    ix.save(tmp_path, {"high_water": 149})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    return tmp_path / manifest["partitions"][P]["file"], manifest


def test_missing_or_unreadable_manifest_is_corrupt(filled, tmp_path):
    with pytest.raises(IndexCorrupt, match="no manifest.json"):
        VectorIndex.load(tmp_path / "never-saved")
    _saved(filled, tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "skillmem-vector-index", "vers')
    with pytest.raises(IndexCorrupt, match="unreadable.*rebuild"):
        VectorIndex.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "skillmem-vector-index"}')
    with pytest.raises(IndexCorrupt, match="malformed"):
        VectorIndex.load(tmp_path)


def test_truncated_file_is_corrupt(filled, tmp_path):
    path, _ = _saved(filled, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorrupt, match="truncated"):
        VectorIndex.load(tmp_path)


def test_checksum_mismatch_is_corrupt(filled, tmp_path):
    path, _ = _saved(filled, tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same length, one flipped byte inside a vector
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt, match="sha256"):
        VectorIndex.load(tmp_path)


def test_missing_file_is_corrupt(filled, tmp_path):
    path, _ = _saved(filled, tmp_path)
    path.unlink()
    with pytest.raises(IndexCorrupt, match="cannot read"):
        VectorIndex.load(tmp_path)


def test_file_faiss_cannot_read_is_corrupt(filled, tmp_path):
    # A file whose manifest entry is consistent but whose bytes are not a faiss index.
    import hashlib

    path, manifest = _saved(filled, tmp_path)
    junk = b"not a faiss index" * 10
    path.write_bytes(junk)
    manifest["partitions"][P].update(bytes=len(junk), sha256=hashlib.sha256(junk).hexdigest())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorrupt, match="faiss cannot read"):
        VectorIndex.load(tmp_path)


# --- threads ---


def test_concurrent_add_and_search_never_see_half_added_items():
    ix = VectorIndex(DIM, device="cpu")
    n, batch = 4000, 10
    vecs = unit(n, seed=1)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for start in range(0, n, batch):
                ix.add(P, np.arange(start, start + batch), vecs[start : start + batch])
                if start % 500 == 0:
                    ix.remove(P, [start])  # mutations of both kinds
                    ix.add(P, [start], vecs[start : start + 1])
                time.sleep(0.0005)  # let the readers in between writes
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)
        finally:
            done.set()

    searches = [0, 0]

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                searches[seed] += 1
                q = vecs[rng.integers(0, n, size=4)]
                scores, found = ix.search(P, q, k=8)
                for row in range(4):
                    ok = found[row] >= 0
                    # every id seen has its full vector: the score is exactly its cosine with the query
                    np.testing.assert_allclose(scores[row, ok], vecs[found[row, ok]] @ q[row], atol=1e-4)
                    assert len(set(found[row, ok].tolist())) == ok.sum()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert ix.count(P) == n
    assert min(searches) > 50  # the readers really ran during the writes


# --- device selection ---


def test_gpu_requested_without_gpu_fails_clearly():
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is visible")
    assert VectorIndex(DIM).device == "cpu"
    with pytest.raises(RuntimeError, match="sees no GPU"):
        VectorIndex(DIM, device="gpu")


def test_gpu_path_selected_and_mirror_rebuilt_on_change(monkeypatch):
    """The GPU code path's logic, run on CPU: `index_cpu_to_all_gpus` is stood in for by a CPU
    clone, so this checks device selection, the id mapping and mirror invalidation — not a GPU."""
    copies: list[object] = []

    def fake_to_gpus(index):
        copies.append(index)
        return faiss.clone_index(index)

    _ = index_mod.faiss.IndexFlatIP  # resolve the lazy import, so the patches land on faiss itself
    monkeypatch.setattr(index_mod.faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(index_mod.faiss, "index_cpu_to_all_gpus", fake_to_gpus)
    ix = VectorIndex(DIM)
    assert ix.device == "gpu"
    cpu = VectorIndex(DIM, device="cpu")
    vecs = unit(30, seed=2)
    for target in (ix, cpu):
        target.add(P, np.arange(1000, 1030), vecs)
        target.remove(P, [1003])
    q = unit(3, seed=5)
    for k in (1, 5, 40):
        for a, b in zip(ix.search(P, q, k), cpu.search(P, q, k)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(copies) == 1  # built lazily once, reused while nothing changes
    ix.add(P, [5000], q[:1])
    assert ix.search(P, q[:1], 1)[1][0, 0] == 5000 and len(copies) == 2
    ix.remove(P, [5000])
    assert ix.search(P, q[:1], 1)[1][0, 0] != 5000 and len(copies) == 3
    ix.search(P, q, index_mod.GPU_MAX_K + 1)  # beyond the GPU's k limit: searched on the CPU copy
    assert len(copies) == 3


# --------------------------------------------------------------------------- approximate partitions


def clustered(n: int, dim: int = DIM, centres: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around `centres` directions, as embeddings of related texts are."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at(ix: VectorIndex, exact: VectorIndex, q: np.ndarray, k: int = 5) -> float:
    got, want = ix.search(P, q, k)[1], exact.search(P, q, k)[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want)]))


def test_auto_partition_turns_approximate_past_exact_max_and_keeps_recall():
    vecs = clustered(6000)
    ix = VectorIndex(DIM, device="cpu", exact_max=3000)
    exact = VectorIndex(DIM, device="cpu", kind="exact")
    ix.add(P, np.arange(2000), vecs[:2000])
    assert ix.kind_of(P) == "exact"
    for lo in range(2000, 6000, 500):  # grows past the line in steps, as new lessons arrive
        ix.add(P, np.arange(lo, lo + 500), vecs[lo:lo + 500])
    exact.add(P, np.arange(6000), vecs)
    assert ix.kind_of(P) == "ivf" and exact.kind_of(P) == "exact" and ix.count(P) == 6000
    assert recall_at(ix, exact, clustered(200, seed=9)) >= 0.95
    np.testing.assert_allclose(ix.vectors(P, [5, 4321]), vecs[[5, 4321]], atol=1e-6)
    assert sorted(ix.ids(P).tolist()) == list(range(6000))


def test_approximate_partition_applies_adds_removes_and_replacements_in_place():
    vecs = clustered(4000)
    ix = VectorIndex(DIM, device="cpu", kind="ivf")
    ix.add(P, np.arange(4000), vecs)
    assert ix.kind_of(P) == "ivf"
    q = vecs[17:18]
    assert ix.search(P, q, 1)[1][0, 0] == 17
    assert ix.remove(P, [17, 999999]) == 1 and ix.count(P) == 3999
    assert 17 not in ix.search(P, q, 10)[1][0]
    with pytest.raises(KeyError):
        ix.vectors(P, [17])
    ix.add(P, [18], q)  # replaced: one copy, now at q's direction
    assert ix.count(P) == 3999 and ix.search(P, q, 1)[1][0, 0] == 18
    ix.add(P, [77777], clustered(1, seed=3))  # a new item never retrains the lists
    assert ix._trained[P] == 4000 and ix.count(P) == 4000


def test_approximate_partition_is_recut_on_growth_and_exact_again_when_shrunk():
    vecs = clustered(12000)
    ix = VectorIndex(DIM, device="cpu", exact_max=1000)
    ix.add(P, np.arange(1500), vecs[:1500])
    assert ix.kind_of(P) == "ivf" and ix._trained[P] == 1500
    ix.add(P, np.arange(1500, 7000), vecs[1500:7000])  # past RETRAIN_GROWTH x the training size
    assert ix._trained[P] == 7000 and ix._parts[P].nlist == index_mod.nlist_for(7000)
    ix.remove(P, np.arange(6600))
    assert ix.kind_of(P) == "exact" and ix.count(P) == 400
    assert ix.search(P, vecs[6800:6801], 1)[1][0, 0] == 6800


def test_approximate_partition_save_load_roundtrip(tmp_path):
    vecs = clustered(4000)
    ix = VectorIndex(DIM, device="cpu", kind="ivf")
    ix.add(P, np.arange(4000), vecs)
    ix.add("ns/demo/task:x", [1, 2], vecs[:2])
    ix.save(tmp_path, meta={"high_water": 3})
    back, meta = VectorIndex.load(tmp_path, device="cpu", kind="ivf")
    assert meta == {"high_water": 3} and back.kind_of(P) == "ivf" and back.kind_of("ns/demo/task:x") == "exact"
    assert back._trained[P] == 4000
    q = clustered(20, seed=4)
    for a, b in zip(back.search(P, q, 5), ix.search(P, q, 5)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    back.remove(P, [0])  # the id map survived the round trip
    assert back.count(P) == 3999


def test_gpu_path_for_an_approximate_partition(monkeypatch):
    """As above, the GPU branch run on CPU clones: the inverted file is mirrored with its ids."""
    _ = index_mod.faiss.IndexFlatIP
    monkeypatch.setattr(index_mod.faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(index_mod.faiss, "index_cpu_to_all_gpus", faiss.clone_index)
    vecs = clustered(4000)
    gpu, cpu = VectorIndex(DIM, kind="ivf"), VectorIndex(DIM, device="cpu", kind="ivf")
    for ix in (gpu, cpu):
        ix.add(P, np.arange(10, 4010), vecs)
    assert gpu.device == "gpu"
    q = clustered(5, seed=8)
    np.testing.assert_array_equal(gpu.search(P, q, 5)[1], cpu.search(P, q, 5)[1])
    gpu.remove(P, [int(gpu.search(P, q[:1], 1)[1][0, 0])])
    assert gpu.search(P, q[:1], 1)[1][0, 0] == cpu.search(P, q[:1], 2)[1][0, 1]


def test_a_new_outlier_is_found_at_once_in_an_approximate_partition():
    """Its own vector as the query finds it even if the lists the query probes are not its list."""
    ix = VectorIndex(DIM, device="cpu", kind="ivf", nprobe=1)
    ix.add(P, np.arange(4000), clustered(4000))
    outliers = unit(50, seed=11)  # unlike the clusters: where k-means put no list
    ix.add(P, np.arange(10_000, 10_050), outliers)
    found = ix.search(P, outliers, 1)[1][:, 0]
    np.testing.assert_array_equal(found, np.arange(10_000, 10_050))
    ix.remove(P, [10_000])
    assert ix.search(P, outliers[:1], 1)[1][0, 0] != 10_000
    assert len(set(ix.search(P, outliers[1:2], 10)[1][0].tolist())) == 10  # each id once


def test_large_inverted_file_uses_a_graph_over_its_lists_and_survives_save_load(tmp_path):
    # 70k vectors: 1,058 lists, where the centroids are searched by an HNSW graph.
    dim = 16
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((70_000, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ix = VectorIndex(dim, device="cpu", exact_max=20_000)
    ix.add(P, np.arange(70_000), vecs)  # one bulk add: trained at once, no exact copy first
    part = ix._parts[P]
    assert ix.kind_of(P) == "ivf" and part.nlist == index_mod.nlist_for(70_000) >= 1024
    assert isinstance(faiss.downcast_index(part.quantizer), faiss.IndexHNSWFlat)
    scores, ids, got = ix.search_one(P, vecs[123:124], 5)
    assert ids[0] == 123 and np.allclose(got[0], vecs[123]) and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert ix.remove(P, [123]) == 1 and 123 not in ix.search_one(P, vecs[123:124], 5)[1]
    ix.save(tmp_path / "ix")
    back, _ = VectorIndex.load(tmp_path / "ix", device="cpu")
    assert back.count(P) == 69_999 and back.search_one(P, vecs[456:457], 1)[1][0] == 456


def test_inverted_file_keeps_8bit_codes_and_rescores_candidates_with_float_vectors(tmp_path):
    vecs = clustered(6000, seed=3)
    ix = VectorIndex(DIM, device="cpu", kind="ivf")
    ix.add(P, np.arange(6000), vecs)
    part = ix._parts[P]
    assert isinstance(part, faiss.IndexIVFScalarQuantizer) and part.code_size == DIM  # one byte a dimension
    q = clustered(50, seed=12)
    scores, ids = ix.search(P, q, 5)
    # Scores are the float vectors' cosines, not the codes' approximations.
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, vecs[ids]), atol=1e-5)
    exact = VectorIndex(DIM, device="cpu", kind="exact")
    exact.add(P, np.arange(6000), vecs)
    assert recall_at(ix, exact, q) >= 0.95
    s1, i1, v1 = ix.search_one(P, q[:1], 5)
    np.testing.assert_array_equal(i1, ids[0])
    np.testing.assert_allclose(v1, vecs[i1], atol=1e-7)
    ix.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    floats = manifest["partitions"][P]["floats"]["file"]
    back, _ = VectorIndex.load(tmp_path, device="cpu", kind="ivf")
    np.testing.assert_array_equal(back.search(P, q, 5)[1], ids)
    (tmp_path / floats).unlink()
    with pytest.raises(IndexCorrupt, match="cannot read"):
        VectorIndex.load(tmp_path, device="cpu", kind="ivf")
