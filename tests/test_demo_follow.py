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
               ("take red apple", "slice red apple", "cook red apple in oven", "take knife")}
    assert written == {"take red apple": "take [from read cookbook]", "slice red apple": "[from read cookbook]",
                       "cook red apple in oven": "cook [from read cookbook] in oven",
                       "take knife": "take knife"}  # the knife was in view anyway: no value read


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
