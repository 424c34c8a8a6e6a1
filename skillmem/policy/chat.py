"""One decision as chat messages, and the action read back from a model's answer.

The same rendering serves three places, so a model is trained on exactly what it later reads:
the OpenAI-compatible policy (acting), `skillmem export` (TRL datasets) and the TRL backend.

* ``tools=True``: every past action is an assistant **tool call** and its feedback the tool's
  answer, in the chat format that transformers' templates and OpenAI-compatible servers share.
  An action recorded from a tool-calling agent (``search(query='x')``) becomes that call; a
  plain command (``open door 1``) becomes a call of the one tool ``act(command=...)``.
* ``tools=False``: the same turns as plain text (``Action: open door 1``), for templates and
  servers without tool calls.

    messages = chat_messages(goal, history, memory_text, admissible)
    action = parse_action(answer_text, admissible)        # ValueError when none is found
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Optional, Sequence

PROMPT_VERSION = "act-1"

ACT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "act",
        "description": "Do one action in the environment. Its result comes back as the tool's answer.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "one of the admissible actions, verbatim"}},
            "required": ["command"],
        },
    },
}

SYSTEM = (
    "You are an agent that reaches a goal by acting, one action at a time. After each action you see "
    "what it did. Think in one short line starting with 'Thought:' if it helps, then give the action on "
    "the last line as 'Action:' and then the action itself, copied exactly from the admissible actions "
    "when they are listed."
)
SYSTEM_TOOLS = (
    "You are an agent that reaches a goal by acting, one action at a time, with the tools you are given. "
    "After each call you see what it did. Call exactly one tool per turn; when admissible actions are "
    "listed, call act with one of them, copied exactly."
)


# --------------------------------------------------------------------------- actions as tool calls

def tool_call(action: str) -> dict[str, Any]:
    """An action as {"name", "arguments"}: a recorded call ``name(k=v, ...)`` as itself, anything else as act.

    The call is recognized by the Domain's `parse_call`; its values become JSON values (``k=3`` an
    integer, ``q='x'`` a string), as a chat template and an OpenAI-compatible server expect them.
    """
    from ..domain import parse_call

    action = action.strip()
    call = parse_call(action)
    if call is not None and all(k for k, _ in call[1]):
        args: dict[str, Any] = {}
        for k, v in call[1]:
            try:
                args[k] = ast.literal_eval(v)
            except (SyntaxError, ValueError):
                args[k] = v  # a bare word stays the text it was
        return {"name": call[0], "arguments": args}
    return {"name": "act", "arguments": {"command": action}}


def action_from_call(name: str, arguments: Any) -> str:
    """The recorded action string of a tool call (the inverse of :func:`tool_call`)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"tool call {name} has arguments that are not JSON: {e}") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call {name} has arguments {arguments!r}, not an object")
    if name == "act":
        if "command" not in arguments:
            raise ValueError("tool call act has no 'command' argument")
        return str(arguments["command"])
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")"


def assistant_turn(action: str, *, tools: bool, call_id: str = "call_0") -> dict[str, Any]:
    """The assistant message that takes `action`."""
    if not tools:
        return {"role": "assistant", "content": f"Action: {action}"}
    call = tool_call(action)
    return {"role": "assistant", "content": "",
            "tool_calls": [{"id": call_id, "type": "function", "function": call}]}


def _result_turn(action: str, observation: str, *, tools: bool, call_id: str, extra: str = "") -> dict[str, Any]:
    text = observation + (f"\n\n{extra}" if extra else "")
    if not tools:
        return {"role": "user", "content": f"Observation: {text}"}
    return {"role": "tool", "tool_call_id": call_id, "name": tool_call(action)["name"], "content": text}


# --------------------------------------------------------------------------- the prompt


def chat_messages(goal: str, history: Sequence[tuple[str, str]], memory_text: str = "",
                  admissible: Optional[Sequence[str]] = None, *, tools: bool = True,
                  max_history: Optional[int] = None, observation: str = "") -> list[dict[str, Any]]:
    """The messages before one decision: system, the goal (and memory), past steps as turns, the choices.

    `history` holds (action, observation) pairs, oldest first; `observation` is what the agent
    saw at the start, when known. The admissible actions go with the latest turn only.
    """
    hist = list(history)[-max_history:] if max_history else list(history)
    choices = ("Admissible actions:\n" + "\n".join(f"- {a}" for a in admissible)) if admissible else ""
    first = [f"Goal: {goal}"]
    if memory_text:
        first += ["", "What memory says about tasks like this (advice from earlier attempts, not instructions "
                      "to obey blindly):", memory_text]
    if observation:
        first += ["", observation]
    if len(hist) < len(history):
        first += ["", f"({len(history) - len(hist)} earlier steps are not shown.)"]
    if not hist and choices:
        first += ["", choices]
    msgs: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_TOOLS if tools else SYSTEM},
                                  {"role": "user", "content": "\n".join(first)}]
    for i, (action, obs) in enumerate(hist):
        cid = f"call_{i}"
        msgs.append(assistant_turn(action, tools=tools, call_id=cid))
        last = i == len(hist) - 1
        msgs.append(_result_turn(action, obs, tools=tools, call_id=cid, extra=choices if last else ""))
    return msgs


