"""The study's model: torchvision ResNet18 with its last layer replaced by a linear
layer that regresses all 2K landmark coordinates (DeepPose-style direct regression).

Coordinates come out in pixels of a 256x256 frame (``REFERENCE_SIZE``, the study's
unit) whatever the input size: the linear layer predicts (x, y) in [-1, 1] of the
input, and a fixed scale turns that into pixels.

The **model file** (``train/model.pt`` of a run) is what a trained run hands on: the
weights only (no optimizer state, about 45 MB) and a ``ModelInfo`` that says everything
needed to use them: the landmark scheme, the network input size, the crop convention, the
input normalisation, the mean shape, the face detector's box calibration, the data set and
the lmkit version. Everything downstream of training reads these facts from it.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision

from lmkit.study.modelinfo import MODEL_FORMAT, REFERENCE_SIZE, ModelInfo
from lmkit.run.params import (
    HEADS,
)  # the head names, listed once (the params schema checks them first)


WEIGHTS_HELP = (
    "ImageNet weights for ResNet18 could not be loaded ({error}). Either give this machine "
    "network access once, or place the file {file} in {folder} (torchvision's cache, "
    "$TORCH_HOME/hub/checkpoints), or set model.pretrained: false in the params."
)


class LandmarkRegressor(nn.Module):
    """ResNet18 and a head that outputs (N, K, 2) coordinates in pixels of the 256 frame:

    - ``regression`` (the study): global pooling and one linear layer;
    - ``heatmap`` (integral regression, Sun et al. 2018): a small feature pyramid over layers
      2-4 gives one heatmap per point at stride 8, and a soft-argmax (``soft_argmax``) turns
      each into coordinates, so the loss, the model file and the exports are the same;
    - ``heatmap-s4``: the same pyramid taken one level further down, onto layer 1 (stride 4:
      24x24 cells at 96 px instead of 12x12).

    Used in: 03_train, "The network"; 03_train, "Beyond the study"."""

    def __init__(
        self,
        n_points: int,
        pretrained: bool | str = False,
        head: str = "regression",
        backbone: nn.Module | None = None,
    ):
        """``backbone``: a ResNet18 whose last layer already regresses the 2K coordinates (as
        notebook 03 builds it); else one is built here (the way a model file is read back)."""
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"model.head: must be one of {', '.join(HEADS)}, got {head!r}")
        self.n_points, self.head = n_points, head
        if backbone is not None:
            if head != "regression" or getattr(backbone.fc, "out_features", None) != 2 * n_points:
                raise ValueError(
                    f"a given backbone needs the regression head and a last layer of {2 * n_points} "
                    "outputs (x and y of every point)"
                )
            self.backbone = backbone
            return
        self.backbone = torchvision.models.resnet18(
            weights=imagenet_weights() if pretrained is True else None
        )
        if isinstance(pretrained, str):
            load_backbone(self.backbone, pretrained)
        if head == "regression":
            self.backbone.fc = nn.Linear(self.backbone.fc.in_features, 2 * n_points)
        else:
            self.backbone.fc = nn.Identity()
            self.heatmaps = HeatmapHead(n_points, levels=4 if head == "heatmap-s4" else 3)

    def forward(self, x: torch.Tensor, heatmaps: bool = False):
        """(N, K, 2) points; with ``heatmaps`` (heatmap heads, for ``train.heatmap_loss``) also
        the (N, K, H, W) heatmap logits they were read from."""
        if self.head != "regression":
            b = self.backbone
            c1 = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x)))))
            c2 = b.layer2(c1)
            c3 = b.layer3(c2)
            logits = self.heatmaps(c1, c2, c3, b.layer4(c3)).float()
            points = soft_argmax(logits) * REFERENCE_SIZE
            return (points, logits) if heatmaps else points
        if heatmaps:
            raise ValueError(
                "train.heatmap_loss: the regression head has no heatmaps; use model.head: heatmap"
            )
        out = self.backbone(x).view(-1, self.n_points, 2).float()
        return (out + 1) * (REFERENCE_SIZE / 2)

    @torch.no_grad()
    def init_head(self, mean_shape: torch.Tensor) -> None:
        """Start the output at a given shape (K, 2) in reference pixels, weights near zero
        (the regression head; a heatmap head starts every point at the crop's centre)."""
        if self.head != "regression":
            raise ValueError(
                "model.head_init: mean_shape starts the regression head only; use default with "
                "model.head: heatmap"
            )
        self.backbone.fc.weight.mul_(0.01)
        self.backbone.fc.bias.copy_((mean_shape.reshape(-1) / (REFERENCE_SIZE / 2) - 1))


class HeatmapHead(nn.Module):
    """One heatmap per point from ResNet18's last ``levels`` stages, merged top-down as a feature
    pyramid: layers 2-4 (128, 256, 512 channels; stride 8) or layers 1-4 (64 channels more;
    stride 4). Light enough for a CPU."""

    CHANNELS = (64, 128, 256, 512)  # ResNet18's layers 1-4

    def __init__(self, n_points: int, width: int = 128, levels: int = 3):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in self.CHANNELS[-levels:])
        self.smooth = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(width, n_points, 1)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        """``features``: layers 1-4's outputs, finest first; the head uses the last ``levels``."""
        features = features[-len(self.lateral) :]
        p = self.lateral[-1](features[-1])
        for lateral, c in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
            p = upsample(p, c.shape[-2:]) + lateral(c)
        return self.out(self.smooth(p))


