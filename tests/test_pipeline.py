"""End to end: the whole chain through papermill on a tiny parameter set."""
import json

import pytest

from lmkit.pipeline import NOTEBOOKS, ChainError, run_chain
from lmkit.runfolder import FIGURES

from tests.conftest import TINY

OVERRIDES = [f"{k}={v}" for k, v in TINY.items()]


def test_whole_chain_writes_every_figure_metrics_and_html(tmp_path):
    run = run_chain("params/quick.yaml", OVERRIDES, str(tmp_path / "tiny"), log=lambda _: None)
    expected = [k for k in FIGURES if k not in ("ced_oc", "ablation_ced")]  # 68 points only; lmkit ablate
    for key in expected:
        assert run.figure(key).stat().st_size > 5000, key
    metrics = json.loads(run.metrics.read_text())
    assert metrics["n_test"] == 12 and metrics["comparable_to_paper"] is False
    assert set(metrics["methods"]) == {"ResNet18 (this run)", "mean shape (baseline)"}
    for name in NOTEBOOKS:
        assert (run.root / "notebooks" / f"{name}.html").exists()
    index = run.index.read_text()
    assert "Not comparable to the study" in index and "27.84" in index
    for key in expected:
        assert f"figures/{key}.png" in index
    assert "predictor has 68 points" in index  # the peer's absence is said
    assert json.loads((run.root / "run.json").read_text())["timings_s"].keys() == set(NOTEBOOKS)


def test_a_failing_notebook_stops_the_chain_naming_notebook_and_cell(tmp_path):
    with pytest.raises(ChainError, match=r"notebook 01_prepare failed in cell \[\d+\]: FileNotFoundError: .*trainset"):
        run_chain("params/quick.yaml", ["data.source=300w", f"data.root={tmp_path}"], str(tmp_path / "bad"),
                  log=lambda _: None)
    assert not (tmp_path / "bad" / "notebooks" / "02_hpsearch.ipynb").exists()
