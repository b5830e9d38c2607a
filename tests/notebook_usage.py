"""Which lmkit helper each notebook section calls: read from the notebooks' code cells (their
imports and the names they use), for the docstrings' "Used in" lines (tests/test_docstrings.py)."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LEAD = re.compile(r"^(?:#+\s*(.+)|\*\*(.+?)\*\*)")


def _section(markdown: str, current: str) -> str:
    """A markdown cell's section name: its heading, or its bold lead ("**The network.**")."""
    first = markdown.strip().splitlines()[0] if markdown.strip() else ""
    m = LEAD.match(first)
    if not m:
        return current
    name = (m.group(1) or m.group(2)).strip().rstrip(".:")
    return re.sub(r"^\d+\.\s*", "", name)


def _imports(tree: ast.AST, names: dict) -> None:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "lmkit"
        ):
            for a in node.names:
                names[a.asname or a.name] = (node.module, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "lmkit":
                    names[a.asname or a.name.split(".")[0]] = (
                        a.name if a.asname else "lmkit",
                        None,
                    )


def _resolve(names: dict, dotted: list[str]):
    """The lmkit function or class that ``a.b.c`` names, or None."""
    if dotted[0] not in names:
        return None
    module, attr = names[dotted[0]]
    try:
        try:
            obj = (
                importlib.import_module(f"{module}.{attr}")
                if attr
                else importlib.import_module(module)
            )
        except ImportError:
            obj = getattr(importlib.import_module(module), attr)
        for part in dotted[1:]:
            if inspect.ismodule(obj):
                if hasattr(obj, part):
                    obj = getattr(obj, part)
                else:
                    try:
                        obj = importlib.import_module(f"{obj.__name__}.{part}")
                    except ImportError:
                        return None
            elif inspect.isclass(obj) and part in vars(obj):
                obj = getattr(obj, part)
            else:
                break
    except (ImportError, AttributeError):
        return None
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj):
        module = getattr(obj, "__module__", "") or ""
        return obj if module.startswith("lmkit.") else None
    return None


def _chain(node) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def usage() -> dict[str, list[tuple[str, str]]]:
    """{``module.qualname`` of an lmkit helper: [(notebook stem, section)]}, in notebook order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        names: dict = {}
        for c in cells:
            if c["cell_type"] == "code":
                try:
                    _imports(ast.parse("".join(c["source"])), names)
                except SyntaxError:
                    pass
        section = ""
        for c in cells:
            src = "".join(c["source"])
            if c["cell_type"] == "markdown":
                section = _section(src, section)
                continue
            if "parameters" in c.get("metadata", {}).get("tags", []):
                continue
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Attribute, ast.Name)) and not isinstance(
                    getattr(node, "ctx", None), ast.Store
                ):
                    dotted = _chain(node)
                    obj = _resolve(names, dotted) if dotted else None
                    if obj is not None:
                        key = f"{obj.__module__}.{obj.__qualname__}"
                        where = (path.stem, section or path.stem)
                        if where not in out.setdefault(key, []):
                            out[key].append(where)
    return out


def used_in_line(where: list[tuple[str, str]]) -> str:
    """The docstring line that names where a helper is used, e.g.
    ``Used in: 03_train, "Training"; 04_evaluate, "The model file".``"""
    return "Used in: " + "; ".join(f'{nb}, "{section}"' for nb, section in where) + "."


def helpers() -> dict[str, tuple[object, str]]:
    """{qualified name: (the function or class, its "Used in" line)}; methods count with their class."""
    out = {}
    for key, where in usage().items():
        obj = _object(key)
        if obj is not None and "." not in obj.__qualname__:
            out[key] = (obj, used_in_line(where))
    return out


def _object(key: str):
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    return None
