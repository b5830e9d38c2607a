"""Batched geometric warps and intensity changes on tensors, CPU or GPU alike.

One 3x3 matrix per image maps pixel coordinates of the network input (S x S) to pixel
coordinates of the prepared crop: it folds the resize to S, the random rotation and the
random crop (``crop_fraction`` of the input, scaled back) into one warp, done by
``grid_sample``. Landmarks move by the inverse of the same matrix, so they follow the
pixels exactly. Coordinates sit on pixel corners: pixel i covers [i, i+1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from lmkit.study.modelinfo import (
    IMAGENET_MEAN,
    IMAGENET_STD,
)  # listed once, with the model file's facts
from lmkit.run.params import DEFAULTS, Train

_STUDY = DEFAULTS.train  # the defaults are the params schema's, written once there


@dataclass(frozen=True)
class Augment:
    """The study's augmentation: rotation up to +-``rotation`` degrees, a random crop of
    ``crop_fraction`` of the input scaled back (245/256 in the study), intensity x U(lo, hi);
    and, beyond the study, horizontal flips and box jitter (``scale``, ``shift``, ``edges``),
    which trains the model for the boxes a face detector gives rather than the annotations' box.

    Used in: 01_prepare, "One face, from its box to what the network sees"."""

    rotation: float = _STUDY.rotation
    crop_fraction: float = _STUDY.crop_fraction
    intensity: tuple[float, float] = tuple(_STUDY.intensity)
    flip: float = _STUDY.flip  # probability of a horizontal flip (needs the scheme's mirror map)
    mirror: tuple[int, ...] = ()
    scale: tuple[float, float] = tuple(
        _STUDY.scale
    )  # box jitter: the crop's side x U(lo, hi) (> 1 zooms out)
    shift: float = (
        _STUDY.shift
    )  # box jitter: the crop moves by U(-shift, shift) x the input side, in x and y
    # box jitter per edge (left, top, right, bottom): each edge moves on its own by N(0, sigma)
    # x the input side, clipped at 2 sigma, as a calibrated detector box does (detector.BoxCalibration.crop_sigma)
    edges: tuple[float, float, float, float] = tuple(_STUDY.edges)

    @classmethod
    def from_train(cls, train: Train, mirror=()) -> "Augment":
        """From the params' ``train`` section, each field by its key's name."""
        return cls(
            **{f.name: frozen(getattr(train, f.name)) for f in fields(cls) if f.name != "mirror"},
            mirror=tuple(mirror),
        )


def frozen(value):
    return tuple(value) if isinstance(value, list) else value


def pixel_normalizer(size: float, dtype, device) -> torch.Tensor:
    """Pixel coordinates -> grid_sample's [-1, 1] (align_corners=False)."""
    return torch.tensor(
        [[2 / size, 0, -1], [0, 2 / size, -1], [0, 0, 1]], dtype=dtype, device=device
    )


