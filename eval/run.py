"""`python -m eval run`: conditions side by side on the same tasks and seeds (see eval.runner)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .runner import CONDITIONS, RunConfig, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval run", description=__doc__.splitlines()[0])
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            p.add_argument(flag, nargs="+", default=list(default),
                           type=int if default and isinstance(default[0], int) else str)
        else:
            p.add_argument(flag, type=type(default), default=default)
    p.add_argument("--agent", default=None,
                   help="package.module:attr — your own agent (callable, Runnable or compiled graph) "
                        "mapping the state (goal, observation, context, admissible) to a command")
    p.add_argument("--no-progress", action="store_true")
    p.epilog = "conditions: " + ", ".join(CONDITIONS)
    return p


def main(argv: list[str] | None = None) -> int:
    a = vars(parser().parse_args(argv))
    agent = a.pop("agent")
    progress = not a.pop("no_progress")
    cfg = RunConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()})
    if agent:
        cfg.policy = agent
        # A user's agent is evaluated as it is: no trainer touches it.
        cfg.conditions = tuple(c for c in cfg.conditions if CONDITIONS[c]["policy"] == "base")
        cfg.train = False
    from skillmem.llm import LLMError

    try:
        out = run(cfg, progress=progress)
    except LLMError as e:  # the endpoint's fault, said without a traceback
        played = Path(cfg.out) / "results.jsonl"
        print(f"python -m eval run: {e}" + (f"\nThe episodes played so far are kept in {played}: rerun the same "
                                            "command to resume." if played.exists() else ""), file=sys.stderr)
        return 1
    from .report import main as report

    return report([str(Path(out))])
