"""Episode recording: the recorder behind `memory.episode(...)` and `wrap(agent, memory)`.

Steps are written as they happen, one autocommitted INSERT each (see `_StepWriter`), so a process killed
mid-episode loses at most the step in flight; its episode reads `interrupted` afterwards
(see :func:`skillmem.store.reap_interrupted`).

`SkillMemory(step_writes="background")` takes the INSERT off the agent's step: `step()`
validates the step and queues it, one writer thread per engine writes what is queued in
order, several steps in one INSERT (when `BATCH` have gathered, or within `LINGER` = 0.1 s
of a step being queued), and `finish()`, `interrupt()` and the interpreter's exit wait until it is
written. A process killed with kill -9 then loses at most the steps not yet written: never
more than `MAX_PENDING` (32) queued or being written (a full queue makes `step()` wait),
besides the step in flight that any mode loses; in practice the last 0.1 s of steps. A
write that fails in the background is raised by the same episode's next `step()` or its
`finish()`; other episodes sharing the writer are not disturbed (a batch that fails is
written again step by step), and `finish()` waits only for the steps queued before it,
never for steps other threads keep adding. The mode and its bound are the same on SQLite and
PostgreSQL (the writer thread commits each batch; `step()` returns before the server has
acknowledged the step, which takes the commit's round trip off the agent's step);
both bounds are tested exactly, with the writer held by a lock and the process killed -9
(tests/test_record.py).
"""

from __future__ import annotations

import atexit
import inspect
import math
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from pydantic import ValidationError
from sqlalchemy import Integer, event, insert, text, update
from sqlalchemy.exc import DBAPIError

from .episode import MAX_TEXT_CHARS, EpisodeBase, Outcome, OutcomeSource, Status, StepBase, check_label, utcnow
from .store import EpisodeRow, StepRow, keep_inherited

if TYPE_CHECKING:
    from .memory import SkillMemory

Verifier = Callable[..., Optional[bool]]

STEP_WRITES = ("sync", "background")
# step_writes="background": steps queued or being written, at most: the kill -9 loss bound
# (besides the step in flight, which the default loses too).
MAX_PENDING = 32
# The background writer writes when this many steps have gathered, or this long after it
# last wrote, whichever comes first (and at once on finish(), close() and exit).
BATCH = 16
LINGER = 0.1


class MalformedInput(ValueError):
    """A step, feedback or episode that does not fit the data model; nothing was written."""


def _label(value: Any, what: str) -> Optional[bool]:
    try:
        return check_label(value, what)
    except TypeError as exc:
        raise MalformedInput(f"{exc}; the episode stays open") from None


_STEP_VALIDATOR = StepBase.__pydantic_validator__


def _validated_step(fields: Mapping[str, Any]) -> StepBase:
    try:
        # StepBase.model_validate without SQLModel's wrapper, which for a model that is no
        # table only copies an empty __dict__ around pydantic's own call: at every recorded
        # step it was a third of the validation's time (~40 us of 120 after the agent's wait).
        step = StepBase.__new__(StepBase)
        _STEP_VALIDATOR.validate_python(dict(fields), self_instance=step)
        return step
    except (ValidationError, TypeError) as exc:
        raise MalformedInput(f"malformed step, nothing written: {exc}") from exc


_TEXT_FIELDS = ("observation", "action", "feedback")
_COUNT_FIELDS = ("prompt_tokens", "completion_tokens", "context_tokens", "call_group")
_STEP_FIELDS = tuple(StepBase.model_fields)


def _plain_text(v: Any, limit: int = MAX_TEXT_CHARS) -> bool:
    # clean_text's own test for "nothing to repair": the value is stored as it is.
    return type(v) is str and v.isascii() and len(v) <= limit and "\x00" not in v


def _plain_number(v: Any) -> bool:
    # An int past 2**53 goes to the model (math.isfinite would overflow on 10**400; review R9).
    return (type(v) is float and math.isfinite(v)) or (type(v) is int and -2**53 < v < 2**53)


