"""Notebook 03's training of a run (``fit_run``): what the run folder holds (its prepared data,
the search's winner, its params) turned into a fresh network and a ``TrainConfig``, handed to
the loop (``lmkit.train.loop.fit``) with the study's training step. What one process runs; with
``train.processes`` > 1, 03 launches that many (``lmkit.chain.launch``), each of which runs this
with the study cells of 03 as saved (``lmkit.study.cells.study``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lmkit.data.faces import RunData, check_flips, load_data
from lmkit.data.prepare import load_cache
from lmkit.run import params as P
from lmkit.run.folder import RunFolder, pretrain_source, read_json, write_csv, write_torch
from lmkit.run.params import Params
from lmkit.study.augment import Augment
from lmkit.study.metrics import mean_shape
from lmkit.study.model import build_model, n_outputs, pick_device
from lmkit.train import ddp
from lmkit.train.checkpoints import finish_checkpoints, load_checkpoint
from lmkit.train.config import TrainConfig, model_options, new_model
from lmkit.train.devices import DevicePlan, cuda_switches
from lmkit.train.distill import Teacher
from lmkit.train.pretrain import pretrain
from lmkit.train.loop import fit


def fit_run(run: RunFolder, params: Params, build, step, log=print) -> pd.DataFrame:
    """Train a run's network from ``build`` with ``step`` (notebook 03's ``build_network`` and
    ``train_step``) on its prepared faces, at the search's rate and decay, into ``train/``
    (history, checkpoints); what a finished training keeps is ``finish_checkpoints``'s.

    Used in: 03_train, "Training"."""
    d = load_data(run, params)
    check_pretrained(params, d)
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
    teacher = load_teacher(run, params, d, cfg.plan(), log)
    history = fit(model, images, landmarks, *d.val, cfg, step=step, out_dir=run.train_dir,
                  resume=params.train.resume, teacher=teacher, log=log)
    if ddp.rank_world()[0] == 0:
        finish_checkpoints(run.train_dir, keep=params.train.keep_checkpoints, log=log)
    return history


def source_run(key: str, file: Path, params: Params, d: RunData) -> tuple[RunFolder, Params]:
    """The run folder a file of another run (``train.teacher``'s ``train/best.pt``,
    ``model.pretrained``'s ``pretrain/backbone.pt``) comes from and its params, once it shows that
    run trained on none of this run's held-out faces (compared by name)."""
    source = RunFolder(file.parent.parent)
    for need in (source.params, source.split):
        if not need.exists():
            raise ValueError(f"{key}: {file} is not in a run folder ({need} is missing): the run tells which faces "
                             "it trained on")
    theirs = P.load(source.params)
    leaked = sorted(trained_faces(source, theirs) & held_out_faces(params, d))
    if leaked:
        raise ValueError(f"{key}: {file} trained on {len(leaked)} of this run's validation or test faces "
                         f"({', '.join(leaked[:3])}, ...): it would carry them into training. Use one trained on "
                         "this run's split (the same data and seed, data.final false)")
    return source, theirs


def check_pretrained(params: Params, d: RunData) -> None:
    """``model.pretrained``, when it is a backbone ``lmkit pretrain`` wrote (a file in a run's
    ``pretrain/`` folder), must not have seen this run's validation or test faces. Other files
    (torchvision's ImageNet weights, a user's own) cannot be checked and are taken as given."""
    file = params.model.pretrained
    if isinstance(file, str) and pretrain_source(file) is not None:
        source_run("model.pretrained", Path(file), params, d)


def pretrain_run(run: RunFolder, params: Params, log=print) -> Path:
    """``lmkit pretrain``: the backbone pretrained without labels (``lmkit.train.pretrain``) on
    the faces a training of this run would see (``RunData.training``: the training faces, with
    ``data.final`` the validation faces too, and the joint faces), written to
    ``pretrain/backbone.pt`` with its history beside it."""
    d = load_data(run, params)
    faces = d.training()
    t = params.train  # the device plan a training of this run gets (TrainConfig.plan's keys)
    plan = DevicePlan.choose(pick_device(t.device), t.resident, t.prefetch, t.autocast, t.channels_last)
    cfg = params.pretrain
    log(f"pretraining on {len(faces.images)} faces without their labels, {cfg.epochs} epochs at "
        f"{params.model.input_size}x{params.model.input_size}; {plan.describe()}")
    state, history = pretrain(faces.images, params.model.input_size, Augment.from_train(params.train),
                              epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, temperature=cfg.temperature,
                              cells=cfg.cells, seed=params.seed, plan=plan, log=log)
    write_torch({"state_dict": state, "faces": len(faces.images), "epochs": cfg.epochs}, run.backbone)
    write_csv(pd.DataFrame(history), run.pretrain_history)
    return run.backbone


def load_teacher(run: RunFolder, params: Params, d: RunData, plan: DevicePlan, log=print) -> Teacher | None:
    """``train.teacher``'s network, once its run folder shows it trained on none of this run's
    held-out faces (validation, unless ``data.final``, and test; compared by name); None when no
    teacher is set."""
    if params.train.teacher is None:
        return None
    file = Path(params.train.teacher)
    if not file.is_file():
        raise FileNotFoundError(f"train.teacher: {file}: no such file (a finished run's train/best.pt)")
    _, taught = source_run("train.teacher", file, params, d)
    state = load_checkpoint(file)["model"]
    n, head = n_outputs(state, taught.model.head), taught.model.head
    schemes = [d.scheme] + ([d.joint_scheme] if d.joint is not None else [])
    if n not in (d.scheme.n_points, sum(x.n_points for x in schemes)):  # the data set's points, or all it trains
        raise ValueError(f"train.teacher: {file} predicts {n} points; this run trains "
                         + " and ".join(f"{x.n_points} ({x.name})" for x in schemes))
    net = build_model(n, pretrained=False, head=head)
    net.load_state_dict(state)
    log(f"teacher {file}: {n} points at {taught.model.input_size}x{taught.model.input_size}, its points "
        f"{params.train.teacher_weight:g} of each target (all of a missing point's)")
    return Teacher(net.to(plan.device), taught.model.input_size, params.train.teacher_weight, plan)


def trained_faces(run: RunFolder, params: Params) -> set[str]:
    """The names of the faces a run trained on: its training faces as ``load_data`` gives them
    (with ``data.final`` the validation faces too) and its joint faces."""
    d = load_data(run, params)
    out = {d.train_set.names[i] for i in d.train.images.indices}
    if params.data.joint_train:
        out |= set(load_cache(run.cache_dir(params.data.cache_dir) / "joint").names)
    return out


def held_out_faces(params: Params, d: RunData) -> set[str]:
    """The names of the faces a run holds out: its test faces and, unless ``data.final``, its
    validation faces."""
    val = [] if params.data.final else [d.train_set.names[i] for i in d.val.images.indices]
    return set(d.test.names) | set(val)
