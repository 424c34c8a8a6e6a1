"""`skillmem export`: SFT, preference and KTO rows in TRL's conversational formats, from a real store.

A household-like task (plain commands, through the `act` tool) and a tool-calling agent recorded
from its messages (its calls kept as themselves); the chat renderer and the answer parser they share
with the acting policy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from skillmem import SkillMemory
from skillmem.embed import HashingEmbedder
from skillmem.episode import LessonBase
from skillmem.policy.chat import action_from_call, chat_messages, parse_action, tool_call
from skillmem.train.export import ExportConfig, export_records, load_datasets, to_datasets, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
ADM = ["go to countertop 1", "go to fridge 1", "go to microwave 1", "take apple 1 from countertop 1",
       "heat apple 1 with fridge 1", "heat apple 1 with microwave 1"]
GOAL = "heat some apple and put it in countertop."
GOOD = ["go to countertop 1", "take apple 1 from countertop 1", "go to microwave 1", "heat apple 1 with microwave 1"]
BAD = ["go to countertop 1", "take apple 1 from countertop 1", "go to fridge 1", "heat apple 1 with fridge 1"]


def _record(mem, actions, success, task_id, split="train"):
    with mem.episode(task=GOAL, task_type="pick_heat_then_place_in_recep", task_id=task_id, split=split) as ep:
        for a in actions:
            fb = "Nothing happens." if "with fridge" in a else f"You did: {a}."
            ep.step(observation="", action=a, feedback=fb, admissible=ADM)
        ep.finish(success=success, source="environment")
    return ep.id


@pytest.fixture
def store(tmp_path):
    mem = SkillMemory(str(tmp_path / "s.db"), embedder=HashingEmbedder(), index_dir=tmp_path / "idx")
    ids = {"ok": _record(mem, GOOD, True, "t1"), "bad": _record(mem, BAD, False, "t1"),
           "fixed": _record(mem, BAD, False, "t2"), "eval": _record(mem, BAD, False, "t9", split="valid_unseen")}
    mem.add_lesson(LessonBase(task_type="pick_heat_then_place_in_recep", trigger="heating an object",
                              bad_action="heat [object] with fridge 1", fix="heat [object] with microwave 1",
                              pivot_step=3, source_episodes=[ids["bad"]]))
    # directive feedback at the other failure's pivot: the corrected action
    mem.feedback(ids["fixed"], 2, corrected_action="go to microwave 1", source="teacher")
    yield mem, ids
    mem.close()


def test_rows_in_trl_formats_with_tool_calls(store):
    mem, ids = store
    rec = export_records(mem.engine, "default")
    # every step of the success, and the correction: SFT
    assert len(rec.sft) == len(GOOD) + 1
    row = next(r for r in rec.sft if r["meta"]["source"] == "directive")
    assert row["meta"]["episode_id"] == ids["fixed"] and row["meta"]["step"] == 2
    prompt, [answer] = row["prompt"], row["completion"]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert prompt[2]["tool_calls"][0]["function"] == {"name": "act", "arguments": {"command": "go to countertop 1"}}
    assert prompt[3]["tool_call_id"] == prompt[2]["tool_calls"][0]["id"]
    assert "Admissible actions" in prompt[-1]["content"] and "go to microwave 1" in prompt[-1]["content"]
    assert answer["role"] == "assistant"
    assert answer["tool_calls"][0]["function"]["arguments"] == {"command": "go to microwave 1"}
    assert json.loads(row["tools"])[0]["function"]["name"] == "act"

    # a pair at the correction's step: same prefix, corrected vs the action taken
    pairs = {(p["meta"]["episode_id"], p["meta"]["step"]): p for p in rec.preference}
    p = pairs[(ids["fixed"], 2)]
    assert p["prompt"] == row["prompt"]
    assert p["chosen"][0]["tool_calls"][0]["function"]["arguments"]["command"] == "go to microwave 1"
    assert p["rejected"][0]["tool_calls"][0]["function"]["arguments"]["command"] == "go to fridge 1"
    # the lesson's pivot (no correction there) is an unpaired bad step; the steps before it are not
    kto_bad = [r for r in rec.kto if not r["label"]]
    assert {(r["meta"]["episode_id"], r["meta"]["step"]) for r in kto_bad} >= {(ids["bad"], 3)}
    assert not [r for r in kto_bad if r["meta"]["episode_id"] == ids["bad"] and r["meta"]["step"] < 3]
    assert sum(r["label"] for r in rec.kto) == len(rec.sft)
    # nothing from an evaluation split
    assert ids["eval"] not in {r["meta"]["episode_id"] for k in ("sft", "preference", "kto") for r in getattr(rec, k)}


def test_text_actions_and_history_cap(store):
    mem, _ = store
    rec = export_records(mem.engine, "default", ExportConfig(tools=False, max_history=1))
    last = rec.sft[-1]
    assert all("tool_calls" not in m for m in last["prompt"])
    assert last["completion"][0]["content"].startswith("Action: ")
    assert "earlier steps are not shown" in last["prompt"][1]["content"]
    assert len(last["prompt"]) <= 4  # system, goal, one step and its result


def test_jsonl_and_datasets_round_trip(store, tmp_path):
    mem, _ = store
    rec = export_records(mem.engine, "default")
    paths = write_jsonl(rec, tmp_path / "export", namespace="default")
    manifest = json.loads(paths["manifest"].read_text())
    assert manifest["counts"] == rec.counts() and manifest["trainers"]["preference"] == "trl.DPOTrainer"
    ds = load_datasets(tmp_path / "export")
    assert set(ds) == {"sft", "preference", "kto"} and len(ds["sft"]) == len(rec.sft)
    # messages survive exactly: no key of one message leaks into another as None
    assert ds["sft"][0]["prompt"] == [{k: v for k, v in m.items()} for m in rec.sft[0]["prompt"]]
    assert "tool_calls" not in ds["sft"][0]["prompt"][1]
    assert ds["kto"].features["label"].dtype == "bool"
    assert "meta" not in ds["sft"].column_names and "meta" in to_datasets(rec, meta=True)["sft"].column_names


def test_recorded_tool_calls_stay_tool_calls(tmp_path):
    """A message agent's tool calls are exported as the same calls, with a schema for each tool."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    from skillmem.record import record_messages

    mem = SkillMemory(str(tmp_path / "t.db"), embedder=HashingEmbedder(), index_dir=tmp_path / "idx")
    msgs = [HumanMessage("What is the capital of France?"),
            AIMessage("", tool_calls=[{"id": "1", "name": "search", "args": {"query": "capital of France", "k": 3}}]),
            ToolMessage("Paris is the capital of France.", tool_call_id="1"),
            AIMessage("", tool_calls=[{"id": "2", "name": "answer", "args": {"text": "Paris"}}]),
            ToolMessage("ok", tool_call_id="2")]
    record_messages(mem, msgs, goal="What is the capital of France?", split="train", success=True, source="verifier")
    out = export_records(mem.engine, "default")
    mem.close()
    assert len(out.sft) == 2
    second = out.sft[1]
    call = second["prompt"][2]["tool_calls"][0]["function"]
    assert call == {"name": "search", "arguments": {"query": "capital of France", "k": 3}}
    assert second["completion"][0]["tool_calls"][0]["function"] == {"name": "answer", "arguments": {"text": "Paris"}}
    tools = {t["function"]["name"]: t["function"] for t in json.loads(second["tools"])}
    assert tools["search"]["parameters"]["properties"] == {"query": {"type": "string"}, "k": {"type": "integer"}}


