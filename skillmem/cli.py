"""`skillmem ...`: inspect the store with plain SQL, list episodes and lessons, run maintenance.

Every subcommand is here: sql, episodes, lessons (list, retire, restore, approve), train,
policy (list, rollback), export, reflect, index (check, rebuild). Each imports what it
needs (torch, faiss, the trainer, the writers) inside its own function, so `skillmem sql`
costs no more than SQLAlchemy. Exit codes: 0 done, 1 refused or failed (the message says
why), 2 bad arguments, 3 a write refused by the read-only SQL session, 4 a missing file.
"""

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


# --------------------------------------------------------------------------- skillmem sql, episodes, lessons


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


# --------------------------------------------------------------------------- skillmem train, policy


def _add_train(sub: Any) -> None:
    from dataclasses import fields

    s = sub.add_parser("train", help="train a policy on the store's episodes, lessons and feedback; gate it")
    s.add_argument("--namespace", "-n", default="default")
    s.add_argument("--out", default=None, help="run directory (default: <db dir>/policies/<version id>)")
    s.add_argument("--policy", choices=["cpu", "hf", "trl"], default="cpu",
                   help="kind of policy to train (trl: a chat model, SFT then DPO/KTO with LoRA, through TRL)")
    s.add_argument("--base-model", default=None, help="hf, trl: a local model directory (see policy.hf.from_gguf)")
    t = s.add_argument_group("chat models (--policy trl)")
    t.add_argument("--objective", choices=["dpo", "kto", "sft"], default="dpo", help="after SFT: DPO, KTO or nothing")
    t.add_argument("--sft-steps", type=int, default=None, help="SFT optimizer steps (default 60)")
    t.add_argument("--pref-steps", type=int, default=None, help="DPO/KTO optimizer steps (default 60)")
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    t.add_argument("--dtype", default="auto", help="auto (bfloat16 on a GPU that has it, else float32), float32, bfloat16")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save GPU memory")
    t.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default 16)")
    s.add_argument("--force", action="store_true", help="train even if the trigger says there is too little new data")
    s.add_argument("--no-gate", action="store_true", help="register the candidate without evaluating it")
    # Every TrainConfig knob is a flag, with its own help.
    from .train.config import TrainConfig

    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            s.add_argument(flag, dest=f.name, type=lambda v: v.lower() in ("1", "true", "yes"), default=None,
                           help=f.metadata.get("help", "") + " (true/false)")
        else:
            s.add_argument(flag, dest=f.name, type={"int": int, "float": float}.get(str(f.type), str), default=None,
                           help=f.metadata.get("help", ""))

    p = sub.add_parser("policy", help="list policy versions, or roll back to the previous one")
    p.add_argument("action", choices=["list", "rollback"])
    p.add_argument("--namespace", "-n", default="default")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")



