"""A fast household text world that speaks exactly the commands and feedback of the real ALFWorld games.

The world
---------
One room (kitchen, living room, bedroom or bathroom) with numbered receptacles ("cabinet 3",
"countertop 1", "fridge 1", "sinkbasin 1", ...) and numbered objects in them ("mug 2"). Some
receptacles share a spot (two shelves, two stove burners, two drawers) as in the real games: at
"shelf 1" you also reach "shelf 2", and "go to shelf 2" from there says "Nothing happens.".
Cabinets, drawers, fridges, microwaves and safes are closed at the start and hide their contents
until opened. The agent holds at most one object. Cleaning needs a sinkbasin, heating the
microwave, cooling the fridge (none of them needs opening, as in ALFWorld); a desklamp (or, in
valid_unseen only, a floorlamp) is used where it stands. Which object kinds a receptacle accepts,
which kinds can be cleaned/heated/cooled, where objects start, and how many receptacles a room
has all come from the real games' PDDL problems (/work/shared/alfworld), condensed into the
tables below.

The six ALFWorld task types, with the real games' goal sentences and goal conditions:
pick_and_place_simple ("put a mug in cabinet."), pick_clean_then_place_in_recep, pick_heat_then_
place_in_recep, pick_cool_then_place_in_recep ("put a cool tomato in countertop."),
look_at_obj_in_light ("look at book under the desklamp.": hold the book where a lamp was turned
on), pick_two_obj_and_place (two objects of the kind in the same receptacle).

Commands and feedback are those of the real games' grammar: `go to X`, `open X`, `close X`,
`take X from Y`, `move X to Y`, `clean/heat/cool X with Y`, `slice X with Y`, `use X`,
`examine X`, `look`, `inventory`, `help`; "You arrive at X. On the X, you see a mug 1, and a
cup 2.", "The drawer 1 is closed.", "You open the drawer 1. The drawer 1 is open. In it, you see
nothing.", "Nothing happens." for anything not admissible, the intro "-= Welcome to TextWorld,
ALFRED! =-" ... "Your task is to: ...". Admissible commands are listed as the real env lists
them (sorted; no "go to" the spot you are at; "take" only with empty hands; "examine" of objects
only for the held one; "move" only where the receptacle accepts the object's kind).

Splits
------
Every task is generated from (split, seed, task_type) and is the same every time.
- train and valid_seen use layouts 0-19 of each room kind and every object kind except the
  held-out ones; they differ only in seeds (a different random stream per split).
- valid_unseen uses layouts 20-27 (never used by the other splits) and adds the held-out object
  kinds HELDOUT_KINDS = potato, watch, ladle, soapbar (never present in train/valid_seen; half of
  the valid_unseen tasks whose type allows it target one of them) and the floorlamp
  (look_at_obj_in_light tasks may need "use floorlamp 1"; train/valid_seen only have desklamps).

The expert
----------
`cost_to_go(world, state)` is the exact number of steps of a shortest winning plan from any
state (the agent may have wandered, opened things, or hold the wrong object): it takes the
minimum over every way to finish (which object, which source and target, which tool, where to
drop a wrongly held object), knowing the hidden contents. `optimal_actions()` is every admissible
action whose successor has cost_to_go one less; `expert_action()` the first of them in sorted
order; `expert_plan()` follows it to the goal. Tests check the Bellman equation on random states,
which makes cost_to_go the true shortest distance. The expert is computed only when asked:
`info["expert_action"]` is filled only if the env was built with `expert=True` (it costs about a
millisecond or more per step; random play without it runs at tens of thousands of steps/s).

What differs from real ALFWorld
-------------------------------
Rooms are generated, not AI2-THOR scenes: fewer receptacles on average (12-30 instead of 6-54),
no objects inside other objects (a mug in a bowl), no non-receptacle objects "next to" you (look
always says "Next to it, you see nothing."), each object is in exactly one receptacle (a real game
may list one pan on both burners of a spot, or one mug in the coffee machine and on the countertop
under it), no objects on the floor (real games have a few, which can only be sliced), human-written
goal sentences are not used (only the two templates per type that the game files use), a
floorlamp stands on a side table, desk or dresser (real floor lamps rarely sit in a receptacle),
and an episode ends at a step limit (default 50) as the harness' ALFWorld runs do. Commands must
match exactly (only surrounding spaces are stripped), as in TextWorld.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import NamedTuple

from eval.envs.base import ALFWORLD_TASK_TYPES, SPLITS, TaskSpec

# ---------------------------------------------------------------------------------------------
# Tables condensed from the real games (canContain, object flags, receptacle counts per room).
# Names are the CamelCase AI2-THOR types; the game shows them lower-cased.

RTYPES_CAMEL = (
    "ArmChair BathtubBasin Bed Cabinet Cart CoffeeMachine CoffeeTable CounterTop Desk DiningTable "
    "Drawer Dresser Fridge GarbageCan HandTowelHolder LaundryHamper Microwave Ottoman Safe Shelf "
    "SideTable SinkBasin Sofa StoveBurner TVStand Toaster Toilet ToiletPaperHanger TowelHolder"
).split()
KINDS_CAMEL = (
    "AlarmClock Apple BaseballBat BasketBall Book Bowl Box Bread ButterKnife CD Candle CellPhone "
    "Cloth CreditCard Cup DeskLamp DishSponge Egg FloorLamp Fork Glassbottle HandTowel HousePlant "
    "Kettle KeyChain Knife Ladle Laptop Lettuce Mug Newspaper Pan Pen Pencil PepperShaker Pillow "
    "Plate Plunger Pot Potato RemoteControl SaltShaker SoapBar SoapBottle Spatula Spoon SprayBottle "
    "Statue Television TennisRacket TissueBox ToiletPaper Tomato Towel Vase Watch WateringCan "
    "WineBottle"
).split()
RTYPES = frozenset(c.lower() for c in RTYPES_CAMEL)
KINDS = frozenset(c.lower() for c in KINDS_CAMEL)
# The demangled ids sort by their CamelCase type (so "cd" before "candle"); listings follow it.
_CAMEL_RANK = {c.lower(): i for i, c in enumerate(sorted(RTYPES_CAMEL + KINDS_CAMEL))}

OPENABLE = frozenset({"cabinet", "drawer", "fridge", "microwave", "safe"})
LAMPS = frozenset({"desklamp", "floorlamp"})
DECOR = frozenset({"houseplant", "television"}) | LAMPS  # shown in listings, cannot be taken
CLEANABLE = frozenset(
    "apple bowl butterknife cloth cup dishsponge egg fork kettle knife ladle lettuce mug pan plate "
    "pot potato soapbar spatula spoon tomato".split()
)
HEATABLE = frozenset("apple bread cup egg mug plate potato tomato".split())
COOLABLE = frozenset("apple bowl bread cup egg lettuce mug pan plate pot potato tomato winebottle".split())
SLICEABLE = frozenset("apple bread egg lettuce potato tomato".split())
KNIVES = frozenset({"knife", "butterknife"})
# Kinds that are isReceptacleObject in every real game: examining one shows its (empty) inside.
RECEPTACLE_OBJECTS = frozenset("bowl box cup mug pan plate pot".split())


def _kinds(text: str) -> frozenset[str]:
    return frozenset(text.split())


# canContain(receptacle type, object kind), the union over all real games.
CAN_CONTAIN: dict[str, frozenset[str]] = {
    "armchair": _kinds("book box cellphone cloth creditcard keychain laptop newspaper pillow remotecontrol"),
    "bathtubbasin": _kinds("cloth dishsponge handtowel soapbar"),
    "bed": _kinds("baseballbat basketball book cellphone laptop pillow tennisracket"),
    "cabinet": _kinds(
        "book bowl box cd candle cloth cup dishsponge glassbottle handtowel kettle ladle mug newspaper pan "
        "peppershaker plate plunger pot saltshaker soapbar soapbottle spraybottle tissuebox toiletpaper vase "
        "wateringcan winebottle"
    ),
    "cart": _kinds("candle cloth dishsponge handtowel plunger soapbar soapbottle spraybottle tissuebox toiletpaper"),
    "coffeemachine": _kinds("mug"),
    "coffeetable": _kinds(
        "book bowl box candle cellphone creditcard keychain laptop newspaper pen pencil plate remotecontrol "
        "statue tissuebox vase watch wateringcan"
    ),
    "countertop": _kinds(
        "alarmclock apple book bowl bread butterknife cd candle cellphone cloth creditcard cup dishsponge egg "
        "fork glassbottle handtowel kettle keychain knife ladle laptop lettuce mug pan pen pencil peppershaker "
        "plate pot potato remotecontrol saltshaker soapbar soapbottle spatula spoon spraybottle statue "
        "tissuebox toiletpaper tomato vase winebottle"
    ),
    "desk": _kinds(
        "alarmclock basketball book bowl box cd cellphone cloth creditcard keychain laptop mug pen pencil "
        "remotecontrol statue tennisracket tissuebox vase watch wateringcan"
    ),
    "diningtable": _kinds(
        "alarmclock apple baseballbat book bowl box bread butterknife cd candle cellphone creditcard cup "
        "dishsponge egg fork glassbottle kettle keychain knife ladle laptop lettuce mug newspaper pan pen "
        "pencil peppershaker plate pot potato remotecontrol saltshaker soapbottle spatula spoon spraybottle "
        "statue tissuebox tomato vase watch wateringcan winebottle"
    ),
    "drawer": _kinds(
        "book butterknife cd candle cellphone cloth creditcard dishsponge fork handtowel keychain knife ladle "
        "newspaper pen pencil peppershaker remotecontrol saltshaker soapbar soapbottle spatula spoon "
        "spraybottle tissuebox toiletpaper watch wateringcan"
    ),
    "dresser": _kinds(
        "alarmclock basketball book bowl box cd candle cellphone cloth creditcard keychain laptop mug "
        "newspaper pen pencil plate remotecontrol spraybottle statue tennisracket tissuebox toiletpaper vase "
        "watch wateringcan"
    ),
    "fridge": _kinds("apple bowl bread cup egg glassbottle lettuce mug pan plate pot potato tomato winebottle"),
    "garbagecan": _kinds(
        "apple bread cd cloth dishsponge egg handtowel lettuce newspaper pen pencil potato soapbar soapbottle "
        "spraybottle tissuebox toiletpaper tomato winebottle"
    ),
    "handtowelholder": _kinds("handtowel"),
    "laundryhamper": _kinds("cloth"),
    "microwave": _kinds("apple bowl bread cup egg glassbottle mug plate potato tomato"),
    "ottoman": _kinds("book box cellphone creditcard keychain laptop newspaper pillow remotecontrol"),
    "safe": _kinds("cd cellphone creditcard keychain statue vase"),
    "shelf": _kinds(
        "alarmclock book bowl box cd candle cellphone cloth creditcard cup dishsponge glassbottle handtowel "
        "kettle keychain mug newspaper pen pencil peppershaker plate pot remotecontrol saltshaker soapbar "
        "soapbottle spraybottle statue tissuebox toiletpaper vase watch wateringcan winebottle"
    ),
    "sidetable": _kinds(
        "alarmclock apple baseballbat basketball book bowl box bread butterknife cd candle cellphone cloth "
        "creditcard cup dishsponge egg fork handtowel kettle keychain knife laptop lettuce mug newspaper pan "
        "pen pencil peppershaker plate pot potato remotecontrol saltshaker soapbar soapbottle spatula spoon "
        "spraybottle statue tennisracket tissuebox toiletpaper tomato vase watch wateringcan winebottle"
    ),
    "sinkbasin": _kinds(
        "apple bowl butterknife cloth cup dishsponge egg fork glassbottle handtowel kettle knife ladle lettuce "
        "mug pan plate pot potato soapbar spatula spoon tomato"
    ),
    "sofa": _kinds("book box cellphone creditcard keychain laptop newspaper pillow remotecontrol"),
    "stoveburner": _kinds("kettle pan pot"),
    "tvstand": _kinds("tissuebox"),
    "toaster": frozenset(),
    "toilet": _kinds("candle cloth dishsponge handtowel soapbar soapbottle spraybottle tissuebox toiletpaper"),
    "toiletpaperhanger": _kinds("toiletpaper"),
    "towelholder": _kinds("towel"),
}

# (receptacle type, min count, max count) per room kind, after the real scenes (trimmed).
ROOMS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "kitchen": (
        ("cabinet", 3, 10), ("coffeemachine", 1, 1), ("countertop", 1, 3), ("diningtable", 0, 1),
        ("drawer", 1, 5), ("fridge", 1, 1), ("garbagecan", 1, 1), ("microwave", 1, 1), ("shelf", 0, 2),
        ("sidetable", 0, 1), ("sinkbasin", 1, 1), ("stoveburner", 2, 4), ("toaster", 1, 1),
    ),
    "livingroom": (
        ("armchair", 0, 2), ("cabinet", 0, 3), ("coffeetable", 1, 1), ("diningtable", 0, 1), ("drawer", 0, 4),
        ("dresser", 0, 1), ("garbagecan", 1, 1), ("ottoman", 0, 1), ("safe", 0, 1), ("shelf", 1, 6),
        ("sidetable", 1, 3), ("sofa", 1, 1), ("tvstand", 0, 1),
    ),
    "bedroom": (
        ("armchair", 0, 1), ("bed", 1, 1), ("cabinet", 0, 2), ("desk", 0, 1), ("drawer", 2, 6),
        ("dresser", 0, 1), ("garbagecan", 1, 1), ("laundryhamper", 0, 1), ("safe", 0, 1), ("shelf", 0, 5),
        ("sidetable", 1, 2),
    ),
    "bathroom": (
        ("bathtubbasin", 0, 1), ("cabinet", 2, 4), ("cart", 0, 1), ("countertop", 1, 1), ("drawer", 0, 4),
        ("garbagecan", 1, 1), ("handtowelholder", 1, 2), ("shelf", 0, 2), ("sinkbasin", 1, 2), ("toilet", 1, 1),
        ("toiletpaperhanger", 1, 1), ("towelholder", 1, 2),
    ),
}
# Object kinds that can be taken in each room kind.
ROOM_KINDS: dict[str, frozenset[str]] = {
    "kitchen": _kinds(
        "apple bowl bread butterknife cup dishsponge egg fork glassbottle kettle knife ladle lettuce mug pan "
        "peppershaker plate pot potato saltshaker soapbottle spatula spoon tomato winebottle"
    ),
    "livingroom": _kinds(
        "book bowl box candle cellphone creditcard keychain laptop newspaper pillow plate remotecontrol statue "
        "tissuebox vase watch wateringcan"
    ),
    "bedroom": _kinds(
        "alarmclock baseballbat basketball book bowl box cd cellphone creditcard keychain laptop mug pen pencil "
        "pillow statue tennisracket tissuebox vase watch"
    ),
    "bathroom": _kinds(
        "candle cloth dishsponge handtowel plunger soapbar soapbottle spraybottle tissuebox toiletpaper towel"
    ),
}
SHAREABLE = frozenset({"cabinet", "drawer", "shelf", "stoveburner"})  # may share a spot with the next one
LAMP_SURFACES = ("sidetable", "desk", "dresser")
HELDOUT_KINDS = frozenset({"potato", "watch", "ladle", "soapbar"})
SEEN_LAYOUTS = range(0, 20)
UNSEEN_LAYOUTS = range(20, 28)

_PLACE_KINDS = _kinds(
    "alarmclock book bowl box bread cd candle cellphone cloth creditcard cup dishsponge egg fork glassbottle "
    "handtowel keychain knife ladle laptop lettuce mug newspaper pan pen pencil peppershaker pillow "
    "remotecontrol saltshaker soapbar soapbottle spatula spoon spraybottle statue tissuebox toiletpaper tomato "
    "vase watch winebottle"
)
_PLACE_TARGETS = (
    "armchair bed cabinet cart coffeetable countertop desk diningtable drawer dresser fridge garbagecan "
    "microwave ottoman safe shelf sidetable sofa toilet toiletpaperhanger".split()
)
# task type -> (object kinds, target receptacle types, rooms, the two goal sentence templates)
TASKS: dict[str, tuple[frozenset[str], tuple[str, ...], tuple[str, ...], tuple[str, str]]] = {
    "pick_and_place_simple": (
        _PLACE_KINDS, tuple(_PLACE_TARGETS), tuple(ROOMS), ("put a {o} in {r}.", "put some {o} on {r}.")
    ),
    "pick_clean_then_place_in_recep": (
        CLEANABLE,
        tuple("cabinet cart coffeemachine countertop diningtable drawer dresser fridge garbagecan microwave "
              "shelf sidetable stoveburner toilet".split()),
        ("kitchen", "bathroom"),
        ("clean some {o} and put it in {r}.", "put a clean {o} in {r}."),
    ),
    "pick_heat_then_place_in_recep": (
        HEATABLE,
        tuple("cabinet coffeemachine countertop diningtable fridge garbagecan shelf sidetable".split()),
        ("kitchen",),
        ("heat some {o} and put it in {r}.", "put a hot {o} in {r}."),
    ),
    "pick_cool_then_place_in_recep": (
        COOLABLE,
        tuple("cabinet coffeemachine countertop diningtable garbagecan microwave shelf sidetable stoveburner".split()),
        ("kitchen",),
        ("cool some {o} and put it in {r}.", "put a cool {o} in {r}."),
    ),
    "look_at_obj_in_light": (
        _kinds("alarmclock book bowl box cd keychain laptop newspaper pen pencil pillow plate statue tissuebox vase watch"),
        (),
        ("bedroom", "livingroom"),
        ("look at {o} under the {r}.", "examine the {o} with the {r}."),
    ),
    "pick_two_obj_and_place": (
        _PLACE_KINDS, tuple(_PLACE_TARGETS), tuple(ROOMS), ("find two {o} and put them in {r}.", "put two {o} in {r}.")
    ),
}
TOOLS = {  # task type -> (receptacle type used as tool, object property it gives)
    "pick_clean_then_place_in_recep": ("sinkbasin", "clean"),
    "pick_heat_then_place_in_recep": ("microwave", "hot"),
    "pick_cool_then_place_in_recep": ("fridge", "cool"),
}

# The game strips the grammar's leading newline: the text starts at "Available".
HELP_TEXT = (
    "Available commands:\n"
    "  look:                             look around your current location\n"
    "  inventory:                        check your current inventory\n"
    "  go to (receptacle):               move to a receptacle\n"
    "  open (receptacle):                open a receptacle\n"
    "  close (receptacle):               close a receptacle\n"
    "  take (object) from (receptacle):  take an object from a receptacle\n"
    "  move (object) to (receptacle):  place an object in or on a receptacle\n"
    "  examine (something):              examine a receptacle or an object\n"
    "  use (object):                     use an object\n"
    "  heat (object) with (receptacle):  heat an object using a receptacle\n"
    "  clean (object) with (receptacle): clean an object using a receptacle\n"
    "  cool (object) with (receptacle):  cool an object using a receptacle\n"
    "  slice (object) with (object):     slice an object using a sharp object\n"
)
NOTHING = "Nothing happens."
MIDDLE_LOOK = "You are in the middle of a room. Looking quickly around you, you see nothing."
INTRO_HEAD = "-= Welcome to TextWorld, ALFRED! =-\n\n"

# ---------------------------------------------------------------------------------------------
# Commands


class Command(NamedTuple):
    """A parsed command: its verb and the names it mentions ("mug 2", "countertop 1")."""

    verb: str  # go, open, close, take, move, clean, heat, cool, slice, use, examine, look, inventory, help
    obj: str | None = None  # the object, or the receptacle for go/open/close/examine of a receptacle
    recep: str | None = None  # the receptacle (or the knife for slice)


_N = r"([a-z]+ \d+)"
_PATTERNS = [
    ("go", re.compile(rf"go to {_N}")),
    ("open", re.compile(rf"open {_N}")),
    ("close", re.compile(rf"close {_N}")),
    ("take", re.compile(rf"take {_N} from {_N}")),
    ("move", re.compile(rf"move {_N} to {_N}")),
    ("clean", re.compile(rf"clean {_N} with {_N}")),
    ("heat", re.compile(rf"heat {_N} with {_N}")),
    ("cool", re.compile(rf"cool {_N} with {_N}")),
    ("slice", re.compile(rf"slice {_N} with {_N}")),
    ("use", re.compile(rf"use {_N}")),
    ("examine", re.compile(rf"examine {_N}")),
]
# Which vocabulary each slot must come from: R receptacle type, O object kind, A either.
_SLOTS = {"go": "R", "open": "R", "close": "R", "take": "OR", "move": "OR", "clean": "OR", "heat": "OR",
          "cool": "OR", "slice": "OO", "use": "O", "examine": "A"}


def parse_command(text: str) -> Command | None:
    """Parse a command of the real ALFWorld grammar; None if it is not one (or names an unknown kind)."""
    text = text.strip()
    if text in ("look", "inventory", "help"):
        return Command(text)
    for verb, pattern in _PATTERNS:
        m = pattern.fullmatch(text)
        if m is None:
            continue
        names = m.groups()
        for name, slot in zip(names, _SLOTS[verb]):
            kind = name.rsplit(" ", 1)[0]
            ok = {"R": kind in RTYPES, "O": kind in KINDS, "A": kind in RTYPES or kind in KINDS}[slot]
            if not ok:
                return None
        return Command(verb, names[0], names[1] if len(names) > 1 else None)
    return None


# ---------------------------------------------------------------------------------------------
# World (fixed for a task) and state (changes with each step)

GO, OPEN, CLOSE, TAKE, MOVE, CLEAN, HEAT, COOL, SLICE, USE, EXAMINE_R, EXAMINE_O, LOOK, INVENTORY, HELP = range(15)
_INFO_OPS = frozenset({EXAMINE_R, EXAMINE_O, LOOK, INVENTORY, HELP})  # never change the state
MIDDLE = -1  # the agent's spot before the first "go to"


@dataclass
class World:
    """Everything about a generated task that never changes: receptacles, objects, goal."""

    split: str
    seed: int
    task_type: str
    task_id: str
    room: str
    layout: int
    goal: str
    kind: str  # object kind the goal is about
    target: str  # receptacle type to put it in ("" for look_at_obj_in_light)
    lamp_kind: str  # "desklamp"/"floorlamp" for look_at_obj_in_light, else ""
    rname: list[str]
    rtype: list[str]
    ropen: list[bool]  # openable
    rloc: list[int]  # spot index; receptacles may share one
    oname: list[str]
    okind: list[str]
    init_where: list[int]  # receptacle each object starts in

    def __post_init__(self) -> None:
        n_locs = max(self.rloc) + 1
        self.loc_recs: list[list[int]] = [[] for _ in range(n_locs)]
        for r, loc in enumerate(self.rloc):
            self.loc_recs[loc].append(r)
        self.rorder = sorted(range(len(self.rname)), key=lambda r: (_CAMEL_RANK[self.rtype[r]], -_num(self.rname[r])))
        for recs in self.loc_recs:
            recs.sort(key=self.rorder.index)
        self.orank = [0] * len(self.oname)
        for rank, o in enumerate(sorted(range(len(self.oname)), key=lambda o: (_CAMEL_RANK[self.okind[o]], -_num(self.oname[o])))):
            self.orank[o] = rank
        self.can = [CAN_CONTAIN[t] for t in self.rtype]
        self.pickable = [k not in DECOR for k in self.okind]
        self.lamps = [o for o, k in enumerate(self.okind) if k in LAMPS]
        self.goal_objs = [o for o, k in enumerate(self.okind) if k == self.kind]
        self.targets = [r for r, t in enumerate(self.rtype) if t == self.target]
        tool_type = TOOLS.get(self.task_type, ("", ""))[0]
        self.tools = [r for r, t in enumerate(self.rtype) if t == tool_type]
        # "go to" commands are fixed per spot: precompute them sorted, with their actions.
        self.go_cmds: list[dict[str, tuple]] = []
        for loc in range(-1, n_locs):
            self.go_cmds.append(
                {f"go to {self.rname[r]}": (GO, r, self.rloc[r]) for r in range(len(self.rname)) if self.rloc[r] != loc}
            )
        self.intro_look = (
            "You are in the middle of a room. Looking quickly around you, you see "
            + _listing([f"a {self.rname[r]}" for r in self.rorder]) + "."
        )


def _num(name: str) -> int:
    return int(name.rsplit(" ", 1)[1])


def _listing(items: list[str]) -> str:
    """TextWorld's list rendering: "nothing", "a x", "a x, and a y", "a x, a y, and a z"."""
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


