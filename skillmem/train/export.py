"""What memory learned, as the datasets chat-model trainers take (TRL's formats), in JSONL or `datasets`.

Three files, each one TRL dataset type in its conversational form:

* ``sft.jsonl`` — prompt-completion rows (for `SFTTrainer`): each step of a successful episode
  (a demonstration) and each corrected action of directive feedback, after the same prefix the
  agent saw. Actions are assistant **tool calls** (`tools=True`) or ``Action: ...`` text.
* ``preference.jsonl`` — ``prompt``/``chosen``/``rejected`` (for `DPOTrainer`): at a failed
  episode's pivot, the corrected action against the bad one, after the same prefix.
* ``kto.jsonl`` — ``prompt``/``completion``/``label`` (for `KTOTrainer`): unpaired steps, the
  demonstrated and corrected ones good, the pivots' bad actions bad.

Every row has a ``tools`` column (a JSON string, as TRL's trainers read it) and a ``meta``
column (episode, step, kind, group) saying where it came from; ``manifest.json`` counts them.
Prompts carry no retrieved memory: these are what the weights should learn without it. Only
episodes of the train and live splits are read (see `collect_examples`).

    records = export_records(engine, "default")
    write_jsonl(records, "runs/export")          # or: to_datasets(records)["sft"]
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..policy.chat import ACT_TOOL, PROMPT_VERSION, assistant_turn, chat_messages, tool_call
from .data import TRAIN_SPLITS, Example, collect_examples

KINDS = ("sft", "preference", "kto")


@dataclass
class ExportConfig:
    """What `export_records` writes; saved in the export's manifest."""

    tools: bool = True
    """Actions as tool calls in the chat format (False: plain 'Action: ...' text)."""
    max_history: int = 8
    """Past steps kept in each prompt (older ones are summarized as a count)."""
    splits: tuple[str, ...] = TRAIN_SPLITS
    admissible: bool = True
    """List the admissible actions in the prompt, as the acting policy does."""


@dataclass
class Records:
    """The exported rows by dataset type, and the config that made them."""

    sft: list[dict[str, Any]] = field(default_factory=list)
    preference: list[dict[str, Any]] = field(default_factory=list)
    kto: list[dict[str, Any]] = field(default_factory=list)
    config: ExportConfig = field(default_factory=ExportConfig)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in KINDS}


def tools_schema(actions: Sequence[str]) -> list[dict[str, Any]]:
    """Function schemas for the tools the actions call: `act` and any recorded tool, arguments as seen."""
    props: dict[str, dict[str, Any]] = {}
    for a in actions:
        call = tool_call(a)
        if call["name"] == "act":
            continue
        seen = props.setdefault(call["name"], {})
        for k, v in call["arguments"].items():
            seen.setdefault(k, {"type": {bool: "boolean", int: "integer", float: "number", str: "string",
                                         list: "array", dict: "object"}.get(type(v), "string")})
    out = [ACT_TOOL]
    for name, p in sorted(props.items()):
        out.append({"type": "function", "function": {
            "name": name, "description": f"the {name} tool, as the recorded agent called it",
            "parameters": {"type": "object", "properties": p, "required": sorted(p)}}})
    return out


def _prompt(ex: Example, cfg: ExportConfig) -> list[dict[str, Any]]:
    return chat_messages(ex.goal, ex.history, "", ex.candidates if cfg.admissible else None,
                         tools=cfg.tools, max_history=cfg.max_history)


def _completion(action: str, cfg: ExportConfig, ex: Example) -> list[dict[str, Any]]:
    return [assistant_turn(action, tools=cfg.tools, call_id=f"call_{min(len(ex.history), cfg.max_history)}")]


def _meta(ex: Example, kind: str, **extra: Any) -> dict[str, Any]:
    return {"episode_id": ex.episode_id, "step": ex.step_index, "source": kind, "group": ex.group,
            "task_type": ex.task_type, **extra}


