"""Lesson writers: the offline writer (from the trace analysis alone) and the LLM writer.

Both take an :class:`~skillmem.reflect.trace.Analysis` and return a checked LessonBase; both
can merge two near-duplicate lessons for the memory's merge hook. `default_writer()` picks
the LLM writer when SKILLMEM_LLM_* is set, the offline writer otherwise.

    writer = LLMWriter(LLMClient(LLMConfig(base_url="http://localhost:8080/v1")))
    lesson = writer.write_lesson(analysis)        # LLMError subclasses when the endpoint fails
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, Optional, Protocol

from pydantic import BaseModel, Field

from ..episode import DemonstrationBase, ItemStatus, LessonBase, Scope
from ..llm import LLMClient, LLMConfig, Usage
from . import prompts
from .demos import demo_from_trace
from .safety import SafetyConfig, check_lesson, has_injection
from .trace import Analysis, Trace


class Writer(Protocol):
    """Turns analyses into lessons and successes into demonstrations."""

    name: str

    def write_lesson(self, analysis: Analysis) -> Optional[LessonBase]: ...

    def write_demo(self, trace: Trace) -> DemonstrationBase: ...

    def merge(self, existing: LessonBase, new: LessonBase) -> LessonBase: ...


def _safe(text: Optional[str]) -> str:
    """Untrusted text, or nothing when it carries an instruction."""
    return "" if not text or has_injection(text) else text


def _fill(draft: "LessonDraft", analysis: Analysis, provenance: dict[str, Any]) -> LessonBase:
    t = analysis.trace
    return LessonBase(
        scope=Scope(draft.scope), task_type=t.task_type, trigger=draft.trigger.strip(),
        bad_action=draft.bad_action.strip(), fix=draft.fix.strip(), pivot_step=analysis.pivot.step,
        source_episodes=[t.episode_id], provenance=provenance, grounded_on_feedback=analysis.grounded_on_feedback,
    )


class LessonDraft(BaseModel):
    """The part of a lesson a writer composes; the rest comes from the analysis."""

    trigger: str = Field(min_length=3)
    bad_action: str = ""
    fix: str = Field(min_length=3)
    scope: Literal["general", "task"] = "task"


class OfflineWriter:
    """Writes lessons from the trace analysis alone: no model, deterministic, the default."""

    name = "offline"

    def __init__(self, safety: Optional[SafetyConfig] = None, *, domain: Any = None):
        self.safety = safety or SafetyConfig()
        self.domain = domain  # the world's Domain the queue reads episodes with (None: TextDomain)

    def draft(self, a: Analysis) -> LessonDraft:
        """The lesson's words: trigger from the situation, fix from the strongest evidence."""
        bad = _safe(a.bad_action)
        prev = _safe(a.before_pivot[-1]) if a.before_pivot else ""
        kind = a.trace.task_type.replace("_", " ") if a.trace.task_type else "this kind of task"
        d = a.domain
        task_words = (d.task_words(a.trace.task_type) if hasattr(d, "task_words") else "") or kind
        goal = _safe(a.goal_template) or kind
        trigger = f"Task '{goal}' ({kind})"
        trigger += f", after '{prev}'," if prev else ", at the start,"
        trigger += f" when about to '{bad}'" if bad else ""
        fix_action = _safe(a.fix_action)
        verb = (bad.split() or [""])[0]
        reason = a.pivot.reason
        fb = _safe(a.feedback_at_pivot)
        scope = "task"
        r = a.rule
        if r is not None:
            # A correction: the rule it stands for, in situation words (see trace.generalize).
            goal = _safe(getattr(r, "goal_template", "")) or goal  # the slots the rule's texts use
            sit = ", ".join(r.situation) or "always"
            trigger = sit if r.scope == "general" else f"{task_words}: {sit}"
            if "` succeeded" in sit or "` is not done yet" in sit:
                # Its steps name the goal's slots: the goal they belong to says what each one is (and
                # brings the lesson to goals worded the same way).
                trigger = f"{task_words}, goal '{goal}': {sit}"
            if not r.transferable:
                # Nothing more general holds: the correction itself, verbatim, in its exact situation.
                trigger = f"Task '{goal}' ({kind})" + (f", after '{prev}'" if prev else ", at the start") + \
                    (f", {sit}" if r.situation else "")
                fix = f"do '{fix_action or r.fix}' instead of '{bad or r.bad_action}'"
                return LessonDraft(trigger=trigger[:400], bad_action=(bad or r.bad_action)[:200], fix=fix[:800],
                                   scope="task")
            return LessonDraft(trigger=trigger[:400], bad_action=r.bad_action[:200], fix=r.fix[:800], scope=r.scope)
        if reason == "directive":
            d = next((d for d in a.trace.directives if d.step_index == a.pivot.step), None)
            said = _safe(d.text) if d else ""
            fix = f"Do '{fix_action}' instead of '{bad}'." if fix_action else f"Do not '{bad}' here."
            fix += f" The {d.source if d else 'teacher'} said: {said}" if said else ""
        elif reason == "diverged_from_same_task":
            fix = f"Do '{fix_action}' here instead of '{bad}'." if fix_action else f"Stop after the step before '{bad}'."
            rest = _rest_of_plan(a, fix_action)
            fix += f" The successful run went on: {rest}." if rest else ""
        elif reason == "failure_feedback":
            fix = f"'{bad}' failed" + (f" ({fb})" if fb and len(fb) < 80 else "") + "."
            advice = d.advice(verb) if hasattr(d, "advice") else ""
            if advice:
                fix += f" Before '{verb}', {advice}."
                scope = "general" if not fix_action else "task"
            if fix_action and fix_action != bad:
                fix += f" A successful run of this task did '{fix_action}'."
            if not advice and not fix_action:
                fix += " Choose a command from the admissible commands that moves toward the goal."
        elif reason == "diverged_from_task_type":
            nxt = a.success_plan[a.pivot.step] if a.pivot.step is not None and a.pivot.step < len(a.success_plan) else ""
            fix = f"Successful runs of this task did '{_safe(nxt)}' at this point, not '{bad}'." if nxt else \
                f"Successful runs of this task did not '{bad}' here."
            if a.success_plan:
                fix += " Their plan: " + "; ".join(a.success_plan[:12]) + "."
        elif reason == "loop":
            fix = f"'{bad}' repeats an earlier step that gave the same result; do something new " \
                  f"(a place not yet visited, or the next step of the goal)."
        else:
            fix = "The episode failed without a clear signal; follow the goal step by step and check each " \
                  "action's feedback."
        return LessonDraft(trigger=trigger[:400], bad_action=bad[:200], fix=fix[:800], scope=scope)

    def write_lesson(self, analysis: Analysis) -> Optional[LessonBase]:
        """The lesson, or None when the failure shows no mistake the analysis can name.

        A correction always gives a lesson: its rule when one transfers, else the corrected action
        verbatim in its situation, held in quarantine (not retrieved until a person approves it). Of several rules the domain's preferred one wins (a pack may
        prefer any rule over its most common one, which every failure of an untrained agent teaches).
        """
        rules = analysis.rules
        d = analysis.domain
        pick = getattr(d, "preferred_rule", None)
        rule = pick(rules) if pick is not None else (rules[0] if rules else None)
        if rule is not None and not rule.transferable:
            rule = rules[0]
        if rule is None and analysis.pivot.reason in ("last_step", "none"):
            return None  # no signal at all: a lesson would be filler
        a = replace(analysis, rules=[rule] if rule is not None else [])
        provenance = {"writer": self.name, "model": None, "pivot_reason": analysis.pivot.reason,
                      "success_episode": analysis.success_episode, "prompt_version": None,
                      "domain": getattr(d, "name", None)}
        if rule is not None:
            provenance["mistake"] = rule.mistake or None
            if not rule.transferable:
                provenance["transferable"], provenance["why_not"] = False, rule.why_not
        lesson = _fill(self.draft(a), a, provenance)
        if rule is not None and not rule.transferable:
            # Its own episode's correction verbatim: kept for a person to read (and approve), never
            # retrieved, so it neither takes a lesson's place in another task's context nor its words.
            lesson.status = ItemStatus.quarantined
        if rule is not None:
            provenance["rule_step"] = rule.step
            if lesson.scope == Scope.general:
                # A rule of any task: one copy for all task types, so copies meet and merge.
                provenance["task_type"], lesson.task_type = lesson.task_type, ""
        return check_lesson(lesson, self.safety)

    def more_lessons(self, analysis: Analysis, main: Optional[LessonBase]) -> list[LessonBase]:
        """Lessons of the failure's other transferable rules (each a mistake at another step: a goal
        step offered and not taken, one skipped), beside `main`, none repeating it; as many as the
        domain's `lessons_per_failure` allows in all (default 1: the main one only)."""
        limit = int(getattr(analysis.domain, "lessons_per_failure", 1)) - 1
        out: list[LessonBase] = []
        seen = {(main.trigger, main.fix)} if main is not None else set()
        for rule in analysis.rules:
            if len(out) >= limit:
                break
            if not rule.transferable:
                continue
            les = self.write_lesson(replace(analysis, rules=[rule]))
            if les is not None and rule.step is not None:
                les.pivot_step = rule.step  # the step this lesson is about, not the failure's first pivot
            if les is not None and (les.trigger, les.fix) not in seen:
                seen.add((les.trigger, les.fix))
                out.append(les)
        return out

    def write_demo(self, trace: Trace) -> DemonstrationBase:
        return demo_from_trace(trace, writer=self.name)

    def merge(self, existing: LessonBase, new: LessonBase) -> LessonBase:
        """Keep the existing lesson's words; add the new fix when it says something else; join sources."""
        fix = existing.fix if new.fix.strip() in existing.fix else f"{existing.fix} Also: {new.fix}"
        merged = existing.model_copy(update={
            "fix": fix[: self.safety.max_fix_chars],
            "source_episodes": list(dict.fromkeys([*existing.source_episodes, *new.source_episodes])),
            "grounded_on_feedback": existing.grounded_on_feedback or new.grounded_on_feedback,
        })
        return check_lesson(merged, self.safety)