class State:
    """The mutable part of a household game; cheap to copy."""

    __slots__ = ("loc", "held", "where", "opened", "clean", "hot", "cool", "sliced", "toggled")

    def __init__(self, world: World) -> None:
        self.loc = MIDDLE
        self.held = -1
        self.where = list(world.init_where)
        self.opened = [False] * len(world.rname)
        n = len(world.oname)
        self.clean = [False] * n
        self.hot = [False] * n
        self.cool = [False] * n
        self.sliced = [False] * n
        self.toggled = [False] * n

    def copy(self) -> State:
        s = State.__new__(State)
        s.loc, s.held = self.loc, self.held
        s.where, s.opened = self.where[:], self.opened[:]
        s.clean, s.hot, s.cool, s.sliced, s.toggled = self.clean[:], self.hot[:], self.cool[:], self.sliced[:], self.toggled[:]
        return s

    def key(self) -> tuple:
        return (self.loc, self.held, tuple(self.where), tuple(self.opened), tuple(self.clean), tuple(self.hot),
                tuple(self.cool), tuple(self.sliced), tuple(self.toggled))


def admissible(w: World, s: State) -> dict[str, tuple]:
    """The commands the game accepts in state s, each with the action it stands for (unsorted)."""
    cmds = dict(w.go_cmds[s.loc + 1])
    cmds["help"] = (HELP,)
    cmds["inventory"] = (INVENTORY,)
    cmds["look"] = (LOOK,)
    if s.loc == MIDDLE:
        return cmds
    local = w.loc_recs[s.loc]
    held = s.held
    where = s.where
    for r in local:
        rn = w.rname[r]
        cmds["examine " + rn] = (EXAMINE_R, r)
        if w.ropen[r]:
            if s.opened[r]:
                cmds["close " + rn] = (CLOSE, r)
            else:
                cmds["open " + rn] = (OPEN, r)
    if held < 0:
        for o, r in enumerate(where):
            if r >= 0 and w.rloc[r] == s.loc and w.pickable[o] and (s.opened[r] or not w.ropen[r]):
                cmds[f"take {w.oname[o]} from {w.rname[r]}"] = (TAKE, o, r)
    else:
        on, kind = w.oname[held], w.okind[held]
        cmds["examine " + on] = (EXAMINE_O, held)
        for r in local:
            t = w.rtype[r]
            if kind in w.can[r] and (s.opened[r] or not w.ropen[r]):
                cmds[f"move {on} to {w.rname[r]}"] = (MOVE, held, r)
            if t == "sinkbasin" and kind in CLEANABLE:
                cmds[f"clean {on} with {w.rname[r]}"] = (CLEAN, held, r)
            elif t == "microwave" and kind in HEATABLE:
                cmds[f"heat {on} with {w.rname[r]}"] = (HEAT, held, r)
            elif t == "fridge" and kind in COOLABLE:
                cmds[f"cool {on} with {w.rname[r]}"] = (COOL, held, r)
        if kind in KNIVES:
            # The PDDL only asks that the object be at the spot, closed receptacles included.
            for o, r in enumerate(where):
                if r >= 0 and w.rloc[r] == s.loc and w.okind[o] in SLICEABLE:
                    cmds[f"slice {w.oname[o]} with {on}"] = (SLICE, o, held)
    for o in w.lamps:
        r = where[o]
        if r >= 0 and w.rloc[r] == s.loc:
            cmds["use " + w.oname[o]] = (USE, o)
    return cmds


