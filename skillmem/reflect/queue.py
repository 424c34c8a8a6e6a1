"""The durable reflection queue: episodes wait on `episodes.reflection_status`, are claimed, reflected, done.

    reflect_pending(memory, OfflineWriter())          # drain the queue once, with a progress bar
    ReflectionWorker(memory, writer).start()          # or drain in a thread while agents run

Each episode goes load -> analyse -> write -> check -> store (the same stages graphs/reflect.py
runs as a StateGraph). Guarantees:

* Resumable. An episode is claimed by writing the claimer's tag ("reflect:host:pid") in its
  `owner` column with a compare-and-set; a claim whose process is dead (same host) or that is
  older than `stale_after` is taken over. It is marked `done` only after its lesson or
  demonstration is stored.
* Idempotent. Before writing, the store is asked whether anything already came from this
  episode (a lesson_events row with its id, or its id in a lesson's or demonstration's
  source_episodes); if so it is just marked done. A process killed between storing and
  marking therefore neither loses nor duplicates anything.
* Honest labels. Episodes without a verified outcome (only the agent's own claim) and
  evaluation-split episodes are marked `skipped`, never reflected on.
* Failures stay queued. A writer error (endpoint down, invalid answers, an unsafe lesson) is
  recorded in `reflection_error`, the attempt counted, and the episode stays `pending`; after
  `max_attempts` it becomes `failed` (`skillmem reflect --retry-failed` puts it back).
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from sqlalchemy import text

from ..episode import EVAL_SPLITS, DemonstrationBase, ItemStatus, LessonBase, utcnow
from ..llm import LLMError
from ..store import _pid_alive, owner_tag
from .safety import SafetyConfig, UnsafeLesson, check_item
from .trace import Analysis, LazyPlans, Trace, analyse, load_trace, nearest_success, type_success_plans

log = logging.getLogger(__name__)

CLAIM_PREFIX = "reflect:"
MAX_ATTEMPTS = 3


@dataclass
class Job:
    """One episode travelling through the stages; what the graph's state holds too."""

    episode_id: str
    trace: Optional[Trace] = None
    skip_reason: Optional[str] = None
    analysis: Optional[Analysis] = None
    lesson: Optional[LessonBase] = None
    more: list[LessonBase] = field(default_factory=list)  # the failure's other mistakes, as lessons too
    demo: Optional[DemonstrationBase] = None
    result: dict[str, Any] = field(default_factory=dict)
    domain: Any = None  # the world's Domain; None: TextDomain


# --------------------------------------------------------------------------- stages


def stage_load(memory: Any, job: Job) -> Job:
    """Read the episode; decide whether it may be reflected on at all."""
    ep = memory.get_episode(job.episode_id)
    outcome = getattr(ep.outcome, "value", ep.outcome)
    if str(ep.split).strip().lower() in EVAL_SPLITS:  # rows written before split names were checked
        job.skip_reason = f"evaluation split {ep.split!r}: never written to memory"
    elif outcome not in ("success", "failure") or ep.outcome_source is None:
        job.skip_reason = "no verified outcome (the agent's own claim is not a label)"
    elif ep.num_steps == 0:
        job.skip_reason = "no steps recorded"
    if job.skip_reason is None:
        job.trace = load_trace(memory, job.episode_id, job.domain)
    return job


def stage_analyse(memory: Any, job: Job) -> Job:
    """A failure is analysed against its nearest success; a success needs no analysis."""
    if job.trace is not None and job.trace.outcome == "failure":
        job.analysis = analyse(job.trace, nearest_success(memory, job.trace, domain=job.domain), job.domain,
                               type_plans=LazyPlans(lambda: type_success_plans(memory, job.trace, domain=job.domain)))
    return job


def stage_write(writer: Any, job: Job) -> Job:
    """Failure -> lesson, success -> demonstration (writer errors propagate)."""
    if job.trace is None:
        return job
    if job.analysis is not None:
        job.lesson = writer.write_lesson(job.analysis)
        more = getattr(writer, "more_lessons", None)
        job.more = list(more(job.analysis, job.lesson)) if more is not None else []
    else:
        job.demo = writer.write_demo(job.trace)
    return job