def random_warps(
    batch: int, src_size: int, out_size: int, aug: Augment, generator: torch.Generator, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 3) matrices, output pixels -> source pixels, and which images are flipped,
    drawn from ``generator``."""
    angle = (torch.rand(batch, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(
        aug.rotation
    )
    c = aug.crop_fraction * out_size
    offset = torch.rand(batch, 2, generator=generator, dtype=torch.float64) * (out_size - c)
    flip = torch.zeros(batch, dtype=torch.bool)
    if aug.flip > 0:  # draw only when asked, so runs without flips keep their random stream
        flip = torch.rand(batch, generator=generator) < aug.flip
    fraction = torch.full((batch,), aug.crop_fraction, dtype=torch.float64)
    if (
        aug.scale != (1.0, 1.0) or aug.shift > 0
    ):  # the box a face detector gives is larger or smaller, and off centre: likewise
        lo, hi = aug.scale
        s = lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=torch.float64)
        fraction = fraction * s
        # keep the jittered crop centred where the plain crop was, then move it
        offset = offset + (c - fraction[:, None] * out_size) / 2
        offset = (
            offset
            + (torch.rand(batch, 2, generator=generator, dtype=torch.float64) * 2 - 1)
            * aug.shift
            * out_size
        )
    if any(aug.edges):  # each edge on its own: the crop's width and height change apart
        sigma = torch.tensor(aug.edges, dtype=torch.float64)
        moves = (
            torch.randn(batch, 4, generator=generator, dtype=torch.float64).clamp_(-2, 2)
            * sigma
            * out_size
        )
        far = offset + fraction[:, None] * out_size + moves[:, 2:]  # right and bottom edges
        offset = offset + moves[:, :2]
        fraction = (far - offset) / out_size  # (B, 2): x and y
    return compose_warps(angle, offset, fraction, src_size, out_size, flip).to(device), flip.to(
        device
    )


def compose_warps(
    angle: torch.Tensor,
    offset: torch.Tensor,
    crop_fraction: float | torch.Tensor,
    src_size: int,
    out_size: int,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Output pixel p -> (mirror: x -> S - x) -> crop: q = offset + p * crop_fraction ->
    rotate about the centre -> resize: s = r * src_size / out_size. Returns (B, 3, 3) float64.
    ``crop_fraction`` is one number, one per image (B,), or one per image and axis (B, 2)."""
    b = angle.shape[0]
    eye = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    mirror = eye.clone()
    if flip is not None:
        mirror[flip, 0, 0] = -1.0
        mirror[flip, 0, 2] = float(out_size)
    crop = eye.clone()
    fraction = torch.as_tensor(crop_fraction, dtype=torch.float64)
    if fraction.dim() < 2:
        fraction = fraction.reshape(-1, 1).expand(b, 2)
    crop[:, 0, 0], crop[:, 1, 1] = fraction[:, 0], fraction[:, 1]
    crop[:, :2, 2] = offset
    h = out_size / 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = eye.clone()
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = cos, -sin, sin, cos
    rot[:, 0, 2] = h - cos * h + sin * h
    rot[:, 1, 2] = h - sin * h - cos * h
    resize = torch.diag(
        torch.tensor([src_size / out_size, src_size / out_size, 1.0], dtype=torch.float64)
    )
    return resize @ rot @ crop @ mirror


def resize_warps(
    batch: int, src_size: int, out_size: int, device="cpu", view: float = 1.0
) -> torch.Tensor:
    """The evaluation transform: the centred square of side ``view`` x the crop, resized
    (``view`` 1: a plain resize of the whole crop)."""
    if view == 1.0:
        s = src_size / out_size
        return (
            torch.diag(torch.tensor([s, s, 1.0], dtype=torch.float64))
            .repeat(batch, 1, 1)
            .to(device)
        )
    offset = torch.full((batch, 2), (1 - view) * out_size / 2, dtype=torch.float64)
    return compose_warps(
        torch.zeros(batch, dtype=torch.float64), offset, view, src_size, out_size
    ).to(device)


def to_float(images: torch.Tensor, out_size: int) -> torch.Tensor:
    """uint8 (B, H, W, 3) crops -> float (B, 3, h, h) in [0, 1], shrunk by area averaging to
    h = ceil(1.5 S) when larger, which anti-aliases the warp. Per image, so it may be done
    once for a whole training set (see ``preshrunk``) with the same result."""
    x = images.permute(0, 3, 1, 2).float().div_(255)
    if x.shape[-1] > 1.5 * out_size:
        x = F.interpolate(x, size=math.ceil(1.5 * out_size), mode="area")
    return x