def apply(s: State, act: tuple) -> None:
    """Change s by one admissible action (info actions change nothing)."""
    op = act[0]
    if op == GO:
        s.loc = act[2]
    elif op == OPEN:
        s.opened[act[1]] = True
    elif op == CLOSE:
        s.opened[act[1]] = False
    elif op == TAKE:
        s.where[act[1]] = -1
        s.held = act[1]
    elif op == MOVE:
        s.where[act[1]] = act[2]
        s.held = -1
    elif op == CLEAN:
        s.clean[act[1]] = True
    elif op == HEAT:
        s.hot[act[1]] = True
        s.cool[act[1]] = False
    elif op == COOL:
        s.cool[act[1]] = True
        s.hot[act[1]] = False
    elif op == SLICE:
        s.sliced[act[1]] = True
    elif op == USE:
        s.toggled[act[1]] = True


def feedback(w: World, s: State, act: tuple) -> str:
    """The game's text for an action, given the state after it."""
    op = act[0]
    if op == GO:
        r = act[1]
        return f"You arrive at {w.rname[r]}. " + _examine_recep(w, s, r)
    if op == OPEN:
        return f"You open the {w.rname[act[1]]}. " + _examine_recep(w, s, act[1])
    if op == CLOSE:
        return f"You close the {w.rname[act[1]]}."
    if op == TAKE:
        return f"You pick up the {w.oname[act[1]]} from the {w.rname[act[2]]}."
    if op == MOVE:
        return f"You move the {w.oname[act[1]]} to the {w.rname[act[2]]}."
    if op == CLEAN:
        return f"You clean the {w.oname[act[1]]} using the {w.rname[act[2]]}."
    if op == HEAT:
        return f"You heat the {w.oname[act[1]]} using the {w.rname[act[2]]}."
    if op == COOL:
        return f"You cool the {w.oname[act[1]]} using the {w.rname[act[2]]}."
    if op == SLICE:
        return f"You sliced the {w.oname[act[1]]} with the {w.oname[act[2]]}."
    if op == USE:
        # isToggled stays true once set, so the real grammar always answers "turn on".
        return f"You turn on the {w.oname[act[1]]}."
    if op == EXAMINE_R:
        return _examine_recep(w, s, act[1])
    if op == EXAMINE_O:
        return _examine_obj(w, s, act[1])
    if op == LOOK:
        if s.loc == MIDDLE:
            # The real games list the receptacles only in the intro; "look" before any
            # "go to" finds no location of the agent and lists nothing.
            return MIDDLE_LOOK
        names = _listing([w.rname[r] for r in w.loc_recs[s.loc]])
        return f"You are facing the {names}. Next to it, you see nothing."
    if op == INVENTORY:
        if s.held < 0:
            return "You are not carrying anything."
        return f"You are carrying: a {w.oname[s.held]}."
    if op == HELP:
        return HELP_TEXT
    raise ValueError(f"unknown action {act!r}")


