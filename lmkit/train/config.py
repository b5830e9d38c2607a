"""One training run's settings (``TrainConfig``, from the params) and the fresh network it starts
from (``new_model``). Used by notebook 03's training (``lmkit.chain.training``), notebook 02's
search and the ablation."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from lmkit.run.params import DEFAULTS, Params
from lmkit.study.augment import Augment, frozen
from lmkit.study.modelinfo import REFERENCE_SIZE, view_fraction
from lmkit.train.devices import DevicePlan

_T = DEFAULTS.train


@dataclass
class TrainConfig:
    """One training run's settings; the defaults are the params schema's (``lmkit.run.params``).

    Used in: 01_prepare, "One face, from its box to what the network sees"; 02_hpsearch, "The objective";
    03_train, "Before training: what the network is shown"."""
    epochs: int = _T.epochs
    batch_size: int = _T.batch_size
    lr: float = _T.lr
    weight_decay: float = _T.weight_decay
    epoch_multiplier: int = _T.epoch_multiplier
    input_size: int = DEFAULTS.model.input_size
    val_view: float = 1.0  # validation sees the centred square of this fraction of each crop (model.view)
    augment: Augment = field(default_factory=Augment)
    study_validation: bool = False  # data.split: paper (the study's protocol): validation = augmented training copies
    keep_last: bool = False  # data.final: the last epoch's weights are best.pt (nothing held out to choose by)
    seed: int = 0
    device: str = "cpu"
    loss: str = _T.loss
    wing: tuple[float, float] = tuple(_T.wing)
    heatmap_loss: float = _T.heatmap_loss  # weight of the heatmaps' divergence from a Gaussian (losses)
    schedule: str = _T.schedule
    warmup: int = _T.warmup  # epochs of linear warm-up
    optimizer: str = _T.optimizer
    ema: float = _T.ema  # decay of the weights' moving average (0: none)
    compile: bool = DEFAULTS.model.compile  # torch.compile the model (worth it on a GPU for long runs)
    # the device plan (lmkit.train.devices): "auto" is what lmkit picks for the device
    resident: str | bool = _T.resident
    prefetch: str | bool = _T.prefetch
    autocast: str = _T.autocast
    channels_last: str | bool = _T.channels_last

    @classmethod
    def from_params(cls, p: Params, device, mirror: tuple[int, ...] = (), **changes) -> "TrainConfig":
        """From the params: each field named as a ``train`` key is that key; the rest come from
        the model, data and seed. ``changes`` replace fields (a search trial's lr and budget)."""
        t = p.train
        named = {f.name: frozen(getattr(t, f.name)) for f in fields(cls)  # a replaced field is not read (a run's record)
                 if f.name in type(_T).model_fields and f.name != "device" and f.name not in changes}
        cfg = cls(**named, input_size=p.model.input_size, augment=Augment.from_train(t, mirror),
                  val_view=view_fraction(p.model.view, t.crop_fraction, t.scale),
                  study_validation=p.data.split == "paper", keep_last=p.data.final, seed=p.seed,
                  device=str(device),
                  compile=p.model.compile)
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
              pretrained: bool = DEFAULTS.model.pretrained, head_init: str = DEFAULTS.model.head_init,
              crop_size: int = DEFAULTS.data.crop_size, head: str = DEFAULTS.model.head):
    """A freshly initialised network from ``build(n_points, pretrained, head)`` (notebook 03's
    ``build_network``), seeded; the head starts at the mean shape when ``head_init`` is
    ``mean_shape`` (``mean_shape`` in pixels of ``crop_size`` crops). torchvision draws the initial
    weights from torch's global generator: it is seeded inside ``fork_rng``, so the caller's
    random state is left as it was.

    Used in: 02_hpsearch, "The objective"."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(n_points, pretrained, head).to(memory_format=torch.channels_last)
    if head_init == "mean_shape":
        model.init_head(torch.as_tensor(mean_shape * (REFERENCE_SIZE / crop_size), dtype=torch.float32))
    return model.to(device)


def model_options(params: Params) -> dict:
    """``new_model``'s options from a run's params.

    Used in: 02_hpsearch, "The objective"."""
    return {"pretrained": params.model.pretrained, "head_init": params.model.head_init,
            "crop_size": params.data.crop_size, "head": params.model.head}
