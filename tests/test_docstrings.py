"""Each lmkit helper a notebook calls names, in its docstring, the notebook sections that use it
(d2l's "Defined in" links the other way round), and no docstring names a use that is gone."""

import ast
import inspect
from pathlib import Path

from tests.notebook_usage import helpers, used_in_line

PACKAGE = Path(__file__).resolve().parents[1] / "lmkit"


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_every_helper_a_notebook_calls_says_where():
    missing = {
        key: line
        for key, (obj, line) in helpers().items()
        if _flat(line) not in _flat(inspect.getdoc(obj) or "")
    }
    assert not missing, "add these lines to the docstrings (or correct them):\n" + "\n".join(
        f"{k}: {v}" for k, v in missing.items()
    )


def test_no_docstring_names_a_use_that_is_gone():
    known = {key: _flat(line) for key, (_, line) in helpers().items()}
    stale = []
    for file in PACKAGE.rglob("*.py"):
        module = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                doc = _flat(ast.get_docstring(node) or "")
                if "Used in:" in doc and known.get(f"{module}.{node.name}") not in doc:
                    stale.append(f"{module}.{node.name}")
    assert not stale, f"'Used in:' lines that no notebook section matches any more: {stale}"


def test_the_line_names_each_notebook_and_section():
    assert (
        used_in_line([("03_train", "Training"), ("04_evaluate", "The model file")])
        == 'Used in: 03_train, "Training"; 04_evaluate, "The model file".'
    )
    where = dict(helpers())
    assert '03_train, "Training"' in where["lmkit.train.loop.fit"][1]
    assert '04_evaluate, "The model file"' in where["lmkit.use.packaging.package_model"][1]