def _examine_recep(w: World, s: State, r: int) -> str:
    rn = w.rname[r]
    if w.ropen[r] and not s.opened[r]:
        return f"The {rn} is closed."
    inside = sorted((o for o, at in enumerate(s.where) if at == r), key=w.orank.__getitem__)
    items = _listing([f"a {w.oname[o]}" for o in inside])
    if w.ropen[r]:
        return f"The {rn} is open. In it, you see {items}."
    return f"On the {rn}, you see {items}."


def _examine_obj(w: World, s: State, o: int) -> str:
    on = w.oname[o]
    if w.okind[o] in RECEPTACLE_OBJECTS:
        # The grammar's first rule: it hides hot/clean/cool on these kinds, as in the real game.
        return f"This is a normal {on}. In it, you see nothing."
    c, h, k, sl = s.clean[o], s.hot[o], s.cool[o], s.sliced[o]
    if sl:
        if c and h:
            return f"This is a hot and clean sliced {on}."
        if c and k:
            return f"This is a cool and clean sliced {on}."
        if c:
            return f"This is a clean sliced {on}."
        if h:
            return f"This is a hot sliced {on}."
        if k:
            return f"This is a cool sliced {on}."
    if c and h:
        return f"This is a hot and clean {on}."
    if c and k:
        return f"This is a cool and clean {on}."
    if h:
        return f"This is a hot {on}."
    if c:
        return f"This is a clean {on}."
    if k:
        return f"This is a cold {on}."
    if w.okind[o] in LAMPS:
        return f"This {on} is {'on' if s.toggled[o] else 'off'}."
    if sl:
        return f"This is a sliced {on}."
    return f"There's nothing special about {on}."


