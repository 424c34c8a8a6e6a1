"""TextDomain names the mistakes any text or tool agent makes, with nothing of any world written in:
look-alike values, searching again what was already seen, commands the world did not offer or
answered with a no-op, things never shown, and a move after which the next step found nothing
it named. Lessons read as advice and name a value an earlier tool returned by where it came from."""

from __future__ import annotations

from skillmem.domain import SlotMap, StepView, TextDomain, resembles
from skillmem.reflect import OfflineWriter, analyse
from skillmem.reflect.trace import Trace, TraceStep

D = TextDomain()
ROOM = "You are in a room. Looking around, you see a table 1, a shelf 1, a box 1 and a door 1."
NOOP = "That does nothing."  # any world's "nothing happened" answer, learnt from its repeats


def trace(goal: str, steps: list[tuple], outcome: str = "failure") -> Trace:
    out = []
    for i, st in enumerate(steps):
        action, feedback, *rest = st
        out.append(TraceStep(i, ROOM if i == 0 else "", action, feedback, admissible=rest[0] if rest else None))
    return Trace("ep", goal, "t", "task", outcome, out).read_with(D)


def lesson(t: Trace):
    a = analyse(t, None, D)
    return a, OfflineWriter(domain=D).write_lesson(a)


def test_slots_keep_only_goal_words_an_action_names_and_keep_their_numbers():
    goal = "Refund order ORD-1004 in full for the customer"
    calls = ["lookup_order(order_id='ORD-1004')", "refund(order_id='ORD-1004', amount=80.0)"]
    m = SlotMap.from_goal(goal, calls)
    assert m.values == {"[id]": "ORD-1004"}, m.values  # "order" is an argument *name*, never a value
    assert m.abstract_prose(goal, nouns=True) == "Refund order [id] in full for the customer"
    g = "put a clean apple in fridge"
    full = SlotMap.from_goal(g)
    kept = SlotMap.from_goal(g, ["take apple 1 from table 1", "clean apple 1 with basin 1", "move apple 1 to fridge 1"])
    assert set(kept.values.values()) == {"apple", "fridge"}  # "clean" is only ever a verb here
    assert all(full.values[k] == v for k, v in kept.values.items()), "a slot names the same word either way"


def test_resembles_is_close_but_never_equal():
    assert resembles("butterknife", "knife") and resembles("ORD-1005", "ORD-1004") and resembles("ORD-1030", "ORD-1003")
    assert not resembles("knife", "knife") and not resembles("ord-1004", "ORD-1004")
    assert not resembles("ORD-20041", "ORD-1004") and not resembles("apple", "fridge")


def test_a_reply_given_to_different_commands_that_names_neither_is_a_no_op():
    steps = [StepView("go to shelf 1", "You arrive at shelf 1."), StepView("open box 7", NOOP),
             StepView("go to table 1", "You arrive at table 1."), StepView("take key 1 from table 1", NOOP)]
    assert set(D.noop_replies(steps)) == {1, 3}
    # One command answered twice is a repeat, not a no-op; tool calls and replies naming the command never are.
    assert D.noop_replies([StepView("open box 7", NOOP), StepView("open box 7", NOOP)]) == {}
    assert D.noop_replies([StepView("refund(order_id='A')", "Done."), StepView("refund(order_id='B')", "Done.")]) == {}
    assert D.noop_replies([StepView("open box 1", "The box opens."), StepView("open door 1", "The door opens.")]) == {}


def test_a_command_the_world_did_not_offer_is_invalid():
    offered = ("go to table 1", "go to shelf 1", "look")
    assert D.failure(StepView("put key 1 in box 1", "x", admissible=offered)).signal.startswith("not an admissible")
    assert not D.failure(StepView("go to table 1", "You arrive at table 1.", admissible=offered))
    assert not D.failure(StepView("put key 1 in box 1", "x"))  # no list given: nothing to compare with
    t = trace("put a key in box", [("go to table 1", "You arrive at table 1. On the table 1, you see a key 1."),
                                   ("take key 1 from table 1", "You pick up the key 1 from the table 1."),
                                   ("go to box 1", "You arrive at box 1."),
                                   ("put key 1 in box 1", "Huh?", ("move key 1 to box 1", "look"))])
    a, les = lesson(t)
    assert a.pivot.step == 3 and "invalid command" in les.provenance["mistake"]


def test_a_look_alike_of_what_the_goal_names_is_the_mistake_even_when_it_worked():
    t = trace("put a knife in box", [
        ("go to table 1", "You arrive at table 1. On the table 1, you see a butterknife 1, and a knife 2."),
        ("take butterknife 1 from table 1", "You pick up the butterknife 1 from the table 1."),
        ("go to box 1", "You arrive at box 1. The box 1 is open."),
        ("move knife 2 to box 1", NOOP), ("look", "You see a box 1."), ("move knife 1 to box 1", NOOP)])
    a, les = lesson(t)
    assert a.pivot.step == 1, a.pivot
    assert "look-alike" in les.provenance["mistake"] and "look-alike" in les.fix
    assert "knife 2" not in les.fix and "butterknife 1" not in les.fix


