"""The study's model: torchvision ResNet18 with its last layer replaced by a linear
layer that regresses all 2K landmark coordinates (DeepPose-style direct regression).

Coordinates come out in pixels of a 256x256 frame (``REFERENCE_SIZE``, the study's
unit) whatever the input size: the linear layer predicts (x, y) in [-1, 1] of the
input, and a fixed scale turns that into pixels.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

REFERENCE_SIZE = 256  # the study's network input; MSE is reported in its pixels

WEIGHTS_HELP = (
    "ImageNet weights for ResNet18 could not be loaded ({error}). Either give this machine "
    "network access once, or place the file {file} in {folder} (torchvision's cache, "
    "$TORCH_HOME/hub/checkpoints), or set model.pretrained: false in the params."
)


class LandmarkRegressor(nn.Module):
    def __init__(self, n_points: int, pretrained: bool = False):
        super().__init__()
        self.n_points = n_points
        self.backbone = torchvision.models.resnet18(weights=imagenet_weights() if pretrained else None)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, 2 * n_points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(x).view(-1, self.n_points, 2).float()
        return (out + 1) * (REFERENCE_SIZE / 2)

    @torch.no_grad()
    def init_head(self, mean_shape: torch.Tensor) -> None:
        """Start the output at a given shape (K, 2) in reference pixels, weights near zero."""
        self.backbone.fc.weight.mul_(0.01)
        self.backbone.fc.bias.copy_((mean_shape.reshape(-1) / (REFERENCE_SIZE / 2) - 1))


def imagenet_weights():
    """torchvision's ImageNet weights for ResNet18, downloaded or from its cache.
    Raises a RuntimeError saying where to put the file when neither works."""
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as e:  # URLError, HTTPError, OSError, hash mismatch
        folder = f"{torch.hub.get_dir()}/checkpoints"
        raise RuntimeError(WEIGHTS_HELP.format(error=e, file=weights.url.rsplit("/", 1)[-1], folder=folder)) from None
    return weights


def build_model(n_points: int, pretrained: bool, channels_last: bool = True) -> LandmarkRegressor:
    model = LandmarkRegressor(n_points, pretrained)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_tensor(array) -> torch.Tensor:
    """A numpy array (possibly a read-only memory map) as a tensor, without a warning."""
    import numpy as np

    a = np.asarray(array)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


@torch.no_grad()
def predict(model: nn.Module, images, input_size: int, batch_size: int = 64, device="cpu",
            augment=None, seed: int = 0, landmarks=None):
    """Predict landmarks for uint8 crops (N, S, S, 3); returns (N, K, 2) numpy in crop pixels.

    With ``augment`` (and ``landmarks``) the inputs are augmented with a fixed seed, as
    the study's validation was; the returned targets are then the augmented landmarks in
    crop pixels, else ``landmarks`` unchanged.
    """
    from .augment import make_batch

    device = torch.device(device)
    model.eval()
    n, src = images.shape[0], images.shape[1]
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(0, n, batch_size):
        imgs = to_tensor(images[i : i + batch_size]).to(device)
        pts = to_tensor(landmarks[i : i + batch_size]).to(device) if landmarks is not None else \
            torch.zeros(imgs.shape[0], model.n_points, 2, device=device)
        x, y = make_batch(imgs, pts, input_size, augment, g)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x)
        # back to the crop frame: a resize maps 256-frame pixels to crop pixels
        preds.append((out.float() * (src / REFERENCE_SIZE)).cpu())
        targets.append((y * (src / input_size)).cpu())
    pred = torch.cat(preds).numpy()
    return (pred, torch.cat(targets).numpy()) if landmarks is not None else pred