def won(w: World, s: State) -> bool:
    """Whether the task's goal holds in s (the real games' PDDL goal)."""
    tt = w.task_type
    if tt == "look_at_obj_in_light":
        if s.held < 0 or w.okind[s.held] != w.kind or s.loc == MIDDLE:
            return False
        return any(s.toggled[o] and w.okind[o] == w.lamp_kind and w.rloc[s.where[o]] == s.loc for o in w.lamps)
    target = w.target
    if tt == "pick_two_obj_and_place":
        seen: set[int] = set()
        for o in w.goal_objs:
            r = s.where[o]
            if r >= 0 and w.rtype[r] == target:
                if r in seen:
                    return True
                seen.add(r)
        return False
    prop = _prop(s, tt)
    for o in w.goal_objs:
        r = s.where[o]
        if r >= 0 and w.rtype[r] == target and (prop is None or prop[o]):
            return True
    return False


def _prop(s: State, task_type: str) -> list[bool] | None:
    tool = TOOLS.get(task_type)
    if tool is None:
        return None
    return {"clean": s.clean, "hot": s.hot, "cool": s.cool}[tool[1]]


# ---------------------------------------------------------------------------------------------
# Expert: exact cost-to-go from any state

INF = 10**6


def cost_to_go(w: World, s: State) -> int:
    """Length of a shortest winning plan from s (0 if won)."""
    if won(w, s):
        return 0
    best = INF
    held = s.held
    if held < 0:
        return _cost_empty(w, s)
    if w.okind[held] == w.kind:
        best = _cost_holding_goal_obj(w, s)
    # Any plan that puts the held object down: into which receptacle, then finish empty-handed.
    # Receptacles that are neither sources nor targets only matter through their spot and openness.
    relevant = set(w.targets) | {s.where[o] for o in w.goal_objs if s.where[o] >= 0}
    tried: set[tuple] = set()
    kind = w.okind[held]
    for q in range(len(w.rname)):
        if kind not in w.can[q]:
            continue
        closed = w.ropen[q] and not s.opened[q]
        key = (w.rloc[q], closed, q if q in relevant else -1)
        if key in tried:
            continue
        tried.add(key)
        c = (w.rloc[q] != s.loc) + closed + 1
        if c >= best:
            continue
        loc, was_open = s.loc, s.opened[q]
        s.loc, s.opened[q], s.where[held], s.held = w.rloc[q], True, q, -1
        rest = 0 if won(w, s) else _cost_empty(w, s)
        s.loc, s.opened[q], s.where[held], s.held = loc, was_open, -1, held
        best = min(best, c + rest)
    return best


