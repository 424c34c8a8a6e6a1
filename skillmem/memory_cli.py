"""`skillmem index check|rebuild`: compare the saved vector index with SQL, or rebuild it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .cli import EXTENSIONS, command


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


def _add_parser(sub: Any) -> None:
    s = sub.add_parser("index", help="check the vector index against SQL, or rebuild it")
    s.add_argument("action", choices=["check", "rebuild"])
    s.add_argument("--model", default=None,
                   help="embedding model for rebuild (default: the one the saved index names, else all-MiniLM-L6-v2)")
    s.add_argument("--index-dir", default=None, help="index directory (default: next to the database)")


EXTENSIONS.append(_add_parser)


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
