"""Landmark metrics. Arrays are (N, K, 2) in one pixel frame.

* ``mse_per_image``: the study's unit, the squared error averaged over points and over
  x and y, in pixels of the 256x256 network input (pass ``scale`` = 256 / crop size
  when the arrays are in crop pixels).
* ``nme_per_image``: mean point-to-point error over a normalising distance per image,
  by default the distance between the centres of the scheme's two eye groups.
* ``ced``, ``auc``, ``failure_rate``: the cumulative error distribution of NMEs, its
  normalised area up to a threshold, and the fraction above it.
"""

from __future__ import annotations

import numpy as np

from lmkit.study.schemes import Scheme


def mse_per_image(pred: np.ndarray, true: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return np.mean(((pred - true) * scale) ** 2, axis=(1, 2))


def inter_ocular(true: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Distance between the centres of the two eye groups, per image."""
    a = true[:, scheme.group(scheme.left_eye).indices].mean(1)
    b = true[:, scheme.group(scheme.right_eye).indices].mean(1)
    return np.linalg.norm(a - b, axis=1)


def outer_corners(true: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Distance between the outer eye corners (300-W convention; 68 points only)."""
    if scheme.outer_eye_corners is None:
        raise ValueError(f"scheme {scheme.name} defines no outer eye corners")
    i, j = scheme.outer_eye_corners
    return np.linalg.norm(true[:, i] - true[:, j], axis=1)


def nme_per_image(pred: np.ndarray, true: np.ndarray, norm: np.ndarray) -> np.ndarray:
    if np.any(norm <= 0):
        raise ValueError("normalising distance must be positive for every image")
    return np.linalg.norm(pred - true, axis=2).mean(1) / norm


def ced(nme: np.ndarray, max_error: float = 0.3, steps: int = 301) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds and the fraction of images at or below each."""
    x = np.linspace(0, max_error, steps)
    return x, (np.sort(nme)[None, :] <= x[:, None]).mean(1)


def auc(nme: np.ndarray, threshold: float) -> float:
    """Area under the CED from 0 to ``threshold``, divided by ``threshold`` (1 = perfect).

    Exact for the step-shaped CED: each image contributes (threshold - nme) / threshold.
    """
    return float(np.clip(threshold - np.asarray(nme), 0, None).mean() / threshold)


def failure_rate(nme: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.asarray(nme) > threshold))


def mean_shape(train_landmarks: np.ndarray) -> np.ndarray:
    """The mean training shape in the crop: the baseline any model must beat.

    Used in: 01_prepare, "Which number is which point"; 02_hpsearch, "The objective"."""
    return np.asarray(train_landmarks, dtype=np.float64).mean(0).astype(np.float32)


NORMALISATIONS = {
    "io": "inter-ocular: distance between the eye-group centres",
    "oc": "outer eye corners (the 300-W convention: points 36 and 45 of ibug68, 144 and 124 of helen194)",
}


def to_photo(points: np.ndarray, boxes: np.ndarray, crop_size: int) -> np.ndarray:
    """(N, K, 2) points in pixels of each face's crop -> pixels of its original photo, each
    through its crop box (x0, y0, x1, y1) (``prepare.crop_to_photo``, vectorised).

    Used in: 04_evaluate, "The study's two numbers, computed here"."""
    boxes = np.asarray(boxes, dtype=np.float64)[:, None, :]
    return (
        boxes[..., :2]
        + np.asarray(points, dtype=np.float64) * (boxes[..., 2:] - boxes[..., :2]) / crop_size
    )


def summarize(
    pred: np.ndarray,
    true: np.ndarray,
    scheme: Scheme,
    mse_scale: float,
    thresholds=(0.08, 0.10),
    photo: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, dict]:
    """Per-image arrays and a summary row for one method on one test set: MSE, and NME with
    each normalisation the scheme supports (``io`` always, ``oc`` where it names the outer eye
    corners). ``pred`` and ``true`` are in crop pixels: the MSE is the study's (the 256 frame,
    ``mse_scale`` = 256 / crop size). With ``photo`` (the same points in pixels of the original
    photos, ``to_photo``) the NMEs, AUCs and failure rates are computed there, as the field
    reports them; the crop frame stretches a face that was not square.

    A face without a prediction (NaN, e.g. a face the peer's detector missed) gets an
    infinite error: it counts as a failure in the CED, AUC and failure rate, and the means
    are over the predicted faces, with ``detected`` the fraction predicted."""
    missed = ~np.isfinite(pred).all(axis=(1, 2))
    p, t = photo if photo is not None else (pred, true)
    per = {
        "mse": mse_per_image(pred, true, mse_scale),
        "nme_io": nme_per_image(p, t, inter_ocular(t, scheme)),
    }
    if scheme.outer_eye_corners is not None:
        per["nme_oc"] = nme_per_image(p, t, outer_corners(t, scheme))
    for v in per.values():
        v[missed] = np.inf
    ok = ~missed
    row = {"mse_mean": float(per["mse"][ok].mean()), "mse_median": float(np.median(per["mse"][ok]))}
    if missed.any():
        row["detected"] = float(ok.mean())
    for norm in ("io", "oc"):
        if f"nme_{norm}" not in per:
            continue
        nme = per[f"nme_{norm}"]
        row[f"nme_{norm}_mean"] = float(nme[ok].mean())
        for t in thresholds:
            row[f"auc_{norm}@{t:.2f}"] = auc(nme, t)
            row[f"fr_{norm}@{t:.2f}"] = failure_rate(nme, t)
    return per, row


def best_and_worst(per_image: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k lowest and k highest values."""
    order = np.argsort(per_image, kind="stable")
    return order[:k], order[::-1][:k]
