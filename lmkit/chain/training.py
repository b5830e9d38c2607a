"""Notebook 03's training of a run (``fit_run``): what the run folder holds (its prepared data,
the search's winner, its params) turned into a fresh network and a ``TrainConfig``, handed to
the loop (``lmkit.train.loop.fit``) with the study's training step. What one process runs; with
``train.processes`` > 1, 03 launches that many (``lmkit.chain.launch``), each of which runs this
with the study cells of 03 as saved (``lmkit.study.cells.study``)."""
from __future__ import annotations

import pandas as pd

from lmkit.data.faces import check_flips, load_data
from lmkit.run.folder import RunFolder, read_json
from lmkit.study.metrics import mean_shape
from lmkit.study.model import pick_device
from lmkit.train import ddp
from lmkit.train.checkpoints import finish_checkpoints
from lmkit.train.config import TrainConfig, model_options, new_model
from lmkit.train.devices import cuda_switches
from lmkit.train.loop import fit
from lmkit.run.params import Params


def fit_run(run: RunFolder, params: Params, build, step, log=print) -> pd.DataFrame:
    """Train a run's network from ``build`` with ``step`` (notebook 03's ``build_network`` and
    ``train_step``) on its prepared faces, at the search's rate and decay, into ``train/``
    (history, checkpoints); what a finished training keeps is ``finish_checkpoints``'s.

    Used in: 03_train, "Training"."""
    d = load_data(run, params)
    hp = read_json(run.best_hparams, "02_hpsearch")
    device = pick_device(params.train.device)
    check_flips(params, d.scheme, mean_shape(d.train.landmarks))
    if d.joint is not None:
        check_flips(params, d.joint_scheme, mean_shape(d.joint.landmarks))
    images, landmarks, mirror, mean = d.training()  # with joint faces: both sets, each face with both schemes' points
    model = new_model(build, mean.shape[0], mean, params.seed, device, **model_options(params))
    cfg = TrainConfig.from_params(params, device, mirror, lr=hp["lr"], weight_decay=hp["weight_decay"])
    cuda_switches(device)
    log(f"{cfg.plan().describe()}; loss {cfg.loss}, {cfg.optimizer}, schedule {cfg.schedule} (warm-up {cfg.warmup}), "
        f"flip {cfg.augment.flip}, box jitter scale {cfg.augment.scale} shift {cfg.augment.shift} "
        f"edges {cfg.augment.edges}; lr {cfg.lr:.2e}, weight decay {cfg.weight_decay:.2e} ({hp['source']}); "
        f"{len(images) * cfg.epoch_multiplier} samples per epoch at {cfg.input_size}x{cfg.input_size}"
        + (f" ({len(d.joint.images)} of the faces {d.joint_scheme.name}, through outputs of their own)"
           if d.joint is not None else ""))
    history = fit(model, images, landmarks, *d.val, cfg, step=step, out_dir=run.train_dir,
                  resume=params.train.resume, log=log)
    if ddp.rank_world()[0] == 0:
        finish_checkpoints(run.train_dir, keep=params.train.keep_checkpoints, log=log)
    return history
