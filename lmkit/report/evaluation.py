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

from lmkit.study.metrics import NORMALISATIONS, best_and_worst, mean_shape, summarize, to_photo
from lmkit.study.model import predict
from lmkit.study.modelinfo import ModelInfo, REFERENCE_SIZE
from lmkit.data.prepare import crop_to_photo
from lmkit.report.predictions import METHODS, Predictions
from lmkit.run.params import Params

# what a face's NME is computed in: the points mapped back to the photo it came from (the field's
# convention); a synthetic face's "photo" is the generated image itself
NME_FRAMES = {
    False: "pixels of the original photo",
    True: "pixels of the generated synthetic image",
}
# the study's published numbers
PAPER = {
    "test_mse": 27.84,
    "best_val_mse": 8.00,
    "dataset": "Helen (2,000 train / 330 test, 194 points)",
}


def crop_predictions(
    model,
    info: ModelInfo,
    images,
    batch_size: int,
    device,
    mirror: tuple[int, ...] | None,
    correction: bool = True,
    precision: str = "auto",
) -> tuple[np.ndarray, float]:
    """The model on cached crops as evaluation runs it (the model file's view, the flip test when
    ``mirror`` is given, its bias correction unless ``correction`` is false, the run's
    ``system.autocast``); crop pixels and seconds per face."""
    t0 = time.perf_counter()
    pred = predict(
        model,
        images,
        info.input_size,
        batch_size,
        device,
        flip_mirror=mirror,
        view=info.view,
        correction=info.correction if correction else None,
        precision=precision,
    )
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


def detector_predictions(
    landmarker, sources: list[str], crop_boxes: np.ndarray, true_crop: np.ndarray
) -> dict:
    """The model end to end on each face's original photo: its detector's box (the one
    overlapping the annotated face, as for dlib), points mapped into the face's crop frame.
    A face the detector misses gets NaN points (a failure in the CED)."""
    from lmkit.use.detector import best_match
    from lmkit.data.readers import load_image

    n = len(sources)
    pred = np.full(true_crop.shape, np.nan)
    boxes, used = np.full((n, 4), np.nan), np.full((n, 4), np.nan)
    seconds = []
    for i, (src, box) in enumerate(zip(sources, crop_boxes)):
        image = load_image(Path(src))
        photo_map = crop_to_photo(box, landmarker.info.crop_size)
        true_full = photo_map(true_crop[i])
        t0 = time.perf_counter()
        face = best_match(landmarker.find_faces(image), (*true_full.min(0), *true_full.max(0)))
        if face is not None:
            (found,) = landmarker.predict(image, [face])
            pred[i] = photo_map.inverse(found.points)
            boxes[i], used[i] = face, found.crop_box
        seconds.append(time.perf_counter() - t0)
    detected = max(1, int(np.isfinite(boxes[:, 0]).sum()))
    return {
        "pred": pred,
        "boxes": boxes,
        "crop_boxes": used,
        "detector": getattr(landmarker.detector, "name", "detector"),
        "seconds_per_photo": float(np.mean(seconds)),
        "seconds_per_face": float(np.sum(seconds)) / detected,
    }


def score(
    preds: dict[str, np.ndarray],
    true: np.ndarray,
    crop_boxes: np.ndarray,
    crop_size: int,
    scheme,
    thresholds=(0.08, 0.10),
) -> tuple[dict, dict]:
    """Per-face arrays of each method (``{"model": {"pred": ..., "mse": ..., "nme_io": ...}}``, as
    ``Predictions`` keeps them) and a summary row per method: the MSE in the study's unit (px² of the
    256 frame), NMEs, AUCs and failure rates in photo pixels."""
    true_photo = to_photo(true, crop_boxes, crop_size)
    arrays, rows = {}, {}
    for key, pred in preds.items():
        per, row = summarize(
            pred,
            true,
            scheme,
            REFERENCE_SIZE / crop_size,
            thresholds,
            photo=(to_photo(pred, crop_boxes, crop_size), true_photo),
        )
        rows[key] = row
        arrays[key] = {**per, "pred": pred}
    return arrays, rows


