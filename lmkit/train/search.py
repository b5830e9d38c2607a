"""Hyper-parameter search as in the study: random search in log space over Adam's learning
rate and weight decay, each trial trained for a few epochs, lowest validation loss wins.

Built on Optuna (a random sampler, log-uniform ranges). The study lives in a storage: by
default a SQLite file in the run folder, or any database URL Optuna accepts, so several
workers on several machines can share one study. Re-running continues an interrupted
search: only the trials still missing are run.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import sqlalchemy
import pandas as pd
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from lmkit.run.progress import emit
from lmkit.run.params import Params


@contextmanager
def quiet_optuna():
    """Optuna's per-trial INFO lines off while a search runs (lmkit logs its own), restored after."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)


class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
    """Random search whose draws for trial n depend only on (seed, n, parameter name).

    A plain seeded RandomSampler restarts its stream in every process, so a resumed search
    or a second worker would repeat the first trials' values. Trial numbers are unique in
    a study (the storage hands them out), so seeding by them never repeats a trial and
    keeps a single-worker search reproducible.
    """

    def __init__(self, seed: int = 0):
        super().__init__(seed=seed)
        self._base_seed = seed

    def sample_independent(self, study, trial, param_name, param_distribution):
        if isinstance(param_distribution, FloatDistribution) and param_distribution.step is None:
            rng = np.random.default_rng(
                [self._base_seed, trial.number, zlib.crc32(param_name.encode())]
            )
            lo, hi = param_distribution.low, param_distribution.high
            if param_distribution.log:
                return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            return float(rng.uniform(lo, hi))
        return super().sample_independent(study, trial, param_name, param_distribution)


HEARTBEAT_S, GRACE_S = 30, 120


def open_study(storage: str, study_name: str, seed: int) -> optuna.Study:
    """The study in ``storage``. Workers send a heartbeat; a trial whose worker died (no
    heartbeat for GRACE_S seconds) is failed and retried with the same values by the next
    worker that starts (Optuna's RetryFailedTrialCallback)."""
    with warnings.catch_warnings():  # the heartbeat is flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
            retry = {
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3
                )
            }
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}
        for attempt in range(
            5
        ):  # workers starting together race to create the schema: the loser retries
            try:
                rdb = optuna.storages.RDBStorage(
                    storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **retry
                )
                break
            except sqlalchemy.exc.DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)
    return optuna.create_study(
        study_name=study_name,
        storage=rdb,
        direction="minimize",
        sampler=TrialSeededRandomSampler(seed=seed),
        load_if_exists=True,
    )


def retry_interrupted(study: optuna.Study, log=print) -> int:
    """Fail the trials a killed search left RUNNING and queue them again with the same values,
    so none is lost. Only for a study no other worker uses (the default local database)."""
    stale = [t for t in study.trials if t.state == TrialState.RUNNING]
    for t in stale:
        with warnings.catch_warnings():  # tell() outside optimize() is fine here
            warnings.simplefilter("ignore", UserWarning)
            study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        emit(log, "trial", f"trial {t.number} was interrupted; it runs again with the same values")
    return len(stale)


def default_storage(run_dir: Path) -> str:
    folder = Path(run_dir) / "search"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def run_search(
    objective: Callable[[float, float], float],
    trials: int,
    lr_range,
    wd_range,
    storage: str,
    study_name: str = "hpsearch",
    seed: int = 0,
    log=print,
    single_worker: bool = False,
    poll_s: float = 5.0,
) -> optuna.Study:
    """Run trials until ``trials`` have completed in the study, counting earlier runs and other
    workers. ``objective(lr, weight_decay)`` returns the validation loss.

    Several workers may share one study (a database server in ``storage``). Each trial's
    number is handed out by the database, and a trial only runs while fewer than ``trials``
    trials are complete or running before it: so exactly ``trials`` complete, none twice. A
    worker whose remaining slots are held by others waits for them (a dead worker's trial is
    failed by the heartbeat after GRACE_S seconds and retried with the same values). With
    ``single_worker`` (the default local database), trials left running by a killed search
    are re-queued at once."""
    with quiet_optuna():
        return _run_search(
            objective,
            trials,
            lr_range,
            wd_range,
            storage,
            study_name,
            seed,
            log,
            single_worker,
            poll_s,
        )


def _run_search(
    objective, trials, lr_range, wd_range, storage, study_name, seed, log, single_worker, poll_s
):
    study = open_study(storage, study_name, seed)
    if single_worker:
        retry_interrupted(study, log)
    taking = (TrialState.COMPLETE, TrialState.RUNNING)

    def wrapped(trial: optuna.Trial) -> float:
        ahead = sum(
            t.number < trial.number for t in study.get_trials(deepcopy=False, states=taking)
        )
        if ahead >= trials:  # another worker took the last slot between our check and this trial
            trial.set_user_attr("note", "surplus: the other workers hold every remaining trial")
            study.stop()
            raise optuna.TrialPruned("surplus")
        lr = trial.suggest_float("lr", *lr_range, log=True)
        wd = trial.suggest_float("weight_decay", *wd_range, log=True)
        try:
            loss = objective(lr, wd)
        except (
            FloatingPointError
        ) as e:  # a diverged trial: pruned, and another trial takes its place
            emit(
                log,
                "trial",
                f"trial {trial.number}: lr {lr:.2e}  weight decay {wd:.2e}  ->  diverged, pruned ({e})",
            )
            trial.set_user_attr("note", f"diverged: {e}")
            raise optuna.TrialPruned(str(e)) from None
        emit(
            log,
            "trial",
            f"trial {trial.number}: lr {lr:.2e}  weight decay {wd:.2e}  ->  best val MSE {loss:.2f} px^2",
            trial=trial.number,
            lr=lr,
            weight_decay=wd,
            best_val_mse=loss,
        )
        return loss

    def count(state) -> int:
        return len(study.get_trials(deepcopy=False, states=(state,)))

    done, attempts, waiting = count(TrialState.COMPLETE), 0, False
    if done:
        emit(log, "search", f"{done} of {trials} trials already complete in {storage}")
    while done < trials:
        running = count(TrialState.RUNNING)
        if done + running >= trials:  # the remaining trials are running on other workers
            if not waiting:
                emit(
                    log,
                    "search",
                    f"{done} of {trials} trials complete, {running} running on other workers: waiting for them",
                )
                waiting = True
            time.sleep(poll_s)
            optuna.storages.fail_stale_trials(
                study
            )  # a dead worker's trial is failed and re-queued
        else:
            if attempts >= 3 * trials:  # a pruned (diverged) trial is replaced, within reason
                break
            waiting = False
            study.optimize(
                wrapped,
                n_trials=trials - done - running,
                callbacks=[optuna.study.MaxTrialsCallback(trials, states=taking)],
            )
            attempts += trials - done - running
        done = count(TrialState.COMPLETE)
    if done == 0:
        raise RuntimeError(
            f"the search completed no trial in {attempts} attempts (every trial diverged): "
            "lower search.lr_range"
        )
    return study


