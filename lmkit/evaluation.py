"""The jobs of evaluation, one function each, so that 04_evaluate composes them and the
validation split can be scored the same way as the test split:

    crop_predictions      the model on annotation crops (the study's protocol)
    detector_predictions  the model end to end from its own face detector's box, on the photos
    score                 per-face arrays and one summary row per method, NMEs in photo pixels
    validation_scores     both uses of the model on the validation faces (to choose a recipe
                          with both numbers in view; the test faces are not looked at)
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from . import metrics as M
from .model import REFERENCE_SIZE, ModelInfo, predict
from .prepare import crop_to_photo


def crop_predictions(model, info: ModelInfo, images, batch_size: int, device, mirror: tuple[int, ...] | None,
                     correction: bool = True) -> tuple[np.ndarray, float]:
    """The model on cached crops as evaluation runs it (the model file's view, the flip test when
    ``mirror`` is given, its bias correction unless ``correction`` is false); crop pixels and
    seconds per face."""
    t0 = time.perf_counter()
    pred = predict(model, images, info.input_size, batch_size, device, flip_mirror=mirror, view=info.view,
                   correction=info.correction if correction else None)
    return pred, (time.perf_counter() - t0) / max(1, len(images))


def detector_unavailable(detector_box: bool, info: ModelInfo, manifest: dict) -> str | None:
    """Why the model cannot be run from its detector's boxes on a cache's photos, or None."""
    if not detector_box:
        return "not run (eval.detector_box: false)"
    if manifest["source"] == "synthetic":
        return "not run: synthetic faces have no original photos for a face detector"
    if info.box_calibration is None:
        return "not run: the model file has no box calibration (see notebook 03_train)"
    return None


def recropped(times: int) -> str:
    """How the detector's crop was refined (``model.recrop``), for a status line; empty for none."""
    return f"re-cropped {times}x from its own points; " if times else ""


def detector_predictions(landmarker, sources: list[str], crop_boxes: np.ndarray, true_crop: np.ndarray) -> dict:
    """The model end to end on each face's original photo: its detector's box (the one
    overlapping the annotated face, as for dlib), points mapped into the face's crop frame.
    A face the detector misses gets NaN points (a failure in the CED)."""
    from .detector import best_match
    from .readers import load_image

    n = len(sources)
    pred = np.full(true_crop.shape, np.nan)
    boxes, used = np.full((n, 4), np.nan), np.full((n, 4), np.nan)
    seconds = []
    for i, (src, box) in enumerate(zip(sources, crop_boxes)):
        image = load_image(Path(src))
        to_photo = crop_to_photo(box, landmarker.info.crop_size)
        true_full = to_photo(true_crop[i])
        t0 = time.perf_counter()
        face = best_match(landmarker.find_faces(image), (*true_full.min(0), *true_full.max(0)))
        if face is not None:
            (found,) = landmarker.predict(image, [face])
            pred[i] = to_photo.inverse(found.points)
            boxes[i], used[i] = face, found.crop_box
        seconds.append(time.perf_counter() - t0)
    detected = max(1, int(np.isfinite(boxes[:, 0]).sum()))
    return {"pred": pred, "boxes": boxes, "crop_boxes": used, "detector": getattr(landmarker.detector, "name", "detector"),
            "seconds_per_photo": float(np.mean(seconds)), "seconds_per_face": float(np.sum(seconds)) / detected}


def score(preds: dict[str, np.ndarray], true: np.ndarray, crop_boxes: np.ndarray, crop_size: int, scheme,
          thresholds=(0.08, 0.10)) -> tuple[dict, dict]:
    """Per-face arrays (``<method>__mse`` ...) and a summary row per method: the MSE in the
    study's unit (px² of the 256 frame), NMEs, AUCs and failure rates in photo pixels."""
    true_photo = M.to_photo(true, crop_boxes, crop_size)
    arrays, rows = {}, {}
    for key, pred in preds.items():
        per, row = M.summarize(pred, true, scheme, REFERENCE_SIZE / crop_size, thresholds,
                               photo=(M.to_photo(pred, crop_boxes, crop_size), true_photo))
        rows[key] = row
        arrays.update({f"{key}__{k}": v for k, v in per.items()} | {f"{key}__pred": pred})
    return arrays, rows


def validation_scores(model, info: ModelInfo, faces, sources: list[str], crop_boxes: np.ndarray, scheme,
                      batch_size: int, device, flip_test: bool, detector_box: bool, manifest: dict) -> dict:
    """Both uses of the model on the validation faces (``faces``: images and landmarks from the
    train cache, with their photos and crop boxes): on annotation crops and, where the model file
    has a box calibration, from its own detector's box. Without the bias correction, which was
    fitted on these faces (it would flatter them). Summary rows only, keyed as the test's."""
    mirror = scheme.mirror if flip_test else None
    true = np.asarray(faces.landmarks, dtype=np.float64)
    preds = {"model": crop_predictions(model, info, faces.images, batch_size, device, mirror, correction=False)[0]}
    status = detector_unavailable(detector_box, info, manifest)
    if status is None:
        from .inference import Landmarker

        plain = dataclasses.replace(info, correction=None)
        found = detector_predictions(Landmarker(model, plain, device, flip_test=flip_test), sources, crop_boxes, true)
        preds["model_detector"] = found["pred"]
    _, rows = score(preds, true, crop_boxes, faces.images.shape[1], scheme)
    return {"faces": len(true), "bias_correction": False,
            "detector_box": status or f"run on the original photos; {recropped(info.recrop)}".rstrip("; "),
            "methods": rows}
