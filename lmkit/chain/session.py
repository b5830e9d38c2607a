"""``open_run``: how every notebook starts (its run folder and params, recorded as it reads them)."""

from __future__ import annotations

import shlex
from pathlib import Path

from lmkit.run import params as P
from lmkit.run.folder import RunFolder
from lmkit.chain.lock import check_not_in_use
from lmkit.chain import reads


def project_root(start: Path | None = None) -> Path:
    """The repository root (the folder with ``params/`` and ``notebooks/``) at or above the
    working folder; the working folder itself when there is none."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start, *start.parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return start


def open_run(
    run_dir: str,
    params_file: str | None,
    overrides: list[str] | str | None = None,
    knobs: dict | None = None,
    stage: str | None = None,
) -> tuple[RunFolder, P.Params]:
    """The run folder and its params, as every notebook starts. The params are loaded from
    ``params_file``, then ``overrides`` (a list of "key=value" strings, or one string of them
    separated by spaces), then the notebook's ``knobs`` ({params key: value}; None leaves a key
    as it is), and recorded in the run folder's ``params.yaml``. Relative paths are relative to
    the repository root, so a notebook works alike from the root and from ``notebooks/``.

    The params are a read-only ``Params`` (``params.train.epochs``). With ``stage`` (the
    notebook's name), they are read through a ``RecordingParams`` that records every key a cell
    reads, and the notebook's record (``reads/<stage>.json``: those keys and values, the
    lmkit modules imported, study cells executed) is kept up to date after every cell: what
    ``lmkit run`` compares before it reuses the stage.

    Used in: 01_prepare, "Prepare the data"; 02_hpsearch, "Search the learning rate and weight decay";
    03_train, "Train"; 04_evaluate, "Evaluate on the test split"; 05_figures, "Figures"; 06_ablation,
    "Ablation: the study's recipe, then one change at a time"."""
    root = project_root()
    run = RunFolder(root / run_dir)
    check_not_in_use(run)
    if isinstance(overrides, str):
        overrides = shlex.split(overrides)
    params_path = None if params_file is None else root / params_file
    params = P.load(params_path, list(overrides or []))
    changes = {k: v for k, v in (knobs or {}).items() if v is not None}
    if changes:
        params = P.merge(params, changes)
    if (
        overrides
        or changes
        or not run.params.exists()
        or params_path is None
        or run.params.resolve() != params_path.resolve()
    ):
        P.dump(params, run.params)  # what this notebook runs with is what the run folder records
    if stage is None:
        return run, params
    return run, reads.start(run.path("reads", f"{stage}.json")).params(params)
