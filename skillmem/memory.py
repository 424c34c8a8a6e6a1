"""SkillMemory: the one object agents, graphs and the harness use.

Recording (episodes, steps, feedback, outcomes) lives here and in :mod:`skillmem.record`;
lessons and demonstrations (add, curate, retrieve) in the second half of the class.
"""

from __future__ import annotations

import contextlib
import threading
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
    check_label,
    utcnow,
)
from . import curate
from .curate import DUPLICATE_COSINE, FIELD_COSINE, MIN_USES, Curator, MergeHook, default_merge
from .episode import DemonstrationBase, LessonBase
from .record import STEP_WRITES, EpisodeRecorder, MalformedInput, Verifier, episode_writer, retrieval_writer
from .index.items import DEMO, LESSON
from .index.memory import MemoryIndex, default_index_dir, reader_engine
from .retrieve import Context, RetrievalConfig, build_context, count_item_tokens, query_text, record_retrievals
from .store import (
    DemonstrationRow,
    EpisodeRow,
    LessonRow,
    FeedbackRow,
    StepRow,
    init_schema,
    make_engine,
    owner_tag,
    reap_interrupted,
    resolve_url,
    set_trust,
)
from .store import untrusted_namespaces as store_untrusted


class SkillMemory:
    """Episodes in, lessons and demonstrations out; SQL rows as the truth.

    `SkillMemory()` opens the SQLite file named by SKILLMEM_DB (or the default path);
    `SkillMemory("postgresql://...")` a PostgreSQL database; `SkillMemory("x.db")` a file.
    """

    def __init__(self, db: Any = None, *, namespace: str = DEFAULT_NAMESPACE, embedder: Any = None,
                 index_dir: Any = None, untrusted_namespaces: tuple[str, ...] = (),
                 reap_after: timedelta = timedelta(hours=1), duplicate_cosine: float = DUPLICATE_COSINE,
                 field_cosine: float = FIELD_COSINE, save_interval: float = 30.0,
                 index_kind: Optional[str] = None, retrieval: Optional[RetrievalConfig] = None,
                 step_writes: str = "sync"):
        if step_writes not in STEP_WRITES:
            raise ValueError(f"step_writes must be one of {', '.join(STEP_WRITES)}, got {step_writes!r}")
        # "sync": a step is in the table when step() returns (kill -9 loses at most the step in
        # flight); "background": a writer thread inserts it, kill -9 loses at most the unwritten
        # ones (skillmem.record.MAX_PENDING queued, plus the one being written); finish(),
        # close() and a normal exit wait for them. A retrieval's rows (what it chose, for
        # credit) are written the same way, with the same bound.
        self.step_writes = step_writes
        self._configs: dict[tuple[Any, ...], RetrievalConfig] = {}
        self.url = resolve_url(db)
        self.engine = make_engine(self.url)
        if step_writes == "background":  # the rows of what each retrieval chose go the same way
            retrieval_writer(self.engine).background = True
        init_schema(self.engine)
        reap_interrupted(self.engine, stale_after=reap_after)
        self.namespace = namespace
        self.retrieval = retrieval or RetrievalConfig()  # what retrieve() uses unless a call says otherwise
        for ns in untrusted_namespaces:  # stored with the namespace: other processes see it too
            self.set_trust(ns, False, reason="SkillMemory(untrusted_namespaces=...)")
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._index_dir = index_dir
        self._finished_hooks: list[Callable[[str], None]] = []
        # Lessons and demonstrations (second half): the index is opened on first use.
        self.read_engine = reader_engine(self.engine)
        # index_kind (or SKILLMEM_INDEX): "auto" searches a partition exactly up to 4,096 items
        # and approximately (FAISS IVF) above; "exact" or "ivf" force one (skillmem.index.vector).
        self.index = MemoryIndex(self.engine, lambda: self.embedder, default_index_dir(self.url, index_dir),
                                 save_interval=save_interval, read_engine=self.read_engine, kind=index_kind,
                                 count_tokens=count_item_tokens)
        # Curation gets its parts by name, never the façade (skillmem.curate).
        self.curator = Curator(self.engine, self.read_engine, self.index, lambda: self.embedder,
                               merge_hook=default_merge, duplicate_cosine=duplicate_cosine, field_cosine=field_cosine)

    # The curator's settings, as attributes of the memory (`memory.merge_hook = writer.merge`).
    @property
    def merge_hook(self) -> MergeHook:
        """Writes one lesson from two paraphrases (default: the stronger one, sources joined)."""
        return self.curator.merge_hook

    @merge_hook.setter
    def merge_hook(self, hook: MergeHook) -> None:
        self.curator.merge_hook = hook

    @property
    def safety(self) -> Any:
        """The reflect.safety.SafetyConfig every write is checked with; None: its defaults."""
        return self.curator.safety

    @safety.setter
    def safety(self, config: Any) -> None:
        self.curator.safety = config

    @property
    def duplicate_cosine(self) -> float:
        """Demonstrations whose goal and plan embed this close are one (see skillmem.curate)."""
        return self.curator.duplicate_cosine

    @duplicate_cosine.setter
    def duplicate_cosine(self, value: float) -> None:
        self.curator.duplicate_cosine = value

    @property
    def field_cosine(self) -> float:
        """Each part of two lessons must embed this close for a merge (skillmem.curate.same_advice)."""
        return self.curator.field_cosine

    @field_cosine.setter
    def field_cosine(self, value: float) -> None:
        self.curator.field_cosine = value

    @property
    def untrusted_namespaces(self) -> frozenset[str]:
        """Namespaces whose new lessons and demonstrations are quarantined (read from the store)."""
        return store_untrusted(self.engine)

    def set_trust(self, namespace: str, trusted: bool, *, reason: str = "") -> None:
        """Mark a namespace trusted or untrusted in the store, for every process that opens it."""
        set_trust(self.engine, namespace, trusted, reason)

    def close(self) -> None:
        from .record import flush_steps

        flush_steps(self.engine)  # step_writes="background": queued steps are written, not dropped
        self.index.close()
        self.engine.dispose()
        self.read_engine.dispose()

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
        # The row EpisodeRow(**base, owner=..., meta=...) would dump, without building that table
        # model, written by one autocommitted INSERT on the recorder's kept connection (through
        # the pool: checkout, BEGIN IMMEDIATE, COMMIT; ~1.6 ms of the agent's thread on SQLite
        # here once its own work had taken the caches, ~55 us a step of a 30-step episode).
        values = base.model_dump()
        values.update(reflection_status=ReflectionStatus.pending.value, reflection_attempts=0,
                      reflection_error=None, owner=owner_tag(), updated_at=utcnow(), meta=meta or {})
        # An evaluation episode never feeds memory (DESIGN principle 6).
        if base.split in EVAL_SPLITS:
            values["reflection_status"] = ReflectionStatus.skipped.value
        episode_writer(self.engine).write(_plain(values))
        return EpisodeRecorder(self.engine, base, verifier, on_finished=self._on_episode_finished,
                               step_writes=self.step_writes)

    @contextlib.contextmanager
    def episode(self, task: str = "", **kwargs: Any) -> Iterator[EpisodeRecorder]:
        """`with memory.episode(task="...") as ep: ep.step(...)`; finished (or interrupted) on exit."""
        rec = self.start_episode(task=task, **kwargs)
        with rec:
            yield rec

    def set_outcome(self, episode_id: str, success: Optional[bool], *, source: str = "human") -> None:
        """Settle an episode's outcome after the fact (a person, a verifier run later)."""
        try:
            success = check_label(success)
            src = OutcomeSource(source)
        except (TypeError, ValueError) as exc:
            raise MalformedInput(f"outcome not settled: {exc}; the source must be one of environment, "
                                 "verifier, human") from None
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
        evaluative otherwise. `success=` also settles the outcome; `source` must then be a
        verified one (environment, verifier, human), else nothing is written.
        """
        try:
            success = check_label(success)
        except TypeError as exc:
            raise MalformedInput(f"malformed feedback, nothing written: {exc}") from None
        kind = kind or (FeedbackKind.directive.value if corrected_action else FeedbackKind.evaluative.value)
        if success is not None and source not in {s.value for s in OutcomeSource}:
            # Feedback from anyone may be recorded; only a verified source may label the episode.
            raise MalformedInput(f"feedback from source {source!r} cannot settle the outcome (success=); "
                                 "only environment, verifier or human can: record it without success= "
                                 "or give the verified source")
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
            self.set_outcome(episode_id, success, source=source)
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

    # ----------------------------------------------------------------- lessons and demonstrations

    @property
    def embedder(self) -> Any:
        """The memory's one embedder, loaded on first use (recording alone never imports torch)."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    from .embed import default_embedder
                    self._embedder = default_embedder()
        return self._embedder

    def add_lesson(self, lesson: LessonBase, *, namespace: Optional[str] = None,
                   episode_id: Optional[str] = None) -> tuple[int, str]:
        """Add a lesson, or fold it into the stored lesson that says the same thing:
        (id, "created"|"merged"|"repeated"|"skipped"); see :func:`skillmem.curate.add_item`."""
        return curate.add_item(self.curator, LESSON, lesson, namespace=namespace or self.namespace, episode_id=episode_id)

    def add_demonstration(self, demo: DemonstrationBase, *, namespace: Optional[str] = None,
                          episode_id: Optional[str] = None) -> tuple[int, str]:
        """Add a demonstration (near-duplicates add support to the existing one): (id, action)."""
        return curate.add_item(self.curator, DEMO, demo, namespace=namespace or self.namespace, episode_id=episode_id)

    def add_lessons_bulk(self, lessons: list[Any], *, namespace: Optional[str] = None, vectors: Any = None) -> list[int]:
        """Insert many lessons without deduplication (imports, benchmarks); `vectors` in the embedder's space."""
        return curate.add_bulk(self.curator, LESSON, lessons, namespace=namespace or self.namespace, vectors=vectors)

    def retrieve(self, goal: str = "", observation: str = "", *, namespace: Optional[str] = None,
                 task_type: Optional[str] = None, k: Optional[int] = None, token_budget: Optional[int] = None,
                 episode_id: Optional[str] = None, step_index: Optional[int] = None,
                 kinds: tuple[str, ...] = (LESSON, DEMO), record: bool = True, k_demos: Optional[int] = None,
                 config: Optional[RetrievalConfig] = None) -> Context:
        """The lessons (general and task-type, MMR-diverse, up to `k`) and demonstrations (up to
        `k_demos`) most relevant to the goal and observation, rendered within `token_budget` tokens;
        each chosen item is written to the retrievals table unless `record=False`.

        `config` (default: `memory.retrieval`, a :class:`RetrievalConfig`) holds every knob;
        `k`, `k_demos` and `token_budget` override it for this call.
        """
        ns = namespace or self.namespace
        kinds = tuple("demonstration" if x == "demo" else x for x in kinds)
        cfg = config or self.retrieval
        if k is not None or k_demos is not None or token_budget is not None:
            # One config per override seen: building a frozen dataclass costs more, at every
            # agent step, than the rest of retrieval's bookkeeping.
            key = (cfg, k, k_demos, token_budget)
            cached = self._configs.get(key)
            if cached is None:
                if len(self._configs) > 64:
                    self._configs.clear()
                cached = self._configs[key] = cfg.with_(k=k, k_demos=k_demos, token_budget=token_budget)
            cfg = cached
        if cfg.token_budget <= 0 or (cfg.k <= 0 and cfg.k_demos <= 0):
            return Context()
        self.index.refresh()  # no SQL unless memory changed here, or the last probe is over 50 ms old
        query = self.embedder.encode([query_text(goal, observation, cfg.max_query_chars)])
        ctx = build_context(self.index, query, namespace=ns, task_type=task_type or None, config=cfg, kinds=kinds)
        if record:
            record_retrievals(self.engine, ctx, namespace=ns, episode_id=episode_id, step_index=step_index)
        return ctx

    async def aretrieve(self, goal: str = "", observation: str = "", **options: Any) -> Context:
        """`retrieve` in a worker thread, so an async agent's event loop keeps running meanwhile."""
        import asyncio

        return await asyncio.to_thread(self.retrieve, goal, observation, **options)

    # `namespace=`: change the lesson only if it is in that namespace (the CLI always passes -n).

    def retire_lesson(self, lesson_id: int, reason: str = "", *, namespace: Optional[str] = None) -> LessonRow:
        """Stop retrieving a lesson; it stays in SQL and `restore_lesson` brings it back."""
        return curate.set_status(self.curator, LESSON, lesson_id, "retire", reason, namespace=namespace)

    def restore_lesson(self, lesson_id: int, reason: str = "", *, namespace: Optional[str] = None) -> LessonRow:
        """Make a retired lesson retrievable again."""
        return curate.set_status(self.curator, LESSON, lesson_id, "restore", reason, namespace=namespace)

    def approve_lesson(self, lesson_id: int, reason: str = "", *, namespace: Optional[str] = None) -> LessonRow:
        """Let a quarantined lesson (from an untrusted namespace) be retrieved."""
        return curate.set_status(self.curator, LESSON, lesson_id, "approve", reason, namespace=namespace)

    def edit_lesson(self, lesson_id: int, *, reason: str = "", namespace: Optional[str] = None,
                    **changes: Any) -> LessonRow:
        """Change a lesson's fields (trigger, fix, ...); its version goes up by one and it is re-embedded."""
        return curate.edit(self.curator, LESSON, lesson_id, changes, reason, namespace=namespace)

    def update_utility(self, namespace: Optional[str] = None, *, min_uses: int = MIN_USES) -> list[int]:
        """Retire lessons whose episodes reliably do worse than their task types without them; returns ids."""
        return curate.update_utility(self.curator, namespace or self.namespace, min_uses=min_uses)

    def lesson_utility(self, namespace: Optional[str] = None) -> dict[int, dict[str, Any]]:
        """The measured numbers `update_utility` decides on, per lesson id."""
        return curate.lesson_utility(self.curator, namespace or self.namespace)

    def lessons(self, namespace: Optional[str] = None, status: Optional[str] = None,
                task_type: Optional[str] = None) -> list[LessonRow]:
        """Lesson rows of a namespace, by id (all statuses unless `status`)."""
        return self._rows(LessonRow, namespace, status, task_type)

    def demonstrations(self, namespace: Optional[str] = None, status: Optional[str] = None,
                       task_type: Optional[str] = None) -> list[DemonstrationRow]:
        """Demonstration rows of a namespace, by id (all statuses unless `status`)."""
        return self._rows(DemonstrationRow, namespace, status, task_type)

    def _rows(self, model: Any, namespace: Optional[str], status: Optional[str], task_type: Optional[str]) -> list[Any]:
        t = model.__table__
        q = select(t).where(t.c.namespace == (namespace or self.namespace))
        if status:
            q = q.where(t.c.status == (status.value if hasattr(status, "value") else status))
        if task_type is not None:
            q = q.where(t.c.task_type == task_type)
        with self.read_engine.connect() as conn:
            return [model.model_validate(dict(r)) for r in conn.execute(q.order_by(t.c.id)).mappings()]

    def index_check(self) -> dict[str, Any]:
        """Compare the saved index with SQL (missing, extra, misplaced items; marks); changes nothing."""
        return self.index.check()

    def index_rebuild(self) -> dict[str, int]:
        """Rebuild the index from SQL (and cached vectors) and save it; returns items per kind."""
        return self.index.rebuild()


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Enum members to their values, for Core inserts."""
    return {k: (v.value if hasattr(v, "value") and not isinstance(v, (int, float)) else v) for k, v in values.items()}
