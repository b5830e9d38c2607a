"""The notebooks as a student meets them: committed without outputs, one parameters cell
each, every cell runs top to bottom from the repository root (nbclient), and papermill's own
command line sets a scalar parameter, from the root and from notebooks/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from lmkit.chain.pipeline import NOTEBOOKS

from .conftest import TINY


ROOT = Path(__file__).resolve().parents[1]
ALL = sorted((ROOT / "notebooks").glob("*.ipynb"))
TINY_STRING = " ".join(f"{k}={json.dumps(v)}" for k, v in TINY.items())


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_committed_notebooks_are_stripped_narratives_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), (
        f"{path.name}: outputs committed"
    )
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged parameters"
    assert (
        nb.cells[0].cell_type == "markdown" and len(nb.cells[0].source) > 400
    )  # it says what and why
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 2


@pytest.fixture(scope="module")
def run_by_hand(tmp_path_factory):
    """Every notebook of the chain, cell by cell with nbclient, the kernel in the repository root."""
    run_dir = tmp_path_factory.mktemp("byhand") / "run"
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        params.source += f"\nrun_dir = {str(run_dir)!r}\noverrides = {TINY_STRING!r}\n"
        client = NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        )
        with client.setup_kernel():
            for i, cell in enumerate(nb.cells):
                client.execute_cell(cell, i)  # raises CellExecutionError naming the cell
            for i, cell in enumerate(
                nb.cells
            ):  # then each cell once more, as a student re-runs one:
                if (
                    cell.cell_type == "code" and i
                ):  # no knob may have been overwritten by a later cell
                    client.execute_cell(cell, i)
        text = json.dumps([c.get("outputs", []) for c in nb.cells])
        assert "IProgress not found" not in text, f"{name}: a TqdmWarning in the outputs"
        assert "Traceback" not in text
        if name == "03_train":
            shown = "".join(
                o.get("data", {}).get("text/markdown", "")
                for c in nb.cells
                for o in c.get("outputs", [])
            )
            assert "Reading the curves" in shown
    return run_dir


@pytest.mark.slow
def test_every_notebook_runs_cell_by_cell_from_the_root(run_by_hand):
    assert (run_by_hand / "eval" / "metrics.json").exists() and (
        run_by_hand / "figures" / "fig6_saliency.png"
    ).exists()


@pytest.mark.slow
@pytest.mark.parametrize("cwd", ["root", "notebooks"])
def test_papermill_command_line_sets_a_scalar_parameter(run_by_hand, tmp_path, cwd):
    folder = ROOT if cwd == "root" else ROOT / "notebooks"
    notebook = Path("notebooks/03_train.ipynb") if cwd == "root" else Path("03_train.ipynb")
    out = tmp_path / "out.ipynb"
    env = {k: v for k, v in os.environ.items() if k != "LMKIT_RUN_LOCK"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(notebook),
            str(out),
            "-k",
            "python3",
            "-p",
            "run_dir",
            str(run_by_hand),
            "-p",
            "overrides",
            TINY_STRING,
            "-p",
            "epochs",
            "1",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = yaml.safe_load((run_by_hand / "params.yaml").read_text())
    assert recorded["train"]["epochs"] == 1  # the knob, recorded in the run's params
    history = (run_by_hand / "train" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 2  # header and one epoch
