"""Many processes, one memory, on the real PostgreSQL server: every change reaches every process.

Eight processes retrieve and write at once (eval/bench/shared.py); each new lesson must
become retrievable, and each retired one stop being retrieved, in every other process,
without any process rebuilding its index from scratch. Staleness and throughput are
measured and printed (a benchmark's numbers, not asserted: the machine's load decides them).
"""

from __future__ import annotations

import json

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