def stage_check(memory: Any, job: Job, safety: Optional[SafetyConfig] = None) -> Job:
    """Safety checks again (whatever the writer), and quarantine for untrusted namespaces."""
    untrusted = job.trace is not None and job.trace.namespace in getattr(memory, "untrusted_namespaces", ())
    if job.lesson is not None:
        job.lesson = check_item("lesson", job.lesson, safety)
        if untrusted:
            job.lesson.status = ItemStatus.quarantined
    checked = []
    for x in job.more:  # an extra lesson that fails the checks is left out; the main one decides the episode
        try:
            checked.append(check_item("lesson", x, safety))
        except UnsafeLesson as exc:
            log.info("an extra lesson of episode %s was left out: %s", job.episode_id, exc)
    job.more = checked
    for x in job.more if untrusted else ():
        x.status = ItemStatus.quarantined
    if job.demo is not None:
        job.demo = check_item("demonstration", job.demo, safety)
    return job


def stage_store(memory: Any, job: Job) -> Job:
    """Store the lesson or demonstration (unless this episode already gave one) and mark the episode done."""
    ns = job.trace.namespace if job.trace else None
    if job.skip_reason is not None:
        _finish(memory, job.episode_id, "skipped", job.skip_reason)
        job.result = {"status": "skipped", "reason": job.skip_reason}
        return job
    if already_stored(memory, job.episode_id):
        job.result = {"status": "done", "action": "already stored"}
    elif job.analysis is not None and job.lesson is None:
        # The writer found no mistake it can name: say why, so `skillmem reflect` can report it.
        a = job.analysis
        why = (f"no failure signal: the pivot fell back to {a.pivot.reason!r} (no error, correction, loop or "
               f"success to contrast with)") if a.pivot.reason in ("last_step", "none") else \
            f"the writer found no rule at the pivot ({a.pivot.reason})"
        job.result = {"status": "done", "kind": "none", "action": "no lesson", "reason": why}
    elif job.lesson is not None:
        item_id, action = _store_lesson(memory, job.lesson, namespace=ns, episode_id=job.episode_id)
        job.result = {"status": "done", "kind": "lesson", "id": item_id, "action": action}
        # Its other mistakes after the main one: a crash between them loses the rest, never duplicates
        # (the episode counts as stored once its first lesson is).
        more = [_store_lesson(memory, x, namespace=ns, episode_id=job.episode_id) for x in job.more]
        if more:
            job.result["more"] = [{"id": i, "action": a} for i, a in more]
    elif job.demo is not None:
        item_id, action = _store_demo(memory, job.demo, namespace=ns, episode_id=job.episode_id)
        job.result = {"status": "done", "kind": "demonstration", "id": item_id, "action": action}
    _finish(memory, job.episode_id, "done", None)
    return job


def reflect_episode(memory: Any, writer: Any, episode_id: str, domain: Any = None) -> dict[str, Any]:
    """Run every stage for one (claimed) episode; returns what happened. Writer errors propagate.

    `domain` says what the world is (step kinds, failures, slots, situations); the default is
    `TextDomain`, right for any agent whose actions are strings or tool calls.
    """
    job = stage_load(memory, Job(episode_id, domain=domain if domain is not None else getattr(writer, "domain", None)))
    if job.skip_reason is None and already_stored(memory, episode_id):
        return stage_store(memory, job).result  # a crash after storing: only the mark was missing
    job = stage_analyse(memory, job)
    job = stage_write(writer, job)
    job = stage_check(memory, job, getattr(writer, "safety", None))
    return stage_store(memory, job).result


# --------------------------------------------------------------------------- storing
#
# Through the memory's add_lesson / add_demonstration: dedupe, merge, audit and index.


def _store_lesson(memory: Any, lesson: LessonBase, *, namespace: Optional[str], episode_id: str) -> tuple[int, str]:
    return memory.add_lesson(lesson, namespace=namespace, episode_id=episode_id)


