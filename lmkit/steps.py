"""What each notebook does, one function per notebook, so that the notebooks stay short
narratives and the tests reach every line. Each step reads and writes only the run folder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from . import evaluation as E
from . import figures
from . import metrics as M
from . import params as P
from .augment import view_fraction
from .digests import (digest, record_stage, stage_digests, stage_state, study_inputs, training_inputs,
                      without_packaging)
from .model import (ModelInfo, build_model, fit_correction, load_model_file, pick_device,
                    save_model_file)
from .placement import cuda_switches
from .progress import emit, quiet
from .protocol import compare as compare_protocol
from .prepare import PreparedSet, Subset, crop_to_photo, load_cache, prepare as prepare_caches, split_train_val
from .report import METHODS, PAPER, metrics_table, nme_by_method  # noqa: F401 (the notebooks' names)
from .runfolder import RunFolder, atomic_write, read_json, write_csv, write_json
from .saliency import network_inputs, saliency_maps
from .schemes import Scheme, check_mirror, scheme_for_points
from .stages import NOT_RESULTS, for_stage
from .search import default_storage, run_search, search_outcome, trials_table
from .train import TrainConfig, fit, load_checkpoint, model_options, new_model


def comparable_to_paper(d: "RunData") -> bool:
    """The study's numbers are comparable only on Helen's own 194-point data."""
    return d.train_set.manifest["source"] == "helen" and d.scheme.n_points == 194


def describe_dataset(manifest: dict) -> str:
    src = manifest["source"]
    if src == "synthetic":
        return f"synthetic faces (lmkit built-in, seed {manifest['seed']})"
    name = {"helen": "Helen (official layout)", "300w": "300-W layout"}[src]
    extra = f" + {', '.join(Path(f).name for f in manifest['extra_train'])} (training)" if manifest.get("extra_train") else ""
    return f"{name}: {Path(manifest['root']).name}{extra}"


# ------------------------------------------------------------------ 01_prepare
def prepare(run: RunFolder, params: dict, log=print) -> dict[str, PreparedSet]:
    splits = prepare_caches(params["data"], params["seed"], run.cache_dir(params["data"]["cache_dir"]), log)
    split = split_train_val(len(splits["train"]), params["data"]["val_fraction"], params["seed"],
                            params["data"]["split"])
    batch = params["train"]["batch_size"]
    if len(split["train"]) < batch:
        raise ValueError(f"too little data: {len(split['train'])} training faces after holding out {len(split['val'])} "
                         f"for validation (data.val_fraction {params['data']['val_fraction']}), fewer than one batch "
                         f"(train.batch_size {batch}); add faces or lower train.batch_size")
    write_json(split, run.split)
    overlap = set(split["train"]) & set(split["val"])
    emit(log, "split", f"split ({split['protocol']}): {len(split['train'])} training and {len(split['val'])} validation images, "
        f"{len(overlap)} shared, {len(splits['test'])} test images")
    return splits


class Faces(NamedTuple):
    images: Subset
    landmarks: Subset


@dataclass(frozen=True)
class RunData:
    """A prepared run's faces: ``train`` and ``val`` (images, landmarks) from the training
    split, the ``test`` split, the whole training split, its landmark scheme and a label."""
    train: Faces
    val: Faces
    test: PreparedSet
    train_set: PreparedSet
    scheme: Scheme
    dataset: str


def load_data(run: RunFolder, params: dict) -> RunData:
    """Train / validation / test arrays of a prepared run."""
    cache = run.cache_dir(params["data"]["cache_dir"])
    train, test = load_cache(cache / "train"), load_cache(cache / "test")
    split = read_json(run.split, "01_prepare")
    ti, vi = np.asarray(split["train"]), np.asarray(split["val"])
    return RunData(Faces(Subset(train.images, ti), Subset(train.landmarks, ti)),
                   Faces(Subset(train.images, vi), Subset(train.landmarks, vi)),
                   test, train, scheme_for_points(train.landmarks.shape[1]), describe_dataset(train.manifest))


# ------------------------------------------------------------------ 02_hpsearch
def study_name(params: dict) -> str:
    """``search.study_name`` plus a digest of everything a trial's result depends on, so a
    study is resumed only by a search that would have produced the same trials."""
    return f"{params['search']['study_name']}-{digest(study_inputs(params), 8)}"


def hpsearch(run: RunFolder, params: dict, log=print) -> pd.DataFrame | None:
    s = params["search"]
    if not s["enabled"]:
        t = params["train"]
        write_json({"lr": t["lr"], "weight_decay": t["weight_decay"], "source": "params (search disabled)"},
                   run.best_hparams)
        emit(log, "search", "search disabled: training uses train.lr and train.weight_decay")
        return None
    study = _search(run, params, log, single_worker=not s["storage"])
    table = trials_table(study)
    write_csv(table, run.trials)
    best = study.best_trial
    write_json({"lr": best.params["lr"], "weight_decay": best.params["weight_decay"], "val_mse": best.value,
                "trial": best.number, "source": f"Optuna study {study.study_name!r}"}, run.best_hparams)
    return table


def search_worker(run: RunFolder, log=print):
    """One more worker for a run's search, on this machine: it runs trials of the run's study
    (its ``params.yaml``, prepared data on shared storage, ``search.storage`` a database all
    workers reach) until the study has ``search.trials`` complete, then logs the winner. It
    writes nothing in the run folder and takes no lock: the chain's 02_hpsearch, which may be
    running at the same time, writes the results."""

    if not run.root.is_dir() or not run.params.exists():
        raise FileNotFoundError(f"{run.root / 'params.yaml'}: missing; start the run first (lmkit run ... --out {run.root})")
    params = P.load(run.params)
    s = params["search"]
    if not s["enabled"]:
        raise ValueError(f"{run.params}: search.enabled is false; there is no search to work on")
    if not s["storage"]:
        raise ValueError(f"{run.params}: search.storage is not set; workers share a study through a database "
                         "server all of them reach, e.g. search.storage: postgresql://user@host/lmkit")
    if not run.split.exists():
        raise FileNotFoundError(f"{run.split}: missing; the run's 01_prepare has not finished yet")
    study = _search(run, params, log, single_worker=False)
    log(search_outcome(study))
    return study


def _search(run: RunFolder, params: dict, log, single_worker: bool):
    s = params["search"]
    d = load_data(run, params)
    device = pick_device(params["train"]["device"])
    cuda_switches(device)
    mean = M.mean_shape(d.train[1])
    check_flips(params, d.scheme, mean)

    def objective(lr: float, wd: float) -> float:
        model = new_model(mean.shape[0], mean, params["seed"], device, **model_options(params))
        cfg = TrainConfig.from_params(params, device, d.scheme.mirror, lr=lr, weight_decay=wd,
                                      epochs=s["epochs_per_trial"])
        return float(fit(model, *d.train, *d.val, cfg, log=quiet)["val_mse"].min())

    return run_search(objective, s["trials"], s["lr_range"], s["weight_decay_range"],
                      s["storage"] or default_storage(run.root), study_name(params), params["seed"], log,
                      single_worker=single_worker)


# ------------------------------------------------------------------ 03_train
def check_flips(params: dict, scheme: Scheme, mean: np.ndarray, flip_test: bool = False) -> None:
    """Before the mirror map is used (training flips, the flip test), check it on the data."""
    if params["train"]["flip"] > 0 or flip_test:
        check_mirror(scheme, mean, params["data"]["crop_size"])


def training_preview(run: RunFolder, params: dict, n: int = 6, seed: int = 0) -> dict:
    """What 03 shows before it trains: ``n`` training faces as the network will see them
    (one augmented draw of each, landmarks moved with the pixels), the learning rate of every
    epoch, and the network's blocks with their output shapes and parameter counts."""
    from .augment import IMAGENET_MEAN, IMAGENET_STD, make_batch
    from .model import to_tensor

    d = load_data(run, params)
    hp = read_json(run.best_hparams, "02_hpsearch")
    cfg = TrainConfig.from_params(params, "cpu", d.scheme.mirror, lr=hp["lr"], weight_decay=hp["weight_decay"])
    images, landmarks = d.train[0][:n], d.train[1][:n]
    g = torch.Generator().manual_seed(seed)
    x, y = make_batch(to_tensor(images), to_tensor(landmarks), cfg.input_size, cfg.augment, g)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    seen = ((x * std + mean).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    model = new_model(d.scheme.n_points, M.mean_shape(d.train[1]), params["seed"], "cpu", **model_options(params))
    return {"images": seen, "landmarks": y.numpy(), "scheme": d.scheme,
            "lr": [cfg.lr_at(e) for e in range(1, cfg.epochs + 1)],
            "network": network_summary(model, cfg.input_size)}


def network_summary(model: torch.nn.Module, input_size: int) -> pd.DataFrame:
    """The network block by block: each block's output shape for one input of ``input_size``
    and its number of parameters (ResNet18's stem, its four stages, and the head)."""
    b = model.eval().backbone  # batch norm with one image: its running statistics
    x = torch.zeros(1, 3, input_size, input_size)
    rows = []
    with torch.no_grad():
        for name, block in (("stem: conv 7x7 stride 2, max-pool", torch.nn.Sequential(b.conv1, b.bn1, b.relu, b.maxpool)),
                            ("layer1 (2 residual blocks)", b.layer1), ("layer2", b.layer2), ("layer3", b.layer3),
                            ("layer4", b.layer4)):
            x = block(x)
            rows.append({"block": name, "output": "x".join(map(str, x.shape[1:])),
                         "parameters": sum(p.numel() for p in block.parameters())})
        head = [m for n, m in model.named_children() if n != "backbone"] + [b.fc]
        rows.append({"block": f"head: {model.head}", "output": f"{model.n_points}x2 (points, 256 frame)",
                     "parameters": sum(p.numel() for m in head for p in m.parameters())})
    table = pd.DataFrame(rows)
    return pd.concat([table, pd.DataFrame([{"block": "total", "output": "",
                                            "parameters": sum(p.numel() for p in model.parameters())}])],
                     ignore_index=True)


def train(run: RunFolder, params: dict, log=print) -> pd.DataFrame:
    """Train (here, or in ``train.processes`` data-parallel processes), unless the weights were
    trained before with the same inputs; then package the best weights as the run's model file
    (``package_model``)."""
    fit_record, fit_key, fit_files = run.path("train", "fit.json"), training_key(run, params), [run.history, run.best_checkpoint]
    done = read_json(fit_record, "03_train") if fit_record.exists() else {}
    trained = stage_state(done, "fit", fit_key, fit_files) == "current" or \
        stage_state(done, "fit", training_key(run, params, before_recrop=True), fit_files) == "current"
    if not params["train"]["resume"] and trained:
        log("training: train/best.pt was trained with these data, hyper-parameters and recipe: reused; "
            "only the model file is written again")
        history = pd.read_csv(run.history)
    elif params["train"]["processes"] > 1:
        from .launch import launch

        launch(run, params["train"]["processes"], log)  # each process runs fit_weights (lmkit.distributed)
        history = pd.read_csv(run.history)
    else:
        history = fit_weights(run, params, log)
    write_json(record_stage({}, "fit", fit_key, fit_files), fit_record)
    package_model(run, params, log)
    return history


def fit_weights(run: RunFolder, params: dict, log=print) -> pd.DataFrame:
    """The training itself: the run's data, a new model, ``fit`` into ``train/`` (history and
    checkpoints). What each data-parallel process runs; the launching process packages the model."""
    d = load_data(run, params)
    hp = read_json(run.best_hparams, "02_hpsearch")
    device = pick_device(params["train"]["device"])
    mean = M.mean_shape(d.train[1])
    check_flips(params, d.scheme, mean)
    model = new_model(mean.shape[0], mean, params["seed"], device, **model_options(params))
    cfg = TrainConfig.from_params(params, device, d.scheme.mirror, lr=hp["lr"], weight_decay=hp["weight_decay"])
    cuda_switches(device)
    log(f"{cfg.plan().describe()}; loss {cfg.loss}, {cfg.optimizer}, schedule {cfg.schedule} (warm-up {cfg.warmup}), "
        f"flip {cfg.augment.flip}, box jitter scale {cfg.augment.scale} shift {cfg.augment.shift} "
        f"edges {cfg.augment.edges}; "
        f"lr {cfg.lr:.2e}, weight decay {cfg.weight_decay:.2e} ({hp['source']}); "
        f"{len(d.train[0]) * cfg.epoch_multiplier} samples per epoch at {cfg.input_size}x{cfg.input_size}")
    return fit(model, *d.train, *d.val, cfg, out_dir=run.train_dir, resume=params["train"]["resume"], log=log)


def training_key(run: RunFolder, params: dict, before_recrop: bool = False) -> str:
    """What the trained weights depend on: the prepared data and the search (their stages'
    digest), the hyper-parameters used, the model and the recipe (``digests.training_inputs``);
    not what only the model file's packaging reads (the bias correction, the re-crops, the flip test),
    neither directly nor through the search stage's digest. ``before_recrop``: the key as lmkit
    wrote it before ``model.recrop`` existed (the search's digest then saw the bias correction),
    so that weights trained then are still reused (``train`` then records the key of now)."""
    hp = read_json(run.best_hparams, "02_hpsearch")
    seen = {**params, "model": {**params["model"], "recrop": 0}} if before_recrop else without_packaging(params)
    return digest([stage_digests(seen, ("02_hpsearch",))["02_hpsearch"], training_inputs(params),
                   {"lr": hp["lr"], "weight_decay": hp["weight_decay"]}], 16)


# the train keys the model file's record of its recipe leaves out: where and how it ran, and what
# it records otherwise (epochs run, the search's learning rate and decay)
RECIPE_EXCLUDES = (*NOT_RESULTS["train"], "processes", "epochs", "lr", "weight_decay")


def package_model(run: RunFolder, params: dict, log=print) -> Path:
    """Write ``train/model.pt``: the best checkpoint's weights and everything needed to use
    them on a photo (``model.ModelInfo``), including the face detector's box calibration,
    fitted on the training photos (real data with dlib installed; else none)."""
    import lmkit

    d = load_data(run, params)
    scheme, train_set = d.scheme, d.train_set
    manifest = train_set.manifest
    ckpt = load_checkpoint(run.best_checkpoint)
    model = build_model(scheme.n_points, pretrained=False, head=params["model"]["head"])
    model.load_state_dict(ckpt["model"])
    calibration, why = None, ""
    if manifest["source"] == "synthetic":
        why = "synthetic faces: no face detector calibration (give crop boxes to predict)"
    else:
        from .detector import HogDetector

        try:
            detector = HogDetector()
        except RuntimeError as e:
            why = f"no box calibration: {e}"
        else:
            calibration, why = box_calibration(run, params, d, detector, log)
    hist = pd.read_csv(run.history)
    hp = read_json(run.best_hparams, "02_hpsearch")
    t = params["train"]
    view = view_fraction(params["model"]["view"], t["crop_fraction"], t["scale"])
    correction = None
    if params["model"]["bias_correction"]:
        flip_test = params["eval"]["flip_test"]
        correction = fit_correction(model, d.val[0], d.val[1], params["model"]["input_size"], t["batch_size"],
                                    flip_mirror=scheme.mirror if flip_test else None, view=view)
        emit(log, "correction", f"bias correction fitted on {len(d.val[0])} validation faces: mean |error| per point "
            f"{np.linalg.norm(correction, axis=1).mean():.2f} px of the 256 frame, overall "
            f"({correction[:, 0].mean():+.2f}, {correction[:, 1].mean():+.2f}) px in x, y")
    info = ModelInfo(
        scheme=scheme.name, n_points=scheme.n_points, input_size=params["model"]["input_size"],
        crop_size=manifest["crop_size"], forehead=manifest["forehead"], padding=manifest["padding"],
        box=manifest["box"], head=params["model"]["head"],
        mean_shape=M.mean_shape(d.train[1]).tolist(), dataset=d.dataset, box_calibration=calibration,
        flip_test=params["eval"]["flip_test"], lmkit_version=lmkit.__version__, view=view,
        recrop=params["model"]["recrop"],
        correction=None if correction is None else correction.round(4).tolist(),
        training={"epoch": int(ckpt["epoch"]), "epochs": int(hist["epoch"].max()), "val_mse": float(hist["val_mse"].min()),
                  "lr": hp["lr"], "weight_decay": hp["weight_decay"], "seed": params["seed"],
                  **{k: v for k, v in t.items() if k not in RECIPE_EXCLUDES}})
    path = save_model_file(model, info, run.model_file)
    emit(log, "model_file", f"model file {path} ({path.stat().st_size / 1e6:.1f} MB, best epoch {info.training['epoch']}); {why}")
    return path


def box_calibration(run: RunFolder, params: dict, d: dict, detector, log=print) -> tuple[dict | None, str]:
    """The detector's box calibration, fitted on the run's training photos. It depends on the
    data and the detector only, so it is kept beside the train cache (``box_calibration.json``)
    and reused by every run and ablation variant with the same training photos."""
    from .detector import calibrate
    from .prepare import load_sources
    from .readers import load_image

    cache = run.cache_dir(params["data"]["cache_dir"]) / "train"
    manifest, indices = d.train_set.manifest, d.train[0].indices
    box = manifest["box"]
    key = digest([detector.name, manifest.get("files"), manifest["forehead"], manifest["padding"],
                  manifest["crop_size"], indices.tolist()] + ([box] if box != "landmarks" else []), 16)
    kept = cache / "box_calibration.json"
    stored = read_json(kept, "03_train") if kept.exists() else {}
    if stored.get("key") == key:
        calibration = stored["calibration"]
    else:
        sources, boxes = load_sources(cache)
        size, landmarks = manifest["crop_size"], d.train_set.landmarks
        emit(log, "calibration", f"fitting the box calibration: {detector.name} on {len(indices)} training photos ...")

        def faces():
            for i in indices:
                yield load_image(Path(sources[i])), crop_to_photo(boxes[i], size)(np.asarray(landmarks[i], np.float64))

        try:
            calibration = calibrate(detector, faces(), manifest["forehead"], manifest["padding"], box=box).to_dict()
        except ValueError as e:
            return None, f"no box calibration: {e}"
        write_json({"key": key, "calibration": calibration}, kept)
    return calibration, (f"box calibration: {detector.name} found {calibration['faces']} of {calibration['photos']} "
                         f"training faces; crop box in detector-box units {np.round(calibration['box'], 3).tolist()}")


def load_model(run: RunFolder, params: dict, device) -> tuple[torch.nn.Module, ModelInfo]:
    """The run's model file, refused when the params describe another model."""
    if not run.model_file.exists():
        raise FileNotFoundError(f"{run.model_file}: missing; run notebook 03_train first (it writes the model file "
                                "after training; for a run trained before lmkit 0.2, call steps.package_model)")
    return load_model_file(run.model_file, device, P.flatten(params))


# ------------------------------------------------------------------ 04_evaluate
def evaluate(run: RunFolder, params: dict, log=print, peers: bool = True) -> dict:
    """Test metrics of the model (on annotation crops and from its own detector's box), the
    mean-shape baseline and (68 points, dlib installed) the dlib peer, each a job of
    ``lmkit.evaluation``; the same two uses of the model on the validation faces, to choose
    recipes by; per-face arrays to ``eval/predictions.npz``, the summary to ``metrics.json``."""
    from .peers import peer_unavailable, run_dlib
    from .prepare import load_sources

    d = load_data(run, params)
    test, scheme = d.test, d.scheme
    device = pick_device(params["train"]["device"])
    model, info = load_model(run, params, device)
    mean = M.mean_shape(d.train[1])
    flip_test, batch = params["eval"]["flip_test"], params["train"]["batch_size"]
    mirror = scheme.mirror if flip_test else None
    check_flips(params, scheme, mean, flip_test)
    true = np.asarray(test.landmarks)
    preds, seconds = {}, {}
    preds["model"], seconds["model"] = E.crop_predictions(model, info, test.images, batch, device, mirror)
    extra_arrays = {}
    cache = run.cache_dir(params["data"]["cache_dir"])
    sources, crop_boxes = load_sources(cache / "test")  # each test face's photo and crop box
    detector_status = E.detector_unavailable(params["eval"]["detector_box"], info, test.manifest)
    if detector_status is None:
        from .inference import Landmarker

        found = E.detector_predictions(Landmarker(model, info, device, flip_test=flip_test), sources, crop_boxes, true)
        preds["model_detector"], seconds["model_detector"] = found["pred"], found["seconds_per_face"]
        extra_arrays = {"model_detector__boxes": found["boxes"], "model_detector__crop_boxes": found["crop_boxes"]}
        detector_status = (f"run on the original photos; {found['detector']} found {int(np.isfinite(found['boxes'][:, 0]).sum())} "
                           f"of {len(test)} faces; {E.recropped(info.recrop)}{found['seconds_per_photo'] * 1000:.0f} ms per "
                           "photo with detection")
    emit(log, "evaluate", f"ResNet18 with its detector box: {detector_status}")
    preds["mean_shape"] = np.broadcast_to(mean, true.shape)
    peer_status = peer_unavailable(scheme.n_points) if peers else "not run for this evaluation"
    if peer_status is None:
        dlib = run_dlib(sources, crop_boxes, true, test.images.shape[1])
        for kind in ("hog", "annotation"):
            preds[f"dlib_{kind}"] = dlib[kind]["pred"]
            seconds[f"dlib_{kind}"] = dlib[kind]["seconds_per_face"]
        missed = [test.names[i] for i in dlib["hog"]["missed"]]
        peer_status = f"run on the original photos; HOG detector missed {len(missed)} of {len(test)} faces"
        if missed:
            peer_status += f": {', '.join(missed[:20])}"
    emit(log, "evaluate", f"dlib peer: {peer_status}")
    arrays, scored = E.score(preds, true, crop_boxes, test.images.shape[1], scheme, tuple(params["eval"]["thresholds"]))
    rows = {METHODS[key]: row | ({"seconds_per_face": seconds[key]} if key in seconds else {}) for key, row in scored.items()}
    val_sources, val_boxes = load_sources(cache / "train")
    vi = d.val[0].indices
    validation = E.validation_scores(model, info, d.val, [val_sources[i] for i in vi], val_boxes[vi], scheme, batch,
                                     device, flip_test, params["eval"]["detector_box"], d.train_set.manifest)
    validation["methods"] = {METHODS[key]: row for key, row in validation["methods"].items()}
    for method, row in validation["methods"].items():
        if "nme_oc_mean" in row:
            emit(log, "evaluate", f"validation ({validation['faces']} faces, no bias correction), {method}: NME outer "
                 f"corners {row['nme_oc_mean']:.4f}", split="validation", method=method, nme_oc=row["nme_oc_mean"])
    best, worst = M.best_and_worst(arrays["model__mse"])
    history = pd.read_csv(run.history)
    metrics = {
        "dataset": d.dataset, "comparable_to_paper": comparable_to_paper(d), "scheme": scheme.name, "n_train": len(d.train[0]), "n_val": len(d.val[0]),
        "n_test": len(test), "split_protocol": params["data"]["split"], "input_size": params["model"]["input_size"],
        "epochs": int(history["epoch"].max()), "train_seconds": float(history["seconds"].sum()),
        "mse_unit": "px² of the 256x256 network input", "nme_frame": "pixels of the original photo",
        "nme_units": {k: v for k, v in M.NORMALISATIONS.items() if f"model__nme_{k}" in arrays},
        "best_val_mse": float(history["val_mse"].min()),
        "best_epoch": int(history.loc[history["val_mse"].idxmin(), "epoch"]),
        "hparams": read_json(run.best_hparams, "02_hpsearch"), "methods": rows, "validation": validation,
        "peer": peer_status,
        "detector_box": detector_status, "flip_test": flip_test, "view": info.view,
        "bias_correction": info.correction is not None, "recrop": info.recrop, "crop_box": info.box, "model_file": info.training | {"lmkit": info.lmkit_version},
        "search_budget": {k: params["search"][k] for k in ("enabled", "trials", "epochs_per_trial")},
        "skipped": {"train": d.train_set.manifest.get("skipped", []), "test": test.manifest.get("skipped", [])},
        "unannotated": {"train": d.train_set.manifest.get("unannotated", []),
                        "test": test.manifest.get("unannotated", [])},
        "best": [test.names[i] for i in best], "worst": [test.names[i] for i in worst], "paper": PAPER,
        "protocol": compare_protocol(params, d.train_set.manifest, test.manifest, len(d.train[0]), len(d.val[0]), len(test)),
        "crop_margin": d.train_set.manifest.get("margin"),
    }
    with atomic_write(run.predictions) as tmp:
        np.savez(tmp, true=true, names=np.array(test.names), best=best, worst=worst, **arrays, **extra_arrays)
    write_json(metrics, run.metrics)
    return metrics


# ------------------------------------------------------------------ 05_figures
def make_figures(run: RunFolder, params: dict) -> dict:
    """Every figure of the report, saved to ``figures/``; returns their paths by key."""
    d = load_data(run, params)
    test, scheme, dataset = d.test, d.scheme, d.dataset
    p = np.load(run.predictions)
    six = np.concatenate([p["best"], p["worst"]])
    labels = [f"{'best' if k < 3 else 'worst'} {k % 3 + 1}: {test.names[i]}\n"
              f"MSE {p['model__mse'][i]:.1f} px², NME {p['model__nme_io'][i]:.3f}" for k, i in enumerate(six)]
    device = pick_device(params["train"]["device"])
    model, info = load_model(run, params, device)
    size = info.input_size
    maps = saliency_maps(model, test.images[six], test.landmarks[six], size, device, info.view)
    small = network_inputs(test.images[six], size, info.view)
    train_img, train_pts = d.train
    figs = {
        "scheme": figures.scheme_figure(M.mean_shape(d.train[1]), scheme, f"mean training shape, {dataset}"),
        "fig1_sample": figures.sample_figure(train_img[0], train_pts[0], scheme,
                                       f"{dataset}\n{train_img.shape[1]}x{train_img.shape[2]} crop, {scheme.name}"),
        "fig3_loss": figures.loss_figure(pd.read_csv(run.history), dataset, PAPER if comparable_to_paper(d) else None),
        "fig4_test_mse": figures.mse_distribution_figure({"ResNet18": p["model__mse"], "mean shape": p["mean_shape__mse"]},
                                                   dataset),
        "fig5_best_worst": figures.detections_figure(test.images[six], p["true"][six], p["model__pred"][six], labels, scheme),
        "fig6_saliency": figures.saliency_figure(small, maps, labels),
        "ced": figures.ced_figure(nme_by_method(p, "io"), params["eval"]["ced_max"], dataset),
    }
    if "model__nme_oc" in p:
        figs["ced_oc"] = figures.ced_figure(nme_by_method(p, "oc"), params["eval"]["ced_max"], dataset, "outer eye corners")
    if "model_detector__boxes" in p:
        figs["photos"] = photos_figure(p, run, params, scheme, test.images.shape[1])
    if run.trials.exists():
        figs["search"] = figures.search_figure(pd.read_csv(run.trials))
    paths = {}
    for key, fig in figs.items():
        paths[key] = figures.save(fig, run.figure(key))
        figures.plt.close(fig)
    return paths


def photos_figure(p, run: RunFolder, params: dict, scheme: Scheme, crop_size: int):
    """The model end to end on three original test photos (the detector's box, the points),
    at the 10th, 50th and 90th percentile of its detector-box NME."""
    from .prepare import load_sources
    from .readers import load_image

    sources, crop_boxes = load_sources(run.cache_dir(params["data"]["cache_dir"]) / "test")
    nme = p["model_detector__nme_io"]
    found = np.where(np.isfinite(nme))[0]
    ranked = found[np.argsort(nme[found], kind="stable")]
    pick = [ranked[int(q * (len(ranked) - 1))] for q in (0.1, 0.5, 0.9)] if len(ranked) else []
    shown = []
    for i in pick:
        to_photo = crop_to_photo(crop_boxes[i], crop_size)
        shown.append((load_image(Path(sources[i])), p["model_detector__boxes"][i], to_photo(p["model_detector__pred"][i]),
                      to_photo(p["true"][i]), f"{Path(sources[i]).name}: NME {nme[i]:.3f} (inter-ocular)"))
    return figures.photos_figure(shown, scheme)


def project_root(start: Path | None = None) -> Path:
    """The repository root (the folder with ``params/`` and ``notebooks/``) at or above the
    working folder; the working folder itself when there is none."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start, *start.parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return start


def open_run(run_dir: str, params_file: str | None, overrides: list[str] | str | None = None,
             knobs: dict | None = None, stage: str | None = None) -> tuple[RunFolder, dict]:
    """The run folder and its params, as every notebook starts. The params are loaded from
    ``params_file``, then ``overrides`` (a list of "key=value" strings, or one string of them
    separated by spaces), then the notebook's ``knobs`` ({params key: value}; None leaves a key
    as it is), and recorded in the run folder's ``params.yaml``. Relative paths are relative to
    the repository root, so a notebook works alike from the root and from ``notebooks/``.
    With ``stage`` (a notebook of the chain), the params come as that stage may read them
    (``lmkit.stages``): reading a key its declaration does not list is an error."""
    import shlex

    from .runfolder import check_not_in_use

    root = project_root()
    run = RunFolder(root / run_dir)
    check_not_in_use(run)
    if isinstance(overrides, str):
        overrides = shlex.split(overrides)
    params_path = None if params_file is None else root / params_file
    params = P.load(params_path, list(overrides or []))
    changes = {k: v for k, v in (knobs or {}).items() if v is not None}
    if changes:
        params = P.merge(params, changes)
    if overrides or changes or not run.params.exists() or params_path is None or \
            run.params.resolve() != params_path.resolve():
        P.dump(params, run.params)  # what this notebook runs with is what the run folder records
    return run, (for_stage(params, stage) if stage else params)


# ------------------------------------------------------------------ 06_ablation
def ablation_variants(params: dict) -> list[Path]:
    """The ablation's variant files: ``ablation.variants``, else ``params/ablation/*.yaml`` in the
    order of their leading row numbers (row 10 after row 9, not after row 1)."""
    files = [Path(f) for f in params["ablation"]["variants"]]
    if not files:
        folder = Path(__file__).resolve().parents[1] / "params" / "ablation"
        files = sorted(folder.glob("*.yaml"), key=lambda f: (int(re.match(r"\d*", f.name).group() or 10**9), f.name))
        if not files:
            raise FileNotFoundError(f"{folder}: no ablation variants (*.yaml); set ablation.variants")
    return files


def ablation(run: RunFolder, params: dict, log=print) -> pd.DataFrame:
    """Train and test each variant (a params file: the study's recipe plus a few changes) with
    the run's data, split, model, budget and hyper-parameters (its search winner), once per
    seed of ``ablation.seeds``; one sub-run per variant and seed in ``ablation/<variant>/seed<N>/``.

    A sub-run is reused when its training digest (lmkit.digests) and outputs are unchanged, and
    a variant that changes only the evaluation (the flip test) reuses the training of the row
    before it. Returns the table (also ``ablation/ablation.csv``): per variant the mean, lowest
    and highest of each test metric over the seeds, the best validation MSE and the training
    minutes; ``ablation/runs.csv`` has one line per sub-run."""
    import shutil

    hp = read_json(run.best_hparams, "02_hpsearch")
    a = params["ablation"]
    budget = {"train.epochs": a["epochs"]} if a["epochs"] else {}
    base = {"data.cache_dir": str(run.cache_dir(params["data"]["cache_dir"])), "eval.detector_box": False, "train.resume": False, **budget}
    lines, trained, nmes, labels = [], {}, {}, {}
    d = load_data(run, params)
    nme_key = "nme_oc_mean" if d.scheme.outer_eye_corners else "nme_io_mean"
    for file in ablation_variants(params):
        changes = P.read_changes(file)
        label = changes.pop("name", file.stem)
        labels[label] = ", ".join(f"{k}={v}" for k, v in P.read_changes(file, own=True).items() if k != "name") or "-"
        slug = re.sub(r"[^a-z0-9]+", "-", file.stem.lower()).strip("-")
        emit(log, "variant", f"--- {label} ({file.name})")
        for seed in a["seeds"]:
            vp = P.merge(params, {**changes, **base, "seed": seed})
            sub = RunFolder(run.root / "ablation" / slug / f"seed{seed}")
            key = stage_digests(vp)["03_train"] + "-" + digest(hp)
            info = read_json(sub.path("run.json"), "") if sub.path("run.json").exists() else {}
            train_files = [sub.history, sub.model_file]
            P.dump(vp, sub.params)
            sub.train_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.split, sub.split)
            write_json(hp, sub.best_hparams)
            weights = training_key(sub, vp)  # once per sub-run: it digests the data files
            if stage_state(info, "03_train", key, train_files) == "current":
                emit(log, "variant", f"    seed {seed}: trained before with these params: reused")
            else:
                if weights in trained:  # the same training as an earlier row (this one changes what follows it)
                    for f in ("history.csv", "best.pt", "fit.json"):
                        shutil.copyfile(trained[weights].train_dir / f, sub.train_dir / f)
                    emit(log, "variant", f"    seed {seed}: the same training as {trained[weights].root.parent.name}: its weights reused")
                else:
                    emit(log, "variant", f"    seed {seed}: training ...")
                train(sub, vp, log=quiet)  # with copied weights: writes the model file only
            write_json(record_stage({}, "03_train", key, train_files), sub.path("run.json"))
            trained.setdefault(weights, sub)
            m = evaluate(sub, vp, log=quiet, peers=False)
            row = m["methods"][METHODS["model"]]
            lines.append({"variant": label, "file": file.name, "seed": seed, **row, "best_val_mse": m["best_val_mse"],
                          "train_minutes": m["train_seconds"] / 60})
            nmes.setdefault(label, []).append(np.load(sub.predictions)["model__nme_io"])
            emit(log, "variant", f"    seed {seed}: test {nme_key} {row[nme_key]:.4f}, MSE {row['mse_mean']:.2f} px², "
                f"best val MSE {m['best_val_mse']:.2f} px², {m['train_seconds'] / 60:.1f} min")
    runs = pd.DataFrame(lines)
    write_csv(runs, run.path("ablation", "runs.csv"))
    table = ablation_table(runs, labels)
    write_csv(table, run.path("ablation", "ablation.csv"))
    fig = figures.ced_figure({k: np.concatenate(v) for k, v in nmes.items()}, params["eval"]["ced_max"],
                       f"ablation on {d.dataset} (all seeds)")
    figures.save(fig, run.figure("ablation_ced"))
    figures.plt.close(fig)
    return table


def ablation_table(runs: pd.DataFrame, changes: dict[str, str]) -> pd.DataFrame:
    """One row per variant (in order): mean, lowest and highest over its seeds of each metric."""
    metrics = [c for c in runs.columns if c not in ("variant", "file", "seed")]
    rows = []
    for label, group in runs.groupby("variant", sort=False):
        row = {"variant": label, "changes": changes.get(label, "-"), "seeds": len(group)}
        for c in metrics:
            row[c] = group[c].mean()
            row[f"{c}_min"], row[f"{c}_max"] = group[c].min(), group[c].max()
        rows.append(row)
    return pd.DataFrame(rows)