def search_outcome(study: optuna.Study) -> str:
    best = study.best_trial
    return (
        f"study {study.study_name!r}: {len(study.get_trials(states=(TrialState.COMPLETE,)))} trials complete; "
        f"best trial {best.number}: lr {best.params['lr']:.3e}, weight decay {best.params['weight_decay']:.3e}, "
        f"val MSE {best.value:.2f} px^2"
    )


def trials_table(study: optuna.Study) -> pd.DataFrame:
    df = study.trials_dataframe(
        attrs=("number", "params", "value", "state", "duration", "user_attrs")
    )
    df = df.rename(
        columns={
            "params_lr": "lr",
            "params_weight_decay": "weight_decay",
            "value": "val_mse",
            "user_attrs_note": "note",
            "user_attrs_retry_of": "retry_of",
        }
    )
    df["duration_s"] = df.pop("duration").dt.total_seconds()
    return df


# ------------------------------------------------------------------ a run's search (notebook 02)
def study_name(params: Params) -> str:
    """``search.study_name`` plus a digest of everything a trial's result depends on, so a
    study is resumed only by a search that would have produced the same trials."""
    from lmkit.run.digests import digest, study_inputs

    return f"{params.search.study_name}-{digest(study_inputs(params), 8)}"


def search_run(
    run,
    params: Params,
    objective: Callable[[float, float], float],
    log=print,
    single_worker: bool | None = None,
) -> pd.DataFrame | None:
    """The run's search with ``objective(lr, weight_decay) -> validation MSE`` (notebook 02's),
    or, with ``search.enabled: false``, the params' own rate and decay. Writes ``trials.csv``
    and ``best_hparams.json``; returns the trials (None without a search).

    Used in: 02_hpsearch, "The objective"."""
    from lmkit.run.folder import write_csv, write_json

    s = params.search
    if not s.enabled:
        t = params.train
        write_json(
            {"lr": t.lr, "weight_decay": t.weight_decay, "source": "params (search disabled)"},
            run.best_hparams,
        )
        emit(log, "search", "search disabled: training uses train.lr and train.weight_decay")
        return None
    single = not s.storage if single_worker is None else single_worker
    study = run_search(
        objective,
        s.trials,
        s.lr_range,
        s.weight_decay_range,
        s.storage or default_storage(run.root),
        study_name(params),
        params.seed,
        log,
        single_worker=single,
    )
    table = trials_table(study)
    write_csv(table, run.trials)
    best = study.best_trial
    write_json(
        {
            "lr": best.params["lr"],
            "weight_decay": best.params["weight_decay"],
            "val_mse": best.value,
            "trial": best.number,
            "source": f"Optuna study {study.study_name!r}",
        },
        run.best_hparams,
    )
    return table


def search_worker(run, log=print):
    """One more worker for a run's search, on this machine: it runs trials of the run's study
    (its ``params.yaml``, prepared data on shared storage, ``search.storage`` a database all
    workers reach) with notebook 02's objective (its cells tagged ``study``) until the study has
    ``search.trials`` complete, then logs the winner. It writes nothing in the run folder and
    takes no lock: the chain's 02_hpsearch, which may be running at the same time, writes the results."""
    from lmkit.study import cells
    from lmkit.run import params as P
    from lmkit.data.faces import load_data

    if not run.root.is_dir() or not run.params.exists():
        raise FileNotFoundError(
            f"{run.root / 'params.yaml'}: missing; start the run first (lmkit run ... --out {run.root})"
        )
    params = P.load(run.params)
    s = params.search
    if not s.enabled:
        raise ValueError(f"{run.params}: search.enabled is false; there is no search to work on")
    if not s.storage:
        raise ValueError(
            f"{run.params}: search.storage is not set; workers share a study through a database "
            "server all of them reach, e.g. search.storage: postgresql://user@host/lmkit"
        )
    if not run.split.exists():
        raise FileNotFoundError(f"{run.split}: missing; the run's 01_prepare has not finished yet")
    objective = cells.study("02_hpsearch").make_objective(params, load_data(run, params))
    study = run_search(
        objective,
        s.trials,
        s.lr_range,
        s.weight_decay_range,
        s.storage,
        study_name(params),
        params.seed,
        log,
        single_worker=False,
    )
    log(search_outcome(study))
    return study
