"""The training loop around a training step, on one screen. Notebook 03 defines the study's
network, loss and step (forward, loss, backward, the optimiser's step) and hands the step to
``fit``, which does, in order: epochs; each epoch's learning rate; freshly augmented batches
and the step on each; validation (always MSE, px² of the 256 frame); the history and the
checkpoints (``best.pt`` at the lowest validation MSE; with ``train.ema`` the weights' moving
average is what is validated and kept). Its helpers: the settings
(``lmkit.train.config``), the batches (``batches``), the device plan and its wrappers
(``devices``), several processes (``ddp``) and checkpoints (``checkpoints``)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lmkit.run.progress import emit, quiet
from lmkit.study.model import predict
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.train import checkpoints, ddp
from lmkit.train.batches import Batches, epoch_generator, epoch_order
from lmkit.train.config import TrainConfig
from lmkit.train.devices import ScaledOptimizer, TrainingNetwork, place_training_set, training_network
from lmkit.train.distill import Teacher

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class Diverged(FloatingPointError):
    """Training produced a non-finite loss: stopped at once, the last good checkpoint kept."""


def fit(model, train_images, train_landmarks, val_images, val_landmarks, cfg: TrainConfig, *, step,
        out_dir: Path | None = None, resume: bool = False, teacher: Teacher | None = None, log=print) -> pd.DataFrame:
    """Train ``model`` in place with ``step(net, optimizer, images, targets, cfg)``, the training
    step (notebook 03's ``train_step``: one step on a batch of normalised images (B, 3, S, S) and
    targets (B, K, 2) in pixels of the 256 frame; returns its loss and the predicted points).
    Images are uint8 (N, S, S, 3) arrays (memory maps stay memory maps on the CPU), landmarks
    (N, K, 2) in crop pixels. With ``cfg.ema`` the weights' exponential moving average is updated
    after every step; it is what validation, the checkpoints and, at the end, ``model`` hold. With ``out_dir``, history and checkpoints are written there (``best.pt``
    the lowest validation MSE's, or the last epoch's with ``cfg.keep_last``) and ``resume`` goes on
    from its ``last.pt``. With a ``teacher`` (``train.teacher``) each batch's targets are its
    points where a face lacks them, blended into the labels where it has them (distillation; the
    training MSE stays measured against the labels). Returns the per-epoch history.

    In a ``torch.distributed`` process group each of the W processes trains on batch_size / W
    images of every step with its own augmentation draws, in DistributedDataParallel (gradients
    averaged, batch-norm statistics per process, rank 0's running statistics everywhere); only
    rank 0 writes and logs.

    Used in: 02_hpsearch, "The objective"."""
    rank, world = ddp.rank_world()
    log, writer = (log, True) if rank == 0 else (quiet, False)
    plan, device = cfg.plan(), torch.device(cfg.device)
    net, step_cfg = training_network(model, cfg, plan, world, log)  # DDP, compiled, in the plan's layout
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = plan.grad_scaler()  # float16 only
    net, step_opt = TrainingNetwork(net, plan, scaler), ScaledOptimizer(opt, scaler, device) if scaler else opt
    kept = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    history = checkpoints.resume(out_dir, model, opt, scaler, cfg, resume, writer, log, kept) if out_dir is not None else []
    images, landmarks = place_training_set(train_images, train_landmarks, cfg.input_size, plan)
    src = train_images.shape[1]
    best = min((h["val_mse"] for h in history), default=math.inf)
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0, lr = time.perf_counter(), cfg.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        order, g = epoch_order(len(images), cfg, epoch)
        if world > 1:  # this process's share of every global batch, its own augmentation draws
            order, g = ddp.shard(order, cfg.batch_size, rank, world)[0], epoch_generator(cfg.seed, epoch, rank)
        model.train()
        total = total_mse = seen = 0
        for i, (x, y) in enumerate(Batches(images, landmarks, order, step_cfg, g, device, plan.prefetch, src), 1):
            labels = y * (REFERENCE_SIZE / cfg.input_size)
            target = teacher.targets(x, labels) if teacher is not None else labels
            loss, pred = step(net, step_opt, x, target, step_cfg)
            if kept is not None:
                kept.update_parameters(model)
            loss, mse = float(loss), torch.nanmean((pred.detach().float() - labels) ** 2).item()  # NaN: a joint face's missing points
            if not math.isfinite(loss):
                _diverged(f"the training loss is {loss} at epoch {epoch}, step {i}", lr, out_dir, epoch)
            total, total_mse, seen = total + loss * len(x), total_mse + mse * len(x), seen + len(x)
        total, total_mse, seen = ddp.epoch_sums(model, total, total_mse, seen, world)
        val_mse = validate(kept.module if kept else model, val_images, val_landmarks, cfg, src)
        if not math.isfinite(val_mse):
            _diverged(f"the validation MSE is {val_mse} after epoch {epoch}", lr, out_dir, epoch)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "train_loss": total / seen, "train_mse": total_mse / seen, "val_mse": val_mse,
               "lr": lr, "seconds": seconds, "images_per_s": seen / seconds}
        if device.type == "cuda":  # the peak so far, for the GPU check
            row["max_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        history.append(row)
        emit(log, "epoch", _log_line(epoch, cfg.epochs, row), epochs=cfg.epochs, **row)
        if out_dir is not None and writer:
            checkpoints.save_epoch(Path(out_dir), model, opt, scaler, cfg, history, best=val_mse < best or cfg.keep_last,
                                   averaged=kept)
        best = min(best, val_mse)
    if kept is not None:  # the model ends as what was kept: the averaged weights
        model.load_state_dict(kept.module.state_dict())
    return pd.DataFrame(history)


def validate(model, val_images, val_landmarks, cfg: TrainConfig, src: int) -> float:
    """Validation MSE in px² of the 256 frame (on augmented copies under the study's protocol), on
    the validation faces' points: a joint-trained network's first K outputs."""
    pred, true = predict(model, val_images, cfg.input_size, cfg.batch_size, torch.device(cfg.device),
                         cfg.augment if cfg.study_validation else None, seed=cfg.seed, landmarks=val_landmarks,
                         view=cfg.val_view)
    return float(np.mean((pred[:, : true.shape[1]] - true) ** 2) * (REFERENCE_SIZE / src) ** 2)


def _log_line(epoch, epochs, row, width=20):
    done = round(width * epoch / epochs)
    return (f"[{'#' * done}{'.' * (width - done)}] epoch {epoch:>3}/{epochs}  train {row['train_mse']:9.2f}  "
            f"val {row['val_mse']:9.2f} px^2  {row['images_per_s']:6.1f} img/s  {row['seconds']:6.1f} s")


def _diverged(what: str, lr: float, out_dir: Path | None, epoch: int):
    kept = ""
    if out_dir is not None and (Path(out_dir) / "last.pt").exists():
        kept = f"; the last good checkpoint, {Path(out_dir) / 'last.pt'} (epoch {epoch - 1}), is kept"
    raise Diverged(f"training diverged: {what} (learning rate {lr:.2e}){kept}. Lower train.lr "
                   "(or search.lr_range), or change the loss or schedule")
