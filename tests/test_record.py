"""Recording: the episode context manager, wrap() around three kinds of agent, faults."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, TypedDict

import pytest

from skillmem import MalformedInput, SkillMemory, wrap
from skillmem.episode import MAX_TEXT_CHARS
from skillmem.store import resolve_url, run_sql


def _count(db: str, sql: str) -> int:
    return run_sql(resolve_url(db), sql)[1][0][0]


# ---------------------------------------------------------------- context manager


def test_episode_records_every_signal(db_url):
    mem = SkillMemory(db_url)
    with mem.episode(task="put a mug in the fridge", task_type="pick_and_place_simple", split="train") as ep:
        ep.step(observation="You are in a kitchen.", action="go to fridge 1",
                feedback="You arrive at fridge 1. The fridge 1 is closed.", reward=0.0,
                admissible=["go to fridge 1", "look"], latency_ms=3.5, prompt_tokens=100, completion_tokens=5)
        ep.step(observation="The fridge 1 is closed.", action="take mug 1 from fridge 1",
                feedback="Nothing happens.", error="not visible")
        ep.finish(success=False, source="environment", self_reported=True)
    row = mem.get_episode(ep.id)
    assert (row.status.value, row.outcome.value, row.outcome_source.value) == ("finished", "failure", "environment")
    assert row.self_reported_success is True and row.num_steps == 2
    steps = mem.steps(ep.id)
    assert [s.feedback for s in steps][1] == "Nothing happens."
    assert steps[0].admissible == ["go to fridge 1", "look"] and steps[1].error == "not visible"


def test_outcome_needs_a_verified_source(sqlite_url):
    mem = SkillMemory(sqlite_url)
    ep = mem.start_episode(task="x")
    with pytest.raises(ValueError, match="self_reported"):
        ep.finish(success=True)  # the agent's own say-so is not a label
    assert ep.finish(self_reported=True).value == "unknown"
    assert mem.get_episode(ep.id).outcome.value == "unknown"


def test_verifier_decides_outcome(sqlite_url):
    mem = SkillMemory(sqlite_url)
    with mem.episode(task="x", verifier=lambda rec: rec.num_steps >= 2) as ep:
        ep.step(action="a")
        ep.step(action="b")
    row = mem.get_episode(ep.id)
    assert (row.outcome.value, row.outcome_source.value) == ("success", "verifier")


def test_later_feedback_settles_outcome_and_keeps_directive(db_url):
    mem = SkillMemory(db_url)
    with mem.episode(task="x", split="train") as ep:
        ep.step(action="heat mug 1 with fridge 1", feedback="Nothing happens.")
    fid = mem.feedback(ep.id, 0, corrected_action="heat mug 1 with microwave 1", text="use the microwave",
                       success=False)
    fb = mem.feedback_for(ep.id)
    assert fb[0].id == fid and fb[0].kind.value == "directive" and fb[0].step_index == 0
    row = mem.get_episode(ep.id)
    assert (row.outcome.value, row.outcome_source.value) == ("failure", "human")
    with pytest.raises(KeyError):
        mem.feedback("no-such-episode", text="hm")


def test_exception_inside_episode_marks_interrupted(sqlite_url):
    mem = SkillMemory(sqlite_url)
    with pytest.raises(ZeroDivisionError):
        with mem.episode(task="x") as ep:
            ep.step(action="a")
            1 / 0
    row = mem.get_episode(ep.id)
    assert row.status.value == "interrupted" and row.num_steps == 1


# ---------------------------------------------------------------- malformed input


def test_malformed_steps_are_refused_and_nothing_half_written(db_url):
    mem = SkillMemory(db_url)
    ep = mem.start_episode(task="x")
    ep.step(action="fine")
    for bad in (dict(reward="lots"), dict(admissible="go to desk 1"), dict(prompt_tokens=-3),
                dict(observation=12345), dict(latency_ms="fast")):
        with pytest.raises(MalformedInput, match="nothing written"):
            ep.step(action="a", **bad)
    assert len(mem.steps(ep.id)) == 1
    ep.finish(success=True, source="verifier")
    assert mem.get_episode(ep.id).num_steps == 1
    with pytest.raises(MalformedInput):
        mem.start_episode(task=["not", "text"])
    with pytest.raises(MalformedInput):
        mem.feedback(ep.id, step=-1, text="negative step")


def test_huge_and_invalid_text_is_kept_readable(db_url):
    mem = SkillMemory(db_url)
    ep = mem.start_episode(task="x")
    huge = "y" * (5 * 1024 * 1024)
    ep.step(observation=huge, action=b"take \xff\xfe mug", feedback="NUL\x00byte \ud800 surrogate")
    s = mem.steps(ep.id)[0]
    assert len(s.observation) == MAX_TEXT_CHARS and "truncated by skillmem" in s.observation
    assert s.action == "take \ufffd\ufffd mug"
    assert "\x00" not in s.feedback and s.feedback.startswith("NUL")


# ---------------------------------------------------------------- concurrency, kill -9

_WORKER = textwrap.dedent("""
    import sys
    from skillmem import SkillMemory
    db, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mem = SkillMemory(db)
    for i in range(n):
        with mem.episode(task=f"w{worker} e{i}", task_type="t", split="train", namespace=f"w{worker}") as ep:
            for s in range(3):
                ep.step(observation=f"obs {s}", action=f"act {s}", feedback="Nothing happens.")
            ep.finish(success=i % 2 == 0, source="environment")
