"""The offline default policy: a small torch model that scores candidate actions on a CPU.

Each candidate is scored from hashed features — words of the goal, the recent history,
the last observation and the retrieved lessons (the context bag), words and verb of the
candidate, and crosses that generalize across objects ("a word of this action appears in
the goal") — plus dense features, among them the memory hints. A linear term also reads
the features the `Domain` derives from the whole history, crossed with the candidate
(TextDomain: was it tried, did it fail, does it name the goal's values; a world pack adds
its own state: what is held, which places were visited...), so what memory-guided play
does becomes a linear rule the trainer can distill into weights. Those weights start at
zero, so the untrained policy is steered by hints alone, and by two weights that start
negative: on an action taken before from the observation it is in now, and on one taken before
at all (an untrained argmax would otherwise loop on its favourite action), unless memory
prefers that action or the domain's own hints explore (`Domain.explores`, a world pack). No tokenizer, no download;
thousands of decisions per second on one core.

    policy = CPUPolicy()                       # untrained; memory hints still steer it
    policy = CPUPolicy(domain=my_domain)       # a world's features and hints
    action = policy.act(goal, history, context, admissible)
    policy.save("runs/p1"); CPUPolicy.load("runs/p1")
"""

from __future__ import annotations

import json
import random
from array import array
import re
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .base import HistoryItem, Prompt, make_prompt

_WORD = re.compile(r"[a-z]+")
N_DENSE = 9
_CACHE_SIZE = 4096  # prompts whose features are kept (a few kB each)
@dataclass
class CPUPolicyConfig:
    """Knobs of the CPU policy; saved next to its weights."""

    buckets: int = 1 << 15  # hashed feature buckets
    dim: int = 32  # embedding width
    hidden: int = 64  # MLP width
    history: int = 3  # recent steps read
    hint_init: float = 3.0  # initial weight of the hint bonus: memory steers before any training
    # Initial weights on repeating an action: taken before from this same observation (it led
    # nowhere new then), and taken before at all. An untrained argmax policy otherwise loops on
    # its favourite action; training may change both. They weigh only actions memory does not
    # prefer.
    repeat_init: float = -2.0
    tried_init: float = -0.5
    use_text: bool = True  # read retrieved memory as text (its words in the context bag)
    use_hints: bool = True  # use retrieved memory as hints on actions
    seed: int = 0
    domain: str = "text"  # the name of the Domain it was built with (the object is passed to load())


@lru_cache(maxsize=1 << 16)
def _h(feature: str, buckets: int) -> int:
    # crc32, not hash(): Python's string hash changes between processes.
    return zlib.crc32(feature.encode()) % (buckets - 1) + 1  # 0 is padding


@lru_cache(maxsize=1 << 14)
def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.lower()))


