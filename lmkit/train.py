"""The training loop: Adam, MSE on landmark coordinates in pixels of the 256x256 frame
(the study's unit; L1 and Wing loss as options), full back-propagation, fresh augmentation
every epoch, an optional learning-rate schedule (cosine, step). Validation is always MSE.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .augment import Augment, make_batch
from .losses import landmark_loss
from .model import REFERENCE_SIZE, build_model, predict, to_tensor


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epoch_multiplier: int = 4
    input_size: int = 256
    augment: Augment = field(default_factory=Augment)
    val_augmented: bool = False  # the study's protocol: validate on augmented copies
    seed: int = 0
    device: str = "cpu"
    loss: str = "mse"
    wing: tuple[float, float] = (10.0, 2.0)
    schedule: str = "none"

    @classmethod
    def from_params(cls, p: dict, device, mirror: tuple[int, ...] = (), **changes) -> "TrainConfig":
        t = p["train"]
        aug = Augment(t["rotation"], t["crop_fraction"], tuple(t["intensity"]), t["flip"], tuple(mirror))
        cfg = cls(t["epochs"], t["batch_size"], t["lr"], t["weight_decay"], t["epoch_multiplier"],
                  p["model"]["input_size"], aug, p["data"]["split"] == "paper", p["seed"], str(device),
                  t["loss"], tuple(t["wing"]), t["schedule"])
        for k, v in changes.items():
            setattr(cfg, k, v)
        return cfg

    def lr_at(self, epoch: int) -> float:
        """The learning rate of an epoch (1-based): constant, cosine to zero, or x0.1 at 50% and 75%."""
        if self.schedule == "none":
            return self.lr
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / self.epochs))
        if self.schedule == "step":
            return self.lr * 0.1 ** sum(epoch > m * self.epochs for m in (0.5, 0.75))
        raise ValueError(f"train.schedule: unknown schedule {self.schedule!r} (none, cosine, step)")


def new_model(n_points: int, params: dict, mean_shape: np.ndarray | None, seed: int, device):
    """A freshly initialised model, seeded; the head starts at the mean shape when
    ``model.head_init`` is ``mean_shape`` (``mean_shape`` in crop pixels)."""
    torch.manual_seed(seed)
    model = build_model(n_points, params["model"]["pretrained"])
    if params["model"]["head_init"] == "mean_shape":
        src = params["data"]["crop_size"]
        model.init_head(torch.as_tensor(mean_shape * (REFERENCE_SIZE / src), dtype=torch.float32))
    return model.to(device)


def save_atomic(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device="cpu") -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise RuntimeError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None


def _log_line(epoch, epochs, row, width=20):
    done = round(width * epoch / epochs)
    bar = "#" * done + "." * (width - done)
    return (f"[{bar}] epoch {epoch:>3}/{epochs}  train {row['train_mse']:9.2f}  val {row['val_mse']:9.2f} px^2"
            f"  {row['images_per_s']:6.1f} img/s  {row['seconds']:6.1f} s")


def fit(model, train_images, train_landmarks, val_images, val_landmarks, cfg: TrainConfig,
        out_dir: Path | None = None, resume: bool = False, log=print) -> pd.DataFrame:
    """Train ``model`` in place; returns the per-epoch history (MSE in 256-frame px^2).

    Images are uint8 (N, S, S, 3) arrays (memory maps are fine), landmarks (N, K, 2) in
    crop pixels. With ``out_dir``, history and checkpoints are written there.
    """
    device = torch.device(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    start = 1
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        last = out_dir / "last.pt"
        if resume and last.exists():
            ckpt = load_checkpoint(last, device)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            history = ckpt["history"]
            start = ckpt["epoch"] + 1
            log(f"resuming from {last} after epoch {ckpt['epoch']}")
    n, src = len(train_images), train_images.shape[1]
    to_ref = REFERENCE_SIZE / cfg.input_size
    images = to_tensor(train_images)  # uint8 stays uint8 on the device
    landmarks = to_tensor(train_landmarks)
    if device.type == "cuda":
        images, landmarks = images.to(device), landmarks.to(device)
        torch.backends.cudnn.benchmark = True
    best = min((h["val_mse"] for h in history), default=math.inf)
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(cfg.epoch_multiplier)])
        lr = cfg.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        total, total_mse, seen = 0.0, 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            imgs = images[idx].to(device, non_blocking=True)
            pts = landmarks[idx].to(device, non_blocking=True)
            x, y = make_batch(imgs, pts, cfg.input_size, cfg.augment, g)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                pred = model(x)
            pred, target = pred.float(), y * to_ref
            loss = landmark_loss(cfg.loss, pred, target, cfg.wing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            total_mse += (loss if cfg.loss == "mse" else F.mse_loss(pred.detach(), target)).item() * len(idx)
            seen += len(idx)
        val_pred, val_true = predict(model, val_images, cfg.input_size, cfg.batch_size, device,
                                     cfg.augment if cfg.val_augmented else None, seed=cfg.seed,
                                     landmarks=val_landmarks)
        val_mse = float(np.mean((val_pred - val_true) ** 2) * (REFERENCE_SIZE / src) ** 2)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "train_loss": total / seen, "train_mse": total_mse / seen, "val_mse": val_mse, "lr": lr,
               "seconds": seconds, "images_per_s": seen / seconds}
        history.append(row)
        log(_log_line(epoch, cfg.epochs, row))
        if out_dir is not None:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                     "history": history, "config": cfg.__dict__ | {"augment": cfg.augment.__dict__}}
            if val_mse < best:
                save_atomic(state, out_dir / "best.pt")
            save_atomic(state, out_dir / "last.pt")
            write_csv_atomic(pd.DataFrame(history), out_dir / "history.csv")
        best = min(best, val_mse)
        sys.stdout.flush()
    return pd.DataFrame(history)


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
