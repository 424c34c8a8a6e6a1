"""Curation: dedupe and merge on insert, quarantine, status changes, edits, measured utility; each audited."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from conftest import open_memory
from skillmem import Demonstration, Lesson, SkillMemory
from skillmem.curate import CurationError, wilson_upper



def events(m: SkillMemory, item_id: int, kind: str = "lesson") -> list[tuple]:
    with m.engine.connect() as c:
        rows = [tuple(r) for r in c.execute(text(
            "SELECT action, before, after, reason, episode_id FROM lesson_events "
            "WHERE item_id = :i AND item_kind = :k ORDER BY id"), {"i": item_id, "k": kind})]
    # SQLite hands JSON columns back as text to a plain query.
    return [tuple(json.loads(v) if isinstance(v, str) and v[:1] in ("{", "[") else v for v in r) for r in rows]


def L(trigger="the microwave is closed", fix="open microwave 1 first", **kw) -> Lesson:
    kw.setdefault("task_type", "heat")
    return Lesson(trigger=trigger, fix=fix, **kw)


def test_exact_repeat_adds_support_and_the_source_episode(mem):
    a = mem.add_lesson(L(), episode_id="e1")
    b = mem.add_lesson(L(trigger="The microwave is closed.", fix="Open microwave 1 first"), episode_id="e2")
    assert a == (a[0], "created") and b == (a[0], "repeated")
    row = mem.lessons()[0]
    assert len(mem.lessons()) == 1 and row.support == 2 and row.source_episodes == ["e1", "e2"]
    assert row.version == 1 and row.trigger == "the microwave is closed"  # the stored words stay
    action, before, after, reason, ep = events(mem, a[0])[-1]
    assert [e[0] for e in events(mem, a[0])] == ["create", "merge"]
    assert ep == "e2" and reason == "exact repeat" and before["support"] == 1 and after["support"] == 2


def test_near_duplicate_is_merged_with_an_audited_event(mem):
    lid, _ = mem.add_lesson(L(source_episodes=["e1"]), episode_id="e1")
    got = mem.add_lesson(L(trigger="the microwave 1 is closed", source_episodes=["e2"]), episode_id="e2")
    assert got == (lid, "merged")
    row = mem.lessons()[0]
    assert row.support == 2 and row.version == 2 and row.source_episodes == ["e1", "e2"]
    assert row.trigger == "the microwave is closed"  # ties keep the existing text
    action, before, after, _, ep = events(mem, lid)[-1]
    assert action == "merge" and ep == "e2"
    assert before["support"] == 1 and after["support"] == 2 and after["version"] == 2


def test_grounded_lesson_text_wins_the_merge(mem):
    lid, _ = mem.add_lesson(L())
    mem.add_lesson(L(trigger="the microwave 1 is closed", grounded_on_feedback=True))
    row = mem.lessons()[0]
    assert row.trigger == "the microwave 1 is closed" and row.grounded_on_feedback


def test_different_scope_or_task_type_is_not_merged(mem):
    a, _ = mem.add_lesson(L())
    assert mem.add_lesson(L(task_type="cool"))[1] == "created"
    assert mem.add_lesson(L(scope="general", task_type="heat"))[1] == "created"
    assert mem.add_lesson(L(), namespace="other")[1] == "created"
    assert mem.add_lesson(L(trigger="an egg must be hot", fix="use the microwave not the fridge"))[1] == "created"
    assert len(mem.lessons()) == 4 and a == 1


def test_custom_merge_hook(mem):
    calls = []

    def hook(existing, new):
        calls.append((existing.trigger, new.trigger, existing.support))
        return Lesson(trigger="merged trigger about the closed microwave", fix=existing.fix, task_type="heat",
                      source_episodes=[])

    mem.merge_hook = hook
    lid, _ = mem.add_lesson(L(source_episodes=["e1"]))
    mem.add_lesson(L(trigger="the microwave 1 is closed", source_episodes=["e2"]))
    assert calls == [("the microwave is closed", "the microwave 1 is closed", 1)]
    row = mem.lessons()[0]
    assert row.trigger == "merged trigger about the closed microwave" and row.source_episodes == ["e1", "e2"]
    assert mem.retrieve("merged trigger closed microwave", task_type="heat").lessons[0].id == lid


def test_untrusted_namespace_is_quarantined_until_approved(db_url, tmp_path):
    m = open_memory(db_url, tmp_path, untrusted_namespaces=("web",))
    lid, action = m.add_lesson(L(), namespace="web")
    assert action == "created" and m.lessons(namespace="web")[0].status.value == "quarantined"
    assert [e[0] for e in events(m, lid)] == ["create", "quarantine"]
    assert m.retrieve("microwave closed", namespace="web", task_type="heat").lessons == []
    # An untrusted near-duplicate never rewrites a lesson: it waits in quarantine too.
    assert m.add_lesson(L(trigger="the microwave 1 is closed"), namespace="web")[1] == "created"
    m.approve_lesson(lid, reason="looked fine")
    assert [r.id for r in m.retrieve("microwave closed", namespace="web", task_type="heat").lessons] == [lid]
    assert events(m, lid)[-1][0] == "approve" and events(m, lid)[-1][3] == "looked fine"
    with pytest.raises(CurationError, match="quarantined"):
        m.approve_lesson(lid)
    m.close()


def test_retire_restore_and_edit_are_audited(mem):
    lid, _ = mem.add_lesson(L())
    mem.retire_lesson(lid, reason="bad advice")
    assert mem.lessons()[0].status.value == "retired"
    with pytest.raises(CurationError, match="retired"):
        mem.retire_lesson(lid)
    with pytest.raises(CurationError, match="no lesson"):
        mem.restore_lesson(999)
    mem.restore_lesson(lid, reason="it was fine")
    row = mem.edit_lesson(lid, fix="open the microwave door, then heat", reason="clearer")
    assert row.version == 2 and row.fix == "open the microwave door, then heat"
    with pytest.raises(CurationError, match="cannot edit"):
        mem.edit_lesson(lid, status="active")
    acts = events(mem, lid)
    assert [a[0] for a in acts] == ["create", "retire", "restore", "edit"]
    assert acts[1][1] == {"status": "active"} and acts[1][2] == {"status": "retired"}
    assert acts[3][1]["fix"] == "open microwave 1 first" and acts[3][2]["fix"] == row.fix
    ctx = mem.retrieve("microwave door", task_type="heat")
    assert "open the microwave door, then heat" in ctx.text


def test_demonstrations_dedupe(mem):
    d = Demonstration(task_type="heat", goal_template="heat [object]", plan=["take [object]", "heat [object]"])
    a = mem.add_demonstration(d, episode_id="e1")
    assert mem.add_demonstration(d, episode_id="e2") == (a[0], "repeated")
    d2 = Demonstration(task_type="heat", goal_template="heat [object]", plan=["take [object]", "heat [object] now"])
    assert mem.add_demonstration(d2, episode_id="e3") == (a[0], "merged")
    row = mem.demonstrations()[0]
    assert row.support == 3 and row.plan == d.plan and row.source_episodes == ["e1", "e2", "e3"]
    assert [e[0] for e in events(mem, a[0], "demonstration")] == ["create", "merge", "merge"]


# --------------------------------------------------------------------------- utility


def test_wilson_upper_bound():
    assert wilson_upper(0, 0) == 1.0
    assert wilson_upper(10, 10) == 1.0
    assert 0.18 < wilson_upper(1, 12) < 0.31
    assert wilson_upper(50, 100) < 0.59


def run_episodes(m: SkillMemory, n: int, successes: int, *, lesson_query: str | None, split: str = "train",
                 task_type: str = "heat") -> None:
    for i in range(n):
        with m.episode(task="heat an egg", task_type=task_type, split=split) as ep:
            if lesson_query:
                m.retrieve(lesson_query, task_type=task_type, episode_id=ep.id, k=1, k_demos=0)
            ep.step(observation="o", action="a", feedback="f")
            ep.finish(success=i < successes, source="environment")


def test_harmful_lesson_is_retired_with_its_numbers(mem):
    bad, _ = mem.add_lesson(L(trigger="toaster", fix="put the egg in the toaster"))
    good, _ = mem.add_lesson(L(trigger="microwave", fix="heat the egg with the microwave"))
    run_episodes(mem, 12, 1, lesson_query="toaster")  # with the bad lesson: 1/12
    run_episodes(mem, 12, 9, lesson_query="microwave")  # with the good one: 9/12
    run_episodes(mem, 20, 12, lesson_query=None)  # neither
    # An evaluation split never counts: 30 failures there change nothing.
    run_episodes(mem, 30, 0, lesson_query="microwave", split="valid_seen")
    util = mem.lesson_utility()
    assert util[bad]["uses"] == 12 and util[bad]["successes"] == 1 and util[good]["uses"] == 12
    assert util[bad]["baseline"] == pytest.approx(21 / 32, abs=1e-3)
    assert mem.update_utility() == [bad]
    assert {r.id: r.status.value for r in mem.lessons()} == {bad: "retired", good: "active"}
    action, _, after, reason, _ = events(mem, bad)[-1]
    assert action == "retire" and after["uses"] == 12 and after["upper"] < after["baseline"] and "1/12" in reason
    assert mem.update_utility() == []  # retired lessons are not measured again
    mem.restore_lesson(bad, reason="people disagree")
    assert mem.lessons()[0].status.value == "active"


def test_too_few_uses_never_retire(mem):
    bad, _ = mem.add_lesson(L(trigger="toaster", fix="put the egg in the toaster"))
    run_episodes(mem, 5, 0, lesson_query="toaster")
    run_episodes(mem, 10, 10, lesson_query=None)
    assert mem.update_utility() == [] and mem.update_utility(min_uses=5) == [bad]


def test_unverified_outcomes_do_not_count(mem):
    mem.add_lesson(L(trigger="toaster", fix="put the egg in the toaster"))
    for _ in range(12):
        with mem.episode(task="heat", task_type="heat") as ep:
            mem.retrieve("toaster", task_type="heat", episode_id=ep.id)
            ep.finish(success=None, self_reported=False)
    assert mem.lesson_utility() == {} and mem.update_utility() == []


# --------------------------------------------------------------------------- semantic dedupe


def test_paraphrase_is_merged_with_the_real_model(tmp_path):
    from skillmem.embed import default_embedder

    m = SkillMemory(str(tmp_path / "s.db"), embedder=default_embedder())
    a, _ = m.add_lesson(Lesson(trigger="the fridge is closed", bad_action="put apple in fridge 1",
                               fix="open fridge 1 before putting things in it", task_type="cool"))
    assert m.add_lesson(Lesson(trigger="the fridge is shut", bad_action="put apple in fridge 1",
                               fix="open fridge 1 before putting things in it", task_type="cool")) == (a, "merged")
    assert m.add_lesson(Lesson(trigger="the apple is warm", bad_action="put apple in fridge 1",
                               fix="cool the apple with fridge 1", task_type="cool"))[1] == "created"
    m.close()


# --------------------------------------------------------------------------- what a lesson says
#
# With the real default embedder (all-MiniLM-L6-v2): the whole-line texts of these pairs embed
# at cosine 0.93-1.0, which merged them before curation compared lessons part by part.


@pytest.fixture
def real_mem(db_url, tmp_path):
    from skillmem.embed import default_embedder

    m = open_memory(db_url, tmp_path, embedder=default_embedder())
    yield m
    m.close()


def test_opposite_situations_are_kept_apart(real_mem):
    # The real ALFWorld case: "in sight: take it" was merged into "not in sight: explore".
    take = Lesson(trigger="hands empty, the [object] is in sight", bad_action="go to [receptacle2]",
                  fix="take [object] from [receptacle2]")
    explore = Lesson(trigger="hands empty, the [object] is not in sight", bad_action="examine [receptacle2]",
                     fix="go to a place not yet visited")
    a, _ = real_mem.add_lesson(take, episode_id="e1")
    b, action = real_mem.add_lesson(explore, episode_id="e2")
    assert action == "created" and a != b
    assert sorted(r.fix for r in real_mem.lessons()) == ["go to a place not yet visited",
                                                         "take [object] from [receptacle2]"]
    reason = events(real_mem, b)[0][3]
    assert reason.startswith(f"kept apart from #{a}: trigger: one is negated"), reason


@pytest.mark.parametrize("a, b", [
    # swapped bad action and fix: the same words, opposite advice
    (("the page asks to confirm the purchase", "click cancel", "click confirm"),
     ("the page asks to confirm the purchase", "click confirm", "click cancel")),
    # another number
    (("the refund tool times out", "give up", "retry refund once after 5 seconds"),
     ("the refund tool times out", "give up", "retry refund once after 60 seconds")),
    # opposite words, no negation
    (("the list must be sorted newest first", "sort by date", "sort by date in descending order"),
     ("the list must be sorted oldest first", "sort by date", "sort by date in ascending order")),
], ids=["swapped", "number", "antonyms"])
def test_differing_advice_is_never_merged(real_mem, a, b):
    first, _ = real_mem.add_lesson(Lesson(trigger=a[0], bad_action=a[1], fix=a[2]), episode_id="e1")
    second, action = real_mem.add_lesson(Lesson(trigger=b[0], bad_action=b[1], fix=b[2]), episode_id="e2")
    assert action == "created" and first != second
    assert {(r.bad_action, r.fix) for r in real_mem.lessons()} == {a[1:], b[1:]}


def test_a_paraphrase_is_merged_and_keeps_both_episodes(real_mem):
    a, _ = real_mem.add_lesson(Lesson(trigger="the tests fail with ImportError",
                                      fix="install the missing package and rerun the tests"), episode_id="e1")
    b, action = real_mem.add_lesson(Lesson(trigger="the tests fail with an ImportError",
                                           fix="install the missing package, then rerun the tests"), episode_id="e2")
    assert (b, action) == (a, "merged")
    row = real_mem.lessons()[0]
    assert row.support == 2 and row.source_episodes == ["e1", "e2"] and row.version == 2
    assert events(real_mem, a)[-1][3].startswith("paraphrase")


@pytest.mark.slow  # 51 s on the loaded machine; the real-model merge tests above run by default
def test_the_benchmark_pairs(sqlite_url, tmp_path):
    # A slice of eval/bench/curation.py's pairs (the whole set: python -m eval bench curation).
    from eval.bench.curation import measure
    from eval.bench.curation_pairs import DIFFERENT, HELDOUT_DIFFERENT, SAME
    from skillmem.embed import default_embedder

    from skillmem.reflect.safety import SafetyConfig

    m = open_memory(sqlite_url, tmp_path, embedder=default_embedder())
    m.safety = SafetyConfig(allow_code=True)  # the shell agent's pairs name shell commands
    different = DIFFERENT[::3] + HELDOUT_DIFFERENT[::3]
    assert [r for r in measure(m, different, "diff") if r["folded"]] == []
    same = measure(m, SAME[::4], "same")
    assert sum(r["folded"] for r in same) >= len(same) - 2
    m.close()


def test_field_conflicts_name_what_differs():
    from skillmem.curate import field_conflict, normalize

    def conflict(a: str, b: str):
        return field_conflict(normalize(a), normalize(b))

    assert conflict("The form isn't visible.", "the form is not visible") is None
    assert conflict("avoid match statements", "do not use match statements") is None
    assert conflict("the form is visible", "the form is not visible") == "one is negated"
    assert conflict("retry after 5 s", "retry after 60 s") == "different names (5, 60)"
    assert conflict("call refund(order_id)", "call lookup_order(order_id)").startswith("different names")
    assert conflict("the drawer is open", "the drawer is closed") == "opposite words (open / closed)"
    assert conflict("the field is valid", "the field is invalid") == "opposite words (valid / invalid)"
    assert conflict("the microwave is closed", "the microwave 1 is closed") is None  # an instance named
    assert conflict("", "look") == "one is empty"


def test_the_core_rules_name_no_world():
    from pathlib import Path

    import skillmem.curate as curate

    src = Path(curate.__file__).read_text().lower()
    for word in ("microwave", "fridge", "receptacle", "countertop", "cabinet", "drawer", "apple", "alfworld"):
        assert word not in src, word


def test_demonstrations_whose_plans_do_other_steps_stay_apart(mem):
    # Two recipes of one goal: alike in the embedding, not in what they do.
    a = Demonstration(task_type="cook", goal_template="cook the meal",
                      plan=["take [from read cookbook]", "cook [from read cookbook] in oven", "eat meal"])
    b = Demonstration(task_type="cook", goal_template="cook the meal",
                      plan=["take [from read cookbook]", "cook [from read cookbook] in toaster", "eat meal"])
    assert mem.add_demonstration(a, episode_id="e1")[1] == "created"
    assert mem.add_demonstration(b, episode_id="e2")[1] == "created"
    assert len(mem.demonstrations()) == 2
