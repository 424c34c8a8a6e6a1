"""The offline writer on real failed ALFWorld games: real game feedback, pivot at the wrong step.

Three real train games (the game engine, not just the walkthrough files) are played along their
walkthrough with one step replaced by a wrong command, then the rest of the walkthrough until
the step limit, so every observation is the game's own text. The episodes are recorded with
SkillMemory (SQLite in tmp_path, the hashing embedder to stay fast), finished with the game's
verdict and reflected through the queue with the offline writer. Ground truth: the replaced step,
the first step where the action left the walkthrough (the game's expert plan).

Needs the optional `alfworld` and `textworld` packages and the games in ../shared/alfworld
(or $SKILLMEM_ALFWORLD_DIR); skips cleanly without them.
"""

from __future__ import annotations

import random
import re

from conftest import require

from eval.bench.reflection import play_walkthrough
from eval.envs.alfworld_env import AlfworldEnv, list_tasks
from skillmem import SkillMemory
from skillmem.domains.alfworld import HouseholdDomain
from skillmem.embed import HashingEmbedder
from skillmem.reflect import OfflineWriter, analyse, load_trace, nearest_success, reflect_pending

require("alfworld")  # the packages and the games: a skip with the reason, a failure under CI

H = HouseholdDomain()  # real ALFWorld games: the household pack reads them
_CONCRETE = re.compile(r"\b[a-z]+ \d+\b")
FRIDGE_GAME = "train/pick_heat_then_place_in_recep-Mug-None-CoffeeMachine-7/trial_T20190908_123421_558588"


def _first(walk: list[str], verb: str) -> int:
    return next(i for i, a in enumerate(walk) if a.startswith(verb))


def test_offline_writer_on_real_alfworld_failures(tmp_path):
    memory = SkillMemory(tmp_path / "m.db", embedder=HashingEmbedder())
    games = {s.task_type: s.task_id for s in list_tasks("train", 6, seed=0)}
    # (game, perturbation, which walkthrough step it replaces, a success of the same game in memory?)
    plans = [(games["pick_and_place_simple"], "wrong_object", "take", False),
             (games["pick_clean_then_place_in_recep"], "wrong_object", "clean", False),
             (games["pick_heat_then_place_in_recep"], "wrong_place", "go to microwave", True),
             # The lesson's bad action is "take [object] from fridge": once refused as code ("from <word>").
             (FRIDGE_GAME, "wrong_object", "take mug 2 from fridge", False)]
    failures = []  # (episode, true pivot, the game's feedback at that step, perturbation)
    for task_id, kind, verb, with_success in plans:
        env = AlfworldEnv(task_id)
        try:
            env.reset()
            if with_success:  # the walkthrough played to its win: the same-task contrast
                _, won, _, _, _ = play_walkthrough(memory, env, None, random.Random(0))
                assert won, "the walkthrough wins its own game"
            k = _first(env.walkthrough, verb)
            ep, won, truth, experts, feedback = play_walkthrough(memory, env, (kind, k), random.Random(1))
        finally:
            env.close()
        assert not won and truth == k, (task_id, won, truth, k)
        assert experts[k] == env.walkthrough[k], "the game's expert was still on its walkthrough"
        if kind == "wrong_object":
            assert feedback[k] == "Nothing happens.", "the game refuses a command naming an object not there"
        else:
            assert feedback[k].startswith("You arrive at ") and "microwave" not in feedback[k].split(".")[0]
        failures.append((ep, truth, feedback, kind))

    report = reflect_pending(memory, OfflineWriter(domain=H), progress=False)
    assert report.errors == 0 and report.lessons >= 1, report.results
    lessons = memory.lessons()
    assert lessons and all(l.provenance["writer"] == "offline" for l in lessons)
    for ep, truth, feedback, kind in failures:
        trace = load_trace(memory, ep, H)
        assert [s.feedback for s in trace.steps] == feedback, "the store keeps the game's text verbatim"
        a = analyse(trace, nearest_success(memory, trace, domain=H))  # what the queue analysed
        assert a.pivot.step == truth, (kind, a.pivot, [s.action for s in trace.steps])
        assert a.pivot.reason == ("failure_feedback" if kind == "wrong_object" else "diverged_from_same_task")
        # The game's own words reach the writer, slotted: the feedback at the pivot and after it.
        real = a.slots.abstract(feedback[truth])
        assert a.feedback_at_pivot == real[:200] or a.feedback_at_pivot.startswith(real[:100])
        rendered = a.render()
        assert all(a.slots.abstract(fb)[:60] in rendered for fb in feedback)
        [lesson] = [l for l in lessons if ep in l.source_episodes]
        assert lesson.pivot_step == truth
        for text in (lesson.trigger, lesson.bad_action, lesson.fix):
            assert not _CONCRETE.search(text), f"a lesson names no concrete object: {text!r}"
    memory.close()