def _store_demo(memory: Any, demo: DemonstrationBase, *, namespace: Optional[str], episode_id: str) -> tuple[int, str]:
    return memory.add_demonstration(demo, namespace=namespace, episode_id=episode_id)


def already_stored(memory: Any, episode_id: str) -> bool:
    """Did this episode already give a lesson or demonstration (created or merged)?"""
    like = f'%"{episode_id}"%'
    sql = ("SELECT 1 FROM lesson_events WHERE episode_id = :id AND action IN ('create', 'merge') "
           "UNION ALL SELECT 1 FROM lessons WHERE CAST(source_episodes AS TEXT) LIKE :like "
           "UNION ALL SELECT 1 FROM demonstrations WHERE CAST(source_episodes AS TEXT) LIKE :like")
    with memory.engine.connect() as conn:
        return conn.execute(text(f"SELECT 1 FROM ({sql}) AS hits LIMIT 1"), {"id": episode_id, "like": like}).first() \
            is not None


# --------------------------------------------------------------------------- claims


def _claim_alive(owner: str, updated: Any, stale_after: timedelta) -> bool:
    host, _, rest = owner[len(CLAIM_PREFIX):].partition(":")
    pid = rest.split(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        return _pid_alive(int(pid))
    if isinstance(updated, str):
        updated = datetime.fromisoformat(updated)
    if updated is not None and updated.tzinfo is None:
        updated = updated.replace(tzinfo=timezone.utc)
    return updated is not None and utcnow() - updated < stale_after


def claim_next(memory: Any, me: str, *, namespace: Optional[str] = None, stale_after: timedelta = timedelta(minutes=10),
               max_attempts: int = MAX_ATTEMPTS, exclude: frozenset[str] = frozenset()) -> Optional[str]:
    """Claim one pending, finished episode for `me`; its id, or None when the queue is empty.

    `namespace="*"` claims from every namespace.
    """
    where = "reflection_status = 'pending' AND status != 'running'"
    params: dict[str, Any] = {}
    if namespace != "*":
        where += " AND namespace = :ns"
        params["ns"] = namespace or memory.namespace
    with memory.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, owner, updated_at, reflection_attempts FROM episodes WHERE {where} "
                                 "ORDER BY started_at, id LIMIT 200"), params).fetchall()
    for ep_id, owner, updated, attempts in rows:
        if ep_id not in exclude and _try_claim(memory, me, ep_id, owner or "", updated, attempts or 0,
                                               stale_after, max_attempts):
            return ep_id
    return None


def claim_episode(memory: Any, me: str, episode_id: str, *, stale_after: timedelta = timedelta(minutes=10),
                  max_attempts: int = MAX_ATTEMPTS) -> bool:
    """Claim one named episode for `me`; False if it is not pending or someone alive holds it."""
    with memory.engine.connect() as conn:
        row = conn.execute(text("SELECT owner, updated_at, reflection_attempts FROM episodes WHERE id = :id "
                                "AND reflection_status = 'pending' AND status != 'running'"),
                           {"id": episode_id}).first()
    return row is not None and _try_claim(memory, me, episode_id, row[0] or "", row[1], row[2] or 0,
                                          stale_after, max_attempts)


def _try_claim(memory: Any, me: str, ep_id: str, owner: str, updated: Any, attempts: int,
               stale_after: timedelta, max_attempts: int) -> bool:
    if owner.startswith(CLAIM_PREFIX) and owner != me and _claim_alive(owner, updated, stale_after):
        return False
    if attempts >= max_attempts:
        _finish(memory, ep_id, "failed", f"gave up after {attempts} attempts; "
                                         "rerun with skillmem reflect --retry-failed", only_if_owner=owner)
        return False
    # Compare-and-set on the owner: of two claimers that saw the same owner, one wins.
    with memory.engine.begin() as conn:
        won = conn.execute(text(
            "UPDATE episodes SET owner = :me, updated_at = :now, reflection_attempts = reflection_attempts + 1 "
            "WHERE id = :id AND reflection_status = 'pending' AND owner = :old"),
            {"me": me, "now": utcnow(), "id": ep_id, "old": owner}).rowcount
    return won == 1


