"""What a world is, as the core needs to know it: the `Domain` protocol and its generic default.

Reflection, hints, policies and training data ask a domain, never a constant of their own:

* which steps are **actions** (change the world), which only **look** (read a tool, "look"),
  which are **reasoning** or chat (``think: ...``, a message without a tool call, "OK.");
* whether a step **failed**, and the signal that says so (:class:`Verdict`);
* what the goal **names** (:class:`SlotMap`: the values a lesson must not quote verbatim);
* the **state** after a history (:class:`State`: facts a trigger can name);
* which **situations** a trigger may name, and whether one holds in a state (TextDomain: also a
  step done or not yet, ``after `X` succeeded, while `Y` is not done yet``);
* the **rules** a failure teaches at its pivot (:class:`Rule`), and the **policy features**
  a domain adds for a trainable policy.

`TextDomain` is correct for any agent whose actions are strings or tool calls
(``refund(order_id='ORD-1004', amount=80.0)``): it keeps case and values, slots only what the
goal names (ids, numbers, quoted strings, codes, and the goal's nouns that an action of the
episode also names) and never argument names, reads tool errors, a verifier's reason, a command
the world did not offer and a no-op reply as failure and ordinary prose ("unable to" in a
reply) as not-a-failure, and names the mistakes any agent makes (`TextDomain.diagnose`). World packs (``skillmem/domains/...``) subclass it and add what only
their world knows; the core never imports a pack: whoever runs the agent passes one in.

    from skillmem.domain import TextDomain
    d = TextDomain()
    d.step_kind(StepView("think: the order id is in the message"))    # StepKind.reasoning
    d.failure(StepView("refund(order_id='ORD-1')", error="amount exceeds order total"))
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping, Optional, Protocol, Sequence, runtime_checkable

# --------------------------------------------------------------------------- typed values


class StepKind(str, Enum):
    """What a step is, for contrast and demonstrations."""

    action = "action"  # may change the world: a command, a tool call that writes
    look = "look"  # only reads the world: "look", "inventory", lookup_order(...)
    reasoning = "reasoning"  # not an action at all: a thought, a chat message, an "OK." exchange


@dataclass(frozen=True)
class StepView:
    """One recorded step as a domain reads it (the store's Step, or a policy's history item)."""

    action: str
    feedback: str = ""
    error: Optional[str] = None  # the step's error column: a tool's error status, an exception
    observation: str = ""
    admissible: Optional[tuple[str, ...]] = None  # the commands the world offered before this step, if it lists them


@dataclass(frozen=True)
class Verdict:
    """Whether a step failed, and the signal that says so (shown to a writer as evidence)."""

    failed: bool
    signal: str = ""  # "tool error: ...", "exception", "refused command", "" when it did not fail

    def __bool__(self) -> bool:
        return self.failed


@dataclass
class State:
    """The situation after a history: the facts a trigger can name, and the domain's own tracker."""

    facts: frozenset[str] = frozenset()
    detail: Any = None  # a pack's own world state (what is held, where the agent is...)


@dataclass
class Rule:
    """A pivot turned into advice that holds beyond its episode: situation, bad action, fix.

    `mistake` names the kind of mistake in words a person reads ("tool error", "wrong
    argument", "repeated a step that changed nothing", "object in view not taken"...).
    """

    situation: list[str]
    bad_action: str
    fix: str
    scope: str  # general | task
    transferable: bool = True
    why_not: str = ""
    step: Optional[int] = None  # the step the rule was read at
    mistake: str = ""
    goal_template: str = ""  # the goal with the slots the rule's texts use ("" : the analysis's own)


@dataclass
class TypePlan:
    """A recorded success of a task type, as evidence of what its successes do: its plan's steps
    slotted with its own goal's values, and each as played (the concrete command), when known."""

    steps: list[str]
    played: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- slots

# Values a goal names, in the order they are tried (longer, more specific shapes first).
_QUOTED = re.compile(r"""'([^'\n]{1,200})'|"([^"\n]{1,200})"|`([^`\n]{1,200})`""")
_ID = re.compile(r"(?<![\w.])(?=[\w#-]*\d)(?=[\w#-]*[A-Za-z#_-])[A-Za-z#][\w#-]*\w(?![\w])|(?<![\w.])#\d+\b")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)?(?![\w])")
_CODE = re.compile(r"\b[A-Z]{2,6}\b")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_STOP = frozenset("""a an the and or of to in on at for from with by into onto under over as is are was be been it its
this that these those some any all two three one my your our their his her them they you we i me us not no
please then than so if when where what which who how can could would should will shall may might must do does did
done have has had get got make made use using put set about after before up down out off more most each every
there here just only also very too back again new same other another such own""".split())
_SLOT_TOKEN = re.compile(r"\[([A-Za-z_][\w ]*?)\]")
# Situations a trigger names by a step: done (after it succeeded) or not yet done.
_AFTER = re.compile(r"after `([^`]+)` succeeded")
_UNTIL = re.compile(r"while `([^`]+)` is not done yet")


def _as_number(text: str) -> Optional[float]:
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return None


@dataclass
class SlotMap:
    """The values a goal names, as slots: ``abstract()`` turns them into ``[id]``, ``fill()`` back.

    Only the goal's own values become slots (an id, a number, a quoted string, a code like
    ``USD``, a noun of the goal); everything else of an action stays verbatim, in its case.
    Argument names are never slotted: ``refund(order_id='ORD-1', amount=80.0)`` with a goal
    naming ORD-1 reads ``refund(order_id='[id]', amount=80.0)``.
    """

    values: dict[str, str] = field(default_factory=dict)  # slot -> value in the source, in goal order
    kinds: dict[str, str] = field(default_factory=dict)  # slot -> "id" | "number" | "text" | "code" | "noun"

    @classmethod
    def from_goal(cls, goal: str, actions: Optional[Iterable[str]] = None) -> "SlotMap":
        """The goal's values as slots. With `actions` (an episode's actions), a goal word is a noun slot
        only when some action also names it as an argument: "order" in "Refund order ORD-1" names
        nothing a call takes, so it stays prose. Noun slots keep the numbers they have without
        `actions`, so one goal's slots read the same whichever way they were made."""
        m = cls()
        text = goal or ""
        taken: list[tuple[int, int]] = []

        def free(a: int, b: int) -> bool:
            return all(b <= x or a >= y for x, y in taken)

        for kind, rx in (("text", _QUOTED), ("id", _ID), ("number", _NUMBER), ("code", _CODE)):
            for hit in rx.finditer(text):
                g = next((i for i in range(1, (rx.groups or 0) + 1) if hit.group(i)), 0)
                a, b = hit.span(g)
                if free(a, b):
                    taken.append((a, b))
                    m.add(kind, hit.group(g))
        words = [(w.group(0), w.span()) for w in _WORD.finditer(text)]
        for i, (w, (a, b)) in enumerate(words):
            # The goal's first word is its verb ("refund ...", "put ..."); stopwords name nothing.
            if i == 0 or len(w) < 2 or w.lower() in _STOP or not free(a, b):
                continue
            m.add("noun", w)
        if actions is not None:
            named = argument_words(actions)
            for slot in [k for k, kind in m.kinds.items() if kind == "noun"]:
                if m.values[slot].lower() not in named:
                    del m.values[slot], m.kinds[slot]
        return m

    def add(self, kind: str, value: str) -> str:
        """The slot for `value` (a new one, ``[kind]``, ``[kind2]``..., unless it has one)."""
        for slot, v in self.values.items():
            if v.lower() == value.lower():
                return slot
        n, slot = 1, f"[{kind}]"
        while slot in self.values:
            n += 1
            slot = f"[{kind}{n}]"
        self.values[slot] = value
        self.kinds[slot] = kind
        return slot

    @property
    def slots(self) -> dict[str, str]:
        """Slot -> the value it stands for in the source episode."""
        return dict(self.values)

    def _sub_value(self, text: str, nouns: bool = True) -> str:
        out = text
        items = sorted(self.values.items(), key=lambda kv: -len(kv[1]))
        for slot, value in items:
            kind = self.kinds.get(slot)
            if kind == "number":
                num = _as_number(value)

                def same(m: re.Match[str], num: Optional[float] = num, slot: str = slot) -> str:
                    v = _as_number(m.group(0))
                    return slot if v is not None and num is not None and abs(v - num) < 1e-9 else m.group(0)

                out = _NUMBER.sub(same, out)
            elif kind == "noun":
                if nouns:
                    out = re.sub(rf"(?<![\w\[]){re.escape(value)}(?![\w\]])", slot, out, flags=re.IGNORECASE)
            else:
                # Codes and ids keep their case: 'usd' is not the goal's USD to a tool that checks.
                out = re.sub(rf"(?<![\w\[-]){re.escape(value)}(?![\w\]-])", slot, out)
        return out

    def abstract(self, text: str) -> str:
        """`text` with the goal's values replaced by their slots (argument names and verbs untouched)."""
        if not text or not self.values:
            return text or ""
        call = parse_call(text)
        if call is not None:
            name, args = call
            return f"{name}(" + ", ".join(f"{k}={self._sub_value(v)}" if k else self._sub_value(v)
                                         for k, v in args) + ")"
        head, _, rest = text.partition(" ")
        if not rest:
            return self._sub_value(text, nouns=False)
        # A text command's first word is its verb: "archive" in "archive [noun] to ..." is not the goal's noun.
        return head + " " + self._sub_value(rest)

    def abstract_prose(self, text: str, *, nouns: bool = False) -> str:
        """Free text (feedback, a verifier's reason) with the goal's values replaced; the goal's nouns
        too with `nouns` (a goal template, whose nouns a text command's slots refer to)."""
        return self._sub_value(text or "", nouns=nouns) if self.values else (text or "")

    def fill(self, template: str, values: Optional[Mapping[str, str]] = None) -> str:
        """A slotted template with values put back (this map's own, or `values` of another goal)."""
        vals = self.values if values is None else values
        return _SLOT_TOKEN.sub(lambda m: vals.get(f"[{m.group(1)}]", m.group(0)), template)

    def bind(self, goal_template: str, goal: str) -> dict[str, str]:
        """The values another goal gives this template's slots ({} when it does not fit)."""
        parts, pos, names = [], 0, []
        for m in _SLOT_TOKEN.finditer(goal_template):
            parts.append(re.escape(goal_template[pos:m.start()]))
            name = f"[{m.group(1)}]"
            if name in names:
                parts.append(f"(?P=s{names.index(name)})")
            else:
                parts.append(f"(?P<s{len(names)}>.+?)")
                names.append(name)
            pos = m.end()
        parts.append(re.escape(goal_template[pos:]))
        rx = re.compile("^" + r"\s*".join(p for p in parts if p).replace(r"\ ", r"\s+") + r"\s*\.?$", re.IGNORECASE)
        hit = rx.match((goal or "").strip())
        return {n: hit.group(f"s{i}") for i, n in enumerate(names)} if hit else {}