def _step_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`_validated_step(fields).model_dump()`: a step's stored values, or MalformedInput.

    A step of plain values (ASCII text with nothing to repair, finite numbers, counts, a
    list of plain commands; the common case at every recorded step) is checked here by the
    model's rules and dumped as the model dumps it; anything else (bytes, long or non-ASCII
    text, a tool's arguments, a value to refuse) goes through the model itself. Through
    the model a step cost ~100 us of the agent's thread, ~40 of them the dump, once the
    agent's own work had taken the caches (tests/test_record.py checks both give the same).
    """
    values: dict[str, Any] = dict.fromkeys(_STEP_FIELDS)
    values.update(observation="", action="", feedback="", reward=0.0)
    for key, v in fields.items():
        if key in _TEXT_FIELDS:
            if not _plain_text(v):
                break
        elif key == "index" or key in _COUNT_FIELDS:
            if v is not None and not (type(v) is int and v >= 0):
                break
        elif key == "reward":
            if not _plain_number(v):
                break
            v = float(v)
        elif key == "latency_ms":
            if v is not None:
                if not _plain_number(v):
                    break
                v = float(v)
        elif key == "error":
            if v is not None and not _plain_text(v):
                break
        elif key == "admissible":
            if v is not None:
                if type(v) is not list or not all(_plain_text(a, 2_000) for a in v):
                    break
                v = list(v)
        elif key == "tool_call_id":
            if v is not None and not (type(v) is str and len(v) <= 200):
                break
        else:  # tool_args (any JSON: the model's own dump), or a field the model does not have
            break
        values[key] = v
    else:
        if type(values["index"]) is int:
            return values
    return _validated_step(fields).model_dump()


def _call_verifier(verifier: Verifier, rec: "EpisodeRecorder", kwargs: dict[str, Any]) -> Optional[bool]:
    """Call `verifier(rec, **kwargs)`, leaving out keywords it does not take (e.g. `state=`)."""
    try:
        params = inspect.signature(verifier).parameters
    except (TypeError, ValueError):
        return verifier(rec, **kwargs)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return verifier(rec, **kwargs)


class _PendingSteps:
    """The background writer's queue: steps wait here and are written together (one INSERT,
    one round trip, one commit) when `BATCH` have gathered, a flush asks, or `LINGER`
    seconds have passed.

    A `queue.Queue` woke the writer thread at every step, and the woken thread needs the
    GIL: an agent computing in Python lost it twice a step (once for the thread to take
    the step, once for the database's answer), each time for the thread's work and the
    wait to be scheduled back, ~1 ms a step on PostgreSQL here. Now a step is appended
    under a lock nobody waits on, and the writer wakes once a batch. At most MAX_PENDING
    steps are ever queued or being written together (`put` waits while there are): the
    kill -9 loss bound.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._items: list[tuple[Any, Any]] = []
        self._writing = 0  # steps taken by the writer and not yet written
        self._cond = threading.Condition(threading.Lock())
        self._queued = threading.Event()  # set when the queue stops being empty
        self._wake = threading.Event()  # set when the writer should not linger

    def put(self, token: Any, item: Any, *, now: bool = False) -> None:
        """Queue a step (its values, or its row of parameters) or a flush marker (`now`: written at once)."""
        with self._cond:
            if not now:
                while len(self._items) + self._writing >= MAX_PENDING:
                    self._wake.set()
                    self._cond.wait()
            first = not self._items
            self._items.append((token, item))
            full = now or len(self._items) >= BATCH
        if full:
            self._wake.set()
        if first:
            self._queued.set()

    def take(self) -> list[tuple[Any, Any]]:
        """The writer thread: wait until something is queued, then for a batch or LINGER
        seconds, and take what is queued (an idle writer sleeps: no timer wakes it)."""
        while True:
            self._queued.wait()
            self._wake.wait(LINGER)
            self._wake.clear()
            with self._cond:
                self._queued.clear()
                if self._items:
                    items, self._items = self._items, []
                    self._writing = sum(1 for _, item in items if not isinstance(item, threading.Event))
                    return items

    def done(self) -> None:
        with self._cond:
            self._writing = 0
            self._cond.notify_all()


class _StepWriter:
    """Writes step rows on one DBAPI connection it keeps, one autocommitted INSERT each.

    A step through the pool cost ~0.15 ms on SQLite and ~0.25 ms on PostgreSQL above the
    database's own work: checkout (and on PostgreSQL the pool's pre-ping, a second round
    trip), the transaction's BEGIN/COMMIT, SQLAlchemy's per-statement machinery. Here the
    statement is compiled once (with the same type processing: JSON, datetimes) and each
    step is one execute that commits by itself, so the kill -9 promise is unchanged: a step
    is durable before `step()` returns. One writer per engine, shared by its recorders
    under a lock; closed when the engine is disposed.
    """

    def __init__(self, engine: Any, table: Any = None):
        self.engine = engine
        table = StepRow.__table__ if table is None else table
        # Every column but an integer key the database numbers itself (a text id is written).
        self.columns = [c.name for c in table.columns
                        if not (c.primary_key and isinstance(c.type, Integer))]
        compiled = insert(table).compile(dialect=engine.dialect, column_keys=self.columns)
        self.sql = compiled.string
        self._many: dict[int, str] = {}  # rows -> one INSERT with that many VALUES tuples
        self.positional = compiled.positiontup is not None
        self.order = list(compiled.positiontup or self.columns)
        processors = compiled._bind_processors  # SQLAlchemy's own conversions, per bind name
        self.processors = [(name, processors[name]) for name in self.order if name in processors]
        self.postgres = engine.dialect.name == "postgresql"
        self._conn: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pending: Optional[_PendingSteps] = None  # background mode: steps to write, in order
        self.background = False  # write_many queues (see there)
        # A background write's failure, kept for the recorder (its token) whose step it was and
        # raised by that recorder's next step or flush, never another episode's.
        self._errors: dict[Any, BaseException] = {}
        _all_writers.add(self)

    def after_fork(self) -> None:
        """In a forked child: the parent's lock may be held by a thread that does not exist here,
        and its queue, writer thread, errors and connection are the parent's."""
        self._lock = threading.Lock()
        self._pending, self._errors = None, {}
        keep_inherited(self._conn)  # the parent's session: never closed, reset or used here
        self._conn, self._pid = None, os.getpid()

    def submit(self, values: dict[str, Any], background: bool, token: Any = None) -> None:
        """Write `values` now, or queue it for the writer thread (waiting while the queue is full).

        `token` names the recorder whose step this is: a failed background write is raised
        to it alone (`raise_failure(token)`)."""
        if not background:
            self.write(values)
            return
        self.raise_failure(token)
        if values.get("tool_args") is not None:  # any object: its JSON may fail, and step() says so
            params = self._params(values)
            self._steps().put(token, [params[n] for n in self.order])
        else:
            # Converted by the writer thread, a batch at a time: in the agent's thread, after its
            # own work had taken the caches, the conversion (JSON, datetime) cost ~60 us a step,
            # several times what it costs for the batch's rows one after the other.
            self._steps().put(token, values)

    def _steps(self) -> "_PendingSteps":
        pending = self._pending
        if pending is None or pending.pid != os.getpid():
            with self._lock:
                if self._pending is None or self._pending.pid != os.getpid():  # none yet, or a forked child's
                    self._pending = _PendingSteps()
                    threading.Thread(target=self._drain, args=(self._pending,), daemon=True,
                                     name="skillmem-step-writer").start()
                    _background_writers.add(self)
                    _flush_at_multiprocessing_exit()
                pending = self._pending
        return pending

    def _drain(self, pending: "_PendingSteps") -> None:
        while True:
            batch = pending.take()
            try:
                rows: list[tuple[Any, list[Any]]] = []
                for token, item in batch + [(None, None)]:
                    if isinstance(item, dict):
                        try:
                            params = self._params(item)
                        except Exception as exc:  # noqa: BLE001 - handed to the recording thread, not lost
                            self._errors.setdefault(token, exc)
                            continue
                        item = [params[n] for n in self.order]
                    if isinstance(item, list):
                        rows.append((token, item))
                        continue
                    if rows:  # the steps before a marker (or the batch's end), in one statement
                        self._write_rows(rows)
                        rows = []
                    if isinstance(item, threading.Event):  # a flush marker: everything before it is written
                        item.set()
            finally:
                pending.done()

    def _write_rows(self, rows: list[tuple[Any, list[Any]]]) -> None:
        """Steps of any episodes in one INSERT; if it fails, one by one, so that a bad step's
        error goes to its own episode alone and the others are written."""
        try:
            self._execute(self._many_sql(len(rows)), [a for _, row in rows for a in row])
            return
        except BaseException as exc:  # noqa: BLE001 - retried row by row below
            if len(rows) == 1:
                self._errors.setdefault(rows[0][0], exc)
                return
        for token, row in rows:
            try:
                self._execute(self._many_sql(1), row)
            except BaseException as exc:  # noqa: BLE001 - handed to the recording thread, not lost
                self._errors.setdefault(token, exc)

    def flush(self, token: Any = None, *, raise_failure: bool = True) -> None:
        """Wait until the steps queued so far are written; raise `token`'s failed write, if any.

        Waits on a marker queued behind them, not for the queue to empty: threads that keep
        stepping (a LangGraph batch) cannot hold a finishing episode up."""
        pending = self._pending
        if pending is not None and pending.pid == os.getpid():
            done = threading.Event()
            pending.put(None, done, now=True)
            done.wait()
        if raise_failure:
            self.raise_failure(token)

    def raise_failure(self, token: Any = None) -> None:
        exc = self._errors.pop(token, None)
        if exc is not None:
            what = "a retrieval's rows" if isinstance(token, tuple) else "a step"
            raise RuntimeError(f"skillmem: {what} could not be written in the background: {exc}") from exc

    def _open(self) -> Any:
        raw = self.engine.raw_connection()  # the store's connect-time settings (SQLite pragmas) apply
        driver = raw.driver_connection
        if self.postgres:
            driver.autocommit = True
        else:
            driver.isolation_level = None  # each statement its own transaction (no BEGIN IMMEDIATE)
        return raw

    def _params(self, values: dict[str, Any]) -> dict[str, Any]:
        params = {name: values.get(name) for name in self.order}
        for name, process in self.processors:  # as SQLAlchemy does: every value, None too
            params[name] = process(params[name])
        return params

    def write_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert `rows` in one statement (one round trip, one transaction): all or none.

        A writer set to `background` (the retrievals' writer of a memory opened with
        step_writes="background") queues them for its thread instead, as steps are: written
        with what else is queued, kill -9 losing at most MAX_PENDING rows; a failed write is
        raised by the same episode's next call. Queued, one call's rows may be written in two
        batches, and kill -9 may keep a prefix of them."""
        if self.background:
            # A failure is kept for the episode whose retrieval it was and raised by its next
            # retrieval (review R11): never to another episode's call.
            token = ("retrieval", rows[0].get("episode_id")) if rows else None
            for values in rows:
                self.submit(values, True, token)
            return
        if len(rows) * len(self.order) > 900:  # under SQLite's bound-parameter limit on old builds
            half = len(rows) // 2
            self.write_many(rows[:half])
            self.write_many(rows[half:])
            return
        args: list[Any] = []
        for values in rows:
            params = self._params(values)
            args.extend(params[n] for n in self.order)
        self._execute(self._many_sql(len(rows)), args)

    def _many_sql(self, n: int) -> str:
        """The INSERT of `n` rows, positional parameters row after row."""
        sql = self._many.get(n)
        if sql is None:
            mark = "%s" if self.postgres else "?"
            one = "(" + ", ".join([mark] * len(self.order)) + ")"
            sql = self._many[n] = self.sql.split(" VALUES ", 1)[0] + " VALUES " + ", ".join([one] * n)
        return sql

    def write(self, values: dict[str, Any]) -> None:
        params = self._params(values)
        self._execute(self.sql, [params[n] for n in self.order] if self.positional else params)

    def _execute(self, sql: str, args: Any) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's connection is not ours to use
                self._conn, self._pid = None, os.getpid()
            for attempt in (0, 1):
                if self._conn is None:
                    self._conn = self._open()
                cur = self._conn.driver_connection.cursor()
                try:
                    if self.postgres:
                        cur.execute(sql, args, prepare=True)
                    else:
                        cur.execute(sql, args)
                    return
                except self.engine.dialect.loaded_dbapi.Error as exc:
                    integrity = isinstance(exc, self.engine.dialect.loaded_dbapi.IntegrityError)
                    if integrity or attempt:
                        raise DBAPIError.instance(sql, args, exc, self.engine.dialect.loaded_dbapi.Error) \
                            from exc
                    self._close_locked()  # a dropped connection (server restart): one fresh try
                finally:
                    try:
                        cur.close()
                    except Exception:  # noqa: BLE001 - the cursor of a broken connection
                        pass

    def close_connection(self) -> None:
        if self._conn is None or self._pid != os.getpid():  # a forked child's: the parent's (after_fork)
            return
        with self._lock:  # never under the writer thread's statement
            self._close_locked()

    def _close_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate() if self.postgres else self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass
            self._conn = None


_writers: "weakref.WeakKeyDictionary[Any, _StepWriter]" = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()
_background_writers: "weakref.WeakSet[_StepWriter]" = weakref.WeakSet()
_all_writers: "weakref.WeakSet[_StepWriter]" = weakref.WeakSet()


def _reset_writers_in_child() -> None:
    global _writers_lock
    _writers_lock = threading.Lock()
    for writer in list(_all_writers):
        writer.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_writers_in_child)


@atexit.register
def _flush_at_exit() -> None:
    # A normal exit loses no queued step (the writer threads are daemons: they would just stop).
    for writer in list(_background_writers):
        try:
            writer.flush()
        except Exception:  # noqa: BLE001 - at exit there is no caller left to raise to
            pass


_mp_exit_pid = [0]  # the process whose multiprocessing exit flushes the writers


def _flush_at_multiprocessing_exit() -> None:
    # A multiprocessing child started by fork (Linux's default) ends with os._exit: atexit never
    # runs there, multiprocessing's exit finalizers do (its registry starts empty in each child).
    util = sys.modules.get("multiprocessing.util")
    if util is None or _mp_exit_pid[0] == os.getpid():
        return
    _mp_exit_pid[0] = os.getpid()
    util.Finalize(None, _flush_at_exit, exitpriority=10)


_row_writers: "weakref.WeakKeyDictionary[Any, _StepWriter]" = weakref.WeakKeyDictionary()
_episode_writers: "weakref.WeakKeyDictionary[Any, _StepWriter]" = weakref.WeakKeyDictionary()


def flush_steps(engine: Any) -> None:
    """Wait until the background steps queued on `engine` so far are written (before it closes)."""
    for writer in (_writers.get(engine), _row_writers.get(engine)):
        if writer is not None:
            writer.flush()


def flush_retrievals(engine: Any) -> None:
    """Wait until the retrieval rows queued on `engine` so far are written (their failure is
    raised by the next retrieval, not here)."""
    writer = _row_writers.get(engine)
    if writer is not None:
        writer.flush(raise_failure=False)


def _kept_writer(writers: "weakref.WeakKeyDictionary[Any, _StepWriter]", engine: Any, table: Any = None) -> _StepWriter:
    """`engine`'s one writer of `table` (steps by default), its connection closed with the engine."""
    with _writers_lock:
        writer = writers.get(engine)
        if writer is None:
            writer = writers[engine] = _StepWriter(engine, table)
            event.listen(engine, "engine_disposed", lambda _engine: writer.close_connection())
        return writer


def _step_writer(engine: Any) -> _StepWriter:
    return _kept_writer(_writers, engine)


def retrieval_writer(engine: Any) -> _StepWriter:
    """The kept-connection writer of the `retrievals` table: a retrieval's rows in one
    autocommitted multi-row INSERT (through the pool it was BEGIN, INSERT, COMMIT and on
    PostgreSQL the pool's pre-ping: ~1 ms an agent step on SQLite here)."""
    from .store import RetrievalRow

    return _kept_writer(_row_writers, engine, RetrievalRow.__table__)


def episode_writer(engine: Any) -> _StepWriter:
    """The kept-connection writer of the `episodes` table: a new episode's row in one
    autocommitted INSERT, durable before `start_episode` returns, as through the pool."""
    return _kept_writer(_episode_writers, engine, EpisodeRow.__table__)


class EpisodeRecorder:
    """Records one episode: `step(...)` per action, then `finish(...)` with a verified outcome."""

    def __init__(self, engine: Any, row: EpisodeBase, verifier: Optional[Verifier] = None, *,
                 on_finished: Optional[Callable[[str], None]] = None, step_writes: str = "sync"):
        # Writes go to `engine` alone; `on_finished(episode_id)` runs once the outcome is
        # committed (the memory's episode-finished hooks), so the recorder never needs the façade.
        self.engine = engine
        self._on_finished = on_finished
        self.id = row.id
        self.namespace = row.namespace
        self.task_type = row.task_type
        self.goal = row.goal
        self.split = row.split
        self.verifier = verifier
        self.num_steps = 0
        self.total_reward = 0.0
        self.done = False
        self.last_reward = 0.0
        if step_writes not in STEP_WRITES:
            raise ValueError(f"step_writes must be one of {', '.join(STEP_WRITES)}, got {step_writes!r}")
        self._background = step_writes == "background"
        self._writer = _step_writer(engine)
        self._token = object()  # this recorder's background writes: their failures come back here only
        self._steps_table = StepRow.__table__
        self._episodes_table = EpisodeRow.__table__

    # -- steps ---------------------------------------------------------------------------

    def step(self, observation: Any = "", action: Any = "", feedback: Any = "", reward: float = 0.0,
             **extra: Any) -> int:
        """Write one step now; returns its index. `extra`: error, admissible, latency_ms, *_tokens."""
        if self.done:
            raise RuntimeError(f"episode {self.id} is finished; start a new one with memory.episode(...)")
        values = _step_values({"index": self.num_steps, "observation": observation, "action": action,
                               "feedback": feedback, "reward": reward, **extra})
        values.update(namespace=self.namespace, episode_id=self.id, created_at=utcnow())
        self.total_reward += values["reward"]
        # One statement per step: the episode row's counters are settled at finish (or by
        # the reaper from the steps themselves), which keeps a step to one round trip.
        self._writer.submit(values, self._background, self._token)
        self.num_steps += 1
        self.last_reward = values["reward"]
        return values["index"]

    # -- outcome -------------------------------------------------------------------------

    def finish(self, success: Optional[bool] = None, *, source: str | OutcomeSource | None = None,
               self_reported: Optional[bool] = None, **verifier_kwargs: Any) -> Outcome:
        """End the episode. The outcome comes from `success` (with its `source`) or the verifier.

        `self_reported` is what the agent claims; it is stored and never used as the label.
        """
        if self.done:
            return Outcome.unknown
        success = _label(success, "finish(success=...)")
        if success is None and self.verifier is not None:
            success = _label(_call_verifier(self.verifier, self, verifier_kwargs), "the verifier's answer")
            source = source or OutcomeSource.verifier
        if success is not None and source is None:
            raise ValueError("an outcome needs its source: 'environment', 'verifier' or 'human' "
                             "(the agent's own claim goes in self_reported=)")
        outcome = Outcome.unknown if success is None else (Outcome.success if success else Outcome.failure)
        if self._background:
            self._writer.flush(self._token)  # every step is in the table before the episode reads finished
            flush_retrievals(self.engine)  # and every retrieval its reflection credits
        try:
            src = OutcomeSource(source).value if success is not None else None
        except ValueError:
            raise MalformedInput(f"outcome source {source!r} is not one of environment, verifier, human: "
                                 "only a verified source labels an episode (the agent's claim goes in "
                                 "self_reported=)") from None
        with self.engine.begin() as conn:
            conn.execute(
                update(self._episodes_table).where(self._episodes_table.c.id == self.id).values(
                    status=Status.finished.value,
                    outcome=outcome.value, outcome_source=src, self_reported_success=self_reported,
                    num_steps=self.num_steps, total_reward=self.total_reward,
                    ended_at=utcnow(), updated_at=utcnow(),
                )
            )
        self.done = True
        if self._on_finished is not None:
            self._on_finished(self.id)
        return outcome

    def interrupt(self, reason: str = "") -> None:
        if self.done:
            return
        if self._background:
            try:
                self._writer.flush(self._token)
            except RuntimeError:
                pass  # the episode is being given up anyway; its steps so far are what is kept
        with self.engine.begin() as conn:
            conn.execute(text("UPDATE episodes SET status = 'interrupted', ended_at = :t, reflection_error = :r, "
                              "num_steps = :n, total_reward = :tr WHERE id = :id"),
                         {"t": utcnow(), "r": reason[:2000] or None, "id": self.id, "n": self.num_steps,
                          "tr": self.total_reward})
        self.done = True

    def __enter__(self) -> "EpisodeRecorder":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.interrupt(f"{exc_type.__name__}: {exc}")
        elif not self.done:
            self.finish()


# ----------------------------------------------------------------------------- wrap()


def _call_agent(agent: Any, payload: Any) -> Any:
    """Call a plain callable, a LangChain Runnable or a compiled LangGraph graph the same way."""
    if hasattr(agent, "invoke"):
        return agent.invoke(payload)
    return agent(payload)


def _as_action(result: Any, action_key: str) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, Mapping) and action_key in result:
        return str(result[action_key])
    content = getattr(result, "content", None)  # an AIMessage
    if isinstance(content, str):
        return content
    raise MalformedInput(
        f"the wrapped agent returned {type(result).__name__}; expected a command string, "
        f"a dict with {action_key!r}, or a message with text content"
    )


