"""A correction that is only a first choice (offered from the start, before any goal step) stays
quarantined, unless the task type's recorded successes say it is a skill of the type: when all or
most of them make it too (values abstracted), it transfers (TextDomain, no world pack)."""

from __future__ import annotations

from skillmem import SkillMemory
from skillmem.domain import TextDomain
from skillmem.embed import HashingEmbedder
from skillmem.reflect import OfflineWriter, reflect_pending

D = TextDomain()
START = "You are in a workshop. You see an apron 1, a bin 1, a box 1, a crate 1, a wheel 1 and a vault 1."
OFFERED = ["wear apron 1", "walk to bin 1", "walk to box 1", "walk to crate 1", "walk to wheel 1",
           "walk to vault 1", "look"]


def success(gem: str, box: str, first: tuple[str, ...]) -> list[tuple[str, str]]:
    return [*[(a, "You put on the apron 1.") for a in first],
            (f"walk to {box}", f"You arrive at {box}. You see a {gem} 1."),
            (f"take {gem} 1 from {box}", f"You pick up the {gem} 1."),
            ("walk to vault 1", "You arrive at vault 1."),
            (f"put {gem} 1 in vault 1", f"You put the {gem} 1 in the vault 1.")]


def record(memory, gem, steps, won, directive=None):
    with memory.episode(goal=f"put some {gem} in vault.", task_type="fetch_then_place", task_id=f"task-{gem}",
                        split="train") as ep:
        for i, (a, f) in enumerate(steps):
            # A text game: what is offered follows where the agent is (the first step: the start's).
            here = [f"take {gem} 1 from {p}" for p in ("bin 1", "box 1", "crate 1")] + [f"put {gem} 1 in vault 1",
                                                                                       "take apron 1"] \
                if won else ["take coin 2 from bin 1"]
            ep.step(observation=START if i == 0 else "", action=a, feedback=f,
                    admissible=OFFERED + ([] if i == 0 else here))
        ep.finish(success=won, source="environment")
    if directive is not None:
        memory.feedback(ep.id, directive[0], corrected_action=directive[1], source="expert")


def lesson_after(tmp_path, successes, correction):
    tmp_path.mkdir(parents=True, exist_ok=True)
    memory = SkillMemory(tmp_path / "m.db", embedder=HashingEmbedder())
    for gem, box, first in successes:
        record(memory, gem, success(gem, box, first), True)
    record(memory, "pearl", [("walk to bin 1", "You arrive at bin 1. You see a coin 2."),
                             ("walk to vault 1", "You arrive at vault 1.")], False, directive=(0, correction))
    reflect_pending(memory, OfflineWriter(domain=D), progress=False, domain=D)
    lesson = next(l for l in memory.lessons() if l.bad_action.startswith("walk to bin"))
    memory.close()
    return lesson


def test_a_first_step_every_success_of_the_type_makes_transfers(tmp_path):
    # Every success puts the apron on first, whatever its object and where that was.
    lesson = lesson_after(tmp_path, [("gem", "crate 1", ("wear apron 1",)), ("coin", "box 1", ("wear apron 1",)),
                                     ("ring", "bin 1", ("wear apron 1",))], "wear apron 1")
    assert lesson.status.value == "active" and lesson.provenance.get("transferable") is not False, lesson
    assert "wear apron" in lesson.fix, lesson


def test_a_first_choice_only_one_success_made_still_waits_in_quarantine(tmp_path):
    # Where the object was held only in its own episode: one success went to the crate, the others elsewhere.
    lesson = lesson_after(tmp_path, [("gem", "crate 1", ()), ("coin", "box 1", ()), ("ring", "box 1", ())],
                          "walk to crate 1")
    assert lesson.provenance.get("transferable") is False and lesson.status.value == "quarantined", lesson
    assert "first choice" in lesson.provenance.get("why_not", ""), lesson


def test_one_success_is_not_evidence_of_a_skill_of_the_type(tmp_path):
    lesson = lesson_after(tmp_path, [("gem", "crate 1", ("wear apron 1",))], "wear apron 1")
    assert lesson.status.value == "quarantined", lesson


def test_a_first_choice_most_successes_make_transfers_and_half_of_them_does_not(tmp_path):
    # Two of three: most successes put the apron on first (the third did without): the type's rule.
    most = lesson_after(tmp_path / "a", [("gem", "crate 1", ("wear apron 1",)), ("coin", "box 1", ("wear apron 1",)),
                                         ("ring", "bin 1", ())], "wear apron 1")
    assert most.status.value == "active", most
    half = lesson_after(tmp_path / "b", [("gem", "crate 1", ("wear apron 1",)), ("coin", "box 1", ("wear apron 1",)),
                                         ("ring", "bin 1", ()), ("pearl", "box 1", ())], "wear apron 1")
    assert half.status.value == "quarantined", half


def test_where_to_look_stays_the_teachers_but_what_every_success_looked_for_transfers(tmp_path):
    # Each success found the apron in another place and put it on: where was a first choice, the
    # apron is what every success got first.
    def found(gem, box, where):
        return (gem, box, (f"walk to {where}", "take apron 1"))

    lesson = lesson_after(tmp_path, [found("gem", "crate 1", "bin 1"), found("coin", "crate 1", "wheel 1"),
                                     found("ring", "crate 1", "box 1")], "walk to box 1")
    assert lesson.status.value == "active", lesson
    assert lesson.fix.startswith("take apron") and "box" not in lesson.fix, lesson


def test_another_goal_value_at_the_same_step_is_not_the_same_correction():
    # Review R3: each success opened its own goal's first noun; this goal's second noun is another value.
    from skillmem.domain import TypePlan

    plans = [TypePlan(["open [noun]", "x"], ["open box", "x"]), TypePlan(["open [noun]"], ["open chest"]),
             TypePlan(["look"], ["look"])]
    values = {"[noun]": "gem", "[noun2]": "crate"}
    assert not D._type_skill("open crate", "open [noun2]", plans, values)
    # The same command played by most successes is (a place every episode has, named alike).
    plans = [TypePlan(["open crate"], ["open crate"]), TypePlan(["open crate"], ["open crate"]), TypePlan(["look"])]
    assert D._type_skill("open crate", "open [noun2]", plans, values)


def test_an_instance_number_made_free_is_no_evidence():
    # Every success went to some shelf first, each to another: `go to shelf [value]` is not a skill.
    from skillmem.domain import TypePlan

    plans = [TypePlan(["go to shelf [value]"], [f"go to shelf {n}"]) for n in (1, 2, 3)]
    assert not D._type_skill("go to shelf 4", "go to shelf [value]", plans, {"[noun]": "gem"})
    assert D._type_skill("go to shelf 2", "go to shelf [value]", plans + [TypePlan(["go to shelf [value]"],
                                                                                   ["go to shelf 2"])] * 2,
                         {"[noun]": "gem"})
