"""The records everything in skillmem shares: episodes, steps, feedback, lessons, demonstrations.

Each record is a SQLModel class used both to validate input and, through the table
classes in :mod:`skillmem.store`, to store it. The fields here are the public contract;
the store adds only ids, namespaces and bookkeeping.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Optional

from pydantic import field_validator
from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

# One observation or feedback text larger than this is cut, with a marker that says so,
# rather than refused: a tool that dumps a whole web page must not crash the recorder.
MAX_TEXT_CHARS = 65_536
TRUNCATION_MARKER = "\n[... truncated by skillmem: {dropped} of {total} characters dropped ...]"

DEFAULT_NAMESPACE = "default"


def utcnow() -> datetime:
    """All timestamps are timezone-aware UTC."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


def clean_text(value: Any, field: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Text as stored: valid UTF-8, no NUL bytes, at most `limit` characters (marked when cut)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        # Invalid UTF-8 from a tool is kept readable rather than refused; the
        # replacement characters show where the bytes were bad.
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise TypeError(f"{field} must be text (str or bytes), got {type(value).__name__}: {value!r:.80}")
    if type(value) is str and value.isascii() and len(value) <= limit and "\x00" not in value:
        return value  # the common case, at every recorded step: nothing to repair (isascii is O(1))
    # Lone surrogates cannot be encoded as UTF-8 by any driver; NUL is refused by PostgreSQL.
    value = value.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\ufffd")
    if len(value) > limit:
        total = len(value)
        marker = TRUNCATION_MARKER.format(dropped=total - limit, total=total)
        value = value[: limit - len(marker)] + marker
    return value


class Status(str, Enum):
    running = "running"
    finished = "finished"
    interrupted = "interrupted"


class Outcome(str, Enum):
    success = "success"
    failure = "failure"
    unknown = "unknown"


class OutcomeSource(str, Enum):
    """Who verified the outcome. The agent itself is deliberately not a choice."""

    environment = "environment"
    verifier = "verifier"
    human = "human"


class Split(str, Enum):
    train = "train"
    valid_seen = "valid_seen"
    valid_unseen = "valid_unseen"
    test = "test"
    live = "live"  # production traffic: no split, memory may be written


EVAL_SPLITS = frozenset({Split.valid_seen.value, Split.valid_unseen.value, Split.test.value})
SPLITS = tuple(s.value for s in Split)


def check_split(value: Any) -> str:
    """A split name exactly as the harness spells it; anything else is refused, never guessed.

    "VALID_UNSEEN", "Test" or "valid_unseen " would otherwise read as a training split and
    feed evaluation tasks into memory (DESIGN principle 6).
    """
    if isinstance(value, Split):
        return value.value
    if not isinstance(value, str) or value not in SPLITS:
        hint = ""
        if isinstance(value, str) and value.strip().lower() in SPLITS:
            hint = f" (write it {value.strip().lower()!r}: split names are lower case, without spaces)"
        raise ValueError(f"split {value!r} is not one of {', '.join(SPLITS)}{hint}")
    return value


def check_label(success: Any, what: str = "success") -> Optional[bool]:
    """An outcome label: True, False or None; "false", 1.0 or a list are refused, never read as true."""
    if success is None or isinstance(success, bool):
        return success
    if type(success).__name__ == "bool_" or (type(success) is int and success in (0, 1)):
        return bool(success)  # numpy's bool or a 0/1 flag from an environment
    raise TypeError(f"{what} must be True, False or None, got {type(success).__name__} {success!r}; "
                    "convert the environment's or verifier's answer to a bool first")


class FeedbackKind(str, Enum):
    evaluative = "evaluative"  # how well: a score, "that was wrong"
    directive = "directive"  # what to do instead: a corrected action, an instruction


class ItemStatus(str, Enum):
    active = "active"
    retired = "retired"  # no longer retrieved; still in SQL; restorable
    merged = "merged"  # folded into another item (see lesson_events)
    quarantined = "quarantined"  # from an untrusted namespace; waits for approval


class Scope(str, Enum):
    general = "general"
    task = "task"


class ReflectionStatus(str, Enum):
    pending = "pending"  # waits in the reflection queue
    done = "done"
    skipped = "skipped"  # nothing to learn (no verified outcome, evaluation split, ...)
    failed = "failed"  # the writer gave up; retried by `skillmem reflect --retry-failed`


class EpisodeBase(SQLModel):
    """One attempt at one task: what was asked, how it ended, and who says so."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    namespace: str = Field(default=DEFAULT_NAMESPACE, index=True, max_length=200)
    task_id: str = Field(default="", max_length=500)
    task_type: str = Field(default="", index=True, max_length=200)
    goal: str = Field(default="", sa_type=Text)
    environment: str = Field(default="", max_length=200)
    split: str = Field(default=Split.live.value, max_length=50)
    policy_version: Optional[str] = Field(default=None, max_length=200)
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: Optional[datetime] = None
    status: Status = Field(default=Status.running)
    outcome: Outcome = Field(default=Outcome.unknown)
    outcome_source: Optional[OutcomeSource] = None
    # What the agent claimed about itself. Kept for analysis; never used as a label.
    self_reported_success: Optional[bool] = None
    total_reward: float = 0.0
    num_steps: int = 0

    @field_validator("goal", "task_id", "task_type", "environment", mode="before")
    @classmethod
    def _text(cls, v: Any, info: Any) -> str:
        return clean_text(v, info.field_name)

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, v: Any) -> str:
        return check_split(v)


def _finite(v: Any, field: str) -> Any:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
        raise ValueError(f"{field} must be a finite number, got {v!r} (a NaN or infinite reward cannot be summed)")
    return v


class StepBase(SQLModel):
    """One action of an episode and everything the world said back."""

    index: int = Field(ge=0)
    observation: str = ""
    action: str = ""
    # Next-state feedback: the tool output, error text or refusal ("I don't understand.") that the
    # action produced. The richest signal a failure has; never dropped.
    feedback: str = ""
    reward: float = 0.0
    error: Optional[str] = None
    admissible: Optional[list[str]] = Field(default=None, sa_column=Column(JSON))
    latency_ms: Optional[float] = None
    prompt_tokens: Optional[int] = Field(default=None, ge=0)
    completion_tokens: Optional[int] = Field(default=None, ge=0)
    context_tokens: Optional[int] = Field(default=None, ge=0)  # tokens of memory injected
    # A message agent's tool call, as the model issued it: the id the tool result answers,
    # the arguments verbatim, and the model turn that issued it (calls of one turn share it:
    # they ran in parallel, each on the same observation).
    tool_call_id: Optional[str] = Field(default=None, max_length=200)
    tool_args: Optional[Any] = Field(default=None, sa_column=Column(JSON))
    call_group: Optional[int] = Field(default=None, ge=0)

    @field_validator("observation", "action", "feedback", mode="before")
    @classmethod
    def _text(cls, v: Any, info: Any) -> str:
        return clean_text(v, info.field_name)

    @field_validator("reward", mode="after")
    @classmethod
    def _reward(cls, v: float) -> float:
        return _finite(v, "reward")

    @field_validator("error", mode="before")
    @classmethod
    def _error(cls, v: Any) -> Optional[str]:
        return None if v is None else clean_text(v, "error")

    @field_validator("admissible", mode="before")
    @classmethod
    def _admissible(cls, v: Any) -> Optional[list[str]]:
        if v is None:
            return None
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise TypeError(f"admissible must be a list of commands, got {type(v).__name__}")
        return [clean_text(a, "admissible", 2_000) for a in v]


class FeedbackBase(SQLModel):
    """Something said about an episode after or during it, by the environment, a teacher or a person."""

    kind: FeedbackKind
    text: str = ""
    corrected_action: Optional[str] = None
    step_index: Optional[int] = Field(default=None, ge=0)
    source: str = Field(default="human", max_length=200)  # "human", "expert", "verifier", a user id...
    score: Optional[float] = None  # evaluative feedback's value, when it has one

    @field_validator("score", mode="after")
    @classmethod
    def _score(cls, v: Optional[float]) -> Optional[float]:
        return None if v is None else _finite(v, "score")

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, v: Any) -> str:
        return clean_text(v, "text")


class LessonBase(SQLModel):
    """What a failure teaches: when it applies, what went wrong, what to do instead."""

    scope: Scope = Scope.task
    task_type: str = Field(default="", index=True, max_length=200)
    trigger: str = Field(sa_type=Text)  # when it applies, in words a retriever matches
    bad_action: str = ""  # with slots: "refund(order_id='[id]', amount=[number])"
    fix: str = Field(sa_type=Text)  # what to do instead
    pivot_step: Optional[int] = None  # where the source episode went wrong
    source_episodes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    status: ItemStatus = ItemStatus.active
    grounded_on_feedback: bool = False  # a teacher's or person's correction backs it


class DemonstrationBase(SQLModel):
    """What a success shows: the concrete plan, object names abstracted into slots."""

    task_type: str = Field(default="", index=True, max_length=200)
    goal_template: str = Field(default="", sa_type=Text)  # "refund order [id] in full"
    plan: list[str] = Field(default_factory=list, sa_column=Column(JSON))  # steps with slots
    slots: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))  # slot → value in the source
    source_episodes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    status: ItemStatus = ItemStatus.active
    raw_tokens: int = 0  # tokens of the trajectory it came from, to measure compaction