""")


def test_four_processes_record_at_once(db_url):
    SkillMemory(db_url).close()  # create the schema once, as a deployment would
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, db_url, str(w), "200"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        assert "locked" not in err
    assert _count(db_url, "SELECT COUNT(*) FROM episodes WHERE status = 'finished'") == 800
    assert _count(db_url, "SELECT COUNT(*) FROM steps") == 2400
    for w in range(4):
        assert _count(db_url, f"SELECT COUNT(*) FROM episodes WHERE namespace = 'w{w}'") == 200


_VICTIM = textwrap.dedent("""
    import sys, time
    from skillmem import SkillMemory
    mem = SkillMemory(sys.argv[1])
    ep = mem.start_episode(task="doomed", split="train")
    for s in range(5):
        ep.step(observation=f"obs {s}", action=f"act {s}", feedback="ok")
    print(ep.id, flush=True)
    time.sleep(600)
""")


def test_kill_9_mid_episode_leaves_it_interrupted(db_url):
    p = subprocess.Popen([sys.executable, "-c", _VICTIM, db_url], stdout=subprocess.PIPE, text=True)
    ep_id = p.stdout.readline().strip()
    assert ep_id, "the recording process did not start"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    mem = SkillMemory(db_url)  # opening the store settles episodes whose process is gone
    row = mem.get_episode(ep_id)
    assert row.status.value == "interrupted"
    assert [s.action for s in mem.steps(ep_id)] == [f"act {s}" for s in range(5)]


_BACKGROUND = textwrap.dedent("""
    import sys, threading, time
    from skillmem import SkillMemory
    mem = SkillMemory(sys.argv[1], step_writes="background")
    ep = mem.start_episode(task="doomed", split="train")
    for s in range(200):
        ep.step(observation=f"obs {s}", action=f"act {s}", feedback="ok")
    writer = any(t.name == "skillmem-step-writer" for t in threading.enumerate())
    print(ep.id, writer, flush=True)
    if sys.argv[2] == "kill":
        time.sleep(600)
    ep2 = mem.start_episode(task="left open", split="train")
    for s in range(50):
        ep2.step(observation=f"obs {s}", action=f"act {s}", feedback="ok")
    print(ep2.id, flush=True)