def test_a_look_alike_id_names_the_argument_and_never_the_ids():
    steps = [StepView("lookup_order(order_id='ORD-1004')", '{"order_id": "ORD-1004", "total": 64.0}'),
             StepView("refund(order_id='ORD-1005', amount=64.0)", '{"status": "refunded"}')]
    mistake, advice = D.diagnose("Refund order ORD-1004 in full.", steps, 1)
    assert "look-alike value" in mistake and "order_id" in advice and "[id]" in advice and "ORD" not in advice


def test_going_back_to_what_was_already_seen_is_named_as_such():
    t = trace("put a key in box", [
        ("go to shelf 1", "You arrive at shelf 1. On the shelf 1, you see a cup 1."),
        ("go to table 1", "You arrive at table 1. On the table 1, you see a pen 1."),
        ("go to shelf 1", "You arrive at shelf 1. On the shelf 1, you see a cup 1."),
        ("take key 1 from door 1", NOOP), ("open box 1", NOOP)])
    a, les = lesson(t)
    assert a.pivot.step == 2, a.pivot
    assert "already seen" in les.provenance["mistake"] and "not yet tried" in les.fix


def test_an_object_never_shown_is_hallucinated():
    t = trace("put a key in box", [
        ("go to table 1", "You arrive at table 1. On the table 1, you see a pen 1."),
        ("take spoon 9 from table 1", NOOP), ("go to box 1", "You arrive at box 1."), ("open box 1", NOOP)])
    a, les = lesson(t)
    assert a.pivot.step == 1 and "hallucinated" in les.provenance["mistake"]
    assert "spoon 9" not in les.fix


def test_a_move_after_which_the_next_step_found_nothing_it_named_is_the_mistake():
    t = trace("put a key in box", [
        ("go to door 1", "You arrive at door 1. On the door 1, you see a mat 1."),
        ("take key 1 from table 1", NOOP), ("go to box 1", "You arrive at box 1."), ("move key 1 to box 1", NOOP)])
    a, les = lesson(t)
    assert a.pivot.step == 0, a.pivot  # table 1 exists (the room shows it); the agent went to the door instead
    assert "wrong place" in les.provenance["mistake"]


def test_tool_lessons_read_as_advice_and_name_an_earlier_output_by_its_source():
    goal = "Refund order ORD-1004 in full in the order's currency"
    steps = [TraceStep(0, "", "lookup_order(order_id='ORD-1004')",
                       '{"order_id": "ORD-1004", "total": 64.0, "currency": "EUR"}'),
             TraceStep(1, "", "refund(order_id='ORD-1004', amount=64.0, currency='USD')", "",
                       error="order ORD-1004 was paid in EUR, not USD")]
    t = Trace("ep", goal, "refund", "task", "failure", steps)
    from skillmem.reflect.trace import Directive
    t.directives = [Directive(1, "refund(order_id='ORD-1004', amount=64.0, currency='EUR')", "", "human")]
    a = analyse(t.read_with(D), None, D)
    les = OfflineWriter(domain=D).write_lesson(a)
    assert "currency=[lookup_order.currency]" in les.fix and "amount=[lookup_order.total]" in les.fix, les.fix
    assert "EUR" not in les.fix and "ORD-1004" not in les.fix
    assert not les.fix.rstrip().endswith(("tool error", "error")), les.fix
    assert "with currency as shown" in les.fix


def test_taking_another_thing_than_the_goal_names_while_both_are_in_view_is_the_mistake():
    t = trace("put a key in box", [
        ("go to table 1", "You arrive at table 1. On the table 1, you see a key 1, and a pen 1."),
        ("take pen 1 from table 1", "You pick up the pen 1 from the table 1."),
        ("go to box 1", "You arrive at box 1."), ("move key 1 to box 1", NOOP), ("open box 1", NOOP)])
    a, les = lesson(t)
    assert a.pivot.step == 1, a.pivot
    assert les.provenance["mistake"].startswith("wrong object") and "pen 1" not in les.fix


def test_a_step_that_left_the_place_where_the_failing_step_was_meant_to_act_is_not_blamed_for_a_hallucination():
    t = trace("put a key in box", [
        ("go to table 1", "You arrive at table 1. On the table 1, you see a pen 1."),
        ("use lamp 1", "You turn on the lamp 1."),
        ("take spoon 9 from table 1", NOOP), ("open box 1", NOOP)])
    a, les = lesson(t)
    assert a.pivot.step == 2 and "hallucinated" in les.provenance["mistake"], (a.pivot, les.provenance)


def test_going_back_to_a_place_whose_answer_changed_is_still_a_revisit_when_the_next_step_finds_nothing():
    t = trace("put a key in box", [
        ("go to shelf 1", "You arrive at shelf 1. On the shelf 1, you see a cup 1, and a pen 1."),
        ("take pen 1 from shelf 1", "You pick up the pen 1 from the shelf 1."),
        ("go to shelf 1", "You arrive at shelf 1. On the shelf 1, you see a cup 1."),
        ("take key 1 from table 1", NOOP), ("open box 1", NOOP)])
    a, les = lesson(t)
    assert a.pivot.step == 2 and "already visited" in les.provenance["mistake"], (a.pivot, les.provenance)
