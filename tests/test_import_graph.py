"""skillmem's modules import one another without a circle, and the parts beneath the façade never name it.

The graph is read from the source (ast), not by importing, so a circle is caught even where
Python would tolerate it. An edge A -> B is any `import` or `from ... import` in A that
names B, counted wherever it stands:

- at module level (including inside `try:` and plain `if` blocks): it runs when A is imported;
- inside a function or method: it runs later, but it is still a dependency; a circle made of
  a deferred import only postpones the failure to the first call, so it counts the same;
- under `if TYPE_CHECKING:`: never runs and names a type for annotations only, so it is not
  an edge of the circle test; `test_beneath_the_facade` checks those too, for the parts that
  must not know `SkillMemory` at all.

`from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg`; names
`skillmem/__init__.py` exports lazily resolve to the module that defines them. A module's
own parent packages are not edges (Python initialises them first, always).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import skillmem

ROOT = Path(skillmem.__file__).resolve().parent.parent
PACKAGE = ROOT / "skillmem"

# Parts the façade (skillmem.memory) is built on: they get what they need passed in
# (an engine, an index, a Curator), so none of them may import the façade, even for a type.
BENEATH_FACADE = ("skillmem.episode", "skillmem.store", "skillmem.embed", "skillmem.tokens", "skillmem.domain",
                  "skillmem.index", "skillmem.curate", "skillmem.retrieve", "skillmem.llm", "skillmem.reflect",
                  "skillmem.policy", "skillmem.train")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _targets(mod: str, is_pkg: bool, node: ast.AST, mods: dict, lazy: dict[str, str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if node.level:
        base = base[:len(base) - (node.level - 1)]
        pkg = ".".join(base + ([node.module] if node.module else []))
    else:
        pkg = node.module or ""
    out = []
    for a in node.names:
        if f"{pkg}.{a.name}" in mods:
            out.append(f"{pkg}.{a.name}")
        elif pkg == "skillmem" and a.name in lazy:
            out.append(lazy[a.name])
        else:
            out.append(pkg)
    return out


def import_graph() -> tuple[dict[str, dict[str, str]], dict[str, set[str]]]:
    """(runtime edges: module -> {imported module: "module level" | "in a function"},
    type-only edges: module -> modules imported under TYPE_CHECKING)."""
    mods = _modules()
    lazy = {name: f"skillmem.{module}" for name, (module, _) in skillmem._EXPORTS.items()}
    runtime: dict[str, dict[str, str]] = {m: {} for m in mods}
    typing_only: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        def visit(body: list, where: str) -> None:
            for node in body:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for t in _targets(mod, is_pkg, node, mods, lazy):
                        if t in mods and t != mod and not mod.startswith(t + "."):
                            if where == "type checking":
                                typing_only[mod].add(t)
                            else:
                                runtime[mod].setdefault(t, where)
                elif isinstance(node, ast.If) and _is_type_checking(node):
                    visit(node.body, "type checking")
                    visit(node.orelse, where)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    visit(node.body, "type checking" if where == "type checking" else "in a function")
                else:  # class bodies, try/except, with, for, plain if: the same place as their parent
                    for child in ast.iter_child_nodes(node):
                        if isinstance(child, ast.stmt):
                            visit([child], where)
                        elif isinstance(child, ast.ExceptHandler):
                            visit(child.body, where)
        visit(ast.parse(path.read_text(), str(path)).body, "module level")
    return runtime, typing_only


def circles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    runtime, _ = import_graph()
    found = circles(runtime)
    lines = [f"{' <-> '.join(c)}: " + ", ".join(f"{a} -> {b} ({runtime[a][b]})" for a in c for b in runtime[a]
                                                if b in c) for c in found]
    assert not found, "import circles inside skillmem/ (move the shared part below both, or pass it in):\n" + \
        "\n".join(lines)


def test_the_graph_sees_imports_everywhere():
    """The reader finds imports in functions, methods and TYPE_CHECKING blocks (so a pass means something)."""
    runtime, typing_only = import_graph()
    assert runtime["skillmem.memory"]["skillmem.curate"] == "module level"
    assert runtime["skillmem.record"]["skillmem.messages"] == "in a function"  # wrap() dispatches lazily
    assert "skillmem.record" in typing_only["skillmem.messages"]
    # a made-up circle is found
    assert circles({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}}) == [["a", "b", "c"]]


def test_beneath_the_facade():
    """Curation, retrieval, the index, the store, ... never import skillmem.memory, not even for a type."""
    runtime, typing_only = import_graph()
    bad = sorted(f"{m} -> skillmem.memory" for m in runtime
                 if m.startswith(BENEATH_FACADE) and ("skillmem.memory" in runtime[m] or "skillmem.memory" in typing_only[m]))
    assert not bad, "parts beneath the façade import it (pass them the engine, index or Curator instead): " + \
        ", ".join(bad)


def test_no_reads_of_the_facades_privates():
    """Outside memory.py nothing in skillmem/ reaches into a SkillMemory's private attributes."""
    pattern = re.compile(r"\b(?:memory|mem|self\.memory)\._[a-z]\w*")
    hits = [f"{f.relative_to(ROOT)}:{i}: {line.strip()}"
            for f in sorted(PACKAGE.rglob("*.py")) if f.name != "memory.py" or f.parent != PACKAGE
            for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "use the façade's public methods, memory.index or memory.curator:\n" + "\n".join(hits)


def test_data_flows_harness_graphs_skillmem():
    """skillmem imports neither the graphs nor the harness; the graphs never import the harness."""
    bad = []
    for folder, banned in (("skillmem", ("eval", "graphs")), ("graphs", ("eval",))):
        for f in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                bad += [f"{f.relative_to(ROOT)}:{node.lineno}: imports {n}" for n in names
                        if n.split(".")[0] in banned]
    assert not bad, "\n".join(bad)
