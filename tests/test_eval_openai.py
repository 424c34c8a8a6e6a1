"""`python -m eval run --policy openai` against the scripted loopback server: the command a user runs
for their own endpoint, its report of answers and tokens, and the errors its failures end in.

The same path against a real server (llama.cpp with SmolLM2) is tests/test_llamacpp.py (slow).
"""

from __future__ import annotations

import json
import re

from openai_server import error_body, openai_server  # noqa: F401  (fixture)


def _args(server, out, *extra):
    return ["--env", "household", "--policy", "openai", "--base-url", server.base_url, "--model", "test-model",
            "--seeds", "0", "--rounds", "1", "--train-tasks", "1", "--eval-tasks", "1", "--step-limit", "3",
            "--conditions", "no_memory", "memory", "--embedder", "hashing", "--out", str(out), "--no-progress",
            *extra]


def test_eval_run_plays_through_an_openai_endpoint(openai_server, tmp_path, capsys):
    from eval.report import load, summarize
    from eval.run import main

    answers = {"n": 0}

    def answer(request):
        # Every other decision the model first copies the list back (no choice), then picks one.
        text = request["messages"][-1]["content"]
        listed = re.findall(r"^- (.+)$", text, re.MULTILINE)
        answers["n"] += 1
        if listed and answers["n"] % 3 == 1:
            return "Actions:\n" + "\n".join(f"- {a}" for a in listed[:3])
        if "Your answer was not valid" in text:
            return "Action: look"
        return f"Thought: first look around.\nAction: {listed[-1] if listed else 'look'}"

    openai_server.set_responder(answer)
    assert main(_args(openai_server, tmp_path / "run")) == 0
    rows = load(tmp_path / "run")
    ev = [r for r in rows if r["phase"] == "eval"]
    assert {r["condition"] for r in ev} == {"no_memory", "memory"}
    u = summarize(rows)["conditions"]["no_memory"]["llm"]
    assert u["decisions"] == 3 and u["retries"] >= 1 and u["valid_first"] < u["decisions"] and u["invalid"] == 0
    assert u["calls"] == u["decisions"] + u["retries"] and u["seconds_per_decision"] > 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["conditions"] == ["no_memory", "memory"]  # no trained conditions for a served model
    out = capsys.readouterr().out
    assert "| condition | success | decisions | valid first time |" in out and "s / decision" in out
    retry = next(r for r in openai_server.requests if "Your answer was not valid" in r["messages"][-1]["content"])
    assert "instead of choosing one" in retry["messages"][-1]["content"]


def test_eval_run_failures_end_in_clear_errors(openai_server, tmp_path, capsys):
    from eval.run import main

    openai_server.set_responder(lambda r: {"status": 401, "body": error_body("Incorrect API key provided")})
    assert main(_args(openai_server, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "refused the request: Error code: 401 - Incorrect API key provided" in err and "Traceback" not in err
    assert "Check the base URL, API key and model name" in err
