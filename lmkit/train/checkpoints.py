"""Checkpoints of a training: ``last.pt`` (the one before it kept as ``previous.pt``) and
``best.pt`` (lowest validation loss), written atomically after every epoch with the history;
resuming from ``last.pt`` only with the settings it was trained with; and what a finished
training keeps."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from lmkit.run.folder import write_csv, write_torch
from lmkit.run.progress import emit

# all else must be as the checkpoint was trained
RESUME_MAY_CHANGE = (
    "epochs",
    "device",
    "compile",
    "resident",
    "prefetch",
    "autocast",
    "channels_last",
    "keep_checkpoints",
)


def load_checkpoint(path: Path, device="cpu") -> dict:
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        hint = ""
        previous = Path(path).with_name("previous.pt")
        if Path(path).name == "last.pt" and previous.exists():
            hint = (f"; the checkpoint before it, {previous}, is kept: rename it to last.pt to "
                    "resume from it")  # fmt: skip
        raise RuntimeError(
            f"{path}: cannot read checkpoint, corrupt or truncated ({type(e).__name__}: {e}){hint}"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise RuntimeError(f"{path}: not an lmkit checkpoint (no 'model' entry)")
    return ckpt


def _flat_config(cfg: dict) -> dict:
    flat = {}
    for k, v in json.loads(json.dumps(cfg, default=list)).items():
        flat.update({f"{k}.{a}": b for a, b in v.items()} if isinstance(v, dict) else {k: v})
    return flat


def check_resumable(saved: dict, cfg, path: Path) -> None:
    """Refuse to resume a checkpoint trained with another configuration (anything but the
    number of epochs), naming each key with both values."""
    now = _flat_config(asdict(cfg))
    old = {
        **_flat_config(asdict(type(cfg)())),
        **_flat_config(saved),
    }  # keys added since: their defaults
    wrong = [
        f"{k}: {old.get(k)!r} in the checkpoint, {v!r} now"
        for k, v in now.items()
        if k not in RESUME_MAY_CHANGE and old.get(k) != v
    ]
    if wrong:
        raise ValueError(
            f"{path}: cannot resume, this checkpoint was trained with other settings ("
            + "; ".join(wrong)
            + "). Resume with the same params (only train.epochs may change), "
            "or set train.resume: false to train from the start"
        )


def save_checkpoint(state: dict, folder: Path, best: bool) -> None:
    """``last.pt`` (the one before it kept as ``previous.pt``) and, when best, ``best.pt``;
    each written to a temporary file and renamed, so a kill never leaves half a file."""
    if best:
        write_torch(state, folder / "best.pt")
    last = folder / "last.pt"
    if last.exists():
        os.replace(last, folder / "previous.pt")
    write_torch(state, last)


def save_epoch(out_dir: Path, model, opt, scaler, cfg, history: list[dict], best: bool) -> None:
    """After an epoch: the checkpoints (weights, optimizer, scaler, history, config) and
    ``history.csv``."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": history[-1]["epoch"],
        "history": history,
        "config": asdict(cfg),
        "scaler": scaler.state_dict(),
    }
    save_checkpoint(state, out_dir, best=best)
    write_csv(pd.DataFrame(history), out_dir / "history.csv")


def resume(out_dir: Path, model, opt, scaler, cfg, resume: bool, writer: bool, log) -> list[dict]:
    """Clear a killed run's debris and, with ``resume``, load its last checkpoint (checked
    against ``cfg``) into the model, optimizer and gradient scaler. Returns the history so far."""
    out_dir = Path(out_dir)
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        for leftover in out_dir.glob(".*.tmp*"):  # a run killed while writing a checkpoint
            leftover.unlink()
            emit(log, "resume", f"removed {leftover}, a half-written file left by a killed run")
    if not resume:
        return []
    last = out_dir / "last.pt"
    if not last.exists() and (out_dir / "previous.pt").exists():
        last = (
            out_dir / "previous.pt"
        )  # killed between keeping the previous and renaming the new one
    if not last.exists():
        raise FileNotFoundError(
            f"{out_dir}: train.resume is true but there is no checkpoint (last.pt or "
            "previous.pt) to resume from (a finished training keeps them only with "
            "train.keep_checkpoints: true); set train.resume: false to train from the start"
        )
    ckpt = load_checkpoint(last, torch.device(cfg.device))
    check_resumable(ckpt.get("config", {}), cfg, last)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):  # float16's loss scale (empty for a disabled scaler)
        scaler.load_state_dict(ckpt["scaler"])
    emit(log, "resume", f"resuming from {last} after epoch {ckpt['epoch']}")
    return ckpt["history"]


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
    freed = sum(
        f.stat().st_size for f in (folder / "last.pt", folder / "previous.pt") if f.exists()
    )
    for f in (folder / "last.pt", folder / "previous.pt"):
        f.unlink(missing_ok=True)
    emit(
        log,
        "checkpoint",
        f"training finished: kept best.pt (weights only); removed last.pt and previous.pt "
        f"({freed / 2**20:.0f} MiB; train.keep_checkpoints: true keeps them, to resume with "
        "more epochs)",
    )
