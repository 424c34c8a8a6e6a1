"""Recording overhead: a wrapped agent against the same agent unwrapped, per step, in one run.

    python -m eval bench recording [--steps 400] [--work-ms 10] [--pg URL]

Both loops run interleaved in rounds, paired, so the machine's noise hits both alike. Reports, per
backend and per step-write mode (`sync`: the step's INSERT before `step()` returns, the
default; `background`: a writer thread inserts it, see skillmem.record), the added time per
step (ms) for an agent that does no work, and the ratio wrapped/unwrapped for one whose
step takes `--work-ms` computing (busy CPU) and waiting (sleeping, as on an LLM call or a
tool). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from skillmem import SkillMemory, wrap
from skillmem.record import _step_writer


def _busy(ms: float) -> None:
    # `ms` of this thread's CPU time, not of the clock: on a shared, loaded machine the
    # scheduler takes the CPU away at any moment, and a loop that ran until a clock time
    # absorbed every such stall that fell inside it (free for the agent) while one that fell
    # on the recording after it counted in full: the unwrapped agent's steps took 12.1 ms
    # for its 10, at load 5.6, and the wrapped one's extra read 2.8 ms where the recording
    # itself costs 0.19. A step of the same CPU work in both loops meets the same stalls.
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


def _wait(ms: float) -> None:
    time.sleep(ms / 1000)


def _run(node, steps: int, work_ms: float, after=None) -> float:
    """Seconds per step of a loop of `steps` agent calls through `node`."""
    state = {"goal": "put a mug in the fridge", "observation": "You are in the middle of a room.",
             "admissible": ["go to fridge 1", "go to desk 1", "look"], "split": "train", "task_type": "bench"}
    t0 = time.perf_counter()
    for i in range(steps):
        out = node(state)
        state = {**state, **out, "observation": f"You arrive at desk {i % 5 + 1}. On the desk, you see a pen."}
        _busy(work_ms) if work_ms else None
    if after is not None:
        after()  # inside the timing: queued background writes count as the steps' cost
    return (time.perf_counter() - t0) / steps


def measure(db: str, steps: int, work_ms: float, rounds: int, work: str = "busy", step_writes: str = "sync") -> dict:
    mem = SkillMemory(db, step_writes=step_writes)
    do_work = _busy if work == "busy" else _wait

    def agent(state: dict) -> str:
        if work_ms:
            do_work(work_ms)
        return "go to desk 1"

    bare = lambda s: {"action": agent(s)}  # noqa: E731
    wrapped = wrap(agent, mem)
    b, w = [], []
    for r in range(rounds):
        # Rounds in pairs, which of the two goes first alternating: a pair meets the same
        # load, and the medians of the pairs' differences and ratios leave out the pairs
        # that a burst of the machine's other work fell on.
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            if which == 0:
                b.append(_run(bare, steps, 0))
            else:
                w.append(_run(wrapped, steps, 0, after=_step_writer(mem.engine).flush))
                wrapped._open.clear()  # one episode per round, as a run of tasks would have
    mem.close()
    return {"work_ms": work_ms, "work": work, "unwrapped_ms_per_step": statistics.median(b) * 1e3,
            "wrapped_ms_per_step": statistics.median(w) * 1e3,
            "overhead_ms_per_step": statistics.median([y - x for x, y in zip(b, w)]) * 1e3,
            "ratio": statistics.median([y / x for x, y in zip(b, w)])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--work-ms", type=float, default=10.0)
    p.add_argument("--pg", default=os.environ.get("SKILLMEM_TEST_PG_URL"), help="PostgreSQL URL (optional)")
    a = p.parse_args(argv)
    backends = {"sqlite": str(Path(tempfile.mkdtemp()) / "bench.db")}
    if a.pg:
        backends["postgres"] = a.pg
    result: dict = {"bench": "recording", "steps": a.steps, "rounds": a.rounds,
                    "load_avg_1m_before": round(os.getloadavg()[0], 1)}
    for name, db in backends.items():
        for mode in ("sync", "background"):
            zero = measure(db, a.steps, 0.0, a.rounds, step_writes=mode)
            # Two kinds of 10 ms step: computing (the CPU is busy, as a local model would keep it)
            # and waiting (on an LLM endpoint or a tool, the common case for an agent).
            busy = measure(db, max(a.steps // 10, 20), a.work_ms, a.rounds, "busy", mode)
            wait = measure(db, max(a.steps // 10, 20), a.work_ms, a.rounds, "wait", mode)
            entry = {"load_avg_1m": round(os.getloadavg()[0], 1), "no_work": zero, "with_work": busy, "with_waiting": wait,
                     "overhead_pct_computing": round((busy["ratio"] - 1) * 100, 2),
                     "overhead_pct_waiting": round((wait["ratio"] - 1) * 100, 2)}
            if mode == "sync":
                result[name] = entry
            else:
                result[name]["background"] = entry
            # The percentages are of the step as it ran: on a loaded machine 10 ms of CPU takes
            # longer on the clock, and so does the recorder's own CPU work in the same thread.
            print(f"{name:8s} {mode:10s} overhead {zero['overhead_ms_per_step']:.3f} ms/step; on a {a.work_ms:g} ms "
                  f"step computing {entry['overhead_pct_computing']:.1f} % (+{busy['overhead_ms_per_step']:.2f} ms "
                  f"of a {busy['unwrapped_ms_per_step']:.1f} ms step), waiting {entry['overhead_pct_waiting']:.1f} % "
                  f"(+{wait['overhead_ms_per_step']:.2f} ms of {wait['unwrapped_ms_per_step']:.1f}) "
                  f"(load {entry['load_avg_1m']})",
                  flush=True)
    result["load_avg_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result))
    return 0