def _closed(w: World, s: State, r: int) -> int:
    return 1 if w.ropen[r] and not s.opened[r] else 0


def _cost_holding_goal_obj(w: World, s: State) -> int:
    """Cost to finish when holding an object of the goal kind, using that object."""
    tt, rloc, h, loc = w.task_type, w.rloc, s.held, s.loc
    if tt == "look_at_obj_in_light":
        return _cost_lamp(w, s, loc)
    if tt == "pick_two_obj_and_place":
        best = INF
        for r in w.targets:
            c = (rloc[r] != loc) + _closed(w, s, r) + 1
            if sum(1 for o in w.goal_objs if s.where[o] == r) >= 1:
                best = min(best, c)
                continue
            for o in w.goal_objs:
                sr = s.where[o]
                if o == h or sr < 0:
                    continue
                best = min(best, c + (rloc[sr] != rloc[r]) + _closed(w, s, sr) + 1 + (rloc[sr] != rloc[r]) + 1)
        return best
    prop = _prop(s, tt)
    best = INF
    if prop is None or prop[h]:
        for r in w.targets:
            best = min(best, (rloc[r] != loc) + _closed(w, s, r) + 1)
        return best
    for t in w.tools:
        c = (rloc[t] != loc) + 1
        for r in w.targets:
            best = min(best, c + (rloc[r] != rloc[t]) + _closed(w, s, r) + 1)
    return best


