"""Following a demonstration in an episode that differs from its source (TextDomain, no world pack).

The source episode found its key in box 2 of the hall; this one has it elsewhere. Values the goal
does not name (instance numbers, places) are free: searched among the admissible actions, never
guessed; a step that is not possible here is skipped, but never one that names the goal.
"""

from types import SimpleNamespace as NS

from skillmem.domain import TextDomain
from skillmem.policy import CPUPolicy, hints_from_context
from skillmem.policy.hints import _loosen

D = TextDomain()
GOAL = "bring the key to the vault."
DEMO = NS(goal_template="bring the [noun] to the [noun2].",
          plan=["walk to hall [value]", "open box [value]", "take [noun] [value] from box [value]",
                "walk to [noun2] [value]", "put [noun] [value] in [noun2] [value]"])
CTX = NS(lessons=[], demonstrations=[DEMO])


def hinted(history, admissible):
    h = hints_from_context(CTX, GOAL, history, admissible, D)
    return {a for a, v in h.bonus.items() if v > 0}


def test_loosen_frees_the_source_episodes_details_only():
    assert _loosen("take [noun] [value] from box [value]") == "take [noun] [value] from [free] [value]"
    assert _loosen("refund(order_id='[id]', amount=80.0)") == "refund(order_id='[id]', amount=[free])"


def test_free_values_match_any_instance_and_are_searched_when_the_next_step_is_not_possible():
    adm = ["walk to hall 1", "walk to hall 2", "walk to vault 1", "look"]
    assert hinted([], adm) == {"walk to hall 1", "walk to hall 2"}
    # In hall 1 there is no box to open: hall 1 was the wrong value; another hall is tried first.
    assert hinted([("walk to hall 1", "An empty hall.")], adm) == {"walk to hall 2"}


def test_the_goals_object_in_view_is_taken_whatever_the_source_did_first():
    adm = ["walk to hall 1", "take key 3 from shelf 1", "take cup 1 from shelf 1", "look"]
    assert hinted([("walk to kitchen 1", "On the shelf 1 you see a key 3 and a cup 1.")], adm) == \
        {"take key 3 from shelf 1"}


def test_a_step_not_possible_is_skipped_and_the_plan_re_anchors_but_never_past_the_goal_step():
    # Holding the key (taken from a shelf, not a box): the walk to the vault is next.
    hist = [("walk to hall 1", "A hall."), ("take key 3 from shelf 1", "You pick up the key 3.")]
    assert hinted(hist, ["walk to vault 1", "walk to hall 1", "look"]) == {"walk to vault 1"}
    # Not holding it, every hall tried: the plan does not jump to the vault step; any place not yet
    # tried is only explored (a smaller bonus than a plan step's).
    hist = [("walk to hall 1", "A hall."), ("walk to hall 2", "Another hall.")]
    got = hints_from_context(CTX, GOAL, hist, ["walk to hall 1", "walk to hall 2", "walk to cellar 1",
                                               "walk to vault 1"], D)
    assert set(got.bonus) == {"walk to cellar 1", "walk to vault 1"}
    assert all(v < 1.0 and "not tried" in got.reasons[a][0] for a, v in got.bonus.items())


def test_untrained_policy_does_not_repeat_an_action_from_the_same_observation():
    policy = CPUPolicy()
    adm = ["look", "examine table", "walk to hall 1", "walk to hall 2", "inventory"]
    history, seen = [], []
    obs = "You are in a room."
    for _ in range(5):
        a = policy.act("find the coin.", history, None, adm)
        seen.append(a)
        history.append((a, obs))  # nothing this agent does changes what it sees
    assert len(set(seen)) == len(seen), seen


# --------------------------------------------------------------------------- values read, not named

RECIPE = "Ingredients:\n  red apple\n  salt\n\nDirections:\n  slice the red apple\n  prepare meal"