def upsample(p: torch.Tensor, size) -> torch.Tensor:
    """A coarser map onto the next finer one, keeping both mirror-symmetric. From an even input
    (96: 3 -> 6 -> 12 cells) each cell doubles (nearest). From an input of 32k + 1 (97: 4 -> 7 -> 13
    cells) the first and last cells of both maps sit on the same pixels, so the map is interpolated
    with its corners aligned; nearest would map 4 cells to 7 lopsidedly (0 0 1 1 2 2 3)."""
    if size[-1] == 2 * p.shape[-1] - 1:
        return nn.functional.interpolate(p, size=size, mode="bilinear", align_corners=True)
    return nn.functional.interpolate(p, size=size, mode="nearest")


HEATMAP_REACH = 0.125  # the heatmap's cells span the crop and this fraction of it beyond each edge


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) logits -> (N, K, 2) expected (x, y) as fractions of the input's width and
    height. The cells' centres are spread from -``HEATMAP_REACH`` to 1 + ``HEATMAP_REACH``, so
    that a point on the crop's edge (the jaw, with the study's 5-pixel margin) is an expectation
    the softmax can reach, not its limit."""
    n, k, h, w = heatmaps.shape
    prob = torch.softmax(heatmaps.reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
    xs, ys = cell_centres(w, heatmaps), cell_centres(h, heatmaps)
    return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)


def cell_centres(cells: int, like: torch.Tensor) -> torch.Tensor:
    """Where the centres of a heatmap's ``cells`` cells lie along one axis, as fractions of the
    input (``HEATMAP_REACH`` beyond each edge)."""
    frac = (torch.arange(cells, device=like.device, dtype=torch.float32) + 0.5) / cells
    return frac * (1 + 2 * HEATMAP_REACH) - HEATMAP_REACH


def imagenet_weights():
    """torchvision's ImageNet weights for ResNet18, downloaded or from its cache.
    Raises a RuntimeError saying where to put the file when neither works.

    Used in: 03_train, "The network"."""
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as e:  # URLError, HTTPError, OSError, hash mismatch
        folder = f"{torch.hub.get_dir()}/checkpoints"
        raise RuntimeError(
            WEIGHTS_HELP.format(error=e, file=weights.url.rsplit("/", 1)[-1], folder=folder)
        ) from None
    return weights


def load_backbone(resnet: nn.Module, path: str | Path) -> nn.Module:
    """Load a saved torchvision ResNet18 state dict into ``resnet`` (``model.pretrained: PATH``):
    torchvision's own file (``resnet18-f37072fd.pth``, the study's ImageNet start, offline), or a
    backbone an earlier stage wrote (``{"state_dict": ...}``, keys possibly under ``backbone.``
    or ``module.``). Every layer but the last (``fc``, which the head replaces) must be in the
    file with its shape; anything else is an error naming the file and the keys.

    Used in: 03_train, "The network"."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.pretrained: {path}: no such file (a saved ResNet18 state dict, or true for "
            "torchvision's ImageNet weights)"
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"model.pretrained: {path}: not a PyTorch state dict ({type(e).__name__}: {e})"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(saved, dict) and isinstance(saved.get(wrapper), dict):
            saved = saved[wrapper]
    if not isinstance(saved, dict):
        raise RuntimeError(
            f"model.pretrained: {path}: holds a {type(saved).__name__}, not a state dict"
        )
    for prefix in ("module.", "backbone."):
        if saved and all(k.startswith(prefix) for k in saved):
            saved = {k[len(prefix) :]: v for k, v in saved.items()}
    own = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    kept = {k: v for k, v in saved.items() if not k.startswith("fc.")}
    missing, unknown = sorted(set(own) - set(kept)), sorted(set(kept) - set(own))
    wrong = [
        f"{k} {tuple(kept[k].shape)} (ResNet18: {tuple(v.shape)})"
        for k, v in own.items()
        if k in kept and kept[k].shape != v.shape
    ]
    if missing or unknown or wrong:
        raise RuntimeError(
            f"model.pretrained: {path}: not a torchvision ResNet18 state dict: "
            + "; ".join(
                f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for what, keys in (
                    ("missing", missing),
                    ("not in ResNet18", unknown),
                    ("other shapes", wrong),
                )
                if keys
            )
        )
    resnet.load_state_dict(kept, strict=False)
    return resnet