class RecordedNode:
    """A LangGraph node around an existing agent that records every step it takes.

    The state it reads (keys configurable): `observation`, `goal`, `admissible`,
    `context`, `reward`, `done`, `won`, `episode_id`, `task_type`, `task_id`, `split`.
    Each call writes the previous step, now that its next-state feedback (this call's
    observation) is known, asks the agent for an action and returns
    `{"action": ..., "episode_id": ...}`. When `done` is true it finishes the episode:
    the outcome comes from `won` in the state (the environment's word), else the
    verifier, else stays unknown.
    """

    def __init__(self, agent: Any, memory: "SkillMemory", *, verifier: Optional[Verifier] = None,
                 namespace: Optional[str] = None, environment: str = "", action_key: str = "action",
                 input_fn: Optional[Callable[[Mapping[str, Any]], Any]] = None):
        self.agent = agent
        self.memory = memory
        self.verifier = verifier
        self.namespace = namespace
        self.environment = environment
        self.action_key = action_key
        self.input_fn = input_fn
        self._open: dict[str, tuple[EpisodeRecorder, dict[str, Any]]] = {}
        self.__name__ = getattr(agent, "__name__", None) or getattr(agent, "name", None) or "agent"

    def _recorder(self, state: Mapping[str, Any]) -> EpisodeRecorder:
        ep_id = state.get("episode_id")
        if ep_id and ep_id in self._open:
            return self._open[ep_id][0]
        rec = self.memory.start_episode(
            goal=state.get("goal", ""), task_type=state.get("task_type", ""), task_id=state.get("task_id", ""),
            split=state.get("split") or "live", environment=self.environment, namespace=self.namespace,
            verifier=self.verifier, episode_id=ep_id or None, policy_version=state.get("policy_version"),
        )
        self._open[rec.id] = (rec, {})
        return rec

    def _flush(self, rec: EpisodeRecorder, pending: dict[str, Any], state: Mapping[str, Any]) -> None:
        if pending:
            rec.step(feedback=state.get("observation", ""), reward=float(state.get("reward") or 0.0), **pending)
            pending.clear()

    def __call__(self, state: Mapping[str, Any]) -> dict[str, Any]:
        rec = self._recorder(state)
        pending = self._open[rec.id][1]
        self._flush(rec, pending, state)
        if state.get("done"):
            won = state.get("won")
            # The verifier (when the environment gave no word) sees the final state: the answer is in it.
            rec.finish(success=won,
                       source=OutcomeSource.environment if won is not None else None,
                       self_reported=state.get("self_reported_success"), state=dict(state))
            self._open.pop(rec.id, None)
            return {"episode_id": rec.id}
        payload = self.input_fn(state) if self.input_fn else dict(state)
        t0 = time.perf_counter()
        result = _call_agent(self.agent, payload)
        latency = (time.perf_counter() - t0) * 1000
        action = _as_action(result, self.action_key)
        pending.update(observation=state.get("observation", ""), action=action, latency_ms=latency,
                       admissible=state.get("admissible"),
                       context_tokens=state.get("context_tokens"))
        return {self.action_key: action, "episode_id": rec.id}

    def close(self, episode_id: str, *, final_observation: str = "", reward: float = 0.0,
              success: Optional[bool] = None, source: Optional[str] = None) -> None:
        """Write the step in flight and finish an episode the graph ended without a `done` state."""
        if episode_id not in self._open:
            return
        rec, pending = self._open.pop(episode_id)
        self._flush(rec, pending, {"observation": final_observation, "reward": reward})
        rec.finish(success=success, source=source)


