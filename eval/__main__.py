"""`python -m eval demo | run | report | bench NAME`: the harness's command line."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "recording": "eval.bench.recording",
    "env": "eval.bench.env",
    "retrieval": "eval.bench.retrieval",
    "shared": "eval.bench.shared",
    "embed": "eval.bench.embed_index",
    "reflection": "eval.bench.reflection",
    "trainer": "eval.bench.trainer",
    "curation": "eval.bench.curation",
}

USAGE = """usage: python -m eval COMMAND [args]

  demo                 the offline demo: the whole loop on the household environment
  run                  run conditions side by side (python -m eval run --help)
  report RUN           write Markdown, plots and JSON for a run directory
  bench NAME [args]    a benchmark; NAME in: {benches}, all
""".format(benches=", ".join(BENCHES))


def _call(module: str, argv: list[str]) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            print(f"python -m eval: {module} is not available in this checkout", file=sys.stderr)
            return 2
        raise
    return int(mod.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        if not rest or rest[0] not in (*BENCHES, "all"):
            print(USAGE, file=sys.stderr)
            return 2
        names = list(BENCHES) if rest[0] == "all" else [rest[0]]
        code = 0
        for name in names:
            print(f"== bench {name}", flush=True)
            code |= _call(BENCHES[name], rest[1:])
        return code
    if cmd in ("demo", "run", "report"):
        return _call(f"eval.{cmd}", rest)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
