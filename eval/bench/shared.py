"""Many processes, one memory: staleness and throughput of retrieval on a shared PostgreSQL store.

    python -m eval bench shared [--url postgresql://...] [--procs 8] [--seconds 15]

`--procs` processes open one store (each with its own index directory, as processes on
different hosts would), then for `--seconds` each retrieves continuously and, every
`--write-every` seconds, writes a new lesson or retires one it wrote earlier. Every other
process looks each change up by retrieval (the lesson's own text as the query, k=1) until
it shows (a new one) or stops showing (a retired one). Reported: staleness from the
writer's return to the first retrieval that reflects it (p50, p95, max, per change and
process), retrievals per second in all, writes, and full index rebuilds after start
(must be 0: changes are applied in place). The last line is one JSON object.
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
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

GRACE_S = 30.0  # after the last change, how long a process keeps looking for one it has not seen
PROBE = "probe"  # the task type changes are written under


def _probe_text(i: int) -> tuple[str, str]:
    # Random tokens: no two probes are near-duplicates (they would be merged on insert).
    words = " ".join(uuid.uuid4().hex[:7] for _ in range(5))
    return f"process {i} saw {words}", f"answer {uuid.uuid4().hex[:10]}"


def _worker(i: int, url: str, index_root: str, seconds: float, write_every: float, inbox: Any, outbox: Any) -> None:
    from skillmem import Lesson, SkillMemory
    from skillmem.embed import HashingEmbedder
    from skillmem.retrieve import lesson_text

    mem = SkillMemory(url, index_dir=Path(index_root) / f"p{i}", embedder=HashingEmbedder(), save_interval=1e9)
    mem.retrieve("warm up", task_type=PROBE, record=False)  # loads (here: builds) this process's index
    rebuilds = mem.index.rebuilds
    outbox.put(("ready", i))
    kind, start_at = inbox.get(timeout=600)  # one common start, once every process is ready
    assert kind == "go", kind
    while time.time() < start_at:
        time.sleep(0.01)
    rng = random.Random(i)
    queries = [f"the {o} is in the {p}" for o in ("egg", "mug", "apple", "knife") for p in ("fridge", "sink", "desk")]
    pending_new: dict[int, tuple[str, float]] = {}
    pending_gone: dict[int, tuple[str, float]] = {}
    seen: set[int] = set()
    mine: list[tuple[int, str]] = []
    retrievals, busy, writes = 0, 0.0, 0
    next_write = start_at + rng.uniform(0, write_every)
    end = start_at + seconds

    def visible(item_id: int, text: str) -> bool:
        ctx = mem.retrieve(text, task_type=PROBE, k=1, record=False)
        return any(k == "lesson" and j == item_id for k, j, _, _ in ctx.items)

    flushed_at = None  # when the parent said every change has been forwarded
    said_done = False
    while True:
        now = time.time()
        if now >= end and not said_done:
            outbox.put(("writes_done", i))
            said_done = True
        if flushed_at is not None and (not (pending_new or pending_gone) or now >= flushed_at + GRACE_S):
            break
        while True:
            try:
                kind, item_id, text, t = inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "flush":
                flushed_at = time.time()
            elif kind == "add":
                pending_new[item_id] = (text, t)
            elif item_id in seen or item_id in pending_new:
                pending_new.pop(item_id, None)  # retired before this process saw it: only absence counts
                pending_gone[item_id] = (text, t)
        if now < end:
            t0 = time.perf_counter()
            mem.retrieve(rng.choice(queries), task_type="heat", record=False)
            busy += time.perf_counter() - t0
            retrievals += 1
        for item_id, (text, t) in list(pending_new.items()):
            if visible(item_id, text):
                outbox.put(("new", i, item_id, time.time() - t))
                seen.add(item_id)
                del pending_new[item_id]
        for item_id, (text, t) in list(pending_gone.items()):
            if not visible(item_id, text):
                outbox.put(("gone", i, item_id, time.time() - t))
                del pending_gone[item_id]
        if now < end and now >= next_write:
            if mine and writes % 2:  # every other write retires this process's oldest lesson
                item_id, text = mine.pop(0)
                mem.retire_lesson(item_id, "shared-memory benchmark")
                outbox.put(("retire", i, item_id, text, time.time()))
            else:
                trigger, fix = _probe_text(i)
                item_id, action = mem.add_lesson(Lesson(trigger=trigger, fix=fix, task_type=PROBE, scope="task"))
                assert action == "created", action
                text = lesson_text(Lesson(trigger=trigger, fix=fix))
                mine.append((item_id, text))
                outbox.put(("add", i, item_id, text, time.time()))
            writes += 1
            next_write = now + write_every
    outbox.put(("done", i, retrievals, busy, writes, mem.index.rebuilds - rebuilds,
                sorted(pending_new), sorted(pending_gone)))
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
        start_timeout: float = 300.0) -> dict[str, Any]:
    """Run the processes against `url` (a store that may be empty) and return what they measured."""
    _prefill(url, prefill)
    ctx = mp.get_context("spawn")  # a fresh interpreter each, as separate deployments would be
    outbox = ctx.Queue()
    inboxes = [ctx.Queue() for _ in range(procs)]
    with tempfile.TemporaryDirectory(prefix="skillmem-shared-") as root:
        workers = [ctx.Process(target=_worker, args=(i, url, root, seconds, write_every, inboxes[i], outbox))
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
        results: dict[str, list[float]] = {"new": [], "gone": []}
        done: list[tuple[Any, ...]] = []
        changes, writing = 0, procs
        while len(done) < procs:
            msg = get(seconds + GRACE_S + 120)
            kind = msg[0]
            if kind in ("add", "retire"):
                _, writer, item_id, text, t = msg
                changes += 1
                for j, q in enumerate(inboxes):
                    if j != writer:
                        q.put(("add" if kind == "add" else "retire", item_id, text, t))
            elif kind in ("new", "gone"):
                results[kind].append(msg[3])
            elif kind == "writes_done":
                writing -= 1
                if writing == 0:  # after every change was forwarded: nothing more will come
                    for q in inboxes:
                        q.put(("flush", 0, "", 0.0))
            elif kind == "done":
                done.append(msg)
        for w in workers:
            w.join(timeout=60)
    retrievals = sum(d[2] for d in done)
    busy = sum(d[3] for d in done)
    return {
        "procs": procs, "seconds": seconds, "write_every_s": write_every, "changes": changes,
        "writes": sum(d[4] for d in done),
        "new_lesson_staleness": _stats(results["new"]), "retired_lesson_staleness": _stats(results["gone"]),
        "retrievals": retrievals, "retrievals_per_s": round(retrievals / seconds, 1),
        "retrieval_mean_ms": round(busy / max(retrievals, 1) * 1000, 2),
        "full_rebuilds_after_start": sum(d[5] for d in done),
        "never_seen": sum(len(d[6]) for d in done), "never_gone": sum(len(d[7]) for d in done),
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
