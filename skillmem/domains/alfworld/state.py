"""The household world's state, read off the text the game says back: one tracker for every reader.

Reflection (where a lesson's situation holds), hints (places visited, where a thing was seen)
and the CPU policy's features (what is held, what the task still needs) all read this one
`WorldState`, so what a lesson writes is what a policy can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

# ALFWorld's receptacle types (the household environment uses the same names).
RECEPTACLES = frozenset(
    "armchair bathtubbasin bed cabinet cart coffeemachine coffeetable countertop desk diningtable drawer "
    "dresser fridge garbagecan handtowelholder laundryhamper microwave ottoman safe shelf sidetable "
    "sinkbasin sofa stoveburner toaster toilet toiletpaperhanger towelholder tvstand".split()
)
# Receptacles and objects whose *kind* is the skill: their name stays in a lesson.
APPLIANCES = frozenset("microwave fridge sinkbasin stoveburner desklamp floorlamp toaster".split())
# Commands that only look around; a demonstration drops them.
INFO_COMMANDS = frozenset({"look", "inventory", "help"})
# The transformation a task type asks for, and the appliance that does it.
TOOLS = {"heat": "microwave", "cool": "fridge", "clean": "sinkbasin"}
DONE = {"heat": "heated", "cool": "cooled", "clean": "cleaned"}

ENTITY = re.compile(r"\b([a-z]+) (\d+)\b")
_SEEN = re.compile(r"\byou see (.*)", re.IGNORECASE)
_WORDS = re.compile(r"[a-z]+")
# ALFWorld-grammar commands: verb, object, receptacle ("take mug 1 from cabinet 2").
_CMD = re.compile(r"^(go to|open|close|take|move|heat|cool|clean|slice|use|examine)\s+(.+?)"
                  r"(?:\s+(?:from|to|with)\s+(.+))?$")


def normalize_action(action: str) -> str:
    """An action as compared: lower case, single spaces, no trailing period."""
    return " ".join((action or "").lower().strip().rstrip(".").split())


def kind(name: str) -> str:
    """"mug 2" -> "mug"."""
    return name.split()[0] if name else ""


def parse_command(action: str) -> tuple[str, str, str]:
    """(verb, object, receptacle) of a command; "go to X" and "open X" name a receptacle."""
    m = _CMD.match(action.strip().lower())
    if not m:
        return (tuple(_WORDS.findall(action.lower())) or ("",))[0], "", ""
    verb, a, b = m.group(1), m.group(2), m.group(3) or ""
    if verb in ("go to", "open", "close"):
        return verb.split()[0], "", a
    return verb, a, b


@dataclass
class WorldState:
    """What the feedback so far says about the agent's situation."""

    started: bool = False
    at: str = ""  # "cabinet 3"
    closed_here: bool = False
    in_sight: set[str] = field(default_factory=set)  # objects seen at the current place, "mug 2"
    holding: str = ""  # "mug 2"
    visited: set[str] = field(default_factory=set)
    seen_at: dict[str, str] = field(default_factory=dict)  # object kind -> place where last seen
    transformed: set[str] = field(default_factory=set)  # objects heated / cooled / cleaned
    placed: set[str] = field(default_factory=set)  # objects moved into a receptacle
    last_repeated: bool = False  # the last action repeated the one before with the same feedback
    # What the commands that worked did (a command the game refused changes nothing): the view a
    # policy's features take, which reads commands rather than the game's sentences.
    cmd_held: str = ""  # "mug 2" after "take mug 2 from ...", until a move
    cmd_here: str = ""
    cmd_visited: set[str] = field(default_factory=set)
    cmd_placed: set[str] = field(default_factory=set)
    opened: set[str] = field(default_factory=set)  # places opened
    words_at: dict[str, set[str]] = field(default_factory=dict)  # place -> words the game said there
    used: bool = False  # a lamp was turned on
    processed: bool = False  # the held object went through a heat/cool/clean command


def world_state(pairs: Sequence[tuple[str, str]]) -> WorldState:
    """The situation after these (action, feedback) pairs."""
    s = WorldState(started=bool(pairs))
    for i, (action, feedback) in enumerate(pairs):
        a, fb = normalize_action(action), feedback or ""
        low = fb.lower()
        if low.startswith("you arrive at"):
            s.at = a[6:] if a.startswith("go to ") else s.at
            s.visited.add(s.at)
            s.closed_here = " is closed" in low
            s.in_sight = set()
        elif low.startswith("you open"):
            s.closed_here = False
        elif low.startswith("you pick up"):
            m = ENTITY.search(low[len("you pick up"):])
            s.holding = f"{m.group(1)} {m.group(2)}" if m else ""
        elif low.startswith("you move"):
            if s.holding:
                s.placed.add(s.holding)
            s.holding = ""
        elif re.match(r"you (heat|cool|clean) ", low) and s.holding:
            s.transformed.add(s.holding)
        seen = _SEEN.search(fb)
        if seen and (low.startswith("you arrive") or low.startswith("you open") or a.startswith("examine")
                     or a == "look"):
            for k, num in ENTITY.findall(seen.group(1).lower()):
                s.in_sight.add(f"{k} {num}")
                s.seen_at[k] = s.at
        if s.holding in s.in_sight:
            s.in_sight.discard(s.holding)
        s.last_repeated = i > 0 and normalize_action(pairs[i - 1][0]) == a and \
            " ".join((pairs[i - 1][1] or "").split()) == " ".join(fb.split())
        if action and not fb.startswith("Nothing happens"):
            verb, obj, rec = parse_command(action)
            if verb == "go":
                s.cmd_here = rec
                s.cmd_visited.add(rec)
            elif verb == "open":
                s.opened.add(rec)
            elif verb == "take":
                s.cmd_held, s.processed = obj, False
            elif verb == "move":
                s.cmd_placed.add(obj)
                s.cmd_held, s.processed = "", False
            elif verb in ("heat", "cool", "clean") and obj == s.cmd_held:
                s.processed = True
            elif verb == "use":
                s.used = True
            if verb in ("go", "open") and rec:
                s.words_at[rec] = set(_WORDS.findall(fb.lower())) - set(rec.split())
    return s
