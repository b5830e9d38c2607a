"""The notebooks' sentences come from the same numbers, and the same ranking, as the figures."""

import numpy as np
import pandas as pd

from lmkit.study.metrics import best_and_worst
from lmkit.report.narrative import evaluated, searched


def _metrics(dataset="synthetic faces (lmkit built-in, seed 0)"):
    return {
        "methods": {
            "ResNet18 (this run)": {"nme_io_mean": 0.05, "mse_mean": 20.0},
            "mean shape (baseline)": {"nme_io_mean": 0.2, "mse_mean": 300.0},
        },
        "n_test": 6,
        "dataset": dataset,
        "comparable_to_paper": False,
    }


def test_the_worst_faces_named_are_fig5s_in_its_order():
    """Ranked by MSE as Fig. 5 is, not by NME (which orders these faces differently)."""
    mse = np.array([5.0, 90.0, 10.0, 70.0, 80.0, 1.0])
    nme = np.array([0.30, 0.05, 0.20, 0.04, 0.06, 0.01])
    names = [f"face{i}" for i in range(6)]
    text = evaluated(_metrics(), mse, nme, names)
    _, worst = best_and_worst(mse)
    shown = [names[i] for i in worst]
    assert shown == ["face1", "face4", "face3"]
    positions = [text.index(f"`{n}`") for n in shown]
    assert positions == sorted(positions) and "`face0`" not in text  # face0 is worst by NME only


def test_no_cause_the_data_cannot_have():
    mse, nme, names = np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]), ["a", "b", "c"]
    synthetic = evaluated(_metrics(), mse, nme, names, synthetic=True)
    real = evaluated(_metrics("Helen (official layout): helen194"), mse, nme, names)
    assert "hands" not in synthetic and "hair" not in synthetic
    assert "hands" in real


def test_the_best_third_of_three_trials_is_one_trial():
    trials = pd.DataFrame(
        {"state": ["COMPLETE"] * 3, "val_mse": [30.0, 220.0, 31.0], "lr": [1e-3, 5e-2, 2e-3]}
    )
    text = searched(trials, {"trial": 0, "lr": 1e-3, "weight_decay": 1e-4, "val_mse": 30.0})
    assert "the best 1 trial of 3 used learning rate 1.0e-03" in text
    assert "5.0e-02" not in text  # the 220 px² trial is not among the best
    six = pd.DataFrame(
        {
            "state": ["COMPLETE"] * 6,
            "val_mse": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3],
        }
    )
    assert "the best 2 trials of 6 used learning rates from 1.0e-03 to 2.0e-03" in searched(
        six, {"trial": 0, "lr": 1e-3, "weight_decay": 1e-4, "val_mse": 1.0}
    )


def test_an_early_best_epoch_under_a_schedule_does_not_suggest_a_schedule():
    import pandas as pd

    from lmkit.report.narrative import trained

    val = [50, 40, 30, 31, 32, 33, 34, 35, 36, 37]
    constant = pd.DataFrame(
        {
            "epoch": range(1, 11),
            "train_mse": [60 - e for e in range(10)],
            "val_mse": val,
            "lr": [1e-3] * 10,
        }
    )
    cosine = constant.assign(lr=[1e-3 * (10 - e) / 10 for e in range(10)])
    assert "a schedule or a lower rate might" in trained(constant)
    assert "a schedule" not in trained(cosine) and "as the learning rate fell" in trained(cosine)


def test_the_trials_table_shows_a_small_weight_decay_in_scientific_notation():
    """Notebook 02's trials: 1.13e-06 stays 1.13e-06 (pandas' default shows 0.000001), best first."""
    import pandas as pd

    from lmkit.report.page import trials_display

    trials = pd.DataFrame(
        {
            "number": [0, 1],
            "lr": [3.2e-4, 1.5e-3],
            "weight_decay": [1.13e-6, 2.5e-2],
            "val_mse": [41.5, 26.25],
            "state": ["COMPLETE"] * 2,
            "duration_s": [12.0, 13.0],
        }
    )
    html = trials_display(trials).to_html()
    assert "1.13e-06" in html and "0.000001" not in html and "0.025" in html
    assert html.index("26.25") < html.index("41.50")


def test_the_validation_paragraph_says_the_two_mses_differ_only_when_they_do():
    """The report's validation paragraph, checked against its own metrics: equal MSEs are not
    called different, and different ones are named with both values."""
    from lmkit.report.predictions import METHODS
    from lmkit.report.page import validation_html

    def metrics(val_mse, best):
        return {
            "dataset": "d",
            "best_val_mse": best,
            "validation": {"faces": 10, "methods": {METHODS["model"]: {"mse_mean": val_mse}}},
            "mse_unit": "px²",
        }

    same = validation_html(metrics(24.6, 24.6001))
    assert "differs" not in same and "24.60 px²" in same
    other = validation_html(metrics(25.3, 24.6))
    assert "differs" in other and "25.30 px²" in other and "24.60 px²" in other


def test_the_report_page_says_provenance_in_one_line_and_reproduces_without_absolute_paths(
    tmp_path, monkeypatch
):
    """The index's provenance opens on one line (commit, host, torch, minutes), and its "reproduce
    this run" box names the run folder relative to the checkout."""
    from lmkit.report.page import provenance_summary, repository_root
    from lmkit.run.folder import RunFolder

    info = {
        "git_commit": "0123456789abcdef",
        "host": {"cpu": "Some Xeon", "cores": 2},
        "packages": {"torch": "2.14.1"},
        "timings_s": {"a": 60.0, "b": 30.0},
    }
    assert provenance_summary(info) == "commit 0123456; host Some Xeon; torch 2.14.1; chain 1.5 min"
    checkout = tmp_path / "clone"
    for d in ("params", "notebooks", "reports/r"):
        (checkout / d).mkdir(parents=True)
    assert repository_root(RunFolder(checkout / "reports" / "r")) == checkout.resolve()
    assert repository_root(RunFolder(tmp_path / "elsewhere")) is None


def test_the_evaluation_reading_names_the_normalisation_of_each_nme_it_quotes():
    """04's reading quotes each worst face's NME with its normalisation (Fig. 5 labels the same
    faces with the outer-corner NME): a number never stands without it."""
    from lmkit.report.narrative import evaluated

    metrics = {
        "n_test": 3,
        "dataset": "d",
        "methods": {"ResNet18 (this run)": {"nme_oc_mean": 0.05, "mse_mean": 20.0}},
    }
    mse, nme = np.array([10.0, 30.0, 20.0]), np.array([0.04, 0.093, 0.05])
    text = evaluated(metrics, mse, nme, ["a", "b", "c"], norm="oc")
    assert (
        "NME 0.093 oc" in text
        and "NME 0.10 (outer eye corners)" in text
        and "inter-ocular" not in text
    )
    assert "NME 0.093 io" in evaluated(metrics, mse, nme, ["a", "b", "c"], norm="io")
