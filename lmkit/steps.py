"""What each notebook does, one function per notebook, so that the notebooks stay short
narratives and the tests reach every line. Each step reads and writes only the run folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import figures as F
from . import metrics as M
from .model import REFERENCE_SIZE, build_model, pick_device, predict
from .prepare import Split, Subset, load_cache, prepare as prepare_caches, split_train_val
from .runfolder import RunFolder, atomic_write, read_json, write_json
from .saliency import saliency_maps
from .schemes import scheme_for_points
from .search import default_storage, run_search, trials_table
from .train import TrainConfig, fit, load_checkpoint, new_model, write_csv_atomic

PAPER = {"test_mse": 27.84, "best_val_mse": 8.00, "dataset": "Helen (2,000 train / 330 test, 194 points)"}


def describe_dataset(manifest: dict) -> str:
    src = manifest["source"]
    if src == "synthetic":
        return f"synthetic faces (lmkit built-in, seed {manifest['seed']})"
    name = {"helen": "Helen (official layout)", "300w": "300-W layout"}[src]
    extra = f" + {', '.join(Path(f).name for f in manifest['extra_train'])} (training)" if manifest.get("extra_train") else ""
    return f"{name}: {Path(manifest['root']).name}{extra}"


# ------------------------------------------------------------------ 01_prepare
def prepare(run: RunFolder, params: dict, log=print) -> dict[str, Split]:
    splits = prepare_caches(params["data"], params["seed"], run.cache_dir(params), log)
    split = split_train_val(len(splits["train"]), params["data"]["val_fraction"], params["seed"],
                            params["data"]["split"])
    write_json(split, run.split)
    overlap = set(split["train"]) & set(split["val"])
    log(f"split ({split['protocol']}): {len(split['train'])} training and {len(split['val'])} validation images, "
        f"{len(overlap)} shared, {len(splits['test'])} test images")
    return splits


def load_data(run: RunFolder, params: dict) -> dict:
    """Train / validation / test arrays of a prepared run."""
    cache = run.cache_dir(params)
    train, test = load_cache(cache / "train"), load_cache(cache / "test")
    split = read_json(run.split, "01_prepare")
    ti, vi = np.asarray(split["train"]), np.asarray(split["val"])
    return {"train": (Subset(train.images, ti), Subset(train.landmarks, ti)),
            "val": (Subset(train.images, vi), Subset(train.landmarks, vi)),
            "test": test, "train_split": train, "scheme": scheme_for_points(train.landmarks.shape[1]),
            "dataset": describe_dataset(train.manifest)}


# ------------------------------------------------------------------ 02_hpsearch
def study_name(params: dict) -> str:
    """``search.study_name`` plus a digest of everything a trial's result depends on, so a
    study is resumed only by a search that would have produced the same trials."""
    import hashlib
    import json

    relevant = {"seed": params["seed"], "data": params["data"], "model": params["model"],
                "train": {k: v for k, v in params["train"].items() if k not in ("lr", "weight_decay", "epochs",
                                                                                 "device", "resume")},
                "search": {k: params["search"][k] for k in ("epochs_per_trial", "lr_range", "weight_decay_range")}}
    digest = hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:8]
    return f"{params['search']['study_name']}-{digest}"


def hpsearch(run: RunFolder, params: dict, log=print) -> pd.DataFrame | None:
    s = params["search"]
    if not s["enabled"]:
        t = params["train"]
        write_json({"lr": t["lr"], "weight_decay": t["weight_decay"], "source": "params (search disabled)"},
                   run.best_hparams)
        log("search disabled: training uses train.lr and train.weight_decay")
        return None
    d = load_data(run, params)
    device = pick_device(params["train"]["device"])
    mean = M.mean_shape(d["train"][1])

    def objective(lr: float, wd: float) -> float:
        model = new_model(mean.shape[0], params, mean, params["seed"], device)
        cfg = TrainConfig.from_params(params, device, d["scheme"].mirror, lr=lr, weight_decay=wd,
                                      epochs=s["epochs_per_trial"])
        return float(fit(model, *d["train"], *d["val"], cfg, log=lambda _: None)["val_mse"].min())

    storage = s["storage"] or default_storage(run.root)
    study = run_search(objective, s["trials"], s["lr_range"], s["weight_decay_range"], storage,
                       study_name(params), params["seed"], log, single_worker=not s["storage"])
    table = trials_table(study)
    write_csv_atomic(table, run.trials)
    best = study.best_trial
    write_json({"lr": best.params["lr"], "weight_decay": best.params["weight_decay"], "val_mse": best.value,
                "trial": best.number, "source": f"Optuna study {study.study_name!r}"}, run.best_hparams)
    return table


# ------------------------------------------------------------------ 03_train
def train(run: RunFolder, params: dict, log=print) -> pd.DataFrame:
    if params["train"]["processes"] > 1 and not torch.distributed.is_initialized():
        from .distributed import launch

        launch(run, params["train"]["processes"], log)
        return pd.read_csv(run.history)
    d = load_data(run, params)
    hp = read_json(run.best_hparams, "02_hpsearch")
    device = pick_device(params["train"]["device"])
    mean = M.mean_shape(d["train"][1])
    model = new_model(mean.shape[0], params, mean, params["seed"], device)
    cfg = TrainConfig.from_params(params, device, d["scheme"].mirror, lr=hp["lr"], weight_decay=hp["weight_decay"])
    log(f"device {device}; loss {cfg.loss}, schedule {cfg.schedule}, flip {cfg.augment.flip}; "
        f"lr {cfg.lr:.2e}, weight decay {cfg.weight_decay:.2e} ({hp['source']}); "
        f"{len(d['train'][0]) * cfg.epoch_multiplier} samples per epoch at {cfg.input_size}x{cfg.input_size}")
    return fit(model, *d["train"], *d["val"], cfg, out_dir=run.train_dir, resume=params["train"]["resume"], log=log)


def load_trained(run: RunFolder, params: dict, n_points: int, device) -> torch.nn.Module:
    ckpt = load_checkpoint(run.best_checkpoint, device)
    model = build_model(n_points, pretrained=False).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


# ------------------------------------------------------------------ 04_evaluate
METHODS = {"model": "ResNet18 (this run)", "mean_shape": "mean shape (baseline)",
           "dlib_hog": "dlib ERT, its HOG detector box", "dlib_annotation": "dlib ERT, box from the annotations"}


def evaluate(run: RunFolder, params: dict, log=print, peers: bool = True) -> dict:
    """Test metrics of the model, the mean-shape baseline and (68 points, dlib installed)
    the dlib peer; per-image arrays to ``eval/predictions.npz``, the summary to ``metrics.json``."""
    import time

    from .peers import peer_unavailable, run_dlib
    from .prepare import load_sources

    d = load_data(run, params)
    test, scheme = d["test"], d["scheme"]
    device = pick_device(params["train"]["device"])
    model = load_trained(run, params, scheme.n_points, device)
    t0 = time.perf_counter()
    preds = {"model": predict(model, test.images, params["model"]["input_size"], params["train"]["batch_size"], device)}
    model_seconds = (time.perf_counter() - t0) / len(test)
    mean = M.mean_shape(d["train"][1])
    true = np.asarray(test.landmarks)
    preds["mean_shape"] = np.broadcast_to(mean, true.shape)
    seconds = {"model": model_seconds}
    peer_status = peer_unavailable(scheme.n_points) if peers else "not run for this evaluation"
    if peer_status is None:
        sources, boxes = load_sources(run.cache_dir(params) / "test")
        dlib = run_dlib(sources, boxes, true, test.images.shape[1])
        for kind in ("hog", "annotation"):
            preds[f"dlib_{kind}"] = dlib[kind]["pred"]
            seconds[f"dlib_{kind}"] = dlib[kind]["seconds_per_face"]
        missed = [test.names[i] for i in dlib["hog"]["missed"]]
        peer_status = f"run on the original photos; HOG detector missed {len(missed)} of {len(test)} faces"
        if missed:
            peer_status += f": {', '.join(missed[:20])}"
    log(f"dlib peer: {peer_status}")
    scale = REFERENCE_SIZE / test.images.shape[1]  # crop pixels -> pixels of the 256x256 input
    thresholds = tuple(params["eval"]["thresholds"])
    arrays, rows = {}, {}
    for key, pred in preds.items():
        per, row = M.summarize(pred, true, scheme, scale, thresholds)
        if key in seconds:
            row["seconds_per_face"] = seconds[key]
        rows[METHODS[key]] = row
        arrays.update({f"{key}__{k}": v for k, v in per.items()} | {f"{key}__pred": pred})
    best, worst = M.best_and_worst(arrays["model__mse"])
    history = pd.read_csv(run.history)
    metrics = {
        "dataset": d["dataset"], "comparable_to_paper": d["train_split"].manifest["source"] == "helen"
        and scheme.n_points == 194, "scheme": scheme.name, "n_train": len(d["train"][0]), "n_val": len(d["val"][0]),
        "n_test": len(test), "split_protocol": params["data"]["split"], "input_size": params["model"]["input_size"],
        "epochs": int(history["epoch"].max()), "train_seconds": float(history["seconds"].sum()),
        "mse_unit": "px² of the 256x256 network input",
        "nme_units": {k: v for k, v in M.NORMALISATIONS.items() if f"model__nme_{k}" in arrays},
        "best_val_mse": float(history["val_mse"].min()),
        "best_epoch": int(history.loc[history["val_mse"].idxmin(), "epoch"]),
        "hparams": read_json(run.best_hparams, "02_hpsearch"), "methods": rows, "peer": peer_status,
        "search_budget": {k: params["search"][k] for k in ("enabled", "trials", "epochs_per_trial")},
        "skipped": {"train": d["train_split"].manifest.get("skipped", []), "test": test.manifest.get("skipped", [])},
        "best": [test.names[i] for i in best], "worst": [test.names[i] for i in worst], "paper": PAPER,
    }
    with atomic_write(run.predictions) as tmp:
        np.savez(tmp, true=true, names=np.array(test.names), best=best, worst=worst, **arrays)
    write_json(metrics, run.metrics)
    return metrics


def nme_by_method(predictions, norm: str = "io") -> dict[str, np.ndarray]:
    """Per-image NMEs of every evaluated method, by display name (for CED curves)."""
    return {name: predictions[f"{key}__nme_{norm}"] for key, name in METHODS.items()
            if f"{key}__nme_{norm}" in predictions}


def metrics_table(metrics: dict) -> pd.DataFrame:
    """The summary rows, plus the study's published numbers, as a table."""
    rows = pd.DataFrame(metrics["methods"]).T
    rows.loc["paper (Helen, 194 points)", ["mse_mean"]] = [metrics["paper"]["test_mse"]]
    return rows