def _rest_of_plan(a: Analysis, fix_action: Optional[str], n: int = 6) -> str:
    plan = a.success_plan
    if fix_action in plan:
        i = plan.index(fix_action)
        return "; ".join(_safe(x) for x in plan[i + 1: i + 1 + n])
    return ""


class LLMWriter:
    """Writes lessons with any OpenAI-compatible model, from the analysis and the offline draft.

    The answer is validated against the lesson schema and the safety checks; an invalid one
    goes back to the model with the error (LLMClient does that), and after the client's
    `json_attempts` it raises InvalidAnswer: the queue keeps the episode pending. Usage
    (tokens, calls, seconds) goes into each lesson's provenance.
    """

    name = "llm"

    def __init__(self, client: LLMClient, *, safety: Optional[SafetyConfig] = None, tools: Any = None,
                 domain: Any = None):
        self.client = client
        self.domain = domain
        self.tools = list(tools or [])  # the agent's tool schemas, shown to the model
        self.safety = safety or SafetyConfig()
        self.offline = OfflineWriter(self.safety, domain=domain)

    def _provenance(self, usage: Usage, **extra: Any) -> dict[str, Any]:
        return {"writer": self.name, "model": self.client.model, "endpoint": self.client.endpoint,
                "prompt_version": prompts.PROMPT_VERSION, "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens, "calls": usage.calls,
                "seconds": round(usage.seconds, 3), **extra}

    def write_lesson(self, analysis: Analysis) -> LessonBase:
        draft = self.offline.draft(analysis)
        messages = prompts.lesson_messages(analysis.render(), draft, self.tools)
        base = {"writer": self.name, "pivot_reason": analysis.pivot.reason,
                "success_episode": analysis.success_episode, "domain": getattr(analysis.domain, "name", None)}

        def validate(obj: dict[str, Any]) -> LessonBase:
            return check_lesson(_fill(LessonDraft.model_validate(obj), analysis, base), self.safety)

        lesson, usage = self.client.complete_json(messages, validate)
        lesson.provenance = {**base, **self._provenance(usage)}
        return lesson

    def write_demo(self, trace: Trace) -> DemonstrationBase:
        # A success stays concrete: its plan is the trace itself, no model is needed.
        return demo_from_trace(trace, writer="offline")

    def merge(self, existing: LessonBase, new: LessonBase) -> LessonBase:
        """One lesson from two near-duplicates, for `memory.merge_hook`."""

        def validate(obj: dict[str, Any]) -> LessonBase:
            d = LessonDraft.model_validate(obj)
            merged = existing.model_copy(update={
                "trigger": d.trigger.strip(), "bad_action": d.bad_action.strip(), "fix": d.fix.strip(),
                "scope": Scope(d.scope),
                "source_episodes": list(dict.fromkeys([*existing.source_episodes, *new.source_episodes])),
                "grounded_on_feedback": existing.grounded_on_feedback or new.grounded_on_feedback,
            })
            return check_lesson(merged, self.safety)

        lesson, usage = self.client.complete_json(prompts.merge_messages(existing, new), validate)
        lesson.provenance = {**existing.provenance, "merged_by": self._provenance(usage)}
        return lesson


def default_writer(config: Optional[LLMConfig] = None) -> Writer:
    """The LLM writer when an endpoint is configured (argument or SKILLMEM_LLM_*), else the offline one."""
    config = config or LLMConfig.from_env()
    return LLMWriter(LLMClient(config)) if config is not None else OfflineWriter()
