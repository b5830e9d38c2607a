"""Hyper-parameter search as in the study: random search in log space over Adam's learning
rate and weight decay, each trial trained for a few epochs, lowest validation loss wins.

Built on Optuna (RandomSampler, log-uniform ranges). The study lives in a storage: by
default a SQLite file in the run folder, or any database URL Optuna accepts, so several
workers on several machines can share one study. Re-running continues an interrupted
search: only the trials still missing are run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(storage: str, study_name: str, seed: int) -> optuna.Study:
    return optuna.create_study(study_name=study_name, storage=storage, direction="minimize",
                               sampler=optuna.samplers.RandomSampler(seed=seed), load_if_exists=True)


def default_storage(run_dir: Path) -> str:
    folder = Path(run_dir) / "search"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def run_search(objective: Callable[[float, float], float], trials: int, lr_range, wd_range, storage: str,
               study_name: str = "hpsearch", seed: int = 0, log=print) -> optuna.Study:
    """Run trials until ``trials`` have completed in the study (counting earlier runs and
    other workers). ``objective(lr, weight_decay)`` returns the validation loss."""
    study = open_study(storage, study_name, seed)
    stale = [t for t in study.trials if t.state == TrialState.RUNNING]
    if stale:
        log(f"{len(stale)} trial(s) were left running by an interrupted search; they are not counted")
    done = sum(t.state == TrialState.COMPLETE for t in study.trials)
    if done:
        log(f"{done} of {trials} trials already complete in {storage}")

    def wrapped(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", *lr_range, log=True)
        wd = trial.suggest_float("weight_decay", *wd_range, log=True)
        loss = objective(lr, wd)
        log(f"trial {trial.number}: lr {lr:.2e}  weight decay {wd:.2e}  ->  best val MSE {loss:.2f} px^2")
        return loss

    if done < trials:
        study.optimize(wrapped, n_trials=trials - done,
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=(TrialState.COMPLETE,))])
    return study


def trials_table(study: optuna.Study) -> pd.DataFrame:
    df = study.trials_dataframe(attrs=("number", "params", "value", "state", "duration"))
    df = df.rename(columns={"params_lr": "lr", "params_weight_decay": "weight_decay", "value": "val_mse"})
    df["duration_s"] = df.pop("duration").dt.total_seconds()
    return df