def test_cli_export(store, tmp_path):
    mem, _ = store
    db = str(mem.engine.url.database)
    out = tmp_path / "cli-export"
    r = subprocess.run([sys.executable, "-m", "skillmem.cli", "--db", db, "export", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert counts["sft"] == len(GOOD) + 1 and (out / "kto.jsonl").exists()
    r = subprocess.run([sys.executable, "-m", "skillmem.cli", "--db", db, "export", "--out", str(out),
                        "--namespace", "nobody"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 1 and "no finished train/live episodes" in r.stderr


# --------------------------------------------------------------------------- the shared chat format


def test_tool_call_round_trip():
    assert tool_call("search(query='a b', k=2)") == {"name": "search", "arguments": {"query": "a b", "k": 2}}
    assert tool_call("go to fridge 1") == {"name": "act", "arguments": {"command": "go to fridge 1"}}
    assert tool_call("open (the) door")["name"] == "act"
    for action in ("search(query='a b', k=2)", "go to fridge 1"):
        c = tool_call(action)
        assert action_from_call(c["name"], json.dumps(c["arguments"])) == action


@pytest.mark.parametrize("answer", [
    "Action: go to fridge 1",
    "Thought: the apple must be cold.\nAction: go to fridge 1",
    "action: Go to fridge 1.",
    '{"action": "go to fridge 1"}',
    '```json\n{"command": "go to fridge 1"}\n```',
    '{"name": "act", "arguments": {"command": "go to fridge 1"}}',
    '<tool_call>{"name": "act", "arguments": "{\\"command\\": \\"go to fridge 1\\"}"}</tool_call>',
    "go to fridge 1",
    "1",
    "**Action:** `go to fridge 1`",
    'Thought: "the apple is cold."\n- go to fridge 1',  # a list item, as SmolLM2 answers
    "Action: - go to fridge 1",
    'The action is to "go to fridge 1"',
])
def test_parser_accepts_the_usual_answers(answer):
    assert parse_action(answer, ["go to countertop 1", "go to fridge 1"]) == "go to fridge 1"


def test_parser_says_what_was_wrong():
    with pytest.raises(ValueError, match="not one of the admissible actions"):
        parse_action("Action: fly to the moon", ["go to fridge 1"])
    with pytest.raises(ValueError, match="empty"):
        parse_action("  ", ["go to fridge 1"])
    # The admissible list copied back is no choice (SmolLM2's usual answer): asked again, saying so.
    with pytest.raises(ValueError, match="lists 2 actions .*'go to countertop 1', 'go to fridge 1'.* instead of"):
        parse_action("Thought: I go.\nActions:\n- go to countertop 1\n- go to fridge 1", ["go to countertop 1",
                                                                                        "go to fridge 1"])


def test_prompt_carries_memory_and_choices():
    msgs = chat_messages("find the key", [], "Lesson: look under the mat", ["look", "go north"], tools=False)
    assert msgs[0]["role"] == "system" and "Action:" in msgs[0]["content"]
    assert "look under the mat" in msgs[1]["content"] and "- go north" in msgs[1]["content"]
