"""Training losses on landmark coordinates (pixels of the 256x256 frame), for notebook 03's
"Beyond the study" cell. The study's own loss (MSE) is written in 03's cell.

* ``l1``: absolute error; ``wing``: Wing loss (Feng et al., CVPR 2018), per coordinate
  w * ln(1 + |x| / eps) for |x| < w, else |x| - C with C = w - w * ln(1 + w / eps),
  which keeps small and medium errors from being swamped by the large ones.
* ``known_points_loss``: for joint training (``data.joint_train``), where a face carries only
  its own scheme's points and NaN for the others: each face's loss on its own points.
* ``heatmap_divergence``: the DSNT regulariser of a heatmap head (``train.heatmap_loss``).

Every function here is written without a host sync: no Python branch on a tensor's values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmkit.run.params import DEFAULTS
from lmkit.study.model import cell_centres
from lmkit.study.modelinfo import REFERENCE_SIZE

WING = tuple(
    DEFAULTS.train.wing
)  # width and curvature, pixels of the 256 frame (Feng et al.: 10, 2)

LOSSES = ("mse", "l1", "wing")


def wing_errors(pred, target, width: float = WING[0], curvature: float = WING[1]) -> torch.Tensor:
    """Wing loss per coordinate (not averaged)."""
    x = (pred - target).abs()
    c = width - width * math.log(1 + width / curvature)
    return torch.where(x < width, width * torch.log1p(x / curvature), x - c)


def wing_loss(pred, target, width: float = WING[0], curvature: float = WING[1]) -> torch.Tensor:
    """Wing loss averaged over faces, points and x, y.

    Used in: 03_train, "Beyond the study"."""
    return wing_errors(pred, target, width, curvature).mean()


def landmark_loss(name: str, pred, target, wing=WING) -> torch.Tensor:
    """The loss ``train.loss`` names, averaged over faces, points and x, y."""
    if name == "mse":
        return F.mse_loss(pred, target)
    if name == "l1":
        return F.l1_loss(pred, target)
    if name == "wing":
        return wing_loss(pred, target, *wing)
    raise ValueError(f"train.loss: unknown loss {name!r}; known: {', '.join(LOSSES)}")


def point_errors(name: str, pred, target, wing=WING) -> torch.Tensor:
    """The loss ``name`` per coordinate, (N, K, 2)."""
    if name == "mse":
        return (pred - target) ** 2
    if name == "l1":
        return (pred - target).abs()
    if name == "wing":
        return wing_errors(pred, target, *wing)
    raise ValueError(f"train.loss: unknown loss {name!r}; known: {', '.join(LOSSES)}")


def known(target: torch.Tensor) -> torch.Tensor:
    """(N, K) True where a face has the point (a joint face has NaN for the other scheme's)."""
    return torch.isfinite(target).all(-1)


def mean_over_known(values: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """``values`` (N, K, ...) averaged over each face's known points (``has``, (N, K)), then
    over the faces: every face weighs the same, whatever its number of points."""
    mask = has.reshape(*has.shape, *[1] * (values.dim() - 2))
    per_face = torch.where(mask, values, 0).flatten(1).sum(1)
    count = has.sum(1).clamp(min=1) * (values[0, 0].numel())
    return (per_face / count).mean()


def known_points_loss(name: str, pred, target, wing=WING) -> torch.Tensor:
    """``landmark_loss`` for a batch whose faces carry different points (``data.joint_train``):
    each face's loss on its own points, then the mean over faces. A batch where every face has
    every point gives ``landmark_loss`` up to rounding.

    Used in: 03_train, "Beyond the study"."""
    has = known(target)
    filled = torch.where(
        has.unsqueeze(-1), target, pred.detach()
    )  # finite everywhere: no NaN gradient
    return mean_over_known(point_errors(name, pred, filled, wing), has)


def heatmap_divergence(
    logits: torch.Tensor, target: torch.Tensor, sigma: float = 1.0
) -> torch.Tensor:
    """Jensen-Shannon divergence between each point's heatmap (softmax of ``logits``, (N, K, H, W))
    and a Gaussian of ``sigma`` cells centred on its true position (``target``, (N, K, 2) in pixels
    of the 256 frame; NaN for a point a face does not have), averaged over each face's points, then
    over the faces: the DSNT regulariser (Nibali et al. 2018), which asks the soft-argmax's
    distribution to be one compact peak where the point is, not any spread whose mean happens to
    land there. In nats, between 0 and ln 2.

    Used in: 03_train, "Beyond the study"."""
    n, k, h, w = logits.shape
    has = known(target)
    target = torch.where(
        has.unsqueeze(-1), target / REFERENCE_SIZE, 0.5
    )  # a missing point: any finite place
    logp = torch.log_softmax(logits.reshape(n, k, h * w), -1)
    xs, ys = cell_centres(w, logits), cell_centres(h, logits)
    cell_w, cell_h = xs[1] - xs[0], ys[1] - ys[0]
    gx = -0.5 * ((xs.view(1, 1, w) - target[..., :1]) / (sigma * cell_w)) ** 2  # (N, K, W)
    gy = -0.5 * ((ys.view(1, 1, h) - target[..., 1:]) / (sigma * cell_h)) ** 2  # (N, K, H)
    logq = torch.log_softmax((gy.unsqueeze(-1) + gx.unsqueeze(-2)).reshape(n, k, h * w), -1)
    logm = torch.logsumexp(torch.stack([logp, logq]), 0) - math.log(2)
    js = 0.5 * (logp.exp() * (logp - logm)).sum(-1) + 0.5 * (logq.exp() * (logq - logm)).sum(-1)
    return mean_over_known(js, has)