def test_values_the_source_read_are_written_as_read_there():
    from skillmem.domain import SlotMap, StepView

    first = "You are in the kitchen. A counter has a cookbook and a knife on it."
    before = [StepView("look around", "You are in the kitchen. A counter has a cookbook and a knife on it.", None, first),
              StepView("read cookbook", RECIPE, None, "")]
    written = {a: D.lesson_text(a, before, SlotMap()) for a in
               ("take red apple", "slice red apple", "take knife")}
    assert written == {"take red apple": "take [from read cookbook]", "slice red apple": "[from read cookbook]",
                       "take knife": "take knife"}  # the knife was in view anyway: no value read
    # A command with more words than a verb and the value carried out the one line that names
    # the value and was not carried out whole before: the slot says that line's other words.
    before += [StepView("take red apple", "You take the red apple."), StepView("slice red apple", "Sliced.")]
    assert D.lesson_text("cook red apple in oven", before, SlotMap()) == "cook [from read cookbook] in oven"
    before[1] = StepView("read cookbook", RECIPE.replace("prepare meal", "roast the red apple\n  prepare meal"))
    assert D.lesson_text("cook red apple in oven", before, SlotMap()) == "cook [from read cookbook: roast] in oven"
    assert D.lesson_text("take red apple", before, SlotMap()) == "take [from read cookbook]"
    # A paragraph describing a place is no instruction line: its words are no condition.
    room = "You are in the hall. There is a red apple on the long table by the window, and a lamp."
    before[1] = StepView("look around", room)
    assert D.lesson_text("put red apple in box", before, SlotMap()) == "put [from look around] in box"


def test_a_step_read_from_a_line_takes_the_value_on_a_line_that_says_the_same():
    one = NS(goal_template="", plan=["read cookbook", "take [from read cookbook]",
                                     "cook [from read cookbook: roast] in oven", "eat meal"])
    other = NS(goal_template="", plan=["read cookbook", "take [from read cookbook]",
                                       "cook [from read cookbook: fry] in stove", "eat meal"])
    read = ("read cookbook", "Ingredients:\n  carrot\n  leek\nDirections:\n  fry the carrot\n  roast the leek")
    adm = ["cook carrot in oven", "cook carrot in stove", "cook leek in oven", "cook leek in stove",
           "take carrot", "take leek", "eat meal"]

    def top(ctx, history):
        h = hints_from_context(ctx, "Cook the meal.", history, adm, D)
        return {a for a, v in h.bonus.items() if v == max(h.bonus.values())}

    # Every item of the list read is taken, not only as many as the source took.
    ctx = NS(lessons=[], demonstrations=[one])
    assert top(ctx, [read]) == {"take carrot", "take leek"}
    assert top(ctx, [read, ("take carrot", "You take the carrot.")]) == {"take leek"}
    held = [read, ("take carrot", "You take the carrot."), ("take leek", "You take the leek.")]
    # The leek is to be roasted, the carrot fried: the oven step is for the leek only ...
    assert top(ctx, held) == {"cook leek in oven"}
    # ... and once done, what another demonstration did for a fry line does the carrot.
    ctx = NS(lessons=[], demonstrations=[one, other])
    assert "cook carrot in stove" in top(ctx, held + [("cook leek in oven", "You roast the leek.")])


def test_a_step_whose_value_was_read_reads_first_then_takes_what_this_episode_read():
    demo = NS(goal_template="", plan=["read cookbook", "take [from read cookbook]", "[from read cookbook]"])
    ctx = NS(lessons=[], demonstrations=[demo])
    adm = ["read cookbook", "take yellow potato", "take salt", "take knife", "slice yellow potato",
           "dice yellow potato", "look around"]

    def bonus(history):
        return {a for a, v in hints_from_context(ctx, "Cook the meal.", history, adm, D).bonus.items() if v > 0}

    assert bonus([]) == {"read cookbook"}
    read = [("read cookbook", "Ingredients: yellow potato\nDirections: dice the yellow potato")]
    assert bonus(read) == {"take yellow potato"}
    assert bonus(read + [("take yellow potato", "You take the yellow potato.")]) == {"dice yellow potato"}


