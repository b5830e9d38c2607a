"""What gradient saliency needs besides the gradient itself, which notebook 05 computes in a cell
(``saliency``: dL/dI, shown as the maximum of |gradient| over colour channels): the faces as
the network sees them, with their points in the 256 frame, and back as pictures."""

from __future__ import annotations

import numpy as np
import torch

from lmkit.study.augment import make_batch, resize_warps, warp
from lmkit.study.model import to_tensor
from lmkit.study.modelinfo import REFERENCE_SIZE


def saliency_maps(
    gradient, model, images, landmarks, input_size: int, device="cpu", view: float = 1.0
) -> np.ndarray:
    """Saliency (N, S, S) of uint8 crops (N, H, W, 3) with landmarks in crop pixels, at the
    network input (the centred ``view`` of each crop): ``gradient(model, x, target)``, notebook
    05's ``saliency``, on the normalised inputs and the points in pixels of the 256 frame."""
    device = torch.device(device)
    x, y = make_batch(
        to_tensor(images).to(device), to_tensor(landmarks).to(device), input_size, view=view
    )
    return gradient(model, x, y * (REFERENCE_SIZE / input_size)).detach().cpu().numpy()


def network_inputs(images, input_size: int, view: float = 1.0) -> np.ndarray:
    """What the network sees of uint8 crops (N, H, W, 3): uint8 (N, S, S, 3), before the
    normalisation; the images the saliency maps belong to."""
    x = to_tensor(images)
    m = resize_warps(x.shape[0], x.shape[1], input_size, view=view)
    out, _ = warp(x, torch.zeros(x.shape[0], 1, 2), m, input_size)
    return (out * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
