"""The study's code lives in the notebooks' cells, and no edit is ever ignored. After a
finished chain, an edit of a code cell, of a module under lmkit or a new cell runs the stages it
touches again, naming the file; a markdown edit runs nothing. What 03's cells define is what
trains, in lmkit run and in several processes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmkit.chain.pipeline import run_chain
from lmkit.run.folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
from tests.conftest import SMALL as TINY
from tests.conftest import SMALL_CHAIN as CHAIN

WING = """def landmark_loss(pred, target, cfg):
    w, e = 10.0, 2.0  # Wing loss (Feng et al. 2018), written here
    x = (pred - target).abs()
    return torch.where(x < w, w * torch.log1p(x / e), x - (w - w * math.log(1 + w / e))).mean()
"""


def _notebooks(folder: Path) -> Path:
    shutil.copytree(ROOT / "notebooks", folder)
    return folder


def _edit(path: Path, change) -> None:
    nb = json.loads(path.read_text())
    change(nb["cells"])
    path.write_text(json.dumps(nb, indent=1))


def _code_cell(text: str, tags=()) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {"tags": list(tags)},
        "outputs": [],
        "source": text.splitlines(keepends=True),
    }


def _ran(logs) -> list[str]:
    return [
        line.split(" ")[0] for line in logs if line.endswith(" ...") and not line.startswith(" ")
    ]


def _chain(out, nb, logs, extra=(), notebooks=CHAIN):
    return run_chain(
        str(ROOT / "params/quick.yaml"),
        TINY + list(extra),
        str(out),
        log=logs.append,
        notebooks=notebooks,
        notebooks_folder=nb,
    )


@pytest.fixture
def copy(small_chain, tmp_path):
    """The session's finished SMALL chain (tests/conftest.py), copied with the notebooks to edit."""
    shutil.copytree(small_chain.root, tmp_path / "run")
    return tmp_path / "run", _notebooks(tmp_path / "notebooks")


@pytest.mark.slow
def test_nothing_changed_reuses_every_stage(copy):
    out, nb = copy
    logs = []
    _chain(out, nb, logs)
    assert _ran(logs) == [] and sum("reusing the earlier output" in line for line in logs) == len(
        CHAIN
    )


@pytest.mark.slow
def test_a_code_cell_of_03_runs_03_and_every_later_stage_naming_the_file(copy):
    out, nb = copy
    _edit(nb / "03_train.ipynb", lambda cells: cells.append(_code_cell("print('an edit')")))
    logs = []
    _chain(out, nb, logs)
    assert _ran(logs) == ["03_train", "04_evaluate", "05_figures"]
    assert any(
        line.startswith("03_train: running it again:")
        and "03_train.ipynb: its code cells changed" in line
        for line in logs
    )


@pytest.mark.slow
def test_a_markdown_edit_runs_nothing(copy):
    out, nb = copy

    def words(cells):
        cells[0]["source"] = ["# 3. Train, reworded\n"]

    _edit(nb / "03_train.ipynb", words)
    logs = []
    _chain(out, nb, logs)
    assert _ran(logs) == []


@pytest.mark.slow
def test_a_new_cell_in_05_runs_05_and_the_cell_runs(copy):
    out, nb = copy
    _edit(
        nb / "05_figures.ipynb",
        lambda cells: cells.append(_code_cell("(run.root / 'new-cell.txt').write_text('ran')")),
    )
    logs = []
    _chain(out, nb, logs)
    assert _ran(logs) == ["05_figures"]
    assert (out / "new-cell.txt").read_text() == "ran"


@pytest.mark.slow
def test_a_new_cell_reading_any_params_key_runs_and_that_key_is_then_compared(copy):
    out, nb = copy
    _edit(
        nb / "03_train.ipynb",
        lambda cells: cells.append(_code_cell('print("ced_max", params.eval.ced_max)')),
    )
    logs = []
    _chain(out, nb, logs)
    assert "03_train" in _ran(logs)
    logs.clear()
    _chain(out, nb, logs, ["eval.ced_max=0.2"])
    assert _ran(logs)[0] == "03_train"
    assert any("params key eval.ced_max: 0.3 -> 0.2" in line for line in logs)


def _wing_notebooks(folder: Path) -> Path:
    nb = _notebooks(folder)

    def wing(cells):
        for cell in cells:
            if "".join(cell["source"]).startswith("def landmark_loss"):
                cell["source"] = ("import math\n\n\n" + WING).splitlines(keepends=True)
                return
        raise AssertionError("no landmark_loss cell in 03")

    _edit(nb / "03_train.ipynb", wing)
    return nb