def test_what_the_agent_read_is_crossed_with_each_candidate():
    history = [("read cookbook", "Ingredients: carrot\nDirections: fry the carrot")]
    feats = D.policy_features("Cook the meal.", history, ["cook carrot in stove", "take knife"])
    assert "R:fry|stove" in feats[0] and "T:action|read0" in feats[0]
    assert not any(f.startswith("R:") for f in D.policy_features("Cook the meal.", [], ["take knife"])[0])


def test_a_line_read_that_names_the_value_is_crossed_with_the_commands_other_words():
    # Two directions read: the bag of read words cannot say which method is the carrot's.
    history = [("read cookbook", "Ingredients:\n  carrot\n  leek\nDirections:\n  fry the carrot\n  roast the leek")]
    oven, stove = D.policy_features("Cook the meal.", history, ["cook carrot in oven", "cook carrot in stove"])
    assert "L:fry|stove" in stove and "L:fry|oven" in oven
    assert not any(f.startswith("L:roast|") for f in oven + stove)  # the leek's line names no carrot


def test_a_command_pairing_two_values_is_crossed_pair_by_pair():
    feats = D.policy_features("tidy up.", [], ["put dirty sock in laundry basket", "take dirty sock"])
    assert {"P:dirty|laundry", "P:sock|basket"} <= set(feats[0])
    assert not any(f.startswith("P:") for f in feats[1])


# --------------------------------------------------------------------------- goals worded otherwise

def test_a_demo_worded_otherwise_binds_the_goals_values_the_episode_acts_on():
    # "bring the [noun] to the [noun2]" does not fit "leave a rusty key in the vault": a word of this
    # goal ("rusty") is no value at all. Every one-to-one choice is a candidate; the one under which
    # a plan step is possible here wins (the key in view is taken, not a "rusty" thing).
    goal = "leave a rusty key in the vault."
    adm = ["walk to hall 1", "take key 3 from shelf 1", "take cup 1 from shelf 1", "look"]
    h = hints_from_context(CTX, goal, [("walk to kitchen 1", "On the shelf 1 you see a key 3 and a cup 1.")], adm, D)
    assert {a for a, v in h.bonus.items() if v > 0} == {"take key 3 from shelf 1"}
    # Holding it, the walk goes to the vault (the goal's last value), not back to the key.
    hist = [("walk to kitchen 1", "On the shelf 1 you see a key 3."), ("take key 3 from shelf 1", "You take the key 3.")]
    h = hints_from_context(CTX, goal, hist, ["walk to vault 1", "walk to kitchen 1", "walk to hall 1"], D)
    assert max(h.bonus, key=h.bonus.get) == "walk to vault 1"


TWO = NS(goal_template="bring two [noun] to the [noun2].",
         plan=["walk to hall [value]", "take [noun] [value] from box [value]", "walk to [noun2] [value]",
               "put [noun] [value] in [noun2] [value]", "walk to hall [value]", "take [noun] [value] from box [value]",
               "walk to [noun2] [value]", "put [noun] [value] in [noun2] [value]"])