def _finish(memory: Any, episode_id: str, status: str, error: Optional[str], *, only_if_owner: Optional[str] = None) -> None:
    sql = ("UPDATE episodes SET reflection_status = :s, reflection_error = :e, owner = '', updated_at = :now "
           "WHERE id = :id")
    params: dict[str, Any] = {"s": status, "e": error, "now": utcnow(), "id": episode_id}
    if only_if_owner is not None:
        sql += " AND owner = :o"
        params["o"] = only_if_owner
    with memory.engine.begin() as conn:
        conn.execute(text(sql), params)


def _give_up_for_now(memory: Any, episode_id: str, me: str, error: str, max_attempts: int) -> None:
    """Record the error and release the claim; the episode stays pending until attempts run out."""
    with memory.engine.begin() as conn:
        # Two plain assignments: PostgreSQL will not put a CASE's text into the enum column.
        conn.execute(text("UPDATE episodes SET reflection_status = 'failed' WHERE id = :id AND owner = :me "
                          "AND reflection_attempts >= :max"), {"max": max_attempts, "id": episode_id, "me": me})
        conn.execute(text("UPDATE episodes SET reflection_error = :e, owner = '', updated_at = :now "
                          "WHERE id = :id AND owner = :me"),
                     {"e": error[:4000], "now": utcnow(), "id": episode_id, "me": me})


def retry_failed(memory: Any, namespace: Optional[str] = None) -> int:
    """Put every `failed` episode back in the queue with fresh attempts; returns how many."""
    with memory.engine.begin() as conn:
        return conn.execute(text(
            "UPDATE episodes SET reflection_status = 'pending', reflection_attempts = 0 "
            "WHERE reflection_status = 'failed' AND namespace = :ns"), {"ns": namespace or memory.namespace}).rowcount


def pending_count(memory: Any, namespace: Optional[str] = None) -> int:
    where, params = "reflection_status = 'pending' AND status != 'running'", {}
    if namespace != "*":
        where += " AND namespace = :ns"
        params["ns"] = namespace or memory.namespace
    with memory.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM episodes WHERE {where}"), params).scalar() or 0)


# --------------------------------------------------------------------------- draining


@dataclass
class DrainReport:
    """What one drain did, by outcome."""

    done: int = 0
    skipped: int = 0
    errors: int = 0
    lessons: int = 0
    demonstrations: int = 0
    more_lessons: int = 0  # lessons beyond each failure's first: the other mistakes it showed
    no_lesson: int = 0  # failures that gave no lesson (each with its reason in `no_lesson_reasons`)
    no_lesson_reasons: dict[str, int] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)


