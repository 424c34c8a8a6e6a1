"""count_tokens: one findall of six-character pieces counts what the per-word rule counts."""

import random

from skillmem.tokens import count_tokens


def _per_word(text: str) -> int:
    import re

    return sum(1 + (len(t) - 1) // 6 for t in re.findall(r"\w+|[^\w\s]", text))


def test_count_tokens_is_the_per_word_rule():
    rng = random.Random(0)
    alphabet = "abc xyz_ 123 .,;:!?-é日本 \t\n" + "Z" * 12 + "\u00a0\u2003\u0301"
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        assert count_tokens(s) == _per_word(s), s
    assert count_tokens("") == 0
    assert count_tokens("abcdef") == 1 and count_tokens("abcdefg") == 2 and count_tokens("a, b.") == 4
