"""Distillation (``train.teacher``): a trained network's points on each augmented training batch
become the student's targets. They fill the points a face lacks (a joint face's other scheme,
NaN in its targets) and move the labelled ones ``train.teacher_weight`` of the way to the
teacher's. Which teacher may teach which run (never one that trained on the run's validation or
test faces) is the chain's check (``lmkit.chain.training.load_teacher``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lmkit.train.devices import DevicePlan


class Teacher:
    """A trained network (eval mode, on the student's device) that sees each batch at its own
    input size, in the student's device plan (autocast, memory layout), without gradients."""

    def __init__(self, net: torch.nn.Module, input_size: int, weight: float, plan: DevicePlan):
        self.net, self.input_size, self.weight, self.plan = net.eval(), input_size, weight, plan

    @torch.no_grad()
    def targets(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Targets (B, K, 2) in pixels of the 256 frame for a batch of normalised images ``x``
        whose ``labels`` (B, K, 2) are NaN where a face has no such point. The teacher's outputs
        are the first of the K points (the data set's; with a joint teacher, all K)."""
        if x.shape[-1] != self.input_size:  # a teacher of another input size sees the same view, resized
            x = F.interpolate(x.float(), size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        with self.plan.autocast_context():
            taught = self.net(self.plan.layout(x)).float()
        k = taught.shape[1]
        if k > labels.shape[1]:
            raise ValueError(f"train.teacher: it predicts {k} points, the student {labels.shape[1]}")
        given = labels[:, :k]
        mixed = torch.where(torch.isnan(given), taught, given + self.weight * (taught - given))
        return torch.cat([mixed, labels[:, k:]], dim=1)