class CPUPolicy(nn.Module):
    """Scores (context, candidate) pairs with hashed bags, a bilinear term, an MLP and the hints."""

    kind = "cpu"

    def __init__(self, config: Optional[CPUPolicyConfig] = None, *, domain: Any = None):
        super().__init__()
        from ..domain import TextDomain

        self.config = config or CPUPolicyConfig()
        self.domain = domain if domain is not None else TextDomain()
        if self.config.domain not in ("text", self.domain.name):
            raise ValueError(f"this policy was built with domain {self.config.domain!r}; load it with that domain "
                             f"(got {self.domain.name!r})")
        self.config.domain = self.domain.name
        c = self.config
        # Same seed, same initial weights: runs and their resumptions are comparable.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.ctx = nn.EmbeddingBag(c.buckets, c.dim, mode="mean", padding_idx=0)
            self.cand = nn.EmbeddingBag(c.buckets, c.dim, mode="sum", padding_idx=0)
            self.lin = nn.EmbeddingBag(c.buckets, 1, mode="sum", padding_idx=0)  # a linear model over the crosses
            with torch.no_grad():
                self.ctx.weight.normal_(0, 0.1)
                self.cand.weight.normal_(0, 0.1)
                self.lin.weight.zero_()
            self.mlp = nn.Sequential(nn.Linear(2 * c.dim + N_DENSE, c.hidden), nn.Tanh(), nn.Linear(c.hidden, 1))
        self.hint_weight = nn.Parameter(torch.tensor(c.hint_init))
        # A domain whose hints explore (a world pack) gets no loop guard: they would pull apart.
        guard = 0.0 if getattr(self.domain, "explores", False) else 1.0
        self.repeat_weight = nn.Parameter(torch.tensor([c.repeat_init * guard, c.tried_init * guard]))
        self.rng = random.Random(c.seed)
        self._cache: dict[tuple, tuple] = {}

    # ----------------------------------------------------------------- features

    def _context_features(self, p: Prompt) -> tuple[list[int], dict[str, Any]]:
        B = self.config.buckets
        recent = p.history[-self.config.history:]
        goal = _words(p.goal)
        feats = [_h("g:" + w, B) for w in goal]
        for i, (a, o) in enumerate(reversed(recent)):
            feats += [_h(f"a{i}:" + w, B) for w in _words(a)]
        last_obs = _words(recent[-1][1]) if recent else ()
        feats += [_h("o:" + w, B) for w in last_obs]
        lessons = _words(p.memory) if p.memory else ()
        feats += [_h("l:" + w, B) for w in lessons]
        info = {
            "goal": set(goal), "obs": set(last_obs), "lessons": set(lessons),
            "done": [a for a, _ in p.history], "last": p.history[-1][0] if p.history else "",
            "prev_verb": (_words(p.history[-1][0]) or ("none",))[0] if p.history else "start",
            "goal_words": goal[:12], "goal_text": p.goal, "history": p.history,
            "here": self._from_here(p.history),
        }
        return feats or [0], info

    def _from_here(self, history: Sequence[tuple[str, str]]) -> dict[str, int]:
        """How often each action (by the domain's key) was taken before from the observation the agent
        is in now (the start counts as one observation)."""
        now = " ".join(history[-1][1].split()) if history else None
        out: dict[str, int] = {}
        prev = None
        for a, o in history:
            if prev == now:
                k = self.domain.action_key(a)
                out[k] = out.get(k, 0) + 1
            prev = " ".join(o.split())
        return out

    def _candidate_features(self, cand: str, info: dict[str, Any], hint: float, world: Sequence[str] = ()
                            ) -> tuple[list[int], list[int], list[float]]:
        B = self.config.buckets
        ws = _words(cand)
        verb = ws[0] if ws else ""
        feats = [_h("c:" + w, B) for w in ws] + [_h("v:" + verb, B), _h(f"pv:{info['prev_verb']}|{verb}", B)]
        feats += [_h(f"gv:{g}|{verb}", B) for g in info["goal_words"]]
        for i, w in enumerate(ws[1:], 1):
            where = ("G" if w in info["goal"] else "") + ("O" if w in info["obs"] else "") + \
                    ("L" if w in info["lessons"] else "")
            feats.append(_h(f"x:{verb}|{i}|{where}", B))
            for g in info["goal_words"]:
                if g == w:
                    feats.append(_h(f"gw:{verb}|{i}|{g}", B))
        times = sum(1 for a in info["done"] if a == cand)
        feats_lin = feats + [_h(f, B) for f in world]
        n = max(1, len(ws) - 1)
        dense = [hint, float(hint > 0), float(hint < 0), min(times, 5) / 5.0, float(info["last"] == cand),
                 sum(w in info["goal"] for w in ws[1:]) / n, sum(w in info["obs"] for w in ws[1:]) / n,
                 sum(w in info["lessons"] for w in ws[1:]) / n, 1.0]
        return feats, feats_lin, dense

    # ----------------------------------------------------------------- scoring

    def _features(self, p: Prompt, cands: Sequence[str]) -> tuple:
        """A prompt's features apart from the hints: (context, candidate, linear, dense[3:]) index
        arrays, cached because training scores the same examples every epoch."""
        key = (p.goal, tuple(p.history), p.memory, tuple(cands))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        feats, info = self._context_features(p)
        world = self.domain.policy_features(p.goal, p.history, list(cands))
        cf, co, lf, lo, dense, reps = array("i"), array("i"), array("i"), array("i"), array("f"), array("f")
        for c, w in zip(cands, world):
            f, fl, d = self._candidate_features(c, info, 0.0, w)
            co.append(len(cf))
            cf.extend(f)
            lo.append(len(lf))
            lf.extend(fl)
            dense.extend(d[3:])
            key = self.domain.action_key(c)
            reps.extend((float(min(info["here"].get(key, 0), 3)),
                         float(min(sum(1 for a in info["done"] if self.domain.action_key(a) == key), 3))))
        hit = (array("i", feats), cf, co, lf, lo, dense, reps)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))  # oldest first
        self._cache[key] = hit
        return hit

    def batch_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]],
                       exclude_prefix: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-softmax over each prompt's candidates: ([B, C_max] padded with 0, mask [B, C_max])."""
        ctx_idx, ctx_off, cand_idx, cand_off, lin_idx, lin_off, rest, hints, owner, reps = (
            array("i"), [], array("i"), [], array("i"), [], array("f"), [], [], array("f"))
        for b, (p, cands) in enumerate(zip(prompts, candidates)):
            cx, cf, co, lf, lo, dense, rp = self._features(p, cands)
            reps.extend(rp)
            ctx_off.append(len(ctx_idx))
            ctx_idx.extend(cx)
            cand_off += [o + len(cand_idx) for o in co]
            cand_idx.extend(cf)
            lin_off += [o + len(lin_idx) for o in lo]
            lin_idx.extend(lf)
            rest.extend(dense)
            bonus = p.hints.vector(cands) if (p.hints is not None and self.config.use_hints) else [0.0] * len(cands)
            hints += [(h, float(h > 0), float(h < 0)) for h in bonus]
            owner += [b] * len(cands)
        ctx = self.ctx(torch.frombuffer(ctx_idx, dtype=torch.int32).long(), torch.tensor(ctx_off))
        ci = torch.frombuffer(cand_idx, dtype=torch.int32).long()
        cand = self.cand(ci, torch.tensor(cand_off))
        dense_t = torch.cat([torch.tensor(hints, dtype=torch.float32).reshape(-1, 3),
                             torch.frombuffer(rest, dtype=torch.float32).reshape(-1, N_DENSE - 3)], dim=-1)
        own = torch.tensor(owner)
        c_own = ctx[own]
        score = self.mlp(torch.cat([c_own * cand, cand, dense_t], dim=-1)).squeeze(-1)
        lin = self.lin(torch.frombuffer(lin_idx, dtype=torch.int32).long(), torch.tensor(lin_off))
        # Where memory prefers an action, memory knows better than the loop guard (going back to
        # where an object was seen is a repeat too): the guard weighs only the others.
        unhinted = (dense_t[:, 0] <= 0).float()
        repeat = (torch.frombuffer(reps, dtype=torch.float32).reshape(-1, 2) @ self.repeat_weight) * unhinted
        score = score + lin.squeeze(-1) + self.hint_weight * dense_t[:, 0] + repeat
        sizes = [len(c) for c in candidates]
        C = max(sizes) if sizes else 0
        mask = torch.arange(C)[None, :] < torch.tensor(sizes)[:, None]
        logits = torch.full((len(sizes), C), float("-inf"))
        logits[mask] = score
        logp = torch.log_softmax(logits, dim=-1).masked_fill(~mask, 0.0)
        return logp, mask

    def action_logprobs(self, prompt: Prompt, candidates: Sequence[str], *,
                        exclude_prefix: Optional[Sequence[Optional[str]]] = None) -> torch.Tensor:
        """Log-probability of each candidate (a softmax over them). Actions are single units here,
        so `exclude_prefix` has nothing to exclude; it exists for the protocol."""
        return self.batch_logprobs([prompt], [list(candidates)])[0][0, : len(candidates)]

    def act(self, goal: str, history: Sequence[HistoryItem], context: Any, admissible: Sequence[str],
            *, sample: bool = False) -> str:
        """The highest-scoring admissible action (or a sample from the softmax)."""
        if not admissible:
            raise ValueError("act() needs at least one admissible action")
        prompt = make_prompt(goal, history, context, admissible,
                             use_text=self.config.use_text, use_hints=self.config.use_hints, domain=self.domain)
        with torch.no_grad():
            logp = self.action_logprobs(prompt, admissible)
        if sample:
            return admissible[int(torch.multinomial(logp.exp(), 1, generator=None))]
        return admissible[int(torch.argmax(logp))]

    # ----------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> Path:
        """Weights and config into directory `path` (policy.json + weights.pt)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "weights.pt.tmp")
        (path / "weights.pt.tmp").replace(path / "weights.pt")
        (path / "policy.json").write_text(json.dumps({"kind": self.kind, "config": asdict(self.config)}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, domain: Any = None) -> "CPUPolicy":
        """The policy saved at `path`; `domain` must be the one it was built with (its name is saved)."""
        path = Path(path)
        meta = json.loads((path / "policy.json").read_text())
        if meta.get("kind") != cls.kind:
            raise ValueError(f"{path} holds a {meta.get('kind')!r} policy, not a CPU policy; use load_policy()")
        policy = cls(CPUPolicyConfig(**meta["config"]), domain=domain)
        state = torch.load(path / "weights.pt", weights_only=True)
        if "repeat_weight" not in state:  # saved before the repeat weights existed: it never had them
            state["repeat_weight"] = torch.zeros(2)
        policy.load_state_dict(state)
        return policy