def wrap(agent: Any, memory: "SkillMemory", **options: Any) -> Any:
    """Record an existing agent without changing it.

    - a compiled message agent (a graph with a `messages` channel, e.g. `create_react_agent`)
      -> a `RecordedAgent`: invoke it as before; every run is an episode, each tool call a step;
    - a chat model, or one bound to tools -> a `RecordedChatModel` (each turn recorded);
    - anything else mapping a state to a command (callable, Runnable, compiled graph)
      -> a `RecordedNode` to add to your graph.

    `messages=True|False` overrides the choice. Options are those of the class chosen
    (`verifier=`, `split=`, `task_type=`, `namespace=`, ...).
    """
    messages = options.pop("messages", None)
    if messages is None:
        from .messages import is_chat_model, is_messages_agent

        if is_chat_model(agent):
            from .messages import RecordedChatModel

            return RecordedChatModel(agent, memory, **options)
        messages = is_messages_agent(agent) and options.get("action_key", "action") not in agent.channels
    if messages:
        from .messages import RecordedAgent

        return RecordedAgent(agent, memory, **options)
    return RecordedNode(agent, memory, **options)


def record_messages(memory: "SkillMemory", messages: Sequence[Any], **options: Any) -> EpisodeRecorder:
    """Record a finished LangChain message list; see :func:`skillmem.messages.record_messages`."""
    from .messages import record_messages as _record

    return _record(memory, messages, **options)
