"""Self-supervised pretraining of the backbone on the training faces without their labels
(``lmkit pretrain``; its backbone is what ``model.pretrained: PATH`` then loads).

The pretext is the one the unsupervised facial-landmark papers use: dense equivariance (Thewlis
et al. 2017, "Unsupervised learning of object frames by dense equivariant image labelling"), as a
contrastive loss (Pinheiro et al. 2020, VADeR; Cheng et al. 2021). Each face is drawn twice with
the training augmentation (rotation, crop, box jitter, intensity; no flips); the two warps are
known, so each cell of view 1's feature map knows where the same spot of the face lies in view 2.
Its embedding must pick that spot's embedding among every cell of every view 2 in the batch
(InfoNCE): the backbone learns features that say *where on a face* a pixel is, the thing a
landmark head reads. Features: layer 2 (stride 8, the heatmap head's grid) with layers 3 and 4
upsampled beside it, through a 1x1-convolution projector that is thrown away afterwards.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from lmkit.study.augment import Augment, make_batch, to_source
from lmkit.train.batches import epoch_generator, rows
from lmkit.train.devices import DevicePlan, place_training_set


class DenseEmbedding(nn.Module):
    """A torchvision ResNet18 (its ``fc`` unused) and a projector giving one unit vector per
    cell of layer 2's grid."""

    def __init__(self, dim: int = 128):
        super().__init__()
        self.backbone = torchvision.models.resnet18(weights=None)
        self.projector = nn.Sequential(nn.Conv2d(128 + 256 + 512, 256, 1, bias=False), nn.BatchNorm2d(256),
                                       nn.ReLU(inplace=True), nn.Conv2d(256, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.backbone
        c2 = r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))
        c3 = r.layer3(c2)
        c4 = r.layer4(c3)
        up = [F.interpolate(c, size=c2.shape[-2:], mode="bilinear", align_corners=False) for c in (c3, c4)]
        return F.normalize(self.projector(torch.cat([c2, *up], 1)).float(), dim=1)


def matching_cells(m1: torch.Tensor, m2: torch.Tensor, cells: int, size: int) -> torch.Tensor:
    """Where the centre of each of view 1's ``cells`` x ``cells`` grid cells lies in view 2, in
    view 2's pixels: (B, cells², 2), rows in reading order. ``m1``, ``m2``: the views' (B, 3, 3)
    output -> source pixel warps (``make_batch(..., matrices=True)``)."""
    c = (torch.arange(cells, dtype=torch.float64) + 0.5) * (size / cells)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    centres = torch.stack([xx, yy], -1).reshape(1, -1, 2).expand(m1.shape[0], -1, -1).to(m1.device)
    return to_source(to_source(centres, m1.to(torch.float64)), torch.linalg.inv(m2.to(torch.float64)))


def dense_nce(z1: torch.Tensor, z2: torch.Tensor, where: torch.Tensor, size: int, temperature: float,
              cells: int, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """InfoNCE over cells: ``cells`` random cells of ``z1`` (B, C, h, w; unit vectors), drawn
    from those whose match ``where`` falls inside view 2, each against view 2's embedding at its
    match (bilinear between ``z2``'s cells), the other drawn cells' matches its negatives.
    Returns the loss and the fraction of drawn cells whose best match is the right one."""
    c = z1.shape[1]
    inside = ((where >= 0) & (where < size)).all(-1).reshape(-1).nonzero().squeeze(1).cpu()  # (B * h * w,) rows
    drawn = inside[torch.randperm(len(inside), generator=generator)[:cells]].to(z1.device)
    grid = (where / size * 2 - 1).to(z2.dtype).unsqueeze(1)  # (B, 1, h*w, 2), grid_sample's [-1, 1]
    positives = F.grid_sample(z2, grid, mode="bilinear", align_corners=False).squeeze(2)  # (B, C, h*w)
    anchors = z1.flatten(2).transpose(1, 2).reshape(-1, c)[drawn]
    positives = F.normalize(positives.transpose(1, 2).reshape(-1, c)[drawn], dim=1)
    logits = anchors @ positives.T / temperature
    target = torch.arange(len(anchors), device=logits.device)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean().item()


def pretrain(images, size: int, augment: Augment, *, epochs: int, batch_size: int, lr: float,
             temperature: float, cells: int, seed: int, plan: DevicePlan, log=print) -> tuple[dict, list[dict]]:
    """Train a ``DenseEmbedding`` on uint8 crops ``images`` (N, S, S, 3) for ``epochs`` at
    ``size`` px, AdamW with a one-epoch warm-up and a cosine decay. Returns the backbone's state
    dict (a torchvision ResNet18's, ``fc`` included as initialised) and one row per epoch
    (loss, the fraction of cells matched, seconds)."""
    torch.manual_seed(seed)
    net = DenseEmbedding().to(plan.device)
    net = net.to(memory_format=torch.channels_last) if plan.channels_last else net
    # no flips: in a mirrored view the left eye looks like a right one, yet would have to match the left eye
    augment = replace(augment, flip=0.0, mirror=())
    src, n = images.shape[1], len(images)
    unlabelled = np.zeros((n, 1, 2), np.float32)  # make_batch moves points; there are none to move
    pool, unlabelled = place_training_set(images, unlabelled, size, plan)
    if n < 2:
        raise ValueError(f"pretraining needs at least 2 faces, got {n}")
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps_per_epoch)
                                              * 0.5 * (1 + math.cos(math.pi * s / total)))
    history = []
    for epoch in range(epochs):
        t0, g, losses, matched = time.perf_counter(), epoch_generator(seed, epoch), [], []
        order = torch.randperm(n, generator=g)
        net.train()
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            batch, points = rows(pool, idx).to(plan.device), rows(unlabelled, idx).to(plan.device)
            views = [make_batch(batch, points, size, augment, g, src, matrices=True) for _ in range(2)]
            (x1, _, m1), (x2, _, m2) = views
            with plan.autocast_context():
                z = net(plan.layout(torch.cat([x1, x2]).to(plan.device)))
            z1, z2 = z.split(len(batch))
            loss, hit = dense_nce(z1, z2, matching_cells(m1, m2, z.shape[-1], size).to(z.device), size, temperature,
                                  cells, g)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretrain: the loss became {loss.item()} at epoch {epoch + 1} "
                                         f"(pretrain.lr {lr:g}): lower it")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            matched.append(hit)
        row = {"epoch": epoch + 1, "loss": sum(losses) / len(losses), "matched": sum(matched) / len(matched),
               "seconds": time.perf_counter() - t0}
        history.append(row)
        log(f"pretrain epoch {epoch + 1}/{epochs}: loss {row['loss']:.3f}, cells matched {row['matched']:.1%}, "
            f"{row['seconds']:.0f} s")
    return {k: v.detach().cpu() for k, v in net.backbone.state_dict().items()}, history