""")


@pytest.mark.parametrize("end", ["kill", "exit"])
def test_background_step_writes_lose_at_most_the_unwritten_steps(db_url, end):
    from skillmem.record import MAX_PENDING

    p = subprocess.Popen([sys.executable, "-c", _BACKGROUND, db_url, end], stdout=subprocess.PIPE, text=True)
    ep_id, writer = (p.stdout.readline().split() + ["", ""])[:2]
    assert ep_id, "the recording process did not start"
    assert writer == "True", "the steps were not written by the background writer thread"
    if end == "kill":
        os.kill(p.pid, signal.SIGKILL)
    else:
        last = p.stdout.readline().strip()
    p.wait(timeout=120)
    mem = SkillMemory(db_url)
    actions = [s.action for s in mem.steps(ep_id)]
    # In order, none twice, and only the tail can be missing: at most the queue's bound.
    assert actions == [f"act {s}" for s in range(len(actions))]
    assert len(actions) >= 200 - MAX_PENDING  # queued or being written, at most
    if end == "exit":  # a normal exit waits for the writer: nothing is lost
        assert len(actions) == 200 and len(mem.steps(last)) == 50


def test_background_step_writes_are_in_the_table_when_the_episode_finishes(db_url):
    mem = SkillMemory(db_url, step_writes="background")
    with mem.episode(task="quick", split="train") as ep:
        for s in range(100):
            ep.step(observation=f"obs {s}", action=f"act {s}", feedback="ok")
        ep.finish(success=True, source="environment")
    assert [s.action for s in mem.steps(ep.id)] == [f"act {s}" for s in range(100)]
    with pytest.raises(ValueError, match="step_writes"):
        SkillMemory(db_url, step_writes="later")


def test_a_failed_background_write_is_raised_to_its_own_episode_only(db_url):
    mem = SkillMemory(db_url, step_writes="background")
    bad = mem.start_episode(task="bad", split="train")
    good = mem.start_episode(task="good", split="train")
    bad.step(observation="o", action="a 0")
    bad.num_steps = 0  # the next step reuses index 0: the UNIQUE (episode_id, index) refuses it
    bad.step(observation="o", action="a again")
    for s in range(20):
        good.step(observation=f"o {s}", action=f"g {s}")
    assert good.finish(success=True, source="environment").value == "success"
    with pytest.raises(RuntimeError, match="could not be written in the background"):
        bad.finish(success=False, source="environment")
    assert [s.action for s in mem.steps(good.id)] == [f"g {s}" for s in range(20)]
    assert [s.action for s in mem.steps(bad.id)] == ["a 0"]


def test_finish_waits_for_its_own_steps_not_for_threads_that_keep_stepping(db_url):
    mem = SkillMemory(db_url, step_writes="background")
    stop = threading.Event()

    def busy() -> None:  # another graph thread that never stops recording
        ep = mem.start_episode(task="busy", split="train")
        while not stop.is_set():
            ep.step(observation="o", action="busy")

    t = threading.Thread(target=busy, daemon=True)
    t.start()
    try:
        ep = mem.start_episode(task="quick", split="train")
        for s in range(10):
            ep.step(observation=f"o {s}", action=f"q {s}")
        finished = threading.Thread(target=ep.finish, kwargs={"success": True, "source": "environment"})
        finished.start()
        finished.join(timeout=60)
        assert not finished.is_alive(), "finish() waited for another thread's steps"
        assert [s.action for s in mem.steps(ep.id)] == [f"q {s}" for s in range(10)]
    finally:
        stop.set()
        t.join(timeout=60)
    mem.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_records_with_its_own_writer(db_url):
    mem = SkillMemory(db_url, step_writes="background")
    ep = mem.start_episode(task="parent", split="train")
    ep.step(observation="o", action="before fork")
    from skillmem.record import _step_writer

    writer = mem_writer = _step_writer(mem.engine)
    writer._lock.acquire()  # as if the writer thread were mid-statement when the fork happens
    try:
        pid = os.fork()
        if pid == 0:  # the child: the held lock must not be inherited, nor the parent's queue
            code = 1
            try:
                mem.engine.dispose(close=False)  # SQLAlchemy's recipe: the parent's pooled connections stay its own
                mem.read_engine.dispose(close=False)
                child = mem.start_episode(task="child", split="train")
                child.step(observation="o", action="in child")
                child.finish(success=True, source="environment")
                code = 0 if [s.action for s in mem.steps(child.id)] == ["in child"] else 2
            finally:
                os._exit(code)
    finally:
        writer._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert mem_writer is writer
    ep.finish(success=True, source="environment")
    assert [s.action for s in mem.steps(ep.id)] == ["before fork"]


# ---------------------------------------------------------------- wrap()


class State(TypedDict, total=False):
    goal: str
    observation: str
    admissible: list[str]
    action: str
    reward: float
    done: bool
    won: bool
    episode_id: str
    split: str
    task_type: str


def _counter_env_graph(node: Any):
    """A tiny LangGraph loop: the agent must say 'inc' three times; 'dec' is a mistake."""
    from langgraph.graph import END, START, StateGraph

    def env(state: State) -> dict:
        n = int(state["observation"].split()[-1]) + (1 if state["action"] == "inc" else -1)
        done = n >= 3 or n <= -2
        return {"observation": f"counter is {n}", "reward": 1.0 if n >= 3 else 0.0, "done": done, "won": n >= 3}

    g = StateGraph(State)
    g.add_node("agent", node)
    g.add_node("env", env)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", lambda s: END if s.get("done") else "env")
    g.add_edge("env", "agent")
    return g.compile()


def _agent_fn(state: dict) -> str:
    return "inc"


def _kinds_of_agent():
    from langchain_core.runnables import RunnableLambda
    from langgraph.graph import END, START, StateGraph

    class Inner(TypedDict, total=False):
        observation: str
        action: str

    inner = StateGraph(Inner)
    inner.add_node("decide", lambda s: {"action": "inc"})
    inner.add_edge(START, "decide")
    inner.add_edge("decide", END)
    return {"callable": _agent_fn, "runnable": RunnableLambda(_agent_fn), "graph": inner.compile()}


@pytest.mark.parametrize("kind", ["callable", "runnable", "graph"])
def test_wrap_records_any_agent_in_a_graph(db_url, kind):
    mem = SkillMemory(db_url)
    agent = _kinds_of_agent()[kind]
    node = wrap(agent, mem, environment="counter")
    graph = _counter_env_graph(node)
    final = graph.invoke({"goal": "count to 3", "observation": "counter is 0", "split": "train",
                          "task_type": "count"})
    row = mem.get_episode(final["episode_id"])
    assert (row.outcome.value, row.outcome_source.value, row.status.value) == ("success", "environment", "finished")
    steps = mem.steps(row.id)
    assert [s.action for s in steps] == ["inc"] * 3
    # Each step's next-state feedback is what the environment said after the action.
    assert [s.feedback for s in steps] == ["counter is 1", "counter is 2", "counter is 3"]
    assert steps[-1].reward == 1.0 and all(s.latency_ms is not None for s in steps)


def test_wrap_rejects_an_agent_answer_it_cannot_read(sqlite_url):
    mem = SkillMemory(sqlite_url)
    node = wrap(lambda s: 42, mem)
    with pytest.raises(MalformedInput, match="expected a command string"):
        node({"observation": "x", "goal": "g"})


def test_retrieval_rows_are_written_in_one_statement_and_in_chunks_past_the_parameter_limit(db_url):
    from skillmem.episode import utcnow
    from skillmem.record import retrieval_writer

    mem = SkillMemory(db_url)
    rows = [dict(namespace="rw", episode_id="e", step_index=1, item_kind="lesson", item_id=i, rank=i, score=0.5,
                 tokens=3, created_at=utcnow()) for i in range(250)]  # 250 x 9 binds: split below 900
    retrieval_writer(mem.engine).write_many(rows[:5])
    retrieval_writer(mem.engine).write_many(rows)
    assert _count(db_url, "SELECT COUNT(*) FROM retrievals WHERE namespace = 'rw'") == 255
    assert _count(db_url, "SELECT COUNT(DISTINCT item_id) FROM retrievals WHERE namespace = 'rw'") == 250
    with pytest.raises(Exception):  # a bad row fails the statement: none of its rows is written
        retrieval_writer(mem.engine).write_many([*rows[:3], {**rows[3], "item_kind": None}])
    assert _count(db_url, "SELECT COUNT(*) FROM retrievals WHERE namespace = 'rw'") == 255


def test_a_background_step_is_written_within_the_linger_without_finish(db_url):
    """A step queued alone (no batch gathers, no finish) is in the table within LINGER,
    for another reader to see; steps of several episodes go in one batch."""
    from skillmem.record import LINGER

    mem = SkillMemory(db_url, step_writes="background")
    other = SkillMemory(db_url)
    a = mem.start_episode(task="a", split="train")
    b = mem.start_episode(task="b", split="train")
    a.step(observation="o", action="a 0")
    b.step(observation="o", action="b 0")
    deadline = time.monotonic() + LINGER + 5
    while time.monotonic() < deadline and not (other.steps(a.id) and other.steps(b.id)):
        time.sleep(0.02)
    assert [s.action for s in other.steps(a.id)] == ["a 0"] and [s.action for s in other.steps(b.id)] == ["b 0"]
    a.finish(success=True, source="environment")
    b.finish(success=False, source="environment")
    mem.close()
    other.close()


def test_a_step_validates_as_the_model_does():
    """The recorder's validation of a step is StepBase.model_validate's, output and refusals."""
    from skillmem.episode import StepBase
    from skillmem.record import _validated_step

    good = {"index": 2, "observation": "o\x00", "action": b"a\xff", "feedback": "f", "reward": 1,
            "admissible": ("x", "y"), "latency_ms": 3, "prompt_tokens": 4, "tool_args": {"k": [1]}}
    assert _validated_step(good).model_dump() == StepBase.model_validate(dict(good)).model_dump()
    assert _validated_step(good).model_fields_set == StepBase.model_validate(dict(good)).model_fields_set
    from skillmem.record import _step_values

    # The plain step the recorder checks itself, and its edges: each as the model dumps it.
    for fields in (dict(good), {"index": 0}, {"index": 3, "observation": "o", "action": "a", "feedback": "f",
                   "reward": 2, "admissible": ["x", "y"], "latency_ms": 4, "context_tokens": 0, "error": "e",
                   "tool_call_id": "c", "call_group": 1}, {"index": 1, "reward": True}, {"index": 1, "admissible": []},
                   {"index": 1, "observation": "é" * 3}, {"index": 1, "observation": "x" * (MAX_TEXT_CHARS + 1)},
                   {"index": 1, "admissible": ["x" * 2_001]}, {"index": 1, "latency_ms": None, "error": None},
                   {"index": 1, "tool_args": [1, {"a": 2}]}, {"index": 1, "unknown_field": 3}):
        assert _step_values(dict(fields)) == StepBase.model_validate(dict(fields)).model_dump(), fields
        assert type(_step_values(dict(fields))["reward"]) is float
    for bad in ({"index": -1}, {"index": 0, "reward": float("nan")}, {"index": 0, "admissible": "look"},
                {"index": 0, "prompt_tokens": -2}, {"index": 0, "reward": 10**400}, {"index": 0, "latency_ms": 10**400},
                {"index": 0, "action": 5}, {"index": 0, "tool_call_id": "x" * 201}):
        with pytest.raises(MalformedInput):
            _validated_step(bad)
        with pytest.raises(MalformedInput):
            _step_values(dict(bad))
        with pytest.raises((ValueError, TypeError)):
            StepBase.model_validate(dict(bad))


def _steps_then_return(db: str, out: Any) -> None:
    mem = SkillMemory(db, step_writes="background")
    ep = mem.start_episode(task="worker", split="train")
    for s in range(10):
        ep.step(observation="o", action=f"a {s}")
    out.put(ep.id)  # and returns without finish() or close(), as a pool's worker may


def test_a_fork_started_worker_writes_its_queued_background_steps_at_its_normal_end(db_url):
    """A multiprocessing child started by fork ends with os._exit, so atexit never runs there:
    multiprocessing's exit finalizers flush its writer, and a normal end loses no step."""
    SkillMemory(db_url).close()
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=_steps_then_return, args=(db_url, out))
    p.start()
    ep_id = out.get(timeout=120)
    p.join(timeout=120)
    assert p.exitcode == 0
    assert [s.action for s in SkillMemory(db_url).steps(ep_id)] == [f"a {s}" for s in range(10)]


