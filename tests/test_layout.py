"""The house keeps its wings: no import cycle between files of `xp/`, and no import against the
one-way flow `cli -> search -> verbs -> execute -> train -> record -> config, stats`.

Every import counts, at the top of a file or inside a function (a lazy import is still a
dependency), `TYPE_CHECKING` ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

XP = Path(__file__).resolve().parents[1] / "xp"

# the wings, bottom (0) to top; a module may import its own wing and those below it
WINGS = {
    "xp": 0,  # the package itself: XpError, one_line
    "xp.config": 0,
    "xp.stats": 0,
    "xp.record": 1,
    "xp.diagnose": 1,  # why a run is good or bad: the data audit; beside record, below trainers
    "xp.train": 2,
    "xp.integrations": 2,  # other people's trainers: beside xp's own
    "xp.execute": 3,
    **{
        f"xp.{verb}": 4
        for verb in (
            "repeat",
            "compare",
            "registry",
            "reproduce",
            "judge",
            "summary",
            "report",
            "checkup",
            "ensemble",
        )
    },
    "xp.search": 5,  # a verb built on verbs: it confirms with repeat, ranks with compare
    "xp.cli": 6,
}


def modules() -> dict[str, Path]:
    """Module name -> file, for every file under xp/ (a package is its `__init__`)."""
    found = {}
    for path in sorted(XP.rglob("*.py")):
        parts = path.relative_to(XP.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The xp modules `name` imports: `from xp.a import b` is `xp.a.b` where that is a module,
    else `xp.a`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package up
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]  # fmt: skip
        for target in targets:
            while target and target not in known:  # `import xp.train.loop` -> that module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def wing(name: str) -> tuple[str, int]:
    """The wing a module belongs to (its longest listed prefix) and that wing's level."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in WINGS:
            return prefix, WINGS[prefix]
    raise AssertionError(f"{name} is in no wing: add it to WINGS (and to docs/architecture.md)")


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_wing():
    for name in GRAPH:
        wing(name)


def test_no_import_cycle_between_files():
    assert cycles(GRAPH) == []


def test_no_import_against_the_flow():
    upward = [
        f"{a} ({wing(a)[0]}) imports {b} ({wing(b)[0]})"
        for a, targets in GRAPH.items()
        for b in targets
        if wing(b)[1] > wing(a)[1]
    ]
    assert upward == []


def test_record_knows_no_trainer_executor_search_or_cli():
    """record/ is the core every trainer uses: it sees config, stats and itself only."""
    seen = {b for a, targets in GRAPH.items() if a.startswith("xp.record") for b in targets}
    assert {wing(b)[0] for b in seen} <= {"xp", "xp.config", "xp.stats", "xp.record"}


def test_the_checks_catch_a_cycle_and_an_upward_import():
    """The checks above are not vacuous: a made-up graph with both is caught."""
    graph = {"xp.record.a": {"xp.train.b"}, "xp.train.b": {"xp.record.a"}, "xp.cli.c": set()}
    assert cycles(graph) == [["xp.record.a", "xp.train.b"]]
    assert wing("xp.train.b")[1] > wing("xp.record.a")[1]  # record -> train runs upward


@pytest.mark.parametrize("module", ["xp.train.loop", "xp.execute.worker", "xp.record.tags"])
def test_the_arrows_the_issue_named_are_gone(module):
    """The trainer imported the search, a worker the CLI, the record the data reader."""
    banned = {"xp.train.loop": "xp.search", "xp.execute.worker": "xp.cli",
              "xp.record.tags": "xp.train"}[module]  # fmt: skip
    assert not any(b == banned or b.startswith(banned + ".") for b in GRAPH[module])
