"""The training loop around a training step: notebook 03 defines the study's network, loss
and step (forward, loss, backward, the optimiser's step) and hands them to ``fit``, which does
what nobody needs to read twice: epochs, fresh augmentation every epoch, batches, Adam or AdamW,
the learning rate of each epoch (cosine, step), validation (always MSE, px² of the 256 frame),
several processes, and checkpoints.

Per-epoch train and validation loss go to ``history.csv``; ``best.pt`` (lowest
validation loss) and ``last.pt`` are written atomically after every epoch; ``resume``
continues from ``last.pt``. Each epoch's shuffling and augmentation are drawn from a
generator seeded by (seed, epoch), so a resumed run repeats an uninterrupted one.
"""
from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lmkit.study.augment import Augment, _frozen, make_batch
from lmkit.study.modelinfo import view_fraction
from lmkit.study.model import REFERENCE_SIZE, predict
from lmkit.run.params import DEFAULTS
from lmkit.train.devices import DevicePlan, place_training_set
from lmkit.run.progress import emit, quiet
from lmkit.run.folder import write_csv, write_torch

_T = DEFAULTS["train"]


@dataclass
class TrainConfig:
    """One training run's settings; the defaults are the params schema's (``lmkit.run.params``)."""
    epochs: int = _T["epochs"]
    batch_size: int = _T["batch_size"]
    lr: float = _T["lr"]
    weight_decay: float = _T["weight_decay"]
    epoch_multiplier: int = _T["epoch_multiplier"]
    input_size: int = DEFAULTS["model"]["input_size"]
    val_view: float = 1.0  # validation sees the centred square of this fraction of each crop (model.view)
    augment: Augment = field(default_factory=Augment)
    study_validation: bool = False  # data.split: paper (the study's protocol): validation = augmented training copies
    seed: int = 0
    device: str = "cpu"
    loss: str = _T["loss"]
    wing: tuple[float, float] = tuple(_T["wing"])
    heatmap_loss: float = _T["heatmap_loss"]  # weight of the heatmaps' divergence from a Gaussian (losses)
    schedule: str = _T["schedule"]
    warmup: int = _T["warmup"]  # epochs of linear warm-up
    optimizer: str = _T["optimizer"]
    compile: bool = DEFAULTS["model"]["compile"]  # torch.compile the model (worth it on a GPU for long runs)
    # the device plan (lmkit.train.devices): "auto" is what lmkit picks for the device
    resident: str | bool = _T["resident"]
    prefetch: str | bool = _T["prefetch"]
    autocast: str = _T["autocast"]
    channels_last: str | bool = _T["channels_last"]

    @classmethod
    def from_params(cls, p: dict, device, mirror: tuple[int, ...] = (), **changes) -> "TrainConfig":
        """From the params: each field named as a ``train`` key is that key; the rest come from
        the model, data and seed. ``changes`` replace fields (a search trial's lr and budget)."""
        t = p["train"]
        named = {f.name: _frozen(t[f.name]) for f in fields(cls)  # a replaced field is not read (a run's record)
                 if f.name in _T and f.name != "device" and f.name not in changes}
        cfg = cls(**named, input_size=p["model"]["input_size"], augment=Augment.from_train(t, mirror),
                  val_view=view_fraction(p["model"]["view"], t["crop_fraction"], t["scale"]),
                  study_validation=p["data"]["split"] == "paper", seed=p["seed"], device=str(device),
                  compile=p["model"]["compile"])
        return replace(cfg, **changes)

    def plan(self) -> DevicePlan:
        return DevicePlan.choose(self.device, self.resident, self.prefetch, self.autocast, self.channels_last)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of an epoch (1-based): after ``warmup`` epochs rising linearly to
        ``lr``, constant, cosine to zero, or x0.1 at 50% and 75% of the epochs after warm-up."""
        if epoch <= self.warmup:
            return self.lr * epoch / (self.warmup + 1)
        e, n = epoch - self.warmup, self.epochs - self.warmup
        if self.schedule == "none":
            return self.lr
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * (e - 1) / n))
        if self.schedule == "step":
            return self.lr * 0.1 ** sum(e > m * n for m in (0.5, 0.75))
        raise ValueError(f"train.schedule: unknown schedule {self.schedule!r} (none, cosine, step)")


def new_model(build, n_points: int, mean_shape: np.ndarray | None, seed: int, device,
              pretrained: bool = DEFAULTS["model"]["pretrained"], head_init: str = DEFAULTS["model"]["head_init"],
              crop_size: int = DEFAULTS["data"]["crop_size"], head: str = DEFAULTS["model"]["head"]):
    """A freshly initialised network from ``build(n_points, pretrained, head)`` (notebook 03's
    ``build_network``), seeded; the head starts at the mean shape when ``head_init`` is
    ``mean_shape`` (``mean_shape`` in pixels of ``crop_size`` crops). torchvision draws the initial
    weights from torch's global generator: it is seeded inside ``fork_rng``, so the caller's
    random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(n_points, pretrained, head).to(memory_format=torch.channels_last)
    if head_init == "mean_shape":
        model.init_head(torch.as_tensor(mean_shape * (REFERENCE_SIZE / crop_size), dtype=torch.float32))
    return model.to(device)


