"""The chain's reuse decision (``lmkit.chain.reuse``) on small fake run folders, without a kernel:
each input that must run a stage again does, naming it, and each that must not does not."""

import json
import shutil
from pathlib import Path

import pytest

from lmkit.chain import reuse
from lmkit.chain.reads import file_digest
from lmkit.run import params as P
from lmkit.run.folder import RunFolder
from lmkit.study.cells import ENV

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """03_train recorded as run: its notebook (a copy), the keys it read, a module it imported
    (a copy of an lmkit source file), the study cells of 03 it executed, the outputs before it
    and its own. Returns what ``changes`` needs and a function to ask it."""
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    monkeypatch.setenv(ENV, str(notebooks))
    module = tmp_path / "losses.py"
    module.write_text((ROOT / "lmkit" / "study" / "losses.py").read_text())
    run = RunFolder(tmp_path / "run")
    cache = run.cache_dir(None)
    for out in (
        run.split,
        cache / "train" / "manifest.json",
        cache / "test" / "manifest.json",
        run.best_hparams,
        run.history,
        run.best_checkpoint,
    ):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("{}")
    params = P.load(None, {"train.epochs": 3})
    seen = {
        "params": {"train.epochs": 3, "train.loss": "mse", "system.device": "auto"},
        "modules": {str(module): file_digest(module)},
        "cells": {"03_train.ipynb#study": None},
    }
    from lmkit.study.cells import code_digest

    seen["cells"]["03_train.ipynb#study"] = code_digest(notebooks / "03_train.ipynb", "study")
    run.path("reads").mkdir(parents=True, exist_ok=True)
    run.path("reads", "03_train.json").write_text(json.dumps(seen))
    notebook = notebooks / "03_train.ipynb"
    kept = reuse.record(run, params, "03_train", notebook)

    def changes(params=params):
        return reuse.changes(kept, run, params, "03_train", notebook)

    return {
        "run": run,
        "params": params,
        "notebook": notebook,
        "module": module,
        "changes": changes,
    }


def _edit_cell(notebook: Path, starts: str, change) -> None:
    nb = json.loads(notebook.read_text())
    cell = next(c for c in nb["cells"] if "".join(c["source"]).startswith(starts))
    cell["source"] = change("".join(cell["source"])).splitlines(keepends=True)
    notebook.write_text(json.dumps(nb, indent=1))


def test_nothing_changed_reuses(stage):
    assert stage["changes"]() == []


def test_a_params_key_it_read_runs_it_again_and_one_it_did_not_read_does_not(stage):
    more = P.merge(stage["params"], {"train.epochs": 4})
    assert stage["changes"](more) == ["params key train.epochs: 3 -> 4"]
    assert stage["changes"](P.merge(stage["params"], {"search.trials": 3})) == []  # not read by 03
    assert (
        stage["changes"](P.merge(stage["params"], {"system.device": "cpu"})) == []
    )  # where, not what


def test_an_edited_code_cell_runs_it_again_and_a_markdown_edit_does_not(stage):
    nb = json.loads(stage["notebook"].read_text())
    next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"] = [
        "# 3. Train, reworded\n"
    ]
    stage["notebook"].write_text(json.dumps(nb, indent=1))
    assert stage["changes"]() == []
    _edit_cell(stage["notebook"], "def landmark_loss", lambda s: s.replace("mse_loss", "l1_loss"))
    why = stage["changes"]()
    assert any("its code cells changed" in w for w in why)
    assert any("its study cells changed" in w for w in why)


def test_an_edited_lmkit_module_it_imported_runs_it_again_naming_the_file(stage):
    stage["module"].write_text(stage["module"].read_text() + "\n# an edit\n")
    assert stage["changes"]() == [f"{stage['module']}: changed"]
    stage["module"].unlink()
    assert stage["changes"]() == [f"{stage['module']}: removed"]


def test_changed_outputs_before_it_or_its_own_run_it_again(stage):
    stage["run"].best_hparams.write_text('{"lr": 0.1}')
    assert stage["changes"]() == ["the outputs of the stages before it changed"]
    stage["run"].best_hparams.write_text("{}")
    stage["run"].history.write_text("epoch\n1\n")
    assert stage["changes"]() == [
        "its outputs are missing or not what it wrote (run again by hand?)"
    ]
    stage["run"].history.unlink()
    assert stage["changes"]() == [
        "its outputs are missing or not what it wrote (run again by hand?)"
    ]


def test_a_data_file_runs_the_preparation_again(tmp_path, monkeypatch):
    data = tmp_path / "helen"
    (data / "annotation").mkdir(parents=True)
    (data / "annotation" / "1.txt").write_text("face\n")
    (data / "trainnames.txt").write_text("face\n")
    run = RunFolder(tmp_path / "run")
    params = P.load(None, {"data.source": "helen", "data.root": str(data)})
    monkeypatch.setattr(reuse, "upstream", lambda *a: "")
    monkeypatch.setattr(reuse, "outputs_digest", lambda paths: "same")
    notebook = ROOT / "notebooks" / "01_prepare.ipynb"
    kept = reuse.record(run, params, "01_prepare", notebook)
    assert reuse.changes(kept, run, params, "01_prepare", notebook) == []
    (data / "annotation" / "1.txt").write_text("face, edited\n")
    assert reuse.changes(kept, run, params, "01_prepare", notebook) == [
        f"data files under {data} changed (added, removed or edited)"
    ]