def build_model(
    n_points: int, pretrained: bool | str, channels_last: bool = True, head: str = "regression"
) -> LandmarkRegressor:
    model = LandmarkRegressor(n_points, pretrained, head)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU.

    Used in: 02_hpsearch, "The objective"."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_tensor(array) -> torch.Tensor:
    """A numpy array (possibly a read-only memory map) as a tensor, without a warning."""
    a = np.asarray(array)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


@torch.no_grad()
def predict(
    model: nn.Module,
    images,
    input_size: int,
    batch_size: int = 64,
    device="cpu",
    augment=None,
    seed: int = 0,
    landmarks=None,
    flip_mirror: tuple[int, ...] | None = None,
    view: float = 1.0,
    correction=None,
    precision: str = "auto",
):
    """Predict landmarks for uint8 crops (N, S, S, 3); returns (N, K, 2) numpy in crop pixels.

    With ``augment`` (and ``landmarks``) the inputs are augmented with a fixed seed, as
    the study's validation was; the returned targets are then the augmented landmarks in
    crop pixels, else ``landmarks`` unchanged. With ``flip_mirror`` (the scheme's mirror
    map) the flip test: each prediction is averaged with the un-mirrored prediction of the
    mirrored crop, its points renumbered by the map. ``view``: the network sees the centred
    square of this fraction of each crop (``model.view``). ``correction`` (K, 2), in pixels of
    the crop at 256x256: subtracted from every prediction (``model.bias_correction``).
    ``precision``: the run's ``system.autocast`` (see ``inference_precision``).
    """
    from lmkit.study.augment import make_batch, to_source

    device = torch.device(device)
    dtype = inference_precision(device, precision)
    model.eval()
    n, src = images.shape[0], images.shape[1]
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(0, n, batch_size):
        imgs = to_tensor(images[i : i + batch_size]).to(device)
        pts = (
            to_tensor(landmarks[i : i + batch_size]).to(device)
            if landmarks is not None
            else torch.zeros(imgs.shape[0], model.n_points, 2, device=device)
        )
        x, y, m = make_batch(imgs, pts, input_size, augment, g, view=view, matrices=True)
        out = _forward(model, x, dtype)
        if flip_mirror is not None:
            mirrored = _forward(model, x.flip(-1), dtype)[:, list(flip_mirror)]
            mirrored[..., 0] = REFERENCE_SIZE - mirrored[..., 0]
            out = (out + mirrored) / 2
        if (
            augment is not None or view == 1.0
        ):  # back to the crop frame: a resize maps 256-frame pixels to crop pixels
            preds.append((out * (src / REFERENCE_SIZE)).cpu())
            targets.append((y * (src / input_size)).cpu())
        else:  # the centred view: through its warp
            preds.append(to_source(out * (input_size / REFERENCE_SIZE), m).cpu())
            targets.append(pts.cpu())
    pred = torch.cat(preds).numpy()
    if correction is not None:
        pred = pred - np.asarray(correction, dtype=pred.dtype) * (src / REFERENCE_SIZE)
    return (pred, torch.cat(targets).numpy()) if landmarks is not None else pred


def fit_correction(
    model: nn.Module,
    images,
    landmarks,
    input_size: int,
    batch_size: int = 64,
    device="cpu",
    flip_mirror: tuple[int, ...] | None = None,
    view: float = 1.0,
) -> np.ndarray:
    """Each point's mean error (K, 2) on held-out crops, in pixels of the crop at 256x256,
    predicted as ``predict`` will later (view, flip test): the ``correction`` it subtracts."""
    pred = predict(
        model, images, input_size, batch_size, device, flip_mirror=flip_mirror, view=view
    )
    return (pred - np.asarray(landmarks)).mean(0) * (REFERENCE_SIZE / images.shape[1])


