"""The package's shape: folders are floors, every import points down or along a floor, and no
two modules import each other round a cycle.

A module may import its own folder and the folders below it, never one above, function-local
imports included (where an upward arrow would otherwise hide): the study's helpers never import
the machinery that runs the chain, so a student reading them never needs to open it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmkit"
# ground floor first: what each folder may import is itself and everything before it
FLOORS = ["run", "study", "data", "train", "use", "report", "chain", "cli"]


def floor(module: str) -> int:
    """The floor of ``lmkit.<folder>...`` (``lmkit`` itself, the version, is below them all)."""
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 else -1


def modules() -> dict[str, Path]:
    """{dotted module name: file} for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        found[".".join(p for p in rel.parts if p != "__init__")] = path
    return found


def lmkit_imports(path: Path, known: dict | None = None) -> list[tuple[int, str]]:
    """Every ``lmkit`` module a file imports, top-level or inside a function: (line, module).
    ``from lmkit.x import y`` counts as ``lmkit.x.y`` where that is a module."""
    known = modules() if known is None else known
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "lmkit"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, (
                f"{path}:{node.lineno}: a relative import; write lmkit.<folder>.<module>"
            )
            if node.module and node.module.split(".")[0] == "lmkit":
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.append((node.lineno, sub if sub in known else node.module))
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for _, t in lmkit_imports(p, known)} - {m} for m, p in known.items()}


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d in g and d not in state and (found := visit(d, path + [d])):
                return found
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_every_module_sits_on_a_floor():
    assert {
        "lmkit.run.params",
        "lmkit.study.model",
        "lmkit.train.loop",
        "lmkit.chain.pipeline",
        "lmkit.cli",
    } <= set(modules())
    loose = [m for m in modules() if m != "lmkit" and m.split(".")[1] not in FLOORS]
    assert not loose, f"modules outside the floors {FLOORS}: {loose}"


def test_no_import_points_up():
    known = modules()
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {mod} imports {target}"
        for mod, path in known.items()
        if mod != "lmkit"
        for line, target in lmkit_imports(path, known)
        if floor(target) > floor(mod)
    ]
    assert not upward, "imports that point up a floor:\n" + "\n".join(upward)


def test_no_import_cycle():
    g = graph()
    assert g["lmkit.train.loop"] and g["lmkit.chain.pipeline"]  # the graph sees imports
    assert cycle(g) is None, f"import cycle: {' -> '.join(cycle(g))}"


def test_the_params_schema_is_a_leaf():
    assert graph()["lmkit.run.params"] <= {"lmkit.run.folder"}, (
        "everything else may import the params schema"
    )


def test_the_checks_see_what_they_forbid(tmp_path):
    """An upward function-local import is found, and a cycle is."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from lmkit.chain import pipeline\n")
    assert [t for _, t in lmkit_imports(f) if floor(t) > floor("lmkit.study.model")] == [
        "lmkit.chain.pipeline"
    ]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
