"""Beyond the study: the better recipes' choices around notebook 03's study cells, each a params
key, each falling through to the student's own function when the params say the study's.

Notebook 03's cells write the study's network, loss and training step only; its "Beyond the
study" cell hands them to ``beyond_the_study``, which returns the three functions every run trains
with (as fastbook hands the student's loss to ``Learner``). An edit of a study cell still changes
every run that uses that piece; a recipe's choice adds to it, never replaces the student's step:

    model.head          heatmap, heatmap-s4: the heatmap heads (``lmkit.study.model``) instead of
                        the study's network; regression: the study cell's ``build_network``
    train.loss          l1, wing (``lmkit.study.losses``) instead of the study cell's loss; mse: it
    train.heatmap_loss  > 0: the DSNT regulariser added to the step's loss (the heatmaps taken from
                        the same forward pass the study's step runs)
    data.joint_train    faces of another scheme beside the data set's: each face's loss on its own
                        points only (``losses.per_scheme``); without them, the loss as it was
"""
from __future__ import annotations

import functools
import inspect

import torch

from lmkit.study import losses
from lmkit.study.model import LandmarkRegressor
from lmkit.study.modelinfo import REFERENCE_SIZE


class _Heatmaps(torch.nn.Module):
    """The network as a step with the DSNT regulariser sees it: called as the study calls it
    (``net(images)`` -> points), it keeps the same forward pass's heatmaps for the loss."""

    def __init__(self, net):
        super().__init__()
        self.net, self.heatmaps = net, None

    def forward(self, images, **kwargs):
        pred, self.heatmaps = self.net(images, heatmaps=True, **kwargs)
        return pred


def beyond_the_study(build_network, landmark_loss, train_step):
    """The study cells' three functions with the better recipes around them (see the module's
    doc): ``build_network(n_points, pretrained, head)``, ``landmark_loss(pred, target, cfg)`` and
    ``train_step(net, optimizer, images, targets, cfg)``. The cell binds them to the same names, so
    the study's step, which calls ``landmark_loss`` by its name, runs the recipe's loss: the study
    cell's own where ``train.loss`` is mse.

    Used in: 03_train, "Beyond the study"."""
    # the study's own functions, also when the cell that calls this runs twice in a kernel
    build_network, landmark_loss, train_step = (inspect.unwrap(f) for f in (build_network, landmark_loss, train_step))
    capture: list[_Heatmaps] = []  # the network of the step running now, when the regulariser is on

    @functools.wraps(build_network)
    def network(n_points: int, pretrained, head: str = "regression"):
        if head == "regression":
            return build_network(n_points, pretrained)
        return LandmarkRegressor(n_points, pretrained, head)

    @functools.wraps(landmark_loss)
    def loss(pred, target, cfg):
        def points(p, t):
            return landmark_loss(p, t, cfg) if cfg.loss == "mse" else losses.landmark_loss(cfg.loss, p, t, cfg.wing)

        value = losses.per_scheme(points, target, pred)  # each face on its own points (data.joint_train)
        if cfg.heatmap_loss and capture:
            value = value + cfg.heatmap_loss * losses.per_scheme(
                lambda h, t: losses.heatmap_divergence(h, t / REFERENCE_SIZE), target, capture[-1].heatmaps)
        return value

    @functools.wraps(train_step)
    def step(net, optimizer, images, targets, cfg):
        if not cfg.heatmap_loss:
            return train_step(net, optimizer, images, targets, cfg)
        capture.append(_Heatmaps(net))
        try:
            return train_step(capture[-1], optimizer, images, targets, cfg)
        finally:
            capture.pop()

    return network, loss, step
