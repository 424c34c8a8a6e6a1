"""Memory learned in one wording or env carries to real ALFWorld: goal rewordings, exploration, the teacher."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
from conftest import require

from skillmem.policy import hints_from_context
from skillmem.domains.alfworld import HouseholdDomain
from skillmem.domains.alfworld.hints import goal_slots

H = HouseholdDomain()


@pytest.mark.parametrize("template,goal,want", [
    ("cool some [object] and put it in [receptacle]", "put a cool cup in microwave.",
     {"object": "cup", "receptacle": "microwave"}),
    ("put a hot [object] in [receptacle]", "heat some egg and put it in garbagecan.",
     {"object": "egg", "receptacle": "garbagecan"}),
    ("find two [object] and put them in [receptacle]", "put two creditcard in dresser.",
     {"object": "creditcard", "receptacle": "dresser"}),
    ("examine the [object] with the desklamp", "look at pillow under the desklamp.", {"object": "pillow"}),
    ("look at [object] under the desklamp", "examine the pillow with the floorlamp.",
     {"object": "pillow", "=desklamp": "floorlamp"}),
])
def test_goal_slots_read_the_other_wording_of_the_same_task(template, goal, want):
    assert goal_slots(template, goal) == want


def test_goal_slots_do_not_read_another_task_type():
    assert goal_slots("look at [object] under the desklamp", "put a cool cup in microwave.") == {}


def test_demo_in_one_wording_steers_a_goal_in_the_other():
    demo = NS(goal_template="cool some [object] and put it in [receptacle]",
              plan=["go to [receptacle2]", "take [object] from [receptacle2]", "go to fridge",
                    "cool [object] with fridge", "go to [receptacle]", "move [object] to [receptacle]"])
    hist = [("go to countertop 1", "On the countertop 1, you see a cup 1, and a mug 2.")]
    adm = ["go to fridge 1", "take cup 1 from countertop 1", "take mug 2 from countertop 1"]
    h = hints_from_context(NS(lessons=[], demonstrations=[demo]), "put a cool cup in microwave.", hist, adm, H)
    assert h.bonus.get("take cup 1 from countertop 1", 0) > 0 and "take mug 2 from countertop 1" not in h.bonus


def test_exploration_tries_new_kinds_of_places_and_open_surfaces_first():
    demo = NS(goal_template="put a [object] in [receptacle]",
              plan=["go to [receptacle2]", "take [object] from [receptacle2]", "go to [receptacle]",
                    "move [object] to [receptacle]"])
    hist = [("go to cabinet 1", "You arrive at cabinet 1. The cabinet 1 is closed."),
            ("open cabinet 1", "You open the cabinet 1. The cabinet 1 is open. In it, you see nothing."),
            ("go to countertop 1", "You arrive at countertop 1. On the countertop 1, you see a fork 1.")]
    adm = ["go to cabinet 2", "go to countertop 2", "go to drawer 1", "open cabinet 1"]
    h = hints_from_context(NS(lessons=[], demonstrations=[demo]), "put a knife in drawer.", hist, adm, H)
    assert h.bonus["go to drawer 1"] > h.bonus["go to countertop 2"] > h.bonus["go to cabinet 2"] > 0


def test_real_game_teacher_is_the_walkthrough():
    require("alfworld")
    from eval.envs.alfworld_env import AlfworldEnv
    from eval.envs.base import list_tasks

    env = AlfworldEnv(list_tasks("alfworld", "train", 1, seed=0)[0].task_id)
    try:
        assert env.expert_action() is None and env.optimal_actions() == set()  # not started
        env.reset()
        first = env.walkthrough[0]
        assert env.expert_action() == first and env.optimal_actions() == {first}
        env.step(first)
        assert env.optimal_actions() == ({env.walkthrough[1]} if len(env.walkthrough) > 1 else set())
    finally:
        env.close()
    assert env.expert_action() is None
