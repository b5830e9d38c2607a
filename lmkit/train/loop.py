"""The training loop around notebook 03's training step, read top to bottom: ``fit`` runs the
epochs; each sets its learning rate, draws its augmented batches (``batches``), runs the step on
each, validates (always MSE, px² of the 256 frame) and writes the history and the checkpoints
(``lmkit.train.checkpoints``). The settings and the device plan are ``lmkit.train.config``'s.

Below ``fit``: validation, the epoch's sample order and batches, where the training set is kept,
and the few lines that several processes (``torchrun``, ``lmkit.chain.distributed``) need.
Nothing in the step waits for the device: the epoch's sums stay on it and are read once."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lmkit.run.progress import emit, quiet
from lmkit.study.augment import make_batch, preshrunk, to_device
from lmkit.study.model import predict, to_tensor
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.train import checkpoints
from lmkit.train.config import DevicePlan, TrainConfig, cuda_switches

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class Diverged(FloatingPointError):
    """Training produced a non-finite loss: stopped, the last good checkpoint kept."""


def fit(
    model,
    step,
    train,
    val,
    cfg: TrainConfig,
    *,
    out_dir: Path | None = None,
    resume: bool = False,
    log=print,
) -> pd.DataFrame:
    """Train ``model`` in place with ``step(net, optimizer, scaler, images, targets, cfg)``
    (notebook 03's ``train_step``: one step on a batch of normalised images (B, 3, S, S) and
    targets (B, K, 2) in pixels of the 256 frame; returns its loss and the predicted points) on
    ``train`` and ``val``, each (images, landmarks): uint8 (N, S, S, 3) crops (memory maps stay
    memory maps on the CPU) and (N, K, 2) points in crop pixels. With ``out_dir``, the history
    and checkpoints are written there (``best.pt`` the lowest validation MSE's, or the last
    epoch's with ``cfg.keep_last``) and ``resume`` goes on from its ``last.pt``. Returns the
    per-epoch history.

    In a ``torch.distributed`` process group each of the W processes trains on batch_size / W
    images of every step with its own augmentation draws, in DistributedDataParallel; only rank 0
    writes and logs.

    Used in: 02_hpsearch, "The objective"; 03_train, "Training"."""
    rank, world = rank_world()
    log, writer = (log, True) if rank == 0 else (quiet, False)
    plan, device = cfg.plan(), torch.device(cfg.device)
    log(
        f"{plan.describe()}; {cfg.describe()}; "
        f"{len(train[0]) * cfg.epoch_multiplier} samples per epoch"
    )
    cuda_switches(device)
    model.to(memory_format=torch.channels_last if plan.channels_last else torch.contiguous_format)
    net = data_parallel(model, cfg, world, log) if world > 1 else model
    net = torch.compile(net) if cfg.compile else net
    step_cfg = replace(cfg, batch_size=cfg.batch_size // world)
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = plan.grad_scaler()  # float16 only; a no-op otherwise
    history = (
        checkpoints.resume(out_dir, model, opt, scaler, cfg, resume, writer, log) if out_dir else []
    )
    images, landmarks = place_training_set(*train, cfg.input_size, plan, log)
    src = train[0].shape[1]
    best = min((h["val_mse"] for h in history), default=math.inf)
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0, lr = time.perf_counter(), cfg.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        order, g = epoch_order(len(images), cfg, epoch, rank, world)
        model.train()
        # loss x images, MSE x images, the first step with a non-finite loss, images: on the device
        sums, seen = torch.zeros(4, dtype=torch.float64, device=device), 0
        for i, (x, y) in enumerate(batches(images, landmarks, order, step_cfg, g, plan, src), 1):
            labels = y * (REFERENCE_SIZE / cfg.input_size)
            loss, pred = step(net, opt, scaler, x, labels, step_cfg)
            # NaN: a joint face's missing points
            mse = torch.nanmean((pred.detach().float() - labels) ** 2)
            bad = (sums[2] == 0) & ~torch.isfinite(loss.detach())
            sums[:3] += torch.stack(
                [loss.detach().double() * len(x), mse.double() * len(x), bad.double() * i]
            )
            seen += len(x)
        sums[3] = seen
        total, total_mse, bad_step, seen = epoch_sums(sums, model, world).tolist()  # one read
        if bad_step or not math.isfinite(total):
            where = f"step {int(bad_step)}" if world == 1 and bad_step else "a step"
            _diverged(
                f"the training loss is not finite at epoch {epoch}, {where}", lr, out_dir, epoch
            )
        val_mse = validate(model, *val, cfg, src)
        if not math.isfinite(val_mse):
            _diverged(f"the validation MSE is {val_mse} after epoch {epoch}", lr, out_dir, epoch)
        seconds = time.perf_counter() - t0
        row = dict(epoch=epoch, train_loss=total / seen, train_mse=total_mse / seen,
                   val_mse=val_mse, lr=lr, seconds=seconds,
                   images_per_s=seen / seconds)  # fmt: skip
        if device.type == "cuda":  # the peak so far, for the GPU check
            row["max_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        history.append(row)
        emit(log, "epoch", _log_line(epoch, cfg.epochs, row), epochs=cfg.epochs, **row)
        if out_dir is not None and writer:
            is_best = val_mse < best or cfg.keep_last
            checkpoints.save_epoch(Path(out_dir), model, opt, scaler, cfg, history, is_best)
        best = min(best, val_mse)
    if out_dir is not None and writer:
        checkpoints.finish_checkpoints(Path(out_dir), keep=cfg.keep_checkpoints, log=log)
    return pd.DataFrame(history)


def validate(model, val_images, val_landmarks, cfg: TrainConfig, src: int) -> float:
    """Validation MSE in px² of the 256 frame (on augmented copies under the study's protocol), on
    the validation faces' points: a joint-trained network's first K outputs; in the run's
    precision."""
    pred, true = predict(
        model,
        val_images,
        cfg.input_size,
        cfg.batch_size,
        torch.device(cfg.device),
        cfg.augment if cfg.study_validation else None,
        seed=cfg.seed,
        landmarks=val_landmarks,
        view=cfg.val_view,
        precision=cfg.autocast,
    )
    return float(np.mean((pred[:, : true.shape[1]] - true) ** 2) * (REFERENCE_SIZE / src) ** 2)


# ------------------------------------------------------------------ an epoch's batches
def epoch_generator(seed: int, epoch: int, rank: int | None = None) -> torch.Generator:
    """The generator of one epoch's draws, seeded by (seed, epoch), and by the process's rank
    when training is data-parallel: a resumed run repeats an uninterrupted one."""
    s = seed * 1_000_003 + epoch
    return torch.Generator().manual_seed(s if rank is None else s * 1009 + rank)


def epoch_order(
    n: int, cfg, epoch: int, rank: int = 0, world: int = 1
) -> tuple[torch.Tensor, torch.Generator]:
    """The epoch's sample order (``cfg.epoch_multiplier`` shuffles) and the generator that then
    draws its augmentation; with several processes, this one's share and its own draws."""
    g = epoch_generator(cfg.seed, epoch)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(cfg.epoch_multiplier)])
    if world > 1:
        return shard(order, cfg.batch_size, rank, world), epoch_generator(cfg.seed, epoch, rank)
    return order, g