def for_api(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the OpenAI API wants them: tool-call arguments as JSON strings (templates take dicts)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.dumps(
                c["function"]["arguments"]) if not isinstance(c["function"]["arguments"], str)
                else c["function"]["arguments"]}} for c in m["tool_calls"]]}
        out.append(m)
    return out


# --------------------------------------------------------------------------- reading the answer

_ACTION_LINE = re.compile(r"^\s*(?:\**\s*)?(?:action|command|next action)\s*(?:\d+\s*)?\**\s*[:=]\s*(.+?)\s*$",
                          re.IGNORECASE | re.MULTILINE)
_EDGES = re.compile(r"^[\s\"'`*]+|[\s\"'`*.]+$")
_BULLET = re.compile(r"^\s*(?:[-*\u2022>]+|\d+[.)])\s+")  # "- go to x", "* go to x", "3. go to x"


def _unquote(s: str) -> str:
    return _EDGES.sub("", s)


def _norm(s: str) -> str:
    return " ".join(_unquote(s).lower().split())


def _match(candidate: str, admissible: Optional[Sequence[str]]) -> Optional[str]:
    """`candidate` as one of the admissible actions (case, quotes, a final period and a list number forgiven)."""
    cand = candidate.strip()
    if not admissible:
        return _unquote(cand) or None
    if cand in admissible:
        return cand
    by_norm = {_norm(a): a for a in admissible}
    n = _norm(cand)
    if n in by_norm:
        return by_norm[n]
    m = re.fullmatch(r"\(?(\d+)[.)]?\s*(.*)", _unquote(cand))
    if m:
        rest = _norm(m.group(2))
        if rest in by_norm:
            return by_norm[rest]
        if not rest:
            i = int(m.group(1))  # a bare number: its place in the list, counted from 0
            if 0 <= i < len(admissible):
                return admissible[i]
    return None


def _from_json(obj: Any, admissible: Optional[Sequence[str]]) -> Optional[str]:
    if isinstance(obj, dict):
        if "name" in obj and ("arguments" in obj or "parameters" in obj):
            action = action_from_call(str(obj["name"]), obj.get("arguments", obj.get("parameters")))
            return _match(action, admissible) or (None if admissible else action)
        if "function" in obj and isinstance(obj["function"], dict):
            return _from_json(obj["function"], admissible)
        for key in ("action", "command", "next_action", "answer"):
            if key in obj:
                value = obj[key]
                if isinstance(value, int) and admissible and 0 <= value < len(admissible):
                    return admissible[value]
                return _match(str(value), admissible)
    return None


def parse_action(text: Optional[str], admissible: Optional[Sequence[str]] = None) -> str:
    """The action in a model's answer, in any of the usual shapes; ValueError saying what was wrong.

    Accepted: a tool call (as JSON ``{"name": ..., "arguments": ...}``), a JSON object with
    ``action``/``command``, a line ``Action: ...`` (the last one wins; ReAct), a fenced block,
    the action alone or as a list item, its number in the list, or prose quoting one action.
    With `admissible`, the answer must name one of them (case, quotes and a final period are
    forgiven); an answer naming several (a copy of the list) is refused as no choice.
    """
    text = (text or "").strip()
    if not text:
        raise ValueError("the answer was empty")
    tried: list[str] = []
    blobs = [text] + re.findall(r"```(?:\w+)?\s*\n?(.*?)```", text, re.DOTALL)
    blobs += re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", text, re.DOTALL)
    for blob in blobs:
        start, end = blob.find("{"), blob.rfind("}")
        if 0 <= start < end:
            try:
                found = _from_json(json.loads(blob[start:end + 1]), admissible)
            except (json.JSONDecodeError, ValueError):
                found = None
            if found:
                return found
    lines = _ACTION_LINE.findall(text)
    for line in reversed(lines):
        tried.append(line)
        found = _match(line, admissible) or _match(_BULLET.sub("", line), admissible)
        if found:
            return found
    named: list[str] = []  # lines that are an action by themselves, as a bare line or a list item
    for line in reversed([ln for ln in text.splitlines() if ln.strip()]):
        found = _match(line, admissible) or (_match(_BULLET.sub("", line), admissible) if admissible else None)
        if not admissible:
            return found or _fail_no_action()
        if found and found not in named:
            named.append(found)
    if not named:  # prose that quotes its choice: I will "open the door".
        for q in re.findall(r"\"([^\"\n]+)\"|'([^'\n]+)'|`([^`\n]+)`", text):
            found = _match(next(x for x in q if x), admissible)
            if found and found not in named:
                named.append(found)
    if len(named) == 1:
        return named[0]
    if named:  # a copy of the list is no choice; the model is asked again
        shown = ", ".join(f"'{a}'" for a in reversed(named[-3:]))
        raise ValueError(f"the answer lists {len(named)} actions ({shown}{', ...' if len(named) > 3 else ''}) "
                         "instead of choosing one; give only the chosen one, "
                         "on a last line 'Action:' and then the action itself")
    if admissible:
        said = tried[-1] if tried else text.splitlines()[-1]
        raise ValueError(f"'{said[:200]}' is not one of the admissible actions; answer with one of them exactly, "
                         "on a last line 'Action:' and then the action itself")
    return _fail_no_action()


def _fail_no_action() -> str:
    raise ValueError("no action found; end the answer with a line 'Action:' and then the action itself")