@command("train")
def cmd_train(a: argparse.Namespace) -> int:
    from dataclasses import fields
    from pathlib import Path

    from .store import init_schema, make_engine, resolve_url
    from .train import gate as gates
    from .train.round import train_round
    from .train.trainer import TrainConfig, policy_run_dir

    config = TrainConfig(**{f.name: getattr(a, f.name) for f in fields(TrainConfig) if getattr(a, f.name) is not None})
    url = resolve_url(a.db)
    engine = make_engine(url)
    init_schema(engine)
    backend = None
    if a.policy == "trl":
        if not a.base_model:
            print("skillmem train: --policy trl needs --base-model DIR (a local transformers chat model)",
                  file=sys.stderr)
            return 2
        from .train.trl_backend import TRLBackend, TRLConfig

        # TrainConfig's trigger and split knobs hold for chat models too; these are the TRL run's own.
        knobs = {"base_model": a.base_model, "objective": a.objective, "device": a.device, "dtype": a.dtype,
                 "gradient_checkpointing": a.gradient_checkpointing, "sft_steps": a.sft_steps,
                 "pref_steps": a.pref_steps, "lora_r": a.lora_r, "lr": a.lr, "batch_size": a.batch_size,
                 "seed": a.seed, "max_history": a.max_history}
        backend = TRLBackend(TRLConfig(**{k: v for k, v in knobs.items() if v is not None}))
    current = gates.current_version(engine, a.namespace)
    if a.policy == "hf" and not a.base_model and (current is None or current.kind != "hf"):
        print("skillmem train: --policy hf needs --base-model DIR (a local transformers model)", file=sys.stderr)
        return 2

    def new_policy() -> Any:
        if a.policy == "hf":
            from .policy.hf import HFPolicy, HFPolicyConfig

            return HFPolicy(HFPolicyConfig(base_model=a.base_model))
        from .policy import CPUPolicy

        return CPUPolicy()

    # One folder per store, namespace and version number: tenant B never resumes or overwrites
    # A's run, and a rerun after a kill (no version registered yet) resumes its own.
    vid_hint = f"{a.policy}-{len(gates.list_versions(engine, a.namespace)) + 1}"
    out = (Path(a.out).expanduser().resolve() if a.out else policy_run_dir(url, a.namespace, vid_hint))
    owner = out / "run.json"
    mine = {"store": engine.url.render_as_string(hide_password=True), "namespace": a.namespace}
    if owner.exists() and json.loads(owner.read_text()) != mine:
        print(f"skillmem train: {out} holds a run of {json.loads(owner.read_text())}; give another --out",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    owner.write_text(json.dumps(mine))
    r = train_round(engine, a.namespace, out, config, kind=a.policy, new_policy=new_policy, force=a.force,
                    gate=not a.no_gate, backend=backend)
    if r.status == "skipped":
        print(f"skillmem train: not yet: {r.reason}")
        return 0
    if r.status == "no_examples":
        print(f"skillmem train: {r.reason}", file=sys.stderr)
        return 1
    t = r.train
    if t.stages:  # a chat model: SFT, then DPO or KTO
        done = ", ".join(f"{k} {v.get('steps', 0)} steps, loss {v.get('first_loss')} -> {v.get('last_loss')}"
                         for k, v in t.stages.items())
        print(f"trained {done} ({t.status}, actions as {'tool calls' if backend.config.tools else 'text'}): {t.path}")
    else:
        print(f"trained {t.steps} steps ({t.status}), {t.examples_per_s:.0f} examples/s, loss {t.loss:.4f}: {t.path}")
    if r.status == "stopped":
        print(f"version {r.version_id}: rejected ({r.reason})")
        return 1
    if r.status == "candidate":
        print(f"version {r.version_id}: candidate (not gated)")
        return 0
    d = r.decision
    print(f"version {r.version_id}: {r.status} (held-out score {d.candidate_score:.3f} vs {d.current_score})")
    return 0


@command("policy")
def cmd_policy(a: argparse.Namespace) -> int:
    from .store import make_engine, resolve_url
    from .train import gate as gates

    engine = make_engine(resolve_url(a.db))
    try:
        if a.action == "rollback":
            try:
                now = gates.rollback(engine, a.namespace)
            except ValueError as exc:
                print(f"skillmem policy rollback: {exc}", file=sys.stderr)
                return 1
            print(f"rolled back; current policy: {now or 'the untrained default'}")
            return 0
        rows = [(v.id, v.kind, v.status, v.parent_id, json.dumps({k: v.metrics.get(k) for k in ("score", "compared_score")
                                                                   if k in v.metrics}), v.path, v.created_at)
                for v in gates.list_versions(engine, a.namespace)]
        print_rows(["id", "kind", "status", "parent", "metrics", "path", "created_at"], rows, a.format)
        return 0
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- skillmem export


def _add_export(sub: Any) -> None:
    s = sub.add_parser("export", help="write what memory learned as TRL datasets: SFT, preference pairs, KTO (JSONL)")
    s.add_argument("--namespace", "-n", default="default")
    s.add_argument("--out", required=True, help="directory for sft.jsonl, preference.jsonl, kto.jsonl, manifest.json")
    s.add_argument("--text-actions", dest="tools", action="store_false",
                   help="actions as 'Action: ...' text instead of tool calls (for chat templates without tools)")
    s.add_argument("--max-history", type=int, default=8, help="past steps kept in each prompt")



@command("export")
def cmd_export(a: argparse.Namespace) -> int:
    from .store import init_schema, make_engine, resolve_url
    from .train.export import ExportConfig, export_records, write_jsonl

    engine = make_engine(resolve_url(a.db))
    try:
        init_schema(engine)
        records = export_records(engine, a.namespace, ExportConfig(tools=a.tools, max_history=a.max_history))
        paths = write_jsonl(records, a.out, namespace=a.namespace)
    finally:
        engine.dispose()
    print(json.dumps({"out": str(paths["manifest"].parent), **records.counts()}))
    if not any(records.counts().values()):
        print(f"skillmem export: namespace {a.namespace!r} has no finished train/live episodes with verified "
              "outcomes to export; record some first", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- skillmem reflect


def _add_reflect(sub: Any) -> None:
    s = sub.add_parser("reflect", help="drain the reflection queue: lessons from failures, demos from successes")
    s.add_argument("--namespace", "-n", default="default", help="namespace to drain ('*' for all)")
    s.add_argument("--limit", type=int, default=None, help="reflect at most this many episodes")
    s.add_argument("--offline", action="store_true", help="use the offline writer even if SKILLMEM_LLM_* is set")
    s.add_argument("--retry-failed", dest="retry_failed", action="store_true",
                   help="put episodes the writer gave up on back into the queue first")
    s.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    s.add_argument("--domain", default=None, metavar="MODULE:CLASS",
                   help="the world's Domain, imported by path (default: the generic TextDomain)")



def load_domain(ref: Optional[str]) -> Any:
    """A Domain from "package.module:Class" (None: the generic default)."""
    if not ref:
        return None
    import importlib

    mod, _, name = ref.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), name or "Domain")
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"--domain {ref!r}: cannot import it ({exc}); give MODULE:CLASS of a Domain") from exc
    return obj() if isinstance(obj, type) else obj