def validation_scores(
    model,
    info: ModelInfo,
    faces,
    sources: list[str],
    crop_boxes: np.ndarray,
    scheme,
    batch_size: int,
    device,
    flip_test: bool,
    detector_box: bool,
    manifest: dict,
    precision: str = "auto",
) -> dict:
    """Both uses of the model on the validation faces (``faces``: images and landmarks from the
    train cache, with their photos and crop boxes): on annotation crops and, where the model file
    has a box calibration, from its own detector's box. Without the bias correction, which was
    fitted on these faces (it would flatter them). Summary rows only, keyed as the test's."""
    mirror = scheme.mirror if flip_test else None
    true = np.asarray(faces.landmarks, dtype=np.float64)
    preds = {
        "model": crop_predictions(
            model, info, faces.images, batch_size, device, mirror, False, precision
        )[0]
    }
    status = detector_unavailable(detector_box, info, manifest)
    if status is None:
        from lmkit.use.inference import Landmarker

        plain = dataclasses.replace(info, correction=None)
        found = detector_predictions(
            Landmarker(model, plain, device, flip_test=flip_test), sources, crop_boxes, true
        )
        preds["model_detector"] = found["pred"]
    _, rows = score(preds, true, crop_boxes, faces.images.shape[1], scheme)
    return {
        "faces": len(true),
        "bias_correction": False,
        "detector_box": status
        or f"run on the original photos; {recropped(info.recrop)}".rstrip("; "),
        "methods": rows,
    }


def ert_unavailable(params: Params) -> str | None:
    """Why the ERT peer is not trained for this run, or None when it is (``eval.ert``)."""
    import importlib.util

    if params.eval.ert is False or (
        params.eval.ert == "auto" and params.data.source == "synthetic"
    ):
        return "off (eval.ert; auto trains it on real photos only)"
    if importlib.util.find_spec("dlib") is None:
        return "dlib is not installed (pip install -e '.[peers]')"
    return None