def test_a_goal_asking_for_two_is_not_served_by_taking_the_first_back():
    goal = "bring two key to the vault."
    ctx = NS(lessons=[], demonstrations=[TWO])
    hist = [("walk to hall 1", "In the hall 1 you see a key 1 and a key 2."), ("take key 1 from hall 1", "You take the key 1."),
            ("walk to vault 1", "The vault 1."), ("put key 1 in vault 1", "You put the key 1 in the vault 1.")]
    h = hints_from_context(ctx, goal, hist, ["take key 1 from vault 1", "walk to hall 1", "walk to hall 2"], D)
    assert "take key 1 from vault 1" not in h.bonus
    # It goes back to where the second key was seen (softer than a step possible here) ...
    assert max(h.bonus, key=h.bonus.get) == "walk to hall 1"
    # ... takes it, and carries it to the vault: the same vault both times.
    hist += [("walk to hall 1", "In the hall 1 you see a key 2."), ("take key 2 from hall 1", "You take the key 2.")]
    h = hints_from_context(ctx, goal, hist, ["walk to vault 1", "walk to hall 1", "walk to hall 2"], D)
    assert max(h.bonus, key=h.bonus.get) == "walk to vault 1"


def test_a_goal_step_the_episode_did_not_need_is_jumped_by_a_later_one_naming_all_its_values():
    demo = NS(goal_template="bring the [noun] to the [noun2].",
              plan=["take [noun] [value] from shelf [value]", "walk to [noun2] [value]", "unlock [noun2] [value]",
                    "put [noun] [value] in [noun2] [value]", "ring bell [value]"])
    ctx = NS(lessons=[], demonstrations=[demo])
    hist = [("take key 3 from shelf 1", "You take the key 3."), ("walk to vault 1", "The vault 1 is open."),
            ("put key 3 in vault 1", "You put the key 3 in the vault 1.")]
    h = hints_from_context(ctx, GOAL, hist, ["ring bell 1", "unlock vault 1", "walk to hall 1"], D)
    assert max(h.bonus, key=h.bonus.get) == "ring bell 1"
    # A walk to the vault without the key does not jump over the take.
    h = hints_from_context(ctx, GOAL, [("walk to vault 1", "The vault 1.")], ["take key 3 from shelf 1", "unlock vault 1"], D)
    assert "take key 3 from shelf 1" in h.bonus


def test_a_plan_done_while_the_task_is_not_redoes_its_goal_steps_where_they_are_possible():
    # The source turned the lamp on where the book lay; here the book was taken elsewhere: the
    # lamp is used again, after going back to where it was seen.
    demo = NS(goal_template="read the [noun] under the [noun2].",
              plan=["walk to table [value]", "use [noun2] [value]", "take [noun] [value] from table [value]"])
    ctx = NS(lessons=[], demonstrations=[demo])
    goal = "read the book under the lamp."
    hist = [("walk to table 1", "On the table 1 you see a lamp 2."), ("use lamp 2", "The lamp 2 is on."),
            ("walk to shelf 1", "On the shelf 1 you see a book 4."), ("take book 4 from shelf 1", "You take the book 4.")]
    h = hints_from_context(ctx, goal, hist, ["walk to table 1", "walk to shelf 1", "look"], D)
    assert max(h.bonus, key=h.bonus.get) == "walk to table 1"
    h = hints_from_context(ctx, goal, hist + [("walk to table 1", "On the table 1 you see a lamp 2.")],
                           ["use lamp 2", "walk to shelf 1", "look"], D)
    assert max(h.bonus, key=h.bonus.get) == "use lamp 2"


def test_a_short_noun_of_the_goal_is_a_slot():
    assert "cd" in D.slots("look at cd under the lamp.").values.values()


# --------------------------------------------------------------------------- pairings seen in one place

ROOM = ("You are in the laundry room. In one part of the room you see a bench, that has nothing on it. "
        "You also see a laundry basket, that has nothing on it. There is also a dirty teal dress. "
        "You also see a wet towel.")


def test_two_values_seen_in_one_place_stay_as_written_with_their_pairing():
    from skillmem.domain import SlotMap, StepView

    before = [StepView("look around", ROOM, None, "You are in the laundry room.")]
    # One value seen there is a slot; two are a pairing the slots would erase (which went where).
    assert D.lesson_text("take dirty teal dress", before, SlotMap()) == "take [from look around]"
    assert D.lesson_text("put dirty teal dress in laundry basket", before, SlotMap()) == \
        "put dirty teal dress in laundry basket"
    # Nor is a two-value command read whole where its words only stand next to each other.
    pantry = [StepView("look around", "You see a folding chair that has a flour on it. There is also a shelf.",
                       None, "You are in the pantry.")]
    assert D.lesson_text("put flour in shelf", pantry, SlotMap()) == "put flour in shelf"


