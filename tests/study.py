"""What the tests drive: notebook 03's study cells as saved (``STUDY``: its network, loss and
training step), and ``steps``, the notebooks' work composed from the same helpers and cells the
notebooks call, for tests that need one stage's outputs without a kernel (the chain tests run
the notebooks themselves)."""

from types import SimpleNamespace

from lmkit.study import cells

STUDY = cells.study("03_train")


def _prepare(run, params, log=print):
    from lmkit.data.faces import prepare_run

    return prepare_run(run, params, log)


def _hpsearch(run, params, log=print):
    from lmkit.data.faces import load_data
    from lmkit.train.search import search_run

    objective = (
        cells.study("02_hpsearch").make_objective(params, load_data(run, params))
        if params.search.enabled
        else None
    )
    return search_run(run, params, objective, log)


def _train(run, params, log=print):
    """03 then the model file (04's first cell)."""
    from lmkit.chain.distributed import train_run
    from lmkit.use.packaging import package_model

    study = cells.study("03_train", params=params)  # as the run's params pick them
    if params.system.processes > 1:  # as 03's training cell
        from lmkit.chain.launch import train_in_processes

        history = train_in_processes(run, params, study.build_network, study.train_step, log)
    else:
        history = train_run(run, params, study.build_network, study.train_step, log)
    package_model(run, params, log)
    return history


def _evaluate(run, params, log=print, peers=True):
    from lmkit.report.evaluation import evaluate_run

    return evaluate_run(run, params, log, peers)


def _lazy():
    from lmkit.chain import open_run
    from lmkit.chain.ablation import ablation
    from lmkit.data.faces import load_data
    from lmkit.use.packaging import load_model, package_model
    from lmkit.report.predictions import METHODS
    from lmkit.train.search import search_worker, study_name

    return dict(
        open_run=open_run,
        ablation=ablation,
        load_data=load_data,
        load_model=load_model,
        package_model=package_model,
        METHODS=METHODS,
        search_worker=search_worker,
        study_name=study_name,
    )


steps = SimpleNamespace(
    prepare=_prepare, hpsearch=_hpsearch, train=_train, evaluate=_evaluate, **_lazy()
)
