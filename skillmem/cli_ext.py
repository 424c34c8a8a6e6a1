"""Subcommands that import heavy modules only when run: `skillmem train`, `skillmem policy list|rollback`.

skillmem.cli imports this module and calls each function in EXTENSIONS with the
subparsers; other parts append their own commands below.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional

from .cli import EXTENSIONS, command, print_rows


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
    from .train.trainer import TrainConfig, should_train

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


EXTENSIONS.append(_add_train)


@command("train")
def cmd_train(a: argparse.Namespace) -> int:
    from dataclasses import fields
    from pathlib import Path

    from .store import init_schema, make_engine, resolve_url
    from .train import gate as gates
    from .train.round import train_round
    from .train.trainer import TrainConfig, policy_run_dir, should_train

    config = TrainConfig(**{f.name: getattr(a, f.name) for f in fields(TrainConfig) if getattr(a, f.name) is not None})
    url = resolve_url(a.db)
    engine = make_engine(url)
    init_schema(engine)
    if a.policy == "trl":
        # Chat models train through their own backend (skillmem.train.trl_backend), behind the same gate.
        go, why, counts = should_train(engine, a.namespace, config)
        if not go and not a.force:
            print(f"skillmem train: not yet: {why}")
            return 0
        return _train_trl(a, engine, config, counts, url)
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
                    gate=not a.no_gate)
    if r.status == "skipped":
        print(f"skillmem train: not yet: {r.reason}")
        return 0
    if r.status == "no_examples":
        print(f"skillmem train: {r.reason}", file=sys.stderr)
        return 1
    t = r.train
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


def _train_trl(a: argparse.Namespace, engine: Any, config: Any, counts: dict[str, int], url: str) -> int:
    """`skillmem train --policy trl`: a chat model through TRL, behind the same gate and versions."""
    from pathlib import Path

    from .train.trl_backend import TRLConfig, train_chat_round

    if not a.base_model:
        print("skillmem train: --policy trl needs --base-model DIR (a local transformers chat model)", file=sys.stderr)
        return 2
    knobs = {"base_model": a.base_model, "objective": a.objective, "device": a.device, "dtype": a.dtype,
             "gradient_checkpointing": a.gradient_checkpointing, "sft_steps": a.sft_steps, "pref_steps": a.pref_steps,
             "lora_r": a.lora_r, "lr": a.lr, "batch_size": a.batch_size, "seed": a.seed,
             "max_history": a.max_history}
    tcfg = TRLConfig(**{k: v for k, v in knobs.items() if v is not None})
    out = Path(a.out) if a.out else Path(url.split("///", 1)[-1]).parent / "policies" / f"trl-{int(time.time())}"
    round_ = train_chat_round(engine, a.namespace, tcfg, out, heldout_fraction=config.heldout_fraction,
                              gate=not a.no_gate, data=counts)
    r = round_["result"]
    stages = ", ".join(f"{k} {v.get('steps', 0)} steps, loss {v.get('first_loss')} -> {v.get('last_loss')}"
                       for k, v in r.stages.items())
    print(f"trained {stages} ({r.status}, actions as {'tool calls' if r.tools else 'text'}): {r.path}")
    vid = round_["version_id"]
    if round_["promoted"] is None:
        print(f"version {vid}: candidate (not gated)")
        return 0
    d = round_.get("decision")
    if d is None:
        print(f"version {vid}: rejected (training stopped: {r.status})")
        return 1
    print(f"version {vid}: {'promoted' if d.promoted else 'rejected'} "
          f"(held-out score {d.candidate_score:.3f} vs {d.current_score})")
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


EXTENSIONS.append(_add_export)


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


EXTENSIONS.append(_add_reflect)


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
                      "demonstrations": report.demonstrations, "no_lesson": report.no_lesson,
                      "no_lesson_reasons": report.no_lesson_reasons, "skipped": report.skipped,
                      "errors": report.errors}))
    for why, n in sorted(report.no_lesson_reasons.items(), key=lambda kv: -kv[1]):
        print(f"skillmem reflect: {n} failure(s) gave no lesson: {why}", file=sys.stderr)
    if report.errors:
        print(f"skillmem reflect: {report.errors} episode(s) stay queued after writer errors; see "
              "`skillmem sql \"SELECT id, reflection_error FROM episodes WHERE reflection_error IS NOT NULL\"` "
              "and rerun skillmem reflect", file=sys.stderr)
    return 1 if report.errors else 0
