"""SkillMemory: the one object agents, graphs and the harness use.

Recording (episodes, steps, feedback, outcomes) lives here and in :mod:`skillmem.record`;
lessons and demonstrations (add, curate, retrieve) in the second half of the class.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional

from pydantic import ValidationError
from sqlalchemy import insert, select, text, update

from .episode import (
    DEFAULT_NAMESPACE,
    EVAL_SPLITS,
    EpisodeBase,
    FeedbackBase,
    FeedbackKind,
    Outcome,
    OutcomeSource,
    ReflectionStatus,
    utcnow,
)
from .record import EpisodeRecorder, MalformedInput, Verifier
from .store import (
    EpisodeRow,
    FeedbackRow,
    StepRow,
    init_schema,
    make_engine,
    owner_tag,
    reap_interrupted,
    resolve_url,
)


class SkillMemory:
    """Episodes in, lessons and demonstrations out; SQL rows as the truth.

    `SkillMemory()` opens the SQLite file named by SKILLMEM_DB (or the default path);
    `SkillMemory("postgresql://...")` a PostgreSQL database; `SkillMemory("x.db")` a file.
    """

    def __init__(self, db: Any = None, *, namespace: str = DEFAULT_NAMESPACE, embedder: Any = None,
                 index_dir: Any = None, untrusted_namespaces: tuple[str, ...] = (),
                 reap_after: timedelta = timedelta(hours=1)):
        self.url = resolve_url(db)
        self.engine = make_engine(self.url)
        init_schema(self.engine)
        reap_interrupted(self.engine, stale_after=reap_after)
        self.namespace = namespace
        self.untrusted_namespaces = set(untrusted_namespaces)
        self._embedder = embedder
        self._index_dir = index_dir
        self._finished_hooks: list[Callable[[str], None]] = []

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "SkillMemory":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- recording

    def start_episode(self, *, goal: str = "", task_type: str = "", task_id: str = "", split: str = "live",
                      environment: str = "", namespace: Optional[str] = None, policy_version: Optional[str] = None,
                      verifier: Optional[Verifier] = None, episode_id: Optional[str] = None,
                      meta: Optional[dict[str, Any]] = None, task: Optional[str] = None) -> EpisodeRecorder:
        """Open an episode row (status `running`) and return its recorder."""
        fields: dict[str, Any] = dict(goal=goal or task or "", task_type=task_type, task_id=task_id or task or "",
                                      split=split, environment=environment,
                                      namespace=namespace or self.namespace, policy_version=policy_version)
        if episode_id:
            fields["id"] = episode_id
        try:
            base = EpisodeBase.model_validate(fields)
        except (ValidationError, TypeError) as exc:
            raise MalformedInput(f"malformed episode, nothing written: {exc}") from exc
        row = EpisodeRow(**base.model_dump(), owner=owner_tag(), meta=meta or {})
        values = row.model_dump()
        values["meta"] = meta or {}
        # An evaluation episode never feeds memory (DESIGN principle 6).
        if base.split in EVAL_SPLITS:
            values["reflection_status"] = ReflectionStatus.skipped.value
        with self.engine.begin() as conn:
            conn.execute(insert(EpisodeRow.__table__), _plain(values))
        return EpisodeRecorder(self, row, verifier)

    @contextlib.contextmanager
    def episode(self, task: str = "", **kwargs: Any) -> Iterator[EpisodeRecorder]:
        """`with memory.episode(task="...") as ep: ep.step(...)`; finished (or interrupted) on exit."""
        rec = self.start_episode(task=task, **kwargs)
        with rec:
            yield rec

    def set_outcome(self, episode_id: str, success: Optional[bool], *, source: str = "human") -> None:
        """Settle an episode's outcome after the fact (a person, a verifier run later)."""
        src = OutcomeSource(source)
        outcome = Outcome.unknown if success is None else (Outcome.success if success else Outcome.failure)
        with self.engine.begin() as conn:
            n = conn.execute(update(EpisodeRow.__table__).where(EpisodeRow.__table__.c.id == episode_id).values(
                outcome=outcome.value, outcome_source=src.value if success is not None else None,
                updated_at=utcnow())).rowcount
            if n == 0:
                raise KeyError(f"no episode {episode_id!r}")
            # A relabelled episode goes back into the reflection queue (unless it is evaluation).
            conn.execute(text("UPDATE episodes SET reflection_status = 'pending' WHERE id = :id "
                              "AND split NOT IN ('valid_seen', 'valid_unseen', 'test')"), {"id": episode_id})

    def feedback(self, episode_id: str, step: Optional[int] = None, *, text: str = "",
                 corrected_action: Optional[str] = None, kind: Optional[str] = None, source: str = "human",
                 score: Optional[float] = None, success: Optional[bool] = None) -> int:
        """Record feedback on an episode (optionally at a step); returns the feedback row id.

        Directive when it says what to do instead (`corrected_action` or kind="directive"),
        evaluative otherwise. `success=` also settles the outcome, with `source` as its source
        if that is one of environment/verifier/human.
        """
        kind = kind or (FeedbackKind.directive.value if corrected_action else FeedbackKind.evaluative.value)
        try:
            fb = FeedbackBase.model_validate(dict(kind=kind, text=text, corrected_action=corrected_action,
                                                  step_index=step, source=source, score=score))
        except (ValidationError, TypeError) as exc:
            raise MalformedInput(f"malformed feedback, nothing written: {exc}") from exc
        with self.engine.begin() as conn:
            ns = conn.execute(select(EpisodeRow.__table__.c.namespace).where(
                EpisodeRow.__table__.c.id == episode_id)).scalar()
            if ns is None:
                raise KeyError(f"no episode {episode_id!r}; feedback needs an existing episode id")
            values = _plain(fb.model_dump())
            values.update(namespace=ns, episode_id=episode_id, created_at=utcnow())
            fid = conn.execute(insert(FeedbackRow.__table__).returning(FeedbackRow.__table__.c.id), values).scalar()
        if success is not None:
            src = source if source in {s.value for s in OutcomeSource} else "human"
            self.set_outcome(episode_id, success, source=src)
        return int(fid)

    def _on_episode_finished(self, episode_id: str) -> None:
        for hook in self._finished_hooks:
            hook(episode_id)

    def on_episode_finished(self, hook: Callable[[str], None]) -> None:
        """Call `hook(episode_id)` after each episode this process finishes (e.g. queue reflection)."""
        self._finished_hooks.append(hook)

    # ----------------------------------------------------------------- reading

    def get_episode(self, episode_id: str) -> EpisodeRow:
        with self.engine.connect() as conn:
            row = conn.execute(select(EpisodeRow.__table__).where(EpisodeRow.__table__.c.id == episode_id)).mappings().first()
        if row is None:
            raise KeyError(f"no episode {episode_id!r}")
        return EpisodeRow.model_validate(dict(row))

    def steps(self, episode_id: str) -> list[StepRow]:
        t = StepRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.episode_id == episode_id).order_by(t.c.index)).mappings().all()
        return [StepRow.model_validate(dict(r)) for r in rows]

    def feedback_for(self, episode_id: str) -> list[FeedbackRow]:
        t = FeedbackRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.episode_id == episode_id).order_by(t.c.id)).mappings().all()
        return [FeedbackRow.model_validate(dict(r)) for r in rows]

    def episodes(self, *, namespace: Optional[str] = None, split: Optional[str] = None,
                 outcome: Optional[str] = None, task_type: Optional[str] = None, limit: int = 1000) -> list[EpisodeRow]:
        t = EpisodeRow.__table__
        q = select(t).where(t.c.namespace == (namespace or self.namespace))
        if split:
            q = q.where(t.c.split == split)
        if outcome:
            q = q.where(t.c.outcome == outcome)
        if task_type:
            q = q.where(t.c.task_type == task_type)
        q = q.order_by(t.c.started_at, t.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [EpisodeRow.model_validate(dict(r)) for r in conn.execute(q).mappings()]


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Enum members to their values, for Core inserts."""
    return {k: (v.value if hasattr(v, "value") and not isinstance(v, (int, float)) else v) for k, v in values.items()}