@command("reflect")
def cmd_reflect(a: argparse.Namespace) -> int:
    from .memory import SkillMemory
    from .reflect import OfflineWriter, default_writer, reflect_pending, retry_failed

    mem = SkillMemory(a.db, namespace=a.namespace if a.namespace != "*" else "default")
    try:
        if a.retry_failed:
            print(f"{retry_failed(mem, a.namespace)} failed episode(s) back in the queue", file=sys.stderr)
        writer = OfflineWriter() if a.offline else default_writer()
        report = reflect_pending(mem, writer, a.namespace, limit=a.limit, progress=a.progress,
                                 domain=load_domain(getattr(a, "domain", None)))
    finally:
        mem.close()
    print(json.dumps({"writer": writer.name, "done": report.done, "lessons": report.lessons,
                      "more_lessons": report.more_lessons, "demonstrations": report.demonstrations, "no_lesson": report.no_lesson,
                      "no_lesson_reasons": report.no_lesson_reasons, "skipped": report.skipped,
                      "errors": report.errors}))
    for why, n in sorted(report.no_lesson_reasons.items(), key=lambda kv: -kv[1]):
        print(f"skillmem reflect: {n} failure(s) gave no lesson: {why}", file=sys.stderr)
    if report.errors:
        print(f"skillmem reflect: {report.errors} episode(s) stay queued after writer errors; see "
              "`skillmem sql \"SELECT id, reflection_error FROM episodes WHERE reflection_error IS NOT NULL\"` "
              "and rerun skillmem reflect", file=sys.stderr)
    return 1 if report.errors else 0


# --------------------------------------------------------------------------- skillmem index


def embedder_for(name: str | None) -> Any:
    """The embedder a saved index was built with, by its name (hashing-N, the default, or a model path)."""
    from .embed import DEFAULT_MODEL_NAME, HashingEmbedder, SentenceTransformerEmbedder, default_embedder

    if name and name.startswith("hashing-") and name[8:].isdigit():
        return HashingEmbedder(int(name[8:]))
    if not name or name == DEFAULT_MODEL_NAME:
        return default_embedder()
    return SentenceTransformerEmbedder(name)


def _saved_model(db: Any, index_dir: Any) -> str | None:
    """The embedding model the saved index of this store names, if there is one."""
    from .index.memory import default_index_dir
    from .store import resolve_url

    try:
        manifest = json.loads((default_index_dir(resolve_url(db), index_dir) / "manifest.json").read_text())
        return manifest.get("meta", {}).get("model")
    except (OSError, ValueError):
        return None


def _add_index(sub: Any) -> None:
    s = sub.add_parser("index", help="check the vector index against SQL, or rebuild it")
    s.add_argument("action", choices=["check", "rebuild"])
    s.add_argument("--model", default=None,
                   help="embedding model for rebuild (default: the one the saved index names, else all-MiniLM-L6-v2)")
    s.add_argument("--index-dir", default=None, help="index directory (default: next to the database)")



@command("index")
def cmd_index(a: argparse.Namespace) -> int:
    from .memory import SkillMemory

    # A rebuild embeds with the model the saved index names (or --model); a check embeds nothing.
    embedder = embedder_for(a.model or _saved_model(a.db, a.index_dir)) if a.action == "rebuild" else None
    memory = SkillMemory(a.db, index_dir=a.index_dir, embedder=embedder)
    try:
        if a.action == "check":
            report = memory.index_check()
            print(json.dumps(report, indent=1))
            return 0 if report.get("ok") else 1
        counts = memory.index_rebuild()
        print(json.dumps({"rebuilt": counts, "directory": str(memory.index.directory),
                          "model": memory.embedder.name, "high_water": memory.index.mark}))
        return 0
    finally:
        memory.close()


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skillmem", description=__doc__.split("\n\n")[0])
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
    _add_train(sub)  # train and policy
    _add_export(sub)
    _add_reflect(sub)
    _add_index(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
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


if __name__ == "__main__":  # python -m skillmem.cli (torchrun, accelerate launch)
    sys.exit(main())
