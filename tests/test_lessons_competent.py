"""Lessons given to a competent policy speak only where they apply: a correction that does not
transfer is never retrieved, a lesson whose situation does not hold puts neither a hint nor a word
into the prompt, and what a lesson asks for there is the step due, not a way that leads from it
(TextDomain, no world pack). Each is a way lessons made a trained policy lose games it won alone."""

from __future__ import annotations

from types import SimpleNamespace as NS

import torch

from skillmem import SkillMemory
from skillmem.domain import TextDomain
from skillmem.embed import HashingEmbedder
from skillmem.policy import CPUPolicy, make_prompt
from skillmem.reflect import OfflineWriter, reflect_pending
from skillmem.retrieve import render_memory

from test_lessons_transfer import GOAL, GOAL2, START, SUCCESS, hinted, offered

D = TextDomain()


def record(memory, steps, won, directive=None):
    with memory.episode(goal=GOAL, task_type="polish_then_place", task_id="task-1", split="train") as ep:
        for i, (a, f, adm) in enumerate(steps):
            ep.step(observation=START if i == 0 else "", action=a, feedback=f, admissible=list(adm))
        ep.finish(success=won, source="environment")
    if directive is not None:
        memory.feedback(ep.id, directive[0], corrected_action=directive[1], source="expert")
    return ep.id


def test_a_correction_that_does_not_transfer_waits_in_quarantine_and_is_never_retrieved(tmp_path):
    memory = SkillMemory(tmp_path / "m.db", embedder=HashingEmbedder())
    record(memory, SUCCESS, True)
    # Where to look first was the teacher's knowledge: the correction is that first choice only.
    record(memory, [("walk to box 1", "You arrive at box 1. You see a coin 2.", offered()),
                    ("walk to vault 1", "You arrive at vault 1.", offered("take coin 2 from box 1"))], False,
           directive=(0, "walk to box 2"))
    reflect_pending(memory, OfflineWriter(domain=D), progress=False, domain=D)
    [lesson] = memory.lessons()
    assert lesson.provenance.get("transferable") is False and lesson.status.value == "quarantined", lesson
    ctx = memory.retrieve(GOAL, START, task_type="polish_then_place", kinds=("lesson",))
    assert not ctx.items, "a quarantined lesson takes no place among the retrieved ones"
    with memory.engine.connect() as c:
        from sqlalchemy import text

        reason = c.execute(text("SELECT reason FROM lesson_events WHERE action = 'quarantine'")).scalar()
    assert "held it back" in reason and "first choice" in reason, reason
    memory.approve_lesson(lesson.id, reason="a person read it")  # a person may still release it
    assert memory.retrieve(GOAL, START, task_type="polish_then_place", kinds=("lesson",)).items
    memory.close()


SKIP = NS(trigger="polish then place, goal 'polish some [noun] and put it in [noun2]': after `take [noun] [value] "
                  "from [free] [value]` succeeded, while `polish [noun] [value] with [free] [value]` is not done yet",
          bad_action="walk to [noun2] [value]", fix="walk to wheel [value] (then polish [noun] [value] with [free] "
                                                   "[value])", provenance={}, scope="task")
TOOK = [("walk to shelf 4", "You arrive at shelf 4. You see a pearl 7."),
        ("take pearl 7 from shelf 4", "You pick up the pearl 7.")]


def test_a_lesson_whose_situation_does_not_hold_puts_no_word_in_the_prompt_and_moves_no_score():
    ctx = NS(lessons=[SKIP], demonstrations=[], text=render_memory([SKIP], [])[0])
    here = ["walk to wheel 1", "walk to chest 1", "walk to shelf 4"]
    before = make_prompt(GOAL2, [], ctx, here, domain=D)
    assert before.memory == "" and not before.hints, before
    policy = CPUPolicy(domain=D)
    with torch.no_grad():
        alone = policy.action_logprobs(make_prompt(GOAL2, [], None, here, domain=D), here)
        read = policy.action_logprobs(before, here)
    assert torch.equal(alone, read), "a lesson that says nothing here changes nothing here"
    after = make_prompt(GOAL2, TOOK, ctx, here, domain=D)
    assert "walk to wheel" in after.memory and after.hints, "where it applies it is read, in words and hints"


