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


def test_what_a_candidate_says_is_asked_only_of_near_copies():
    """`says` (a lesson's normalized parts, ~7 us each) is worked out for near copies of a chosen
    candidate only, not for every candidate of every retrieval; a near copy saying the same is
    never taken, one saying otherwise may be."""
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((32, 64)).astype(np.float32)
    vecs[1], vecs[2] = vecs[0], vecs[0]  # two near copies of candidate 0
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = np.linspace(1.0, 0.5, 32).astype(np.float32)  # candidate 0 is the best
    ids = np.arange(100, 132, dtype=np.int64)
    asked: list[int] = []

    def says(pos: int) -> str:
        asked.append(pos)
        return "the same" if pos in (0, 1) else f"other {pos}"

    assert mmr_order(ids, scores, vecs, 5, 1.0, 0.95, says) == [0, 2, 3, 4, 5]  # relevance only
    assert set(asked) == {0, 1, 2}, asked
    asked.clear()
    assert 1 not in mmr_order(ids, scores, vecs, 5, 0.7, 0.95, says) and set(asked) == {0, 1, 2}
