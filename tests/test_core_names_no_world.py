"""The core names no world: nothing in skillmem/ outside a pack imports one or uses its vocabulary."""

from __future__ import annotations

import re
from pathlib import Path

from skillmem.domains.alfworld import rules, state

CORE = Path(__file__).resolve().parents[1] / "skillmem"
# Words of the household pack that are also plain English: a core comment may say "safe" or "desk".
PLAIN_ENGLISH = {"safe", "bed", "desk", "shelf", "sofa", "cart", "toilet", "drawer", "cabinet", "dresser"}
TASK_TYPES = ("pick_and_place_simple", "pick_clean_then_place_in_recep", "pick_heat_then_place_in_recep",
              "pick_cool_then_place_in_recep", "look_at_obj_in_light", "pick_two_obj_and_place")
PHRASES = ("nothing happens", "you arrive at", "you pick up", "[receptacle", "alfworld", "household")
# The test-bench worlds' objects and verbs that are no plain English, examples in prose included: a
# core docstring that explains a generic rule with "heat a mug" or "read the cookbook" teaches the
# reader that the rule is the household's or the kitchen's.
WORLD_WORDS = ("mug", "potato", "apple", "tomato", "lettuce", "butterknife", "peppershaker", "saltshaker",
               "soapbar", "keychain", "creditcard", "spraybottle", "cookbook", "recipe", "heat", "slice",
               "twexpress", "textworld", "cookingworld",
               # TextWorld-Express's twc and cookingworld (none plain English a generic example needs)
               "laundry basket", "hat rack", "coat hanger", "key holder", "duvet", "pullover", "wardrobe",
               "chest of drawers", "clothes drier", "leek", "roast", "cutlery drawer", "toaster")


def vocabulary() -> list[str]:
    words = (set(state.RECEPTACLES) | set(state.APPLIANCES)) - PLAIN_ENGLISH
    assert "countertop" in words and rules.EXPLORE_FIX  # the pack really holds this vocabulary
    return sorted(words) + list(TASK_TYPES) + list(PHRASES) + list(WORLD_WORDS)


def core_files() -> list[Path]:
    return [f for f in sorted(CORE.rglob("*.py")) if "domains" not in f.relative_to(CORE).parts]


def test_core_files_use_no_pack_vocabulary():
    found = []
    for f in core_files():
        text = f.read_text().lower()
        for w in vocabulary():
            for m in re.finditer(rf"(?<![a-z]){re.escape(w)}(?![a-z])", text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{f.relative_to(CORE.parent)}:{line}: {w!r}")
    assert not found, "household vocabulary in the core (move it into skillmem/domains/alfworld/):\n" + \
        "\n".join(found)


def test_core_files_never_import_a_pack():
    imports = re.compile(r"^\s*(?:from|import)\s+(?:skillmem\.domains|\.+domains)\b", re.MULTILINE)
    offenders = [str(f.relative_to(CORE.parent)) for f in core_files() if imports.search(f.read_text())]
    assert not offenders, f"core files import a domain pack: {offenders}"
