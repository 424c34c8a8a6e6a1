"""`skillmem ...`: inspect the store with plain SQL, list episodes and lessons, run maintenance."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import date, datetime
from typing import Any, Callable, Optional, Sequence

from .store import ReadOnlyError, resolve_url, run_sql

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return v


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table",
               max_width: int = 60, out: Any = None) -> None:
    """Rows as an aligned table, CSV or JSON lines."""
    out = out or sys.stdout
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(columns)
        w.writerows([[_jsonable(v) for v in r] for r in rows])
        return
    if fmt == "json":
        json.dump([{c: _jsonable(v) for c, v in zip(columns, r)} for r in rows], out, indent=1, default=str)
        out.write("\n")
        return

    def cell(v: Any) -> str:
        s = "" if v is None else str(_jsonable(v)).replace("\n", " ")
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn
    return deco


@command("sql")
def cmd_sql(a: argparse.Namespace) -> int:
    cols, rows = run_sql(resolve_url(a.db), a.query, write=a.write)
    print_rows(cols, rows, a.format, max_width=10_000 if a.format != "table" else a.width)
    return 0


@command("episodes")
def cmd_episodes(a: argparse.Namespace) -> int:
    where = ["namespace = :ns"]
    params: dict[str, Any] = {"ns": a.namespace, "n": a.limit}
    for col in ("split", "outcome", "task_type", "status"):
        if getattr(a, col):
            where.append(f"{col} = :{col}")
            params[col] = getattr(a, col)
    sql = ("SELECT id, started_at, task_type, split, status, outcome, outcome_source, num_steps, "
           "total_reward, reflection_status, goal FROM episodes WHERE " + " AND ".join(where) +
           " ORDER BY started_at DESC LIMIT :n")
    _reap(a.db)
    cols, rows = run_sql(resolve_url(a.db), sql, params)
    print_rows(cols, rows, a.format)
    return 0


@command("lessons")
def cmd_lessons(a: argparse.Namespace) -> int:
    if a.action in ("restore", "approve", "retire"):
        return _lesson_action(a)
    where = ["namespace = :ns"]
    params: dict[str, Any] = {"ns": a.namespace, "n": a.limit}
    if a.status:
        where.append("status = :status")
        params["status"] = a.status
    if a.task_type:
        where.append("task_type = :tt")
        params["tt"] = a.task_type
    sql = ("SELECT id, status, scope, task_type, version, support, episodes_used, successes, failures, "
           "trigger, fix FROM lesson_usage WHERE " + " AND ".join(where) + " ORDER BY id LIMIT :n")
    cols, rows = run_sql(resolve_url(a.db), sql, params)
    print_rows(cols, rows, a.format)
    return 0


def _lesson_action(a: argparse.Namespace) -> int:
    from .memory import SkillMemory

    if not a.ids:
        print(f"skillmem lessons {a.action}: give one or more lesson ids", file=sys.stderr)
        return 2
    mem = SkillMemory(a.db, namespace=a.namespace)
    fn = getattr(mem, f"{a.action}_lesson", None)
    if fn is None:
        print(f"skillmem lessons {a.action}: not available in this version", file=sys.stderr)
        return 2
    from .curate import CurationError

    try:
        for i in a.ids:
            if not str(i).isdigit():
                print(f"skillmem lessons {a.action}: {i!r} is not a lesson id", file=sys.stderr)
                return 2
            # Scoped to -n: an id from another tenant's namespace is refused, never changed.
            fn(int(i), reason=a.reason or f"cli {a.action}", namespace=a.namespace)
            print(f"lesson {i}: {a.action}d")
    except CurationError as exc:
        print(f"skillmem lessons {a.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        mem.close()
    return 0


def _reap(db: Optional[str]) -> None:
    # Listing is when people look for lost episodes: settle the dead ones first.
    from .store import make_engine, reap_interrupted

    try:
        engine = make_engine(resolve_url(db))
        reap_interrupted(engine)
        engine.dispose()
    except Exception:
        pass  # a read-only file system or a missing table: listing still works


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skillmem", description=__doc__)
    p.add_argument("--db", default=None, help="SQLite path or database URL (default: $SKILLMEM_DB or "
                                              "~/.local/share/skillmem/skillmem.db)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sql", help="run one SQL statement, read-only unless --write")
    s.add_argument("query")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--width", type=int, default=60, help="cut table cells at this many characters")
    s.add_argument("--write", action="store_true", help="allow statements that change the store")

    for name in ("episodes", "lessons"):
        s = sub.add_parser(name, help=f"list {name} readably")
        s.add_argument("--namespace", "-n", default="default")
        s.add_argument("--limit", type=int, default=50)
        s.add_argument("--format", choices=["table", "csv", "json"], default="table")
        s.add_argument("--task-type", dest="task_type", default=None)
        s.add_argument("--status", default=None)
        if name == "episodes":
            s.add_argument("--split", default=None)
            s.add_argument("--outcome", default=None)
        else:
            s.add_argument("action", nargs="?", default="list", choices=["list", "restore", "approve", "retire"])
            s.add_argument("ids", nargs="*")
            s.add_argument("--reason", default="")
    for extend in EXTENSIONS:
        extend(sub)
    return p


# Other modules add their subcommands here (index, reflect, train, policy) without this
# file importing them eagerly: importing torch or faiss for `skillmem sql` would cost seconds.
EXTENSIONS: list[Callable[[Any], None]] = []


def _load_extensions() -> None:
    import importlib

    for mod in ("skillmem.cli_ext", "skillmem.memory_cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    _load_extensions()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except ReadOnlyError as exc:
        print(f"skillmem: {exc}", file=sys.stderr)
        return 3
    except FileNotFoundError as exc:
        print(f"skillmem: {exc}", file=sys.stderr)
        return 4
    except Exception as exc:  # a bad query, a missing table: say it plainly, no traceback
        if "sqlalche" in type(exc).__module__ or "sqlite" in type(exc).__module__ or "psycopg" in type(exc).__module__:
            msg = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            print(f"skillmem: the database refused the statement: {msg}", file=sys.stderr)
            return 3 if "readonly" in msg.lower() or "read-only" in msg.lower() else 1
        raise


if __name__ == "__main__":
    # Run as `python -m skillmem.cli`, this file is `__main__`; extensions register on
    # `skillmem.cli`, so dispatch through that module.
    from skillmem.cli import main as _main

    sys.exit(_main())