def batches(
    images, landmarks, order: torch.Tensor, cfg, g: torch.Generator, plan: DevicePlan, src: int
):
    """The augmented batches (images, points) of one epoch, in ``order``. A last batch of a single
    image is left out (batch norm cannot train on one; orders are reshuffled every epoch). With
    ``plan.prefetch`` each batch is made in a background thread (on a GPU, on a CUDA stream of its
    own) while the step before it trains; the batches and their random draws are the same."""
    b, device = cfg.batch_size, plan.device
    full, rest = divmod(len(order), b)
    count = full + (rest > 1)
    index = to_device(order, images.device) if isinstance(images, torch.Tensor) else order

    def make(i):
        idx = index[i * b : (i + 1) * b]
        x, y = make_batch(
            rows(images, idx, device),
            rows(landmarks, idx, device),
            cfg.input_size,
            cfg.augment,
            g,
            src,
        )
        return x.contiguous(
            memory_format=torch.channels_last if plan.channels_last else torch.contiguous_format
        ), y

    if not plan.prefetch:
        yield from map(make, range(count))
        return
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def made(i):  # in the worker thread
        if stream is None:
            return make(i), None
        with torch.cuda.stream(stream):
            batch, done = make(i), torch.cuda.Event()
            done.record(stream)
        return batch, done

    # on a CPU the worker takes one thread for its ops (thread-local), the model keeps the rest
    initializer = (lambda: torch.set_num_threads(1)) if device.type == "cpu" else None
    with ThreadPoolExecutor(max_workers=1, initializer=initializer) as pool:
        pending = pool.submit(made, 0)
        for i in range(count):
            batch, done = pending.result()
            if i + 1 < count:
                pending = pool.submit(made, i + 1)
            if (
                done is not None
            ):  # the step's stream waits for the batch, and owns its memory from here
                torch.cuda.current_stream(device).wait_event(done)
                for t in batch:
                    t.record_stream(torch.cuda.current_stream(device))
            yield batch


