"""The household state crossed with a candidate command: the features the CPU policy's linear term reads.

What memory-guided play does ("explore places not yet visited, take the goal's object when it
is seen, bring it to the appliance the task names") is then a linear rule the trainer can
distill into weights.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from .state import parse_command, world_state

_WORD = re.compile(r"[a-z]+")
# The goal's task, read off its words: what the held object must go through before it is placed.
_TASK_WORDS = {"hot": "heat", "heat": "heat", "warm": "heat", "cool": "cool", "cold": "cool", "chill": "cool",
               "clean": "clean", "wash": "clean", "rinse": "clean", "two": "two"}


def _kind(name: str) -> str:
    return " ".join(w for w in name.split() if not w.isdigit())


def episode_info(goal: str, history: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """What the whole history says about the episode, as the features read it."""
    words = set(_WORD.findall((goal or "").lower()))
    task = next((_TASK_WORDS[w] for w in words if w in _TASK_WORDS), "")
    if not task and any("lamp" in w or w == "light" for w in words):
        task = "look"
    s = world_state(history)
    held = s.cmd_held
    hold = "E" if not held else ("G" if set(_kind(held).split()) & words else "O")
    phase = f"{task or 'put'}|{hold}|{int(s.processed or (task == 'look' and s.used))}|{int(bool(s.cmd_placed))}"
    return {"goal": words, "held": held, "phase": phase, "here": s.cmd_here, "visited": s.cmd_visited,
            "opened": s.opened, "placed": s.cmd_placed, "seen": s.words_at,
            "done": [a for a, _ in history], "last": history[-1][0] if history else ""}


def state_features(cand: str, info: dict[str, Any]) -> list[str]:
    """The candidate against the episode's state, as feature names for the linear term."""
    v, obj, rec = parse_command(cand)
    goal, phase = info["goal"], info["phase"]
    times = sum(1 for a in info["done"] if a == cand)
    held_kind = set(_kind(info["held"]).split())
    okind, rkind = _kind(obj), _kind(rec)
    of = "".join(str(int(x)) for x in (bool(obj) and bool(set(okind.split()) & goal), bool(obj) and obj == info["held"],
                                       obj in info["placed"]))
    seen_goal = bool(rec) and bool((info["seen"].get(rec, set()) & goal) - held_kind - set(rkind.split()))
    rf = "".join(str(int(x)) for x in (bool(rec) and bool(set(rkind.split()) & goal), rec in info["visited"],
                                       rec in info["opened"], bool(rec) and rec == info["here"], seen_goal))
    return [f"S:{phase}|{v}", f"S:{phase}|{v}|o{of}|r{rf}", f"S:{phase}|{v}|o{of}", f"S:{phase}|{v}|r{rf}",
            f"K:{phase}|{v}|{rkind}|r{rf[:2]}", f"K:{phase}|{v}|{okind}", f"R:{v}|{min(times, 2)}|{int(info['last'] == cand)}"]
