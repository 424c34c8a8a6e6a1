"""TextDomain: the generic default must be right for any agent whose actions are strings or tool calls."""

from __future__ import annotations

from skillmem.domain import Domain, SlotMap, StepKind, StepView, TextDomain, parse_call, resolve

D = TextDomain()
GOAL = "Refund order ORD-1004 in full and convert the 80.00 USD refund to 'EUR' for the customer"


def test_text_domain_satisfies_the_protocol():
    assert isinstance(D, Domain)


def test_reasoning_chat_and_acknowledgements_are_not_actions():
    assert D.step_kind(StepView("think: the order id is in the message", "OK.")) is StepKind.reasoning
    assert D.step_kind(StepView("Thought: I will look it up")) is StepKind.reasoning
    assert D.step_kind(StepView("")) is StepKind.reasoning  # a message without a tool call
    assert D.step_kind(StepView("say: Your refund is on its way")) is StepKind.reasoning
    assert D.step_kind(StepView("refund(order_id='ORD-1004', amount=80.0)", "refunded")) is StepKind.action
    assert D.step_kind(StepView("lookup_order(order_id='ORD-1004')")) is StepKind.look
    assert D.step_kind(StepView("getOrder(id='ORD-1004')")) is StepKind.look
    assert D.step_kind(StepView("look", "You are in a kitchen.")) is StepKind.look
    assert TextDomain(action_tools={"check_out"}).step_kind(StepView("check_out(cart='C1')")) is StepKind.action


def test_failures_come_from_error_signals_not_from_prose():
    assert D.failure(StepView("refund(order_id='X')", "anything", error="order not found"))
    assert D.failure(StepView("refund(order_id='X')", '{"status": "error", "error": "amount exceeds total"}'))
    assert D.failure(StepView("refund(order_id='X')", "ValueError: amount must be positive"))
    assert D.failure(StepView("refund(order_id='X')", "Traceback (most recent call last):\n  ..."))
    assert D.failure(StepView("fly north", "I don't understand that."))
    assert not D.failure(StepView("say: sorry", "The customer was unable to log in yesterday, so they wrote."))
    assert not D.failure(StepView("lookup_order(order_id='X')", '{"status": "shipped", "total": 80.0}'))
    assert not D.failure(StepView("go north", "You cannot see far in the fog, but the path goes on."))
    assert D.failure(StepView("x()", "", error="boom")).signal.startswith("tool error")


def test_slots_are_the_goals_values_only_with_case_kept_and_argument_names_untouched():
    s = D.slots(GOAL)
    assert s.abstract("refund(order_id='ORD-1004', amount=80.0)") == "refund(order_id='[id]', amount=[number])"
    assert s.abstract("convert_currency(amount=80, from_currency='USD', to_currency='EUR')") == \
        "convert_currency(amount=[number], from_currency='[code]', to_currency='[text]')"
    # A value the goal does not name stays verbatim, in its case; argument names never become slots.
    assert s.abstract("refund(order_id='ORD-2002', amount=12.5)") == "refund(order_id='ORD-2002', amount=12.5)"
    assert s.abstract("lookup_order(Order_Id='ord-1004')") == "lookup_order(Order_Id='ord-1004')"
    # Numbers in error text that the goal does not name are left alone.
    assert s.abstract_prose("amount 120.0 exceeds order total 80.0") == "amount 120.0 exceeds order total [number]"
    # Back again, and onto another goal of the same shape.
    assert s.fill("refund(order_id='[id]', amount=[number])") == "refund(order_id='ORD-1004', amount=80.00)"
    other = "Refund order ORD-7 in full and convert the 12.50 USD refund to 'GBP' for the customer"
    bound = s.bind(s.abstract_prose(GOAL, nouns=True), other)
    assert bound["[id]"] == "ORD-7" and bound["[number]"] == "12.50" and bound["[text]"] == "GBP"


def test_text_commands_keep_their_verb_and_slot_the_goals_nouns():
    s = SlotMap.from_goal("put a clean mug in the cabinet.")
    assert s.abstract("clean mug 1 with sinkbasin 1") == "clean [noun2] 1 with sinkbasin 1"
    assert s.abstract("take Mug 1 from cabinet 2") == "take [noun2] 1 from [noun3] 2"


def test_action_keys_ignore_spacing_and_argument_order_but_not_values():
    assert D.action_key("refund(amount=1, order_id='A')") == D.action_key("refund(order_id='A',  amount=1)")
    assert D.action_key("refund(order_id='A')") != D.action_key("refund(order_id='a')")
    assert D.action_key("Take Mug 1.") == D.action_key("take mug 1")


def test_state_and_situations():
    steps = [StepView("think: first look", "OK."), StepView("lookup_order(order_id='A')", '{"total": 3}'),
             StepView("refund(order_id='A', amount=9)", "", error="amount exceeds total")]
    assert "at the start" in D.state(GOAL, steps[:1]).facts
    st = D.state(GOAL, steps)
    assert "the last action failed" in st.facts and "after calling lookup_order" in st.facts
    assert D.holds("after calling lookup_order, the last action failed", st, GOAL)
    assert not D.holds("at the start", st, GOAL)
    assert not D.holds("after calling convert_currency", st, GOAL)