def preshrunk(images, out_size: int, chunk: int = 64) -> torch.Tensor | None:
    """The whole set as ``to_float`` gives it, when that shrinks it (None otherwise): made
    once before training so that no batch converts and shrinks full-size crops again."""
    n, h = len(images), images.shape[1]
    if h <= 1.5 * out_size:
        return None
    import numpy as np

    out = torch.empty(n, 3, math.ceil(1.5 * out_size), math.ceil(1.5 * out_size))
    for i in range(0, n, chunk):
        out[i : i + chunk] = to_float(torch.from_numpy(np.array(images[i : i + chunk])), out_size)
    return out


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A small CPU tensor onto ``device`` without making the host wait (pinned, non-blocking on CUDA)."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def warp(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    matrices: torch.Tensor,
    out_size: int,
    src_size: int | None = None,
):
    """Warp uint8 (B, H, W, 3) crops, or float (B, 3, h, h) ones from ``to_float``, and their
    (B, K, 2) landmarks in pixels of the ``src_size`` crop (default: the images' size), by
    ``matrices`` (B, 3, 3), output pixels -> source pixels. The matrices and their inverses are
    made on the CPU (where they are drawn) and sent to the images' device once.

    Returns float images (B, 3, S, S) in [0, 1] and landmarks in output pixels.
    """
    if images.dtype == torch.uint8:
        b, h, w, _ = images.shape
        if h != w:
            raise ValueError(f"warp expects square crops, got {h}x{w}")
        x = to_float(images, out_size)
    else:
        x, b, h = images, images.shape[0], images.shape[-1]
    src_size = src_size or h  # the grid is normalized: a shrunk copy samples the same points
    m64 = matrices.detach().to("cpu", torch.float64)
    theta = (
        pixel_normalizer(src_size, torch.float64, "cpu")
        @ m64
        @ torch.linalg.inv(pixel_normalizer(out_size, torch.float64, "cpu"))
    )
    both = to_device(
        torch.cat([theta[:, :2].reshape(b, -1), torch.linalg.inv(m64).reshape(b, -1)], 1), x.device
    )
    theta, inverse = both[:, :6].reshape(b, 2, 3), both[:, 6:].reshape(b, 3, 3)
    grid = F.affine_grid(theta.to(x.dtype), [b, 3, out_size, out_size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    pts = torch.cat(
        [landmarks.to(torch.float64), torch.ones_like(landmarks[..., :1], dtype=torch.float64)], -1
    )
    moved = pts @ inverse.transpose(1, 2)
    return out, moved[..., :2].to(torch.float32)


def to_source(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) points in output pixels -> source pixels through the (B, 3, 3) warps."""
    pts = torch.cat(
        [points.to(torch.float64), torch.ones_like(points[..., :1], dtype=torch.float64)], -1
    )
    return (pts @ matrices.to(torch.float64).transpose(1, 2))[..., :2].to(points.dtype)


def random_intensity(
    images: torch.Tensor, aug: Augment, generator: torch.Generator
) -> torch.Tensor:
    """Each image times a random factor in ``aug.intensity``, clipped to [0, 1]: in place (``make_batch``
    hands it the warp's fresh output; no copy in the training loop's data path)."""
    lo, hi = aug.intensity
    f = lo + (hi - lo) * torch.rand(images.shape[0], generator=generator)
    return images.mul_(to_device(f, images.device).to(images.dtype).view(-1, 1, 1, 1)).clamp_(0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalization of (B, 3, S, S) images in [0, 1], in place."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images.sub_(mean).div_(std)


def make_batch(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    out_size: int,
    aug: Augment | None = None,
    generator: torch.Generator | None = None,
    src_size: int | None = None,
    view: float = 1.0,
    matrices: bool = False,
):
    """Network-ready batch: (normalized channels_last images, landmarks in output pixels).
    With ``aug`` None this is the evaluation transform (``resize_warps`` at ``view``). With
    ``matrices`` the (B, 3, 3) output -> source pixel maps come third."""
    b = images.shape[0]
    src = src_size or images.shape[1]  # uint8 crops are (B, H, W, 3)
    if aug is not None and aug.flip > 0 and not aug.mirror:
        raise ValueError("train.flip needs the landmark scheme's mirror map")
    if aug is None:  # drawn on the CPU; warp sends them to the images' device
        m, flip = resize_warps(b, src, out_size, "cpu", view), None
    else:
        m, flip = random_warps(b, src, out_size, aug, generator)
    x, y = warp(images, landmarks, m, out_size, src)
    if (
        flip is not None and aug.flip > 0
    ):  # a flipped left eye is a right eye: renumber the points by the mirror map
        y = torch.where(to_device(flip, y.device).view(-1, 1, 1), y[:, list(aug.mirror)], y)
    if aug is not None:
        x = random_intensity(x, aug, generator)
    x = normalize(x).contiguous(memory_format=torch.channels_last)
    m = to_device(m, images.device) if matrices else m
    return (x, y, m) if matrices else (x, y)


def preview_batch(images, landmarks, cfg, seed: int = 0):
    """Faces as the network will see them in training: one augmented draw of each (uint8
    (N, S, S, 3), points in input pixels), for the pictures of notebooks 01 and 03.

    Used in: 01_prepare, "One face, from its box to what the network sees"; 03_train, "Before training: what
    the network is shown"."""
    import numpy as np

    g = torch.Generator().manual_seed(seed)
    x, y = make_batch(
        torch.from_numpy(np.array(images)),
        torch.from_numpy(np.array(landmarks)),
        cfg.input_size,
        cfg.augment,
        g,
    )
    mean, std = (
        torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
    )
    return ((x * std + mean).clamp(0, 1) * 255).round().byte().permute(
        0, 2, 3, 1
    ).numpy(), y.numpy()