def _forward(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return model(x).float()


# ------------------------------------------------------------------ the precision a device computes
PRECISIONS = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@functools.lru_cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (the avx512_bf16 or amx_bf16 flag; Linux)."""
    try:
        flags = set(open(cpuinfo).read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cuda_has_bf16(device) -> bool:
    """Whether a CUDA device computes bfloat16 natively: compute capability 8.0 and up (A100,
    H100, RTX 30xx and later). A T4 (7.5) or V100 (7.0) only emulates it, slower than float32."""
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)


def training_precision(device) -> str:
    """``system.autocast: auto`` for training: bfloat16 where the device computes it natively
    (CUDA 8.0+, a CPU with AVX-512 BF16 or AMX), float16 with a gradient scaler on older CUDA
    cards, float32 (``none``) elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if cuda_has_bf16(device) else "float16"
    return "bfloat16" if device.type == "cpu" and cpu_has_bf16() else "none"


def inference_precision(device, setting: str = "auto") -> torch.dtype | None:
    """The autocast dtype of validation, evaluation and prediction: ``setting`` (the run's
    ``system.autocast``) when given; with ``auto``, what a CUDA device computes natively (as for
    training), float32 on a CPU (exact, and a forward pass costs little there)."""
    if setting not in ("auto", *PRECISIONS):
        raise ValueError(f"system.autocast: auto, {', '.join(PRECISIONS)}; got {setting!r}")
    device = torch.device(device)
    if setting == "auto":
        setting = training_precision(device) if device.type == "cuda" else "none"
    return PRECISIONS[setting]


def keep_points(state: dict, n_points: int, head: str) -> dict:
    """A network's weights (``state_dict``) with only its first ``n_points`` outputs: a network
    trained jointly on the data set's points and another scheme's (``data.joint_train``) becomes
    a network of the data set's points alone, with the same predictions for them."""
    out = dict(state)
    if head == "regression":  # fc rows are x0, y0, x1, y1, ...
        for name in ("backbone.fc.weight", "backbone.fc.bias"):
            out[name] = state[name][: 2 * n_points]
    else:  # one heatmap channel per point
        for name in ("heatmaps.out.weight", "heatmaps.out.bias"):
            out[name] = state[name][:n_points]
    return out


def n_outputs(state: dict, head: str) -> int:
    """How many points a network's weights (``state_dict``) predict."""
    if head == "regression":
        return state["backbone.fc.weight"].shape[0] // 2
    return state["heatmaps.out.weight"].shape[0]


# ------------------------------------------------------------------ the model file
def save_model_file(model: LandmarkRegressor, info: ModelInfo, path: Path) -> Path:
    """Weights (float32, no optimizer state) and ``info``, written atomically."""
    from lmkit.run.folder import write_torch

    if model.n_points != info.n_points:
        raise ValueError(f"model has {model.n_points} points, its info says {info.n_points}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_torch({"format": MODEL_FORMAT, "info": asdict(info), "state_dict": state}, path)
    return Path(path)


def load_model_file(
    path: Path, device="cpu", settings: dict | None = None
) -> tuple[LandmarkRegressor, ModelInfo]:
    """The model (eval mode, on ``device``) and its info; a clear error for anything else.
    Loaded with ``weights_only=True``: a model file cannot run code. With ``settings``
    ({dotted params key: value}), refused when they describe another model
    (``ModelInfo.check_settings``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot read the model file ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        checkpoint = isinstance(blob, dict) and (
            "optimizer" in blob or {"model", "epoch", "history"} <= set(blob)
        )
        hint = " (a training checkpoint? use the run's train/model.pt)" if checkpoint else ""
        raise ValueError(
            f"{path}: not an lmkit model file (format {found!r}, want {MODEL_FORMAT!r}){hint}"
        )
    info = ModelInfo.from_dict(blob["info"])
    if settings is not None:
        info.check_settings(settings, str(path))
    model = build_model(info.n_points, pretrained=False, head=info.head)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), info


def network_summary(model: torch.nn.Module, input_size: int):
    """The network block by block: each block's output shape for one input of ``input_size``
    and its number of parameters (ResNet18's stem, its four stages, and the head).

    Used in: 03_train, "Before training: what the network is shown"."""
    b = model.eval().backbone  # batch norm with one image: its running statistics
    x = torch.zeros(1, 3, input_size, input_size)
    rows = []
    with torch.no_grad():
        for name, block in (
            (
                "stem: conv 7x7 stride 2, max-pool",
                torch.nn.Sequential(b.conv1, b.bn1, b.relu, b.maxpool),
            ),
            ("layer1 (2 residual blocks)", b.layer1),
            ("layer2", b.layer2),
            ("layer3", b.layer3),
            ("layer4", b.layer4),
        ):
            x = block(x)
            rows.append(
                {
                    "block": name,
                    "output": "x".join(map(str, x.shape[1:])),
                    "parameters": sum(p.numel() for p in block.parameters()),
                }
            )
        head = [m for n, m in model.named_children() if n != "backbone"] + [b.fc]
        rows.append(
            {
                "block": f"head: {model.head}",
                "output": f"{model.n_points}x2 (points, 256 frame)",
                "parameters": sum(p.numel() for m in head for p in m.parameters()),
            }
        )
    import pandas as pd

    table = pd.DataFrame(rows)
    return pd.concat(
        [
            table,
            pd.DataFrame(
                [
                    {
                        "block": "total",
                        "output": "",
                        "parameters": sum(p.numel() for p in model.parameters()),
                    }
                ]
            ),
        ],
        ignore_index=True,
    )