# ------------------------------------------------------------------ 05_figures
def make_figures(run: RunFolder, params: dict) -> dict:
    """Every figure of the report, saved to ``figures/``; returns their paths by key."""
    d = load_data(run, params)
    test, scheme, dataset = d["test"], d["scheme"], d["dataset"]
    p = np.load(run.predictions)
    six = np.concatenate([p["best"], p["worst"]])
    labels = [f"{'best' if k < 3 else 'worst'} {k % 3 + 1}: {test.names[i]}\n"
              f"MSE {p['model__mse'][i]:.1f} px², NME {p['model__nme_io'][i]:.3f}" for k, i in enumerate(six)]
    device = pick_device(params["train"]["device"])
    model = load_trained(run, params, scheme.n_points, device)
    size = params["model"]["input_size"]
    maps = saliency_maps(model, test.images[six], test.landmarks[six], size, device)
    small = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(test.images[six])).permute(0, 3, 1, 2).float(),
                                            size=size, mode="area").permute(0, 2, 3, 1).byte().numpy()
    train_img, train_pts = d["train"]
    figs = {
        "fig1_sample": F.sample_figure(train_img[0], train_pts[0], scheme,
                                       f"{dataset}\n{train_img.shape[1]}x{train_img.shape[2]} crop, {scheme.name}"),
        "fig3_loss": F.loss_figure(pd.read_csv(run.history), dataset),
        "fig4_test_mse": F.mse_distribution_figure({"ResNet18": p["model__mse"], "mean shape": p["mean_shape__mse"]},
                                                   dataset),
        "fig5_best_worst": F.detections_figure(test.images[six], p["true"][six], p["model__pred"][six], labels, scheme),
        "fig6_saliency": F.saliency_figure(small, maps, labels),
        "ced": F.ced_figure(nme_by_method(p, "io"), params["eval"]["ced_max"], dataset),
    }
    if "model__nme_oc" in p:
        figs["ced_oc"] = F.ced_figure(nme_by_method(p, "oc"), params["eval"]["ced_max"], dataset, "outer eye corners")
    if run.trials.exists():
        figs["search"] = F.search_figure(pd.read_csv(run.trials))
    paths = {}
    for key, fig in figs.items():
        paths[key] = F.save(fig, run.figure(key))
        F.plt.close(fig)
    return paths


