"""mmr_order chooses what plain maximal marginal relevance chooses, near copies and ties included."""

import numpy as np

from skillmem.retrieve import mmr_order


def _reference(ids, scores, vecs, k, lam, near):
    """MMR written out: relevance minus redundancy, rounded to 1e-6, ties to the lower id,
    a chosen item's near copies never taken."""
    n = len(ids)
    red = [0.0] * n
    blocked: set[int] = set()
    chosen: list[int] = []
    for _ in range(min(k, n)):
        best, best_value = None, -np.inf
        for i in sorted(range(n), key=lambda j: ids[j]):
            if i in blocked:
                continue
            v = np.rint((lam * 1e6) * float(scores[i]) - red[i] * ((1 - lam) * 1e6))
            if v > best_value:
                best, best_value = i, v
        if best is None:
            break
        chosen.append(best)
        sims = vecs @ vecs[best]
        blocked.add(best)
        for i in range(n):
            if sims[i] >= near:
                blocked.add(i)
            red[i] = max(red[i], float(sims[i]))
    return chosen


def test_mmr_order_is_plain_mmr():
    rng = np.random.default_rng(0)
    for case in range(150):
        n = int(rng.integers(1, 40))
        vecs = rng.standard_normal((n, 16)).astype(np.float32)
        if n > 3:  # near copies and an exact copy
            vecs[1] = vecs[0] + 1e-3 * rng.standard_normal(16).astype(np.float32)
            vecs[3] = vecs[2]
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        q = rng.standard_normal(16).astype(np.float32)
        scores = (vecs @ (q / np.linalg.norm(q))).astype(np.float32)
        if n > 5:
            scores[4] = scores[5]  # a tie: the lower id goes first
        ids = rng.choice(10_000, n, replace=False).astype(np.int64)
        for k in (1, 3, 5, 50):
            for lam in (0.0, 0.7, 1.0):
                assert mmr_order(ids, scores, vecs, k, lam, 0.95) == _reference(ids, scores, vecs, k, lam, 0.95), case