def _taken_actions(engine: Any, keys: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The action the agent actually took at each (episode, step)."""
    from sqlalchemy import text

    if not keys:
        return {}
    out: dict[tuple[str, int], str] = {}
    wanted = defaultdict(set)
    for ep, i in keys:
        wanted[ep].add(i)
    with engine.connect() as conn:
        for ep, steps in wanted.items():
            for idx, action in conn.execute(text('SELECT "index", action FROM steps WHERE episode_id = :e'), {"e": ep}):
                if int(idx) in steps:
                    out[(ep, int(idx))] = action or ""
    return out


def export_records(engine: Any, namespace: str = "default", config: Optional[ExportConfig] = None, *,
                   examples: Optional[Sequence[Example]] = None) -> Records:
    """SFT, preference and KTO rows from the store's train/live episodes, feedback and lessons."""
    cfg = config or ExportConfig()
    if examples is None:
        examples = collect_examples(engine, namespace, splits=cfg.splits, max_history=1_000_000, max_candidates=0,
                                    distill=False)
    rec = Records(config=cfg)
    tools = json.dumps(tools_schema([a for e in examples for a in [e.target, *(e.good_action or "",)]
                                     + [h[0] for h in e.history] if a]) if cfg.tools else [])
    directive_keys = {(e.episode_id, e.step_index) for e in examples if e.kind == "directive"}
    taken = _taken_actions(engine, directive_keys)
    paired: set[tuple[str, int]] = set()
    for ex in examples:
        if ex.kind not in ("demo", "directive", "negative"):
            continue  # distillation needs a teacher's distribution, not one action: the CPU trainer's job
        prompt = _prompt(ex, cfg)
        key = (ex.episode_id, ex.step_index)
        if ex.kind in ("demo", "directive"):
            rec.sft.append({"prompt": prompt, "completion": _completion(ex.target, cfg, ex), "tools": tools,
                            "meta": _meta(ex, ex.kind)})
            rec.kto.append({"prompt": prompt, "completion": _completion(ex.target, cfg, ex), "label": True,
                            "tools": tools, "meta": _meta(ex, ex.kind)})
            bad = taken.get(key) if ex.kind == "directive" else None
            if bad and bad != ex.target and key not in paired:
                paired.add(key)
                rec.preference.append({"prompt": prompt, "chosen": _completion(ex.target, cfg, ex),
                                       "rejected": _completion(bad, cfg, ex), "tools": tools,
                                       "meta": _meta(ex, "directive_pivot", chosen=ex.target, rejected=bad)})
        else:
            rec.kto.append({"prompt": prompt, "completion": _completion(ex.target, cfg, ex), "label": False,
                            "tools": tools, "meta": _meta(ex, "pivot")})
            if ex.good_action and ex.good_action != ex.target and key not in paired:
                paired.add(key)
                rec.preference.append({"prompt": prompt, "chosen": _completion(ex.good_action, cfg, ex),
                                       "rejected": _completion(ex.target, cfg, ex), "tools": tools,
                                       "meta": _meta(ex, "pivot", chosen=ex.good_action, rejected=ex.target)})
    return rec


def write_jsonl(records: Records, out_dir: str | Path, *, namespace: str = "") -> dict[str, Path]:
    """sft.jsonl, preference.jsonl, kto.jsonl and manifest.json into `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in KINDS:
        paths[kind] = out / f"{kind}.jsonl"
        tmp = paths[kind].with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in getattr(records, kind):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(paths[kind])  # a kill leaves the old file or the new, never half
    manifest = {"namespace": namespace, "counts": records.counts(), "config": asdict(records.config),
                "prompt_version": PROMPT_VERSION,
                "trainers": {"sft": "trl.SFTTrainer", "preference": "trl.DPOTrainer", "kto": "trl.KTOTrainer"}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    paths["manifest"] = out / "manifest.json"
    return paths


def to_datasets(records: Records, *, meta: bool = False) -> dict[str, Any]:
    """Each non-empty kind as a `datasets.Dataset`, ready for TRL's trainers (`meta` column dropped unless asked).

    Message columns use the `Json` feature: Arrow would otherwise give every message every key
    any message has (``tool_calls: None`` on a user turn), which chat templates misread.
    """
    import datasets

    out = {}
    for kind in KINDS:
        rows = getattr(records, kind)
        if not rows:
            continue
        rows = [{k: v for k, v in r.items() if meta or k != "meta"} for r in rows]
        features = datasets.Features({
            k: (datasets.Value("bool") if k == "label" else datasets.Value("string") if k == "tools"
                else datasets.Json()) for k in rows[0]})
        out[kind] = datasets.Dataset.from_list(rows, features=features)
    return out


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of one exported file; a clear error for a line that is not JSON."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not a JSON line ({e}); re-export with skillmem export") from None
    return rows


def load_datasets(out_dir: str | Path) -> dict[str, Any]:
    """An export directory (`skillmem export --out DIR`) back as `datasets.Dataset` objects for TRL."""
    out = Path(out_dir)
    if not (out / "manifest.json").exists():
        raise FileNotFoundError(f"{out} holds no export (manifest.json missing); run skillmem export --out {out}")
    rec = Records(config=ExportConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in
                                         json.loads((out / "manifest.json").read_text())["config"].items()}))
    for kind in KINDS:
        if (out / f"{kind}.jsonl").exists():
            setattr(rec, kind, load_jsonl(out / f"{kind}.jsonl"))
    return to_datasets(rec)