def _cost_lamp(w: World, s: State, loc: int) -> int:
    """Cost, while holding the goal object at spot loc, to be at a lamp that is on."""
    best = INF
    for o in w.lamps:
        if w.okind[o] == w.lamp_kind and s.where[o] >= 0:
            best = min(best, (w.rloc[s.where[o]] != loc) + (0 if s.toggled[o] else 1))
    return best


def _cost_empty(w: World, s: State) -> int:
    """Cost to finish with empty hands."""
    tt, rloc, loc = w.task_type, w.rloc, s.loc
    best = INF
    if tt == "look_at_obj_in_light":
        for o in w.goal_objs:
            sr = s.where[o]
            c = (rloc[sr] != loc) + _closed(w, s, sr) + 1
            best = min(best, c + _cost_lamp(w, s, rloc[sr]))
        return best
    if tt == "pick_two_obj_and_place":
        for r in w.targets:
            inside = sum(1 for o in w.goal_objs if s.where[o] == r)
            cr = _closed(w, s, r)
            srcs = [o for o in w.goal_objs if s.where[o] != r]
            for o1 in srcs:
                s1 = s.where[o1]
                c1 = (rloc[s1] != loc) + _closed(w, s, s1) + 1 + (rloc[r] != rloc[s1]) + cr + 1
                if inside >= 1:
                    best = min(best, c1)
                    continue
                for o2 in srcs:
                    if o2 == o1:
                        continue
                    s2 = s.where[o2]
                    c2 = (rloc[s2] != rloc[r]) + (0 if s2 == s1 else _closed(w, s, s2)) + 1 + (rloc[r] != rloc[s2]) + 1
                    best = min(best, c1 + c2)
        return best
    prop = _prop(s, tt)
    for o in w.goal_objs:
        sr = s.where[o]
        c = (rloc[sr] != loc) + _closed(w, s, sr) + 1
        here = rloc[sr]
        if prop is None or prop[o]:
            for r in w.targets:
                best = min(best, c + (rloc[r] != here) + (0 if r == sr else _closed(w, s, r)) + 1)
            continue
        for t in w.tools:
            ct = c + (rloc[t] != here) + 1
            for r in w.targets:
                best = min(best, ct + (rloc[r] != rloc[t]) + (0 if r == sr else _closed(w, s, r)) + 1)
    return best


# ---------------------------------------------------------------------------------------------
# Generation


def _layout(room: str, layout: int) -> tuple[list[str], list[int]]:
    """Receptacle types and spots of one of a room kind's fixed layouts."""
    rng = random.Random(f"household-layout:{room}:{layout}")
    types: list[str] = []
    for rtype, lo, hi in ROOMS[room]:
        types += [rtype] * rng.randint(lo, hi)
    locs: list[int] = []
    loc = -1
    shared_prev = False
    for i, t in enumerate(types):
        if i > 0 and t == types[i - 1] and t in SHAREABLE and not shared_prev and rng.random() < 0.25:
            shared_prev = True  # same spot as the previous one
        else:
            loc += 1
            shared_prev = False
        locs.append(loc)
    return types, locs