def test_03_builds_resnet18_defines_the_step_and_back_propagates():
    cells = json.loads((ROOT / "notebooks" / "03_train.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    study = [c for c in cells if "study" in c["metadata"].get("tags", [])]
    assert "torchvision.models.resnet18(" in code and "resnet.fc = nn.Linear(" in code
    assert (
        "def landmark_loss(" in code
        and "def train_step(" in code
        and "scaler.scale(loss).backward()" in code
    )
    assert (
        len(study) == 4
    )  # the network, the loss, the step, and what the better recipes add to them
    paper = "".join("".join(c["source"]) for c in study[:3])
    for branch in (
        "head !=",
        "cfg.loss",
        "heatmap",
    ):  # the study cells hold the study's recipe only
        assert branch not in paper, branch
    beyond = "".join(study[3]["source"])
    assert "if params.model.head" in beyond and "unwrap" not in beyond and "wraps" not in beyond


def test_what_trains_is_the_study_cells_unless_the_params_ask_for_a_recipe():
    """Under the study's params the student's three functions run; each recipe key swaps in the
    function the "Beyond the study" cell writes (cell 4), and only that one."""
    from lmkit.run import params as P
    from lmkit.study import cells

    def where(study):
        return {
            name: getattr(study, name).__code__.co_filename.rsplit("#", 1)[1]
            for name in ("build_network", "landmark_loss", "train_step")
        }

    assert where(cells.study(params=P.DEFAULTS)) == {
        "build_network": "study-cell-1",
        "landmark_loss": "study-cell-2",
        "train_step": "study-cell-3",
    }
    assert (
        where(cells.study(params=P.load(None, {"train.loss": "wing"})))["landmark_loss"]
        == "study-cell-4"
    )
    best = where(cells.study(params=P.load(ROOT / "params" / "helen194-best-cpu.yaml")))
    assert best == {
        "build_network": "study-cell-4",
        "landmark_loss": "study-cell-4",
        "train_step": "study-cell-4",
    }


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_wing_loss_written_in_03s_cell_is_what_trains(tmp_path, processes):
    """train_loss is the loss the step returned, train_mse the MSE of the same predictions: equal
    with the study's MSE cell, different once the cell computes Wing loss, in one process and in
    two (torchrun, gloo), where each process runs the saved cells."""
    nb = _wing_notebooks(tmp_path / "notebooks")
    logs = []
    _chain(
        tmp_path / "run",
        nb,
        logs,
        [f"system.processes={processes}", "train.epochs=2", "train.batch_size=12"],
        notebooks=CHAIN[:3],
    )
    history = pd.read_csv(RunFolder(tmp_path / "run").history)
    assert not np.allclose(history["train_loss"], history["train_mse"], rtol=1e-3)
    assert (
        history["train_loss"] < history["train_mse"]
    ).all()  # Wing grows as |x|, MSE as x², on large errors
    if processes > 1:
        assert any("launching 2 processes" in line for line in logs)


@pytest.mark.slow
def test_the_studys_mse_cell_gives_train_loss_equal_to_its_mse(tmp_path):
    logs = []
    _chain(tmp_path / "run", _notebooks(tmp_path / "notebooks"), logs, notebooks=CHAIN[:3])
    history = pd.read_csv(RunFolder(tmp_path / "run").history)
    np.testing.assert_allclose(history["train_loss"], history["train_mse"], rtol=1e-4)


def _add_cell(name: str, text: str):
    return lambda nb: _edit(nb / f"{name}.ipynb", lambda cells: cells.append(_code_cell(text)))


def _edit_loss_cell(nb: Path) -> None:
    def halve(
        cells,
    ):  # the same loss, written another way: it must train again, and as a fresh run would
        for cell in cells:
            text = "".join(cell["source"])
            if text.startswith("def landmark_loss"):
                cell["source"] = text.replace(
                    "return nn.functional.mse_loss(pred, target)",
                    "return 0.5 * nn.functional.mse_loss(pred, target) * 2",
                ).splitlines(keepends=True)
                return
        raise AssertionError("no landmark_loss cell in 03")

    _edit(nb / "03_train.ipynb", halve)


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["03 study cell", "module", "05 new cell"])
def test_after_a_code_edit_the_run_folder_holds_what_a_fresh_run_writes(copy, tmp_path, edit):
    """Reuse equals a fresh run for code edits too (extending test_reuse_property)."""
    from tests.test_reuse_property import _result, _same

    out, nb = copy
    module = ROOT / "lmkit" / "study" / "metrics.py"
    text = module.read_text()
    fresh = tmp_path / "fresh"
    try:
        if edit == "03 study cell":
            _edit_loss_cell(nb)
        elif edit == "05 new cell":
            _add_cell("05_figures", "(run.root / 'new-cell.txt').write_text('ran')")(nb)
        else:
            module.write_text(text + "\n# an edit\n")
        logs = []
        _chain(out, nb, logs)
        _chain(fresh, nb, [])
    finally:
        module.write_text(text)
    assert _ran(logs), edit
    _same(_result(out), _result(fresh))
    assert sorted(p.name for p in RunFolder(out).root.joinpath("figures").glob("*.png")) == sorted(
        p.name for p in RunFolder(fresh).root.joinpath("figures").glob("*.png")
    )