def test_background_steps_held_unwritten_are_at_most_max_pending(tmp_path):
    """The kill -9 bound, exactly: while another connection holds SQLite's write lock the writer
    cannot write, and step() returns for MAX_PENDING steps, then waits until they are written."""
    import sqlite3

    from skillmem.record import MAX_PENDING

    db = str(tmp_path / "held.db")
    mem = SkillMemory(db, step_writes="background")
    ep = mem.start_episode(task="held", split="train")
    lock = sqlite3.connect(db, isolation_level=None, timeout=60)
    lock.execute("BEGIN IMMEDIATE")
    returned: list[int] = []

    def stepping() -> None:
        for s in range(MAX_PENDING + 10):
            ep.step(observation="o", action=f"a {s}")
            returned.append(s)

    t = threading.Thread(target=stepping, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(returned) < MAX_PENDING:
            time.sleep(0.01)
        time.sleep(0.5)  # had the queue room for more, they would have returned by now
        assert len(returned) == MAX_PENDING
    finally:
        lock.execute("COMMIT")
        lock.close()
    t.join(timeout=60)
    assert not t.is_alive() and len(returned) == MAX_PENDING + 10
    ep.finish(success=True, source="environment")
    assert [s.action for s in mem.steps(ep.id)] == [f"a {s}" for s in range(MAX_PENDING + 10)]
    mem.close()


_HELD_PG = textwrap.dedent("""
    import sys
    from skillmem import SkillMemory
    mem = SkillMemory(sys.argv[1], step_writes="background")
    ep = mem.start_episode(task="held", split="train")
    print(ep.id, flush=True)
    sys.stdin.readline()
    for s in range(int(sys.argv[2])):
        ep.step(observation="o", action=f"a {s}")
        print(s, flush=True)  # step() has returned: the agent believes this step recorded
""")


def test_kill_9_of_a_postgres_background_writer_held_mid_write_loses_at_most_max_pending(pg_url):
    """The kill -9 bound on PostgreSQL, exactly: another session holds a lock on `steps` so the
    child's writer thread cannot commit; step() returns for MAX_PENDING steps and then waits; the
    child is killed with -9 there. What it was told was recorded and is not in the table is the
    loss, and it is at most MAX_PENDING; what is in the table is a prefix, in order."""
    import psycopg

    from skillmem.record import MAX_PENDING

    SkillMemory(pg_url).close()
    p = subprocess.Popen([sys.executable, "-c", _HELD_PG, pg_url, str(MAX_PENDING + 10)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ep_id = p.stdout.readline().strip()
    assert ep_id, "the recording process did not start"
    returned: list[int] = []
    reader = threading.Thread(target=lambda: returned.extend(int(line) for line in p.stdout), daemon=True)
    lock = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        lock.execute("LOCK TABLE steps IN SHARE MODE")  # INSERTs wait; the transaction stays open
        p.stdin.write("go\n")
        p.stdin.flush()
        reader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(returned) < MAX_PENDING:
            time.sleep(0.01)
        time.sleep(0.5)  # had the queue room for more, they would have returned by now
        assert len(returned) == MAX_PENDING
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        lock.rollback()
        lock.close()
    reader.join(timeout=10)
    time.sleep(0.5)  # the killed child's INSERT, waiting on the lock server-side, may now commit
    mem = SkillMemory(pg_url)
    actions = [s.action for s in mem.steps(ep_id)]
    assert actions == [f"a {s}" for s in range(len(actions))]  # a prefix, in order, none twice
    lost = len(returned) - len(actions)
    assert 0 < lost <= MAX_PENDING, (lost, len(actions))
    mem.close()


def test_background_mode_writes_retrievals_in_the_background_and_finish_waits_for_them(tmp_path):
    """step_writes="background": retrieve() returns while its rows cannot be written (another
    connection holds SQLite's write lock; review R14), and they are in the table once the
    episode finishes. The default writes them before retrieve() returns."""
    import sqlite3

    from skillmem import Lesson
    from skillmem.embed import HashingEmbedder
    from skillmem.record import retrieval_writer

    db = str(tmp_path / "r.db")
    mem = SkillMemory(db, step_writes="background", embedder=HashingEmbedder(), index_dir=tmp_path / "ix")
    assert retrieval_writer(mem.engine).background
    for i in range(3):
        mem.add_lesson(Lesson(trigger=f"when the door {i} is locked", fix=f"find key {i} first", scope="general"))
    ep = mem.start_episode(task="open the door", split="train")
    mem.retrieve("warm the index", record=False)
    lock = sqlite3.connect(db, isolation_level=None, timeout=60)
    lock.execute("BEGIN IMMEDIATE")
    chosen: list[int] = []
    t = threading.Thread(target=lambda: chosen.extend(
        len(mem.retrieve("the door is locked", episode_id=ep.id, step_index=s).items) for s in range(3)), daemon=True)
    try:
        t.start()
        t.join(timeout=20)
        assert not t.is_alive(), "retrieve() waited for its rows' commit"
        assert len(chosen) == 3 and all(chosen)
        assert lock.execute("SELECT COUNT(*) FROM retrievals").fetchone()[0] == 0  # queued, not written
    finally:
        lock.execute("COMMIT")
        lock.close()
    ep.finish(success=True, source="environment")
    assert _count(db, f"SELECT COUNT(*) FROM retrievals WHERE episode_id = '{ep.id}'") == sum(chosen)
    mem.close()
    sync = SkillMemory(db)
    assert not retrieval_writer(sync.engine).background
    sync.close()
