"""Many processes, one memory: staleness and throughput of retrieval on a shared PostgreSQL store.

    python -m eval bench shared [--url postgresql://...] [--procs 8] [--seconds 15]

`--procs` processes open one store (each with its own index directory, as processes on
different hosts would), then for `--seconds` each retrieves continuously and, on a second
thread (as skillmem's reflection worker writes lessons beside the agent), every
`--write-every` seconds writes a new lesson or retires one it wrote earlier. No process
is told of another's changes: after each retrieval of its workload it looks at what that
retrieval reflected (the probe lessons in its index) and confirms each change by a
retrieval of the lesson's own text (k=1) before reporting the time. Reported: staleness
from the writer's return to that confirmation (p50, p95, max, per change and process; the
wall clock is shared by the processes of one host), how long the writes took, retrievals
per second in all, writes,
changes never seen within `settle` (5 s) after the last write, and full index rebuilds after
start (must be 0: changes are applied in place). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# After the last write, how long every process keeps looking: a change not seen by then is
# reported as never seen (never gone), and fails the one-second target by far.
SETTLE_S = 5.0
PROBE = "probe"  # the task type changes are written under


def _probe_text(i: int) -> tuple[str, str]:
    # Random tokens: no two probes are near-duplicates (they would be merged on insert).
    words = " ".join(uuid.uuid4().hex[:7] for _ in range(5))
    return f"process {i} saw {words}", f"answer {uuid.uuid4().hex[:10]}"


def _worker(i: int, url: str, index_root: str, seconds: float, write_every: float, settle: float, inbox: Any,
            outbox: Any) -> None:
    from skillmem import Lesson, SkillMemory
    from skillmem.embed import HashingEmbedder
    from skillmem.retrieve import lesson_text

    mem = SkillMemory(url, index_dir=Path(index_root) / f"p{i}", embedder=HashingEmbedder(), save_interval=1e9)
    mem.retrieve("warm up", task_type=PROBE, record=False)  # loads (here: builds) this process's index
    # A first add_lesson imports the reflect package (and through it openai: 1-12 s here);
    # paid before the start, so that it does not count as the first change's staleness.
    import skillmem.reflect  # noqa: F401
    rebuilds = mem.index.rebuilds
    outbox.put(("ready", i))
    kind, start_at = inbox.get(timeout=600)  # one common start, once every process is ready
    assert kind == "go", kind
    while time.time() < start_at:
        time.sleep(0.01)
    rng = random.Random(i)
    queries = [f"the {o} is in the {p}" for o in ("egg", "mug", "apple", "knife") for p in ("fridge", "sink", "desk")]
    texts: dict[int, str] = {}  # probe lessons this process has seen retrievable, by id
    mine: list[int] = []
    retrievals, busy, writes = 0, 0.0, 0
    write_s: list[float] = []  # how long each of this process's writes took
    end = start_at + seconds
    failed: list[BaseException] = []

    def write_loop() -> None:
        # On its own thread, as skillmem's reflection worker writes lessons beside the agent:
        # a write (an add waits for the curation lock behind the other processes' writes)
        # does not stop this process from retrieving, so staleness is the time a change takes
        # to reach the other processes, and the write's own time is reported apart.
        nonlocal writes
        wrng = random.Random(1000 + i)
        next_write = start_at + wrng.uniform(0, write_every)
        try:
            while True:
                now = time.time()
                if now >= end:
                    return
                if now < next_write:
                    time.sleep(min(next_write - now, 0.01))
                    continue
                w0 = time.perf_counter()
                if mine and writes % 2:  # every other write retires this process's oldest lesson
                    item_id = mine.pop(0)
                    mem.retire_lesson(item_id, "shared-memory benchmark")
                    outbox.put(("retire", i, item_id, time.time()))
                else:
                    trigger, fix = _probe_text(i)
                    item_id, action = mem.add_lesson(Lesson(trigger=trigger, fix=fix, task_type=PROBE, scope="task"))
                    assert action == "created", action
                    mine.append(item_id)
                    outbox.put(("add", i, item_id, time.time()))
                write_s.append(time.perf_counter() - w0)
                writes += 1
                next_write = time.time() + write_every
        except BaseException as exc:  # noqa: BLE001 - re-raised by the process below
            failed.append(exc)

    writer = threading.Thread(target=write_loop, name="bench-writer", daemon=True)
    writer.start()

    def visible(item_id: int, text: str) -> bool:
        ctx = mem.retrieve(text, task_type=PROBE, k=1, record=False)
        return any(k == "lesson" and j == item_id for k, j, _, _ in ctx.items)

    def look() -> None:
        # What the retrieval just made reflects (its refresh is the only sync): the probe
        # lessons in this process's index. Each change is confirmed by a retrieval of the
        # lesson's own text before its time is reported.
        with mem.index._lock:  # the writer thread's sync may be changing the item cache
            live = {key[1]: it for key, it in mem.index.items.items() if key[0] == "lesson" and it.task_type == PROBE}
        for item_id, it in live.items():
            if item_id not in texts:
                text = lesson_text(it)
                if visible(item_id, text):
                    texts[item_id] = text
                    outbox.put(("new", i, item_id, time.time()))
        for item_id in [j for j in texts if j not in live]:
            if not visible(item_id, texts[item_id]):
                del texts[item_id]
                outbox.put(("gone", i, item_id, time.time()))

    said_done = False
    while True:
        now = time.time()
        if now >= end and not said_done:
            writer.join()  # its last write's message is out before this one
            if failed:
                raise failed[0]
            outbox.put(("writes_done", i))
            said_done = True
        if now >= end + settle:
            break
        if now >= end:
            try:
                if inbox.get_nowait()[0] == "stop":  # every change has been seen everywhere
                    break
            except queue.Empty:
                pass
        t0 = time.perf_counter()
        mem.retrieve(rng.choice(queries), task_type="heat", record=False)
        if now < end:
            busy += time.perf_counter() - t0
            retrievals += 1
        look()
        if now >= end:
            time.sleep(0.005)  # settling: keep looking, without the load of the workload
    outbox.put(("done", i, retrievals, busy, writes, mem.index.rebuilds - rebuilds, write_s))
    mem.close()


def _prefill(url: str, n: int) -> None:
    from skillmem import Lesson, SkillMemory
    from skillmem.embed import HashingEmbedder

    with SkillMemory(url, embedder=HashingEmbedder(), index_dir=tempfile.mkdtemp(prefix="skillmem-prefill-")) as m:
        m.add_lessons_bulk([Lesson(trigger=f"lesson {j}: the {uuid.uuid4().hex[:6]} is hot", fix=f"do {j}",
                                   task_type="heat") for j in range(n)])


def _stats(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    a = np.array(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "max_ms": round(float(a.max()), 1)}


def run(url: str, procs: int = 8, seconds: float = 15.0, write_every: float = 0.5, prefill: int = 200,
        start_timeout: float = 300.0, settle: float = SETTLE_S) -> dict[str, Any]:
    """Run the processes against `url` (a store that may be empty) and return what they measured."""
    _prefill(url, prefill)
    ctx = mp.get_context("spawn")  # a fresh interpreter each, as separate deployments would be
    outbox = ctx.Queue()
    inboxes = [ctx.Queue() for _ in range(procs)]
    with tempfile.TemporaryDirectory(prefix="skillmem-shared-") as root:
        workers = [ctx.Process(target=_worker, args=(i, url, root, seconds, write_every, settle, inboxes[i], outbox))
                   for i in range(procs)]
        for w in workers:
            w.start()
        def get(timeout: float) -> Any:
            # A worker that died (an exception, killed) must end the run with a message, not a hang.
            deadline = time.time() + timeout
            while True:
                try:
                    return outbox.get(timeout=1.0)
                except queue.Empty:
                    dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                    if dead or time.time() > deadline:
                        raise RuntimeError(f"shared-memory run: worker exit codes {dead or 'none'}; "
                                           f"nothing heard for {timeout:.0f} s (see the workers' stderr)")

        ready = 0
        while ready < procs:
            ready += get(start_timeout)[0] == "ready"
        go = time.time() + 0.5
        for q in inboxes:
            q.put(("go", go))
        adds: dict[int, tuple[int, float]] = {}  # item -> (writer, time the write returned)
        retires: dict[int, float] = {}
        seen: dict[tuple[str, int, int], float] = {}  # (new|gone, process, item) -> when it was seen
        done: list[tuple[Any, ...]] = []
        writing, stopped = procs, False

        def complete() -> bool:
            for item_id, (writer, _) in adds.items():
                for j in range(procs):
                    if j != writer and ("new", j, item_id) not in seen and item_id not in retires:
                        return False
            for item_id in retires:
                for j in range(procs):
                    if ("new", j, item_id) in seen and ("gone", j, item_id) not in seen and j != adds[item_id][0]:
                        return False
            return True

        while len(done) < procs:
            if writing == 0 and not stopped and complete():
                for q in inboxes:
                    q.put(("stop",))
                stopped = True
            msg = get(seconds + settle + 120)
            kind = msg[0]
            if kind == "writes_done":
                writing -= 1
            elif kind == "add":
                adds[msg[2]] = (msg[1], msg[3])
            elif kind == "retire":
                retires[msg[2]] = msg[3]
            elif kind in ("new", "gone"):
                seen[(kind, msg[1], msg[2])] = msg[3]
            elif kind == "done":
                done.append(msg)
        for w in workers:
            w.join(timeout=60)
    results: dict[str, list[float]] = {"new": [], "gone": []}
    never_seen = never_gone = 0
    for item_id, (writer, t) in adds.items():
        for j in range(procs):
            if j == writer:
                continue
            appeared = seen.get(("new", j, item_id))
            if appeared is None:
                # Retired before this process looked: only its absence can be checked (below).
                never_seen += item_id not in retires
                continue
            results["new"].append(max(0.0, appeared - t))  # seen before the writer's call returned: 0
            if item_id in retires:
                gone = seen.get(("gone", j, item_id))
                if gone is None:
                    never_gone += 1
                else:
                    results["gone"].append(max(0.0, gone - retires[item_id]))
    changes = len(adds) + len(retires)
    retrievals = sum(d[2] for d in done)
    busy = sum(d[3] for d in done)
    return {
        "procs": procs, "seconds": seconds, "write_every_s": write_every, "changes": changes,
        "writes": sum(d[4] for d in done),
        "new_lesson_staleness": _stats(results["new"]), "retired_lesson_staleness": _stats(results["gone"]),
        "retrievals": retrievals, "retrievals_per_s": round(retrievals / seconds, 1),
        "retrieval_mean_ms": round(busy / max(retrievals, 1) * 1000, 2),
        "full_rebuilds_after_start": sum(d[5] for d in done),
        # add_lesson / retire_lesson calls (an add waits for the curation lock and plans again
        # when another process wrote meanwhile).
        "write_call": _stats([x for d in done for x in d[6]]),
        "never_seen": never_seen, "never_gone": never_gone,
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("SKILLMEM_TEST_PG_URL"),
                   help="a PostgreSQL URL whose database may be written (default: $SKILLMEM_TEST_PG_URL)")
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--write-every", type=float, default=0.5, help="seconds between one process's writes")
    a = p.parse_args(argv)
    if not a.url:
        print("bench shared needs a PostgreSQL URL (--url or SKILLMEM_TEST_PG_URL); skipped", file=sys.stderr)
        print(json.dumps({"bench": "shared", "skipped": "no PostgreSQL URL"}))
        return 0
    result = {"bench": "shared", **run(a.url, a.procs, a.seconds, a.write_every)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