# --------------------------------------------------------------------------- tool calls

_CALL = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\((.*)\)\s*$", re.DOTALL)
_ARG = re.compile(r"""\s*(?:([A-Za-z_]\w*)\s*=\s*)?('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\{[^{}]*\}|\[[^\[\]]*\]|[^,]+)\s*(?:,|$)""")


def parse_call(action: str) -> Optional[tuple[str, list[tuple[str, str]]]]:
    """``name(k=v, ...)`` as (name, [(k, v-as-written)]), or None when `action` is not a tool call."""
    m = _CALL.match(action or "")
    if not m:
        return None
    body, args, pos = m.group(2), [], 0
    while pos < len(body):
        a = _ARG.match(body, pos)
        if not a or a.end() == pos:
            return None
        args.append((a.group(1) or "", a.group(2).strip()))
        pos = a.end()
    return m.group(1), args


_NUMBER = re.compile(r"[+-]?(?:0|[1-9]\d*)(?:\.\d*)?(?:[eE][+-]?\d+)?")


def _canon_value(v: str) -> str:
    """A call's argument as compared: 10.00, 10.0 and 10 are one number, 'B22' and "B22" one string
    (a lesson's trigger written from ``amount=10.00`` must hold for ``amount=10.0``)."""
    v = v.strip()
    if _NUMBER.fullmatch(v):
        x = float(v)
        return str(int(x)) if x.is_integer() and abs(x) < 2 ** 53 else repr(x)
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" and "'" not in v[1:-1]:
        return "'" + v[1:-1] + "'"
    return v


def call_name(action: str) -> str:
    """The tool a call names ("" for a text command)."""
    c = parse_call(action)
    return c[0] if c else ""


def argument_words(actions: Iterable[str]) -> set[str]:
    """The lower-cased words actions take as arguments: a call's values (never its argument names),
    a text command's words after its verb."""
    out: set[str] = set()
    for a in actions:
        c = parse_call(a or "")
        text = " ".join(v for _, v in c[1]) if c else " ".join((a or "").split()[1:])
        out.update(w.lower() for w in _WORD.findall(text))
    return out


@lru_cache(maxsize=8192)
def _content(text: str) -> frozenset[str]:
    """The words of `text` that can name something (three letters or more, not a stopword)."""
    return frozenset(w.lower() for w in _WORD.findall(text or "") if len(w) >= 3 and w.lower() not in _STOP)


def _content_of(texts: Iterable[str]) -> frozenset[str]:
    """`_content` of several texts, each read once (a step's answer is met again at every later step)."""
    out: set[str] = set()
    for t in texts:
        out |= _content(t or "")
    return frozenset(out)


# A text command's arguments are the phrases between its verb and its prepositions ("take X from Y").
_PREPOSITION = re.compile(r"(?:^|\s+)(?:from|to|in|into|on|onto|with|at|under|over|for|by|about|using|inside|off)\s+",
                          re.IGNORECASE)


def arguments(action: str) -> list[str]:
    """What an action acts on: a call's argument values (unquoted), a text command's phrases."""
    c = parse_call(action or "")
    if c is not None:
        return [v.strip().strip("'\"") for _, v in c[1] if v.strip().strip("'\"")]
    head, _, rest = " ".join((action or "").split()).partition(" ")
    return [p for p in _PREPOSITION.split(rest) if p]


