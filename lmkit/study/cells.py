"""The notebooks' code cells, read from outside their kernels.

Notebook 03 writes the study's network, loss and training step as code in cells tagged
``study`` (as d2l marks the cells its library is made of). What those cells define is what
trains everywhere: in 03's own kernel, and, through ``study()``, in the search of 02, in
each process of multi-process training, in the ablation's runs and in the golden test. There
is no second copy of them in the package.

``code_digest`` is what the chain's reuse compares: a notebook's code cells, without its
markdown, outputs or cell ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

STUDY_TAG = "study"
STUDY_NOTEBOOK = "03_train"
ENV = "LMKIT_NOTEBOOKS"  # the notebooks folder the chain runs (set by lmkit run for its kernels)

_loaded: dict[
    str, str
] = {}  # notebook#tag -> digest of the cells executed by study(), for the run's record


def notebooks_dir() -> Path:
    """``$LMKIT_NOTEBOOKS``; else ``notebooks/`` of the working folder; else the working folder
    itself when it holds the notebooks (a kernel in JupyterLab); else those of the source checkout."""
    here = Path.cwd()
    for candidate in ([Path(os.environ[ENV])] if os.environ.get(ENV) else []) + [
        here / "notebooks",
        here,
        Path(__file__).resolve().parents[2] / "notebooks",
    ]:
        if (candidate / f"{STUDY_NOTEBOOK}.ipynb").exists():
            return candidate
    raise FileNotFoundError(
        f"cannot find the notebooks folder (with {STUDY_NOTEBOOK}.ipynb); run from the "
        f"project's root folder or set ${ENV}"
    )


def notebook_file(name: str) -> Path:
    return notebooks_dir() / f"{name}.ipynb"


def code_cells(path: Path, tag: str | None = None) -> list[str]:
    """The source of every code cell of a notebook (those tagged ``tag`` only, when given)."""
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the notebook ({e})") from None
    out = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if tag is not None and tag not in cell.get("metadata", {}).get("tags", []):
            continue
        src = cell.get("source", "")
        out.append("".join(src) if isinstance(src, list) else src)
    return out


def code_digest(path: Path, tag: str | None = None) -> str:
    """A digest of a notebook's code cells (markdown, outputs and metadata left out)."""
    return hashlib.sha1("\n\x00".join(code_cells(path, tag)).encode()).hexdigest()[:16]


def study(notebook: str = STUDY_NOTEBOOK, path: Path | None = None, params=None) -> SimpleNamespace:
    """The definitions of a notebook's cells tagged ``study``, executed in a fresh namespace
    holding the run's ``params`` (as the notebook's kernel does: 03's "Beyond the study" cell
    reads them): for 03, ``build_network``, ``landmark_loss`` and ``train_step``, as the params
    choose them. Each call runs the cells as they are saved now, so an edited cell is what the
    next use runs.

    Used in: 02_hpsearch, "The objective"."""
    path = Path(path) if path is not None else notebook_file(notebook)
    cells = code_cells(path, STUDY_TAG)
    if not cells:
        raise ValueError(
            f"{path}: no code cell is tagged {STUDY_TAG!r}; tag the cells that define the study's "
            "network, loss and training step"
        )
    if params is None:  # the defaults: the study's own recipe
        from lmkit.run.params import DEFAULTS as params
    namespace = {"__name__": f"lmkit_{path.stem}_study", "params": params}
    for i, source in enumerate(cells):
        exec(compile(source, f"{path}#study-cell-{i + 1}", "exec"), namespace)
    _loaded[f"{path.name}#{STUDY_TAG}"] = code_digest(path, STUDY_TAG)
    return SimpleNamespace(
        **{k: v for k, v in namespace.items() if not k.startswith("__") and k != "params"}
    )


def loaded() -> dict[str, str]:
    """The tagged cells this process executed through ``study()``, by notebook, with their digests."""
    return dict(_loaded)


def check_saved(*functions, notebook: str = STUDY_NOTEBOOK) -> None:
    """Refuse to start processes that would run other code than this kernel: each of
    ``functions`` (defined in a cell here) must read as the notebook's saved study cells do."""
    import inspect

    saved = "\n".join(code_cells(notebook_file(notebook), STUDY_TAG))
    for fn in functions:
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            continue  # defined where its source cannot be read: nothing to compare
        if source.strip() not in saved:
            raise RuntimeError(
                f"{fn.__name__}: this kernel's definition differs from the study cells saved in "
                f"{notebook_file(notebook)}, which each training process runs; save the notebook "
                "(or set system.processes: 1)"
            )