def test_a_room_described_again_is_no_source_for_what_was_in_view_before_but_a_list_is():
    from skillmem.domain import SlotMap, StepView

    first = "You are in the living room. You see a wastepaper basket that is closed. There is also a TV remote."
    before = [StepView("open wastepaper basket", "You open the wastepaper basket.", None, first),
              StepView("look around", "You are in the living room. You see an open wastepaper basket. "
                                      "There is also a TV remote.")]
    assert D.lesson_text("close wastepaper basket", before, SlotMap()) == "close wastepaper basket"
    assert D.lesson_text("take TV remote", before, SlotMap()) == "take TV remote"
    # A list read names what was in view too: its items are read there all the same.
    before.append(StepView("read note", "Bring:\n  TV remote"))
    assert D.lesson_text("take TV remote", before, SlotMap()) == "take [from read note]"
    # What a command named before the read is no value read there (an inventory of what was taken).
    held = [StepView("take gray shoes", "You take the gray shoes.", None, "You see gray shoes."),
            StepView("inventory", "Inventory:\n  gray shoes")]
    assert D.lesson_text("put gray shoes in hat rack", held, SlotMap()) == "put gray shoes in hat rack"


def test_a_demonstration_keeps_of_a_thing_put_twice_the_place_that_stuck():
    from skillmem.reflect.demos import demo_from_trace
    from skillmem.reflect.trace import Trace, TraceStep

    acts = [("look around", ROOM), ("take dirty teal dress", "You take the dirty teal dress."),
            ("put dirty teal dress in bench", "You put the dirty teal dress in the bench."),
            ("take dirty teal dress", "You take the dirty teal dress."),
            ("put dirty teal dress in laundry basket", "You put the dirty teal dress in the laundry basket.")]
    steps = [TraceStep(i, "You are in the laundry room." if i == 0 else acts[i - 1][1], a, fb)
             for i, (a, fb) in enumerate(acts)]
    demo = demo_from_trace(Trace("e", "put things where they belong.", "tidy", "t", "success", steps), domain=D)
    assert demo.plan == ["take [from look around]", "put dirty teal dress in laundry basket"]


def test_a_step_written_as_done_is_followed_by_its_nearest_analogue_then_the_next():
    demo = NS(goal_template="", plan=["take [from look around]", "put dirty teal dress in laundry basket",
                                      "take [from look around]", "put wet towel in clothes drier"])
    ctx = NS(lessons=[], demonstrations=[demo])
    goal = "put things where they belong."
    room = "You see a bench, a laundry basket and a clothes drier. There is a dirty black pullover."
    adm = ["put dirty black pullover in bench", "put dirty black pullover in laundry basket",
           "put dirty black pullover in clothes drier", "look around", "inventory"]
    history = [("look around", room), ("take dirty black pullover", "You take the dirty black pullover.")]

    def top(history):
        h = hints_from_context(ctx, goal, history, adm, D)
        return {a for a, v in h.bonus.items() if v > 0 and v == max(h.bonus.values())}

    # Another thing, but dirty like the source's: where the source put its dirty thing.
    assert top(history) == {"put dirty black pullover in laundry basket"}
    # That did not finish the task and the agent took it back: not the same again.
    history += [("put dirty black pullover in laundry basket", "You put it in the laundry basket."),
                ("take dirty black pullover", "You take the dirty black pullover.")]
    assert "put dirty black pullover in laundry basket" not in top(history)