def resembles(value: str, goal_value: str) -> bool:
    """Is `value` a look-alike of `goal_value`: close to it but not it? ("gpt-4o-mini" of "gpt-4o",
    "ORD-1005" or "ORD-1030" of "ORD-1004"; never a value equal to it, whatever its case)."""
    a, b = value.lower(), goal_value.lower()
    if a == b or len(b) < 3 or len(a) < 3:
        return False
    if a.isalpha() and b.isalpha():
        return b in a or (a in b and len(a) >= 4)
    if _ID.fullmatch(value) and _ID.fullmatch(goal_value):
        # The same shape (letters, separators, digit count) with other digits: another record's id.
        shape = re.sub(r"\d", "9", a) == re.sub(r"\d", "9", b)
        return shape and sum(x != y for x, y in zip(a, b)) <= max(2, len(b) // 3)
    return False


# --------------------------------------------------------------------------- the protocol


@runtime_checkable
class Domain(Protocol):
    """What the core asks of a world. `TextDomain` is the default; packs subclass it.

    Beside the methods below, the core reads these optional hooks when a domain has them (found by
    `getattr`; `TextDomain` has the first four, a pack may override or add the rest):

    * ``holds(trigger, state, goal, values=...)``: a `holds` that takes ``values`` reads a trigger's
      step situations (``after `X` succeeded``) with the lesson's slots filled from them;
    * ``lesson_slots(goal, commands) -> SlotMap``: the slots lessons are written and read with (goal
      words that are a command's verb here are no values), so goals worded otherwise share lessons;
    * ``repeats(action, done) -> bool``: does an action do again what a done step did (hints never
      offer a fix that redoes or takes back a done step); default: the same `action_key`;
    * ``lessons_per_failure: int``: how many lessons the offline writer keeps from one failure
      (default 1, the main rule; TextDomain 4);
    * ``preferred_rule(rules) -> Rule | None``: which of a pivot's rules is the main lesson;
    * ``progressed(step) -> bool``: whether a step moved toward the goal, for the pivot's search;
    * ``explores: bool``: the domain's own hints explore, so the CPU policy's loop guard stays off;
    * ``hints(context, goal, history, admissible)``: the domain gives hints itself instead of the
      generic matching of lessons and demonstrations.
    """

    name: str

    def step_kind(self, step: StepView) -> StepKind:
        """Action, look, or reasoning/chat."""
        ...

    def failure(self, step: StepView) -> Verdict:
        """Did this step fail, and by which signal?"""
        ...

    def action_key(self, action: str) -> str:
        """An action as compared with another (two wordings of one command compare equal)."""
        ...

    def written(self, action: str) -> str:
        """An action as a lesson or demonstration writes it (values and, for tools, case kept)."""
        ...

    def slots(self, goal: str) -> SlotMap:
        """What the goal names, as slots."""
        ...

    def state(self, goal: str, steps: Sequence[StepView]) -> State:
        """The situation after these steps."""
        ...

    def situations(self) -> Sequence[str]:
        """The situation phrases a lesson's trigger may name."""
        ...

    def holds(self, trigger: str, state: State, goal: str) -> bool:
        """Does every situation the trigger names hold in `state`? (None named: it holds.) May take
        ``values=`` too (see above)."""
        ...

    def rules(self, trace: Any, pivot: Any, slots: SlotMap, success_plan: Sequence[str]) -> list[Rule]:
        """What the failure teaches at its pivot, as rules over situations (first: the main one)."""
        ...

    def policy_features(self, goal: str, history: Sequence[tuple[str, str]], candidates: Sequence[str]
                        ) -> list[list[str]]:
        """Feature names a trainable policy may cross with each candidate (the domain's state)."""
        ...


# --------------------------------------------------------------------------- the generic default

# A step whose action starts with one of these is the agent talking, not acting.
REASONING_PREFIXES = ("think:", "thought:", "thinking:", "reasoning:", "plan:", "reflection:", "say:", "answer:",
                      "final answer:", "final:")
# Replies a world gives to something that was not an action.
ACK_REPLIES = frozenset({"ok", "ok.", "okay", "okay.", "noted.", "acknowledged."})
# Tools and text commands that only read: a lesson is rarely about them and contrast skips them.
LOOK_PREFIXES = ("get", "lookup", "look", "search", "find", "list", "read", "fetch", "check", "view", "show",
                 "describe", "query", "inspect", "inventory", "help", "examine")
# Parser refusals of text games: the command was not understood at all (anchored: never prose).
_REFUSED = re.compile(r"^\s*(i (?:don'?t|do not) understand|i didn'?t understand|unknown (?:command|action|verb)|"
                      r"invalid (?:command|action|input|syntax)|that'?s not a (?:valid )?(?:verb|command|action)|"
                      r"(?:command|action) not (?:recognized|recognised|understood|available)|"
                      r"you can'?t do that here|not a valid (?:command|action))", re.IGNORECASE)
_EXCEPTION = re.compile(r"^\s*(?:error\b|exception\b|\w*(?:Error|Exception)\s*:|tool error\b)|Traceback \(most recent call",
                        re.IGNORECASE)


def _json_error(feedback: str) -> Optional[str]:
    s = (feedback or "").strip()
    if not (s.startswith("{") and s.endswith("}")):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    status = str(obj.get("status", "")).lower()
    if status in ("error", "failed", "failure") or obj.get("ok") is False or obj.get("success") is False:
        return str(obj.get("error") or obj.get("message") or obj.get("detail") or status)
    if obj.get("error"):
        return str(obj["error"])
    return None


class TextDomain:
    """The generic domain: actions are strings or tool calls; nothing about any world is assumed.

    `look_tools`: names of tools that only read (beyond names starting with get/lookup/search...);
    `action_tools`: names that change the world even though they start like a read ("check_out").
    """

    name = "text"
    # Whether this domain's own hints explore (a pack that tracks which places were visited). A
    # policy adds its loop guard only where they do not: two explorers pull against each other.
    explores = False
    # Lessons one failure may give: its pivot's, then the other mistakes where it left a successful
    # plan (`plan_mistakes`), each at its own step and situation.
    lessons_per_failure = 4

    def __init__(self, *, look_tools: Iterable[str] = (), action_tools: Iterable[str] = ()):
        self.look_tools = frozenset(look_tools)
        self.action_tools = frozenset(action_tools)

    # ----------------------------------------------------------- steps

    def is_reasoning(self, action: str) -> bool:
        a = (action or "").strip()
        return not a or a.lower().startswith(REASONING_PREFIXES)

    def step_kind(self, step: StepView) -> StepKind:
        action = (step.action or "").strip()
        if self.is_reasoning(action):
            return StepKind.reasoning
        name = call_name(action)
        if not name and (step.feedback or "").strip().lower() in ACK_REPLIES and not step.error:
            return StepKind.reasoning  # the world only acknowledged it: a thought said aloud
        head = name or action.split()[0]
        low = head.lower()
        if head in self.action_tools:
            return StepKind.action
        if head in self.look_tools or low == "look" or any(
                low == p or low.startswith(p + "_") or low.startswith(p + ".") or
                (name and low.startswith(p) and head[len(p):][:1].isupper()) for p in LOOK_PREFIXES):
            return StepKind.look
        return StepKind.action

    def failure(self, step: StepView) -> Verdict:
        if step.error:
            return Verdict(True, f"tool error: {_clip(step.error, 160)}")
        fb = step.feedback or ""
        err = _json_error(fb)
        if err is not None:
            return Verdict(True, f"tool error: {_clip(err, 160)}")
        if _EXCEPTION.search(fb):
            return Verdict(True, f"error: {_clip(fb, 160)}")
        if _REFUSED.search(fb):
            return Verdict(True, f"refused command: {_clip(fb, 160)}")
        if step.admissible and not call_name(step.action) and not self.is_reasoning(step.action) and \
                self.action_key(step.action) not in {self.action_key(a) for a in step.admissible}:
            return Verdict(True, "not an admissible command: the world did not offer it")
        return Verdict(False)

    def noop_replies(self, steps: Sequence[StepView]) -> dict[int, str]:
        """Steps the world answered with a no-op: one short reply, naming nothing the command named,
        given to two or more different commands of the episode (the "nothing occurs"-style answers
        of text games). Tool calls and structured replies are never read this way."""
        seen: dict[str, tuple[set[str], list[int]]] = {}
        for i, s in enumerate(steps):
            if s.error or call_name(s.action) or self.step_kind(s) is not StepKind.action:
                continue
            reply = " ".join((s.feedback or "").split())
            if not reply or len(reply) > 80 or reply[:1] in "{[" or reply.lower() in ACK_REPLIES or \
                    _content(reply) & _content(s.action):
                continue
            keys, idx = seen.setdefault(reply, (set(), []))
            keys.add(self.action_key(s.action))
            idx.append(i)
        return {i: f"no-op reply: {_clip(r, 60)} (the same answer to different commands)"
                for r, (keys, idx) in seen.items() if len(keys) >= 2 for i in idx}

    def action_key(self, action: str) -> str:
        a = " ".join((action or "").split())
        call = parse_call(a)
        if call is not None:  # tool arguments keep their case: ids and codes are case-sensitive
            name, args = call
            args = [(k, _canon_value(v)) for k, v in args]
            return f"{name}(" + ", ".join(f"{k}={v}" if k else v for k, v in sorted(args)) + ")"
        return a.rstrip(".").lower()  # text parsers read commands without case

    def written(self, action: str) -> str:
        return " ".join((action or "").split())

    # ----------------------------------------------------------- goal and state

    def slots(self, goal: str, actions: Optional[Iterable[str]] = None) -> SlotMap:
        return SlotMap.from_goal(goal, actions)

    def state(self, goal: str, steps: Sequence[StepView]) -> State:
        facts: set[str] = set()
        acts = [s for s in steps if self.step_kind(s) is not StepKind.reasoning]
        if not acts:
            facts.add("at the start")
        else:
            last = acts[-1]
            if self.failure(last):
                facts.add("the last action failed")
            if len(acts) > 1 and self.action_key(acts[-2].action) == self.action_key(last.action) and \
                    " ".join(acts[-2].feedback.split()) == " ".join(last.feedback.split()):
                facts.add("the last action changed nothing")
            called = {call_name(s.action) for s in acts if call_name(s.action) and not self.failure(s)}
            facts.update(f"after calling {n}" for n in called)
        # The steps themselves: a trigger may name a step done or not done yet (`holds`).
        return State(frozenset(facts), tuple(steps))

    def situations(self) -> Sequence[str]:
        return ("at the start", "the last action failed", "the last action changed nothing", "after calling <tool>",
                "after `<step>` succeeded", "while `<step>` is not done yet")

    def holds(self, trigger: str, state: State, goal: str, values: Optional[Mapping[str, str]] = None) -> bool:
        """Every situation the trigger names holds in `state`; steps it names (`after ... succeeded`,
        `while ... is not done yet`) are read with `values` for their slots (default: this goal's)."""
        low = (trigger or "").lower()
        for phrase in ("at the start", "the last action failed", "the last action changed nothing"):
            if phrase in low and phrase not in state.facts:
                return False
        for tool in re.findall(r"after calling (\w[\w.\-]*)", trigger or ""):
            if f"after calling {tool}" not in state.facts:
                return False
        after, until = _AFTER.findall(trigger or ""), _UNTIL.findall(trigger or "")
        if after or until:
            done = self.done_steps(state.detail if isinstance(state.detail, tuple) else ())
            values = values if values is not None else self.slots(goal).values
            # "after A, while B is not done yet": A was done, and B not since the last A (a step the
            # plan takes twice, as two objects put one by one, is due again after each A).
            since = 0
            for p in after:
                hits = [i for i, a in enumerate(done) if step_matches(p, a, values, self)]
                if not hits:
                    return False
                since = max(since, hits[-1] + 1)
            if any(step_matches(p, a, values, self) for p in until for a in done[since:]):
                return False
        return True

    def done_steps(self, steps: Sequence[StepView]) -> list[str]:
        """The actions of `steps` that were carried out: not reasoning, not failed."""
        return [s.action for s in steps if self.step_kind(s) is not StepKind.reasoning and not self.failure(s)]

    def repeats(self, action: str, done: Iterable[str]) -> bool:
        """Does `action` do again what a done step did: the same command, or the same verb on the same
        identified thing first ("take key 1 from box 1" after "take key 1 from table 1": the key is
        taken back, not a second one taken)? Only a first argument with a number identifies one
        thing: "send email to bob" after "send email to alice" is another email. A plan's step due
        again wants another instance."""
        key = self.action_key(action)
        head = (call_name(action) or _verb(action)).lower(), [x.lower() for x in arguments(action)[:1]]
        identified = bool(head[1]) and any(c.isdigit() for c in head[1][0])
        for d in done:
            if self.action_key(d) == key:
                return True
            if not call_name(action) and identified and \
                    ((call_name(d) or _verb(d)).lower(), [x.lower() for x in arguments(d)[:1]]) == head:
                return True
        return False

    # ----------------------------------------------------------- a plan's goal steps, against a trace

    def plan_mistakes(self, goal: str, steps: Sequence[StepView], plan: Sequence[str]) -> list[Rule]:
        """Where a failed episode left a successful plan's goal steps, as rules over situations.

        A plan's *goal steps* are those that name the goal's values (``take [noun] ...``, ``refund(
        order_id='[id]')``): what the plan is for, in order, whatever its episode did in between.
        Read with their other details free, they are steps of any episode of the task. Walking the
        failed trace, the next goal step not yet done is *due*; the situation is "after the
        previous goal step succeeded, while the due one is not done yet". Three mistakes show:

        * the due step was **offered and not taken** (a command the world listed matched it, and
          the agent did something else). A step offered from the very start, before any goal step
          was done, is no mistake: which of the first options to try was the source episode's
          choice, not a skill;
        * a **later goal step was done first** (the due one skipped): the fix is the plan's step
          that led to the due one (``go to [the tool] ...``), else the due step itself;
        * the last goal step was **undone**: after a step, the world offers that goal step's very
          command again (what was taken is put back); its bad action, other details free, is
          avoided in that situation.

        One rule per due step and kind, at the first step it shows. Steps of a world that lists no
        commands can only show the second mistake.
        """
        full = self.slots(goal)
        values = full.values
        start = _start_offers(steps)
        goal_ix = self._goal_steps(plan, values, start)
        if not goal_ix:
            return []
        loose = [loosen(plan[j]) for j in goal_ix]
        out: list[Rule] = []
        p, told, done, last = 0, set(), [], ""
        for i, s in enumerate(steps):
            if p >= len(goal_ix):
                break
            if self.step_kind(s) is StepKind.reasoning:
                continue
            failed = bool(self.failure(s))
            due = loose[p]
            if not failed and step_matches(due, s.action, values, self) and not self.repeats(s.action, done):
                p += 1
                done.append(s.action)
                last = s.action
                continue
            if not failed:
                done.append(s.action)
            sit = ([f"after `{loose[p - 1]}` succeeded"] if p else []) + [f"while `{due}` is not done yet"]
            nxt = steps[i + 1].admissible if i + 1 < len(steps) else None
            if p and last and not failed and nxt and \
                    self.action_key(last) in {self.action_key(a) for a in nxt} and \
                    self.action_key(last) not in {self.action_key(a) for a in (s.admissible or ())}:
                # The last goal step is possible again, as it was before: this step undid it (the
                # object put back where it was taken from). The goal step is due again.
                if ("undo", p) not in told:
                    told.add(("undo", p))
                    bad = loosen(self.lesson_text(full.abstract(self.written(s.action)), steps[:i], full))
                    out.append(Rule(sit, bad, f"{due} (the goal's next step; `{bad}` undid `{loose[p - 1]}`)", "task",
                                    step=i, mistake=f"undid a step of the goal: {loose[p - 1]}"))
                p -= 1
                done = [a for a in done if a != last]
                last = ""
                continue
            if p in told:
                continue
            offered = [a for a in (s.admissible or ()) if step_matches(due, a, values, self)
                       and not self.repeats(a, done)]
            if offered and (p or not any(a in start for a in offered)):
                told.add(p)
                bad = self.lesson_text(full.abstract(self.written(s.action)), steps[:i], full)
                out.append(Rule(sit, bad, f"{due} (offered here: the goal's next step)", "task",
                                step=i, mistake=f"the goal's next step was offered and not taken: {due}"))
                continue
            # Before any goal step, or when the plan's first goal step is due again (a second object to
            # find), doing a later one (going where the goal ends) is still searching. A due step done
            # before may still hold (already there): skipping it then is no mistake.
            searching = not p or due == loose[0]
            later = next((q for q in range(p + 1, len(goal_ix)) if step_matches(loose[q], s.action, values, self)),
                         None) if not failed and not searching else None
            if later is not None and not any(step_matches(due, a, values, self) for a in done):
                told.add(p)
                j = goal_ix[p] - 1
                means = plan[j] if j >= 0 and (not p or j > goal_ix[p - 1]) and not names_goal(plan[j], values) \
                    else ""
                fix = f"{means} (then {due})" if means else due
                out.append(Rule(sit, loose[later], fix, "task", step=i,
                                mistake=f"skipped a step of the goal: did {loose[later]} before {due}"))
        return out

    # ----------------------------------------------------------- mistakes a trace shows by itself

    def diagnose(self, goal: str, steps: Sequence[StepView], i: int,
                 noops: Optional[Mapping[int, str]] = None, kinds: Optional[Sequence[StepKind]] = None
                 ) -> Optional[tuple[str, str]]:
        """The kind of mistake step `i` shows on its own, as (mistake, advice), or None.

        In order: a look-alike of a value the goal names (another record's id, "gpt-4o-mini" for
        the goal's "gpt-4o"); a repeat of an earlier action that got the same answer (searching
        again what was already seen); a step after which the next action failed because nothing
        it named was where this step led; an action on something never shown (not in the goal,
        an observation or any earlier answer); a command the world did not offer, or answered
        with a no-op.
        """
        if not 0 <= i < len(steps):
            return None
        noops = self.noop_replies(steps) if noops is None else noops  # read once: every check below asks
        kinds = [self.step_kind(x) for x in steps] if kinds is None else kinds
        s = steps[i]
        if kinds[i] is StepKind.reasoning:
            return None
        args = arguments(s.action)
        goal_values = [v for k, v in SlotMap.from_goal(goal).values.items() if v]
        named = {w for a in args for w in [a.lower(), *(x.lower() for x in _WORD.findall(a))]}
        for a in args:
            for v in [a, *(w for w in _WORD.findall(a) if len(w) >= 3)]:
                g = next((g for g in goal_values if resembles(v, g) and g.lower() not in named), None)
                if g is not None:
                    slot = SlotMap.from_goal(goal).add("noun", g)
                    where = _arg_name(s.action, a)
                    return (f"wrong look-alike {'value' if where else 'object'}: acted on one that resembles the "
                            f"{slot} the goal names but is not it",
                            f"use exactly the {slot} the goal names{' for ' + where if where else ''}, not a "
                            f"look-alike of it")
        acted = [j for j in range(i) if kinds[j] is StepKind.action]
        if kinds[i] is StepKind.action and not self.failure(s):
            reply = " ".join((s.feedback or "").split())
            if any(self.action_key(steps[j].action) == self.action_key(s.action) and
                   " ".join((steps[j].feedback or "").split()) == reply for j in acted):
                return ("searched again what was already seen: repeated an earlier step and got the same result",
                        "do not go back to what was already seen unchanged; try a place or option not yet tried")
            nxt = next((j for j in range(i + 1, len(steps)) if kinds[j] is not StepKind.reasoning),
                       None)
            if nxt is not None and not call_name(s.action) and not call_name(steps[nxt].action) and \
                    _verb(steps[nxt].action) != _verb(s.action) and self._failed(steps, nxt, noops) and \
                    _content(s.feedback) & _content(" ".join(args)):
                wanted = arguments(steps[nxt].action)
                # What the next step named exists (the world showed it before) but not where this step led.
                shown = _content_of([goal, *(x.observation for x in steps[: i + 1]), *(x.feedback for x in steps[:i])])
                # ...unless the next step named something never shown at all: its own mistake (hallucinated).
                everything = shown | _content_of(x.feedback for x in steps[i:nxt])
                made_up = any(_content(w) and not _content(w) & everything for w in wanted)
                if _content(" ".join(wanted)) & shown and not made_up and \
                        not _content(" ".join(wanted)) & _content(s.feedback):
                    again = any(self.action_key(steps[j].action) == self.action_key(s.action) for j in acted)
                    if again:  # a place it had already searched, gone back to: a revisit, and the wrong place
                        return ("went back to a place already visited, the wrong place: the next step's object was "
                                "not there",
                                f"do not go back to a place already searched; before '{_verb(steps[nxt].action)}', "
                                "go where what it acts on is in view")
                    return ("went to the wrong place: the next step's object was not where this step led",
                            f"before '{_verb(steps[nxt].action)}', go where what it acts on is in view")
            wrong = self._other_than_needed(goal, steps, i, noops, kinds)
            if wrong:
                return wrong
        if self._failed(steps, i, noops):
            seen = " ".join([goal, *(x.observation for x in steps[: i + 1]), *(x.feedback for x in steps[:i]),
                             *(c for x in steps[: i + 1] for c in (x.admissible or ()))]).lower()
            unseen = [a for a in args if a.lower() not in seen and not _SLOT_TOKEN.search(a)]
            if unseen and not call_name(s.action) and all(_content(a) <= _content(seen) for a in unseen):
                # Its words were shown, the whole of it never: a look-alike of something in view.
                return ("acted on something never shown (hallucinated): a look-alike of what the world showed, "
                        "not the thing itself",
                        "act on the very thing the world showed, as it named it, not a look-alike of it")
            if unseen and not call_name(s.action):  # a call's made-up value is a wrong argument, named below
                return ("acted on something never seen (hallucinated): it was not in the goal, any observation "
                        "or earlier answer",
                        "act only on what the world has shown (an observation, an answer, the offered commands); "
                        "look or go where it may be first")
            signal = self.failure(s).signal or noops.get(i, "")
            if signal.startswith("not an admissible"):
                return ("invalid command: not among the commands the world offered",
                        "choose a command the world offers, in its wording")
            if signal.startswith("no-op reply"):
                return ("invalid command: the world answered with a no-op (the same non-answer to other commands)",
                        "a no-op answer means nothing happened: change the command, not only its wording")
        return None

    def _other_than_needed(self, goal: str, steps: Sequence[StepView], i: int, noops: Mapping[int, str],
                           kinds: Sequence[StepKind]) -> Optional[tuple[str, str]]:
        """Step `i` acted on Y while the world showed both Y and the X the goal names, and a later step
        on X failed: it took the wrong one of two in view (text commands only)."""
        s = steps[i]
        if call_name(s.action):
            return None
        mine = arguments(s.action)
        prev = next((steps[j] for j in range(i - 1, -1, -1) if kinds[j] is not StepKind.reasoning),
                    None)
        view = ((prev.feedback if prev is not None else "") or s.observation or "").lower()
        fail = next((j for j in range(i + 1, len(steps)) if kinds[j] is not StepKind.reasoning
                     and self._failed(steps, j, noops)), None)
        if not mine or fail is None or call_name(steps[fail].action):
            return None
        needed = arguments(steps[fail].action)
        goal_words = _content(goal)
        x, y = (needed[0] if needed else ""), mine[0]
        if x and x.lower() != y.lower() and x.lower() in view and y.lower() in view and \
                _content(x) & goal_words and not _content(y) & goal_words and _verb(s.action) != "":
            return ("wrong object: acted on one the goal does not name while the one it names was in view",
                    "act on the thing the goal names when it is in view, not on another one next to it")
        return None

    def _failed(self, steps: Sequence[StepView], i: int, noops: Mapping[int, str]) -> bool:
        return i in noops or bool(self.failure(steps[i]))

    def wasted_step(self, trace: Any, slots: Any) -> Optional[int]:
        """The first step that, in hindsight, went wrong without failing: a look-alike of what the goal
        names, a repeat that got the same answer, a move after which the next step failed for want
        of what it named (see diagnose). A failed step is found by the analysis itself."""
        views = [StepView(s.action, s.feedback, s.error, s.observation, _tuple(getattr(s, "admissible", None)))
                 for s in trace.steps]
        noops, kinds = self.noop_replies(views), [self.step_kind(v) for v in views]
        for i, v in enumerate(views):
            if kinds[i] is StepKind.reasoning or self._failed(views, i, noops):
                continue
            if self.diagnose(trace.goal, views, i, noops, kinds) is not None:
                return i
        return None

    # ----------------------------------------------------------- rules

    def rules(self, trace: Any, pivot: Any, slots: SlotMap, success_plan: Sequence[str],
              type_plans: Optional[Sequence[TypePlan]] = None) -> list[Rule]:
        """What the failure teaches: the pivot's rule, then where the episode left a successful plan's
        goal steps (`plan_mistakes`), each a rule over situations; only the transferable ones, unless
        none is (then the first, which says why not).

        A correction the agent could not have known (`_first_choice`: which of the options offered
        from the start held what the goal needs) does not transfer: a lesson quoting it would only
        repeat another episode's first choice. Unless the task type's recorded successes
        (`type_plans`, each slotted with its own goal's values and as played) say it is a skill of the type: when
        all or most of them (`_type_skill`) make the same correction, values abstracted, it is what
        every success does, not one episode's choice, and it transfers (task scope).
        """
        if pivot is None or pivot.step is None or pivot.step >= len(trace.steps):
            return []
        views = [StepView(s.action, s.feedback, s.error, s.observation, _tuple(getattr(s, "admissible", None)))
                 for s in trace.steps]
        out = self._pivot_rules(trace, pivot, slots, success_plan, views)
        if out and pivot.corrected_action and success_plan:
            full = self.slots(trace.goal)
            values = full.values
            p = self._goal_progress(trace.goal, views[: pivot.step], success_plan)
            written = self.lesson_text(slots.abstract(self.written(pivot.corrected_action)), views[: pivot.step],
                                       slots)
            if self._first_choice(pivot.corrected_action, views, p, full) and \
                    not self._type_skill(pivot.corrected_action, written, type_plans, full.values):
                sought = self._sought(pivot.corrected_action, written, success_plan, views, full.values, type_plans)
                if sought:
                    # Where to look was the teacher's choice; what the search was for is the type's skill.
                    out[0].fix = f"{sought} first (what the search is for, wherever it is offered)"
                    out[0].mistake = f"went on without what every success of the type gets first: {sought}"
                else:
                    out[0].transferable = False
                    out[0].why_not = ("a first choice among the options offered from the start: only the teacher "
                                      "knew which of them held what the goal needs")
            elif p:  # the correction holds in the plan's situation: after its last goal step done
                loose = [loosen(success_plan[j]) for j in
                         self._goal_steps(success_plan, values, set(views[0].admissible or ()) if views else set())]
                out[0].situation = out[0].situation + [f"after `{loose[p - 1]}` succeeded"] + (
                    [f"while `{loose[p]}` is not done yet"] if p < len(loose) else [])
                if p < len(loose) and loose[p] == loose[0] and \
                        not step_matches(loose[p], pivot.corrected_action, values, self):
                    # Searching again (a second object): where the teacher went is its knowledge; what
                    # transfers is the step due, and the bad action to avoid.
                    out[0].fix = f"{loose[p]} (the goal's next step, wherever it is offered)"
        if success_plan:
            for r in self.plan_mistakes(trace.goal, views, success_plan):
                if all((r.fix, r.situation) != (o.fix, o.situation) for o in out):
                    out.append(r)
        keep = [r for r in out if r.transferable]
        return self._canonical(keep or out[:1], trace.goal, views, success_plan)

    def lesson_slots(self, goal: str, commands: Iterable[str]) -> SlotMap:
        """The slots a lesson is written and read with: the goal's values, less the goal words that are
        a command's verb here (`commands`: "archive" in "put an archive [noun] in [noun2]", when some
        command is ``archive ...``), numbered in goal order. Goals worded otherwise ("archive some
        [noun] and put it in [noun2]") then read one lesson alike."""
        verbs = {(call_name(c) or _verb(c)).lower() for c in commands if c}
        m, out = SlotMap.from_goal(goal), SlotMap()
        for slot, value in m.values.items():
            if not (m.kinds.get(slot) == "noun" and value.lower() in verbs):
                out.add(m.kinds.get(slot, "text"), value)
        return out

    def _canonical(self, rules: list[Rule], goal: str, steps: Sequence[StepView], plan: Sequence[str]) -> list[Rule]:
        """Rules with the goal's slots as `lesson_slots` names them (and the goal template in them)."""
        kept = self.slots(goal)
        canon = self.lesson_slots(goal, [s.action for s in steps] + list(plan) +
                                  [c for s in steps for c in (s.admissible or ())])
        by_value = {v.lower(): k for k, v in canon.values.items()}
        mapping = {k: by_value.get(v.lower(), k) for k, v in kept.values.items()}

        def sub(text: str) -> str:
            return _SLOT_TOKEN.sub(lambda m: mapping.get(f"[{m.group(1)}]", m.group(0)), text or "")

        template = canon.abstract_prose(goal.rstrip("."), nouns=True)
        for r in rules:
            r.situation, r.bad_action, r.fix, r.mistake = [sub(x) for x in r.situation], sub(r.bad_action), \
                sub(r.fix), sub(r.mistake)
            r.goal_template = template
        return rules

    def _goal_steps(self, plan: Sequence[str], values: Mapping[str, str], start: set[str]) -> list[int]:
        """The plan's goal steps: those naming the goal's values, less the leading ones that were possible
        from the very start ("go to [noun2]" first, where the object happened to be): searching."""
        ix = [j for j, p in enumerate(plan) if names_goal(p, values)]
        while ix and start and any(step_matches(loosen(plan[ix[0]]), a, values, self) for a in start):
            ix.pop(0)
        return ix

    def _goal_progress(self, goal: str, steps: Sequence[StepView], plan: Sequence[str]) -> int:
        """How many of the plan's goal steps `steps` carried out, in order."""
        values = self.slots(goal).values
        start = _start_offers(steps)
        loose = [loosen(plan[j]) for j in self._goal_steps(plan, values, start)]
        p = 0
        for a in self.done_steps(steps):
            if p < len(loose) and step_matches(loose[p], a, values, self):
                p += 1
        return p

    # A first choice is a skill of the task type when more than this share of its recorded successes
    # (and at least two of them) make it too: most of them, so it is the type's rule, right more
    # often than not, not where one episode's object happened to be.
    type_skill_share = 0.5

    def _type_skill(self, corrected: str, written: str, type_plans: Optional[Sequence[TypePlan]],
                    values: Mapping[str, str]) -> bool:
        """Do most recorded successes of the task type make `corrected` (a command, or "" when only
        its slotted form `written` is known)? A success makes it when one of its steps was played
        as it (the same command: ``open desk`` there and here), or reads as it slotted (the same
        slots, in the same places), or, filled with this goal's values, is it. Only a goal's values
        are slots; no other word is made free, and one goal value is never taken for another.
        A value only one episode had (where its object happened to be) is in one plan, not most."""
        plans = [p for p in (type_plans or ()) if p.steps]
        if len(plans) < 2:
            return False
        key, wkey = self.action_key(corrected or written), self.action_key(written)

        def makes(p: TypePlan) -> bool:
            # A slotted step counts only when it names the goal's values: its other slots (an
            # instance number, `go to shelf [value]`) are free, and which shelf is the episode's own.
            return any(self.action_key(a) == key for a in p.played) or any(
                names_goal(st, values) and (self.action_key(st) == wkey or
                                            (corrected and step_matches(st, corrected, values, self)))
                for st in p.steps)

        hits = sum(makes(p) for p in plans)
        return hits >= 2 and hits > self.type_skill_share * len(plans)

    def _sought(self, corrected: str, written: str, plan: Sequence[str], steps: Sequence[StepView],
                values: Mapping[str, str], type_plans: Optional[Sequence[TypePlan]]) -> str:
        """What a first-choice correction searched for: the success plan's first step after it that
        the world did not offer from the start (it became possible by the search: ``take key``
        after ``open desk``), when most of the type's successes make that step too
        (`_type_skill`, as slotted); "" otherwise."""
        wkey = self.action_key(written)
        at = next((i for i, st in enumerate(plan) if self.action_key(st) == wkey
                   or step_matches(st, corrected, values, self)), None)
        if at is None:
            return ""
        first = _start_offers(steps)
        for st in plan[at + 1:]:
            if re.search(r"\[(?:from|free)\b", st):
                return ""  # a value read (one episode's own list): not one step every success makes alike
            if any(step_matches(st, a, values, self) for a in first):
                continue
            # As played by a success that made it (its steps and commands are aligned).
            played = next((tp.played[k] for tp in (type_plans or ()) for k, x in enumerate(tp.steps)
                           if x == st and k < len(tp.played)), "")
            return st if self._type_skill(played, st, type_plans, values) else ""
        return ""

    def _first_choice(self, corrected: str, steps: Sequence[StepView], progress: int, full: SlotMap) -> bool:
        """Is a correction only a first choice: offered from the start, before any goal step was done?
        (Where to look first is what the teacher knew, not a skill; even where the goal ends, when the
        object happened to be there.)"""
        first = _start_offers(steps)
        if progress or not first:
            return False
        return self.action_key(corrected) in {self.action_key(a) for a in first}

    def _pivot_rules(self, trace: Any, pivot: Any, slots: SlotMap, success_plan: Sequence[str],
                     views: list[StepView]) -> list[Rule]:
        """The pivot's mistake as a rule, from the evidence the trace has (generic: tool calls or commands).

        A correction always gives a rule (the corrected action, slotted, in its situation); a
        failed call whose success called the same tool differently is a wrong-argument rule; a
        failed step is an error rule naming its signal; a repeat that changed nothing, a loop rule.
        """
        step = views[pivot.step]
        diag = self.diagnose(trace.goal, views, pivot.step)
        before = views[: pivot.step]
        st = self.state(trace.goal, before)
        sit = sorted(f for f in st.facts if not f.startswith("after calling"))
        prev_calls = [call_name(s.action) for s in before if call_name(s.action) and not self.failure(s)]
        if prev_calls:
            sit.append(f"after calling {prev_calls[-1]}")
        bad = self.lesson_text(slots.abstract(step.action), before, slots)
        name = call_name(step.action)
        verdict = self.failure(step)
        when = ([f"about to call {name}"] if name else [f"about to '{_verb(step.action)}'"]) + sit
        said = "; ".join(_clip(slots.abstract_prose(r), 160) for r in getattr(trace, "reasons", []) if r)
        said = self.lesson_text(said, before, slots) if said else ""
        expected = getattr(pivot, "expected", None)

        def rule(fix: str, mistake: str, scope: str = "task", situation: Optional[list[str]] = None) -> Rule:
            if said and said not in fix:
                fix += f" ({said})"
            return Rule(situation if situation is not None else when, bad, fix, scope, step=pivot.step,
                        mistake=mistake)

        def named(mistake: str, fix: str) -> tuple[str, str]:
            # What the trace shows about the mistake, beside the fix the evidence gives.
            return (diag[0], f"{fix} ({diag[1]})") if diag else (mistake, fix)

        if pivot.corrected_action:
            fix = self.lesson_text(slots.abstract(pivot.corrected_action), before, slots)
            diff = _argument_difference(bad, fix)
            mistake = f"wrong argument {diff}" if diff else ("tool error" if verdict else "wrong action")
            mistake, fix = named(mistake, _fix_sentence(fix, diff, verdict, bad))
            return [rule(fix, mistake)]
        if verdict:
            same_tool = [p for p in success_plan if name and call_name(p) == name]
            if same_tool:
                diff = _argument_difference(bad, same_tool[0])
                mistake, fix = named(f"wrong argument {diff}" if diff else "tool error",
                                     _fix_sentence(same_tool[0], diff, verdict, bad))
                return [rule(fix, mistake)]
        if diag:
            nxt = f"; the next step that worked elsewhere: {_fix_sentence(expected, '', Verdict(False), '')}" \
                if expected else ""
            return [rule(diag[1] + nxt, diag[0], "general" if not expected else "task")]
        if verdict:
            hint = f"it failed ({verdict.signal}); read the error and change what it names before calling again"
            return [rule(hint, "tool error" if name else "failed command")]
        if pivot.reason == "loop" or "the last action changed nothing" in st.facts:
            nxt = f"; the next step that worked elsewhere: {_fix_sentence(expected, '', Verdict(False), '')}" \
                if expected else "; try the next step of the goal"
            return [rule("do not repeat a step that changed nothing" + nxt, "repeated a step that changed nothing",
                         "general" if not expected else "task")]
        if expected:
            stopped = pivot.reason == "stopped_short"
            after = f"after calling {name}" if name else f"after '{_verb(step.action)}'"
            fix = _fix_sentence(expected, "", Verdict(False), "")
            if stopped:
                return [rule(f"{fix} before finishing: the task is not done yet", f"skipped step {_verb_of(expected)}",
                             situation=[after] + [x for x in sit if not x.startswith("after calling")])]
            return [rule(f"{fix} instead", f"wrong step: {_verb_of(step.action)} where {_verb_of(expected)} was due")]
        if said:
            return [rule("meet the constraint the verifier names", "a constraint the verifier names")]
        return []

    def lesson_text(self, text: str, before: Sequence[StepView], slots: SlotMap) -> str:
        """A slotted action with the episode's other concrete values named by where they came from.

        A value an earlier tool returned reads ``[lookup_order.total]`` (the tool, and the field
        of its JSON output) or ``[from lookup_order]``; any other id-like value not in the goal
        reads ``[value]``: a lesson never quotes another episode's ids, and a demonstration can
        be replayed by reading the value where it came from (:func:`resolve`). In a text command,
        words the agent had read in an earlier look step read ``[from read manual]`` (the
        whole command when it was read as one: a list of directions), so a replay takes them
        from what that step says in its own episode.
        """
        def source(value: str, fallback: str = "[value]") -> str:
            for s in reversed(before):
                if self.failure(s):
                    continue  # an error text echoes the wrong value back; it is not where a value comes from
                if value and re.search(rf"(?<![\w.]){re.escape(value)}(?![\w])", s.feedback or ""):
                    n = call_name(s.action)
                    if not n:
                        return fallback
                    key = _json_key_of(s.feedback, value)
                    return f"[{n}.{key}]" if key else f"[from {n}]"
            return fallback

        call = parse_call(text)
        if call is not None:
            name, args = call
            out = []
            for k, v in args:
                raw = v.strip("'\"")
                if not _SLOT_TOKEN.fullmatch(raw) and (_ID.fullmatch(raw) or _NUMBER.fullmatch(raw)):
                    v = source(raw)
                elif raw and not _SLOT_TOKEN.search(raw) and (_CODE.fullmatch(raw) or v[:1] in "'\""):
                    # A code or string an earlier tool returned (the order's currency): named by where it
                    # came from; one no tool returned (a constant of the task) stays as written.
                    v = source(raw, fallback=v)
                out.append(f"{k}={v}" if k else v)
            return f"{name}(" + ", ".join(out) + ")"
        # In a text command a bare number is an instance ("server 3"): another episode's, never this one's.
        def sub(m: re.Match[str]) -> str:
            inside = m.string[:m.start()].rfind("[") > m.string[:m.start()].rfind("]")
            return m.group(0) if inside else source(m.group(0))

        return self._read_values(_NUMBER.sub(sub, _ID.sub(sub, text)), before)

    def _read_values(self, command: str, before: Sequence[StepView]) -> str:
        """A text command's words that the agent had read in an earlier look step (``read manual``,
        ``examine note``) written as ``[from read manual]``: the value to use is in what that step
        says, in any episode. A look that only describes again what was already in view (``look``
        where the first observation said the same) is no source; nor is any other step. When the
        value stands on one line of what was read with more words than the command has
        (``[from read manual: nightly]``), the slot says them: what the command did for that line.

        A look is a source only for what it first showed or lists on a line of its own (a place
        described again, a listing of what the agent itself took, are not). A command with two
        values read in one place (``file red invoice in billing folder`` after ``list desk``) stays
        as written: two slots of one source would not say which value went with which."""
        sources, raws = [], []
        for i, s in enumerate(before):
            fb = " ".join((s.feedback or "").split()).lower()
            if not fb or self.step_kind(s) is not StepKind.look or self.failure(s):
                continue
            seen = [" ".join((x.observation or "").split()).lower() for x in before[: i + 1]] + \
                   [" ".join((x.feedback or "").split()).lower() for x in before[:i]]
            if any(fb in o for o in seen if o):
                continue
            raws.append(fb)
            sources.append((content_words(fb), self.written(s.action),
                            [content_words(x) for x in (s.feedback or "").splitlines()
                             if x.strip() and len(x.split()) <= _LINE_WORDS],
                            " " + " ".join(content_words(o) for o in seen) + " ",
                            " " + " ".join(content_words(self.written(x.action)) for x in before[:i]) + " "))
        if not sources:
            return command

        def read_at(phrase: str) -> Optional[tuple[str, list[str]]]:
            # The latest read that says the phrase, and first said it or says it on a line of its
            # own (an item, an instruction): a place described again (a second look) is no
            # source for what the episode had been shown before it; nor is a read for what a
            # command had named before it (a listing of what the agent took).
            return next(((a, lines) for fb, a, lines, prior, named in reversed(sources)
                         if f" {phrase} " in f" {fb} " and f" {phrase} " not in named
                         and (f" {phrase} " not in prior or any(f" {phrase} " in f" {ln} " for ln in lines))), None)

        done = {content_words(self.written(x.action)) for x in before}
        # The whole command, read there ("rotate the staging keys" in a list of directions).
        whole = content_words(command)
        # Only as one phrase, or word for word: "file invoice in archive" is not read in "an
        # invoice on it. There is also an archive" (two values apart are no pairing read).
        if len(whole.split()) > 1 and not _SLOT_TOKEN.search(command) and (
                len(command_frame(command)[1]) <= 1 or any(_plain(command) in _plain(r) for r in raws)):
            hit = (read_at(whole) or (None,))[0]
            if hit and not _SLOT_TOKEN.search(hit):
                return f"[from {hit}]"
        words = command.split(" ")
        out, run = words[:1], []
        read_from: dict[str, set[str]] = {}  # source -> the phrases of this command read there

        def flush() -> None:
            if run:
                phrase = content_words(" ".join(run))
                src = read_at(phrase)
                if src and not _SLOT_TOKEN.search(src[0]):
                    why = _read_line(phrase, whole, src[1], done)
                    out.append(f"[from {src[0]}: {why}]" if why else f"[from {src[0]}]")
                    read_from.setdefault(src[0], set()).add(phrase)
                else:
                    out.append(" ".join(run))
                run.clear()

        for w in words[1:]:
            if re.fullmatch(r"[A-Za-z][A-Za-z'-]*", w) and w.lower() not in _STOP:
                run.append(w)
            else:
                flush()
                out.append(w)
        flush()
        if any(len(p) > 1 for p in read_from.values()):
            # Two values read in one place (`file [from list desk] in [from list desk]`): the
            # slots would not say which goes with which, and that pairing is what the command did.
            # It stays as written; a follower matches it by the words it shares (an analogue).
            return command
        return " ".join(out)

    # ----------------------------------------------------------- policy

    def policy_features(self, goal: str, history: Sequence[tuple[str, str]], candidates: Sequence[str]
                        ) -> list[list[str]]:
        """Generic crosses: has this candidate been tried, did it fail then, does it name the goal's values,
        which words of it go with the words the agent last read (and with the other words of a line
        read that names its value), and, for a command pairing two values, which with which."""
        values = [v.lower() for v in self.slots(goal).values.values() if v]
        # What the agent read crossed with each candidate's words ("restart" read, "service" in the
        # command): a trained policy can learn which command carries out which instruction.
        read = self._read_words(history)
        lines = self._read_lines(history)
        tried: dict[str, list[str]] = {}
        for a, fb in history:
            tried.setdefault(self.action_key(a), []).append(fb)
        out = []
        for c in candidates:
            fbs = tried.get(self.action_key(c), [])
            failed = any(self.failure(StepView(c, fb)) for fb in fbs)
            names_goal = any(v in c.lower() for v in values)
            kind = self.step_kind(StepView(c)).value
            feats = [f"T:{kind}|tried{min(len(fbs), 2)}|failed{int(failed)}", f"T:{kind}|goal{int(names_goal)}"]
            words = [w for w in content_words(c).split() if not w.isdigit()]
            if read:
                feats.append(f"T:{kind}|read{int(bool(words) and all(w in read for w in words))}")
                feats += [f"R:{r}|{w}" for w in words for r in read if r != w]
            # A line read that names this command's value, crossed with the command's other words
            # ("shred the old invoice" read: put old invoice in *shredder*): which instruction goes
            # with which value, which the bag of everything read cannot say when it holds two.
            cw = set(words)
            for ln in lines:
                if cw & ln:
                    feats += [f"L:{r}|{w}" for r in sorted(ln - cw) for w in sorted(cw - ln)]
            # A command that pairs two values (put this in that): the pairing as a feature, so that
            # training can learn which kind of thing goes with which place.
            phrases = command_frame(c)[1]
            if len(phrases) > 1:
                feats += [f"P:{a}|{b}" for a in content_words(phrases[0]).split()
                          for b in content_words(phrases[-1]).split() if not (a.isdigit() or b.isdigit())]
            out.append(feats)
        return out

    def _latest_reads(self, history: Sequence[tuple[str, str]]) -> list[str]:
        """What the agent's latest two look steps that read something (not a bare look) answered."""
        return [fb for a, fb in history if fb and self.step_kind(StepView(a, fb)) is StepKind.look
                and len(a.split()) > 1 and not self.failure(StepView(a, fb))][-2:]

    def _read_lines(self, history: Sequence[tuple[str, str]]) -> list[set[str]]:
        """The short lines (an instruction each, not a paragraph) of the agent's latest two reads, as
        content-word sets."""
        return [ws for t in self._latest_reads(history) for x in t.splitlines()
                if x.strip() and len(x.split()) <= _LINE_WORDS and (ws := set(content_words(x).split()))]

    def _read_words(self, history: Sequence[tuple[str, str]], limit: int = 48) -> set[str]:
        """Content words of what the agent last read (its latest two look steps' outputs, not a bare look)."""
        out: list[str] = []
        for t in self._latest_reads(history):
            out += [w for w in content_words(t).split() if not w.isdigit()]
        return set(list(dict.fromkeys(out))[:limit])

    # ----------------------------------------------------------- privileged teacher moves

    def privileged_steps(self, steps: Sequence[StepView], pivot: int) -> set[int]:
        """Steps of a guided retry that only a teacher who sees everything could choose (none known here)."""
        return set()


def loosen(template: str) -> str:
    """A step with its source episode's own details made free: a command keeps its verb, its small
    words and the goal's slots, a tool call its name, argument names and slots; every other word or
    value is free (``take [noun] [value] from box [value]`` -> ``take [noun] [value] from
    [free] [value]``: the goal's object, wherever this episode has it)."""
    call = parse_call(template)
    if call is not None:
        name, args = call
        return f"{name}(" + ", ".join((f"{k}=" if k else "") + (v if _ANY_SLOT.search(v) else "[free]")
                                     for k, v in args) + ")"
    words = re.findall(r"\[[^\]]*\]|\S+", template)
    return " ".join(w if i == 0 or _ANY_SLOT.search(w) or w.lower() in _STOP or not w.isalpha() else "[free]"
                    for i, w in enumerate(words))


_ANY_SLOT = re.compile(r"\[[^\]]+\]")


@lru_cache(maxsize=4096)
def _step_rx(key: str) -> Optional[re.Pattern[str]]:
    parts = _ANY_SLOT.split(key)
    try:
        return re.compile(r"[^\s,()=]+".join(re.escape(x) for x in parts))
    except re.error:
        return None


def _start_offers(steps: Sequence[StepView]) -> set[str]:
    """The commands offered before the first step, when what the world offers changes with the
    episode (a text game's commands follow where the agent is). A world that offers the same
    commands all along (a tool list) says nothing by offering one from the start: empty then, so
    that no goal step of it is taken for searching and no correction for a first choice."""
    first = set(steps[0].admissible or ()) if steps else set()
    if not first or all(set(s.admissible or ()) == first for s in steps if s.admissible is not None):
        return set()
    return first


def step_matches(template: str, action: str, values: Mapping[str, str], domain: Any) -> bool:
    """Does `action` carry out the slotted step `template` here? The goal's slots are filled from
    `values`; every other slot (``[value]``, ``[free]``, ``[from ...]``) is one free argument."""
    filled = _SLOT_TOKEN.sub(lambda m: values.get(f"[{m.group(1)}]", m.group(0)), template)
    rx = _step_rx(domain.action_key(filled))
    return bool(rx is not None and rx.fullmatch(domain.action_key(action)))


def names_goal(template: str, values: Mapping[str, str]) -> bool:
    """Does a slotted step name one of the goal's values (its object, its id...)?"""
    return any(f"[{m.group(1)}]" in values for m in _SLOT_TOKEN.finditer(template))


_LINE_WORDS = 8  # words a line read may have to be one instruction, not a paragraph describing a room


def _read_line(phrase: str, command: str, lines: Sequence[str], done: set[str]) -> str:
    """The words of the one line read that a command carried out with a value read on it, beyond
    that value and the command's own words ("nightly" for ``run backup on tape`` read as "nightly
    backup"): a replay takes the value from a line that says the same. "" for a command that is a
    verb and the value only, and when no single line says so (lines that earlier commands carried
    out whole are not counted)."""
    said = set(command.split()) | set(phrase.split())
    if not set(command.split()[1:]) - set(phrase.split()):
        return ""  # a verb and the value only: the value is what was read, wherever it stands
    found = [ln for ln in lines if f" {phrase} " in f" {ln} " and ln != phrase and ln not in done]
    if len(found) != 1:
        return ""
    return " ".join(w for w in found[0].split() if w not in said)


def content_words(text: str) -> str:
    """Text as words compared for "the agent read this": lower case, no punctuation, no small words."""
    return " ".join(w for w in re.findall(r"[a-z0-9][a-z0-9'-]*", (text or "").lower()) if w not in _STOP)


def _plain(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9][a-z0-9'-]*", (text or "").lower())) + " "


def command_frame(command: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A text command's frame and the phrases in its gaps: its verb and small words in order, each
    run of other words one gap (``file red invoice in billing folder`` -> (file, *, in, *),
    (red invoice, billing folder)). Commands of one frame do one thing to different values."""
    words = " ".join((command or "").split()).lower().split(" ")
    frame, phrases = words[:1], []
    for w in words[1:]:
        if content_words(w) == "":
            frame.append(w)
        elif frame[-1:] == ["*"] and phrases:
            phrases[-1] += " " + w
        else:
            frame.append("*")
            phrases.append(w)
    return tuple(frame), tuple(phrases)


def _json_key_of(feedback: str, value: str) -> str:
    """The key under which a flat JSON object holds `value` ("" when it is not one, or not there)."""
    try:
        obj = json.loads(feedback)
    except (ValueError, TypeError):
        return ""
    if not isinstance(obj, dict):
        return ""
    num = _as_number(value)
    for k, v in obj.items():
        if str(v) == value or (num is not None and isinstance(v, (int, float)) and abs(float(v) - num) < 1e-9):
            return str(k)
    return ""


def resolve(template: str, history: Sequence[StepView], values: Optional[Mapping[str, str]] = None) -> str:
    """A demonstration step made concrete again: goal slots from `values`, ``[tool.key]`` from the
    latest output of that tool in `history`. Unknown slots stay as they are."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if values and f"[{name}]" in values:
            return values[f"[{name}]"]
        tool, _, key = name.partition(".")
        for s in reversed(history):
            if key and call_name(s.action) == tool:
                try:
                    obj = json.loads(s.feedback)
                except (ValueError, TypeError):
                    break
                if isinstance(obj, dict) and key in obj:
                    return str(obj[key])
                break
        return m.group(0)

    return re.sub(r"\[([A-Za-z_][\w .]*?)\]", sub, template)


def _clip(text: str, n: int) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= n else t[: n - 3] + "..."


def _verb(action: str) -> str:
    return (action or "").split(" ")[0] if action else ""


def _verb_of(action: str) -> str:
    """A call's tool name, or a command's first word."""
    return call_name(action) or _verb(action)


def _argument_difference(bad: str, good: str) -> str:
    """The argument names whose values differ between two calls of the same tool ("" if none/unknown)."""
    a, b = parse_call(bad), parse_call(good)
    if not a or not b or a[0] != b[0]:
        return ""
    da, db = ({k: v.strip().strip("'\"") for k, v in c[1]} for c in (a, b))  # 'x' and "x" are one value
    diff = [k for k in dict.fromkeys([*da, *db]) if k and da.get(k) != db.get(k)]
    return ", ".join(diff)


def _fix_sentence(fix: str, diff: str, verdict: Verdict, bad: str = "") -> str:
    """The fix as advice: the right call, which argument to set, and why (the failed step it replaces)."""
    out = f"call {fix}" if parse_call(fix) else fix
    if diff:
        # Which argument to change and why, as advice: the wrong value is what made the call fail.
        wrong = f"a wrong {diff}" if "," not in diff else f"wrong values of {diff}"
        out += f", with {diff} as shown" + (f": {wrong} made the call fail" if verdict else "")
    elif verdict:
        other = _verb_of(bad)
        out += f" here, not {other}, which failed as called" if other and other != _verb_of(fix) else \
            " instead of the call that failed"
    return out


def _tuple(xs: Any) -> Optional[tuple[str, ...]]:
    return tuple(xs) if xs else None


def _arg_name(action: str, value: str) -> str:
    """The argument name a call passes `value` under ("" for a text command or a positional value)."""
    c = parse_call(action or "")
    for k, v in (c[1] if c else []):
        if v.strip().strip("'\"") == value:
            return k
    return ""