def test_where_the_step_due_is_possible_it_is_hinted_not_the_way_to_it():
    at_wheel = TOOK + [("walk to wheel 1", "You arrive at wheel 1.")]
    h = hinted([SKIP], GOAL2, at_wheel, ["polish pearl 7 with wheel 1", "walk to wheel 2", "walk to chest 1"])
    assert h.get("polish pearl 7 with wheel 1", 0) > 0 and "walk to wheel 2" not in h, h
    h = hinted([SKIP], GOAL2, TOOK, ["walk to wheel 1", "walk to chest 1"])
    assert h.get("walk to wheel 1", 0) > 0 and h.get("walk to chest 1", 0) < 0, "elsewhere the way to it is"


def test_going_to_another_of_the_goals_places_takes_nothing_back():
    # Written where the goal's place had to be opened: after going there, the episode went to another
    # one. In a goal whose place opens never, the situation holds all along: going to any of the
    # goal's places stays allowed (only the instance was the source episode's).
    lesson = NS(trigger="polish then place, goal 'polish some [noun] and put it in [noun2]': after `walk to [noun2] "
                        "[value]` succeeded, while `open [noun2] [value]` is not done yet",
                bad_action="walk to [noun2] [value]", fix="open [noun2] [value]", provenance={})
    history = [("walk to chest 1", "You arrive at chest 1."), ("walk to shelf 4", "You see a pearl 7."),
               ("take pearl 7 from shelf 4", "You pick up the pearl 7.")]
    h = hinted([lesson], GOAL2, history, ["walk to chest 1", "walk to chest 2", "walk to wheel 1"])
    assert not any(v < 0 for v in h.values()), h


def test_the_deployed_policy_writes_its_lessons_on_train_tasks_it_was_not_trained_on():
    from eval.envs.base import list_tasks
    from eval.runner import RunConfig, own_tasks

    seen = list_tasks("household", "train", 6, seed=1001)
    specs = seen[3:]
    new = own_tasks(RunConfig(), 0, 1, specs, seen)
    assert len(new) == len(specs) and all(s.split == "train" for s in new)
    assert not {s.task_id for s in new} & {s.task_id for s in seen}, "none of the tasks it was trained on"
    assert own_tasks(RunConfig(own_tasks="same"), 0, 1, specs, seen) == specs


def test_two_lessons_on_one_template_are_both_retrieved_though_their_lines_embed_as_near_copies(tmp_path):
    import numpy as np

    from skillmem.episode import LessonBase
    from skillmem.retrieve import RetrievalConfig

    memory = SkillMemory(tmp_path / "m.db", embedder=HashingEmbedder())
    head = "polish then place, goal 'polish some [noun] and put it in [noun2]': "
    skip = LessonBase(task_type="polish_then_place", trigger=head + "after `take [noun] [value] from [free] [value]` "
                      "succeeded, while `polish [noun] [value] with [free] [value]` is not done yet",
                      bad_action="walk to [noun2] [value]", fix="walk to wheel [value]")
    first = LessonBase(task_type="polish_then_place", trigger=head + "while `take [noun] [value] from [noun2] [value]` "
                       "is not done yet", bad_action="walk to wheel [value]", fix="take [noun] [value] from [noun2] [value]")
    ids = [memory.add_lesson(x)[0] for x in (skip, first)]
    vecs = memory.embedder.encode([f"When {x.trigger}: avoid {x.bad_action}; instead {x.fix}" for x in (skip, first)])
    near = float(np.dot(vecs[0], vecs[1]))
    ctx = memory.retrieve(GOAL2, "", task_type="polish_then_place", kinds=("lesson",), record=False,
                          config=RetrievalConfig(k=4, near_copy_cosine=min(near, 0.95) - 0.01))
    assert sorted(i for _, i, _, _ in ctx.items) == sorted(ids), "they give other advice: neither is a copy"
    memory.add_lessons_bulk([LessonBase(**{**skip.model_dump(), "fix": "walk to wheel [value]!"})])  # a copy
    ctx = memory.retrieve(GOAL2, "", task_type="polish_then_place", kinds=("lesson",), record=False,
                          config=RetrievalConfig(k=4, near_copy_cosine=min(near, 0.95) - 0.01))
    assert len(ctx.items) == 2, "a lesson saying the same again is still a copy"
    memory.close()


