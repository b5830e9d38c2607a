"""The run folder: the only channel between notebooks. Every artifact has a fixed name here,
so a student can open any notebook alone, point it at a run folder and go on.

    params.yaml                  resolved params of the run
    data/{train,test}/           prepared caches (images.npy, landmarks.npy, names.json, manifest.json)
    split.json                   training / validation indices into the train cache
    search/optuna.db             Optuna storage (default), trials.csv, best_hparams.json
    train/history.csv            per-epoch train / validation MSE; best.pt (last.pt while training: checkpoints)
    train/model.pt               the model file: best weights + scheme, input size, crop, box calibration
    eval/predictions.npz         test predictions of the model and the mean shape, ground truth
    eval/metrics.json            summary table, per-image arrays live in predictions.npz
    figures/*.png                every figure of the report
    ablation/ablation.csv        optional (lmkit ablate): one sub-run per recipe variant
    notebooks/*.ipynb, *.html    the executed notebooks
    index.html                   the report
    .lock, .lock.json            held by the one `lmkit run` working on the folder (host, PID, since)
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FIGURES = {
    "scheme": "The landmark scheme: the mean training shape, every point's number, the groups drawn as contours",
    "fig1_sample": "Fig. 1: a training sample with its landmarks",
    "fig3_loss": "Fig. 3: train and validation loss per epoch",
    "fig4_test_mse": "Fig. 4: distribution of per-image test MSE",
    "fig5_best_worst": "Fig. 5: the 3 best and 3 worst test detections (by MSE; NME over the outer eye corners "
    "where the scheme has them, else inter-ocular)",
    "fig6_saliency": "Fig. 6: gradient saliency dL/dI for those six, on the network's own view (its input size)",
    "ced": "Cumulative error distribution (NME, inter-ocular)",
    "ced_oc": "Cumulative error distribution (NME, outer eye corners)",
    "photos": "The model end to end on original test photos: its face detector's box (blue), its points (red), the annotation (green)",
    "search": "Hyper-parameter search: learning rate vs weight decay",
    "ablation_ced": "Ablation: CED of the study's recipe and each change (optional notebook 06_ablation)",
}


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).resolve())

    def path(self, *parts: str) -> Path:
        """A path in the run folder; pure: nothing is created (writers make their folders)."""
        return self.root.joinpath(*parts)

    params = property(lambda self: self.path("params.yaml"))
    split = property(lambda self: self.path("split.json"))  # the training / validation division
    trials = property(lambda self: self.path("search", "trials.csv"))
    best_hparams = property(lambda self: self.path("search", "best_hparams.json"))
    train_dir = property(lambda self: self.path("train"))
    history = property(lambda self: self.path("train", "history.csv"))
    best_checkpoint = property(lambda self: self.path("train", "best.pt"))
    model_file = property(lambda self: self.path("train", "model.pt"))
    predictions = property(lambda self: self.path("eval", "predictions.npz"))
    metrics = property(lambda self: self.path("eval", "metrics.json"))
    index = property(lambda self: self.path("index.html"))

    def figure(self, key: str) -> Path:
        if key not in FIGURES:
            raise KeyError(f"unknown figure {key!r}; known: {sorted(FIGURES)}")
        return self.path("figures", f"{key}.png")

    def cache_dir(self, shared: str | None = None) -> Path:
        """Where the prepared caches are: ``shared`` (the params' ``data.cache_dir``) or ``<run>/data``."""
        return Path(shared) if shared else self.path("data")


def model_file(run_or_model: str | Path) -> Path:
    """``train/model.pt`` of a run folder, or the file itself."""
    p = Path(run_or_model)
    if p.is_dir():
        f = RunFolder(p).model_file
        if not f.exists():
            raise FileNotFoundError(
                f"{p}: no model file train/model.pt in this run folder (train it with notebook "
                "03_train)"
            )
        return f
    if not p.exists():
        raise FileNotFoundError(f"{p}: neither a run folder nor a model file")
    return p


@contextmanager
def atomic_write(path: Path):
    """Yield a temporary path beside ``path`` (same suffix) to write to; on success it is
    renamed onto ``path`` in one step, so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(text: str, path: Path) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj, path: Path) -> None:
    write_text(json.dumps(obj, indent=2), path)


def write_csv(df, path: Path) -> None:
    """A pandas table as CSV, atomically."""
    with atomic_write(path) as tmp:
        df.to_csv(tmp, index=False)


def write_torch(obj, path: Path) -> None:
    """A checkpoint or model file (torch.save), atomically."""
    import torch

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def read_json(path: Path, producer: str):
    """A JSON file another stage wrote; a missing one is refused, naming the stage (``producer``) that writes it.

    Used in: 01_prepare, "Prepare the data"; 02_hpsearch, "The objective"."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run notebook {producer} first")
    return json.loads(path.read_text())
