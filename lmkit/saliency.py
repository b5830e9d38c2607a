"""Gradient saliency as in the study: dL/dI, the gradient of an image's MSE loss with
respect to its input pixels, shown as the maximum of |gradient| over colour channels."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .augment import make_batch, resize_warps, warp
from .model import REFERENCE_SIZE, to_tensor


def input_gradient(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """dL/dx for L = mean squared error of model(x) against target, per image (B, C, H, W)."""
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    loss = F.mse_loss(model(x).float(), target, reduction="none").flatten(1).mean(1).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def saliency_maps(model, images, landmarks, input_size: int, device="cpu", view: float = 1.0) -> np.ndarray:
    """Saliency (N, S, S) for uint8 crops (N, H, W, 3) with landmarks in crop pixels:
    max over channels of |dL/dI| at the network input (the centred ``view`` of each crop)."""
    device = torch.device(device)
    x, y = make_batch(to_tensor(images).to(device), to_tensor(landmarks).to(device), input_size, view=view)
    grad = input_gradient(model, x, y * (REFERENCE_SIZE / input_size))
    return grad.abs().amax(1).cpu().numpy()


def network_inputs(images, input_size: int, view: float = 1.0) -> np.ndarray:
    """What the network sees of uint8 crops (N, H, W, 3): uint8 (N, S, S, 3), before the
    normalisation; the images the saliency maps belong to."""
    x = to_tensor(images)
    m = resize_warps(x.shape[0], x.shape[1], input_size, view=view)
    out, _ = warp(x, torch.zeros(x.shape[0], 1, 2), m, input_size)
    return (out * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
