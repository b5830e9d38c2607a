"""Training losses on landmark coordinates (pixels of the 256x256 frame).

* ``mse``: the study's loss, squared error averaged over points and x, y.
* ``l1``: absolute error.
* ``wing``: Wing loss (Feng et al., CVPR 2018), per coordinate:
  w * ln(1 + |x| / eps) for |x| < w, else |x| - C with C = w - w * ln(1 + w / eps),
  which keeps small and medium errors from being swamped by the large ones.

A heatmap head can also have its heatmaps shaped (``heatmap_divergence``, ``train.heatmap_loss``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmkit.study.model import cell_centres
from lmkit.run.params import DEFAULTS

WING = tuple(DEFAULTS.train.wing)  # width and curvature, pixels of the 256x256 frame (Feng et al.: 10, 2)

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


def heatmap_divergence(logits: torch.Tensor, target: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Jensen-Shannon divergence between each point's heatmap (softmax of ``logits``, (N, K, H, W))
    and a Gaussian of ``sigma`` cells centred on its true position (``target``, (N, K, 2) as
    fractions of the input), averaged over points: the DSNT regulariser (Nibali et al. 2018), which
    asks the soft-argmax's distribution to be one compact peak where the point is, not any spread
    whose mean happens to land there. In nats, between 0 and ln 2."""
    n, k, h, w = logits.shape
    logp = torch.log_softmax(logits.reshape(n, k, h * w), -1)
    xs, ys = cell_centres(w, logits), cell_centres(h, logits)
    cell_w, cell_h = xs[1] - xs[0], ys[1] - ys[0]
    gx = -0.5 * ((xs.view(1, 1, w) - target[..., :1]) / (sigma * cell_w)) ** 2  # (N, K, W)
    gy = -0.5 * ((ys.view(1, 1, h) - target[..., 1:]) / (sigma * cell_h)) ** 2  # (N, K, H)
    logq = torch.log_softmax((gy.unsqueeze(-1) + gx.unsqueeze(-2)).reshape(n, k, h * w), -1)
    logm = torch.logsumexp(torch.stack([logp, logq]), 0) - math.log(2)
    js = 0.5 * (logp.exp() * (logp - logm)).sum(-1) + 0.5 * (logq.exp() * (logq - logm)).sum(-1)
    return js.mean()


def per_scheme(loss, target: torch.Tensor, *per_point: torch.Tensor) -> torch.Tensor:
    """``loss(*per_point, target)`` for a batch whose faces carry different points: joint training
    (``data.joint_train``), where a face has only its own scheme's points and NaN for the others.
    The faces are grouped by which points they have; each group's loss is taken on those points
    only (``per_point``: tensors (N, K, ...) indexed like ``target``, e.g. the predictions and the
    heatmaps), and the groups are weighted by their faces. A batch with every point is
    ``loss(*per_point, target)`` itself, so the study's loss runs unchanged without joint faces."""
    known = torch.isfinite(target).all(-1)  # (N, K)
    if bool(known.all()):
        return loss(*per_point, target)
    patterns, group = torch.unique(known, dim=0, return_inverse=True)
    total = target.new_zeros(())
    for g, points in enumerate(patterns):
        faces = group == g
        pick = lambda t: t[faces][:, points]  # noqa: E731
        total = total + faces.sum() * loss(*(pick(t) for t in per_point), pick(target))
    return total / len(target)

