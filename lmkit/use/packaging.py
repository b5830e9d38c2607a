"""The model file (``train/model.pt``): the best weights of 03 and everything needed to use them
on a photo (``model.ModelInfo``): written by 04_evaluate before it tests the model, and read by
every use after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lmkit.study import metrics
from lmkit.run import params as P
from lmkit.run.params import NOT_RESULTS, Params
from lmkit.study.modelinfo import view_fraction
from lmkit.data.faces import load_data
from lmkit.run.digests import digest
from lmkit.study.model import (
    build_model,
    fit_correction,
    keep_points,
    load_model_file,
    save_model_file,
)
from lmkit.study.modelinfo import ModelInfo
from lmkit.data.prepare import crop_to_photo
from lmkit.run.progress import emit
from lmkit.run.folder import RunFolder, read_json, write_json
from lmkit.train.checkpoints import load_checkpoint

# the train keys the model file's record of its recipe leaves out: where and how it ran, and what
# it records otherwise (epochs run, the search's learning rate and decay)
RECIPE_EXCLUDES = (*NOT_RESULTS, "processes", "epochs", "lr", "weight_decay")


def package_model(run: RunFolder, params: Params, log=print) -> Path:
    """Write ``train/model.pt``: the best checkpoint's weights and everything needed to use
    them on a photo (``model.ModelInfo``), including the face detector's box calibration,
    fitted on the training photos (real data with dlib installed; else none).

    Used in: 04_evaluate, "The model file"."""
    import lmkit

    d = load_data(run, params)
    scheme, train_set = d.scheme, d.train_set
    manifest = train_set.manifest
    ckpt = load_checkpoint(run.best_checkpoint)
    model = build_model(scheme.n_points, pretrained=False, head=params.model.head)
    model.load_state_dict(
        keep_points(ckpt["model"], scheme.n_points, params.model.head)
    )  # joint outputs dropped
    calibration, why = None, ""
    if manifest["source"] == "synthetic":
        why = "synthetic faces: no face detector calibration (give crop boxes to predict)"
    else:
        from lmkit.use.detector import make_detector

        try:
            detector = make_detector(params.model.detector)
        except RuntimeError as e:
            why = f"no box calibration: {e}"
        else:
            calibration, why = box_calibration(run, params, d, detector, log)
    hist = pd.read_csv(run.history)
    hp = read_json(run.best_hparams, "02_hpsearch")
    t = params.train
    view = view_fraction(params.model.view, t.crop_fraction, t.scale)
    correction = None
    if params.model.bias_correction:
        flip_test = params.eval.flip_test
        correction = fit_correction(
            model,
            d.val.images,
            d.val.landmarks,
            params.model.input_size,
            t.batch_size,
            flip_mirror=scheme.mirror if flip_test else None,
            view=view,
        )
        emit(
            log,
            "correction",
            f"bias correction fitted on {len(d.val.images)} validation faces: mean |error| per point "
            f"{np.linalg.norm(correction, axis=1).mean():.2f} px of the 256 frame, overall "
            f"({correction[:, 0].mean():+.2f}, {correction[:, 1].mean():+.2f}) px in x, y",
        )
    info = ModelInfo(
        scheme=scheme.name,
        n_points=scheme.n_points,
        input_size=params.model.input_size,
        crop_size=manifest["crop_size"],
        forehead=manifest["forehead"],
        padding=manifest["padding"],
        box=manifest["box"],
        head=params.model.head,
        mean_shape=metrics.mean_shape(d.train.landmarks).tolist(),
        dataset=d.dataset,
        box_calibration=calibration,
        flip_test=params.eval.flip_test,
        lmkit_version=lmkit.__version__,
        view=view,
        recrop=params.model.recrop,
        correction=None if correction is None else correction.round(4).tolist(),
        training={
            "epoch": int(ckpt["epoch"]),
            "epochs": int(hist["epoch"].max()),
            "val_mse": float(hist["val_mse"].min()),
            "lr": hp["lr"],
            "weight_decay": hp["weight_decay"],
            "seed": params.seed,
            **{k: v for k, v in t.model_dump().items() if k not in RECIPE_EXCLUDES},
        },
    )
    path = save_model_file(model, info, run.model_file)
    emit(
        log,
        "model_file",
        f"model file {path} ({path.stat().st_size / 1e6:.1f} MB, best epoch {info.training['epoch']}); {why}",
    )
    return path


def box_calibration(
    run: RunFolder, params: Params, d: dict, detector, log=print
) -> tuple[dict | None, str]:
    """The detector's box calibration, fitted on the run's training photos. It depends on the
    data and the detector only, so it is kept beside the train cache (``box_calibration.json``)
    and reused by every run and ablation variant with the same training photos."""
    from lmkit.use.detector import calibrate
    from lmkit.data.prepare import load_sources
    from lmkit.data.readers import load_image

    cache = run.cache_dir(params.data.cache_dir) / "train"
    manifest, indices = d.train_set.manifest, d.train.images.indices
    box = manifest["box"]
    key = digest(
        [
            detector.name,
            manifest.get("files"),
            manifest["forehead"],
            manifest["padding"],
            manifest["crop_size"],
            indices.tolist(),
        ]
        + ([box] if box != "landmarks" else []),
        16,
    )
    kept = cache / "box_calibration.json"
    stored = read_json(kept, "03_train") if kept.exists() else {}
    if stored.get("key") == key:
        calibration = stored["calibration"]
    else:
        sources, boxes = load_sources(cache)
        size, landmarks = manifest["crop_size"], d.train_set.landmarks
        emit(
            log,
            "calibration",
            f"fitting the box calibration: {detector.name} on {len(indices)} training photos ...",
        )

        def faces():
            for i in indices:
                yield (
                    load_image(Path(sources[i])),
                    crop_to_photo(boxes[i], size)(np.asarray(landmarks[i], np.float64)),
                )

        try:
            calibration = calibrate(
                detector, faces(), manifest["forehead"], manifest["padding"], box=box
            ).to_dict()
        except ValueError as e:
            return None, f"no box calibration: {e}"
        write_json({"key": key, "calibration": calibration}, kept)
    return calibration, (
        f"box calibration: {detector.name} found {calibration['faces']} of {calibration['photos']} "
        f"training faces; crop box in detector-box units {np.round(calibration['box'], 3).tolist()}"
    )


def load_model(run: RunFolder, params: Params, device) -> tuple[torch.nn.Module, ModelInfo]:
    """The run's model file, refused when the params describe another model."""
    if not run.model_file.exists():
        raise FileNotFoundError(
            f"{run.model_file}: missing; run notebook 03_train first (it writes the model file "
            "after training)"
        )
    settings = {key: P.value(params, key) for key in ModelInfo.SETTINGS}
    return load_model_file(run.model_file, device, settings)
