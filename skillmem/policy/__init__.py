"""Policies: the protocol, memory as hints, and the CPU, Hugging Face, OpenAI and random policies.

    from skillmem.policy import CPUPolicy, load_policy
    action = CPUPolicy().act(goal, history, memory.retrieve(...), admissible)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import Hints, Policy, Prompt, context_text, context_view, hints_from_context, history_pairs, make_prompt, memory_text
from .cpu import CPUPolicy, CPUPolicyConfig
from .random import RandomPolicy


def load_policy(path: str | Path, domain: Any = None) -> Any:
    """The policy saved in directory `path`, whatever its kind (policy.json says), reading the world through
    `domain` (the one it was trained with; default TextDomain)."""
    meta_path = Path(path) / "policy.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"no policy at {path} (policy.json missing); train one with `skillmem train`")
    kind = json.loads(meta_path.read_text()).get("kind")
    if kind == "cpu":
        return CPUPolicy.load(path, domain=domain)
    if kind == "hf":
        from .hf import HFPolicy  # transformers is slow to import

        policy = HFPolicy.load(path)
        policy.domain = domain
        return policy
    if kind == "hf-chat":
        from .hf_chat import HFChatPolicy

        return HFChatPolicy.load(path)
    raise ValueError(f"{meta_path}: unknown policy kind {kind!r} (expected 'cpu', 'hf' or 'hf-chat')")


__all__ = ["Policy", "Prompt", "Hints", "hints_from_context", "make_prompt", "context_text", "context_view", "memory_text", "history_pairs",
           "CPUPolicy", "CPUPolicyConfig", "RandomPolicy", "load_policy"]