def reflect_pending(memory: Any, writer: Any = None, namespace: Optional[str] = None, limit: Optional[int] = None,
                    progress: bool = True, *, stale_after: timedelta = timedelta(minutes=10),
                    max_attempts: int = MAX_ATTEMPTS, owner: Optional[str] = None, domain: Any = None) -> DrainReport:
    """Drain the reflection queue: claim, reflect and mark episodes until none is left (or `limit`)."""
    from tqdm.auto import tqdm

    from .writers import default_writer

    writer = writer if writer is not None else default_writer()
    # host:pid is what liveness checks read; the thread id keeps two threads' claims apart.
    me = owner or f"{CLAIM_PREFIX}{owner_tag()}:{threading.get_ident()}"
    total = pending_count(memory, namespace)
    bar = tqdm(total=min(total, limit) if limit else total, desc="reflect", unit="episode", disable=not progress)
    report = DrainReport()
    tried: set[str] = set()
    try:
        while limit is None or len(tried) < limit:
            ep_id = claim_next(memory, me, namespace=namespace, stale_after=stale_after, max_attempts=max_attempts,
                               exclude=frozenset(tried))
            if ep_id is None:
                break
            tried.add(ep_id)  # an episode that failed now is not retried in the same drain
            try:
                result = reflect_episode(memory, writer, ep_id, domain)
            except (LLMError, UnsafeLesson, ValueError) as exc:
                msg = f"{type(exc).__name__}: {exc}"
                log.warning("reflection of episode %s failed, it stays queued: %s", ep_id, msg)
                _give_up_for_now(memory, ep_id, me, msg, max_attempts)
                result = {"status": "error", "error": msg}
                report.errors += 1
            else:
                if result["status"] == "skipped":
                    report.skipped += 1
                else:
                    report.done += 1
                    report.lessons += result.get("kind") == "lesson"
                    report.more_lessons += len(result.get("more", ()))
                    report.no_lesson += result.get("kind") == "none"
                    if result.get("kind") == "none":
                        why = result.get("reason", "")
                        report.no_lesson_reasons[why] = report.no_lesson_reasons.get(why, 0) + 1
                    report.demonstrations += result.get("kind") == "demonstration"
            report.results.append({"episode_id": ep_id, **result})
            bar.update(1)
            bar.set_postfix(lessons=report.lessons, demos=report.demonstrations, errors=report.errors)
    finally:
        bar.close()
    return report


class ReflectionWorker:
    """Drains the queue in a background thread while agents run; woken by each finished episode."""

    def __init__(self, memory: Any, writer: Any = None, *, namespace: Optional[str] = None, poll: float = 5.0,
                 domain: Any = None):
        from .writers import default_writer

        self.memory = memory
        self.domain = domain
        self.writer = writer if writer is not None else default_writer()
        self.namespace = namespace
        self.poll = poll
        self.reports: list[DrainReport] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def notify(self, episode_id: str = "") -> None:
        """Hooked into memory.on_episode_finished: there is work."""
        self._wake.set()

    def start(self) -> "ReflectionWorker":
        self.memory.on_episode_finished(self.notify)
        self._thread = threading.Thread(target=self._run, name="skillmem-reflect", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        try:
            report = reflect_pending(self.memory, self.writer, self.namespace, progress=False, domain=self.domain)
            if report.results:
                self.reports.append(report)
        except Exception:  # the worker must outlive a bad episode or a database hiccup
            log.exception("background reflection failed; retrying at the next episode")

    def stop(self, *, drain: bool = True, timeout: Optional[float] = None) -> None:
        """Stop the thread; with `drain`, reflect what is still queued first."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if drain:
            self._drain()

    def __enter__(self) -> "ReflectionWorker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------- approval


def approve_lesson(memory: Any, lesson_id: int, reason: str = "") -> None:
    """Release a quarantined lesson into retrieval (status active), with an 'approve' audit event.

    The memory's own approve_lesson (which also updates its index) is used when it has one.
    """
    from sqlalchemy import insert

    if hasattr(memory, "approve_lesson"):
        memory.approve_lesson(lesson_id, reason=reason)
        return

    from ..store import LessonEventRow

    with memory.engine.begin() as conn:
        row = conn.execute(text("SELECT namespace, status, version FROM lessons WHERE id = :id"),
                           {"id": lesson_id}).first()
        if row is None:
            raise KeyError(f"no lesson {lesson_id}; list them with `skillmem lessons --status quarantined`")
        ns, status, version = row
        if status != ItemStatus.quarantined.value:
            raise ValueError(f"lesson {lesson_id} is {status}, not quarantined; only quarantined lessons are approved "
                             "(use `skillmem lessons restore` for retired ones)")
        conn.execute(text("UPDATE lessons SET status = 'active', version = :v, updated_at = :now WHERE id = :id"),
                     {"v": version + 1, "now": utcnow(), "id": lesson_id})
        conn.execute(insert(LessonEventRow.__table__), {
            "namespace": ns, "item_kind": "lesson", "item_id": lesson_id, "action": "approve",
            "before": {"status": status, "version": version}, "after": {"status": "active", "version": version + 1},
            "reason": reason or "approved", "episode_id": None, "created_at": utcnow()})