class Diverged(FloatingPointError):
    """Training produced a non-finite loss: stopped at once, the last good checkpoint kept."""


def load_checkpoint(path: Path, device="cpu") -> dict:
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        hint = ""
        previous = Path(path).with_name("previous.pt")
        if Path(path).name == "last.pt" and previous.exists():
            hint = f"; the checkpoint before it, {previous}, is kept: rename it to last.pt to resume from it"
        raise RuntimeError(f"{path}: cannot read checkpoint, corrupt or truncated ({type(e).__name__}: {e}){hint}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise RuntimeError(f"{path}: not an lmkit checkpoint (no 'model' entry)")
    return ckpt


RESUME_MAY_CHANGE = ("epochs", "device", "compile", "resident", "prefetch", "autocast", "channels_last")  # all else must be as the checkpoint was trained


def _flat_config(cfg: dict) -> dict:
    import json

    flat = {}
    for k, v in json.loads(json.dumps(cfg, default=list)).items():
        flat.update({f"{k}.{a}": b for a, b in v.items()} if isinstance(v, dict) else {k: v})
    return flat


def model_options(params: dict) -> dict:
    """``new_model``'s options from a run's params."""
    return {"pretrained": params["model"]["pretrained"], "head_init": params["model"]["head_init"],
            "crop_size": params["data"]["crop_size"], "head": params["model"]["head"]}


def check_resumable(saved: dict, cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume a checkpoint trained with another configuration (anything but the
    number of epochs), naming each key with both values."""
    now = _flat_config(asdict(cfg))
    old = {**_flat_config(asdict(TrainConfig())), **_flat_config(saved)}  # keys added since: their defaults
    wrong = [f"{k}: {old.get(k)!r} in the checkpoint, {v!r} now" for k, v in now.items()
             if k not in RESUME_MAY_CHANGE and old.get(k) != v]
    if wrong:
        raise ValueError(f"{path}: cannot resume, this checkpoint was trained with other settings ("
                         + "; ".join(wrong) + "). Resume with the same params (only train.epochs may change), "
                         "or set train.resume: false to train from the start")


def save_checkpoint(state: dict, folder: Path, best: bool) -> None:
    """``last.pt`` (the one before it kept as ``previous.pt``) and, when best, ``best.pt``;
    each written to a temporary file and renamed, so a kill never leaves half a file."""
    if best:
        write_torch(state, folder / "best.pt")
    last = folder / "last.pt"
    if last.exists():
        os.replace(last, folder / "previous.pt")
    write_torch(state, last)


def _log_line(epoch, epochs, row, width=20):
    done = round(width * epoch / epochs)
    bar = "#" * done + "." * (width - done)
    return (f"[{bar}] epoch {epoch:>3}/{epochs}  train {row['train_mse']:9.2f}  val {row['val_mse']:9.2f} px^2"
            f"  {row['images_per_s']:6.1f} img/s  {row['seconds']:6.1f} s")


class Batches:
    """The augmented training batches of one epoch, in ``order``. With ``prefetch`` (the
    default on a GPU) each batch is gathered and augmented in a background thread while the
    previous one trains, so the data path overlaps the model's work. On a CPU the thread only
    competes with the model for the cores, so the CPU default is off (``benchmarks.speed``
    measures both). The batches and their random draws are the same either way."""

    def __init__(self, images, landmarks, order: torch.Tensor, cfg: "TrainConfig", generator: torch.Generator,
                 device: torch.device, prefetch: bool | None = None, src_size: int | None = None):
        self.images, self.landmarks, self.order, self.src_size = images, landmarks, order, src_size
        self.cfg, self.g, self.device = cfg, generator, device
        self.prefetch = device.type == "cuda" if prefetch is None else prefetch

    def __len__(self) -> int:
        """Batches in the epoch. A last batch of a single image is left out: batch-norm cannot
        train on one image. Orders are reshuffled every epoch, so no image is always left out."""
        full, rest = divmod(len(self.order), self.cfg.batch_size)
        return full + (rest > 1)

    def _make(self, i: int):
        idx = self.order[i * self.cfg.batch_size : (i + 1) * self.cfg.batch_size]
        imgs, pts = self._rows(self.images, idx), self._rows(self.landmarks, idx)
        x, y = make_batch(imgs.to(self.device, non_blocking=True), pts.to(self.device, non_blocking=True),
                          self.cfg.input_size, self.cfg.augment, self.g, self.src_size)
        return x, y

    @staticmethod
    def _rows(array, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(array, torch.Tensor):  # resident: on the GPU, or a shrunk working copy
            return array[idx.to(array.device)]
        return torch.from_numpy(np.ascontiguousarray(array[idx.numpy()]))  # a memory map: read these rows

    def __iter__(self):
        if not self.prefetch:
            for i in range(len(self)):
                yield self._make(i)
            return
        # on a CPU the worker takes one thread for its ops (a thread-local setting), the model keeps all
        initializer = (lambda: torch.set_num_threads(1)) if self.device.type == "cpu" else None
        with ThreadPoolExecutor(max_workers=1, initializer=initializer) as pool:
            pending = pool.submit(self._make, 0)
            for i in range(len(self)):
                batch = pending.result()
                if i + 1 < len(self):
                    pending = pool.submit(self._make, i + 1)
                yield batch


class TrainingNetwork(torch.nn.Module):
    """What a training step calls as ``net``: the model in the device plan's memory layout, its
    forward under the plan's autocast with float32 outputs, and, with float16, the gradients that
    flow back from its outputs scaled by the gradient scaler (what ``GradScaler.scale(loss)``
    does), so that a step written as plain ``loss.backward(); optimizer.step()`` is right on
    every plan. ``optimizer.step()`` then unscales, and skips a step whose gradients overflowed."""

    def __init__(self, net, plan: DevicePlan, scaler=None):
        super().__init__()
        self.net, self.plan, self.scaler = net, plan, scaler

    def forward(self, x: torch.Tensor, **kwargs):
        with self.plan.autocast_context():
            out = self.net(self.plan.layout(x), **kwargs)
        out = tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
        if self.scaler is not None and torch.is_grad_enabled():
            scale = self.scaler.get_scale()
            for o in out if isinstance(out, tuple) else (out,):
                if o.requires_grad:
                    o.register_hook(lambda g: g * scale)
        return out


class ScaledOptimizer:
    """The optimizer a step sees under float16: ``step`` goes through the gradient scaler
    (unscale, skip a step whose gradients overflowed, adjust the scale)."""

    def __init__(self, opt, scaler, device):
        self.opt, self.scaler = opt, scaler
        scaler.scale(torch.ones((), device=device))  # the scaler makes its scale on its first use

    def zero_grad(self, set_to_none: bool = True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.scaler.step(self.opt)
        self.scaler.update()

    @property
    def param_groups(self):
        return self.opt.param_groups


def epoch_generator(seed: int, epoch: int, rank: int | None = None) -> torch.Generator:
    """The generator of one epoch's draws, seeded by (seed, epoch), and by the process's rank
    when training is data-parallel: the one place this seed formula is written."""
    s = seed * 1_000_003 + epoch
    return torch.Generator().manual_seed(s if rank is None else s * 1009 + rank)


def epoch_order(n: int, cfg: "TrainConfig", epoch: int) -> tuple[torch.Tensor, torch.Generator]:
    """The epoch's sample order (``epoch_multiplier`` shuffles) and the generator that then
    draws its augmentation, both seeded by (seed, epoch)."""
    g = epoch_generator(cfg.seed, epoch)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(cfg.epoch_multiplier)]), g


def shard(order: torch.Tensor, global_batch: int, rank: int, world: int) -> tuple[torch.Tensor, int]:
    """This process's share of every global batch (an incomplete last batch is dropped, so
    every process takes the same number of steps). Returns (its order, its batch size)."""
    if global_batch % world:
        raise ValueError(f"train.batch_size {global_batch} must be divisible by the {world} processes")
    b = global_batch // world
    full = len(order) // global_batch * global_batch
    return order[:full].view(-1, world, b)[:, rank].reshape(-1), b


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def fit(model, train_images, train_landmarks, val_images, val_landmarks, cfg: TrainConfig, *, step,
        out_dir: Path | None = None, resume: bool = False, log=print) -> pd.DataFrame:
    """Train ``model`` in place with ``step``, the training step (notebook 03 defines the
    study's): ``step(net, optimizer, images, targets, cfg)`` runs one step on a batch (images
    normalised (B, 3, S, S), targets (B, K, 2) in pixels of the 256 frame) and returns (its
    loss, the predicted points). ``net`` is the model as it trains here (``TrainingNetwork``).
    This loop does the rest: epochs, batches and their augmentation, the learning rate of each
    epoch, validation, checkpoints, resume. Returns the per-epoch history (MSE in 256-frame px^2).

    Images are uint8 (N, S, S, 3) arrays; memory maps stay memory maps on the CPU (each
    batch reads its rows) and are copied once to the GPU when training there. Landmarks are
    (N, K, 2) in crop pixels. With ``out_dir``, history and checkpoints are written there.

    Inside a ``torch.distributed`` process group (``torchrun``, see ``lmkit.chain.distributed``)
    the model is wrapped in DistributedDataParallel and ``cfg.batch_size`` is the global
    batch: each of the W processes trains on batch_size / W images of every step, with its
    own augmentation draws; gradients are averaged, so the weights stay identical. Batch-norm
    statistics are computed per process on its share (not synchronized); running statistics
    are broadcast from rank 0 at every forward (DDP's default). Only rank 0 writes and logs.
    """
    device, plan = torch.device(cfg.device), cfg.plan()
    rank, world = _distributed()
    writer = rank == 0
    if not writer:
        log = quiet
    net, step_cfg = training_network(model, cfg, plan, world, log)
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    opt = optimizer(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = plan.grad_scaler()
    history = _resume(Path(out_dir), model, opt, scaler, cfg, resume, writer, log) if out_dir is not None else []
    images, landmarks = place_training_set(train_images, train_landmarks, cfg.input_size, plan)
    src = train_images.shape[1]
    best = min((h["val_mse"] for h in history), default=math.inf)
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = cfg.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        train_loss, train_mse, seen = _train_epoch(step, net, model, opt, scaler, images, landmarks, step_cfg, plan,
                                                   epoch, (rank, world), src, lambda what: _diverged(what, lr, out_dir, epoch))
        val_mse = _validate(model, val_images, val_landmarks, cfg, src)
        if not math.isfinite(val_mse):
            _diverged(f"the validation MSE is {val_mse} after epoch {epoch}", lr, out_dir, epoch)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "train_loss": train_loss, "train_mse": train_mse, "val_mse": val_mse, "lr": lr,
               "seconds": seconds, "images_per_s": seen / seconds}
        if device.type == "cuda":  # the peak so far, for the GPU check
            row["max_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        history.append(row)
        emit(log, "epoch", _log_line(epoch, cfg.epochs, row), epochs=cfg.epochs, **row)
        if out_dir is not None and writer:
            _save(Path(out_dir), model, opt, scaler, cfg, history, best=val_mse < best)
        best = min(best, val_mse)
        sys.stdout.flush()
    return pd.DataFrame(history)


def training_network(model, cfg: TrainConfig, plan: DevicePlan, world: int = 1, log=quiet):
    """The network the steps run: the model in the plan's memory layout, wrapped in
    DistributedDataParallel when there are several processes (see ``fit``), compiled when
    asked. Returns it and the per-process config."""
    if not plan.channels_last:
        model.to(memory_format=torch.contiguous_format)
    net, step_cfg = model, cfg
    if world > 1:
        from dataclasses import replace

        from torch.nn.parallel import DistributedDataParallel

        device = torch.device(cfg.device)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        step_cfg = replace(cfg, batch_size=cfg.batch_size // world)
        emit(log, "launch", f"data-parallel: world size {world}, {step_cfg.batch_size} of every {cfg.batch_size} images per process")
    if cfg.compile:
        net = torch.compile(net)
    return net, step_cfg


def _resume(out_dir: Path, model, opt, scaler, cfg: TrainConfig, resume: bool, writer: bool, log) -> list[dict]:
    """Clear a killed run's debris and, with ``resume``, load its last checkpoint (checked
    against ``cfg``) into the model, optimizer and gradient scaler. Returns the history so far."""
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        for leftover in out_dir.glob(".*.tmp*"):  # a run killed while writing a checkpoint
            leftover.unlink()
            emit(log, "resume", f"removed {leftover}, a half-written file left by a killed run")
    if not resume:
        return []
    last = out_dir / "last.pt"
    if not last.exists() and (out_dir / "previous.pt").exists():
        last = out_dir / "previous.pt"  # killed between keeping the previous and renaming the new one
    if not last.exists():
        raise FileNotFoundError(f"{out_dir}: train.resume is true but there is no checkpoint (last.pt or "
                                "previous.pt) to resume from (a finished training keeps them only with "
                                "train.keep_checkpoints: true); set train.resume: false to train from the start")
    ckpt = load_checkpoint(last, torch.device(cfg.device))
    check_resumable(ckpt.get("config", {}), cfg, last)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    emit(log, "resume", f"resuming from {last} after epoch {ckpt['epoch']}")
    return ckpt["history"]


def _train_epoch(step_fn, net, model, opt, scaler, images, landmarks, cfg: TrainConfig, plan: DevicePlan, epoch: int,
                 rank_world: tuple[int, int], src: int, diverged) -> tuple[float, float, int]:
    """One epoch of steps over freshly drawn, augmented batches; returns the epoch's mean
    training loss and MSE (over all processes) and the images seen."""
    rank, world = rank_world
    order, g = epoch_order(len(images), cfg, epoch)
    if world > 1:  # this process's share of every global batch, its own augmentation draws
        order, _ = shard(order, cfg.batch_size * world, rank, world)
        g = epoch_generator(cfg.seed, epoch, rank)
    model.train()
    total, total_mse, seen = 0.0, 0.0, 0
    batches = Batches(images, landmarks, order, cfg, g, torch.device(cfg.device), prefetch=plan.prefetch, src_size=src)
    net = TrainingNetwork(net, plan, scaler)
    opt = ScaledOptimizer(opt, scaler, cfg.device) if scaler is not None else opt
    for step, (x, y) in enumerate(batches, start=1):
        target = y * (REFERENCE_SIZE / cfg.input_size)
        loss, pred = step_fn(net, opt, x, target, cfg)
        loss, mse = float(loss), F.mse_loss(pred.detach().float(), target).item()
        if not math.isfinite(loss):
            diverged(f"the training loss is {loss} at epoch {epoch}, step {step}")
        total, total_mse, seen = total + loss * len(x), total_mse + mse * len(x), seen + len(x)
    if world > 1:  # the epoch's means over all processes
        sums = torch.tensor([total, total_mse, seen], dtype=torch.float64)
        torch.distributed.all_reduce(sums)
        total, total_mse, seen = sums[0].item(), sums[1].item(), int(sums[2].item())
        for buffer in model.buffers():  # batch-norm running statistics: rank 0's everywhere
            torch.distributed.broadcast(buffer, 0)
    return total / seen, total_mse / seen, seen


def _validate(model, val_images, val_landmarks, cfg: TrainConfig, src: int) -> float:
    """Validation MSE in px² of the 256 frame (on augmented copies under the study's protocol)."""
    pred, true = predict(model, val_images, cfg.input_size, cfg.batch_size, torch.device(cfg.device),
                         cfg.augment if cfg.study_validation else None, seed=cfg.seed, landmarks=val_landmarks,
                         view=cfg.val_view)
    return float(np.mean((pred - true) ** 2) * (REFERENCE_SIZE / src) ** 2)


def _save(out_dir: Path, model, opt, scaler, cfg: TrainConfig, history: list[dict], best: bool) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": history[-1]["epoch"],
             "history": history, "config": asdict(cfg)}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    save_checkpoint(state, out_dir, best=best)
    write_csv(pd.DataFrame(history), out_dir / "history.csv")


def _diverged(what: str, lr: float, out_dir: Path | None, epoch: int):
    kept = ""
    if out_dir is not None and (Path(out_dir) / "last.pt").exists():
        kept = f"; the last good checkpoint, {Path(out_dir) / 'last.pt'} (epoch {epoch - 1}), is kept"
    raise Diverged(f"training diverged: {what} (learning rate {lr:.2e}){kept}. Lower train.lr "
                   "(or search.lr_range), or change the loss or schedule")


def fit_run(run, params: dict, build, step, log=print) -> pd.DataFrame:
    """Notebook 03's training of a run: its prepared data and the search's rate and decay, a new
    network from ``build``, ``fit`` with ``step`` into ``train/`` (history, checkpoints). What one
    process runs; with ``train.processes`` > 1, 03 launches that many (``lmkit.chain.launch``),
    each of which runs this with the study cells of 03 as saved (``lmkit.study.cells.study``)."""
    from lmkit.study import metrics as M
    from lmkit.data.faces import check_flips, load_data
    from lmkit.study.model import pick_device
    from lmkit.train.devices import cuda_switches
    from lmkit.run.folder import read_json

    d = load_data(run, params)
    hp = read_json(run.best_hparams, "02_hpsearch")
    device = pick_device(params["train"]["device"])
    mean = M.mean_shape(d.train[1])
    check_flips(params, d.scheme, mean)
    model = new_model(build, mean.shape[0], mean, params["seed"], device, **model_options(params))
    cfg = TrainConfig.from_params(params, device, d.scheme.mirror, lr=hp["lr"], weight_decay=hp["weight_decay"])
    cuda_switches(device)
    log(f"{cfg.plan().describe()}; loss {cfg.loss}, {cfg.optimizer}, schedule {cfg.schedule} (warm-up {cfg.warmup}), "
        f"flip {cfg.augment.flip}, box jitter scale {cfg.augment.scale} shift {cfg.augment.shift} "
        f"edges {cfg.augment.edges}; lr {cfg.lr:.2e}, weight decay {cfg.weight_decay:.2e} ({hp['source']}); "
        f"{len(d.train[0]) * cfg.epoch_multiplier} samples per epoch at {cfg.input_size}x{cfg.input_size}")
    history = fit(model, *d.train, *d.val, cfg, step=step, out_dir=run.train_dir, resume=params["train"]["resume"],
                  log=log)
    if _distributed()[0] == 0:
        finish_checkpoints(run.train_dir, keep=params["train"]["keep_checkpoints"], log=log)
    return history


def finish_checkpoints(folder: Path, keep: bool = False, log=print) -> None:
    """After a finished training, what the run folder keeps: ``best.pt`` with the best weights
    (no optimizer state: packaging and evaluation need only the weights), and, only with
    ``keep`` (``train.keep_checkpoints``), ``last.pt`` and ``previous.pt`` to extend the run
    later with ``train.resume`` and more epochs. An interrupted training never gets here, so its
    ``last.pt`` stays for the resume."""
    folder = Path(folder)
    best = folder / "best.pt"
    if keep or not best.exists():
        return
    state = load_checkpoint(best)
    if "optimizer" in state:
        write_torch({k: v for k, v in state.items() if k not in ("optimizer", "scaler")}, best)
    freed = sum(f.stat().st_size for f in (folder / "last.pt", folder / "previous.pt") if f.exists())
    for f in (folder / "last.pt", folder / "previous.pt"):
        f.unlink(missing_ok=True)
    emit(log, "checkpoint", f"training finished: kept best.pt (weights only); removed last.pt and previous.pt "
         f"({freed / 2**20:.0f} MiB; train.keep_checkpoints: true keeps them, to resume with more epochs)")


def preview_batch(images, landmarks, cfg: TrainConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces as the network will see them in training: one augmented draw of each (uint8
    (N, S, S, 3), points in input pixels), for notebook 03's picture."""
    from lmkit.study.augment import IMAGENET_MEAN, IMAGENET_STD
    from lmkit.study.model import to_tensor

    g = torch.Generator().manual_seed(seed)
    x, y = make_batch(to_tensor(images), to_tensor(landmarks), cfg.input_size, cfg.augment, g)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x * std + mean).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy(), y.numpy()