def test_a_step_written_as_done_is_done_only_by_an_action_like_it_in_every_value():
    demo = NS(goal_template="", plan=["put black cap in hat rack", "put trench coat in coat hanger"])
    ctx = NS(lessons=[], demonstrations=[demo])
    adm = ["put white cap in hat rack", "put white cap in key holder", "put white cap in chest of drawers",
           "put gray coat in hat rack", "put gray coat in coat hanger", "inventory"]

    def top(history):
        h = hints_from_context(ctx, "tidy up.", history, adm, D)
        return {a for a, v in h.bonus.items() if v > 0 and v == max(h.bonus.values())}

    assert top([]) == {"put white cap in hat rack"}
    # The cap put elsewhere did not do "put black cap in hat rack": that step is still the one due.
    assert top([("put white cap in key holder", "You put the white cap in the key holder.")]) == \
        {"put white cap in hat rack"}
    assert top([("put white cap in hat rack", "You put the white cap in the hat rack.")]) == \
        {"put gray coat in coat hanger"}


def test_a_one_value_step_never_transfers_by_likeness_and_an_analogue_weighs_less_than_a_step():
    # The shared word is the thing's type, not the thing: a demo about one branch says nothing
    # about another (868f89f hinted nothing here either).
    for plan, adm in ((["delete branch feature-x"], ["delete branch main", "list branches"]),
                      (["drop table staging_orders"], ["drop table orders", "show tables"])):
        ctx = NS(lessons=[], demonstrations=[NS(goal_template="", plan=plan)])
        assert hints_from_context(ctx, "clean up.", [], adm, D).bonus == {}
    # A two-value step's analogue is a step to consider: less than the plan's own step.
    demo = NS(goal_template="", plan=["file blue invoice in billing folder", "archive mailbox"])
    h = hints_from_context(NS(lessons=[], demonstrations=[demo]), "sort the mail.", [],
                           ["file red invoice in billing folder", "file red invoice in trash folder"], D)
    assert h.bonus == {"file red invoice in billing folder": 0.5}


def test_a_step_is_superseded_only_when_the_trace_took_it_back_in_between():
    from skillmem.reflect.demos import demo_from_trace
    from skillmem.reflect.trace import Trace, TraceStep

    def plan(acts):
        steps = [TraceStep(i, "A table with three pegs." if i == 0 else f"You {acts[i - 1]}.", a, f"You {a}.")
                 for i, a in enumerate(acts)]
        return demo_from_trace(Trace("e", "solve it.", "t", "t", "success", steps), domain=D).plan

    hanoi = ["move small disk to middle peg", "move medium disk to right peg", "move small disk to right peg"]
    assert plan(hanoi) == hanoi
    assert plan(["give apple to alice", "give apple to bob"]) == ["give apple to alice", "give apple to bob"]
    # Put, taken back (got again the way it was got first, or taken from where it was put), put
    # elsewhere: the later one is what stuck.
    assert plan(["take red invoice", "file red invoice in trash folder", "take red invoice",
                 "file red invoice in billing folder"]) == ["take red invoice", "file red invoice in billing folder"]
    assert plan(["file red invoice in trash folder", "take red invoice from trash folder",
                 "file red invoice in billing folder"]) == \
        ["take red invoice from trash folder", "file red invoice in billing folder"]
    # Another use of the value in between takes nothing back (review R1b): both pours stay.
    tea = ["pour water into kettle", "boil water", "pour water into cup"]
    assert plan(tea) == tea
    assert plan(["take water", *tea]) == ["take water", *tea]
    # A use of the value where the step left it takes nothing back (review R1): only a command that
    # gets it out of there does.
    heat = ["fill jar with sand", "shake sand in jar", "fill bucket with sand"]
    assert plan(heat) == heat
    assert plan(["pour water into kettle", "heat water in kettle", "pour water into cup"]) == \
        ["pour water into kettle", "heat water in kettle", "pour water into cup"]
