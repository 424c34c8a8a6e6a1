"""Many processes, one memory, on the real PostgreSQL server: every change reaches every process.

Eight processes retrieve and write at once (eval/bench/shared.py); each new lesson must
become retrievable, and each retired one stop being retrieved, in every other process,
without any process rebuilding its index from scratch. Staleness and throughput are
measured and printed (a benchmark's numbers, not asserted: the machine's load decides them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from eval.bench.shared import run


# Eight fresh interpreters, each importing skillmem and building its index: ~40 s on an idle
# two-core machine, minutes on a loaded one; CI runs the slow suite against its PostgreSQL.
@pytest.mark.slow
def test_eight_processes_see_each_others_changes_without_rebuilding(pg_url):
    # Every change must arrive; on a loaded machine that can take seconds (the benchmark's
    # figure is the staleness), so the processes keep looking for 30 s after the last write.
    r = run(pg_url, procs=8, seconds=8.0, write_every=0.4, settle=30.0)
    print(json.dumps(r))
    adds = r["new_lesson_staleness"]["n"]
    assert r["writes"] >= 8 and adds > 0 and r["retired_lesson_staleness"]["n"] > 0
    assert r["never_seen"] == 0 and r["never_gone"] == 0  # every change reached every other process
    assert r["full_rebuilds_after_start"] == 0  # applied in place, by the audit mark
    assert r["retrievals"] > 0


_FORKED = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    from skillmem import Lesson, SkillMemory
    from skillmem.embed import HashingEmbedder
    url, index_dir, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    mem = SkillMemory(url, embedder=HashingEmbedder(), index_dir=index_dir, step_writes=mode)
    mem.add_lesson(Lesson(trigger="the kettle is empty", fix="fill it at the sink", scope="general"))
    mem.retrieve("kettle", record=False)  # the probe and the pools hold connections now
    with mem.episode(task="warm", split="train") as ep:
        ep.step(observation="o", action="w 0")
        ep.finish(success=True, source="environment")
    mem.index.probe_interval = 0.0  # every retrieval asks the store
    def loop(tag, q):
        n, eps, errors = 0, [], []
        end = time.time() + 2
        while time.time() < end:
            try:
                assert mem.retrieve("kettle", record=False).items
                e = mem.start_episode(task=tag, split="train")
                for s in range(3):
                    e.step(observation="o", action=f"{tag} {s}")
                e.finish(success=True, source="environment")
                n, eps = n + 1, eps + [e.id]
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
        short = sum(1 for i in eps if len(mem.steps(i)) != 3)
        q.put((tag, n, short, errors[:2]))
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    children = [ctx.Process(target=loop, args=(f"child{i}", q)) for i in range(2)]
    for p in children:
        p.start()
    loop("parent", q)
    for p in children:
        p.join(60)
    print(sorted(q.get(timeout=5) for _ in range(3)), flush=True)
""")


@pytest.mark.parametrize("mode", ["sync", "background"])
def test_processes_forked_after_use_retrieve_and_record_on_their_own_connections(db_url, tmp_path, mode):
    """A memory opened and used, then forked (gunicorn --preload, Celery prefork): parent and
    children retrieve (probing the store every time) and record at once, none hangs on a
    connection inherited from the parent, and every episode has all its steps."""
    out = subprocess.run([sys.executable, "-c", _FORKED, db_url, str(tmp_path / "index"), mode],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr[-2000:]
    results = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own script's repr
    assert [r[0] for r in results] == ["child0", "child1", "parent"]
    for tag, n, short, errors in results:
        assert n > 0 and short == 0 and errors == [], (tag, n, short, errors)