def test_a_lesson_saying_before_y_do_f_still_asks_for_f_where_y_is_offered():
    # Hand-written or an LLM's: "after the lookup, while the refund is not done yet: convert first,
    # not the refund". The refund is offered all along; the lesson asks for the conversion.
    goal = "refund order B22 in full."
    refund = "refund(order_id='[id]', amount=[value])"
    les = NS(trigger=f"after `lookup_order(order_id='[id]')` succeeded, while `{refund}` is not done yet",
             bad_action=refund, fix="call convert_currency(order_id='[id]')", provenance={})
    adm = ["refund(order_id='B22', amount=10.0)", "convert_currency(order_id='B22')", "lookup_order(order_id='B22')"]
    h = hinted([les], goal, [("lookup_order(order_id='B22')", '{"amount": 10.0}')], adm)
    assert h.get("convert_currency(order_id='B22')", 0) > 0 and h.get(adm[0], 0) < 0, h


def test_a_bulk_import_keeps_a_lesson_its_writer_held_back(tmp_path):
    from skillmem.episode import LessonBase

    memory = SkillMemory(tmp_path / "m.db", embedder=HashingEmbedder())
    held = LessonBase(trigger="at the start", fix="go to box 2", status="quarantined")
    free = LessonBase(trigger="at the start", fix="look first")
    ids = memory.add_lessons_bulk([held, free])
    status = {l.id: l.status.value for l in memory.lessons()}
    assert [status[i] for i in ids] == ["quarantined", "active"], status
    memory.close()


def test_a_step_offered_and_not_taken_forbids_nothing_where_it_is_not_offered():
    # Written where the object lay in the goal's own place: after opening it, take it from there, not
    # walk off. In an episode whose object is elsewhere that take never comes: walking back to the
    # goal's place (to put the object) stays allowed.
    lesson = NS(trigger="polish then place, goal 'polish some [noun] and put it in [noun2]': after `open [noun2] "
                        "[value]` succeeded, while `take [noun] [value] from [noun2] [value]` is not done yet",
                bad_action="walk to [noun2] [value]",
                fix="take [noun] [value] from [noun2] [value] (offered here: the goal's next step)", provenance={})
    opened = [("walk to chest 1", "You arrive at chest 1."), ("open chest 1", "You open the chest 1. It is empty.")]
    elsewhere = opened + [("walk to shelf 4", "You see a pearl 7."), ("take pearl 7 from shelf 4", "You pick it up.")]
    h = hinted([lesson], GOAL2, elsewhere, ["walk to chest 1", "walk to wheel 1", "polish pearl 7 with wheel 1"])
    assert not any(v < 0 for v in h.values()), h
    here = [("walk to chest 1", "You arrive at chest 1."), ("open chest 1", "You open the chest 1. You see a pearl 7.")]
    h = hinted([lesson], GOAL2, here, ["take pearl 7 from chest 1", "walk to chest 2", "walk to wheel 1"])
    assert h.get("take pearl 7 from chest 1", 0) > 0 and h.get("walk to chest 2", 0) < 0, h


def test_what_a_near_copy_says_is_worked_out_once_per_lesson_version(tmp_path, monkeypatch):
    import skillmem.curate as curate
    from skillmem.episode import LessonBase
    from skillmem.retrieve import RetrievalConfig

    memory = SkillMemory(tmp_path / "m.db", embedder=HashingEmbedder())
    for i in range(3):  # near copies of one another, each saying another thing
        memory.add_lessons_bulk([LessonBase(task_type="t", trigger="the drawer is closed", fix=f"open drawer {i}")])
    calls = []
    real = curate.lesson_parts
    monkeypatch.setattr(curate, "lesson_parts", lambda row: calls.append(row.id) or real(row))
    config = RetrievalConfig(k=3, near_copy_cosine=-1.0)  # every candidate is a near copy: each is asked
    first = memory.retrieve("the drawer is closed", task_type="t", kinds=("lesson",), record=False, config=config)
    again = memory.retrieve("the drawer is closed", task_type="t", kinds=("lesson",), record=False, config=config)
    assert len(first.items) == 3 and first.items == again.items
    assert sorted(calls) == sorted(set(calls)), "a lesson's parts are normalized once, not per retrieval"
    memory.close()
