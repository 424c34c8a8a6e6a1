"""The offline demo (until the harness lands: the recording example)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "record_langgraph_agent.py"
    mod = runpy.run_path(str(example))
    return mod["main"](argv)
