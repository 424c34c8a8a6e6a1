"""Tests for skillmem.embed: the offline sentence-transformers default, the cache, the hashing embedder."""

from __future__ import annotations

import numpy as np
import pytest

from skillmem.embed import (
    CachedEmbedder,
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    content_hash,
    default_embedder,
)


@pytest.fixture(scope="module")
def st() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


class CountingEmbedder:
    """A real (hashing) embedder that records every batch it is asked to embed."""

    def __init__(self, dim: int = 64):
        self.inner = HashingEmbedder(dim)
        self.name, self.dim = self.inner.name, dim
        self.batches: list[list[str]] = []

    def encode(self, texts):
        self.batches.append(list(texts))
        return self.inner.encode(texts)

    @property
    def texts_seen(self) -> list[str]:
        return [t for b in self.batches for t in b]


def assert_unit_rows(x: np.ndarray, n: int, dim: int) -> None:
    assert x.dtype == np.float32 and x.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# --- sentence-transformers ---


def test_default_model_is_offline_minilm(st):
    assert st.name == "all-MiniLM-L6-v2"
    assert st.dim == 384
    assert isinstance(st, Embedder)


def test_encode_shapes_empty_and_long(st):
    assert st.encode([]).shape == (0, 384)
    x = st.encode(["open the drawer", "", "go to the fridge " * 500])
    assert_unit_rows(x, 3, 384)


def test_semantic_neighbours(st):
    q, near, far = st.encode(["heat the mug with the microwave", "warm a cup in the microwave", "open the drawer"])
    assert q @ near > q @ far + 0.1


def test_model_loaded_once_per_process(st):
    again = SentenceTransformerEmbedder()
    assert again.model is st.model


def test_batched_encode_matches_bare_model(st):
    texts = [f"put the {o} in the {r}" for o in ("apple", "mug", "pen") for r in ("fridge", "sink", "box")]
    ours = SentenceTransformerEmbedder(batch_size=4).encode(texts)
    bare = st.model.encode(texts, batch_size=32, normalize_embeddings=True)
    np.testing.assert_allclose(ours, bare, atol=1e-5)


def test_default_embedder_is_process_wide_and_cached(st):
    a, b = default_embedder(), default_embedder()
    assert a is b and isinstance(a, CachedEmbedder)
    assert a.name == "all-MiniLM-L6-v2" and a.dim == 384
    np.testing.assert_allclose(a.encode(["open the drawer"]), st.encode(["open the drawer"]), atol=1e-6)


# --- cache ---


def test_cache_never_embeds_the_same_text_twice():
    inner = CountingEmbedder()
    emb = CachedEmbedder(inner)
    texts = ["a mug", "a cup", "a mug", "the fridge"]
    first = emb.encode(texts)
    assert inner.batches == [["a mug", "a cup", "the fridge"]]  # misses only, one batch, input order
    second = emb.encode(["the fridge", "a new text", "a mug", "a new text"])
    assert inner.batches[1] == ["a new text"]
    assert sorted(inner.texts_seen) == sorted(set(inner.texts_seen))
    # order and duplicates preserved, and the cached vectors are the ones the inner embedder made
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(second[0], first[3])
    np.testing.assert_array_equal(second, inner.inner.encode(["the fridge", "a new text", "a mug", "a new text"]))
    assert emb.misses == 4 and emb.hits == 4
    emb.encode(texts)
    assert len(inner.batches) == 2  # everything was a hit: no call at all
    assert emb.encode([]).shape == (0, 64)


def test_cache_keys_are_content_hashes_and_evict():
    inner = CountingEmbedder()
    store: dict[str, np.ndarray] = {}
    emb = CachedEmbedder(inner, cache=store, max_items=3)
    emb.encode(["one", "two"])
    assert set(store) == {content_hash("one", inner.name), content_hash("two", inner.name)}
    emb.encode(["three", "four", "five"])
    assert len(store) == 3
    assert content_hash("five", inner.name) in store


def test_content_hash_depends_on_text_and_model():
    h = content_hash("open the drawer", "all-MiniLM-L6-v2")
    assert h == content_hash("open the drawer", "all-MiniLM-L6-v2") and len(h) == 64
    assert h != content_hash("open the drawer", "hashing-384")
    assert content_hash("ab", "c") != content_hash("a", "bc")


def test_cached_returns_copies():
    emb = CachedEmbedder(HashingEmbedder(16))
    x = emb.encode(["a"])
    x[0, 0] = 42.0
    assert emb.encode(["a"])[0, 0] != 42.0


# --- hashing ---


def test_hashing_embedder_deterministic_and_normalized():
    emb = HashingEmbedder()
    assert emb.name == "hashing-384" and isinstance(emb, Embedder)
    texts = ["Take the apple from the fridge", "", "!!!", "x" * 10_000]
    x = emb.encode(texts)
    assert_unit_rows(x, 4, 384)
    np.testing.assert_array_equal(x, HashingEmbedder().encode(texts))
    assert emb.encode([]).shape == (0, 384)


def test_hashing_embedder_sees_shared_words():
    q, near, far = HashingEmbedder().encode(["take the apple", "take an apple from the table", "open drawer 3"])
    assert q @ near > q @ far
