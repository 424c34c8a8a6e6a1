"""Every LLM path against a server nobody here wrote: llama.cpp's, serving SmolLM2-135M-Instruct on loopback.

A 135M model writes poor lessons and plays badly; what these tests hold is that each path works
end to end against a real OpenAI-compatible server, that what goes wrong ends in a clear error or
a counted refusal, and they print what they measure (share of answers valid first time, retries,
seconds per call, lessons stored vs refused) for the closing note. Few games, low step limits:
the whole module takes a few minutes on two cores.
"""

from __future__ import annotations

import json
import random

import pytest
from conftest import missing

from llamacpp_server import llamacpp_server  # noqa: F401  (session fixture)
from skillmem import SkillMemory
from skillmem.embed import HashingEmbedder
from skillmem.episode import LessonBase
from skillmem.llm import LLMClient, LLMConfig, LLMError

pytestmark = pytest.mark.slow


def client_for(server, **kw) -> LLMClient:
    knobs = dict(base_url=server.base_url, model=server.model, timeout=300.0, max_retries=1, max_tokens=200)
    return LLMClient(LLMConfig(**{**knobs, **kw}))


def test_server_speaks_the_protocol(llamacpp_server):
    """JSON mode as this server supports it: response_format json_object constrains the answer to JSON."""
    client = client_for(llamacpp_server)
    obj, usage = client.complete_json([{"role": "user", "content": 'Answer with a JSON object {"color": ...} '
                                                                   "naming the color of the sky."}], dict)
    assert isinstance(obj, dict) and usage.calls >= 1 and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert client._json_mode, "llama.cpp accepts response_format json_object"