def rows(array, idx: torch.Tensor, device) -> torch.Tensor:
    """Rows ``idx`` of a training set as ``place_training_set`` left it, on ``device``."""
    if isinstance(array, torch.Tensor):  # resident on the device, or a shrunk working copy
        return array[idx].to(device, non_blocking=True)
    return to_device(
        torch.from_numpy(np.ascontiguousarray(array[idx.numpy()])), device
    )  # a memory map: these rows


def place_training_set(images, landmarks, input_size: int, plan: DevicePlan, log=quiet):
    """The training images and landmarks where the plan keeps them. Crops much larger than the
    input are shrunk once, as every batch would shrink them (a float32 working copy, ``preshrunk``);
    with ``plan.resident`` both go to the device, when they fit in half its free memory (each
    process holds its own copy on its own device), else they stay in host memory, as the log
    says."""
    working = preshrunk(images, input_size)
    images = images if working is None else working
    if not plan.resident:
        return images, landmarks
    need = (
        images.numel() * images.element_size()
        if isinstance(images, torch.Tensor)
        else np.asarray(images).nbytes
    )
    need += np.asarray(landmarks).nbytes
    if plan.device.type == "cuda":
        free = torch.cuda.mem_get_info(plan.device)[0]
        if need > free / 2:
            log(
                f"training set kept in host memory: its {need / 2**20:,.0f} MiB would take "
                "more than half of "
                f"{plan.device}'s {free / 2**20:,.0f} MiB free"
            )
            return images, landmarks
    images = images if isinstance(images, torch.Tensor) else to_tensor(images)
    return images.to(plan.device), to_tensor(landmarks).to(plan.device)


# ------------------------------------------------------------------ several processes
def rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard(order: torch.Tensor, global_batch: int, rank: int, world: int) -> torch.Tensor:
    """This process's share of every global batch (an incomplete last batch is dropped, so
    every process takes the same number of steps)."""
    if global_batch % world:
        raise ValueError(
            f"train.batch_size {global_batch} must be divisible by the {world} processes"
        )
    b = global_batch // world
    full = len(order) // global_batch * global_batch
    return order[:full].view(-1, world, b)[:, rank].reshape(-1)


def data_parallel(model, cfg: TrainConfig, world: int, log=quiet):
    """The model in DistributedDataParallel: gradients averaged over the ``world`` processes."""
    device = torch.device(cfg.device)
    ids = [device.index] if device.type == "cuda" else None
    emit(log, "launch", f"data-parallel: world size {world}, {cfg.batch_size // world} of every "
         f"{cfg.batch_size} images per process")  # fmt: skip
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def epoch_sums(sums: torch.Tensor, model, world: int) -> torch.Tensor:
    """The epoch's sums (a tensor on the training device) added over all processes; batch-norm
    running statistics made rank 0's everywhere. Every collective runs on tensors on the model's
    device, as NCCL requires."""
    if world > 1:
        torch.distributed.all_reduce(sums)
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, 0)
    return sums


def _log_line(epoch, epochs, row, width=20):
    done = round(width * epoch / epochs)
    return (
        f"[{'#' * done}{'.' * (width - done)}] epoch {epoch:>3}/{epochs}  "
        f"train {row['train_mse']:9.2f}  val {row['val_mse']:9.2f} px^2  "
        f"{row['images_per_s']:6.1f} img/s  {row['seconds']:6.1f} s"
    )


def _diverged(what: str, lr: float, out_dir: Path | None, epoch: int):
    kept = ""
    if out_dir is not None and (Path(out_dir) / "last.pt").exists():
        kept = (
            f"; the last good checkpoint, {Path(out_dir) / 'last.pt'} (epoch {epoch - 1}), is kept"
        )
    raise Diverged(
        f"training diverged: {what} (learning rate {lr:.2e}){kept}. Lower train.lr "
        "(or search.lr_range), or change the loss or schedule"
    )
