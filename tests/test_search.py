import math

from lmkit.train.search import default_storage, run_search, trials_table


def test_random_log_search_finds_the_minimum_and_resumes(tmp_path):
    calls = []

    def bowl(lr, wd):
        return (math.log10(lr) + 3) ** 2 + (math.log10(wd) + 4) ** 2

    def objective(lr, wd):
        calls.append((lr, wd))
        return bowl(lr, wd)

    storage = default_storage(tmp_path)
    assert storage.startswith("sqlite:///") and storage.endswith("search/optuna.db")
    study = run_search(
        objective, 4, (1e-5, 1e-1), (1e-6, 1e-2), storage, seed=1, log=lambda _: None
    )
    assert len(calls) == 4
    assert all(1e-5 <= lr <= 1e-1 and 1e-6 <= wd <= 1e-2 for lr, wd in calls)
    # resuming with a larger budget runs only the missing trials
    study = run_search(
        objective, 7, (1e-5, 1e-1), (1e-6, 1e-2), storage, seed=1, log=lambda _: None
    )
    assert len(calls) == 7 and len(set(calls)) == 7
    table = trials_table(study)
    assert list(table["state"]) == ["COMPLETE"] * 7
    assert table["val_mse"].min() == study.best_value == min(bowl(*c) for c in calls)
    # a finished study runs nothing more
    run_search(objective, 7, (1e-5, 1e-1), (1e-6, 1e-2), storage, seed=1, log=lambda _: None)
    assert len(calls) == 7


def test_log_uniform_sampling_spreads_over_decades(tmp_path):
    lrs = []
    run_search(
        lambda lr, wd: lrs.append(lr) or 0.0,
        40,
        (1e-6, 1e-1),
        (1e-6, 1e-2),
        default_storage(tmp_path),
        seed=0,
        log=lambda _: None,
    )
    decades = {math.floor(math.log10(lr)) for lr in lrs}
    assert len(decades) >= 4  # a uniform (not log) draw would sit almost all in 1e-2..1e-1


def test_study_name_changes_with_what_trials_depend_on():
    from lmkit.run import params as P
    from lmkit.train.search import study_name
    from tests.conftest import TINY

    base = study_name(P.load(None, TINY))
    assert base.startswith("hpsearch-")
    assert study_name(P.load(None, TINY | {"search.trials": 5, "train.epochs": 9})) == base
    assert study_name(P.load(None, TINY | {"search.epochs_per_trial": 3})) != base
    assert study_name(P.load(None, TINY | {"train.rotation": 10.0})) != base


def test_an_interrupted_trial_runs_again_with_its_values_and_none_twice(tmp_path):
    from optuna.trial import TrialState

    from lmkit.train.search import open_study

    storage = default_storage(tmp_path)
    calls = []
    run_search(
        lambda lr, wd: calls.append((lr, wd)) or lr,
        2,
        (1e-5, 1e-1),
        (1e-6, 1e-2),
        storage,
        seed=0,
        log=lambda _: None,
    )
    # a third trial starts, then its process is killed: it stays RUNNING in the database
    study = open_study(storage, "hpsearch", 0)
    killed = study.ask()
    values = (
        killed.suggest_float("lr", 1e-5, 1e-1, log=True),
        killed.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    )
    logs = []
    study = run_search(
        lambda lr, wd: calls.append((lr, wd)) or lr,
        4,
        (1e-5, 1e-1),
        (1e-6, 1e-2),
        storage,
        seed=0,
        log=logs.append,
        single_worker=True,
    )
    assert any(f"trial {killed.number} was interrupted" in line for line in logs)
    assert len(calls) == 4 and len(set(calls)) == 4  # none run twice
    assert calls[2] == values  # the interrupted one first, with its own values
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1


def test_a_diverged_trial_is_pruned_and_replaced(tmp_path):
    calls = []

    def objective(lr, wd):
        calls.append(lr)
        if len(calls) == 2:
            raise FloatingPointError("training diverged: the training loss is nan")
        return lr

    logs = []
    study = run_search(
        objective, 3, (1e-5, 1e-1), (1e-6, 1e-2), default_storage(tmp_path), log=logs.append
    )
    table = trials_table(study)
    assert sorted(table["state"]) == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert any("diverged, pruned" in line for line in logs)
    assert study.best_value == min(c for i, c in enumerate(calls) if i != 1)


def test_the_search_plot_spans_the_searched_ranges_not_only_the_trials():
    """Three trials close together still show where they fell in search.lr_range x
    search.weight_decay_range: the axes span both ranges."""
    import pandas as pd

    from lmkit.report.figures import plt, search_figure

    trials = pd.DataFrame(
        {
            "lr": [1e-3, 1.2e-3, 1.1e-3],
            "weight_decay": [1e-5, 2e-5, 1.5e-5],
            "val_mse": [30.0, 20.0, 25.0],
            "state": ["COMPLETE"] * 3,
        }
    )
    fig = search_figure(trials, [1e-5, 1e-2], [1e-6, 1e-3])
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    plt.close(fig)
    assert x0 <= 1e-5 and x1 >= 1e-2 and y0 <= 1e-6 and y1 >= 1e-3