def test_lesson_writer_and_merge_hook(llamacpp_server, tmp_path):
    from eval.bench.reflection import play
    from eval.envs.household import HouseholdEnv
    from skillmem.reflect import LLMWriter, reflect_pending

    memory = SkillMemory(tmp_path / "m.db", embedder=HashingEmbedder())
    rng = random.Random(0)
    failed = 0
    for seed in range(40):
        env = HouseholdEnv(split="train", seed=seed)
        env.reset()
        env.step_limit = len(env.expert_plan()) + 1
        ep, won, _, _ = play(memory, env, rng, 0.5, 0.2)
        if won:  # successes become demonstrations without a model; the lessons are what is tested here
            with memory.engine.begin() as c:
                c.exec_driver_sql(f"UPDATE episodes SET reflection_status = 'done' WHERE id = '{ep}'")
        else:
            failed += 1
        if failed == 3:
            break
    writer = LLMWriter(client_for(llamacpp_server))
    memory.merge_hook = writer.merge
    asked = []  # per question the writer asked: HTTP calls it took, and whether an answer validated
    complete = writer.client.complete

    def counted(*args, **kw):
        before = writer.client.usage.calls
        try:
            out = complete(*args, **kw)
        except LLMError:
            asked.append((writer.client.usage.calls - before, False))
            raise
        asked.append((writer.client.usage.calls - before, True))
        return out

    writer.client.complete = counted
    report = reflect_pending(memory, writer, progress=False)
    usage = writer.client.usage
    first = sum(1 for calls, ok in asked if ok and calls == 1)
    print(f"\nlesson writer: {len(asked)} questions, {first} answered validly first time "
          f"({100 * first / max(1, len(asked)):.0f} %), {sum(c for c, _ in asked) - len(asked)} re-asks, "
          f"{sum(1 for _, ok in asked if not ok)} never valid")
    lessons = memory.lessons()
    stored = sum(1 for les in lessons if les.provenance.get("writer") == "llm")
    print(f"lesson writer, SmolLM2-135M via llama.cpp: {failed} failed episodes -> {report.lessons} lessons "
          f"stored, {report.errors} refused; {usage.calls} calls, {usage.seconds / max(1, usage.calls):.2f} s/call, "
          f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens")
    assert report.done + report.errors >= failed and usage.calls >= failed
    for les in lessons:
        if les.provenance.get("writer") == "llm":
            assert les.provenance["model"] == llamacpp_server.model and les.provenance["calls"] >= 1
    with memory.engine.connect() as c:
        errors = [r[0] for r in c.exec_driver_sql(
            "SELECT reflection_error FROM episodes WHERE reflection_error IS NOT NULL")]
    assert len(errors) == report.errors
    for e in errors:  # a refusal says what was wrong
        assert "InvalidAnswer" in e or "LLM" in e or "lesson" in e.lower(), e

    # the merge hook: two near-duplicates, one lesson written by the model, or a clear refusal
    existing = LessonBase(trigger="heating [object] for the heat task", bad_action="heat [object] with fridge 1",
                          fix="Go to the microwave and heat [object] there.", source_episodes=["a"])
    new = LessonBase(trigger="heat task: heating [object]", bad_action="heat [object] with fridge 1",
                     fix="Heat [object] with the microwave, not the fridge.", source_episodes=["b"])
    try:
        merged = writer.merge(existing, new)
    except LLMError as e:  # an invalid answer 3 times, or the server failing: said plainly
        assert llamacpp_server.model in str(e)
        print(f"merge hook: refused after {asked[-1][0]} calls ({str(e)[:160]})")
    else:
        assert merged.source_episodes == ["a", "b"] and merged.fix
        assert merged.provenance["merged_by"]["model"] == llamacpp_server.model
        m = merged.provenance["merged_by"]
        print(f"merge hook: merged in {m['calls']} calls, {m['seconds']:.1f} s, into {merged.fix[:100]!r}")
    memory.close()


# A game is dozens of model calls on two CPU cores; 600 s was not enough on a loaded machine.
@pytest.mark.timeout(1800)
def test_policy_plays_household_games_through_the_harness(llamacpp_server, tmp_path):
    from eval.report import llm_table, load, summarize
    from eval.runner import RunConfig, run

    cfg = RunConfig(out=str(tmp_path / "run"), env="household", seeds=(0,), rounds=1, train_tasks=2, eval_tasks=2,
                    conditions=("no_memory", "memory"), policy="openai", base_url=llamacpp_server.base_url,
                    model=llamacpp_server.model, step_limit=6, embedder="hashing", llm_max_tokens=60)
    out = run(cfg, progress=False)
    rows = load(out)
    ev = [r for r in rows if r["phase"] == "eval"]
    assert {r["condition"] for r in ev} == {"no_memory", "memory"} and len(ev) == 4
    summary = summarize(rows)
    for cond in ("no_memory", "memory"):
        u = summary["conditions"][cond]["llm"]
        assert u["decisions"] >= 2 and u["prompt_tokens"] > 0 and u["calls"] >= u["decisions"]
        assert 0.0 <= u["valid_first_share"] <= 1.0
    print("\n" + llm_table(summary))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["policy"] == "openai" and "trained" not in manifest["config"]["conditions"]


# A game is dozens of model calls on two CPU cores; 600 s was not enough on a loaded machine.
@pytest.mark.timeout(1800)
def test_policy_plays_real_alfworld_games(llamacpp_server, tmp_path):
    try:
        import alfworld  # noqa: F401
        from eval.envs.alfworld_env import list_tasks as alfworld_tasks

        alfworld_tasks("valid_seen", 1)
    except (ImportError, FileNotFoundError) as e:
        missing("alfworld", f"{e}: run `bash .ci/alfworld.sh .venv/bin/python`")
    from eval.report import llm_table, load, summarize
    from eval.runner import RunConfig, run

    cfg = RunConfig(out=str(tmp_path / "alf"), env="alfworld", train_env="household", eval_split="valid_seen",
                    seeds=(0,), rounds=1, train_tasks=1, eval_tasks=2, conditions=("memory",), policy="openai",
                    base_url=llamacpp_server.base_url, model=llamacpp_server.model, step_limit=5,
                    embedder="hashing", llm_max_tokens=60)
    out = run(cfg, progress=False)
    ev = [r for r in load(out) if r["phase"] == "eval"]
    assert len(ev) == 2 and all(r["steps"] >= 1 for r in ev)
    u = summarize(load(out))["conditions"]["memory"]["llm"]
    assert u["decisions"] >= 2
    print("\nreal ALFWorld, valid_seen:\n" + llm_table(summarize(load(out))))