def test_lesson_text_names_where_a_value_came_from_never_the_value():
    before = [StepView("lookup_order(order_id='ORD-1004')", '{"order_id": "ORD-1004", "total": 80.0}')]
    s = SlotMap.from_goal("Refund order ORD-1004 in full")
    written = D.lesson_text(s.abstract("refund(order_id='ORD-1004', amount=80.0)"), before, s)
    assert written == "refund(order_id='[id]', amount=[lookup_order.total])"
    # Replayed on another order: the goal's id from the new goal, the amount from the new lookup.
    later = [StepView("lookup_order(order_id='ORD-7')", '{"order_id": "ORD-7", "total": 12.5}')]
    assert resolve(written, later, {"[id]": "ORD-7"}) == "refund(order_id='ORD-7', amount=12.5)"
    prose = [StepView("lookup_order(order_id='ORD-1004')", "Order ORD-1004 costs 80.0 in total")]
    assert D.lesson_text("refund(order_id='[id]', amount=80.0)", prose, s) == \
        "refund(order_id='[id]', amount=[from lookup_order])"
    assert "ORD-9" not in D.lesson_text("refund(order_id='ORD-9')", [], s)


def test_parse_call():
    assert parse_call("refund(order_id='ORD-1004', amount=100.0)") == \
        ("refund", [("order_id", "'ORD-1004'"), ("amount", "100.0")])
    assert parse_call("go to desk 1") is None
    assert parse_call("f()") == ("f", [])


# --------------------------------------------------------------------------- the pivot is the mistake

from skillmem.reflect.trace import Trace, TraceStep, analyse, localize_pivot  # noqa: E402


def _trace(eid: str, steps: list[tuple[str, str]], outcome: str, task_id: str = "t1") -> Trace:
    return Trace(eid, "put a mug in the cabinet", "put", task_id, outcome,
                 [TraceStep(i, "", a, fb) for i, (a, fb) in enumerate(steps)]).read_with(D)


def test_contrast_skips_thoughts_and_looks_and_never_blames_what_the_success_did():
    ok = _trace("ok", [("go to desk 1", "You see a mug 1."), ("take mug 1 from desk 1", "You pick up the mug 1."),
                       ("go to cabinet 1", "You arrive."), ("put mug 1 in cabinet 1", "You put the mug 1.")], "success")
    bad = _trace("bad", [("think: the mug is probably on the desk", "OK."), ("look", "You are in a room."),
                         ("go to desk 1", "You see a mug 1."), ("Think: now take it", "OK."),
                         ("take mug 1 from desk 1", "You pick up the mug 1."), ("go to shelf 1", "You arrive."),
                         ("go to cabinet 1", "You arrive.")], "failure")
    p = localize_pivot(bad, ok, domain=D)
    # Not the first thought (the first *textual* difference), not a look, not a step the success took.
    assert p.step == 5 and p.reason == "diverged_from_same_task"
    assert p.corrected_action == "put mug 1 in cabinet 1" or p.corrected_action == "go to cabinet 1"


def test_a_directive_correction_always_yields_a_lesson():
    from skillmem.reflect import OfflineWriter
    from skillmem.reflect.trace import Directive

    t = _trace("e", [("lookup_order(order_id='ORD-9')", '{"total": 5}'), ("send_email(to='x')", "sent")], "failure")
    t.directives.append(Directive(1, "refund(order_id='ORD-9', amount=5)", "refund first", "human"))
    lesson = OfflineWriter().write_lesson(analyse(t, None, D))
    assert lesson is not None and "refund(" in lesson.fix and "ORD-9" not in lesson.fix
    assert lesson.grounded_on_feedback and lesson.pivot_step == 1


def test_llm_writer_prompt_is_domain_neutral_with_tools_reason_and_final_answer():
    from skillmem.reflect import OfflineWriter, prompts

    t = Trace("e", "Refund order ORD-5 in full.", "refund", "t5", "failure",
              [TraceStep(0, "", "think: look it up first", "OK."),
               TraceStep(1, "", "lookup_order(order_id='ORD-5')", '{"total": 7.5}'),
               TraceStep(2, "", "refund(order_id='ORD-5', amount=9)", "", error="amount 9 exceeds the order total"),
               TraceStep(3, "", "answer: I refunded the order.", "")],
              reasons=["verifier: refunded more than the order total"]).read_with(D)
    a = analyse(t, None, D)
    assert a.pivot.step == 2 and a.pivot.reason == "failure_feedback"
    schema = {"type": "function", "function": {"name": "refund", "description": "Refund an order",
                                               "parameters": {"type": "object", "properties": {"amount": {}}}}}
    msgs = prompts.lesson_messages(a.render(), OfflineWriter().draft(a), [schema])
    system, user = msgs[0]["content"], msgs[1]["content"]
    assert "[receptacle" not in system + user and "[object]" not in system + user
    assert '"name": "refund"' in user and "Verifier's reason: verifier: refunded more" in user
    assert "Final answer: answer: I refunded the order." in user and "[reasoning] think: look it up first" in user
    assert "Situation at the pivot: after calling lookup_order" in user
    assert "ORD-5" not in user.split("Slots:")[0]  # the goal is shown in slots
