"""The package's shape: modules import each other in one direction only."""
import ast
from pathlib import Path

LMKIT = Path(__file__).resolve().parents[1] / "lmkit"


def _imports() -> dict[str, set[str]]:
    """{module: the lmkit modules it imports}, wherever in the file the import stands; names are
    dotted below lmkit ("train", "chain.reuse", "use.inference")."""
    graph = {}
    for f in LMKIT.rglob("*.py"):
        rel = f.relative_to(LMKIT).with_suffix("")
        name = ".".join(rel.parts)
        package = list(rel.parts[:-1])
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    target = base + node.module.split(".")
                    deps.add(".".join(target) if ".".join(target) in _modules() else ".".join(target[:-1]))
                else:
                    deps.update(".".join(base + [a.name]) for a in node.names)
        graph[name] = {d for d in deps if d}
    return graph


def _modules() -> set[str]:
    return {".".join(f.relative_to(LMKIT).with_suffix("").parts) for f in LMKIT.rglob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d in graph and d not in state and (found := visit(d, path + [d])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_inside_lmkit():
    graph = _imports()
    assert {"params", "train", "prepare", "cells", "chain.pipeline", "chain.reuse", "use.detector"} <= set(graph)
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_three_parts_the_machinery_imports_the_helpers_never_the_reverse():
    """lmkit's own modules (the study's helpers) and lmkit.use never import lmkit.chain, the
    machinery that runs the chain: a student reading the helpers never needs to open it."""
    graph = _imports()
    for module, deps in graph.items():
        if not module.startswith("chain."):
            assert not {d for d in deps if d == "chain" or d.startswith("chain.")}, module
    assert not graph["params"] - {"runfolder"}, "the params schema is a leaf: everything else may import it"