def evaluate_run(run, params: Params, log=print, peers: bool = True) -> dict:
    """Test metrics of the model (on annotation crops and from its own detector's box), the
    mean-shape baseline and (68 points, dlib installed) the dlib peer, each a job of
    ``lmkit.report.evaluation``; the same two uses of the model on the validation faces, to choose
    recipes by; per-face arrays to ``eval/predictions.npz``, the summary to ``metrics.json``.

    Used in: 04_evaluate, "The model file"."""
    from lmkit.data.faces import check_flips, comparable_to_paper, load_data
    from lmkit.study.model import pick_device
    from lmkit.use.packaging import load_model
    from lmkit.use.peers import peer_unavailable, run_dlib
    from lmkit.run.progress import emit
    from lmkit.data.prepare import load_sources
    from lmkit.report.protocol import compare as compare_protocol
    from lmkit.run.folder import read_json, write_json
    import pandas as pd

    d = load_data(run, params)
    test, scheme = d.test, d.scheme
    device = pick_device(params.system.device)
    model, info = load_model(run, params, device)
    mean = mean_shape(d.train.landmarks)
    flip_test, batch = params.eval.flip_test, params.train.batch_size
    mirror = scheme.mirror if flip_test else None
    check_flips(params, scheme, mean, flip_test)
    true = np.asarray(test.landmarks)
    preds, seconds = {}, {}
    preds["model"], seconds["model"] = crop_predictions(
        model, info, test.images, batch, device, mirror, precision=params.system.autocast
    )
    extra_arrays = {}
    cache = run.cache_dir(params.data.cache_dir)
    sources, crop_boxes = load_sources(cache / "test")  # each test face's photo and crop box
    detector_status = detector_unavailable(params.eval.detector_box, info, test.manifest)
    if detector_status is None:
        from lmkit.use.inference import Landmarker

        found = detector_predictions(
            Landmarker(model, info, device, flip_test=flip_test), sources, crop_boxes, true
        )
        preds["model_detector"], seconds["model_detector"] = (
            found["pred"],
            found["seconds_per_face"],
        )
        extra_arrays = {
            "model_detector": {"boxes": found["boxes"], "crop_boxes": found["crop_boxes"]}
        }
        detector_status = (
            f"run on the original photos; {found['detector']} found {int(np.isfinite(found['boxes'][:, 0]).sum())} "
            f"of {len(test)} faces; {recropped(info.recrop)}{found['seconds_per_photo'] * 1000:.0f} ms per "
            "photo with detection"
        )
    emit(log, "evaluate", f"ResNet18 with its detector box: {detector_status}")
    preds["mean_shape"] = np.broadcast_to(mean, true.shape)
    peer_status = peer_unavailable(scheme.n_points) if peers else "not run for this evaluation"
    if peer_status is None:
        dlib = run_dlib(sources, crop_boxes, true, test.images.shape[1])
        for kind in ("hog", "annotation"):
            preds[f"dlib_{kind}"] = dlib[kind]["pred"]
            seconds[f"dlib_{kind}"] = dlib[kind]["seconds_per_face"]
        missed = [test.names[i] for i in dlib["hog"]["missed"]]
        peer_status = (
            f"run on the original photos; HOG detector missed {len(missed)} of {len(test)} faces"
        )
        if missed:
            peer_status += f": {', '.join(missed[:20])}"
    emit(log, "evaluate", f"dlib peer: {peer_status}")
    ert_status = ert_unavailable(params)
    if ert_status is None:
        from lmkit.use.peers import run_ert, train_ert

        e = params.eval
        trained = train_ert(
            d.train.images,
            d.train.landmarks,
            cache / "ert",
            e.ert_trees,
            e.ert_cascades,
            params.seed,
            log,
        )
        found = run_ert(trained["file"], test.images, true)
        preds["ert"], seconds["ert"] = found["pred"], found["seconds_per_face"]
        ert_status = (
            f"trained on {trained['faces']} faces in {trained['minutes']:.1f} min"
            f"{' (reused: the same faces and options)' if trained['reused'] else ''}; "
            f"{found['seconds_per_face'] * 1000:.1f} ms per face"
        )
        ert_minutes = trained["minutes"]
    emit(log, "evaluate", f"ERT trained on this run's faces: {ert_status}")
    arrays, scored = score(
        preds, true, crop_boxes, test.images.shape[1], scheme, tuple(params.eval.thresholds)
    )
    rows = {
        METHODS[key]: row | ({"seconds_per_face": seconds[key]} if key in seconds else {})
        for key, row in scored.items()
    }
    val_sources, val_boxes = load_sources(cache / "train")
    vi = d.val.images.indices
    validation = validation_scores(
        model,
        info,
        d.val,
        [val_sources[i] for i in vi],
        val_boxes[vi],
        scheme,
        batch,
        device,
        flip_test,
        params.eval.detector_box,
        d.train_set.manifest,
        params.system.autocast,
    )
    validation["methods"] = {METHODS[key]: row for key, row in validation["methods"].items()}
    for method, row in validation["methods"].items():
        if "nme_oc_mean" in row:
            emit(
                log,
                "evaluate",
                f"validation ({validation['faces']} faces, no bias correction), {method}: NME outer "
                f"corners {row['nme_oc_mean']:.4f}",
                split="validation",
                method=method,
                nme_oc=row["nme_oc_mean"],
            )
    best, worst = best_and_worst(arrays["model"]["mse"])
    history = pd.read_csv(run.history)
    metrics = {
        "dataset": d.dataset,
        "comparable_to_paper": comparable_to_paper(d),
        "scheme": scheme.name,
        "n_train": len(d.train.images),
        "n_val": len(d.val.images),
        "n_test": len(test),
        "split_protocol": params.data.split,
        "input_size": params.model.input_size,
        "epochs": int(history["epoch"].max()),
        "train_seconds": float(history["seconds"].sum()),
        "mse_unit": "px² of the 256x256 network input",
        "nme_frame": NME_FRAMES[params.data.source == "synthetic"],
        "nme_units": {k: v for k, v in NORMALISATIONS.items() if f"nme_{k}" in arrays["model"]},
        "best_val_mse": float(history["val_mse"].min()),
        "best_epoch": int(history.loc[history["val_mse"].idxmin(), "epoch"]),
        "final": bool(
            params.data.final
        ),  # trained on training + validation faces, the last epoch kept
        "hparams": read_json(run.best_hparams, "02_hpsearch"),
        "methods": rows,
        "validation": validation,
        "peer": peer_status,
        "ert": ert_status,
        **({"ert_train_minutes": ert_minutes} if "ert" in preds else {}),
        "detector_box": detector_status,
        "flip_test": flip_test,
        "view": info.view,
        "bias_correction": info.correction is not None,
        "recrop": info.recrop,
        "crop_box": info.box,
        "model_file": info.training | {"lmkit": info.lmkit_version},
        "search_budget": {
            k: getattr(params.search, k) for k in ("enabled", "trials", "epochs_per_trial")
        },
        "skipped": {
            "train": d.train_set.manifest.get("skipped", []),
            "test": test.manifest.get("skipped", []),
        },
        "unannotated": {
            "train": d.train_set.manifest.get("unannotated", []),
            "test": test.manifest.get("unannotated", []),
        },
        "best": [test.names[i] for i in best],
        "worst": [test.names[i] for i in worst],
        "paper": PAPER,
        "protocol": compare_protocol(
            params,
            d.train_set.manifest,
            test.manifest,
            len(d.train.images),
            len(d.val.images),
            len(test),
        ),
        "crop_margin": d.train_set.manifest.get("margin"),
    }
    Predictions.from_scores(true, test.names, best, worst, arrays, extra_arrays).save(
        run.predictions
    )
    write_json(metrics, run.metrics)
    return metrics