def open_run(run_dir: str, params_file: str | None, overrides: list[str] | None = None) -> tuple[RunFolder, dict]:
    """The run folder and its params, as every notebook starts. The params are loaded from
    ``params_file`` plus ``overrides`` and recorded in the run folder's ``params.yaml``."""
    from . import params as P

    run = RunFolder(run_dir)
    params = P.load(params_file, overrides)
    if not run.params.exists() or run.params.resolve() != Path(params_file).resolve():
        P.dump(params, run.params)
    return run, params


# ------------------------------------------------------------------ 06_ablation
ABLATION = {
    "study recipe": {},
    "+ Wing loss": {"train.loss": "wing"},
    "+ flips": {"train.flip": 0.5},
    "+ cosine schedule": {"train.schedule": "cosine"},
    "all three": {"train.loss": "wing", "train.flip": 0.5, "train.schedule": "cosine"},
}


def ablation(run: RunFolder, params: dict, variants: dict | None = None, log=print) -> pd.DataFrame:
    """Train and test each variant of the run's recipe with the same data, split, budget and
    hyper-parameters (the run's search winner); one sub-run per variant in ``ablation/``.
    Returns the table (also ``ablation/ablation.csv``) of test metrics per variant."""
    import re
    import shutil

    from . import params as P

    variants = ABLATION if variants is None else variants
    hp = read_json(run.best_hparams, "02_hpsearch")
    rows, nmes = {}, {}
    for name, changes in variants.items():
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        sub = RunFolder(run.root / "ablation" / slug)
        vp = P.merge(params, {"data.cache_dir": str(run.cache_dir(params)), **changes})
        done = (sub.params.exists() and P.load(sub.params) == vp and sub.history.exists()
                and sub.best_hparams.exists() and read_json(sub.best_hparams, "") == hp
                and sub.best_checkpoint.exists() and len(pd.read_csv(sub.history)) == vp["train"]["epochs"])
        P.dump(vp, sub.params)
        shutil.copyfile(run.split, sub.split)
        write_json(hp, sub.best_hparams)
        log(f"--- {name}: {changes or 'as the run'}")
        if done:
            log("    already trained with these params: reused")
        elif not changes and run.history.exists() and run.best_checkpoint.exists():
            # the run's own recipe, data, seed and hyper-parameters: its training is this variant
            for f in ("history.csv", "best.pt", "last.pt"):
                shutil.copyfile(run.train_dir / f, sub.train_dir / f)
            log("    the run's own training (same recipe, seed and budget) is reused")
        else:
            train(sub, vp, log=lambda line: None)
        m = evaluate(sub, vp, log=lambda line: None, peers=False)
        rows[name] = {"changes": ", ".join(f"{k}={v}" for k, v in changes.items()) or "-",
                      **m["methods"][METHODS["model"]], "train_seconds": m["train_seconds"]}
        nmes[name] = np.load(sub.predictions)["model__nme_io"]
        log(f"    test NME (inter-ocular) {rows[name]['nme_io_mean']:.4f}, MSE {rows[name]['mse_mean']:.2f} px², "
            f"{m['train_seconds'] / 60:.1f} min")
    table = pd.DataFrame(rows).T
    write_csv_atomic(table.rename_axis("variant").reset_index(), run.path("ablation", "ablation.csv"))
    d = load_data(run, params)
    fig = F.ced_figure(nmes, params["eval"]["ced_max"], f"ablation on {d['dataset']}")
    F.save(fig, run.figure("ablation_ced"))
    F.plt.close(fig)
    return table
