"""No hidden global state: importing or calling lmkit leaves the process as it was (torch's
random generator, Optuna's verbosity, cuDNN's switches), and asking for a path creates nothing."""

import importlib

import optuna
import torch

from lmkit.run import params as P
from lmkit.run.folder import RunFolder


def test_asking_for_paths_creates_no_folder(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert (
        not run.trials.exists()
        and not run.train_dir.exists()
        and not run.figure("fig1_sample").exists()
    )
    assert not run.cache_dir(P.load(None).data.cache_dir).exists()
    assert not (tmp_path / "run").exists()


def test_a_new_model_leaves_torchs_random_state_alone():
    from lmkit.train.config import new_model
    from tests.study import STUDY

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = new_model(STUDY.build_network, 5, None, seed=7, device="cpu")
    assert torch.equal(torch.rand(3), expected)
    b = new_model(STUDY.build_network, 5, None, seed=7, device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))  # still seeded


def test_optuna_verbosity_is_left_as_the_caller_set_it(tmp_path):
    from lmkit.train import search

    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    importlib.reload(search)
    assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    search.run_search(
        lambda lr, wd: lr,
        1,
        (1e-4, 1e-3),
        (1e-5, 1e-4),
        search.default_storage(tmp_path),
        log=lambda _: None,
    )
    assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_training_on_the_cpu_leaves_cudnn_alone(tmp_path):
    from tests.study import steps
    from tests.conftest import TINY

    before = torch.backends.cudnn.benchmark
    run = RunFolder(tmp_path / "run")
    params = P.load(None, TINY | {"search.enabled": False, "train.epochs": 1})
    steps.prepare(run, params, log=lambda _: None)
    steps.hpsearch(run, params, log=lambda _: None)
    steps.train(run, params, log=lambda _: None)
    assert torch.backends.cudnn.benchmark == before
