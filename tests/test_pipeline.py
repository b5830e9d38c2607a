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
    info = json.loads((run.root / "run.json").read_text())
    assert info["timings_s"].keys() == set(NOTEBOOKS) and info["git_commit"] and info["seed"] == 0
    assert "torch" in info["packages"] and info["device"]

    # the same params again: every notebook is reused; a changed evaluation param re-runs 04 and 05 only
    lines = []
    run_chain("params/quick.yaml", OVERRIDES, str(tmp_path / "tiny"), log=lines.append)
    assert sum("reusing the earlier output" in line for line in lines) == len(NOTEBOOKS)
    lines.clear()
    run_chain("params/quick.yaml", OVERRIDES + ["eval.ced_max=0.5"], str(tmp_path / "tiny"), log=lines.append)
    reused = [line.split(":")[0] for line in lines if "reusing" in line]
    assert reused == ["01_prepare", "02_hpsearch", "03_train"]
    assert any(line.startswith("05_figures done") for line in lines)


def test_stage_digests_follow_the_chain():
    from lmkit import params as P
    from lmkit.pipeline import stage_digests

    base = stage_digests(P.load(None, TINY))
    search = stage_digests(P.load(None, TINY | {"search.trials": 3}))
    data = stage_digests(P.load(None, TINY | {"data.padding": 0.1}))
    assert search["01_prepare"] == base["01_prepare"] and search["02_hpsearch"] != base["02_hpsearch"]
    assert all(data[k] != base[k] for k in NOTEBOOKS)
    assert stage_digests(P.load(None, TINY | {"train.resume": True})) == base


def test_a_failing_notebook_stops_the_chain_naming_notebook_and_cell(tmp_path):
    with pytest.raises(ChainError, match=r"notebook 01_prepare failed in cell \[\d+\]: FileNotFoundError: .*trainset"):
        run_chain("params/quick.yaml", ["data.source=300w", f"data.root={tmp_path}"], str(tmp_path / "bad"),
                  log=lambda _: None)
    assert not (tmp_path / "bad" / "notebooks" / "02_hpsearch.ipynb").exists()