def generate(split: str, seed: int, task_type: str | None = None) -> World:
    """Build the task (split, seed, task_type); the same arguments always give the same world."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if task_type is not None and task_type not in TASKS:
        raise ValueError(f"unknown task type {task_type!r}; use one of {ALFWORLD_TASK_TYPES}")
    rng = random.Random(f"household:{split}:{task_type}:{seed}")
    task_id = f"household/{split}/{task_type or 'any'}/{seed}"
    if task_type is None:
        task_type = rng.choice(ALFWORLD_TASK_TYPES)
    unseen = split == "valid_unseen"
    kinds_ok, target_types, rooms, templates = TASKS[task_type]
    for _ in range(1000):
        room = rng.choice(rooms)
        layout = rng.choice(UNSEEN_LAYOUTS if unseen else SEEN_LAYOUTS)
        types, locs = _layout(room, layout)
        present = set(types)
        room_kinds = ROOM_KINDS[room] if unseen else ROOM_KINDS[room] - HELDOUT_KINDS
        cands: list[tuple[str, str]] = []
        for kind in sorted(kinds_ok & room_kinds):
            homes = {t for t in present if kind in CAN_CONTAIN[t]}
            if task_type == "look_at_obj_in_light":
                if homes:
                    cands.append((kind, ""))
                continue
            for t in target_types:
                if t in present and kind in CAN_CONTAIN[t] and (homes - {t} or TOOLS.get(task_type)):
                    cands.append((kind, t))
        if not cands:
            continue
        held_out = [c for c in cands if c[0] in HELDOUT_KINDS]
        kind, target = rng.choice(held_out if held_out and rng.random() < 0.5 else cands)
        return _populate(rng, split, seed, task_id, task_type, room, layout, types, locs, kind, target, room_kinds, templates, unseen)
    raise RuntimeError(f"could not generate a {task_type} task for split={split} seed={seed}")


def _populate(rng, split, seed, task_id, task_type, room, layout, types, locs, kind, target, room_kinds, templates, unseen) -> World:
    counts: dict[str, int] = {}
    rname = []
    for t in types:
        counts[t] = counts.get(t, 0) + 1
        rname.append(f"{t} {counts[t]}")
    # Objects: the goal kind plus a handful of other kinds of the room, 1-3 of each.
    others = sorted(room_kinds - {kind})
    chosen = rng.sample(others, min(len(others), rng.randint(6, 11)))
    n_goal = rng.randint(2, 4) if task_type == "pick_two_obj_and_place" else rng.randint(1, 3)
    placements: list[tuple[str, int]] = []
    keep_out = target if task_type in ("pick_and_place_simple", "pick_two_obj_and_place") else ""
    for k, n in [(kind, n_goal)] + [(k, rng.randint(1, 3)) for k in chosen]:
        homes = [r for r, t in enumerate(types) if k in CAN_CONTAIN[t] and not (k == kind and t == keep_out)]
        if not homes:
            continue
        placements += [(k, rng.choice(homes)) for _ in range(n)]
    lamp_kind = ""
    surfaces = [r for r, t in enumerate(types) if t in LAMP_SURFACES]
    if room in ("bedroom", "livingroom") and surfaces and (task_type == "look_at_obj_in_light" or rng.random() < 0.7):
        lamp_kind = rng.choice(("desklamp", "floorlamp")) if unseen else "desklamp"
        placements.append((lamp_kind, rng.choice(surfaces)))
    decor_homes = {"houseplant": ("countertop", "sidetable", "diningtable", "shelf", "coffeetable", "desk", "dresser"),
                   "television": ("dresser", "tvstand", "coffeetable", "sidetable")}
    for k, homes_t in decor_homes.items():
        homes = [r for r, t in enumerate(types) if t in homes_t]
        if homes and room != "bathroom" and rng.random() < 0.4:
            placements.append((k, rng.choice(homes)))
    rng.shuffle(placements)
    counts = {}
    oname, okind, where = [], [], []
    for k, r in placements:
        counts[k] = counts.get(k, 0) + 1
        oname.append(f"{k} {counts[k]}")
        okind.append(k)
        where.append(r)
    goal_target = lamp_kind if task_type == "look_at_obj_in_light" else target
    goal = rng.choice(templates).format(o=kind, r=goal_target)
    return World(
        split=split, seed=seed, task_type=task_type, task_id=task_id, room=room,
        layout=layout, goal=goal, kind=kind, target=target,
        lamp_kind=lamp_kind if task_type == "look_at_obj_in_light" else "", rname=rname, rtype=list(types),
        ropen=[t in OPENABLE for t in types], rloc=list(locs), oname=oname, okind=okind, init_where=where,
    )


# ---------------------------------------------------------------------------------------------
# The env


class HouseholdEnv:
    """A generated household task behind the TextEnv protocol (see the module docstring).

    expert: fill info["expert_action"] on every reset/step (costs time); without it the expert is
    still available on demand through expert_action(), expert_plan() and optimal_actions().
    """

    def __init__(self, split: str = "train", seed: int = 0, task_type: str | None = None,
                 step_limit: int = 50, expert: bool = False) -> None:
        self.world = generate(split, seed, task_type)
        self.step_limit = step_limit
        self.expert = expert
        self.state = State(self.world)
        self.steps = 0
        self.done = False
        self._won = False
        self._cmds: dict[str, tuple] = {}

    # -- protocol --

    def reset(self) -> tuple[str, dict]:
        self.state = State(self.world)
        self.steps = 0
        self.done = False
        self._won = False
        self._cmds = admissible(self.world, self.state)
        obs = INTRO_HEAD + self.world.intro_look + "\n\nYour task is to: " + self.world.goal
        return obs, self._info()

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.done:
            raise RuntimeError("the episode is over; call reset() before step()")
        w, s = self.world, self.state
        self.steps += 1
        act = self._cmds.get(action.strip())
        reward = 0.0
        if act is None:
            obs = NOTHING
        else:
            apply(s, act)
            obs = feedback(w, s, act)
            if act[0] not in _INFO_OPS:
                self._cmds = admissible(w, s)
                if won(w, s):
                    self._won = True
                    reward = 1.0
        self.done = self._won or self.steps >= self.step_limit
        return obs, reward, self.done, self._info()

    def _info(self) -> dict:
        return {
            "goal": self.world.goal,
            "task_type": self.world.task_type,
            "task_id": self.world.task_id,
            "admissible_commands": sorted(self._cmds),
            "won": self._won,
            "expert_action": self.expert_action() if self.expert and not self._won else None,
            "split": self.world.split,
            "steps": self.steps,
        }

    # -- expert --

    def cost_to_go(self) -> int:
        """Steps of a shortest winning plan from the current state (0 when won)."""
        return cost_to_go(self.world, self.state)

    def optimal_actions(self) -> set[str]:
        """Every admissible command that starts some shortest winning plan from here (empty when won)."""
        w, s = self.world, self.state
        v = cost_to_go(w, s)
        if v == 0:
            return set()
        best: set[str] = set()
        for cmd, act in self._cmds.items():
            if act[0] in _INFO_OPS:
                continue
            nxt = s.copy()
            apply(nxt, act)
            if cost_to_go(w, nxt) == v - 1:
                best.add(cmd)
        return best

    def expert_action(self) -> str | None:
        """The optimal next command (the first in sorted order among optimal ones); None when won."""
        acts = self.optimal_actions()
        return min(acts) if acts else None

    def expert_plan(self) -> list[str]:
        """The expert's remaining plan from the current state (it does not change this env)."""
        sim = self.clone()
        sim.expert = False
        sim.step_limit = 10**9
        plan: list[str] = []
        while not sim._won:
            a = sim.expert_action()
            if a is None:
                raise RuntimeError(f"the expert found no plan for {self.world.task_id}; this is a bug")
            plan.append(a)
            sim.step(a)
        return plan

    # -- snapshots --

    def clone(self) -> HouseholdEnv:
        """An independent copy in the same state (the world is shared: it never changes)."""
        env = HouseholdEnv.__new__(HouseholdEnv)
        env.world, env.step_limit, env.expert = self.world, self.step_limit, self.expert
        env.state, env.steps, env.done, env._won = self.state.copy(), self.steps, self.done, self._won
        env._cmds = dict(self._cmds)
        return env

    def snapshot(self) -> tuple:
        """An opaque value that restore() turns back into this moment of the episode."""
        return (self.state.copy(), self.steps, self.done, self._won, dict(self._cmds))

    def restore(self, snap: tuple) -> None:
        state, self.steps, self.done, self._won, cmds = snap
        self.state, self._cmds = state.copy(), dict(cmds)


def list_tasks(split: str, n: int, seed: int = 0) -> list[TaskSpec]:
    """n household tasks of a split, cycling through the six task types; deterministic."""
    specs = []
    for i in range(n):
        task_type = ALFWORLD_TASK_TYPES[i % len(ALFWORLD_TASK_TYPES)]
        task_seed = seed * 1_000_000 + i // len(ALFWORLD_TASK_TYPES)
        specs.append(TaskSpec("household", split, f"household/{split}/{task_type}/{task_seed}", task_seed, task_type))
    return specs
