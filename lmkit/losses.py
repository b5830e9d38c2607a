"""Training losses on landmark coordinates (pixels of the 256x256 frame).

* ``mse``: the study's loss, squared error averaged over points and x, y.
* ``l1``: absolute error.
* ``wing``: Wing loss (Feng et al., CVPR 2018), per coordinate:
  w * ln(1 + |x| / eps) for |x| < w, else |x| - C with C = w - w * ln(1 + w / eps),
  which keeps small and medium errors from being swamped by the large ones.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .params import DEFAULTS

WING = tuple(DEFAULTS["train"]["wing"])  # width and curvature, pixels of the 256x256 frame (Feng et al.: 10, 2)

LOSSES = ("mse", "l1", "wing")


def wing_loss(pred: torch.Tensor, target: torch.Tensor, width: float = WING[0], curvature: float = WING[1]) -> torch.Tensor:
    x = (pred - target).abs()
    c = width - width * math.log(1 + width / curvature)
    return torch.where(x < width, width * torch.log1p(x / curvature), x - c).mean()


def landmark_loss(name: str, pred: torch.Tensor, target: torch.Tensor, wing=WING) -> torch.Tensor:
    if name == "mse":
        return F.mse_loss(pred, target)
    if name == "l1":
        return F.l1_loss(pred, target)
    if name == "wing":
        return wing_loss(pred, target, *wing)
    raise ValueError(f"train.loss: unknown loss {name!r}; known: {', '.join(LOSSES)}")
